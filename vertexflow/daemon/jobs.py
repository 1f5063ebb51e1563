"""What the daemon knows about a job: its state, its last results, its recent errors.

All of it is bounded: a job keeps its last ``history`` results and a few
minutes of throughput samples; the daemon keeps its last ``errors_kept``
errors. Memory does not grow with the months a daemon runs.

States (:class:`JobState`)::

    idle       nothing scheduled: runs only on demand (or filesystem events)
    scheduled  waiting for its next run (``next_run``)
    running    a run is in progress
    pausing    paused by the user while a run was in progress: the transfers in flight are finishing
    paused     held by the user (``pause``), or outside its windows with work waiting
    failed     the last run failed; retried after a backoff (``retry_at``)
    cancelled  the user cancelled it: no run until ``start`` or ``resume``
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from ..pipeline.stats import JobStats


class JobState(StrEnum):
    IDLE = "idle"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: outcomes of a run
SUCCESS, PARTIAL, FAILED, INTERRUPTED, CANCELLED = "success", "partial", "failed", "interrupted", "cancelled"

#: what a control request answers when it changes nothing (the API answers them 409)
ALREADY_RUNNING, ALREADY_PAUSED, ALREADY_PAUSING, NOT_PAUSED = (
    "already running", "already paused", "already pausing", "not paused")
OUTSIDE_WINDOWS = "outside its windows"
REFUSED = (ALREADY_RUNNING, ALREADY_PAUSED, ALREADY_PAUSING, NOT_PAUSED, OUTSIDE_WINDOWS)


@dataclass(frozen=True, slots=True)
class RunResult:
    """One finished run."""

    started: float  # wall-clock seconds
    finished: float
    outcome: str
    trigger: str  # schedule | manual | watch | reconcile | retry | window | resume | startup
    objects: int
    bytes: int
    skipped: int
    failed: int
    deleted: int
    error: str | None = None
    interrupted_by: str | None = None
    journal_job: int | None = None
    resumed: bool = False
    #: the run's id (:func:`vertexflow.daemon.reports.run_id`), and whether its per-object report was kept
    #: (``GET /api/jobs/{name}/runs/{id}/report``)
    id: int | None = None
    report: bool = False

    @property
    def seconds(self) -> float:
        return self.finished - self.started

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 3)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        """The result :meth:`as_dict` gave (the daemon's journal keeps them)."""
        return cls(**{f: data[f] for f in cls.__dataclass_fields__ if f in data})


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    time: float
    job: str
    kind: str  # run | object | overdue | config | daemon
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ErrorLog:
    """The daemon's recent errors, newest last, at most ``size`` of them."""

    def __init__(self, size: int) -> None:
        self.events: deque[ErrorEvent] = deque(maxlen=size)

    def add(self, job: str, kind: str, message: str) -> None:
        self.events.append(ErrorEvent(time.time(), job, kind, message))

    def recent(self, job: str | None = None, limit: int = 50) -> list[ErrorEvent]:
        events = [e for e in self.events if job is None or e.job == job]
        return events[-limit:]


class Throughput:
    """Bytes per second over the last few minutes, one sample per tick (bounded)."""

    def __init__(self, seconds: int = 300) -> None:
        self.samples: deque[tuple[float, float]] = deque(maxlen=seconds)
        self._last: tuple[float, int] | None = None

    def tick(self, now: float, moved: int) -> None:
        """``moved``: the running job's bytes so far (0 when none runs)."""
        if self._last is not None and now > self._last[0]:
            t0, b0 = self._last
            rate = max(0, moved - b0) / (now - t0) if moved >= b0 else moved / (now - t0)
            self.samples.append((now, rate))
        self._last = (now, moved)

    def recent_rate(self, window: float = 10.0) -> float:
        if not self.samples:
            return 0.0
        end = self.samples[-1][0]
        rates = [r for t, r in self.samples if t > end - window]
        return sum(rates) / len(rates) if rates else 0.0


@dataclass
class Totals:
    """Counters over every finished run since the daemon started (for /metrics)."""

    objects: int = 0
    bytes: int = 0
    retries: int = 0
    deleted: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    runs: Counter[str] = field(default_factory=Counter)

    def add(self, stats: JobStats) -> None:
        self.objects += stats.done_objects
        self.bytes += stats.moved_bytes  # as the bytes move (a live run adds them the same way)
        self.retries += stats.retries
        self.deleted += stats.deleted_objects
        self.failures.update(stats.failures_by_reason)

    def with_live(self, stats: JobStats | None) -> Totals:
        """These totals plus a run still in progress."""
        if stats is None:
            return self
        out = Totals(self.objects, self.bytes, self.retries, self.deleted, Counter(self.failures), self.runs)
        out.add(stats)
        return out


def progress(stats: JobStats, rate: float) -> dict[str, Any]:
    """A running job's progress as the API and dashboard show it."""
    total = stats.listed_bytes
    done = stats.done_bytes
    moving = stats.progress_bytes  # bytes count as they move: a large object's progress is not one step
    remaining = max(0, total - moving)
    eta = remaining / rate if stats.listing_done and rate > 0 else None
    return {
        "listed_objects": stats.listed_objects, "listed_bytes": total, "listing_done": stats.listing_done,
        "done_objects": stats.done_objects, "done_bytes": done, "moved_bytes": stats.moved_bytes,
        "skipped_objects": stats.skipped_objects, "failed_objects": stats.failed_objects,
        "deleted_objects": stats.deleted_objects, "in_flight": stats.in_flight, "retries": stats.retries,
        "fraction": (moving / total) if total else (1.0 if stats.listing_done else 0.0),
        "rate_bytes_per_s": round(rate, 1), "eta_seconds": round(eta, 1) if eta is not None else None,
        "seconds": round(stats.elapsed, 3),
    }
