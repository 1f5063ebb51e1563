"""The compressed stream as parts: cut and put while it is produced; read back, checked, decoded.

Writing (:func:`write_parts`): the stream is pulled by the body of one
``put`` per part, so each part goes to the destination as it is produced and
memory holds only the pieces in flight (the producer's channel plus what the
backend buffers: one multipart part for S3, nothing for local disk).

A part's body can be read **once**: the bytes come from the live archive and
are not kept. ``put`` implementations call the body once per call (they do
not retry whole uploads themselves), and retrying a part would need the
archive to be produced again, so a failed part fails the backup. It is left
without metadata.json, listed as incomplete, and removed by ``prune``. This
is the chosen trade-off against spooling every part (up to ``--chunk-size``)
to temporary disk; it is documented in docs/backup.md.

Reading (:func:`archive_events`): the parts in order, each checked against
its size and SHA-256, decompressed with bounded output per step and parsed
as tar, yielding :mod:`.tarstream` events.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import partial

import anyio

from ...backends.base import Backend
from ...errors import BackupError, CorruptArchive, CorruptData, CorruptInput, NotFound, PartNotReplayable
from ...model import ObjectInfo
from ...transforms.chunking import Cutter
from ...transforms.compression import Decoder, ZstdDecoder, decoder
from .metadata import StorageSection, StoredFile
from .tarstream import TarParser

#: a piece at least this long is hashed/decoded in a worker thread (a hand-off costs ~0.1-0.25 ms)
THREAD_MIN = 256 * 1024


@dataclass(slots=True)
class StreamDigest:
    """Size and SHA-256 of the whole compressed stream, taken as the parts are cut."""

    size: int = 0
    sha256: object = field(default_factory=hashlib.sha256)


async def write_parts(dest: Backend, folder: str, chunks: AsyncIterator[bytes], *, chunk_size: int,
                      name_of: Callable[[int], str], digest: StreamDigest) -> list[StoredFile]:
    """Cut ``chunks`` into parts of at most ``chunk_size`` bytes and put each at ``folder/name``.

    Returns the parts in order. At least one part is written (an empty
    stream cannot happen: a tar archive ends with its end blocks).
    """
    cutter = Cutter(chunks)
    parts: list[StoredFile] = []
    while not parts or not await cutter.at_end():
        name = name_of(len(parts))
        end = cutter.pos + chunk_size
        size = 0
        calls = 0

        async def body(name: str = name, end: int = end) -> AsyncIterator[bytes]:
            nonlocal size, calls
            calls += 1
            if calls > 1:
                raise PartNotReplayable(f"part {name} was asked for twice; parts are streamed once")
            async for piece in cutter.take(end):
                if len(piece) >= THREAD_MIN:
                    await anyio.to_thread.run_sync(digest.sha256.update, piece)  # type: ignore[attr-defined]
                else:
                    digest.sha256.update(piece)  # type: ignore[attr-defined]
                size += len(piece)
                digest.size += len(piece)
                yield piece

        key = f"{folder}/{name}"
        stored = await dest.put(ObjectInfo(key=key, size=None), body)
        if cutter.pos < end and not await cutter.at_end():
            raise BackupError(f"part {name}: {dest.describe()} stopped reading it after {size} bytes")
        if stored.size is not None and stored.size != size:
            raise CorruptData(f"part {name}: the destination stored {stored.size} bytes, {size} were sent",
                              backend=dest.describe(), key=key)
        # every backend hashes what it stores in-stream (the contract); a part is not hashed twice
        sha = stored.hashes.get("sha256") or await _stored_sha256(dest, key)
        parts.append(StoredFile(name, size, sha))
    return parts


def _update2(a: object, b: object, data: bytes) -> None:
    a.update(data)  # type: ignore[attr-defined]
    b.update(data)  # type: ignore[attr-defined]


async def _stored_sha256(dest: Backend, key: str) -> str:
    """The SHA-256 of a part read back, for a backend that reports none from ``put``."""
    h = hashlib.sha256()
    async with dest.open(key) as chunks:
        async for chunk in chunks:
            h.update(chunk)
    return h.hexdigest()


@dataclass(slots=True)
class Problem:
    """One thing wrong with a backup: where (a part or object name, or a member path) and what."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


#: compressed bytes per zstd decompress call: 4x the generic decoder's slice, fewer calls
_ZSTD_SLICE = 1024 * 1024


def _pieces(dec: Decoder) -> list[bytes]:
    return dec.pieces(_ZSTD_SLICE) if isinstance(dec, ZstdDecoder) else [dec.pull()]


