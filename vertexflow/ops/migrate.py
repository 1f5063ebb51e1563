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

Filters (``--include``, ``--exclude``, ``--prefix``, sizes, ages...) make a
run a **staged copy**: it copies and verifies the files the filter selects,
then switches only if every file of the company, the ones left out
included, is verified on the target (listings first, then checksums).
Otherwise it ends ``staged``: the company stays where it was (its platform
reads and writes keep going to the old backend, where every file still is),
and the record's message says how many files were copied and the command
that completes the move (the same without the filter; what is already on the
target is skipped). A filter never makes files vanish for the platform.

The record holds a lease: the migrating process's pid and host, and
``heartbeat_at``, renewed every few seconds by a thread (:class:`_Lease`).
A migration in progress whose lease expired, or whose pid is dead on this
host, is **stale** (``migrate status`` / ``list`` show it so); the next run
of the company takes it over: its live state (dual writes, write fence,
dirty keys) is rolled back in the transaction that starts the new record,
the writes still in flight under it are waited for, and the copy resumes
from the journal. Ctrl-C (``stop``) ends a run ``interrupted``: the record
is ``failed`` with a message saying so, the company stays where it was.

The old backend's files are never deleted: :func:`rollback_company` switches
back after syncing to the old backend what changed on the new one since the
switch (new files, overwrites and deletes). That sync runs as a live
migration in reverse (dual writes, dirty keys, the write fence), so writes
the platform makes during a rollback are not lost.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio

from ..backends.base import Backend
from ..errors import ConfigError, InsufficientStorage, MigrationFailed, NotFound, SourceChanged, first_error
from ..filters import NO_FILTER, Filter
from ..logs import get_logger
from ..middleware.base import BackendWrapper
from ..model import ObjectInfo
from ..pipeline.runner import StopSignal
from ..state.journal import Journal
from ..tenancy.adapters import FOLDER_MARKER, StorageAdapter
from ..tenancy.dual_write import reconcile_key
from ..tenancy.live_state import LiveState
from ..tenancy.manager import BUILTIN_TYPES, DEFAULT_SUBFOLDERS, StorageManager, Target
from ..tenancy.registry import LEASE_HEARTBEAT, Company, Placement, Registry, this_host
from ..tenancy.storage_config import connection_storage_type
from ..pipeline.stats import JobStats
from ..retry import RetryPolicy, retry_call
from .assembly import run_between
from .plan import empty_if_missing
from .refs import refuse_dangling
from .smoke import smoke_company
from .spec import TransferSettings
from .verify import Difference, VerifyJob, VerifyReport, same_description

log = get_logger(__name__)

Event = Callable[[str, dict[str, Any]], None]

#: extras named in a plan and in the report (the count is always whole)
SHOWN_EXTRAS = 10
#: differences kept per content type in the report (a report must stay small enough to print)
REPORT_DIFFERENCES = 100


@dataclass(slots=True)
class ContentPlan:
    content_type: str
    source: str
    target: str
    #: what the filter selects (everything without one)
    objects: int = 0
    bytes: int = 0
    folders: set[str] = field(default_factory=set)
    #: every file of the company of this content type, filter or not
    total_objects: int = 0
    total_bytes: int = 0
    #: the keys of the company's files on the old backend (while planning; emptied once the extras are known)
    keys: set[str] = field(default_factory=set)
    #: files on the target that the company no longer has (left there by an earlier placement)
    extras: list[str] = field(default_factory=list)
    extra_bytes: int = 0
    # what the run did, per content type (the migration report)
    copied: int = 0
    skipped: int = 0
    verified: int = 0
    deleted: int = 0
    reconciled: int = 0
    #: differences the verification found (each sent again once; kept up to REPORT_DIFFERENCES)
    differences: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"content_type": self.content_type, "from": self.source, "to": self.target,
                "objects": self.objects, "bytes": self.bytes,
                "left_out": self.total_objects - self.objects, "extras": len(self.extras),
                "extra_bytes": self.extra_bytes, "first_extras": self.extras[:SHOWN_EXTRAS],
                "copied": self.copied, "skipped": self.skipped, "verified": self.verified,
                "deleted": self.deleted, "reconciled": self.reconciled, "differences": self.differences}


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
    #: files deleted on the target because the company no longer has them (a backend it used before)
    deleted: int = 0
    message: str = ""
    #: files of the company the filter left out (a filtered run is a staged copy)
    left_out: int = 0
    #: stale migrations of the company this run took over
    taken_over: list[int] = field(default_factory=list)
    #: the smoke check run on the company's route after the switch (:mod:`vertexflow.ops.smoke`), or None
    smoke: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"migration_id": self.migration_id, "company": self.company, "from": self.source,
                "to": self.target, "state": self.state, "plan": [p.as_dict() for p in self.plan],
                "copied": self.copied, "reconciled": self.reconciled, "verified": self.verified,
                "deleted": self.deleted, "left_out": self.left_out, "taken_over": self.taken_over,
                "smoke": self.smoke, "message": self.message}


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
        raise ConfigError(f"unknown storage connection {to!r}: not in the platform database {registry.path} nor "
                          f"in the storage config {manager.config.source or '(none given)'}; use local, minio, "
                          f"yandex_disk or one of {', '.join(known) or '(no connections defined)'}")
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
    """Count what ``filt`` selects and (with an active filter, from the whole listing) every file."""
    try:
        async for info in backend.list("" if filt.active else filt.prefix):
            plan.total_objects += 1
            plan.total_bytes += info.size or 0
            plan.keys.add(info.key)
            if not filt.matches(info):
                continue
            plan.objects += 1
            plan.bytes += info.size or 0
            parts = info.key.split("/")
            for i in range(1, min(len(parts), 3)):  # <category> and <category>/<subfolder>
                plan.folders.add("/".join(parts[:i]))
    except NotFound:
        pass  # nothing stored yet for this content type
    if backend.features.folders:  # empty folders are part of the company's layout: provisioned like the others
        for category in await backend.list_folders(""):
            plan.folders.add(category)
            plan.folders.update(f"{category}/{sub}" for sub in await backend.list_folders(category))


