"""Counters of a running job, read by the progress display and the summary.

Memory stays flat: failures are counted by reason, and only the first
``MAX_FAILURES_KEPT`` are kept with their keys and messages (the count of the
rest is reported).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MAX_FAILURES_KEPT = 1000


@dataclass(slots=True)
class Failure:
    key: str
    reason: str
    message: str


@dataclass(slots=True)
class JobStats:
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    listed_objects: int = 0
    listed_bytes: int = 0
    listing_done: bool = False
    done_objects: int = 0
    done_bytes: int = 0
    #: bytes moved so far, including objects still in flight (for the rate)
    moved_bytes: int = 0
    skipped_objects: int = 0
    failed_objects: int = 0
    retries: int = 0
    server_side_copies: int = 0
    #: objects copied, by the route they took (vertexflow.ops.routes; batches of small local files:
    #: "local_batch" between local directories, "batch_read" to anywhere else)
    routes: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    failures_by_reason: Counter[str] = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    interrupted: bool = False
    fatal: str | None = None
    #: journal job id, and whether this run continued an interrupted one
    job_id: int | None = None
    resumed: bool = False
    #: requests sent to both backends (listing pages, HEADs, PUTs...)
    requests: int = 0
    planned_deletes: int = 0
    deleted_objects: int = 0
    #: deletes not done because some transfer failed
    deletes_skipped: int = 0
    #: what the job is doing, for a job of several steps (a restore: checking, then writing storage);
    #: None: a transfer, whose progress tells listing from transferring by itself
    phase: str | None = None
    #: counters of the stages and middleware around the backends (vertexflow.middleware.wrap):
    #: name -> an object with ``as_dict()`` and ``describe()``, reported under that name
    reporters: dict[str, Any] = field(default_factory=dict)

    def new_phase(self, name: str) -> None:
        """Count the next step of a job of several from zero, its totals too (a verify's fix, then its second
        look): progress shows each step by itself. The failures kept (keys and reasons) stay the job's."""
        self.phase = name
        self.listed_objects = self.listed_bytes = 0
        self.listing_done = False
        self.done_objects = self.done_bytes = self.moved_bytes = 0
        self.skipped_objects = self.failed_objects = 0

    def record_failure(self, key: str, exc: BaseException) -> None:
        reason = getattr(exc, "reason", type(exc).__name__)
        self.failed_objects += 1
        self.failures_by_reason[reason] += 1
        if len(self.failures) < MAX_FAILURES_KEPT:
            self.failures.append(Failure(key, reason, str(exc)))

    @property
    def progress_bytes(self) -> int:
        """Bytes moved so far, in flight included, never past what was listed once listing is done.

        What progress shows (bars, fractions, ETAs): it grows as the bytes
        move, not in steps as objects finish. A retried object's bytes count
        again while they move, hence the cap.
        """
        if self.listing_done and self.listed_bytes:
            return min(self.moved_bytes, self.listed_bytes)
        return self.moved_bytes

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def summary(self) -> dict[str, Any]:
        seconds = self.elapsed
        return {
            "objects": self.done_objects,
            "bytes": self.done_bytes,
            "skipped": self.skipped_objects,
            "failed": self.failed_objects,
            "listed": self.listed_objects,
            "seconds": round(seconds, 3),
            "mb_per_s": round(self.done_bytes / 1e6 / seconds, 2) if seconds > 0 else 0.0,
            "objects_per_s": round(self.done_objects / seconds, 1) if seconds > 0 else 0.0,
            "retries": self.retries,
            "server_side_copies": self.server_side_copies,
            "routes": dict(self.routes),
            "failures_by_reason": dict(self.failures_by_reason),
            "failures": [{"key": f.key, "reason": f.reason, "message": f.message} for f in self.failures],
            "failures_not_shown": max(0, self.failed_objects - len(self.failures)),
            "deleted": self.deleted_objects,
            "planned_deletes": self.planned_deletes,
            "deletes_skipped": self.deletes_skipped,
            "requests": self.requests,
            "job_id": self.job_id,
            "resumed": self.resumed,
            "interrupted": self.interrupted,
            "fatal_error": self.fatal,
            **{name: r.as_dict() for name, r in self.reporters.items()},
        }
