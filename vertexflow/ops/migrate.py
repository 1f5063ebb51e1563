"""Company migration: move one company's files to another backend, then switch it there.

Steps, each recorded in the platform database's ``vertexflow_migrations``:

1. plan: list the company's files on the old backend (every content type);
   ``dry_run`` stops here and records nothing;
2. quota: the bytes to copy must fit the target's free space (Yandex.Disk);
3. provision: the company's category/subfolder hierarchy on the target
   (folders seen on the old backend plus the default subfolders);
4. copy: a sync job per content type, old -> new (resumable, journalled);
   with ``live`` the company's adapter, in every process on the platform
   database, is a dual-write adapter while it runs; incremental syncs of the
   keys written meanwhile follow, then a short write fence for the last
   ones (:class:`_LiveRun`, :mod:`vertexflow.tenancy.live_state`);
5. verify: old and new compared by checksum (folder markers left out); a
   difference that remains fails the migration, which then rolls back by
   itself: the company stays on the old backend and the record says why;
6. switch: the company's storage columns and the record's state change in
   one transaction, and its cached adapters are dropped.

The old backend's files are never deleted: :func:`rollback_company` switches
back after syncing to the old backend what changed on the new one since the
switch (new files, overwrites and deletes).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from ..backends.base import Backend
from ..errors import ConfigError, MigrationFailed, NotFound, SourceChanged
from ..filters import NO_FILTER, Filter
from ..logs import get_logger
from ..middleware.base import BackendWrapper
from ..state.journal import Journal
from ..tenancy.adapters import FOLDER_MARKER, StorageAdapter
from ..tenancy.dual_write import reconcile_key
from ..tenancy.live_state import LiveState
from ..tenancy.manager import BUILTIN_TYPES, DEFAULT_SUBFOLDERS, StorageManager, Target
from ..tenancy.registry import Company, Placement
from ..tenancy.storage_config import connection_storage_type
from ..pipeline.stats import JobStats
from .assembly import run_between
from .spec import TransferSettings
from .verify import Difference, VerifyJob, VerifyReport

log = get_logger(__name__)

Event = Callable[[str, dict[str, Any]], None]


@dataclass(slots=True)
class ContentPlan:
    content_type: str
    source: str
    target: str
    objects: int = 0
    bytes: int = 0
    folders: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        return {"content_type": self.content_type, "from": self.source, "to": self.target,
                "objects": self.objects, "bytes": self.bytes}


@dataclass(slots=True)
class MigrationResult:
    migration_id: int | None
    company: str
    source: dict[str, Any]
    target: dict[str, Any]
    state: str
    plan: list[ContentPlan]
    copied: int = 0
    reconciled: dict[str, int] = field(default_factory=dict)
    verified: int = 0
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"migration_id": self.migration_id, "company": self.company, "from": self.source,
                "to": self.target, "state": self.state, "plan": [p.as_dict() for p in self.plan],
                "copied": self.copied, "reconciled": self.reconciled, "verified": self.verified,
                "message": self.message}


def resolve_target(manager: StorageManager, company: Company, to: str) -> tuple[Placement, str]:
    """``to`` (a built-in storage type, or a connection of the database or the storage config) as a placement."""
    if to in BUILTIN_TYPES:
        return Placement(to, None, company.yandex_disk_folder_id), to
    registry = manager.require_registry()
    row = registry.find_connection(to)
    if row is None and to in manager.config.connections:
        # declared in the storage config: register it (its settings stay in the file)
        conn = manager.config.connections[to]
        row = registry.add_connection(to, connection_storage_type(conn), None)
    if row is None:
        known = sorted({c.name for c in registry.connections()} | set(manager.config.connections))
        raise ConfigError(f"unknown storage connection {to!r}: use local, minio, yandex_disk or one of "
                          f"{', '.join(known) or '(no connections defined)'}")
    return Placement(row.storage_type, row.id, company.yandex_disk_folder_id), row.name


def _describe_placement(p: Placement, name: str) -> dict[str, Any]:
    return {**p.as_dict(), "name": name}


def _placement_name(manager: StorageManager, p: Placement) -> str:
    if p.storage_connection_id is None:
        return p.storage_type
    return manager.require_registry().connection(p.storage_connection_id).name


@asynccontextmanager
async def _journal_or_temp(journal: Journal | None) -> AsyncIterator[Journal]:
    if journal is not None:
        yield journal
        return
    async with Journal.temporary() as j:
        yield j


async def _list_plan(backend: Backend, filt: Filter, plan: ContentPlan) -> None:
    try:
        async for info in backend.list(filt.prefix):
            if not filt.matches(info):
                continue
            plan.objects += 1
            plan.bytes += info.size or 0
            parts = info.key.split("/")
            for i in range(1, min(len(parts), 3)):  # <category> and <category>/<subfolder>
                plan.folders.add("/".join(parts[:i]))
    except NotFound:
        pass  # nothing stored yet for this content type


def _verify_filter(filt: Filter) -> Filter:
    return dataclasses.replace(filt, exclude=(*filt.exclude, FOLDER_MARKER))


class _Step:
    """The record's state, kept in step with the work."""

    def __init__(self, manager: StorageManager, migration_id: int, on_event: Event | None) -> None:
        self.registry = manager.require_registry()
        self.migration_id = migration_id
        self.on_event = on_event

    def __call__(self, state: str, **data: Any) -> None:
        self.registry.update_migration(self.migration_id, state=state)
        self.announce(state, **data)

    def announce(self, state: str, **data: Any) -> None:
        """Log and report ``state`` (already recorded)."""
        log.info("migration step", migration=self.migration_id, state=state, **data)
        if self.on_event is not None:
            self.on_event(state, data)