async def _list_extras(backend: Backend, plan: ContentPlan) -> None:
    """The files on the target that the company has not (folder markers aside): an earlier placement's leftovers."""
    async for info in empty_if_missing(backend.list("")):
        if info.key not in plan.keys and info.key.rsplit("/", 1)[-1] != FOLDER_MARKER:
            plan.extras.append(info.key)
            plan.extra_bytes += info.size or 0
    plan.keys = set()


def _check_max_delete(plans: list[ContentPlan], company: Company, target_name: str, max_delete: int | None) -> None:
    extras = sum(len(p.extras) for p in plans)
    if max_delete is None or extras <= max_delete:
        return
    first = next(f"{p.content_type} {p.extras[0]}" for p in plans if p.extras)
    raise ConfigError(f"migrating company {company.slug} to {target_name} would delete {extras} files there that "
                      f"it no longer has (left by an earlier placement; first: {first}), more than --max-delete "
                      f"{max_delete}; nothing was changed. List them with --dry-run; allow it with --max-delete "
                      f"{extras}")


T = TypeVar("T")
#: one file's reconcile, delete or comparison is asked again on a passing failure (a 5xx the client's own
#: tries did not ride out, a reset, a corrupted read), as the copy's engine asks again for a whole object:
#: one such failure under load must not fail the whole migration
FILE_RETRY = RetryPolicy(attempts=5, base_delay=0.2, max_delay=5.0, deadline=60.0)


async def _again(fn: Callable[[], Awaitable[T]], until: float | None = None) -> T:
    """``fn()``, asked again while it fails with a retryable error, not past ``until`` (a ``time.monotonic()``
    value: the write fence's budget); SourceChanged is raised at once (a write landed meanwhile: what that
    means is the caller's)."""
    policy = FILE_RETRY if until is None else dataclasses.replace(
        FILE_RETRY, deadline=min(FILE_RETRY.deadline, until - time.monotonic()))
    return await retry_call(fn, policy, on_retry=_log_retry, at_once=(SourceChanged,))


def _log_retry(exc: BaseException, attempt: int, delay: float) -> None:
    log.info("retrying", error=str(exc), attempt=attempt, delay_s=round(delay, 3))


#: dirty keys reconciled or compared at once: each is a few requests in sequence (a stat of each side, a
#: copy or a delete), so one at a time a pass over a few hundred keys through a slow or flaky link
#: outlasts the writers it chases, and the write fence's budget with it
RECONCILE_CONCURRENCY = 16


async def each_at_once(items: Iterable[T], fn: Callable[[T], Awaitable[None]],
                concurrency: int = RECONCILE_CONCURRENCY) -> None:
    """``fn(item)`` for every item, ``concurrency`` at once; the first error stops the others and is raised."""
    pending = iter(items)

    async def worker() -> None:
        for item in pending:  # shared: each item goes to one worker
            await fn(item)

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
    except BaseExceptionGroup as group:
        raise first_error(group) from None


