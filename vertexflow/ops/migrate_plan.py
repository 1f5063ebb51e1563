"""``migrate plan``: what a change window needs to know before a company migration.

:func:`plan_migration` records nothing and leaves nothing behind:

1. **files and bytes** per content type, from the migration's own dry run
   (:func:`~vertexflow.ops.migrate.migrate_company` with ``dry_run``): what a
   migration with the same filter would copy, and what the filter leaves out;
2. **quota**, per target store: the bytes to copy against the free space.
   A local directory is asked of its file system (the nearest directory that
   exists, as the target's may not exist yet); another store says what it
   knows (Yandex.Disk its free space); one that says nothing is "unknown";
3. **a throughput probe** of both ends, bounded in time and requests:

   * a sample of the files the migration would copy, drawn while listing
     the source: a uniform random sample (reservoir sampling, seeded: the
     seed is in the report) within each size class of :data:`SIZE_CLASSES`,
     the classes sharing :data:`PROBE_FILES` equally, taken in turn;
   * a read phase: the sampled files are read from the source with the
     migration's concurrency (``transfers``), at most :data:`PROBE_PART`
     bytes of each and :data:`PROBE_BYTES` in all, for half the time; a write
     phase: the same bytes are written to the target, under keys that begin
     with ``.vertexflow-probe-<random hex>-`` (no company file is named so),
     for the rest. Each of the ``transfers`` workers first warms its
     connection, untimed (a byte of a sampled file; a one-byte probe
     object). A phase starts files in the first :data:`START_SHARE` of its
     time and cuts what is still in flight at its end; a cut operation's
     time is extrapolated from the bytes it had moved;
   * every probe object is then deleted and the probe's keys listed again
     to check that none is left (shielded from cancellation and time-boxed:
     this also runs when the plan fails or is interrupted).

   Probe objects go in the company's folder on the target. On a store whose
   folders the storage contract cannot remove (Yandex.Disk), where that
   folder does not exist yet, they go in the nearest folder above it that
   exists, so that the probe creates no folder; on local disk the empty
   directories the probe made are removed.

4. **the estimate**. Within a size class the probed files are a uniform
   sample, so their mean time (a file read in part counted for its whole
   size, in proportion) times the class's files estimates the class's time;
   the sum over the classes, divided by the files in flight, estimates all
   the reads, and likewise all the writes. A copy overlaps the reads and
   writes of different files, so the migration's estimate is the slower of
   the two; ``serial_seconds`` (their sum) is what it takes where a file's
   read and write do not overlap at all. The range: the lowest and highest
   of the same estimate made from each of :data:`BATCHES` interleaved parts
   of the probed files (and the estimate itself). With five parts the
   median of such part estimates lies outside their range with probability
   1/16.

Not estimated: listing (its time is reported: the migration lists the
company again), provisioning, and the verification after the copy (which
reads or hashes every file again). ``docs/migration-plan.md`` says more.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
import random
import secrets
import shutil
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from ..errors import ConfigError, NotFound
from ..filters import NO_FILTER, Filter
from ..logs import get_logger
from ..model import ObjectInfo, body_from_bytes
from ..tenancy.adapters import StorageAdapter
from ..tenancy.manager import StorageManager, Target
from ..tenancy.registry import ACTIVE_STATES
from .migrate import ContentPlan, migrate_company, resolve_target
from .spec import TransferSettings

log = get_logger(__name__)

#: files sampled for the probe: with 16 in flight, eight rounds, enough for five parts of a useful
#: size; at most this many reads, writes and deletes each, little next to a store's rate limit
PROBE_FILES = 128
#: the size classes sampled separately (bounds in bytes): a request's fixed cost dominates a file's
#: time below 64 KiB, its bytes above 1 MiB; so that a few large files among many small ones (the
#: videos of a company of images) are probed, not left to chance
SIZE_CLASSES = (64 * 1024, 1024 * 1024, 16 * 1024 * 1024, 256 * 1024 * 1024)
#: bytes read (and written) of one sampled file at most: large enough that a request's fixed cost
#: does not dominate, small enough that the files in flight hold tens of MiB, not more
PROBE_PART = 4 * 1024 * 1024
#: bytes the probe holds in memory at most (read, waiting to be written)
PROBE_BYTES = 64 * 1024 * 1024
#: the probe's wall time by default, in seconds: a few rounds of every file in flight on a store
#: tens of milliseconds away, and short enough to run before any change window
PROBE_SECONDS = 3.0
#: the shortest and longest probe a caller may ask for, in seconds: below half a second a remote
#: store's first requests (connections, TLS) are most of it; above a minute it is a migration
PROBE_SECONDS_RANGE = (0.5, 60.0)
#: interleaved parts of the probed files, one estimate each: their lowest and highest are the range
BATCHES = 5
#: seconds the deletion of probe objects may take before the plan gives up and names what is left
CLEANUP_SECONDS = 20.0
#: the share of a phase's time in which it starts new files; the rest lets those in flight finish
START_SHARE = 0.75
#: the bytes a probe write hands the backend at a time (so a cut write shows its progress)
WRITE_CHUNK = 256 * 1024
PROBE_PREFIX = ".vertexflow-probe-"


@dataclass(slots=True)
class QuotaCheck:
    """The bytes one target store must take against its free space."""

    store: str
    content_types: list[str]
    needed: int
    #: None: the store reports none (unknown or unlimited)
    free: int | None
    #: how ``free`` was learned: "file system" (a local directory), "store" (it said), "unknown"
    how: str

    @property
    def fits(self) -> bool | None:
        return None if self.free is None else self.needed <= self.free

    def as_dict(self) -> dict[str, Any]:
        return {"store": self.store, "content_types": self.content_types, "needed": self.needed,
                "free": self.free, "how": self.how, "fits": self.fits}


@dataclass(slots=True)
class SizeClass:
    """One size class of the company's files (those the migration would copy) and how many were sampled."""

    min_size: int
    max_size: int | None   # exclusive; None: no bound
    files: int = 0
    bytes: int = 0
    sampled: int = 0

    def label(self) -> str:
        low = _size(self.min_size)
        return f"{low} and more" if self.max_size is None else f"{low} to {_size(self.max_size)}"

    def as_dict(self) -> dict[str, Any]:
        return {"sizes": self.label(), "min_size": self.min_size, "max_size": self.max_size, "files": self.files,
                "bytes": self.bytes, "sampled": self.sampled}


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:g} {unit}"
        n //= 1024
    return f"{n} GiB"  # pragma: no cover


