"""``copy``, ``sync`` and ``verify`` with ``--cluster``: plan shards, run them, record and report.

Called by the CLI after it has parsed and checked the options exactly as
for a one-process run; returns an exit status and the job's summary.

copy / sync:

1. connect to the cluster (failing early if it cannot be reached);
2. start or resume the job in the driver's journal; a resumed job with a
   shard plan keeps it, otherwise the source is listed once (through the
   same source stages a worker uses, so keys agree) and cut into shards;
3. ``sync --delete --max-delete N``: a dry-run plan of the whole job on
   the driver counts the deletes first, so the limit holds job-wide;
4. submit the shards that are not ``done``; a shard is ``done`` only if it
   finished with no failed object, so a rerun retries the others;
5. the job is ``done`` when every shard is.

verify runs its shards without a journal (a verify is a check, rerun in
full) and merges their reports.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import click

from ..errors import ClusterError, VertexflowError
from ..logs import get_logger
from ..pipeline.stats import MAX_FAILURES_KEPT, Failure, JobStats
from .driver import ShardOutcome, check_workers, connect, run_shards, worker_slots
from .shardlog import ShardLog
from .shards import ShardPlan, bounds_from_env, plan_shards
from .worker import ShardTask, run_loop, warm

log = get_logger(__name__)

_BWLIMIT = ("bwlimit", "bwlimit_up", "bwlimit_down")
_SUMMED = {"objects": "done_objects", "bytes": "done_bytes", "skipped": "skipped_objects",
           "failed": "failed_objects", "retries": "retries", "server_side_copies": "server_side_copies",
           "requests": "requests", "deleted": "deleted_objects", "planned_deletes": "planned_deletes",
           "deletes_skipped": "deletes_skipped"}


class ClusterReport:
    """The summary's ``cluster`` entry (a JobStats reporter)."""

    def __init__(self, address: str, shards: int) -> None:
        self.address, self.shards = address, shards
        self.workers = self.ran = self.already_done = self.attempts = self.failed = 0
        self.bwlimit: dict[str, Any] | None = None
        #: seconds from the first shard starting on a worker to the last one finishing
        self.transfer_seconds: float | None = None
        #: seconds in which some shard was moving bytes (the union of the shards' busy windows):
        #: the time a bandwidth limit is measured against
        self.moving: list[list[float]] = []
        self.first_start: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"address": self.address, "workers": self.workers, "shards": self.shards, "ran": self.ran,
                "already_done": self.already_done, "attempts": self.attempts, "failed": self.failed,
                "bwlimit": self.bwlimit, "transfer_seconds": self.transfer_seconds,
                "moving_seconds": round(union_seconds(self.moving), 3)}

    def describe(self) -> str:
        extra = f", {self.already_done} done in an earlier run" if self.already_done else ""
        retried = f", {self.attempts - self.ran} attempts repeated" if self.attempts > self.ran else ""
        return (f"{self.shards} shards on {self.workers} worker threads at {self.address}{extra}{retried}"
                + (f", {self.failed} failed" if self.failed else ""))


@contextmanager
def _progress(stats: JobStats, show: bool) -> Iterator[Any]:
    """A redraw function for the one progress bar of the whole job."""
    if not show:
        yield lambda: None
        return
    from rich.live import Live

    from ..pipeline.progress import ProgressView

    view = ProgressView(stats)
    with Live(view.render(), console=view.console, refresh_per_second=8, transient=False) as live:
        yield lambda: live.update(view.render())
        live.update(view.render())


