"""One job's supervisor: when it runs, how it stops, what happens after a failure.

A :class:`JobController` loops until the daemon drains or the job is removed:
it waits for a reason to run (its schedule, a filesystem event, a manual
start, a retry after a failure, work left by an interrupted run), checks the
job's windows, and runs the job's runner with a fresh
:class:`~vertexflow.pipeline.stats.JobStats` and
:class:`~vertexflow.pipeline.runner.StopSignal`.

* Nothing a run raises escapes the controller: a failure is recorded and the
  job is tried again after an exponential backoff (``backoff_initial``,
  doubling up to ``backoff_max``), so a job in a crash loop never takes the
  daemon or the other jobs down.
* Pause, window end and drain stop a run gracefully (no new object; those in
  flight finish; the journal is flushed): the next run continues it. Cancel
  aborts the transfers in flight (temporary files and multipart uploads are
  cleaned up by the backends).
* What a person relies on survives a restart (given the daemon's journal):
  the last runs, the last start and success (so the overdue clock and the
  schedule go on from them: an interval job is not rerun just because the
  process restarted), failures in a row, and a user's pause or cancel.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio

from ..errors import first_error, retryable_reasons
from ..logs import get_logger
from ..pipeline.runner import StopSignal
from ..pipeline.stats import JobStats
from . import memory
from .config import DaemonSettings, JobSpec
from .jobs import (
    ALREADY_PAUSED,
    ALREADY_PAUSING,
    ALREADY_RUNNING,
    CANCELLED,
    NOT_PAUSED,
    OUTSIDE_WINDOWS,
    FAILED,
    INTERRUPTED,
    PARTIAL,
    SUCCESS,
    ErrorLog,
    JobState,
    RunResult,
    Throughput,
    Totals,
    progress,
)
from .reports import RunReports, run_id
from .runners import Runner

if TYPE_CHECKING:
    from ..state.journal import Journal
from .schedule import Schedule, Windows

log = get_logger("vertexflow.daemon")

#: the longest the loop sleeps before looking at the clock again (clock changes, DST)
MAX_SLEEP = 30.0
#: per-object failures of one run copied into the daemon's error log
OBJECT_ERRORS_LOGGED = 10
#: while a run is in progress, how often its window is looked at
WINDOW_POLL = 1.0
#: a watched directory that cannot be watched is tried again this often
WATCH_RETRY = 5.0


class JobController:
    def __init__(self, spec: JobSpec, runner: Runner, *, settings: DaemonSettings, errors: ErrorLog,
                 on_result: Callable[[JobController, RunResult], None] | None = None,
                 clock: Callable[[], datetime] = datetime.now, journal: Journal | None = None) -> None:
        self.clock = clock  # local wall time: schedules and windows (tests move it)
        #: where the job's history and state are kept across restarts (None: in memory only)
        self.journal = journal
        #: the per-object reports of its runs, beside the journal (:mod:`.reports`)
        self.reports = RunReports.beside(journal.path) if journal is not None else None
        self._state_changed = False
        self.errors = errors
        self.on_result = on_result
        self.settings = settings
        self.results: deque[RunResult] = deque(maxlen=settings.history)
        self.totals = Totals()
        self.throughput = Throughput()
        self.created = time.time()
        self.state = JobState.IDLE
        self.state_detail: str | None = None
        self.held: str | None = None  # "paused" | "cancelled": by the user
        self.pending: str | None = None  # a run is wanted, and why
        self.next_run: datetime | None = None
        self.retry_at: datetime | None = None
        self.failures = 0  # in a row
        self.stats: JobStats | None = None  # the run in progress
        self.run_id: int | None = None  # its id (its report: GET /api/jobs/{name}/runs/{id}/report)
        self.last_stats: JobStats | None = None
        self.stop: StopSignal | None = None
        self.stop_reason: str | None = None
        self.trigger_reason: str | None = None
        self.last_start: datetime | None = None
        self.last_success: float | None = None
        # never: a continuous job's first reconcile is at start, for changes made while nothing watched
        self.last_full_run = float("-inf")
        self.overdue = False
        self._alerted = 0.0
        self.closing = False
        self.done = anyio.Event()
        self.scope = anyio.CancelScope()
        self._wake = anyio.Event()
        self.watching = False
        self.update(spec, runner)

    @property
    def name(self) -> str:
        return self.spec.name

    def update(self, spec: JobSpec, runner: Runner) -> None:
        """Take a changed spec (a reload): a run in progress finishes as it started."""
        self.spec, self.runner = spec, runner
        self.schedule = Schedule(spec.interval, spec.cron)
        self.windows = Windows.parse(spec.windows)
        self.next_run = self.schedule.next_run(self.clock(), self.last_start)
        self._wake.set()

    # -- the loop ----------------------------------------------------------
    async def run(self) -> None:
        """Supervise the job until :meth:`drain` (or cancellation of :attr:`scope`)."""
        try:
            with self.scope:
                await self._recall()
                try:
                    if await self.runner.has_unfinished_run():
                        self.pending = "resume"
                    # an overdue job stays overdue across restarts
                    self.last_success = self.last_success or await self.runner.last_success()
                except Exception as exc:  # noqa: BLE001 - a journal problem must not stop the job
                    log.warning("could not read the job's history", job=self.name, error=str(exc))
                async with anyio.create_task_group() as tg:
                    if self.spec.continuous:
                        tg.start_soon(self._watch)
                    await self._loop()
                    tg.cancel_scope.cancel()
        finally:
            self.done.set()

    async def _loop(self) -> None:
        while not self.closing:
            self._wake = anyio.Event()
            if self._state_changed:
                await self._save_state()
            now = self.clock()
            reason = self._due(now)
            wake: datetime | None
            if reason is not None and self.windows.is_open(now):
                await self._run_once(reason)
                continue
            if reason is not None:  # due, but outside every window: keep it for the next one
                self.pending = reason
                if reason == "schedule":
                    self.next_run = self.schedule.next_run(now, now)
                self.state, self.state_detail = JobState.PAUSED, "outside its windows"
                wake = self.windows.next_open(now)
            else:
                self._idle_state()
                wake = self._next_wake(now)
            timeout = MAX_SLEEP if wake is None else min(MAX_SLEEP, max(0.0, (wake - self.clock()).total_seconds()))
            with anyio.move_on_after(timeout):
                await self._wake.wait()

    def _due(self, now: datetime) -> str | None:
        if self.held:
            return None
        if self.retry_at is not None:
            return "retry" if now >= self.retry_at else None
        if self.pending:
            return self.pending
        if self.next_run is not None and self.next_run <= now:
            return "schedule"
        if self.spec.continuous and time.monotonic() - self.last_full_run >= self.spec.reconcile_interval:
            return "reconcile"
        return None

    def _next_wake(self, now: datetime) -> datetime | None:
        if self.held:
            return None
        if self.retry_at is not None:
            return self.retry_at
        times = [t for t in (self.next_run, self._reconcile_at(now)) if t is not None]
        return min(times) if times else None

    def _reconcile_at(self, now: datetime) -> datetime | None:
        if not self.spec.continuous:
            return None
        left = self.spec.reconcile_interval - (time.monotonic() - self.last_full_run)
        return now + timedelta(seconds=max(0.0, left))

    def _idle_state(self) -> None:
        self.state_detail = None
        if self.held == "paused":
            self.state, self.state_detail = JobState.PAUSED, "paused by the user"
        elif self.held == "cancelled":
            self.state = JobState.CANCELLED
        elif self.retry_at is not None:
            self.state, self.state_detail = JobState.FAILED, f"retry at {self.retry_at:%H:%M:%S}"
        elif self.next_run is not None or self.spec.continuous:
            self.state = JobState.SCHEDULED
        else:
            self.state = JobState.IDLE

    async def _run_once(self, reason: str) -> None:
        spec = self.spec
        stats, stop = JobStats(), StopSignal()
        self.stats, self.stop, self.stop_reason, self.trigger_reason = stats, stop, None, reason
        self.pending = self.retry_at = None
        self.state, self.state_detail = JobState.RUNNING, None
        self.last_start = self.clock()
        started = time.time()
        run, runner = run_id(started), self.runner
        self.run_id = run
        log.info("job run started", job=spec.name, kind=spec.kind, trigger=reason)
        error: BaseException | None = None
        try:
            if self.reports is not None and runner.reports:
                try:
                    runner.report_path = self.reports.start(spec.name, run)
                except OSError as exc:  # the run goes on without its report: it is not the job's failure
                    log.warning("could not keep the run's report", job=spec.name, error=str(exc))
            async with anyio.create_task_group() as tg:
                if not self.windows.always:
                    tg.start_soon(self._stop_at_window_end)
                try:
                    await runner.run(stats, stop)
                finally:
                    tg.cancel_scope.cancel()
        except Exception as exc:  # noqa: BLE001 - every failure of a run is the job's, never the daemon's
            error = first_error(exc)
        finally:
            report, runner.report_path = runner.report_path, None
            stats.finished = stats.finished or time.monotonic()
            self.totals.add(stats)
            self.last_stats, self.stats, self.stop = stats, None, None
        result = self._finish(reason, stats, stop, started, error, run=run,
                              report=report is not None and os.path.isfile(report))
        with anyio.CancelScope(shield=True):  # a run once finished is remembered, drain or not
            await self._remember(result)
            await self._prune_reports()
        memory.trim()  # what the run freed goes back to the system, not stranded in the allocator's arenas

    # -- memory across restarts --------------------------------------------
    async def _recall(self) -> None:
        """Take back what an earlier process of the daemon remembered of this job."""
        if self.journal is None:
            return
        try:
            state = await self.journal.daemon_state(self.name) or {}
            runs = await self.journal.daemon_runs(self.name, self.settings.history)
        except Exception as exc:  # noqa: BLE001 - a journal problem must not stop the job
            log.warning("could not read the job's history", job=self.name, error=str(exc))
            return
        if not state:
            self._state_changed = True  # first seen: the overdue clock starts now, and survives restarts
        self.results.extend(RunResult.from_dict(r) for r in runs)
        self.held = state.get("held") if state.get("held") in ("paused", "cancelled") else None
        self.failures = int(state.get("failures") or 0)
        self.last_success = state.get("last_success") or self.last_success
        self.created = state.get("created") or self.created
        if state.get("last_start"):
            self.last_start = datetime.fromtimestamp(float(state["last_start"]))
            self.next_run = self.schedule.next_run(self.clock(), self.last_start)
        if self.held == "paused" and self.results and self.results[-1].outcome == INTERRUPTED:
            self.pending = "resume"  # resumed by the user later, it continues the interrupted run
        self._idle_state()

    def _state(self) -> dict[str, Any]:
        return {"held": self.held, "failures": self.failures, "last_success": self.last_success,
                "created": self.created,
                "last_start": self.last_start.timestamp() if self.last_start is not None else None}

    async def _save_state(self) -> None:
        self._state_changed = False
        if self.journal is None:
            return
        try:
            await self.journal.save_daemon_state(self.name, self._state())
        except Exception as exc:  # noqa: BLE001 - the run itself is not lost: only its memory
            log.warning("could not save the job's state", job=self.name, error=str(exc))

    async def _prune_reports(self) -> None:
        if self.reports is None or not self.runner.reports:
            return
        try:
            await anyio.to_thread.run_sync(self.reports.prune, self.name, self.settings.history)
        except OSError as exc:  # the run is remembered; an old report stays a little longer
            log.warning("could not prune the job's reports", job=self.name, error=str(exc))

    async def _remember(self, result: RunResult) -> None:
        if self.journal is None:
            return
        try:
            await self.journal.record_daemon_run(self.name, result.as_dict(), keep=self.settings.history)
        except Exception as exc:  # noqa: BLE001 - the run itself is not lost: only its memory
            log.warning("could not record the run", job=self.name, error=str(exc))
        await self._save_state()

    def _finish(self, reason: str, stats: JobStats, stop: StopSignal, started: float,
                error: BaseException | None, *, run: int | None = None, report: bool = False) -> RunResult:
        spec, now = self.spec, time.time()
        self.last_full_run = time.monotonic()
        interrupted_by = None
        if error is not None:
            outcome = FAILED
            self.failures += 1
            delay = min(self.settings.backoff_max, self.settings.backoff_initial * 2 ** (self.failures - 1))
            self.retry_at = self.clock() + timedelta(seconds=delay)
            message = str(error) or type(error).__name__
            self.errors.add(spec.name, "run", message)
            log.error("job run failed", job=spec.name, error=message, failures_in_a_row=self.failures,
                      retry_in_s=round(delay, 1))
        elif stop.stopping and not _finished_its_work(stats):
            interrupted_by = self.stop_reason or "stop"
            outcome = CANCELLED if interrupted_by == "cancel" else INTERRUPTED
            if interrupted_by == "window":
                self.pending = "window"
            elif interrupted_by == "pause":
                self.pending = "resume"
            log.info("job run stopped", job=spec.name, by=interrupted_by, objects=stats.done_objects)
        elif stats.failed_objects:
            outcome = PARTIAL
            for f in stats.failures[:OBJECT_ERRORS_LOGGED]:
                self.errors.add(spec.name, "object", f"{f.key}: [{f.reason}] {f.message}")
            retry_in = None
            if set(stats.failures_by_reason) <= retryable_reasons():
                # every failure may pass (5xx, resets, throttling, a corrupted transfer): tried again after
                # the backoff, as a failed run is, not left until the schedule's next run (an hour away, say)
                self.failures += 1
                retry_in = min(self.settings.backoff_max, self.settings.backoff_initial * 2 ** (self.failures - 1))
                self.retry_at = self.clock() + timedelta(seconds=retry_in)
            log.error("job run finished with failures", job=spec.name, failed=stats.failed_objects,
                      reasons=dict(stats.failures_by_reason),
                      retry_in_s=None if retry_in is None else round(retry_in, 1))
        else:
            outcome = SUCCESS
            self.failures = 0
            self.last_success = now
            self.overdue = False
            log.info("job run finished", job=spec.name, objects=stats.done_objects, bytes=stats.done_bytes,
                     skipped=stats.skipped_objects, deleted=stats.deleted_objects,
                     seconds=round(stats.elapsed, 3))
        self.next_run = self.schedule.next_run(self.clock(), self.last_start)
        result = RunResult(started=started, finished=now, outcome=outcome, trigger=reason,
                           objects=stats.done_objects, bytes=stats.done_bytes, skipped=stats.skipped_objects,
                           failed=stats.failed_objects, deleted=stats.deleted_objects,
                           error=None if error is None else (str(error) or type(error).__name__),
                           interrupted_by=interrupted_by, journal_job=stats.job_id, resumed=stats.resumed,
                           id=run, report=report)
        self.results.append(result)
        self.totals.runs[outcome] += 1
        if self.on_result is not None:
            self.on_result(self, result)
        return result

    async def _stop_at_window_end(self) -> None:
        while True:
            now = self.clock()
            if not self.windows.is_open(now):
                log.info("window closed: pausing the run at a clean point", job=self.name)
                self._interrupt("window")
                return
            change = self.windows.next_change(now)
            left = (change - now).total_seconds() if change else MAX_SLEEP
            # at most a second late: the clock may jump (suspend, a changed time zone)
            await anyio.sleep(min(WINDOW_POLL, max(0.05, left)))

    async def _watch(self) -> None:
        """Filesystem events under a local source trigger a run (debounced)."""
        from watchfiles import awatch

        path = self.runner.watch_path()
        if path is None:
            return
        while True:
            if not os.path.isdir(path):
                await anyio.sleep(WATCH_RETRY)
                continue
            try:
                self.watching = True
                async for _changes in awatch(path, debounce=int(self.spec.debounce * 1000), step=50,
                                             watch_filter=_watch_filter, rust_timeout=1000, yield_on_timeout=False):
                    self.trigger("watch")
            except Exception as exc:  # noqa: BLE001 - the directory went away, or inotify ran out of watches
                self.errors.add(self.name, "watch", f"watching {path}: {exc}")
                log.warning("watch failed: relying on the reconcile runs until it is back", job=self.name,
                            path=path, error=str(exc))
            finally:
                self.watching = False
            await anyio.sleep(WATCH_RETRY)

    # -- what the API and the service ask ------------------------------------
    def trigger(self, reason: str) -> None:
        """Ask for a run as soon as one may start (kept while one runs)."""
        if self.pending is None or self.pending == "schedule":
            self.pending = reason
        self._wake.set()

    def poke(self) -> None:
        """Look at the clock again now (after it moved, or a window changed)."""
        self._wake.set()

    def start(self) -> str:
        if self.stats is not None:
            return ALREADY_RUNNING
        if not self.windows.is_open(self.clock()):
            return OUTSIDE_WINDOWS  # nothing would start: say so (the API gives the next window)
        self._state_changed = self._state_changed or self.held is not None
        self.held = None
        self.retry_at = None
        self.trigger("manual")
        return "started"

    def pause(self) -> str:
        if self.held == "paused":
            return ALREADY_PAUSING if self.stop is not None else ALREADY_PAUSED
        self.held = "paused"
        self._state_changed = True
        if self.stop is not None:
            self._interrupt("pause")
            self.state, self.state_detail = JobState.PAUSING, "finishing the transfers in flight"
        else:
            self._idle_state()
        self._wake.set()
        return str(self.state)

    def resume(self) -> str:
        if self.held is None:
            return NOT_PAUSED
        was = self.held
        self.held = None
        self._state_changed = True
        last = self.results[-1] if self.results else None
        if was == "paused" or (last is not None and last.outcome in (INTERRUPTED, CANCELLED)):
            self.pending = self.pending or "resume"
        if self.stats is None:
            self._idle_state()  # the answer states the state that results
        self._wake.set()
        return "resumed"

    def cancel(self) -> str:
        self.held = "cancelled"
        self._state_changed = True
        self.pending = None
        self.retry_at = None
        running = self.stop is not None
        if running:
            self._interrupt("cancel", hard=True)
        else:
            self._idle_state()
        self._wake.set()
        return "cancelling" if running else "cancelled"

    def drain(self) -> None:
        """Stop starting runs; stop the one in progress gracefully."""
        self.closing = True
        if self.stop is not None:
            self._interrupt("drain")
        self._wake.set()

    def abort(self) -> None:
        """After the drain timeout: abort the transfers still in flight."""
        if self.stop is not None:
            self._interrupt("drain", hard=True)

    def _interrupt(self, reason: str, hard: bool = False) -> None:
        assert self.stop is not None
        self.stop_reason = self.stop_reason or reason
        if hard:
            self.stop_reason = reason
            self.stop.request_hard()
        else:
            self.stop.request_graceful()

    def check_overdue(self, now: float) -> None:
        """Log an error (again every expected interval) while no run has succeeded for too long."""
        expected = self.spec.expected()
        if expected is None or self.held is not None:
            self.overdue = False
            return
        since = self.last_success or self.created
        if now - since <= expected:
            self.overdue = False
            return
        if not self.overdue or now - self._alerted >= expected:
            self._alerted = now
            message = (f"no successful run for {now - since:.0f} s (expected within {expected:.0f} s)")
            self.errors.add(self.name, "overdue", message)
            log.error("job overdue", job=self.name, expected_interval_s=expected,
                      last_success=self.last_success, state=str(self.state))
        self.overdue = True

    def next_start(self, now: datetime) -> datetime | None:
        """When the next run can really start: its schedule (or retry), but not before a window opens."""
        if self.held:
            return None
        t = self.retry_at if self.retry_at is not None else self._next_wake(now)
        if self.pending is not None and self.stats is None:
            t = now  # wanted now (a resume, a manual start, a missed window)
        if t is not None and not self.windows.always and not self.windows.is_open(max(t, now)):
            t = self.windows.next_open(max(t, now))
        return t

    def tick(self, now: float) -> None:
        self.throughput.tick(now, self.stats.moved_bytes if self.stats is not None else 0)

    def snapshot(self, *, detail: bool = False) -> dict[str, Any]:
        """The job as the API and the dashboard show it."""
        spec = self.spec
        stats = self.stats
        rate = self.throughput.recent_rate()
        nxt = self.next_start(self.clock())
        out: dict[str, Any] = {
            "name": spec.name, "kind": spec.kind, "source": spec.source, "dest": spec.dest,
            "state": str(self.state), "state_detail": self.state_detail,
            "trigger": self.trigger_reason if stats is not None else None,
            "schedule": {"interval_s": spec.interval, "cron": spec.cron, "windows": list(spec.windows),
                         "continuous": spec.continuous, "watching": self.watching,
                         "window_open": self.windows.is_open(self.clock())},
            "next_run": nxt.isoformat(timespec="seconds") if nxt is not None and not self.held else None,
            # the same as Unix time: next_run is in the daemon's local time, which a browser may not share
            "next_run_at": nxt.timestamp() if nxt is not None and not self.held else None,
            "held": self.held,
            "pending": self.pending,
            "bwlimit": self.runner.bandwidth_now(),
            "progress": progress(stats, rate) if stats is not None else None,
            "run_id": self.run_id if stats is not None else None,
            "failures_in_a_row": self.failures,
            "last_success": self.last_success,
            "overdue": self.overdue,
            "expected_interval_s": spec.expected(),
            "last_result": self.results[-1].as_dict() if self.results else None,
            "errors": [e.as_dict() for e in self.errors.recent(spec.name, 5)],
        }
        if detail:
            out["results"] = [r.as_dict() for r in reversed(self.results)]
            out["throughput"] = [[round(t, 2), round(r, 1)] for t, r in self.throughput.samples]
            out["totals"] = {"objects": self.totals.objects, "bytes": self.totals.bytes,
                             "runs": dict(self.totals.runs)}
        return out


def _watch_filter(_change: Any, path: str) -> bool:
    # our own temporary files (a destination inside the source) are not changes
    return not os.path.basename(path).startswith(".vertexflow-tmp-")


def _finished_its_work(stats: JobStats) -> bool:
    """A run stopped (a window closing, a pause, a drain) after it had done everything it had to."""
    return (stats.listing_done and not stats.failed_objects and stats.planned_deletes <= stats.deleted_objects
            and stats.done_objects + stats.skipped_objects >= stats.listed_objects)