async def _delete_extras(plans: list[ContentPlan], olds: dict[str, StorageAdapter],
                         news: dict[str, StorageAdapter], live_run: _LiveRun | None) -> int:
    """Delete on the target the files the company no longer has; a key it has again (a live write) is kept.

    Each key is checked on the old backend just before its delete. A live write
    that lands between that check and the delete marked its key dirty before
    its first request, so the reconcile that follows the copy puts it back.
    """
    deleted = 0
    for plan in plans:
        ct = plan.content_type
        is_dirty = live_run.is_dirty(ct) if live_run is not None else None
        for key in plan.extras:
            if is_dirty is not None and is_dirty(key):
                continue
            try:
                await _again(lambda: olds[ct].stat(key))
                continue  # the company has it again: the copy brings it
            except NotFound:
                pass
            try:
                await _again(lambda: news[ct].delete_file(key))
            except NotFound:
                pass
            plan.deleted += 1
            deleted += 1
    return deleted


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
                          stats: JobStats | None = None, stop: StopSignal | None = None,
                          max_delete: int | None = None, smoke: bool = True) -> MigrationResult:
    """Migrate a company to ``to``; see the module docstring for the steps.

    Files on the target that the company no longer has (a backend it used
    before, holding the copy it left there) are deleted before the copy, so
    that the target ends as the company is; ``max_delete`` refuses the run,
    before anything is recorded or changed, when there would be more of them
    (a :class:`ConfigError` naming the count and the first one).

    ``smoke``: after the switch, the company's new route is tried as the
    platform uses it (:func:`vertexflow.ops.smoke.smoke_company`: a test file
    written, read back, served by its public URL, deleted); the result holds
    it, and a failed step is named in the message (the switch stands: the
    files are verified; it is the route that does not serve).

    ``settings`` (bandwidth limit, transfers, retries, verification) apply to
    the copy of every content type, as to any other job; ``stats`` fills as
    the bytes move (the daemon shows it live).

    An active ``filt`` makes the run a staged copy: it switches only if every
    file of the company (not only those the filter selects) is then verified
    on the target; otherwise the result's state is ``staged``, the company
    stays where it was and the message names the command that completes the move.

    ``stop`` (Ctrl-C): a graceful stop lets the copies in flight finish, a
    hard one cancels them; either way the migration ends ``failed`` with a
    message saying so, the company stays where it was, ``stats.interrupted``
    is set and the result (state ``interrupted``) is returned.

    Raises :class:`MigrationFailed` (after rolling back) when the copy or the
    verification fails, :class:`InsufficientStorage` when it cannot fit, and
    :class:`ConfigError` for an unknown company or connection, or a migration
    of the company still in progress (a stale one, whose process is gone, is
    taken over instead). ``wrap_target`` wraps each target backend
    (middleware, fault injection).
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
        with anyio.CancelScope() as planning:
            if stop is not None:
                stop.attach(planning)  # a second Ctrl-C while listing
            for plan in plans:
                await _list_plan(olds[plan.content_type].backend, filt, plan)
                await _list_extras(news[plan.content_type].backend, plan)
        result.left_out = sum(p.total_objects - p.objects for p in plans)
        if dry_run and not planning.cancelled_caught:
            result.state = "dry_run"
            return result
        if planning.cancelled_caught or (stop is not None and stop.stopping):  # nothing recorded or changed
            _interrupted(result, company, "planning")
            progress.interrupted = True
            return result
        _check_max_delete(plans, company, target_name, max_delete)

        record = registry.start_migration(company.id, src_desc, dst_desc, live=live)
        result.migration_id, result.taken_over = record.id, list(registry.taken_over)
        step = _Step(manager, record.id, on_event)
        if result.taken_over:
            step.announce("taken_over", stale=result.taken_over)
        # reads stay on the old backend until the switch: the target may hold files the company changed or
        # deleted since (a backend used before, a staged or killed run's copy) that are not dirty keys
        live_run = _LiveRun(manager, company.id, record.id, target, olds, news, step, result,
                            reads_current=True) if live else None
        lease = _Lease(registry, record.id)
        lease.start()
        phase = ["planning"]
        missing: str | None = None  # a staged copy: the first file of the company not on the target

        def check_going() -> None:
            if stop is not None and stop.stopping:
                raise MigrationFailed("interrupted", migration_id=record.id)
            if lease.lost:
                raise MigrationFailed(f"migration {record.id} was taken over by another run (its lease was "
                                      "not renewed in time)", migration_id=record.id)

        try:
            with anyio.CancelScope() as scope:
                if stop is not None:
                    stop.attach(scope)  # a hard stop cancels whatever runs; the company stays where it was
                try:
                    if result.taken_over and live_run is None:
                        await _drain_stale_writes(manager, company.id, record.id)
                    await _quota(plans, news)
                    phase[0] = "copying"
                    if live_run is not None:
                        await live_run.start(plan=[p.as_dict() for p in plans])
                    else:
                        step("copying", plan=[p.as_dict() for p in plans])
                    await _provision(plans, news, categories, subfolders)
                    if any(p.extras for p in plans):
                        result.deleted = await _delete_extras(plans, olds, news, live_run)
                        step.announce("deleted_extras", deleted=result.deleted)
                    async with _journal_or_temp(journal) as j:
                        for (ct, old_t, new_t), plan in zip(pairs, plans, strict=True):
                            check_going()
                            if plan.objects == 0:
                                continue  # nothing stored yet (a live write meanwhile is reconciled below)
                            done, failed = progress.done_objects, progress.failed_objects
                            skipped = progress.skipped_objects
                            try:
                                await run_between(olds[ct].backend, news[ct].backend, j, src_spec=old_t.label(),
                                                  dst_spec=new_t.label(), settings=settings, stats=progress,
                                                  filt=filt, stop=stop, source_limit=old_t.bwlimit(),
                                                  dest_limit=new_t.bwlimit())
                            finally:  # the report counts what was copied also when the copy failed
                                plan.copied = progress.done_objects - done
                                plan.skipped = progress.skipped_objects - skipped
                                result.copied += plan.copied
                            failed = progress.failed_objects - failed
                            check_going()
                            if failed and live_run is None:
                                raise MigrationFailed(f"{failed} files of {ct} could not be copied "
                                                      f"to {new_t.label()}", migration_id=record.id)
                    if live_run is not None:
                        await live_run.reconcile_passes()
                    check_going()
                    phase[0] = "verifying"
                    step("verifying")
                    for (ct, _, new_t), plan in zip(pairs, plans, strict=True):
                        is_dirty = live_run.is_dirty(ct) if live_run is not None else None
                        plan.verified = await _verify(olds[ct], news[ct], filt, is_dirty, new_t.label(),
                                                      plan.differences)
                        result.verified += plan.verified
                    check_going()
                    if filt.active:  # a staged copy: it switches only if the whole company is on the target
                        missing = await _incomplete(olds, news, live_run)
                    if missing is None:  # the platform's rows must find their files on the new route
                        await refuse_dangling(manager, company, news, migration_id=record.id)
                    if missing is None and live_run is not None:
                        await live_run.reconcile_passes()
                        check_going()
                        phase[0] = "closing"
                        await live_run.close()  # the write fence: it stays up until the switch below
                except MigrationFailed as exc:
                    if (stop is not None and stop.stopping) or str(exc) == "interrupted":
                        _interrupted(result, company, phase[0])
                        await _abandon(manager, company, record.id, result, live)
                        progress.interrupted = True
                        return result
                    result.state, result.message = "rolled_back", str(exc)
                    await _abandon(manager, company, record.id, result, live)
                    raise
                except BaseException as exc:
                    if isinstance(exc, anyio.get_cancelled_exc_class() | KeyboardInterrupt):
                        _interrupted(result, company, phase[0])
                        progress.interrupted = True
                    else:
                        err = first_error(exc)  # a task group's: the error inside it
                        result.state, result.message = "failed", f"{type(err).__name__}: {err}"
                    await _abandon(manager, company, record.id, result, live)
                    raise
            if scope.cancelled_caught:  # a hard stop: recorded above
                return result
        finally:
            lease.stop()
        if missing is not None:
            return _staged(manager, company, record.id, result, live, filt, target_name, missing, on_event)
        # the switch: one transaction (which lifts a write fence), then no request goes to the old placement
        result.state = "switched"
        result.message = f"company {company.slug} now on {target_name}"
        try:
            registry.set_placement(company.id, target, migration_id=record.id, state="switched",
                                   message=result.message)
        except MigrationFailed as exc:  # taken over meanwhile: the other run owns the company's state
            result.state, result.message = "failed", str(exc)
            raise
        manager.clear_company_cache(company.id)
        if smoke:
            await _smoke(manager, company, result)
        registry.update_migration(record.id, state="switched", report=result.as_dict(), final=True)
        if on_event is not None:
            on_event("switched", {})
        return result
    finally:
        with anyio.CancelScope(shield=True):
            for a in (*olds.values(), *news.values()):
                await a.aclose()


async def _smoke(manager: StorageManager, company: Company, result: MigrationResult) -> None:
    """The smoke check on the company's route now; its failure is named in ``result.message``."""
    report = await smoke_company(manager, company.id)
    result.smoke = report.as_dict()
    if not report.ok:
        result.message += (f"; the smoke check of its new route failed: {report.message()} (run `vertexflow "
                           f"company smoke {company.slug}` again once the route is fixed)")