def union_seconds(windows: list[list[float]]) -> float:
    """The length of the union of ``[start, end]`` windows."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(windows):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def _merge(stats: JobStats, summary: dict[str, Any]) -> None:
    """Add one shard's summary to the job's stats."""
    for key, attr in _SUMMED.items():
        setattr(stats, attr, getattr(stats, attr) + int(summary.get(key) or 0))
    stats.failures_by_reason.update(Counter(summary.get("failures_by_reason") or {}))
    for f in summary.get("failures") or []:
        if len(stats.failures) < MAX_FAILURES_KEPT:
            stats.failures.append(Failure(f["key"], f["reason"], f["message"]))


def cluster_transfer(*, address: str, transfer: Any, show_progress: bool) -> tuple[JobStats, str | None]:
    """Run a copy or sync (a prepared :class:`~vertexflow.ops.assembly.Transfer`) as shards on ``address``.

    Returns the job's stats and, when the job could not run to its end, the
    error to show (``stats.fatal`` is then set; ``stats.interrupted`` for a Ctrl-C).
    """
    from ..state.journal import Journal

    spec, options = transfer.spec, transfer.options
    src_loc, dst_loc = transfer.src, transfer.dst
    stats = JobStats()
    with ExitStack() as stack:
        journal_path = spec.journal
        if spec.no_journal:
            journal_path = os.path.join(stack.enter_context(tempfile.TemporaryDirectory(prefix="vf-")), "j.db")
        try:
            client = stack.enter_context(connect(address))
            check_workers(client)
            slots = worker_slots(client)
            client.run(warm, (src_loc.kind, dst_loc.kind), wait=False)  # workers import while we list

            async def start() -> Any:
                async with await Journal.open(journal_path) as journal:
                    job, resumed = await journal.start_job(spec.mode, src_loc.canonical, dst_loc.canonical,
                                                     {**options.fingerprint(), "cluster": "shards"},
                                                     replay={**options.replay, "cluster": address})
                    return job, resumed, journal.path

            job, resumed, path = run_loop(start)
            shardlog = stack.enter_context(ShardLog(path))
            stats.job_id = None if spec.no_journal else job.id  # a throw-away journal's id names nothing
            known = shardlog.load(job.id)
            stats.resumed = resumed
            if known:
                plan = ShardPlan([s for s, _ in known], sum(s.objects for s, _ in known),
                                 sum(s.bytes for s, _ in known))
                done = {s.index for s, state in known if state == "done"}
            else:
                plan = run_loop(lambda: _plan(src_loc, transfer.layers, options.filter, slots))
                shardlog.save_plan(job.id, plan.shards)
                done = set()
            if spec.mode == "sync" and options.delete and options.max_delete is not None:
                run_loop(lambda: _check_deletes(src_loc, dst_loc, transfer.layers, options, path))
        except VertexflowError as exc:
            stats.fatal = str(exc)
            return stats, str(exc)
        report = ClusterReport(address, len(plan.shards))
        report.workers, report.already_done = slots, len(done)
        stats.reporters["cluster"] = report
        stats.listed_objects, stats.listed_bytes, stats.listing_done = plan.objects, plan.bytes, True
        limits = _limits(spec)
        report.bwlimit = {n: v for n, v in zip(_BWLIMIT, limits, strict=True) if v} or None
        tasks = shard_tasks(transfer, [s for s in plan.shards if s.index not in done])
        errors: list[str] = []

        def started(index: int) -> None:
            if report.first_start is None:
                report.first_start = time.monotonic()
            report.attempts += 1
            shardlog.mark(job.id, index, "running", attempt=True)

        def finished(outcome: ShardOutcome) -> None:
            report.ran += 1
            if report.first_start is not None:
                report.transfer_seconds = round(time.monotonic() - report.first_start, 3)
            if outcome.error is not None:
                report.failed += 1
                error = outcome.error
                message = str(error) if isinstance(error, ClusterError) else f"{type(error).__name__}: {error}"
                errors.append(f"shard {outcome.index}: {message}")
                shardlog.mark(job.id, outcome.index, "failed", message=message[:2000])
                return
            assert outcome.result is not None
            summary = outcome.result["stats"]
            _merge(stats, summary)
            if outcome.result.get("moving"):
                report.moving.append(outcome.result["moving"])
            shard_state = "interrupted" if summary.get("interrupted") else "failed" if summary.get("failed") else "done"
            shardlog.mark(job.id, outcome.index, shard_state, stats=summary)

        state, error_text = "failed", None
        try:
            with _progress(stats, show_progress) as redraw:
                run_shards(client, tasks, live=stats, on_start=started, on_finish=finished, redraw=redraw,
                           bandwidth=any(limits))
            if errors:
                error_text = "; ".join(errors[:5])
                stats.fatal = errors[0]
            else:
                state = "failed" if stats.failed_objects else "done"
        except KeyboardInterrupt:
            stats.interrupted, state = True, "interrupted"
        finally:
            stats.finished = time.monotonic()

            async def finish() -> None:
                async with await Journal.open(path) as journal:
                    await journal.finish_job(job.id, state, stats.summary())

            run_loop(finish)
    return stats, error_text


def _limits(spec: Any) -> tuple[str | None, str | None, str | None]:
    s = spec.settings
    return (s.bwlimit, s.bwlimit_up, s.bwlimit_down)


def shard_tasks(transfer: Any, shards: list[Any]) -> list[ShardTask]:
    """The tasks for ``shards``: the job spec (location specs as typed), never the backends' secret-bearing arguments."""
    from dataclasses import replace

    spec = transfer.spec
    # the transfers the driver chose, so that every shard runs as the job was asked to
    settings = replace(spec.settings, transfers=transfer.options.copy.transfers)
    shipped = replace(spec, settings=settings, journal=None, no_journal=True, dry_run=False).to_dict()
    return [ShardTask(kind=spec.mode, src=transfer.src.spec, dst=transfer.dst.spec, config_path=spec.config_path,
                      index=s.index, start_at=s.start_at, end_before=s.end_before, filter=spec.filter.describe(),
                      options={}, spec=shipped, bwlimit=_limits(spec))
            for s in shards]