@dataclass(slots=True)
class SideReport:
    """One direction of the probe (reads from the source, or writes to the target) and its estimate."""

    files: int = 0          # operations started
    completed: int = 0
    #: cut at the phase's end: their time extrapolated from the bytes they had moved
    censored: int = 0
    errors: int = 0
    first_error: str | None = None
    #: sampled files gone from the source since the listing (reads only)
    vanished: int = 0
    bytes: int = 0          # bytes moved
    seconds: float = 0.0    # the phase's wall time
    #: seconds for every file of the migration at the probe's concurrency; the range around it
    estimate: float | None = None
    low: float | None = None
    high: float | None = None
    batches: list[float] = field(default_factory=list)
    #: size classes with files of the company none of which was probed (no estimate then)
    unprobed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        rate = self.bytes / self.seconds if self.seconds > 0 else None
        files_rate = self.completed / self.seconds if self.seconds > 0 else None
        return {"files": self.files, "completed": self.completed, "censored": self.censored,
                "errors": self.errors, "first_error": self.first_error, "vanished": self.vanished,
                "bytes": self.bytes, "seconds": round(self.seconds, 3),
                "bytes_per_s": None if rate is None else round(rate, 1),
                "files_per_s": None if files_rate is None else round(files_rate, 2),
                "estimate_seconds": _round(self.estimate), "low_seconds": _round(self.low),
                "high_seconds": _round(self.high), "batches": [_round(b) for b in self.batches],
                "unprobed": self.unprobed}