async def migrate_company(manager: StorageManager, company_ref: int | str, to: str, *, live: bool = False,
                          filt: Filter = NO_FILTER, dry_run: bool = False, journal: Journal | None = None,
                          categories: tuple[str, ...] = (), subfolders: tuple[str, ...] = DEFAULT_SUBFOLDERS,
                          wrap_target: Callable[[Backend], Backend] | None = None,
                          on_event: Event | None = None, settings: TransferSettings | None = None,
                          stats: JobStats | None = None) -> MigrationResult:
    """Migrate a company to ``to``; see the module docstring for the steps.

    ``settings`` (bandwidth limit, transfers, retries, verification) apply to
    the copy of every content type, as to any other job; ``stats`` fills as
    the bytes move (the daemon shows it live).

    Raises :class:`MigrationFailed` (after rolling back) when the copy or the
    verification fails, :class:`InsufficientStorage` when it cannot fit, and
    :class:`ConfigError` for an unknown company or connection.
    ``wrap_target`` wraps each target backend (middleware, fault injection).
    """
    registry = manager.require_registry()
    settings = settings or TransferSettings()
    progress = stats if stats is not None else JobStats()
    company = manager.company(company_ref)
    source = company.placement
    target, target_name = resolve_target(manager, company, to)
    if target == source:
        raise ConfigError(f"company {company.slug!r} is already on {target_name}")
    content_types = manager.config.content_type_names()
    pairs: list[tuple[str, Target, Target]] = []
    for ct in content_types:
        old_t, new_t = manager.target(company, ct, source), manager.target(company, ct, target)
        pairs.append((ct, old_t, new_t))
    src_desc = _describe_placement(source, _placement_name(manager, source))
    dst_desc = _describe_placement(target, target_name)
    plans = [ContentPlan(ct, o.label(), n.label()) for ct, o, n in pairs]
    result = MigrationResult(None, company.slug, src_desc, dst_desc, "planned", plans)

    olds = {ct: manager.adapter_for(o) for ct, o, _ in pairs}
    news = {ct: manager.adapter_for(n) for ct, _, n in pairs}
    if wrap_target is not None:
        news = {ct: StorageAdapter(wrap_target(a.backend), public_base_url=a.public_base_url, label=a.label)
                for ct, a in news.items()}
    try:
        for plan in plans:
            await _list_plan(olds[plan.content_type].backend, filt, plan)
        if dry_run:
            result.state = "dry_run"
            return result

        record = registry.start_migration(company.id, src_desc, dst_desc, live=live)
        result.migration_id = record.id
        step = _Step(manager, record.id, on_event)
        live_run = _LiveRun(manager, company.id, record.id, target, olds, news, step, result) if live else None
        try:
            await _quota(plans, news)
            if live_run is not None:
                await live_run.start(plan=[p.as_dict() for p in plans])
            else:
                step("copying", plan=[p.as_dict() for p in plans])
            await _provision(plans, news, categories, subfolders)
            async with _journal_or_temp(journal) as j:
                for (ct, old_t, new_t), plan in zip(pairs, plans, strict=True):
                    if plan.objects == 0:
                        continue  # nothing stored yet (a live write meanwhile is reconciled below)
                    done, failed = progress.done_objects, progress.failed_objects
                    await run_between(olds[ct].backend, news[ct].backend, j, src_spec=old_t.label(),
                                      dst_spec=new_t.label(), settings=settings, stats=progress, filt=filt)
                    result.copied += progress.done_objects - done
                    failed = progress.failed_objects - failed
                    if failed and live_run is None:
                        raise MigrationFailed(f"{failed} files of {ct} could not be copied "
                                              f"to {new_t.label()}", migration_id=record.id)
            if live_run is not None:
                await live_run.reconcile_passes()
            step("verifying")
            for ct, _, new_t in pairs:
                is_dirty = live_run.is_dirty(ct) if live_run is not None else None
                result.verified += await _verify(olds[ct], news[ct], filt, is_dirty, new_t.label())
            if live_run is not None:
                await live_run.reconcile_passes()
                await live_run.close()  # the write fence: it stays up until the switch below
        except MigrationFailed as exc:
            result.state, result.message = "rolled_back", str(exc)
            await _abandon(manager, company, record.id, result, live)
            raise
        except BaseException as exc:
            result.state, result.message = "failed", f"{type(exc).__name__}: {exc}"
            await _abandon(manager, company, record.id, result, live)
            raise
        # the switch: one transaction (which lifts a write fence), then no request goes to the old placement
        result.state = "switched"
        result.message = f"company {company.slug} now on {target_name}"
        registry.set_placement(company.id, target, migration_id=record.id, state="switched",
                               message=result.message)
        registry.update_migration(record.id, state="switched", report=result.as_dict(), final=True)
        manager.clear_company_cache(company.id)
        if on_event is not None:
            on_event("switched", {})
        return result
    finally:
        for a in (*olds.values(), *news.values()):
            await a.aclose()