def _interrupted(result: MigrationResult, company: Company, phase: str) -> None:
    where = result.source.get("name") or result.source.get("storage_type")
    result.state = "interrupted"
    result.message = (f"interrupted by the operator while {phase}: company {company.slug} stays on {where} "
                      "(nothing was switched; writes go to it alone); run the same command again: the copy "
                      "resumes from the journal")


class _Lease:
    """The migration's lease: a thread renews ``heartbeat_at`` every :data:`LEASE_HEARTBEAT` seconds.

    A thread with its own connection, so that the lease is renewed while the
    event loop is busy (a long hash, a slow listing page). ``lost`` is set
    when the record is no longer held by this process (another run took it over).
    """

    def __init__(self, registry: Registry, migration_id: int) -> None:
        self.path, self.migration_id = registry.path, migration_id
        self.pid, self.host = os.getpid(), this_host()
        self.lost = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"vertexflow-migration-{migration_id}-lease",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            registry = Registry.open(self.path)
        except Exception as exc:  # noqa: BLE001 - the lease then expires: the record shows stale
            log.warning("cannot renew the migration's lease", migration=self.migration_id, error=str(exc))
            return
        try:
            while not self._done.wait(LEASE_HEARTBEAT):
                try:
                    if not registry.heartbeat(self.migration_id, self.pid, self.host):
                        self.lost = not self._done.is_set()
                        return
                except Exception as exc:  # noqa: BLE001 - a busy database: try again at the next beat
                    log.warning("migration lease not renewed", migration=self.migration_id, error=str(exc))
        finally:
            registry.close()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=10)


