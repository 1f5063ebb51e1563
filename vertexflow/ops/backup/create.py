"""``backup create``: database copy, storage archive, SHA256SUMS, then metadata.json last.

Order matters for what a reader can trust: every object of the backup is
put (whole-or-nothing each) before SHA256SUMS and metadata.json, so a backup
folder without metadata.json is an interrupted one, never a complete backup
with something missing.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from ... import __version__
from ...backends.base import Backend
from ...errors import ConfigError, first_error
from ...model import ObjectInfo, body_from_bytes
from ...transforms.compression import Codec, encoder
from .archive import ArchiveBuilder, produce, spooled_body, spooled_size
from .database import file_digest, snapshot
from .metadata import (
    DESCRIPTIONS,
    MEMBERS,
    METADATA,
    SHA256SUMS,
    DatabaseSection,
    Metadata,
    StorageSection,
    StoredFile,
    backup_id,
    database_name,
    part_name,
)
from .parts import StreamDigest, write_parts

DEFAULT_CHUNK = 100 * 1024 * 1024
#: compressed pieces in flight between the archive producer and the part writer
CHANNEL_DEPTH = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateOptions:
    kind: str  # "full" | "database" | "storage"
    codec: Codec
    chunk_size: int = DEFAULT_CHUNK
    db_path: str | None = None
    storage: Backend | None = None
    storage_spec: str | None = None


@dataclass(slots=True)
class CreateResult:
    metadata: Metadata
    folder: str
    seconds: float
    skipped: list[str] = field(default_factory=list)


async def create_backup(dest: Backend, opts: CreateOptions, *, now: datetime | None = None) -> CreateResult:
    """Write one complete backup into a new folder of ``dest``; returns its metadata."""
    if opts.kind not in ("full", "database", "storage"):
        raise ConfigError(f"--type {opts.kind!r}: use full, database or storage")
    if opts.kind in ("full", "database") and not opts.db_path:
        raise ConfigError(f"--type {opts.kind} needs --db PATH (or VERTEXFLOW_DB)")
    if opts.kind in ("full", "storage") and opts.storage is None:
        raise ConfigError(f"--type {opts.kind} needs --storage URL")
    if opts.chunk_size < 1024:
        raise ConfigError("--chunk-size must be at least 1K")
    started = time.monotonic()
    now = now or datetime.now(UTC)
    await dest.check(write=True)
    bid = await free_id(dest, opts.kind, now)
    db_section = storage_section = None
    skipped: list[str] = []
    if opts.db_path:
        db_section = await store_database(dest, bid, opts.db_path, opts.codec)
    if opts.storage is not None and opts.kind != "database":
        source = opts.storage
        storage_section, skipped = await store_archive(
            dest, bid, lambda builder, send: produce(source, builder, send), codec=opts.codec,
            chunk_size=opts.chunk_size, source=opts.storage_spec or source.describe())
    meta = Metadata(id=bid, type=opts.kind, created=now.replace(microsecond=0), vertexflow_version=__version__,
                    storage=storage_section, database=db_section)
    await finish_backup(dest, meta)
    return CreateResult(meta, bid, time.monotonic() - started, skipped)


async def finish_backup(dest: Backend, meta: Metadata) -> None:
    """SHA256SUMS, then metadata.json: the backup is complete once the last is stored."""
    await put_small(dest, f"{meta.id}/{SHA256SUMS}", meta.sha256sums())
    await put_small(dest, f"{meta.id}/{METADATA}", meta.to_json())


async def free_id(dest: Backend, kind: str, now: datetime) -> str:
    for seq in range(1000):
        bid = backup_id(kind, now, seq)
        async for _ in dest.list(bid + "/"):
            break
        else:
            return bid
    raise ConfigError(f"{dest.describe()}: too many backups started in the same second")


async def put_small(dest: Backend, key: str, data: bytes) -> StoredFile:
    sha = hashlib.sha256(data).hexdigest()
    await dest.put(ObjectInfo(key=key, size=len(data), hashes={"sha256": sha}), body_from_bytes(data))
    return StoredFile(key.rsplit("/", 1)[-1], len(data), sha)


#: fills an archive: writes members into the builder, sends its pieces, finishes it and closes the channel
Producer = Callable[[ArchiveBuilder, MemoryObjectSendStream[bytes]], Awaitable[None]]


async def store_archive(dest: Backend, bid: str, producer: Producer, *, codec: Codec, chunk_size: int,
                        source: str) -> tuple[StorageSection, list[str]]:
    """The archive ``producer`` fills, cut into parts and put while it is produced, with its member lists.

    Returns the storage section and the files skipped (vanished before they were read).
    """
    builder = ArchiveBuilder(codec)
    digest = StreamDigest()
    send, receive = anyio.create_memory_object_stream[bytes](CHANNEL_DEPTH)

    async def chunks() -> AsyncIterator[bytes]:
        async with receive:
            async for piece in receive:
                yield piece

    parts: list[StoredFile] = []
    try:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(producer, builder, send)
                parts = await write_parts(dest, bid, chunks(), chunk_size=chunk_size,
                                          name_of=lambda i: part_name(codec.name, i), digest=digest)
        except BaseExceptionGroup as group:
            raise first_error(group) from None  # the producer's or the writer's own error, not a group
        members = await put_spooled(dest, f"{bid}/{MEMBERS}", builder.members)
        descriptions = await put_spooled(dest, f"{bid}/{DESCRIPTIONS}", builder.descriptions)
    finally:
        builder.members.close()
        builder.descriptions.close()
    section = StorageSection(
        source=source, compression=codec.name, level=codec.level,
        chunk_size=chunk_size, parts=tuple(parts), stream_size=digest.size,
        stream_sha256=digest.sha256.hexdigest(),  # type: ignore[attr-defined]
        files=builder.stats.files, bytes=builder.stats.bytes,
        members=members, directories=builder.stats.directories, descriptions=descriptions)
    return section, builder.stats.skipped


async def put_spooled(dest: Backend, key: str, f: IO[bytes]) -> StoredFile:
    size = spooled_size(f)
    sha = await anyio.to_thread.run_sync(_spool_sha, f)
    await dest.put(ObjectInfo(key=key, size=size, hashes={"sha256": sha}), spooled_body(f))
    return StoredFile(key.rsplit("/", 1)[-1], size, sha)


def _spool_sha(f: object) -> str:
    h = hashlib.sha256()
    f.seek(0)  # type: ignore[attr-defined]
    while data := f.read(1024 * 1024):  # type: ignore[attr-defined]
        h.update(data)
    return h.hexdigest()


async def store_database(dest: Backend, bid: str, db_path: str, codec: Codec) -> DatabaseSection:
    """Snapshot to a temporary file, then put it compressed. The put's body replays from the file."""
    with tempfile.TemporaryDirectory(prefix="vertexflow-backup-") as tmp:
        copy = os.path.join(tmp, "database.sqlite3")
        await anyio.to_thread.run_sync(snapshot, db_path, copy)
        size, sha = await anyio.to_thread.run_sync(file_digest, copy)
        name = database_name(codec.name)
        stored_hash = hashlib.sha256()
        stored_size = 0

        async def body() -> AsyncIterator[bytes]:
            nonlocal stored_hash, stored_size
            stored_hash, stored_size = hashlib.sha256(), 0
            enc = encoder(codec)
            f = await anyio.to_thread.run_sync(open, copy, "rb")
            try:
                while True:
                    data = await anyio.to_thread.run_sync(f.read, 4 * 1024 * 1024)
                    pieces = await anyio.to_thread.run_sync(enc.feed, data) if data else enc.finish()
                    for piece in pieces:
                        stored_hash.update(piece)
                        stored_size += len(piece)
                        yield piece
                    if not data:
                        return
            finally:
                f.close()

        stored = await dest.put(ObjectInfo(key=f"{bid}/{name}", size=None), body)
        sha_stored = stored_hash.hexdigest()
        if stored.hashes.get("sha256", sha_stored) != sha_stored:
            from ...errors import CorruptData
            raise CorruptData("the destination stored other bytes than were sent", backend=dest.describe(),
                              key=f"{bid}/{name}")
    return DatabaseSection(source=os.path.abspath(db_path), compression=codec.name,
                           stored=StoredFile(name, stored_size, sha_stored), size=size, sha256=sha)
