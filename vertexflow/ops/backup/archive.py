"""The storage tree as a compressed tar stream, produced while the objects are read.

:func:`produce` lists the source, writes one tar member per object (header,
the object's bytes as they arrive from ``open``, padding), compresses in
worker threads and sends the compressed pieces into a bounded channel; the
part writer on the other end puts them to the destination. Memory: the
channel (a few pieces of at most a zstd frame's output) plus one read buffer.

Local sources take a faster road for small files: a batch of them is read,
framed as tar, hashed and compressed in one worker-thread hand-off (per-file
hand-offs dominate otherwise). A small file that vanished between listing
and reading is skipped and counted; any other read error fails the backup.

Every archived file's SHA-256 is taken in-stream and written to
``MEMBERS.sha256``, and what describes it (Content-Type, headers, user
metadata, mtime: :class:`.metadata.Description`) to ``MEMBERS.jsonl``, each
spooled to a temporary file once past 4 MiB. Where the listing does not
tell the description (S3), a small object's comes with its bytes (one
GetObject, ``read_whole_described``) and a larger one's from one ``stat``.

Directories are members too, so that empty ones (a provisioned
``acme/cats/QR`` with nothing in it yet) survive: the folders of a source
that has them are listed first (a tree on this machine is walked here, any
other store with ``features.folders``, such as Yandex.Disk, is asked with
``list_folders``), and each becomes a tar directory member (``tar -x``
creates it) and a ``# directory <path>/`` line of MEMBERS.sha256, before the
files. Object stores have no folders: their folder markers
(``<folder>/.keep``) are ordinary objects, archived as files.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from ...backends.base import Backend
from ...backends.local import TMP_PREFIX
from ...errors import SourceChanged
from ...model import BodyFactory, ObjectInfo
from ...transforms.compression import Codec, encoder
from ..routes import described_by
from .metadata import Description, description_line, directory_line, member_line
from .tarstream import directory_header, end_of_archive, member_header, padding

#: tar bytes gathered before one compress call (fewer, larger calls; zstd frames are 4 MiB anyway)
FEED = 1024 * 1024
#: a local file up to this size is read whole inside a batch
SMALL = 1024 * 1024
#: a batch of small local files: at most this many bytes or files per worker-thread hand-off
BATCH_BYTES = 4 * 1024 * 1024
BATCH_FILES = 256


@dataclass(slots=True)
class ArchiveStats:
    files: int = 0
    bytes: int = 0
    directories: int = 0
    skipped: list[str] = field(default_factory=list)


class ArchiveBuilder:
    """Blocking: tar framing, member digests and compression of one archive. One thread at a time."""

    def __init__(self, codec: Codec) -> None:
        self._enc = encoder(codec)
        self._plain = bytearray()
        self._out: list[bytes] = []
        self.offset = 0
        self.stats = ArchiveStats()
        # closed by the caller once MEMBERS.sha256 and MEMBERS.jsonl are stored
        self.members: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=4 * 1024 * 1024)  # noqa: SIM115
        self.descriptions: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=4 * 1024 * 1024)  # noqa: SIM115
        self._hash = hashlib.sha256()
        self._info = ObjectInfo(key="", size=None)

    def _emit(self, data: bytes | memoryview) -> None:
        self.offset += len(data)
        if len(data) >= FEED:
            self._compress()
            self._out.extend(self._enc.feed(data))
            return
        self._plain += data
        if len(self._plain) >= FEED:
            self._compress()

    def _compress(self) -> None:
        if self._plain:
            self._out.extend(self._enc.feed(self._plain))
            self._plain = bytearray()

    def begin(self, info: ObjectInfo, size: int) -> None:
        """A file member: ``info`` names it and says what describes it (MEMBERS.jsonl)."""
        self._info = info
        self._hash = hashlib.sha256()
        self._emit(member_header(info.key, size, info.mtime.timestamp() if info.mtime else 0))

    def data(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self._emit(chunk)

    def end(self, size: int) -> None:
        self._emit(padding(size))
        self.members.write(member_line(self._hash.hexdigest(), self._info.key))
        self.descriptions.write(description_line(self._info.key, Description.of(self._info)))
        self.stats.files += 1
        self.stats.bytes += size

    def add_directories(self, directories: list[tuple[str, float]]) -> None:
        """Directory members (``(path, mtime)``, parents first) and their MEMBERS.sha256 lines."""
        for key, mtime in directories:
            self._emit(directory_header(key, mtime))
            self.members.write(directory_line(key))
            self.stats.directories += 1

    def add_whole(self, info: ObjectInfo, data: bytes) -> None:
        """A file member whose bytes were read whole."""
        self.begin(info, len(data))
        self.data(data)
        self.end(len(data))

    def add_local_batch(self, batch: list[tuple[ObjectInfo, str]]) -> None:
        for info, path in batch:
            try:
                with open(path, "rb", buffering=0) as f:
                    data = f.readall()
            except FileNotFoundError:
                self.stats.skipped.append(info.key)
                continue
            self.begin(info, len(data))
            self.data(data)
            self.end(len(data))

    def finish(self) -> None:
        self._emit(end_of_archive(self.offset))
        self._compress()
        self._out.extend(self._enc.finish())

    def take(self) -> list[bytes]:
        out, self._out = self._out, []
        return out


async def produce(source: Backend, builder: ArchiveBuilder, send: MemoryObjectSendStream[bytes]) -> None:
    """List ``source`` and send the compressed archive into ``send`` (closed at the end)."""
    async with send:
        batch: list[tuple[ObjectInfo, str]] = []
        batch_bytes = 0

        async def flush() -> None:
            nonlocal batch, batch_bytes
            if batch:
                todo, batch, batch_bytes = batch, [], 0
                await anyio.to_thread.run_sync(builder.add_local_batch, todo)
                await _send(builder, send)

        local = source.features.local_path
        directories: list[tuple[str, float]] = []
        if local:
            directories = await anyio.to_thread.run_sync(local_directories, source.local_path("x").parent)
        elif source.features.folders:
            directories = await remote_directories(source)
        for i in range(0, len(directories), BATCH_FILES):  # bounded output between sends
            await anyio.to_thread.run_sync(builder.add_directories, directories[i:i + BATCH_FILES])
            await _send(builder, send)
        async for info in source.list():
            size = info.size if info.size is not None else (await source.stat(info.key)).size or 0
            if local and size <= SMALL:
                batch.append((info, str(source.local_path(info.key))))
                batch_bytes += size
                if batch_bytes >= BATCH_BYTES or len(batch) >= BATCH_FILES:
                    await flush()
                continue
            await flush()
            if info.headers is None and source.features.whole_reads and size <= SMALL:
                # the answer that brings a small object's bytes tells what describes them (S3 GetObject)
                data, described = await source.read_whole_described(info.key, limit=SMALL, if_version=info.version)
                info = described_by(info, described or await source.stat(info.key))
                await anyio.to_thread.run_sync(builder.add_whole, info, data)
                await _send(builder, send)
                continue
            if info.headers is None:  # the listing did not say (S3): one stat
                info = described_by(info, await source.stat(info.key))
            await _stream_member(source, info, size, builder, send)
        await flush()
        await anyio.to_thread.run_sync(builder.finish)
        await _send(builder, send)


def local_directories(root: Path) -> list[tuple[str, float]]:
    """Every directory under ``root`` as ``(key, mtime)``, parents before children, in key order. Blocking.

    Symbolic links are not followed (the listing does not follow them either)
    and the local backend's temporary entries are left out. ``root`` is the
    folder of a local source's keys (``local_path`` of a one-segment key has
    it as its parent, whatever wraps the backend).
    """

    def children(path: str, rel: str) -> list[tuple[str, str, float]]:
        found = []
        try:
            with os.scandir(path) as it:
                for e in it:
                    if e.name.startswith(TMP_PREFIX):
                        continue
                    try:
                        if e.is_dir(follow_symlinks=False):
                            found.append((e.path, rel + e.name, e.stat(follow_symlinks=False).st_mtime))
                    except OSError:
                        continue  # vanished since it was listed
        except OSError:
            return []  # gone, not a directory, or unreadable: the listing of the files reports the last
        found.sort(key=lambda t: t[1], reverse=True)  # pop() from the end = ascending
        return found

    out: list[tuple[str, float]] = []
    stack = children(str(root), "")
    while stack:
        path, key, mtime = stack.pop()
        out.append((key, mtime))
        stack.extend(children(path, key + "/"))
    return out


async def remote_directories(source: Backend) -> list[tuple[str, float]]:
    """Every folder of a store with folders (``features.folders``) that is not on this machine, parents first.

    One ``list_folders`` per folder (Yandex.Disk: one listing each). The
    store tells no folder times, so each gets the time it was listed (what
    ``tar -x`` sets; a restore to a store does not use it).
    """
    out: list[tuple[str, float]] = []
    stack = [""]
    while stack:
        parent = stack.pop()
        names = await source.list_folders(parent)
        seen = time.time()
        children = [f"{parent}/{name}" if parent else name for name in names]
        out.extend((child, seen) for child in children)
        stack.extend(reversed(children))
    out.sort(key=lambda d: d[0].split("/"))  # parents first, in key order
    return out


async def _stream_member(source: Backend, info: ObjectInfo, size: int, builder: ArchiveBuilder,
                         send: MemoryObjectSendStream[bytes]) -> None:
    builder.begin(info, size)
    got = 0
    async with source.open(info.key, if_version=info.version) as chunks:
        async for chunk in chunks:
            got += len(chunk)
            if got > size:
                break
            if len(chunk) >= 64 * 1024:
                await anyio.to_thread.run_sync(builder.data, chunk)
            else:
                builder.data(chunk)
            await _send(builder, send)
    if got != size:
        # the header already promised `size` bytes: the archive cannot hold this object
        raise SourceChanged(f"object changed while it was archived: listed {size} bytes, read {got}",
                            backend=source.describe(), key=info.key)
    builder.end(size)
    await _send(builder, send)


async def _send(builder: ArchiveBuilder, send: MemoryObjectSendStream[bytes]) -> None:
    for piece in builder.take():
        if piece:
            await send.send(piece)


def spooled_body(f: IO[bytes]) -> BodyFactory:
    """A replayable body over a spooled temporary file."""

    async def body() -> AsyncIterator[bytes]:
        f.seek(0)
        while data := f.read(FEED):
            yield data

    return body


def spooled_size(f: IO[bytes]) -> int:
    f.seek(0, os.SEEK_END)
    return f.tell()
