"""Planning: what to copy, skip or delete, from a sorted merge of two listings.

Neither listing is ever held in memory: both sides are streamed in key order
and merged like two sorted files. A backend that cannot list in order
(``features.sorted_listing`` false) is spilled into a temporary SQLite table
and read back ``ORDER BY key`` (SQLite's BINARY collation orders UTF-8 the
way Python orders code points, and S3 orders keys).

Whether an object present on both sides is unchanged is decided, in order:

1. from the journal's record of the destination (``dest_index``): if the
   destination object is still the version vertexflow wrote (same ETag or
   version), the record says which source version it was copied from, so no
   request is needed (this is what keeps a no-change sync to listing pages only);
2. with ``checksum``: by the cheapest hash both sides can give
   (:func:`content_comparison`: one both listings carry, else what a stat
   adds, such as the CRC64NVME an S3 store keeps, computed on a local file
   where one side is local disk; else both read and hashed with SHA-256);
3. otherwise by size, and by modification time where the destination keeps
   source mtimes (local disk); on stores that stamp their own upload time (S3),
   a destination newer than the source counts as up to date.

Before those, the options that leave existing destination objects alone
(rclone's): ``ignore_existing`` skips every key the destination has, without
comparing; ``update`` skips a key whose destination object is newer than its
source. ``immutable`` turns a "copy" over an existing object into "refuse":
the sync job reports it as a failure and leaves the object as it is.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import anyio

from ..backends.base import Backend
from ..backends.s3.checksums import Running, computable
from ..errors import NotFound
from ..filters import NO_FILTER, Filter
from ..model import CRC32, CRC32C, CRC64NVME, MD5, SHA256, ObjectInfo
from ..state.journal import DestRecord, Journal
from .spec import CompareMode

Action = Literal["copy", "skip", "delete", "keep", "refuse"]

#: pairs decided per journal look-up
DECIDE_BATCH = 500
#: mtime difference tolerated where the destination keeps mtimes (FAT-style
#: filesystems round to 2 s; 1 s covers stores that keep whole seconds)
MTIME_TOLERANCE = 1.0


@dataclass(frozen=True, slots=True)
class Decision:
    #: copy: send src; skip: already there; delete: dst-only object; keep: dst-only, kept;
    #: refuse: src differs from an existing dst that --immutable forbids overwriting
    action: Action
    src: ObjectInfo | None
    dst: ObjectInfo | None
    why: str

    @property
    def key(self) -> str:
        item = self.src or self.dst
        assert item is not None
        return item.key


async def ordered_listing(backend: Backend, filt: Filter = NO_FILTER,
                          spill_dir: str | None = None) -> AsyncIterator[ObjectInfo]:
    """``backend``'s objects that pass ``filt``, in ascending key order."""
    listing = backend.list(filt.listing_prefix)
    if backend.features.sorted_listing:
        async with aclosing(listing):  # type: ignore[type-var]
            async for info in listing:
                if filt.matches(info):
                    yield info
        return
    async for info in _spill_sorted(listing, filt, spill_dir):
        yield info


async def _spill_sorted(listing: AsyncIterator[ObjectInfo], filt: Filter,
                        spill_dir: str | None) -> AsyncIterator[ObjectInfo]:
    with tempfile.TemporaryDirectory(dir=spill_dir, prefix="vertexflow-sort-") as tmp:
        db = sqlite3.connect(Path(tmp) / "sort.db", check_same_thread=False)
        limiter = anyio.CapacityLimiter(1)

        async def run(fn, *args):  # type: ignore[no-untyped-def]
            return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)

        try:
            await run(db.execute, "CREATE TABLE l (key TEXT PRIMARY KEY, info TEXT) WITHOUT ROWID")
            batch: list[tuple[str, str]] = []
            async with aclosing(listing):  # type: ignore[type-var]
                async for info in listing:
                    if filt.matches(info):
                        batch.append((info.key, _dump(info)))
                    if len(batch) >= 5000:
                        await run(_insert, db, batch)
                        batch = []
            await run(_insert, db, batch)
            cur = await run(db.execute, "SELECT info FROM l ORDER BY key")
            while rows := await run(cur.fetchmany, 2000):
                for (blob,) in rows:
                    yield _load(blob)
        finally:
            await run(db.close)


def _insert(db: sqlite3.Connection, rows: list[tuple[str, str]]) -> None:
    with db:
        db.executemany("INSERT OR REPLACE INTO l VALUES (?, ?)", rows)