async def _drain_stale_writes(manager: StorageManager, company_id: int, migration_id: int,
                              budget: float = 120.0) -> None:
    """After a takeover: wait for writes a stale live migration's route still has in flight (dual writes)."""
    live = LiveState(manager.require_registry())
    generation = live.route(company_id).generation
    deadline = time.monotonic() + budget
    while (n := live.writes_before(company_id, generation)) > 0:
        if time.monotonic() >= deadline:
            raise MigrationFailed(f"{n} writes of the stale migration's route still in flight after {budget:g} s",
                                  migration_id=migration_id)
        await anyio.sleep(0.01)


async def _incomplete(olds: dict[str, StorageAdapter], news: dict[str, StorageAdapter],
                      live_run: _LiveRun | None) -> str | None:
    """None if every file of the company (no filter) is on the target and verified; else the first that is not."""
    for ct in olds:
        is_dirty = live_run.is_dirty(ct) if live_run is not None else None
        for mode in ("size", "checksum"):  # listings first: a file not copied costs no read
            problems, more, _ = await _differences(olds[ct], news[ct], NO_FILTER, is_dirty, mode=mode,
                                                   first_only=True)
            if problems:
                p = problems[0]
                return f"{p.kind} {ct} {p.key}"
            if more:
                return f"{ct}: differences beyond those kept"
    return None