class _LiveRun:
    """The live side of a migration, across processes (see :mod:`vertexflow.tenancy.live_state`).

    :meth:`start` enters ``copying`` and waits until no write that chose its
    adapter before that is still in flight; from then on every write of the
    company, in any process, is a dual write that marks its key dirty.
    :meth:`reconcile_passes` reconciles dirty keys while writes go on;
    :meth:`close` raises the write fence (``closing``), waits for the writes in
    flight, reconciles what is left and compares those keys. The switch (or
    :func:`_abandon`) lifts the fence. The fence is held at most about
    :attr:`fence_budget` seconds plus one file's copy: past it the migration
    fails and rolls back, before any writer's ``fence_wait`` runs out.
    """

    #: seconds the migration may hold the write fence (below StorageManager.fence_wait)
    fence_budget = 20.0
    #: seconds to wait for the writes in flight when the dual writes begin
    start_budget = 120.0
    #: the fence goes up once at most this many keys are dirty (or after max_passes passes)
    fence_max_dirty = 50
    max_passes = 10

    def __init__(self, manager: StorageManager, company_id: int, migration_id: int, target: Placement,
                 olds: dict[str, StorageAdapter], news: dict[str, StorageAdapter], step: _Step,
                 result: MigrationResult) -> None:
        self.state = LiveState(manager.require_registry())
        self.company_id, self.migration_id, self.target = company_id, migration_id, target
        self.olds, self.news, self.step, self.result = olds, news, step, result

    def is_dirty(self, ct: str) -> Callable[[str], bool]:
        return lambda key: self.state.is_dirty(self.migration_id, ct, key)

    async def _drain(self, generation: int, budget: float, what: str) -> None:
        deadline = time.monotonic() + budget
        while (n := self.state.writes_before(self.company_id, generation)) > 0:
            if time.monotonic() >= deadline:
                raise MigrationFailed(f"{n} writes still in flight after {budget:g} s {what}",
                                      migration_id=self.migration_id)
            await anyio.sleep(0.01)

    async def start(self, **data: Any) -> None:
        generation = self.state.set_state(self.company_id, self.migration_id, "copying", self.target)
        self.step.announce("copying", live=True, **data)
        await self._drain(generation, self.start_budget, "when the dual writes began")

    async def _pass(self, deadline: float | None = None) -> None:
        counts = self.result.reconciled
        for ct in self.olds:
            for key, generation in self.state.dirty(self.migration_id, ct):
                if deadline is not None and time.monotonic() >= deadline:
                    raise MigrationFailed(f"the write fence was held for more than {self.fence_budget:g} s; "
                                          "rolled back (too many files changed at the end: retry)",
                                          migration_id=self.migration_id)
                try:
                    outcome = await reconcile_key(self.olds[ct], self.news[ct], key)
                except (SourceChanged, NotFound):
                    if deadline is not None:
                        raise  # nothing writes under the fence: a real failure
                    continue  # a write landed meanwhile: the key stays dirty
                if self.state.clean(self.migration_id, ct, key, generation):
                    counts[outcome] = counts.get(outcome, 0) + 1

    async def reconcile_passes(self) -> None:
        """Reconcile dirty keys while writes go on, until few are left."""
        for _ in range(self.max_passes):
            if self.state.dirty_count(self.migration_id) <= self.fence_max_dirty:
                break
            await self._pass()

    async def close(self) -> None:
        """Raise the write fence, drain, reconcile and check the last dirty keys."""
        started = time.monotonic()
        generation = self.state.set_state(self.company_id, self.migration_id, "closing", self.target)
        self.step.announce("closing")
        await self._drain(generation, self.fence_budget, "under the write fence")
        deadline = started + self.fence_budget
        keys = {ct: [k for k, _ in self.state.dirty(self.migration_id, ct)] for ct in self.olds}
        await self._pass(deadline)
        for ct, ks in keys.items():
            for key in ks:
                if not await _same(self.olds[ct], self.news[ct], key):
                    raise MigrationFailed(f"verification of {key} failed after its final sync",
                                          migration_id=self.migration_id)
        if self.state.dirty_count(self.migration_id):
            raise MigrationFailed("keys were written under the write fence", migration_id=self.migration_id)
        log.info("write fence ready to lift", migration=self.migration_id, keys=sum(map(len, keys.values())),
                 held_s=round(time.monotonic() - started, 3))