def dump_decision(d: Decision) -> str:
    """A decision as JSON text (a plan spilled to disk), read back by :func:`load_decision`."""
    return json.dumps([d.action, d.why, _dump(d.src) if d.src else None, _dump(d.dst) if d.dst else None])


def load_decision(text: str) -> Decision:
    action, why, src, dst = json.loads(text)
    return Decision(action, _load(src) if src else None, _load(dst) if dst else None, why)


def _dump(info: ObjectInfo) -> str:
    # everything the listing said, what describes the bytes included: the copy carries it on
    return json.dumps([info.key, info.size, info.mtime.isoformat() if info.mtime else None,
                       dict(info.hashes), info.etag, info.version, info.content_type,
                       dict(info.headers) if info.headers is not None else None, dict(info.metadata)])


def _load(blob: str) -> ObjectInfo:
    key, size, mtime, hashes, etag, version, content_type, headers, metadata = json.loads(blob)
    return ObjectInfo(key=key, size=size, mtime=datetime.fromisoformat(mtime) if mtime else None,
                      hashes=hashes, etag=etag, version=version, content_type=content_type, headers=headers,
                      metadata=metadata)


async def empty_if_missing(listing: AsyncIterator[ObjectInfo]) -> AsyncIterator[ObjectInfo]:
    """A destination that does not exist yet (a new directory) has nothing in it."""
    try:
        async with aclosing(listing):  # type: ignore[type-var]
            async for info in listing:
                yield info
    except NotFound as exc:
        if exc.key:  # an object vanished mid-listing is not an absent root
            raise


async def merge(left: AsyncIterator[ObjectInfo],
                right: AsyncIterator[ObjectInfo]) -> AsyncIterator[tuple[ObjectInfo | None, ObjectInfo | None]]:
    """Pair two key-ordered streams: (a, b) for a key on both sides, (a, None) or (None, b) otherwise."""
    sentinel = None
    a = await anext(left, sentinel)
    b = await anext(right, sentinel)
    while a is not None or b is not None:
        if b is None or (a is not None and a.key < b.key):
            yield a, None
            a = await anext(left, sentinel)
        elif a is None or b.key < a.key:
            yield None, b
            b = await anext(right, sentinel)
        else:
            yield a, b
            a = await anext(left, sentinel)
            b = await anext(right, sentinel)


