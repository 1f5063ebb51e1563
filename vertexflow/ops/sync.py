"""``copy`` and ``sync``: plan from both listings, transfer what changed, delete extras.

A run is recorded in the journal (:mod:`vertexflow.state.journal`) as a job.
Running the same command again (or ``jobs resume ID``) finds the unfinished
job and continues it: the plan is made again from fresh listings, and every
object that the interrupted run finished is skipped because the journal's
record of the destination says it is already there. Nothing is ever copied
twice into one key at the same time, and every put replaces its key whole, so
an object the crash caught in flight is simply sent again.

Deletes (``sync --delete``) run only after every transfer, and never when the
source listing failed, when the source is empty but the destination is not,
when a transfer failed, when the run stopped at ``--max-transfer`` or
``--max-duration`` (:mod:`.cutoff`), or when there are more than
``max_delete`` of them.

The options of the spec that leave existing objects alone (``--ignore-existing``,
``--update``, ``--immutable``) are the planner's (:mod:`.plan`); an object
``--immutable`` refuses to overwrite is a failure of the run (reason
``conflict``), left as it is. ``--backup-dir`` (:mod:`.keep`): a sync copies
every destination object it would overwrite there first, and every object it
would delete, which it then deletes; an object whose copy there failed is
neither overwritten nor deleted. ``--create-empty-src-dirs`` and ``--links`` /
``--copy-links``: :mod:`.links`.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import anyio

from ..backends.base import Backend
from ..errors import Conflict, InsufficientStorage, JobAborted, NotFound, first_error
from ..filters import NO_FILTER, Filter
from ..logs import get_logger
from ..model import SHA256, ObjectInfo
from ..pipeline.runner import StopSignal, run_pipeline
from ..pipeline.stats import JobStats
from ..state.journal import DestRecord, Journal, JournalCheckpoint, JobRecord, ObjectRecord
from .copy import CopyJob, CopyOptions
from .cutoff import Cutoff
from .deletes import Deleter, batch_size, batched
from .keep import Keeper
from .links import SourceTree
from .orphans import abort_orphans
from .report import TransferReport
from .plan import CompareMode, Decision, Planner, dump_decision, load_decision
from .spec import TransferSpec

log = get_logger(__name__)

#: seconds between journal flushes while a job runs; a crash loses at most this much record
FLUSH_INTERVAL = 0.5
DELETE_WORKERS = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncOptions:
    mode: Literal["copy", "sync"] = "copy"
    delete: bool = False
    max_delete: int | None = None
    compare: CompareMode = "size_mtime"
    dry_run: bool = False
    #: transfer order: "key" (streamed while listing) or "size,desc", "size,asc",
    #: "mtime,asc", "mtime,desc" (the whole plan is made first, then sorted)
    order_by: str | None = None
    filter: Filter = NO_FILTER
    copy: CopyOptions = field(default_factory=CopyOptions)
    #: the stage options as given (``compress``, ``chunk_size``...): they change
    #: what is stored, so a run with other stages is another job
    stages: Mapping[str, Any] = field(default_factory=dict)
    #: options that only change how a run goes (transfers, bandwidth...): kept
    #: with the job so that ``jobs resume`` runs it the same way
    replay: Mapping[str, Any] = field(default_factory=dict)
    #: the job spec: the options beyond those above (limits, --ignore-existing, --backup-dir...).
    #: None: the one ``replay`` keeps (``spec``), if any
    spec: TransferSpec | None = None

    def __post_init__(self) -> None:
        if self.spec is None and self.replay.get("spec"):
            object.__setattr__(self, "spec", TransferSpec.from_dict(self.replay["spec"]))

    def fingerprint(self) -> dict[str, Any]:
        """What makes two runs "the same job" (transfers, retries and limits do not)."""
        filt = self.filter.describe()
        if "files" in filt:  # the --files-from keys by their digest: a fingerprint stays small
            names = "\n".join(filt.pop("files")).encode()  # type: ignore[arg-type]
            filt["files_sha256"] = hashlib.sha256(names).hexdigest()
        out = {"mode": self.mode, "delete": self.delete, "compare": self.compare,
               "filter": filt, "order_by": self.order_by}
        if self.stages:  # absent when off, so that jobs recorded before stages existed still match
            out["stages"] = dict(self.stages)
        if self.spec is not None and (given := self.spec.identity()):
            out["options"] = given  # likewise absent when none is given
        return out


class _JournalRecorder:
    """Buffers outcomes in memory and writes them to the journal in batches."""

    def __init__(self, journal: Journal, job_id: int, dest: str) -> None:
        self.journal, self.job_id, self.dest = journal, job_id, dest
        self.objects: list[ObjectRecord] = []
        self.dests: list[DestRecord] = []
        self.forgotten: list[str] = []

    def planned(self, d: Decision) -> None:
        info = d.src if d.action == "copy" else d.dst
        assert info is not None
        self.objects.append(ObjectRecord(key=info.key, state="planned", action="copy" if d.action == "copy" else "delete",
                                         size=info.size, mtime=info.mtime.timestamp() if info.mtime else None,
                                         src_version=info.version, message=d.why))

    def done(self, src: ObjectInfo, result: ObjectInfo) -> None:
        sha = result.hashes.get(SHA256)
        version = result.version or result.etag
        self.objects.append(ObjectRecord(key=src.key, state="done", size=result.size, sha256=sha,
                                         dst_version=version))
        self.dests.append(DestRecord(key=src.key, dst_version=version, size=result.size,
                                     src_mtime=src.mtime.timestamp() if src.mtime else None,
                                     src_version=src.version, sha256=sha))

    def failed(self, src: ObjectInfo, exc: BaseException) -> None:
        self.objects.append(ObjectRecord(key=src.key, state="failed", reason=getattr(exc, "reason", "error"),
                                         message=str(exc)))

    def deleted(self, key: str) -> None:
        self.objects.append(ObjectRecord(key=key, state="done", action="delete"))
        self.forgotten.append(key)

    async def flush(self) -> None:
        objects, self.objects = self.objects, []
        dests, self.dests = self.dests, []
        forgotten, self.forgotten = self.forgotten, []
        with anyio.CancelScope(shield=True):  # a record once made is never lost to a Ctrl-C
            await self.journal.record_objects(self.job_id, objects)
            await self.journal.record_dest(self.dest, dests)
            if forgotten:
                await self.journal.forget_dest(self.dest, forgotten)

    async def flush_periodically(self) -> None:
        while True:
            await anyio.sleep(FLUSH_INTERVAL)
            await self.flush()


class SyncJob:
    """One copy or sync run between two backends, recorded in ``journal``.

    ``on_plan`` (dry runs) is called with every decision instead of acting on it.
    """

    def __init__(self, src: Backend, dst: Backend, journal: Journal, *, src_spec: str, dst_spec: str,
                 options: SyncOptions | None = None, single_key: str | None = None,
                 stats: JobStats | None = None, stop: StopSignal | None = None,
                 on_plan: Callable[[Decision], None] | None = None, report: TransferReport | None = None) -> None:
        self.src, self.dst, self.journal = src, dst, journal
        self.src_spec, self.dst_spec = src_spec, dst_spec
        self.options = options or SyncOptions()
        self.single_key = single_key
        self.stats = stats or JobStats()
        self.stop = stop or StopSignal()
        self.on_plan = on_plan
        self.report = report
        self.job: JobRecord | None = None
        self.resumed = False
        self.planned_deletes = 0
        self.planner: Planner | None = None
        self.spec = self.options.spec
        #: ``--max-transfer`` / ``--max-duration`` of this run (None: none given, or a dry run)
        self.cutoff: Cutoff | None = None
        #: ``--backup-dir``: where what the sync overwrites or deletes is kept, and the objects it would overwrite
        self.keeper: Keeper | None = None
        self._overwrites: list[ObjectInfo] = []
        #: ``--links``/``--copy-links``/``--create-empty-src-dirs``: the source's links and folders
        self.tree: SourceTree | None = None

    async def run(self) -> JobStats:
        """Run to the end; a fatal error raises (:class:`JobAborted` and friends)."""
        if self.single_key is None:
            self.tree = SourceTree.of(self.spec, self.src, self.dst, self.options.filter)
        if self.options.dry_run:
            await self._dry_run()
            return self.stats
        if self.spec is not None:
            self.cutoff = Cutoff.of(self.spec.settings, self.stats)
        self.job, self.resumed = await self.journal.start_job(self.options.mode, self.src_spec, self.dst_spec,
                                                              self.options.fingerprint(), replay=self.options.replay)
        # a throw-away journal's job id names nothing a user can find again
        self.stats.job_id = self.job.id if self.journal.kept else None
        self.stats.resumed = self.resumed
        recorder = _JournalRecorder(self.journal, self.job.id, self.dst.describe())
        state = "failed"
        try:
            if self.spec is not None and self.spec.backup_dir is not None:
                async with Keeper.open(self.spec, self.dst, self.options.copy, self.stats, self.stop) as keeper:
                    self.keeper = keeper
                    await self._transfer_and_delete(recorder)
            else:
                await self._transfer_and_delete(recorder)
            stopped = self.stop.stopping or (self.cutoff is not None and self.cutoff.reached is not None)
            state = "interrupted" if stopped else "done"
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        finally:
            self.stats.requests = self.src.requests + self.dst.requests
            self.stats.retries += self.src.retries + self.dst.retries
            with anyio.CancelScope(shield=True):
                await self.journal.finish_job(self.job.id, state, self.stats.summary())
        return self.stats

    async def _transfer_and_delete(self, recorder: _JournalRecorder) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(recorder.flush_periodically)
            try:
                # A store with a quota (Yandex.Disk) gets the whole plan first, so that a
                # copy that cannot fit fails before the first byte is sent.
                quota = None if self.dst.features.local_path else await self.dst.free_space()
                # --backup-dir: what is overwritten is kept first, so the whole plan is made first
                if self.options.order_by or quota is not None or self.keeper is not None:
                    items = self._ordered_copies(recorder, quota)
                else:
                    items = self._copies(recorder)
                dest = self.dst.describe()
                job_id = self.job.id if self.job is not None else None
                await CopyJob(self.src, self.dst, self.options.copy, items=items, recorder=recorder, report=self.report,
                              checkpoints=lambda info: JournalCheckpoint(self.journal, dest, info.key, info.version,
                                                                         job_id),
                              stats=self.stats, stop=self.stop, cutoff=self.cutoff).run()
                await recorder.flush()
                stopped = self.stop.stopping or (self.cutoff is not None and self.cutoff.reached is not None)
                if self.tree is not None and not stopped:
                    await self.tree.make_empty_folders()
                if self.planned_deletes and not stopped:
                    await self._deletes(recorder)
                elif self.planned_deletes:
                    self.stats.planned_deletes = self.planned_deletes
                    self.stats.deletes_skipped = self.planned_deletes
                if job_id is not None and not stopped:
                    # every transfer is over: an upload of this job still in the journal is no run's
                    await abort_orphans(self.journal, self.dst, job_id, self.stats)
            finally:
                tg.cancel_scope.cancel()
                await recorder.flush()

    # -- planning -----------------------------------------------------------
    def _planner(self) -> Planner:
        opts = self.options
        spec = self.spec
        self.planner = Planner(self.src, self.dst, journal=self.journal, mode=opts.compare,
                               delete=opts.mode == "sync" and opts.delete, filt=opts.filter,
                               ignore_existing=spec is not None and spec.ignore_existing,
                               update=spec is not None and spec.update, immutable=spec is not None and spec.immutable,
                               source_items=self.tree.listing if self.tree is not None else None)
        return self.planner

    async def _decisions(self) -> AsyncIterator[Decision]:
        if self.single_key is not None:
            info = await self.src.stat(self.single_key)
            try:
                existing: ObjectInfo | None = await self.dst.stat(self.single_key)
            except NotFound:
                existing = None
            if existing is None:
                yield Decision("copy", info, None, "missing at destination")
            else:
                yield await self._planner().compare(info, existing, (
                    await self.journal.dest_records(self.dst.describe(), [info.key])).get(info.key))
            return
        async for d in self._planner().decisions():
            yield d

    async def _copies(self, recorder: _JournalRecorder) -> AsyncIterator[ObjectInfo]:
        """The source objects to transfer, recording the plan as it is made."""
        async for d in self._decisions():
            if self.cutoff is not None and self.cutoff.check() is not None:
                return  # --max-duration reached while planning: the next run plans the rest
            if d.action == "copy":
                assert d.src is not None
                recorder.planned(d)
                if self.tree is not None and self.tree.is_stored_link(d.src.key):
                    await self._store_link(d.src, recorder)
                    continue
                if self.keeper is not None and d.dst is not None:
                    self._overwrites.append(d.dst)
                yield d.src
            elif d.action == "refuse":
                assert d.src is not None
                self.stats.listed_objects += 1
                self._refused(d, recorder)
            elif d.action == "skip":
                self.stats.listed_objects += 1
                self.stats.skipped_objects += 1
                if self.report is not None and d.src is not None:
                    self.report.skipped(d.src, d.why)
                log.debug("object unchanged", key=d.key, why=d.why)
            elif d.action == "delete":
                recorder.planned(d)
                self.planned_deletes += 1

    async def _ordered_copies(self, recorder: _JournalRecorder, quota: int | None) -> AsyncIterator[ObjectInfo]:
        """Record the whole plan first, check it fits ``quota``, then read it back in order."""
        assert self.job is not None
        await self.journal.clear_planned(self.job.id)
        async for _ in self._copies(recorder):
            if len(recorder.objects) >= 5000:
                await recorder.flush()
        await recorder.flush()
        await self.journal.mark_planned(self.job.id)
        if quota is not None:
            needed = await self.journal.planned_bytes(self.job.id)
            if needed > quota:
                raise InsufficientStorage(
                    f"the copy needs {needed:,} bytes but only {quota:,} are free; nothing was copied",
                    backend=self.dst.describe())
        if self.keeper is not None and self._overwrites:
            overwrites, self._overwrites = self._overwrites, []
            for info, exc in await self.keeper.keep(overwrites):
                self._failed_before_copy(info, exc, recorder)
            await recorder.flush()
            if self.stop.stopping:
                return  # some objects may not be kept yet: none is overwritten
        rows = self.journal.iter_objects(self.job.id, states=("planned",), order_by=self.options.order_by or "key")
        async with aclosing(rows):
            async for r in rows:
                # the plan kept no description of the bytes (Content-Type, headers, user metadata):
                # headers None has the copy ask the source's stat for it
                yield ObjectInfo(key=r.key, size=r.size, version=r.src_version, headers=None,
                                 mtime=datetime.fromtimestamp(r.mtime, UTC) if r.mtime is not None else None)

    async def _dry_run(self) -> None:
        try:
            await self.dst.check()
        except NotFound:
            if not self.dst.features.local_path:
                raise  # a missing bucket is an error; a directory not made yet is empty
        if self.options.order_by:
            decisions = in_transfer_order(self._decisions(), self.options.order_by)
        else:
            decisions = self._decisions()
        async with aclosing(decisions):
            async for d in decisions:
                if self.on_plan is not None:
                    self.on_plan(d)
                if d.action == "copy":
                    self.stats.listed_objects += 1
                    self.stats.listed_bytes += d.src.size or 0 if d.src else 0
                elif d.action == "skip":
                    self.stats.skipped_objects += 1
                elif d.action == "delete":
                    self.planned_deletes += 1
                elif d.action == "refuse":
                    self.stats.listed_objects += 1
                    self.stats.record_failure(d.key, self._refusal(d))
        self.stats.planned_deletes = self.planned_deletes
        self.stats.listing_done = True
        self.stats.requests = self.src.requests + self.dst.requests

    # -- what the spec's options do per object ---------------------------
    def _refusal(self, d: Decision) -> Conflict:
        return Conflict(f"the source differs ({d.why.partition(':')[0]}) and --immutable forbids overwriting "
                        "it; the destination object is kept", backend=self.dst.describe(), key=d.key)

    def _refused(self, d: Decision, recorder: _JournalRecorder) -> None:
        """--immutable: an existing destination object that differs from its source is a failure, left alone."""
        assert d.src is not None
        self._failed_before_copy(d.src, self._refusal(d), recorder)

    def _failed_before_copy(self, info: ObjectInfo, exc: BaseException, recorder: _JournalRecorder) -> None:
        self.stats.record_failure(info.key, exc)
        recorder.failed(info, exc)
        if self.report is not None:
            self.report.failed(info, exc)
        log.error("object failed", key=info.key, reason=getattr(exc, "reason", type(exc).__name__), error=str(exc))

    async def _store_link(self, info: ObjectInfo, recorder: _JournalRecorder) -> None:
        """--links: the object that stands for a symbolic link, written from the link's target."""
        assert self.tree is not None
        self.stats.listed_objects += 1
        self.stats.listed_bytes += info.size or 0
        if self.cutoff is not None and not self.cutoff.may_start(info.size or 0):
            return
        try:
            result = await self.tree.store_link(info)
        except Exception as exc:
            if getattr(exc, "fatal", False):
                raise
            self._failed_before_copy(info, exc, recorder)
            return
        self.stats.done_objects += 1
        self.stats.done_bytes += result.size or 0
        self.stats.moved_bytes += result.size or 0
        self.stats.routes["link"] += 1
        recorder.done(info, result)
        if self.report is not None:
            self.report.copied(info, result, "link", None)

    # -- deleting ----------------------------------------------------------
    async def _deletes(self, recorder: _JournalRecorder) -> None:
        assert self.job is not None and self.planner is not None
        n = self.planned_deletes
        self.stats.planned_deletes = n
        if self.planner.src_listed == 0:
            raise JobAborted(f"the source listing came back empty: refusing to delete {n} objects "
                             f"at {self.dst.describe()} (nothing was deleted)")
        if self.options.max_delete is not None and n > self.options.max_delete:
            raise JobAborted(f"{n} objects would be deleted, more than --max-delete {self.options.max_delete}: "
                             "nothing was deleted")
        if self.stats.failed_objects:
            log.warning("not deleting: some transfers failed", planned_deletes=n)
            self.stats.deletes_skipped = n
            return
        keys = self.journal.iter_objects(self.job.id, states=("planned",), action="delete")
        if self.keeper is not None:
            keys = await self._kept_first(keys, recorder)

        deleter = Deleter(self.dst)

        async def delete(batch: list[ObjectRecord]) -> None:
            if self.cutoff is not None and self.cutoff.check() is not None:
                self.stats.deletes_skipped += len(batch)
                return  # --max-duration reached: the next run deletes the rest
            failed = await deleter.delete([record.key for record in batch])
            for record in batch:
                if record.key in failed:
                    continue
                recorder.deleted(record.key)
                self.stats.deleted_objects += 1
                if self.report is not None:
                    self.report.deleted(record.key)
                log.info("object deleted", key=record.key)
            if failed:  # as a single delete's failure: the run stops, the next one deletes what is left
                raise next(iter(failed.values()))

        # where the destination deletes in batches (S3 DeleteObjects), a batch at a time: one request each
        size = batch_size(self.dst)
        await run_pipeline(batched(keys, size), delete, workers=DELETE_WORKERS, queue_size=256 // size or 1,
                           stop=self.stop, name="to_delete")

    async def _kept_first(self, records: AsyncIterator[ObjectRecord],
                          recorder: _JournalRecorder) -> AsyncIterator[ObjectRecord]:
        """--backup-dir: copy every object about to be deleted there; those whose copy failed stay, as failures."""
        assert self.keeper is not None
        rows: list[ObjectRecord] = []
        async with aclosing(records):
            async for r in records:
                rows.append(r)
        infos = [ObjectInfo(key=r.key, size=r.size, version=r.src_version, headers=None,
                            mtime=datetime.fromtimestamp(r.mtime, UTC) if r.mtime is not None else None) for r in rows]
        failed: set[str] = set()
        for info, exc in await self.keeper.keep(infos):
            self._failed_before_copy(info, exc, recorder)
            failed.add(info.key)
        self.stats.deletes_skipped += len(failed)

        async def kept() -> AsyncIterator[ObjectRecord]:
            for r in rows:
                if r.key not in failed:
                    yield r

        return kept()