async def _quota(plans: list[ContentPlan], news: dict[str, StorageAdapter]) -> None:
    free_by_store: dict[str, int | None] = {}
    needed: dict[str, int] = {}
    for plan in plans:
        backend = news[plan.content_type].backend
        store = backend.describe().split(":")[0]
        if store not in free_by_store:
            free_by_store[store] = None if backend.features.local_path else await backend.free_space()
        needed[store] = needed.get(store, 0) + plan.bytes
    for store, free in free_by_store.items():
        if free is not None and needed[store] > free:
            raise MigrationFailed(f"the company needs {needed[store]:,} bytes on {store} but only {free:,} "
                                  "are free; nothing was copied")


async def _provision(plans: list[ContentPlan], news: dict[str, StorageAdapter], categories: tuple[str, ...],
                     subfolders: tuple[str, ...]) -> None:
    for plan in plans:
        folders = set(plan.folders)
        cats = {f for f in folders if "/" not in f} | set(categories)
        folders |= {f"{c}/{s}" for c in cats for s in subfolders}
        adapter = news[plan.content_type]
        for folder in sorted(folders):
            await adapter.ensure_folder(folder)


async def _verify(old: StorageAdapter, new: StorageAdapter, filt: Filter,
                  is_dirty: Callable[[str], bool] | None, where: str) -> int:
    """Compare old and new by checksum; ``is_dirty`` (live): keys still to be reconciled, left out."""
    src, dst = old.backend, new.backend
    if is_dirty is not None:  # writes go on: a file may vanish between the listing and its read
        src, dst = _Vanishing(src), _Vanishing(dst)
    try:
        report = await VerifyJob(src, dst, mode="checksum", filt=_verify_filter(filt)).run()
    except NotFound:  # nothing was ever stored here on the old backend: new must hold no file either
        report = VerifyReport()
        async for info in new.list_files():
            if filt.matches(info) and info.key.rsplit("/", 1)[-1] != FOLDER_MARKER:
                report.add(Difference(info.key, "extra", "absent at the old backend"))
    # a live write in flight shows as a difference: its key is dirty and gets its final sync under the fence
    problems = [p for p in report.problems
                if not (is_dirty is not None and is_dirty(p.key)) and not await _same(old, new, p.key)]
    if is_dirty is not None:
        problems = [p for p in problems if not is_dirty(p.key)]  # dirtied while being compared
    if problems or report.missing + report.extra + report.different > len(report.problems):
        first = "; ".join(f"{p.kind} {p.key} ({p.detail})" for p in problems[:5])
        raise MigrationFailed(f"verification of {where} failed: {len(problems)} differences: {first}")
    return report.matched


