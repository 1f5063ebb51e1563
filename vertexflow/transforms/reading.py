"""The read side: from stored names back to objects, and from stored bytes back to content.

A stored key tells how to read it back (see the package docs for the
grammar); :func:`logical` maps it to the object's key and the *suffix*
that was added to it. Decoding checks everything it can: zstd frame
checksums and gzip CRCs, each chunk part's size and SHA-256, and a chunked
object's content SHA-256; a failure raises :class:`~vertexflow.errors.CorruptData`
(or :class:`~vertexflow.errors.NotFound` for a missing part) naming the
object, and the part. Bytes already yielded before a failure belong to a
stream that then raises, so a destination's all-or-nothing ``put`` keeps none
of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager

from ..backends.base import Backend
from ..errors import CorruptData, CorruptInput, ManifestError, NotFound
from ..model import SHA256
from .chunking import FOLDER, MANIFEST_NAME, MANIFEST_SUFFIX, Manifest
from .compression import CODEC_OF_SUFFIX, decode_seconds, decoder
from .hashing import Digester
from .work import CpuLane

#: A manifest larger than this is not one (it would describe ~100,000 parts).
MAX_MANIFEST = 32 * 1024 * 1024

CODEC_SUFFIXES = tuple(CODEC_OF_SUFFIX)


def logical(stored_key: str, *, codecs: bool, chunks: bool) -> tuple[str, str] | None:
    """``(key, suffix)`` with ``key + suffix == stored_key``; None for a chunk part (not an object)."""
    key, suffix = stored_key, ""
    if chunks and FOLDER in stored_key:
        folder, _, name = stored_key.rpartition(FOLDER)
        if name != MANIFEST_NAME or not folder or folder.endswith("/"):
            return None
        key, suffix = folder, MANIFEST_SUFFIX
    if codecs:
        for s in CODEC_SUFFIXES:
            base = key[:-len(s)]
            if key.endswith(s) and base and not base.endswith("/"):
                key, suffix = base, s + suffix
                break
    return key, suffix


def candidate_suffixes(*, codecs: bool, chunks: bool) -> list[str]:
    """Every suffix an object's stored form may carry, in the order to probe them."""
    encoded = list(CODEC_SUFFIXES) if codecs else []
    out = []
    if chunks:
        out += [MANIFEST_SUFFIX] + [s + MANIFEST_SUFFIX for s in encoded]
    return out + encoded + [""]


async def decompressed(chunks: AsyncIterator[bytes], codec: str, lane: CpuLane,
                       error: Callable[[str], Exception]) -> AsyncIterator[bytes]:
    """Decode ``chunks`` (owned: closed at the end) with bounded output per step."""
    dec = decoder(codec)
    try:
        async with aclosing(chunks):  # type: ignore[type-var]
            async for data in chunks:
                dec.push(data)
                while dec.pending:
                    out = await lane.run(dec.pull, seconds=decode_seconds(codec, len(data)))
                    if out:
                        yield out
        dec.finish()
    except CorruptInput as exc:
        raise error(str(exc)) from exc