async def in_transfer_order(decisions: AsyncIterator[Decision], order_by: str) -> AsyncIterator[Decision]:
    """A dry run's decisions as the run would act on them: the copies in ``order_by`` order (``size,desc``...,
    sorted in a temporary SQLite file, not in memory), then the rest in key order."""
    column, _, direction = order_by.partition(",")
    if column not in ("size", "mtime") or direction not in ("asc", "desc"):
        raise ValueError(f"order_by {order_by!r}")
    with tempfile.TemporaryDirectory(prefix="vertexflow-plan-") as tmp:
        db = sqlite3.connect(os.path.join(tmp, "plan.db"), check_same_thread=False)
        try:
            db.execute("CREATE TABLE plan (n INTEGER PRIMARY KEY, size INTEGER, mtime REAL, copy INTEGER, d TEXT)")
            n = 0
            async with aclosing(decisions):
                async for d in decisions:
                    info = d.src if d.action == "copy" else None
                    db.execute("INSERT INTO plan VALUES (?, ?, ?, ?, ?)",
                               (n, info.size if info else None,
                                info.mtime.timestamp() if info and info.mtime else None,
                                int(info is not None), dump_decision(d)))
                    n += 1
            # ties (and unknown sizes or times) in key order, as the journal's ordered plan reads them
            order = f"{column} {direction.upper()} NULLS LAST, n"
            for copy_first in (1, 0):
                rows = db.execute(f"SELECT d FROM plan WHERE copy = ? ORDER BY {order if copy_first else 'n'}",
                                  (copy_first,))
                for (blob,) in rows:
                    yield load_decision(blob)
        finally:
            db.close()