def _staged(manager: StorageManager, company: Company, migration_id: int, result: MigrationResult, live: bool,
            filt: Filter, target_name: str, missing: str, on_event: Event | None) -> MigrationResult:
    """End a filtered run that left files out: the company stays, the record says how to finish."""
    where = result.source.get("name") or result.source.get("storage_type")
    again = f"vertexflow migrate company {company.slug} --to {target_name}" + (" --live" if live else "")
    result.state = "staged"
    result.message = (f"staged copy: copied {result.copied} files selected by the filter to {target_name} "
                      f"(verified {result.verified}); company {company.slug} stays on {where}, since not every "
                      f"file of it is on {target_name} ({result.left_out} left out by the filter; first: "
                      f"{missing}). To complete the move: {again}")
    if live:
        LiveState(manager.require_registry()).clear(company.id, migration_id)
    manager.clear_company_cache(company.id)
    manager.require_registry().update_migration(migration_id, state="staged", message=result.message,
                                                report=result.as_dict(), final=True)
    log.info("migration step", migration=migration_id, state="staged", filter=filt.describe())
    if on_event is not None:
        on_event("staged", {})
    return result


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
                 result: MigrationResult, *, reads_current: bool = False) -> None:
        self.state = LiveState(manager.require_registry())
        self.company_id, self.migration_id, self.target = company_id, migration_id, target
        self.reads_current = reads_current
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
        generation = self.state.set_state(self.company_id, self.migration_id, "copying", self.target,
                                          reads_current=self.reads_current)
        self.step.announce("copying", live=True, **data)
        await self._drain(generation, self.start_budget, "when the dual writes began")

    async def _pass(self, deadline: float | None = None) -> None:
        counts = self.result.reconciled
        plans = {p.content_type: p for p in self.result.plan}

        async def reconcile(item: tuple[str, str, int]) -> None:
            ct, key, generation = item
            if deadline is not None and time.monotonic() >= deadline:
                raise MigrationFailed(f"the write fence was held for more than {self.fence_budget:g} s; "
                                      "rolled back (too many files changed at the end: retry)",
                                      migration_id=self.migration_id)
            try:
                outcome = await _again(lambda: reconcile_key(self.olds[ct], self.news[ct], key), deadline)
            except (SourceChanged, NotFound):
                if deadline is not None:
                    raise  # nothing writes under the fence: a real failure
                return  # a write landed meanwhile: the key stays dirty
            if self.state.clean(self.migration_id, ct, key, generation):
                counts[outcome] = counts.get(outcome, 0) + 1
                if ct in plans:
                    plans[ct].reconciled += 1

        await each_at_once(((ct, key, generation) for ct in self.olds
                     for key, generation in self.state.dirty(self.migration_id, ct)), reconcile)

    async def reconcile_passes(self) -> None:
        """Reconcile dirty keys while writes go on, until few are left."""
        for _ in range(self.max_passes):
            if self.state.dirty_count(self.migration_id) <= self.fence_max_dirty:
                break
            await self._pass()

    async def close(self) -> None:
        """Raise the write fence, drain, reconcile and check the last dirty keys."""
        started = time.monotonic()
        generation = self.state.set_state(self.company_id, self.migration_id, "closing", self.target,
                                          reads_current=self.reads_current)
        self.step.announce("closing")
        await self._drain(generation, self.fence_budget, "under the write fence")
        deadline = started + self.fence_budget
        keys = {ct: [k for k, _ in self.state.dirty(self.migration_id, ct)] for ct in self.olds}
        await self._pass(deadline)

        async def compare(item: tuple[str, str]) -> None:
            ct, key = item
            if time.monotonic() >= deadline:  # writers wait at the fence only so long (fence_wait)
                raise MigrationFailed(f"the write fence was held for more than {self.fence_budget:g} s; "
                                      "rolled back (too many files changed at the end: retry)",
                                      migration_id=self.migration_id)
            if not await _again(lambda: _same(self.olds[ct], self.news[ct], key), deadline):
                raise MigrationFailed(f"verification of {key} failed after its final sync",
                                      migration_id=self.migration_id)

        await each_at_once(((ct, key) for ct, ks in keys.items() for key in ks), compare)
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
        if free is not None and needed[store] > free:  # as a store that fills up during the copy: exit 2
            raise InsufficientStorage(f"the company needs {needed[store]:,} bytes on {store} but only {free:,} "
                                      "are free; nothing was copied", backend=store)


async def _provision(plans: list[ContentPlan], news: dict[str, StorageAdapter], categories: tuple[str, ...],
                     subfolders: tuple[str, ...]) -> None:
    for plan in plans:
        folders = set(plan.folders)
        cats = {f for f in folders if "/" not in f} | set(categories)
        folders |= {f"{c}/{s}" for c in cats for s in subfolders}
        adapter = news[plan.content_type]
        for folder in sorted(folders):
            await adapter.ensure_folder(folder)


async def _differences(old: StorageAdapter, new: StorageAdapter, filt: Filter,
                       is_dirty: Callable[[str], bool] | None, *, mode: str = "checksum",
                       first_only: bool = False) -> tuple[list[Difference], bool, int]:
    """Differences between old and new (folder markers left out), each confirmed by reading both sides.

    ``is_dirty`` (live): keys still to be reconciled, left out. Returns the
    differences, whether there were more than the report kept, and the files that matched.
    A content type with no files on either side has none. A checksum comparison also
    compares what describes each file (Content-Type, headers, user metadata, mtime)
    where both stores keep it: a migration that keeps the bytes and loses what they
    mean has failed.
    """
    src: Backend = _EmptyIfMissing(old.backend)
    dst: Backend = _EmptyIfMissing(new.backend)
    if is_dirty is not None:  # writes go on: a file may vanish between the listing and its read
        src, dst = _Vanishing(old.backend), _Vanishing(new.backend)
    try:
        report = await VerifyJob(src, dst, mode=mode, filt=_verify_filter(filt),  # type: ignore[arg-type]
                                 metadata=mode == "checksum").run()
    except NotFound:  # nothing was ever stored here on the old backend: new must hold no file either
        report = VerifyReport()
        async for info in new.list_files():
            if filt.matches(info) and info.key.rsplit("/", 1)[-1] != FOLDER_MARKER:
                report.add(Difference(info.key, "extra", "absent at the old backend"))
    # a live write in flight shows as a difference: its key is dirty and gets its final sync under the fence
    problems: list[Difference] = []
    for p in report.problems:
        if is_dirty is not None and is_dirty(p.key):
            continue
        if await _again(lambda: _same(old, new, p.key, described=p.kind == "metadata")):
            continue
        if is_dirty is not None and is_dirty(p.key):  # dirtied while being compared
            continue
        problems.append(p)
        if first_only:
            break
    return problems, report.missing + report.extra + report.different > len(report.problems), report.matched