class Planner:
    """Turns the merged listings into decisions, in key order."""

    def __init__(self, src: Backend, dst: Backend, *, journal: Journal | None, mode: CompareMode = "size_mtime",
                 delete: bool = False, filt: Filter = NO_FILTER, spill_dir: str | None = None,
                 ignore_existing: bool = False, update: bool = False, immutable: bool = False,
                 source_items: Callable[[], AsyncIterator[ObjectInfo]] | None = None) -> None:
        self.src, self.dst = src, dst
        #: the source's objects in key order, when not its filtered listing (links added: :mod:`.links`)
        self.source_items = source_items
        self.journal = journal
        self.mode = mode
        self.delete = delete
        self.ignore_existing = ignore_existing
        self.update = update
        self.immutable = immutable
        self.filter = filt
        self.spill_dir = spill_dir
        self.src_listed = 0
        self.dst_listed = 0

    async def decisions(self) -> AsyncIterator[Decision]:
        listing = self.source_items() if self.source_items is not None else ordered_listing(
            self.src, self.filter, self.spill_dir)
        src_items = self._count(listing, "src_listed")
        dst_items = self._count(empty_if_missing(ordered_listing(self.dst, self.filter, self.spill_dir)),
                                "dst_listed")
        batch: list[tuple[ObjectInfo | None, ObjectInfo | None]] = []
        async with aclosing(src_items), aclosing(dst_items):  # type: ignore[type-var]
            async for pair in merge(src_items, dst_items):
                batch.append(pair)
                if len(batch) >= DECIDE_BATCH:
                    for d in await self._decide(batch):
                        yield d
                    batch = []
            for d in await self._decide(batch):
                yield d

    async def _count(self, items: AsyncIterator[ObjectInfo], counter: str) -> AsyncIterator[ObjectInfo]:
        async with aclosing(items):  # type: ignore[type-var]
            async for info in items:
                setattr(self, counter, getattr(self, counter) + 1)
                yield info

    async def _decide(self, pairs: Sequence[tuple[ObjectInfo | None, ObjectInfo | None]]) -> list[Decision]:
        both = [d.key for s, d in pairs if s is not None and d is not None]
        records: dict[str, DestRecord] = {}
        if both and self.journal is not None:
            records = await self.journal.dest_records(self.dst.describe(), both)
        out = []
        for s, d in pairs:
            if d is None:
                assert s is not None
                out.append(Decision("copy", s, None, "missing at destination"))
            elif s is None:
                out.append(Decision("delete" if self.delete else "keep", None, d, "not at source"))
            else:
                out.append(await self.compare(s, d, records.get(s.key)))
        return out

    async def compare(self, s: ObjectInfo, d: ObjectInfo, rec: DestRecord | None) -> Decision:
        """Decide for a key present on both sides; ``rec`` is the journal's record of the destination."""
        if self.ignore_existing:
            return Decision("skip", s, d, "at destination (--ignore-existing)")
        if self.update and s.mtime is not None and d.mtime is not None \
                and d.mtime.timestamp() - s.mtime.timestamp() > MTIME_TOLERANCE:
            return Decision("skip", s, d, "newer at destination (--update)")
        decision = await self._compare(s, d, rec)
        if self.immutable and decision.action == "copy":
            return Decision("refuse", s, d, f"{decision.why}: --immutable, the destination object is kept")
        return decision

    async def _compare(self, s: ObjectInfo, d: ObjectInfo, rec: DestRecord | None) -> Decision:
        ours = rec is not None and rec.dst_version is not None and rec.dst_version == d.version
        # a stored form that hides the content's size (compressed, chunked) is
        # sized from the journal's record of what we wrote there
        d_size = rec.size if d.size is None and ours and rec is not None else d.size
        if s.size is not None and d_size is not None and s.size != d_size:
            return Decision("copy", s, d, "size differs")
        if self.mode == "size_only":
            if d_size is None:
                return Decision("copy", s, d, "size unknown at destination")
            return Decision("skip", s, d, "same size")
        # a copy recorded with another digest than SHA-256 (a CRC64NVME: vertexflow.backends.local.stream_digest)
        # is compared by content below
        if ours and not (self.mode == "checksum" and rec is not None and rec.sha256 is None):
            assert rec is not None
            # the destination is what we wrote; compare the source with what we copied then
            if self.mode == "checksum":
                try:
                    src_sum = await object_sha256(self.src, s)
                except NotFound:  # deleted since listed (a platform writing meanwhile): the copy says so, per object
                    return Decision("copy", s, d, "vanished since listed")
                same = src_sum is not None and src_sum == rec.sha256
                return Decision("skip" if same else "copy", s, d, "same SHA-256" if same else "SHA-256 differs")
            if rec.src_version is not None and rec.src_version == s.version:
                return Decision("skip", s, d, "unchanged since last copy")
            if rec.src_mtime is not None and s.mtime is not None and rec.size == s.size \
                    and abs(rec.src_mtime - s.mtime.timestamp()) <= MTIME_TOLERANCE:
                return Decision("skip", s, d, "unchanged since last copy")
            return Decision("copy", s, d, "source changed since last copy")
        if self.mode == "checksum":
            try:
                algorithm, same = await content_comparison(self.src, s, self.dst, d)
            except NotFound:  # deleted since listed (a platform writing meanwhile): the copy says so, per object
                return Decision("copy", s, d, "vanished since listed")
            name = HASH_NAMES[algorithm]
            return Decision("skip" if same else "copy", s, d, f"same {name}" if same else f"{name} differs")
        if s.mtime is None or d.mtime is None:
            return Decision("skip", s, d, "same size")
        delta = d.mtime.timestamp() - s.mtime.timestamp()
        if self.dst.features.preserves_mtime:
            if abs(delta) <= MTIME_TOLERANCE:
                return Decision("skip", s, d, "same size and mtime")
            return Decision("copy", s, d, "mtime differs")
        # the destination's own time (when it was stored) is whole seconds on S3 (LastModified): an
        # object stored in the same second its source was written reads as up to 1 s older than it
        if delta > -MTIME_TOLERANCE:
            return Decision("skip", s, d, "same size, destination newer")
        return Decision("copy", s, d, "source newer")