@dataclass(slots=True)
class ProbeReport:
    seed: int
    transfers: int
    budget: float
    #: files drawn (at most PROBE_FILES) from ``population`` listed
    sampled: int = 0
    population: int = 0
    classes: list[SizeClass] = field(default_factory=list)
    prefix: str = ""
    #: where probe objects were written
    where: list[str] = field(default_factory=list)
    read: SideReport = field(default_factory=SideReport)
    write: SideReport = field(default_factory=SideReport)
    seconds: float = 0.0            # the probe's wall time, the sample's listing and the cleanup aside
    sample_seconds: float = 0.0     # the listing that drew the sample
    deleted: int = 0
    #: probe objects (and directories the probe made) still there after the cleanup: should be none
    left: list[str] = field(default_factory=list)
    cleanup_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "transfers": self.transfers, "budget_seconds": self.budget,
                "sampled": self.sampled, "population": self.population,
                "classes": [c.as_dict() for c in self.classes if c.files], "prefix": self.prefix,
                "where": self.where, "read": self.read.as_dict(), "write": self.write.as_dict(),
                "seconds": round(self.seconds, 3), "sample_seconds": round(self.sample_seconds, 3),
                "deleted": self.deleted, "left": self.left, "cleanup_seconds": round(self.cleanup_seconds, 3)}


@dataclass(slots=True)
class Estimate:
    """The copy's duration: the slower of all reads and all writes, and its range."""

    seconds: float
    low: float
    high: float
    read_seconds: float
    write_seconds: float
    #: reads and writes one after the other (no overlap): the pessimistic figure
    serial_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": _round(self.seconds), "low_seconds": _round(self.low), "high_seconds": _round(self.high),
                "read_seconds": _round(self.read_seconds), "write_seconds": _round(self.write_seconds),
                "serial_seconds": _round(self.serial_seconds),
                "range": f"lowest and highest of the estimates from {BATCHES} interleaved parts of the probed "
                         "files, and the estimate"}


@dataclass(slots=True)
class MigrationPlan:
    company: str
    source: dict[str, Any]
    target: dict[str, Any]
    content: list[ContentPlan]
    quota: list[QuotaCheck]
    #: the dry run's listing of the company, in seconds
    listing_seconds: float
    probe: ProbeReport | None = None
    estimate: Estimate | None = None
    #: why there is no estimate
    no_estimate: str | None = None

    @property
    def files(self) -> int:
        return sum(p.objects for p in self.content)

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.content)

    @property
    def left_out(self) -> int:
        return sum(p.total_objects - p.objects for p in self.content)

    @property
    def fits(self) -> bool:
        """False when a store that reports its free space has less than the company needs there."""
        return all(q.fits is not False for q in self.quota)

    def as_dict(self) -> dict[str, Any]:
        return {"company": self.company, "from": self.source, "to": self.target,
                "plan": [p.as_dict() for p in self.content], "files": self.files, "bytes": self.bytes,
                "left_out": self.left_out, "listing_seconds": round(self.listing_seconds, 3),
                "quota": [q.as_dict() for q in self.quota], "fits": self.fits,
                "probe": self.probe.as_dict() if self.probe is not None else None,
                "estimate": self.estimate.as_dict() if self.estimate is not None else None,
                "no_estimate": self.no_estimate}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


