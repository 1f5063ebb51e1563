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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from ...backends.base import Backend
from ...backends.local import TMP_PREFIX
from ...errors import BackendError, NotFound, SourceChanged
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
        #: a file member's header is in the archive and its data is not complete: an error now breaks the archive
        self.in_member = False

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
        self.in_member = True
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
        self.in_member = False

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
        await archive_source(source, builder, send)
        await finish(builder, send)


async def finish(builder: ArchiveBuilder, send: MemoryObjectSendStream[bytes]) -> None:
    """The end of the archive, compressed and sent."""
    await anyio.to_thread.run_sync(builder.finish)
    await send_pieces(builder, send)


#: ``changed(key, why)``: an object that changed or vanished between its listing and its read was left out
Changed = Callable[[str, str], None]


async def archive_source(source: Backend, builder: ArchiveBuilder, send: MemoryObjectSendStream[bytes], *,
                         prefix: str = "", changed: Changed | None = None,
                         archived: Callable[[ObjectInfo], None] | None = None) -> None:
    """The directories, then the files, of ``source`` as members named ``<prefix><key>``; the archive goes on.

    Without ``changed`` an object that changed between its listing and its
    read fails the backup (:class:`SourceChanged`), as one that vanished does
    (a small local file that vanished is skipped and counted either way).
    With it, such an object is left out and reported through it (``key`` as
    the source names it), which is possible because nothing of a member is
    emitted before its read has begun on the listed version: only a change
    in the middle of a large object's read still fails the backup.
    ``archived(info)`` is told of every file archived, as listed.
    """
    batch: list[tuple[ObjectInfo, str]] = []
    listed: list[ObjectInfo] = []  # the batch's objects as the source names them
    batch_bytes = 0

    def named(info: ObjectInfo) -> ObjectInfo:
        return replace(info, key=prefix + info.key) if prefix else info

    async def flush() -> None:
        nonlocal batch, listed, batch_bytes
        if batch:
            todo, infos, batch, listed, batch_bytes = batch, listed, [], [], 0
            vanished = len(builder.stats.skipped)
            await anyio.to_thread.run_sync(builder.add_local_batch, todo)
            gone = set(builder.stats.skipped[vanished:])
            for info in infos:
                if prefix + info.key in gone:
                    if changed is not None:
                        changed(info.key, "vanished while it was read")
                elif archived is not None:
                    archived(info)
            await send_pieces(builder, send)

    local = source.features.local_path
    directories: list[tuple[str, float]] = []
    if local:
        directories = await anyio.to_thread.run_sync(local_directories, source.local_path("x").parent)
    elif source.features.folders:
        directories = await remote_directories(source)
    if prefix:
        directories = [(prefix + key, mtime) for key, mtime in directories]
    for i in range(0, len(directories), BATCH_FILES):  # bounded output between sends
        await anyio.to_thread.run_sync(builder.add_directories, directories[i:i + BATCH_FILES])
        await send_pieces(builder, send)
    async for info in source.list():
        size = info.size if info.size is not None else (await source.stat(info.key)).size or 0
        if local and size <= SMALL:
            batch.append((named(info), str(source.local_path(info.key))))
            listed.append(info)
            batch_bytes += size
            if batch_bytes >= BATCH_BYTES or len(batch) >= BATCH_FILES:
                await flush()
            continue
        await flush()
        try:
            if info.headers is None and source.features.whole_reads and size <= SMALL:
                # the answer that brings a small object's bytes tells what describes them (S3 GetObject)
                data, described = await source.read_whole_described(info.key, limit=SMALL,
                                                                    if_version=info.version)
                info = described_by(info, described or await source.stat(info.key))
                await anyio.to_thread.run_sync(builder.add_whole, named(info), data)
                await send_pieces(builder, send)
            else:
                if info.headers is None:  # the listing did not say (S3): one stat
                    info = described_by(info, await source.stat(info.key))
                await _stream_member(source, info, size, builder, send, name=prefix + info.key)
        except (SourceChanged, NotFound) as exc:
            if changed is None or builder.in_member or not _about(exc, info.key):
                raise
            changed(info.key, "changed while it was read" if isinstance(exc, SourceChanged)
                    else "vanished while it was read")
            continue
        if archived is not None:
            archived(info)
    await flush()


def _about(exc: BackendError, key: str) -> bool:
    """Whether ``exc`` is about the object ``key`` (not the store's root, nor another object)."""
    return exc.key is None or exc.key == key or exc.key.endswith("/" + key)


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
                         send: MemoryObjectSendStream[bytes], *, name: str) -> None:
    """One member streamed; its header is emitted once the read of the listed version has begun."""
    got = 0
    async with source.open(info.key, if_version=info.version) as chunks:
        builder.begin(replace(info, key=name) if name != info.key else info, size)
        async for chunk in chunks:
            got += len(chunk)
            if got > size:
                break
            if len(chunk) >= 64 * 1024:
                await anyio.to_thread.run_sync(builder.data, chunk)
            else:
                builder.data(chunk)
            await send_pieces(builder, send)
    if got != size:
        # the header already promised `size` bytes: the archive cannot hold this object
        raise SourceChanged(f"object changed while it was archived: listed {size} bytes, read {got}",
                            backend=source.describe(), key=info.key)
    builder.end(size)
    await send_pieces(builder, send)


async def send_pieces(builder: ArchiveBuilder, send: MemoryObjectSendStream[bytes]) -> None:
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