class _Reading:
    """State of one read of the archive: decoder, tar parser, stream digest, problems so far."""

    def __init__(self, backup: Backend, section: StorageSection, bid: str, problems: list[Problem] | None) -> None:
        self.backup, self.section, self.bid, self.problems = backup, section, bid, problems
        self.dec = decoder(section.compression)
        self.parser = TarParser()
        self.whole = hashlib.sha256()
        self.broken = False

    def report(self, where: str, what: str, exc_type: type[BackupError] = CorruptData) -> None:
        self.broken = True
        if self.problems is None:
            if exc_type is CorruptData:
                raise CorruptData(f"backup {self.bid}, {what}", backend=self.backup.describe(), key=where)
            raise exc_type(f"backup {self.bid}, {where}: {what}")
        self.problems.append(Problem(where, what))

    def step(self) -> list[object]:
        """One bounded decode step (about DECODE_OUTPUT bytes), parsed. Blocking."""
        try:
            events: list[object] = []
            for piece in _pieces(self.dec):
                events += self.parser.feed(piece)
            return events
        except CorruptInput as exc:
            raise CorruptArchive(f"the compressed stream does not decode: {exc}") from None

    def check_part(self, part: StoredFile, size: int, h: object | None) -> None:
        if size != part.size:
            self.report(part.name, f"part is {size} bytes, metadata says {part.size}")
        elif h is not None and h.hexdigest() != part.sha256:  # type: ignore[attr-defined]
            self.report(part.name, "part's SHA-256 differs from the metadata (corrupted)")

    def end(self, stream_hashed: bool) -> None:
        if stream_hashed and self.whole.hexdigest() != self.section.stream_sha256 and not self.broken:
            self.report("stream", "the parts joined differ from the recorded stream SHA-256")
        if not self.broken:
            try:
                self.dec.finish()
                self.parser.finish()
            except CorruptInput as exc:
                self.report(self.section.parts[-1].name, f"the archive is truncated: {exc}", CorruptArchive)
            except CorruptArchive as exc:
                self.report(self.section.parts[-1].name, str(exc), CorruptArchive)


async def archive_events(backup: Backend, section: StorageSection, *, bid: str,
                         problems: list[Problem] | None = None, hash_parts: bool = True) -> AsyncIterator[object]:
    """The archive's tar events, read from the parts of ``section`` in the folder ``bid`` of ``backup``.

    With ``problems`` None the first problem raises (:class:`CorruptData`
    for a part, :class:`CorruptArchive` for the archive); otherwise each is
    appended and reading goes on: the remaining parts are still hashed and
    checked, but no events follow a broken part (the stream after it cannot
    be trusted). ``hash_parts=False`` checks only the parts' sizes: for a
    second read whose consumer checks every member's SHA-256 itself.
    """
    r = _Reading(backup, section, bid, problems)
    for part in section.parts:
        h = hashlib.sha256() if hash_parts else None
        size = 0
        try:
            async with backup.open(f"{bid}/{part.name}") as chunks:
                async for chunk in chunks:
                    size += len(chunk)
                    if h is not None:
                        if len(chunk) >= THREAD_MIN:
                            await anyio.to_thread.run_sync(_update2, h, r.whole, chunk)
                        else:
                            _update2(h, r.whole, chunk)
                    if r.broken:
                        continue
                    r.dec.push(chunk)
                    while not r.broken and r.dec.pending:
                        try:
                            events = await anyio.to_thread.run_sync(r.step)
                        except CorruptArchive as exc:
                            r.report(part.name, str(exc), CorruptArchive)
                            break
                        for event in events:
                            yield event
        except NotFound:
            r.report(part.name, "part is missing")
            continue
        r.check_part(part, size, h)
    r.end(hash_parts)


async def scan_archive(backup: Backend, section: StorageSection, handle: Callable[[object], None], *, bid: str,
                       problems: list[Problem] | None = None) -> None:
    """Like :func:`archive_events`, but each event goes to ``handle`` inside the worker thread.

    Why: a thread hop per event (and per data piece's hash) cost more than
    the work on random data. Each read chunk is hashed (part + stream, one
    thread) while it is decoded, parsed and handled (another thread), so
    two cores share the work; decode steps stay bounded and their events are
    handled at once, so memory stays at a few chunks. ``handle`` may raise:
    the error propagates (not a part problem).
    """
    r = _Reading(backup, section, bid, problems)

    def decode(chunk: bytes) -> None:
        r.dec.push(chunk)
        while r.dec.pending:
            for event in r.step():
                handle(event)

    for part in section.parts:
        h = hashlib.sha256()
        size = 0
        try:
            async with backup.open(f"{bid}/{part.name}") as chunks:
                async for chunk in chunks:
                    size += len(chunk)
                    if r.broken:
                        await anyio.to_thread.run_sync(_update2, h, r.whole, chunk)
                        continue
                    failed: Exception | None = None
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(partial(anyio.to_thread.run_sync, _update2, h, r.whole, chunk))
                        try:
                            await anyio.to_thread.run_sync(decode, chunk)
                        except Exception as exc:  # noqa: BLE001 - re-raised below, outside the task group
                            failed = exc
                    if isinstance(failed, CorruptArchive):
                        r.report(part.name, str(failed), CorruptArchive)
                    elif failed is not None:
                        raise failed
        except NotFound:
            r.report(part.name, "part is missing")
            continue
        r.check_part(part, size, h)
    r.end(True)


async def data_of(events: AsyncIterator[object]) -> AsyncIterator[bytes]:
    """The data pieces of the current member, up to its END_MEMBER (consumed)."""
    from .tarstream import END_MEMBER

    async for event in events:
        if event is END_MEMBER:
            return
        yield event  # type: ignore[misc]


async def read_object(backend: Backend, key: str) -> bytes:
    """A small object (metadata, checksum lists) whole."""
    async with backend.open(key) as chunks, aclosing(chunks) as it:  # type: ignore[type-var]
        return b"".join([c async for c in it])