async def plan_migration(manager: StorageManager, company_ref: int | str, to: str, *, filt: Filter = NO_FILTER,
                         probe_seconds: float = PROBE_SECONDS, probe: bool = True, transfers: int | None = None,
                         max_files: int = PROBE_FILES, seed: int | None = None) -> MigrationPlan:
    """Plan the migration of a company to ``to``; see the module docstring.

    ``transfers``: files in flight in the probe, as in the migration (its
    default too). ``seed`` draws the sample (random when None; the report
    holds the one used). Raises :class:`ConfigError` for an unknown company
    or connection, a company already on ``to``, or a probe time outside
    :data:`PROBE_SECONDS_RANGE`.
    """
    low, high = PROBE_SECONDS_RANGE
    if not low <= probe_seconds <= high:
        raise ConfigError(f"probe time {probe_seconds:g} s: give {low:g} to {high:g} seconds")
    if transfers is not None and transfers < 1:
        raise ConfigError(f"transfers {transfers}: give at least 1")
    if max_files < 1:
        raise ConfigError(f"probe files {max_files}: give at least 1")
    started = time.monotonic()
    dry = await migrate_company(manager, company_ref, to, filt=filt, dry_run=True)
    listing_seconds = time.monotonic() - started
    company = manager.company(company_ref)
    placement, _ = resolve_target(manager, company, to)
    content_types = [p.content_type for p in dry.plan]
    sources = {ct: manager.target(company, ct, company.placement) for ct in content_types}
    targets = {ct: manager.target(company, ct, placement) for ct in content_types}
    olds: dict[str, StorageAdapter] = {}
    news: dict[str, StorageAdapter] = {}
    try:
        for ct in content_types:
            olds[ct] = manager.adapter_for(sources[ct])
            news[ct] = manager.adapter_for(targets[ct])
        plan = MigrationPlan(dry.company, dry.source, dry.target, dry.plan,
                             await _quota(dry.plan, targets, news), listing_seconds)
        if plan.files == 0:
            plan.no_estimate = ("the filter selects no file of the company: nothing to copy" if plan.left_out
                                else "the company has no files: nothing to copy")
        elif not probe:
            plan.no_estimate = "the throughput probe was not run (--no-probe)"
        elif running := [r for r in manager.require_registry().migrations(company.id)
                         if r.state in ACTIVE_STATES and not r.is_stale()]:
            # its verification would find the probe's objects on the target: differences that fail it
            plan.no_estimate = (f"migration {running[-1].id} of the company is in progress ({running[-1].state}): "
                                "the probe would write where it copies")
        else:
            local_only = all(olds[ct].backend.features.direct_files and news[ct].backend.features.direct_files
                             for ct in content_types)
            run = _Probe(manager, olds, targets, filt, TransferSettings(transfers=transfers).transfers_for(local_only),
                         probe_seconds, max_files, secrets.randbits(32) if seed is None else seed)
            plan.probe = await run.run()
            plan.estimate, plan.no_estimate = _estimate(plan.probe)
        return plan
    finally:
        with anyio.CancelScope(shield=True):
            for adapter in (*olds.values(), *news.values()):
                await adapter.aclose()


# -- quota ----------------------------------------------------------------------------------------
def _existing_dir(path: Path) -> Path:
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path


async def _quota(plans: list[ContentPlan], targets: dict[str, Target],
                 news: dict[str, StorageAdapter]) -> list[QuotaCheck]:
    checks: dict[tuple[str, int | None], QuotaCheck] = {}
    for plan in plans:
        ct = plan.content_type
        backend = news[ct].backend
        if backend.features.local_path:
            where = _existing_dir(backend.local_path(f"{PROBE_PREFIX}quota").parent)
            key: tuple[str, int | None] = (targets[ct].name, os.stat(where).st_dev)
            if key not in checks:
                usage = await anyio.to_thread.run_sync(shutil.disk_usage, where)
                checks[key] = QuotaCheck(f"{targets[ct].name} ({where})", [], 0, usage.free, "file system")
        else:
            key = (targets[ct].name, None)
            if key not in checks:
                free = await backend.free_space()
                checks[key] = QuotaCheck(targets[ct].name, [], 0, free, "unknown" if free is None else "store")
        checks[key].content_types.append(ct)
        checks[key].needed += plan.bytes
    return list(checks.values())


