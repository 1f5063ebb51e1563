"""The chunk stage's layout and manifest, and the helpers that cut a stream into parts.

An object whose stream at the chunk stage is longer than ``--chunk-size`` is
stored as parts plus a manifest, all under one folder named after it::

    <key>.vfchunk/<gen>-00000       part 1 (with a codec suffix, e.g. ".zst",
    <key>.vfchunk/<gen>-00001       when a compress stage comes after chunk)
    ...
    <key>.vfchunk/manifest.json     written last: the object exists once it does

``<gen>`` is random per upload, so a new upload never overwrites the parts an
existing manifest points to: a failed or interrupted upload leaves the old
object whole (its stray parts are removed by the next successful upload of
that key). Keys holding ``.vfchunk/`` are reserved.

Manifest (JSON, ``format`` ``vertexflow.chunked``, ``version`` 1)::

    key         the object's key when it was written (informational: readers
                go by where the manifest is)
    size        bytes of the original content
    hashes      digests of the original content ("sha256" always)
    encoding    codecs applied to the content before it was split, in order
                (["zstd"] for compress-then-chunk); undone after joining
    stream      {"size", "hashes"}: the joined parts, before ``encoding`` is
                undone; hashes are those a hash stage just before chunk took
    chunk_size  the largest part's stream length
    parts       [{"key", "size", "sha256", "codecs", "plain_size", "hashes"}]:
                key relative to the folder; size and sha256 of the bytes
                stored; codecs applied to that part alone (chunk-then-compress);
                plain_size its length once they are undone; hashes: digests a
                hash stage after chunk took of it

Readers check each part's size and SHA-256 as they read it, and the content's
SHA-256 at the end: a failure ends the stream with an error before its last
byte, so a destination's all-or-nothing put keeps nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio

from ..errors import ManifestError
from ..model import BodyFactory

FOLDER = ".vfchunk/"
MANIFEST_NAME = "manifest.json"
MANIFEST_SUFFIX = FOLDER + MANIFEST_NAME
FORMAT = "vertexflow.chunked"
VERSION = 1
#: Read size when a spilled part is sent: a quarter of a stream buffer, since
#: it is held beside the source buffer and the compressed one (page-cache
#: reads cost ~0.1 ms a MiB, less than the thread hand-off).
SPILL_READ = 1024 * 1024


def folder_of(key: str) -> str:
    return key + FOLDER


def part_name(gen: str, index: int) -> str:
    return f"{gen}-{index:05d}"


def is_reserved(key: str) -> bool:
    return FOLDER in key


@dataclass(frozen=True, slots=True)
class Part:
    key: str
    size: int
    sha256: str
    codecs: tuple[str, ...] = ()
    plain_size: int = 0
    hashes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Manifest:
    key: str
    size: int
    hashes: dict[str, str]
    encoding: tuple[str, ...]
    stream_size: int
    chunk_size: int
    parts: tuple[Part, ...]
    stream_hashes: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT, "version": VERSION, "key": self.key, "size": self.size, "hashes": self.hashes,
            "encoding": list(self.encoding),
            "stream": {"size": self.stream_size, "hashes": self.stream_hashes},
            "chunk_size": self.chunk_size,
            "parts": [{**asdict(p), "codecs": list(p.codecs)} for p in self.parts],
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ManifestError("not a vertexflow chunk manifest")
            if doc.get("version") != VERSION:
                raise ManifestError(f"manifest version {doc.get('version')!r} is not supported "
                                    f"(this vertexflow reads {VERSION})")
            parts = tuple(Part(key=p["key"], size=int(p["size"]), sha256=p["sha256"], codecs=tuple(p.get("codecs", ())),
                               plain_size=int(p.get("plain_size", p["size"])), hashes=dict(p.get("hashes", {})))
                          for p in doc["parts"])
            stream = doc["stream"]
            return cls(key=doc["key"], size=int(doc["size"]), hashes=dict(doc["hashes"]),
                       encoding=tuple(doc.get("encoding", ())), stream_size=int(stream["size"]),
                       stream_hashes=dict(stream.get("hashes", {})),
                       chunk_size=int(doc["chunk_size"]), parts=parts)
        except ManifestError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"manifest is malformed: {exc!r}") from exc


# -- cutting a live stream into parts ---------------------------------------------

class Cutter:
    """Reads one live stream once, handing it out part by part.

    :meth:`take` yields the bytes up to a stream offset; :meth:`skip_to`
    drops them (after a part was sent by a replay instead).
    """

    def __init__(self, it: AsyncIterator[bytes]) -> None:
        self._it = it
        self._buf = memoryview(b"")
        self._eof = False
        self.pos = 0

    async def _fill(self) -> bool:
        while not self._buf and not self._eof:
            chunk = await anext(self._it, None)
            if chunk is None:
                self._eof = True
            else:
                self._buf = memoryview(chunk)
        return bool(self._buf)

    async def at_end(self) -> bool:
        """True once the stream is exhausted (reads ahead one chunk to know)."""
        return not await self._fill()

    async def take(self, end: int) -> AsyncIterator[bytes]:
        """The live bytes from here up to stream offset ``end`` (fewer if the stream ends)."""
        while self.pos < end and await self._fill():
            piece = self._buf[:end - self.pos]
            rest = self._buf[len(piece):]
            self._buf = rest if rest else memoryview(b"")  # an empty view would still pin the buffer
            self.pos += len(piece)
            yield piece.obj if len(piece) == len(piece.obj) else bytes(piece)  # type: ignore[arg-type,misc]

    async def skip_to(self, end: int) -> None:
        async for _ in self.take(end):
            pass


def replayed_range(body: BodyFactory, start: int, length: int) -> BodyFactory:
    """Bytes ``[start, start + length)`` of a deterministic body, by reading it again from 0.

    Used only when a part is retried: the first attempt streams the live bytes.
    """

    async def ranged() -> AsyncIterator[bytes]:
        pos = 0
        end = start + length
        async with aclosing(body()) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                lo, hi = max(start - pos, 0), min(end - pos, len(chunk))
                pos += len(chunk)
                if lo < hi:
                    yield chunk[lo:hi] if (lo, hi) != (0, len(chunk)) else chunk
                if pos >= end:
                    return

    return ranged


@dataclass(slots=True)
class Spilled:
    """A part written to a temporary file, sent from there (replayable without memory)."""

    path: str
    size: int

    def body(self) -> BodyFactory:
        path = self.path

        async def read() -> AsyncIterator[bytes]:
            f = await anyio.to_thread.run_sync(open, path, "rb")
            try:
                while data := await anyio.to_thread.run_sync(f.read, SPILL_READ):
                    yield data
            finally:
                f.close()

        return read

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


async def spill(cutter: Cutter, end: int, directory: str | None) -> Spilled:
    """Write the live bytes up to stream offset ``end`` to a new temporary file."""
    fd, path = tempfile.mkstemp(prefix="vertexflow-part-", dir=directory)
    spilled = Spilled(path, 0)
    try:
        with os.fdopen(fd, "wb", buffering=0) as f:
            async for data in cutter.take(end):
                await anyio.to_thread.run_sync(_write_all, f, data)
                spilled.size += len(data)
    except BaseException:
        spilled.remove()
        raise
    return spilled


def _write_all(f: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[f.write(view):]