class Reader:
    """Reads objects of ``store`` back, undoing the stages that wrote them."""

    def __init__(self, store: Backend, lane: CpuLane, hash_lane: CpuLane, *, describe: str) -> None:
        self.store = store
        self.lane = lane
        self.hash_lane = hash_lane
        self.describe = describe

    @asynccontextmanager
    async def open(self, key: str, suffix: str, version: str | None, offset: int,
                   length: int | None) -> AsyncIterator[AsyncIterator[bytes]]:
        if not suffix:
            async with self.store.open(key, offset=offset, length=length, if_version=version) as chunks:
                yield chunks
            return
        it = _window(self._decoded(key, suffix, version), offset, length)
        try:
            yield it
        finally:
            await it.aclose()  # type: ignore[attr-defined]

    def _corrupt(self, key: str, what: str) -> Callable[[str], Exception]:
        return lambda msg: CorruptData(f"{what} is corrupt: {msg}", backend=self.describe, key=key)

    def _decoded(self, key: str, suffix: str, version: str | None) -> AsyncIterator[bytes]:
        entry = key + suffix
        if suffix.endswith(MANIFEST_SUFFIX):
            return self._chunked(key, entry, version)
        return self._compressed(key, entry, version, CODEC_OF_SUFFIX[suffix])

    async def _compressed(self, key: str, entry: str, version: str | None, codec: str) -> AsyncIterator[bytes]:
        async with self.store.open(entry, if_version=version) as raw:
            stream = decompressed(raw, codec, self.lane, self._corrupt(key, f"compressed object ({codec}) {entry!r}"))
            async with aclosing(stream):  # type: ignore[type-var]
                async for chunk in stream:
                    yield chunk

    async def _manifest(self, key: str, entry: str, version: str | None) -> Manifest:
        data = bytearray()
        async with self.store.open(entry, if_version=version) as chunks:
            async for chunk in chunks:
                data += chunk
                if len(data) > MAX_MANIFEST:
                    raise CorruptData(f"chunk manifest {entry!r} is larger than {MAX_MANIFEST} bytes",
                                      backend=self.describe, key=key)
        try:
            return Manifest.from_json(bytes(data))
        except ManifestError as exc:
            raise CorruptData(f"chunk manifest {entry!r}: {exc}", backend=self.describe, key=key) from exc

    async def _chunked(self, key: str, entry: str, version: str | None) -> AsyncIterator[bytes]:
        manifest = await self._manifest(key, entry, version)
        stream = self._parts(key, entry[:-len(MANIFEST_NAME)], manifest)
        for codec in reversed(manifest.encoding):
            stream = decompressed(stream, codec, self.lane,
                                  self._corrupt(key, f"chunked object ({codec} before chunking)"))
        expected = manifest.hashes.get(SHA256)
        digest = Digester((SHA256,) if expected else ())
        async with aclosing(stream):  # type: ignore[type-var]
            async for chunk in stream:
                await self.hash_lane.run(digest.update, chunk, seconds=digest.seconds(len(chunk)))
                yield chunk
        if digest.size != manifest.size:
            raise CorruptData(f"chunked object: reassembled {digest.size} bytes, its manifest says {manifest.size}",
                              backend=self.describe, key=key)
        if expected and digest.hexdigests()[SHA256] != expected:
            raise CorruptData("chunked object: SHA-256 of the reassembled content differs from its manifest's",
                              backend=self.describe, key=key)

    async def _parts(self, key: str, folder: str, manifest: Manifest) -> AsyncIterator[bytes]:
        total = len(manifest.parts)
        for i, part in enumerate(manifest.parts):
            name = folder + part.key
            label = f"part {i + 1} of {total} ({name!r})"
            digest = Digester((SHA256,))
            try:
                async with self.store.open(name) as raw:
                    stream = self._digested(raw, digest)
                    for codec in reversed(part.codecs):
                        stream = decompressed(stream, codec, self.lane, self._corrupt(key, f"chunked object: {label}"))
                    async with aclosing(stream):  # type: ignore[type-var]
                        async for chunk in stream:
                            yield chunk
            except NotFound as exc:
                if exc.key != name:
                    raise
                raise NotFound(f"chunked object: {label} is missing", backend=self.describe, key=key) from exc
            got = digest.hexdigests()[SHA256]
            if digest.size != part.size or got != part.sha256:
                raise CorruptData(f"chunked object: {label} is corrupt: {digest.size} bytes with SHA-256 {got}, "
                                  f"its manifest says {part.size} bytes with SHA-256 {part.sha256}",
                                  backend=self.describe, key=key)

    async def _digested(self, chunks: AsyncIterator[bytes], digest: Digester) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            await self.hash_lane.run(digest.update, chunk, seconds=digest.seconds(len(chunk)))
            yield chunk


async def _window(stream: AsyncIterator[bytes], offset: int, length: int | None) -> AsyncIterator[bytes]:
    """Bytes ``[offset, offset + length)`` of a decoded stream (decoding starts at 0 regardless)."""
    pos = 0
    end = None if length is None else offset + length
    async with aclosing(stream):  # type: ignore[type-var]
        async for chunk in stream:
            lo = max(offset - pos, 0)
            hi = len(chunk) if end is None else min(end - pos, len(chunk))
            pos += len(chunk)
            if lo < hi:
                yield chunk if (lo, hi) == (0, len(chunk)) else chunk[lo:hi]
            if end is not None and pos >= end:
                return