# -- the probe ------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Op:
    """One probe read or write of a sampled file."""

    content_type: str
    key: str
    #: the file's size as listed (what its time is scaled to), and its size class
    size: int | None
    size_class: int
    #: the bytes this operation means to move
    want: int
    #: the file as listed (a write carries its description, as the migration's copy does)
    info: ObjectInfo | None = None
    started: float | None = None
    ended: float | None = None
    moved: int = 0
    error: str | None = None
    vanished: bool = False
    data: bytes = b""

    def scaled_seconds(self, cut: float) -> float | None:
        """The time for the whole file, or None when the operation failed or never started."""
        if self.started is None or self.error is not None or self.vanished:
            return None
        elapsed = (self.ended if self.ended is not None else cut) - self.started
        size = self.size if self.size is not None else self.moved
        done = self.moved if self.moved > 0 else self.want
        return elapsed * (size / done if done > 0 else 1.0)


def _size_class(size: int | None) -> int:
    return bisect.bisect_right(SIZE_CLASSES, size or 0)


class _Probe:
    def __init__(self, manager: StorageManager, olds: dict[str, StorageAdapter], targets: dict[str, Target],
                 filt: Filter, transfers: int, seconds: float, max_files: int, seed: int) -> None:
        self.manager, self.olds, self.targets, self.filt = manager, olds, targets, filt
        self.transfers, self.seconds, self.max_files = transfers, seconds, max_files
        self.rng = random.Random(seed)
        bounds = (0, *SIZE_CLASSES)
        self.report = ProbeReport(seed, transfers, seconds, prefix=f"{PROBE_PREFIX}{secrets.token_hex(8)}-",
                                  classes=[SizeClass(lo, hi) for lo, hi in zip(bounds, (*SIZE_CLASSES, None))])
        #: content type -> the adapter probe objects are written with; keys tried per location
        self.probes: dict[str, StorageAdapter] = {}
        self.tried: dict[str, set[str]] = {}
        #: local directories the probe's writes made (removed again when empty), deepest first
        self.made_dirs: list[Path] = []

    async def run(self) -> ProbeReport:
        r = self.report
        t0 = time.monotonic()
        sample = await self._sample()
        r.sample_seconds = time.monotonic() - t0
        r.sampled = len(sample)
        started = time.monotonic()
        try:
            with anyio.move_on_after(self.seconds):
                await self._where()
                reads = await self._reads(sample, started + self.seconds / 2)
                await self._writes(reads, started + self.seconds)
        finally:
            r.seconds = time.monotonic() - started
            with anyio.CancelScope(shield=True):
                await self._cleanup()
        log.info("migration plan probe", seed=r.seed, sampled=r.sampled, read=r.read.completed,
                 written=r.write.completed, seconds=round(r.seconds, 3), left=len(r.left))
        return r

    async def _sample(self) -> list[tuple[str, ObjectInfo]]:
        """The files to probe: a uniform random sample within each size class, the classes taken in turn."""
        classes = self.report.classes
        pools: list[list[tuple[str, ObjectInfo]]] = [[] for _ in classes]
        for ct, adapter in self.olds.items():
            async for info in adapter.list_files("" if self.filt.active else self.filt.prefix):
                if not self.filt.matches(info):
                    continue
                c = classes[h := _size_class(info.size)]
                c.files += 1
                c.bytes += info.size or 0
                pool = pools[h]  # a reservoir: each file of the class so far is in it with equal chance
                if len(pool) < self.max_files:
                    pool.append((ct, info))
                elif (j := self.rng.randrange(c.files)) < self.max_files:
                    pool[j] = (ct, info)
        self.report.population = sum(c.files for c in classes)
        # the classes share max_files equally; what a small class leaves goes to the others
        shares = [0] * len(classes)
        left = self.max_files
        order = sorted((h for h, c in enumerate(classes) if c.files), key=lambda h: classes[h].files)
        for i, h in enumerate(order):
            shares[h] = min(classes[h].files, left // (len(order) - i))
            left -= shares[h]
        for h, pool in enumerate(pools):
            self.rng.shuffle(pool)
            del pool[shares[h]:]
            classes[h].sampled = len(pool)
        # in turn, the largest sizes first: each round starts one file of every class
        return [pools[h][i] for i in range(max(shares, default=0)) for h in reversed(range(len(classes)))
                if i < len(pools[h])]

    async def _where(self) -> None:
        """The location each content type's probe objects go to (see the module docstring)."""
        for ct, target in self.targets.items():
            adapter = self.manager.adapter_for(target)
            self.probes[ct] = adapter
            backend = adapter.backend
            if backend.features.local_path:
                directory = backend.local_path(f"{self.report.prefix}0").parent
                while not directory.exists() and directory != directory.parent:
                    self.made_dirs.append(directory)
                    directory = directory.parent
            elif backend.features.folders:
                above = await self._existing_folder(target)
                if above is not None:
                    self.probes[ct] = above
                    await adapter.aclose()
            self.tried.setdefault(self._where_label(self.probes[ct]), set())
        self.made_dirs = sorted(set(self.made_dirs), key=lambda p: len(p.parts), reverse=True)
        self.report.where = sorted(self.tried)

    @staticmethod
    def _where_label(adapter: StorageAdapter) -> str:
        return adapter.backend.describe()

    async def _existing_folder(self, target: Target) -> StorageAdapter | None:
        """None when ``target``'s folder exists, else an adapter on the nearest folder above it that does."""
        store = self.manager.adapter_for(dataclasses.replace(target, path=""))
        keep = False
        try:
            parts = [p for p in target.path.split("/") if p]
            for n in range(len(parts), 0, -1):
                folder = "/".join(parts[:n])
                if await store.backend.is_folder(folder):
                    return None if n == len(parts) else self.manager.adapter_for(
                        dataclasses.replace(target, path=folder))
            keep = True
            return store  # none of them: the store's root
        finally:
            if not keep:
                with anyio.CancelScope(shield=True):
                    await store.aclose()

    async def _reads(self, sample: list[tuple[str, ObjectInfo]], until: float) -> list[_Op]:
        ops: list[_Op] = []
        held = 0
        full: set[int] = set()  # size classes the byte budget closed (the rest of them is not started)
        todo = iter(sample)

        def next_op() -> _Op | None:
            nonlocal held
            for ct, info in todo:
                h = _size_class(info.size)
                want = PROBE_PART if info.size is None else min(info.size, PROBE_PART)
                if h in full or (held and held + want > PROBE_BYTES):
                    full.add(h)
                    continue
                held += want
                ops.append(_Op(ct, info.key, info.size, h, want, info))
                return ops[-1]
            return None

        async def read(op: _Op) -> None:
            length = PROBE_PART if op.size is None or op.size > PROBE_PART else None
            pieces: list[bytes] = []
            try:
                async with self.olds[op.content_type].backend.open(op.key, length=length) as chunks:
                    async for chunk in chunks:
                        pieces.append(chunk)
                        op.moved += len(chunk)
            except NotFound:
                op.vanished = True
            except Exception as exc:
                op.error = str(exc) or type(exc).__name__
            else:
                op.ended = time.monotonic()
            finally:
                op.data = b"".join(pieces)

        async def warm(i: int) -> None:  # a byte of a sampled file (the file's info of an empty one)
            if not sample:
                return
            ct, info = sample[i % len(sample)]
            backend = self.olds[ct].backend
            if info.size:
                async with backend.open(info.key, length=1) as chunks:
                    async for _ in chunks:
                        pass
            else:
                await backend.stat(info.key)

        cut = await _phase(next_op, read, self.transfers, until, warm)
        self._summarise(self.report.read, ops, cut)
        self.report.read.vanished = sum(op.vanished for op in ops)
        return ops

    async def _writes(self, reads: list[_Op], until: float) -> None:
        ops: list[_Op] = []
        todo = iter([r for r in reads if r.error is None and not r.vanished and (r.data or r.ended is not None)])

        def next_op() -> _Op | None:
            read = next(todo, None)
            if read is None:
                return None
            op = _Op(read.content_type, f"{self.report.prefix}{len(ops) + 1:05d}", read.size, read.size_class,
                     len(read.data), read.info, data=read.data)
            read.data = b""
            ops.append(op)
            return op

        async def write(op: _Op) -> None:
            adapter = self.probes[op.content_type]
            self.tried[self._where_label(adapter)].add(op.key)
            data = op.data

            async def body() -> AsyncIterator[bytes]:
                op.moved = 0  # a replay starts again
                for i in range(0, len(data), WRITE_CHUNK):
                    piece = data[i:i + WRITE_CHUNK]
                    op.moved += len(piece)
                    yield piece

            # what describes the file goes with it (a kept mtime is one more request on Yandex.Disk); what
            # identifies its bytes does not: they may be a part of them
            info = (ObjectInfo(key=op.key, size=len(data)) if op.info is None else dataclasses.replace(
                op.info, key=op.key, size=len(data), hashes={}, etag=None, version=None))
            try:
                await adapter.backend.put(info, body)
            except Exception as exc:
                op.error = str(exc) or type(exc).__name__
            else:
                op.ended = time.monotonic()
                op.moved = len(data)
            finally:
                op.data = b""

        async def warm(i: int) -> None:  # a one-byte probe object (deleted with the others)
            adapter = list(self.probes.values())[i % len(self.probes)]
            key = f"{self.report.prefix}w{i:04d}"
            self.tried[self._where_label(adapter)].add(key)
            await adapter.backend.put(ObjectInfo(key=key, size=1), body_from_bytes(b"\0"))

        cut = await _phase(next_op, write, self.transfers, until, warm)
        self._summarise(self.report.write, ops, cut)

    def _summarise(self, side: SideReport, ops: list[_Op], cut: float) -> None:
        """Counts, and the estimate for all the company's files, from ``ops`` (in the order they started)."""
        started = [op for op in ops if op.started is not None]
        side.files = len(started)
        side.completed = sum(op.ended is not None for op in started)
        side.errors = sum(op.error is not None for op in started)
        side.first_error = next((op.error for op in started if op.error is not None), None)
        side.censored = sum(op.ended is None and op.error is None and not op.vanished for op in started)
        side.bytes = sum(op.moved for op in started)
        side.seconds = max(0.0, cut - min((op.started or cut for op in started), default=cut))
        times: dict[int, list[float]] = {}
        for op in started:
            if (t := op.scaled_seconds(cut)) is not None:
                times.setdefault(op.size_class, []).append(t)
        classes = self.report.classes
        side.unprobed = [c.label() for h, c in enumerate(classes) if c.files and h not in times]
        if not times or side.unprobed:
            return
        in_flight = max(1, min(self.transfers, self.report.population))

        def total(part: Callable[[list[float]], list[float]]) -> float:
            return sum(classes[h].files * statistics.fmean(part(ts)) for h, ts in times.items()) / in_flight

        side.estimate = total(lambda ts: ts)
        parts = min(BATCHES, max(len(ts) for ts in times.values()))
        # part b: every parts-th time of a class from the b-th; a class with fewer times lends one to each part
        side.batches = [total(lambda ts, b=b: ts[b::parts] if len(ts) >= parts else [ts[b % len(ts)]])
                        for b in range(parts)]
        side.low, side.high = min(side.estimate, *side.batches), max(side.estimate, *side.batches)

    async def _cleanup(self) -> None:
        """Delete every probe object, list what is left, delete again; remove the directories the probe made."""
        r = self.report
        started = time.monotonic()
        by_label = {self._where_label(a): a for a in self.probes.values()}
        left: dict[str, set[str]] = {label: set(keys) for label, keys in self.tried.items()}
        with anyio.move_on_after(CLEANUP_SECONDS):
            for label, adapter in by_label.items():
                for _ in range(2):
                    if left[label]:
                        r.deleted += await _each(sorted(left[label]), adapter.delete_file, self.transfers)
                    left[label] = {i.key async for i in adapter.list_files(r.prefix)}
                    if not left[label]:
                        break
            for directory in self.made_dirs:
                try:
                    directory.rmdir()
                except OSError:
                    pass  # gone, or not empty: someone else's now (a probe object in it is named below)
        r.left = sorted(f"{label}/{key}" for label, keys in left.items() for key in keys)
        r.left += [str(d) for d in self.made_dirs if d.is_dir() and not any(d.iterdir())]
        r.cleanup_seconds = time.monotonic() - started
        for adapter in self.probes.values():
            await adapter.aclose()
        if r.left:
            log.warning("probe objects left on the target", left=r.left[:10], count=len(r.left))


async def _phase(next_op: Callable[[], _Op | None], work: Callable[[_Op], Awaitable[None]], workers: int,
                 until: float, warm: Callable[[int], Awaitable[None]]) -> float:
    """Run ``work`` on operations from ``next_op``, ``workers`` at once: new ones start in the first
    :data:`START_SHARE` of the time left, those in flight at ``until`` are cut. Returns when it ended.

    Each worker first calls ``warm`` (untimed): a store's first requests pay for what later ones
    reuse (a connection, a client; a second on the first PutObject to SeaweedFS), a cost the
    migration spreads over all its files and a short probe would count many times over.
    """
    now = time.monotonic()
    stop_starting = now + START_SHARE * max(0.0, until - now)

    async def worker(i: int) -> None:
        try:
            await warm(i)
        except Exception as exc:  # the operations that follow say what is wrong, if anything is
            log.info("probe warm-up failed", error=str(exc))
        while time.monotonic() < stop_starting:
            op = next_op()
            if op is None:
                return
            op.started = time.monotonic()
            await work(op)

    with anyio.move_on_after(max(0.0, until - now)):
        async with anyio.create_task_group() as tg:
            for i in range(workers):
                tg.start_soon(worker, i)
    return time.monotonic()


async def _each(keys: list[str], fn: Callable[[str], Awaitable[None]], workers: int) -> int:
    """``fn`` on every key, ``workers`` at once; the number that succeeded (a failure is left to the listing)."""
    todo = iter(keys)
    done = 0

    async def worker() -> None:
        nonlocal done
        for key in todo:
            try:
                await fn(key)
            except Exception as exc:
                log.warning("could not delete a probe object", key=key, error=str(exc))
            else:
                done += 1

    async with anyio.create_task_group() as tg:
        for _ in range(min(workers, len(keys))):
            tg.start_soon(worker)
    return done


def _estimate(probe: ProbeReport) -> tuple[Estimate | None, str | None]:
    read, write = probe.read, probe.write
    for name, side in (("read", read), ("write", write)):
        if side.estimate is not None:
            continue
        why = f": {side.first_error}" if side.first_error else ""
        if not probe.sampled or (name == "read" and side.files and side.vanished == side.files):
            return None, "no file left to probe (the company's files vanished since they were counted)"
        if side.files == 0:
            return None, f"no probe {name} started within {probe.budget:g} s: give more time (--probe-seconds)"
        if side.errors + side.vanished >= side.files:
            return None, f"every probe {name} failed{why}"
        return None, (f"no probe {name} of a file of {', '.join(side.unprobed)} finished within {probe.budget:g} s "
                      f"(give more time: --probe-seconds){why}")
    assert read.estimate is not None and write.estimate is not None
    assert read.low is not None and read.high is not None and write.low is not None and write.high is not None
    return Estimate(max(read.estimate, write.estimate), max(read.low, write.low), max(read.high, write.high),
                    read.estimate, write.estimate, read.estimate + write.estimate), None