class _Vanishing(BackendWrapper):
    """Reads a file deleted since it was listed as a sentinel: a difference, not an error."""

    @asynccontextmanager
    async def _open(self, key: str, **kw: Any) -> AsyncIterator[AsyncIterator[bytes]]:
        try:
            cm = self.inner.open(key, **kw)
            chunks = await cm.__aenter__()
        except NotFound:
            yield _one(b"\0vanished while verified\0")
            return
        try:
            yield chunks
        except BaseException as exc:
            if not await cm.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            await cm.__aexit__(None, None, None)

    def open(self, key: str, *, offset: int = 0, length: int | None = None,
             if_version: str | None = None) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        return self._open(key, offset=offset, length=length, if_version=if_version)


async def _one(chunk: bytes) -> AsyncIterator[bytes]:
    yield chunk


async def _same(old: StorageAdapter, new: StorageAdapter, key: str) -> bool:
    try:
        a = await old.get_file(key)
    except NotFound:
        a = None
    try:
        b = await new.get_file(key)
    except NotFound:
        b = None
    return a == b


async def _abandon(manager: StorageManager, company: Company, migration_id: int, result: MigrationResult,
                   live: bool) -> None:
    """Leave the company on its old backend (the files copied so far stay on the new one); lift a fence."""
    if live:
        LiveState(manager.require_registry()).clear(company.id, migration_id)
    manager.clear_company_cache(company.id)
    manager.require_registry().update_migration(migration_id, state=result.state, message=result.message,
                                         report=result.as_dict(), final=True)


async def rollback_company(manager: StorageManager, company_ref: int | str, *, sync_back: bool = True,
                           journal: Journal | None = None, settings: TransferSettings | None = None,
                           stats: JobStats | None = None) -> MigrationResult:
    """Return a company to where its last switched migration took it from.

    With ``sync_back`` what changed on the new backend since the switch is
    synced to the old one first (a sync with deletes), so nothing written in
    between is lost. The company must still be where that migration put it.
    """
    registry = manager.require_registry()
    company = manager.company(company_ref)
    record = registry.last_switch(company.id)
    if record is None:
        raise ConfigError(f"company {company.slug!r} has no switched migration to roll back")
    target = Placement(record.target["storage_type"], record.target["storage_connection_id"],
                       record.target.get("yandex_disk_folder_id"))
    source = Placement(record.source["storage_type"], record.source["storage_connection_id"],
                       record.source.get("yandex_disk_folder_id"))
    if company.placement != target:
        raise ConfigError(f"company {company.slug!r} is no longer where migration {record.id} put it; "
                          "refusing to roll back")
    result = MigrationResult(record.id, company.slug, record.target, record.source, "rolled_back", [])
    progress = stats if stats is not None else JobStats()
    if sync_back:
        async with _journal_or_temp(journal) as j:
            for ct in manager.config.content_type_names():
                now_t, back_t = manager.target(company, ct, target), manager.target(company, ct, source)
                now, back = manager.adapter_for(now_t), manager.adapter_for(back_t)
                try:
                    # deletes only where the new side has files: an empty listing must not wipe the old side
                    has_files = False
                    async for _ in now.list_files():
                        has_files = True
                        break
                    done, failed = progress.done_objects, progress.failed_objects
                    await run_between(now.backend, back.backend, j, src_spec=now_t.label(), dst_spec=back_t.label(),
                                      settings=settings or TransferSettings(), stats=progress, mode="sync",
                                      delete=has_files, compare="checksum")
                    failed = progress.failed_objects - failed
                    if failed:
                        raise MigrationFailed(f"rollback: {failed} files of {ct} could not be "
                                              f"synced back to {back_t.label()}; the company was not moved",
                                              migration_id=record.id)
                    result.copied += progress.done_objects - done
                finally:
                    await now.aclose()
                    await back.aclose()
    result.message = f"company {company.slug} back on {record.source.get('name')}"
    registry.set_placement(company.id, source, migration_id=record.id, state="rolled_back", message=result.message)
    manager.clear_company_cache(company.id)
    return result