async def _verify(old: StorageAdapter, new: StorageAdapter, filt: Filter,
                  is_dirty: Callable[[str], bool] | None, where: str, found: list[str] | None = None) -> int:
    """Compare old and new by checksum; raise MigrationFailed naming the differences; the files matched.

    ``found`` receives each difference (``kind key (detail)``) and what sending it again did.

    A difference is first sent again and checked once more: a file rewritten with the same size
    within the mtime's tolerance, between the copy's listing and a write that the dual writes
    saw (a takeover's gap, say), compares as unchanged to the copy and only a checksum sees it.
    Only what still differs after that fails the migration.
    """
    problems, more, matched = await _differences(old, new, filt, is_dirty)
    if problems and not more:
        still = []
        for p in problems:
            try:
                await _again(lambda: reconcile_key(old, new, p.key))
            except (SourceChanged, NotFound):  # written or deleted while sent: a live write dirtied it
                pass
            if (is_dirty is not None and is_dirty(p.key)) or await _again(
                    lambda: _same(old, new, p.key, described=p.kind == "metadata")):
                matched += 1
            else:
                still.append(p)
            if found is not None and len(found) < REPORT_DIFFERENCES:
                found.append(f"{p.kind} {p.key} ({p.detail}): " + ("still differs" if still and still[-1] is p
                                                                   else "sent again, now equal"))
        log.info("verification: differences sent again", where=where, sent=len(problems), still=len(still))
        problems = still
    if problems or more:
        if found is not None and more:
            found.extend(f"{p.kind} {p.key} ({p.detail}): not sent again (too many differences)"
                         for p in problems[:REPORT_DIFFERENCES - len(found)])
        first = "; ".join(f"{p.kind} {p.key} ({p.detail})" for p in problems[:5])
        raise MigrationFailed(f"verification of {where} failed: {len(problems)} differences: {first}")
    return matched


class _EmptyIfMissing(BackendWrapper):
    """Lists a root that does not exist (a content type the company has no files of) as empty."""

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        return empty_if_missing(self.inner.list(prefix))


class _Vanishing(_EmptyIfMissing):
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


async def _same(old: StorageAdapter, new: StorageAdapter, key: str, *, described: bool = False) -> bool:
    """Whether ``key`` is the same on both sides now (both absent counts); a file on one side only is not read.

    ``described``: what describes it too (a ``metadata`` difference is confirmed by that, not by the bytes).
    """
    if described:
        try:
            return await same_description(old.backend, new.backend, key)
        except NotFound:
            pass  # gone from one side or both: the content comparison below says which
    stats: list[ObjectInfo | None] = []
    for side in (old, new):
        try:
            stats.append(await side.stat(key))
        except NotFound:
            stats.append(None)
    a_info, b_info = stats
    if a_info is None or b_info is None:
        return a_info is None and b_info is None
    if a_info.size is not None and b_info.size is not None and a_info.size != b_info.size:
        return False
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
    state = "failed" if result.state == "interrupted" else result.state  # an interruption is recorded as failed
    manager.require_registry().update_migration(migration_id, state=state, message=result.message,
                                                report=result.as_dict(), final=True)