#: the hashes ``--checksum`` (and ``verify``) compare, the first that both sides give deciding: the
#: cheapest to compute where one side is a local file first (CRC64NVME ~6 GB/s here, SHA-256 ~1 GB/s,
#: MD5 ~0.4 GB/s), a 32-bit CRC after the 128-bit MD5 (docs/fidelity.md, "Full-object checksums")
CONTENT_HASHES = (CRC64NVME, SHA256, MD5, CRC32C, CRC32)
HASH_NAMES = {CRC64NVME: "CRC64NVME", SHA256: "SHA-256", MD5: "MD5", CRC32C: "CRC32C", CRC32: "CRC32"}
#: bytes a local file is read in to be hashed
_READ_SIZE = 1024 * 1024


def common_hash(a: ObjectInfo, b: ObjectInfo) -> tuple[str, bool] | None:
    """(algorithm, whether equal) by the first of :data:`CONTENT_HASHES` both carry; None if they share none."""
    for algorithm in CONTENT_HASHES:
        if a.hashes.get(algorithm) and b.hashes.get(algorithm):
            return algorithm, a.hashes[algorithm].lower() == b.hashes[algorithm].lower()
    return None


async def content_comparison(src: Backend, s: ObjectInfo, dst: Backend, d: ObjectInfo) -> tuple[str, bool]:
    """(algorithm, whether ``s`` and ``d`` hold the same bytes), by the cheapest hash both sides give:
    :func:`cheap_comparison`, else both read and hashed with SHA-256."""
    found = await cheap_comparison(src, s, dst, d)
    if found is not None:
        return found
    return SHA256, await object_sha256(src, s) == await object_sha256(dst, d)


async def cheap_comparison(src: Backend, s: ObjectInfo, dst: Backend, d: ObjectInfo) -> tuple[str, bool] | None:
    """(algorithm, whether ``s`` and ``d`` hold the same bytes) without reading a remote object, or None.

    In order of cost: a hash both listings carry (no request); the hashes a
    stat adds (``features.stat_hashes``: S3's HeadObject gives the store's
    full-object checksums, which it checked against the bytes, and the
    SHA-256 vertexflow keeps as metadata), one stat per side that needs it;
    where one side is a local file, that file hashed with the best algorithm
    the other side gives. None when only reading both would tell (an object
    gone since it was listed included: the read then says which side).
    """
    found = common_hash(s, d)
    if found is not None:
        return found
    local_s, local_d = src.features.local_path, dst.features.local_path
    try:
        if src.features.stat_hashes and not local_s:
            s = await _stat_hashes(src, s)
            found = common_hash(s, d)
        if found is None and dst.features.stat_hashes and not local_d:
            d = await _stat_hashes(dst, d)
            found = common_hash(s, d)
        if found is not None:
            return found
        for local, backend, info, other in ((local_s, src, s, d), (local_d, dst, d, s)):
            algorithm = next((a for a in CONTENT_HASHES if other.hashes.get(a) and computable(a)), None)
            if local and algorithm is not None:
                digest = await file_digest(backend, info.key, algorithm)
                return algorithm, digest == other.hashes[algorithm].lower()
    except (NotFound, FileNotFoundError):
        return None
    return None


async def _stat_hashes(backend: Backend, info: ObjectInfo) -> ObjectInfo:
    """``info`` with the hashes its stat adds, if it is still the version listed."""
    head = await backend.stat(info.key)
    if info.version is not None and head.version != info.version:
        return info  # changed since listed: its hashes describe other bytes
    return ObjectInfo(key=info.key, size=info.size, version=info.version, hashes={**info.hashes, **head.hashes})


async def file_digest(backend: Backend, key: str, algorithm: str) -> str:
    """The ``algorithm`` digest (hex) of a local file of ``backend``, read in a worker thread."""
    if algorithm == SHA256:
        return await backend.file_sha256(key)
    path = backend.local_path(key)

    def digest() -> str:
        running: Any = hashlib.md5(usedforsecurity=False) if algorithm == MD5 else Running(algorithm)
        with open(path, "rb") as f:
            while chunk := f.read(_READ_SIZE):
                running.update(chunk)
        return str(running.hexdigest())

    return await anyio.to_thread.run_sync(digest)


async def object_sha256(backend: Backend, info: ObjectInfo) -> str:
    """The SHA-256 of an object: the backend's own if it reports one, else read and hashed."""
    if info.hashes.get(SHA256):
        return info.hashes[SHA256]
    if backend.features.local_path:
        return await backend.file_sha256(info.key)
    h = hashlib.sha256()
    async with backend.open(info.key) as chunks:
        async for chunk in chunks:
            h.update(chunk)
    return h.hexdigest()