async def _plan(src_loc: Any, layers: Any, filt: Any, slots: int) -> ShardPlan:
    from ..ops.copy import resolve_source
    from ..ops.plan import ordered_listing
    from .shards import Shard

    source, single_key = await resolve_source(src_loc)
    async with source:
        if single_key is not None:
            info = await source.stat(single_key)
            return ShardPlan([Shard(0, None, None, 1, info.size or 0)], 1, info.size or 0)
        return await plan_shards(ordered_listing(layers.source(source, JobStats()), filt), slots=slots,
                                 **bounds_from_env())


async def _check_deletes(src_loc: Any, dst_loc: Any, layers: Any, options: Any, journal_path: Any) -> None:
    """``--max-delete`` holds for the whole job: count the deletes with a dry-run plan first."""
    from dataclasses import replace

    from ..errors import JobAborted
    from ..ops.copy import resolve_source
    from ..ops.sync import SyncJob
    from ..state.journal import Journal

    stats = JobStats()
    source, single_key = await resolve_source(src_loc)
    async with source, dst_loc.backend() as target, await Journal.open(journal_path) as journal:
        await SyncJob(layers.source(source, stats), layers.destination(target, stats), journal,
                      src_spec=src_loc.canonical, dst_spec=dst_loc.canonical,
                      options=replace(options, dry_run=True), single_key=single_key, stats=stats).run()
    if stats.planned_deletes > options.max_delete:
        raise JobAborted(f"{stats.planned_deletes} objects would be deleted, more than --max-delete "
                         f"{options.max_delete}: nothing was copied or deleted")


def cluster_verify(*, address: str, src_loc: Any, dst_loc: Any, config_path: str | None, filt: Any,
                   mode: str, sample: float, fix: bool, transfers: int) -> dict[str, Any]:
    """Run a verify as shards on ``address``; returns the merged report (as ``verify --json`` prints it).

    Raises ClusterError when a shard failed on every try.
    """
    with connect(address) as client:
        check_workers(client)
        slots = worker_slots(client)
        client.run(warm, (src_loc.kind, dst_loc.kind), wait=False)
        plan = run_loop(lambda: _plan(src_loc, _Bare(), filt, slots))
        tasks = [ShardTask(kind="verify", src=src_loc.spec, dst=dst_loc.spec, config_path=config_path,
                           index=s.index, start_at=s.start_at, end_before=s.end_before, filter=filt.describe(),
                           options={"mode": mode, "sample": sample, "fix": fix, "transfers": transfers})
                 for s in plan.shards]
        try:
            outcomes = run_shards(client, tasks, live=JobStats(), on_start=lambda i: None,
                                  on_finish=lambda o: None)
        except KeyboardInterrupt:
            click.echo("vertexflow: verify interrupted", err=True)
            raise
    failed = [o for o in outcomes if o.error is not None]
    if failed:
        raise ClusterError("; ".join(f"shard {o.index}: {o.error}" for o in failed[:5]))
    return merge_reports([o.result["report"] for o in sorted(outcomes, key=lambda o: o.index)  # type: ignore[index]
                          if o.result is not None], shards=len(plan.shards))


class _Bare:
    """No source stages: verify compares the stored objects as they are."""

    def source(self, backend: Any, stats: JobStats) -> Any:
        return backend


def merge_reports(reports: list[dict[str, Any]], *, shards: int) -> dict[str, Any]:
    """One verify report from the shards' reports (problems kept in key order, as many as one run keeps)."""
    from ..ops.verify import MAX_REPORTED

    counts = ("src_objects", "dst_objects", "compared", "hashed_both_sides", "matched", "missing", "extra",
              "different")
    out: dict[str, Any] = {k: sum(r[k] for r in reports) for k in counts}
    out["problems"] = [p for r in reports for p in r["problems"]][:3 * MAX_REPORTED]
    out["ok"] = all(r["ok"] for r in reports)
    out["before_fix"] = None
    if any(r.get("before_fix") for r in reports):
        befores = [r["before_fix"] or r for r in reports]  # a shard with nothing to fix was as it is now
        before = {k: sum(b[k] for b in befores) for k in counts}
        out["before_fix"] = {**before, "ok": False, "problems": [p for b in befores for p in b["problems"]]}
        out["fixed"] = sum(r.get("fixed", 0) for r in reports)
    out["shards"] = shards
    return {"ok": out.pop("ok"), **out}