async def rollback_company(manager: StorageManager, company_ref: int | str, *, sync_back: bool = True,
                           journal: Journal | None = None, settings: TransferSettings | None = None,
                           stats: JobStats | None = None, stop: StopSignal | None = None,
                           smoke: bool = True) -> MigrationResult:
    """Return a company to where its last switched migration took it from.

    With ``sync_back`` what changed on the new backend since the switch is
    synced to the old one first (a sync with deletes), so nothing written in
    between is lost. The company must still be where that migration put it.

    The sync back is a live migration in reverse, with the forward one's
    machinery (:class:`_LiveRun`): while it runs every write of the company,
    in any process, goes to the current backend and then to the old one and
    marks its key dirty; dirty keys are reconciled, then a short write fence
    covers the last ones and the switch lifts it. So a write acknowledged
    during the rollback is on the old backend when the company gets there.
    The record is in progress (with its lease) meanwhile; if the rollback
    fails it is ``switched`` again and the company stays where it is.
    """
    registry = manager.require_registry()
    company = manager.company(company_ref)
    record = registry.last_switch(company.id)
    if sync_back:  # the record goes back in progress (a stale rollback of the company is taken over first)
        record = registry.begin_rollback(company.id)
    if record is None:
        raise ConfigError(f"company {company.slug!r} has no switched migration to roll back")
    target = Placement(record.target["storage_type"], record.target["storage_connection_id"],
                       record.target.get("yandex_disk_folder_id"))
    source = Placement(record.source["storage_type"], record.source["storage_connection_id"],
                       record.source.get("yandex_disk_folder_id"))
    if company.placement != target:
        if sync_back:
            registry.end_rollback(record.id, None)
        raise ConfigError(f"company {company.slug!r} is no longer where migration {record.id} put it; "
                          "refusing to roll back")
    result = MigrationResult(record.id, company.slug, record.target, record.source, "rolled_back", [])
    result.message = f"company {company.slug} back on {record.source.get('name')}"
    if not sync_back:
        registry.set_placement(company.id, source, migration_id=record.id, state="rolled_back",
                               message=result.message)
        manager.clear_company_cache(company.id)
        if smoke:
            await _smoke(manager, company, result)
        return result
    progress = stats if stats is not None else JobStats()
    rec = record
    result.taken_over = list(registry.taken_over)
    pairs = [(ct, manager.target(company, ct, target), manager.target(company, ct, source))
             for ct in manager.config.content_type_names()]
    nows = {ct: manager.adapter_for(now_t) for ct, now_t, _ in pairs}
    backs = {ct: manager.adapter_for(back_t) for ct, _, back_t in pairs}
    lease = _Lease(registry, rec.id)
    lease.start()
    live_run = _LiveRun(manager, company.id, rec.id, source, nows, backs, _Step(manager, rec.id, None), result,
                        reads_current=True)
    try:
        with anyio.CancelScope() as scope:
            if stop is not None:
                stop.attach(scope)
            try:
                await live_run.start()
                async with _journal_or_temp(journal) as j:
                    for ct, now_t, back_t in pairs:
                        now, back = nows[ct], backs[ct]
                        # deletes only where the new side has files: an empty listing must not wipe the old side
                        has_files = False
                        async for _ in now.list_files():
                            has_files = True
                            break
                        done = progress.done_objects
                        await run_between(now.backend, back.backend, j, src_spec=now_t.label(),
                                          dst_spec=back_t.label(), settings=settings or TransferSettings(),
                                          stats=progress, mode="sync", delete=has_files, compare="checksum",
                                          stop=stop, source_limit=now_t.bwlimit(), dest_limit=back_t.bwlimit())
                        if stop is not None and stop.stopping:
                            raise MigrationFailed("rollback interrupted by the operator", migration_id=record.id)
                        # a file the platform changed or deleted meanwhile may fail here: its key is dirty and
                        # reconciled below; the verification before the fence checks every file
                        result.copied += progress.done_objects - done
                await live_run.reconcile_passes()
                for ct, _, back_t in pairs:  # what the sync could not do (deletes it skipped after a failure)
                    await _verify(nows[ct], backs[ct], NO_FILTER, live_run.is_dirty(ct), back_t.label())
                await live_run.close()  # the write fence: it stays up until the switch below
            except BaseException as exc:
                err = first_error(exc)  # a task group's: the error inside it
                why = ("interrupted" if isinstance(err, anyio.get_cancelled_exc_class() | KeyboardInterrupt)
                       else str(err) or type(err).__name__)
                LiveState(registry).clear(company.id, rec.id)
                manager.clear_company_cache(company.id)
                registry.end_rollback(rec.id, f"rollback failed ({why}); the company stays on "
                                              f"{record.target.get('name')}")
                if isinstance(exc, MigrationFailed):
                    raise MigrationFailed(f"{exc}; the company was not moved", migration_id=record.id) from exc
                raise
        if scope.cancelled_caught:
            progress.interrupted = True
            result.state = "interrupted"
            result.message = f"rollback interrupted: company {company.slug} stays on {record.target.get('name')}"
            return result
        registry.set_placement(company.id, source, migration_id=rec.id, state="rolled_back", message=result.message)
        manager.clear_company_cache(company.id)
        if smoke:
            await _smoke(manager, company, result)
        return result
    finally:
        lease.stop()
        with anyio.CancelScope(shield=True):
            for a in (*nows.values(), *backs.values()):
                await a.aclose()
