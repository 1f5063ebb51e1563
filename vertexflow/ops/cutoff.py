"""``--max-transfer`` and ``--max-duration``: a run that stops cleanly at a limit, as rclone's ``--cutoff-mode``.

A :class:`Cutoff` watches the job's counters while it runs. Once the bytes
moved reach ``max_transfer`` or the run has lasted ``max_duration``, the
limit is *reached*: no further object starts, the listing stops, and what is
in flight

* ``hard`` (rclone's default): is aborted at once (a backend cleans up what
  it began: a temporary file, a multipart upload);
* ``soft``: finishes;
* ``cautious``: finishes, and no object starts whose size would take the bytes
  of the objects started past ``max_transfer`` (for ``max_duration``, whose
  objects' times are not known in advance, as ``soft``).

Objects not started stay planned in the journal: the same command again
continues the job (the finished objects are skipped as ever). A run stopped
at a limit deletes nothing (``sync --delete``), and exits with its own status
(:mod:`vertexflow.cli.run`: 8 for ``--max-transfer``, 10 for ``--max-duration``,
rclone's numbers).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio

from ..logs import get_logger
from ..pipeline.progress import human_bytes
from ..pipeline.stats import JobStats

log = get_logger(__name__)

#: seconds between two looks at the bytes moved (hard mode aborts what is in flight at most this late)
WATCH_INTERVAL = 0.05
MAX_TRANSFER, MAX_DURATION = "max-transfer", "max-duration"


class Cutoff:
    """One run's limits, as counters read by the engine; the job's stats report it as ``cutoff``."""

    def __init__(self, stats: JobStats, *, max_bytes: int | None, max_seconds: float | None, mode: str,
                 max_transfer: str | None = None, max_duration: str | None = None) -> None:
        self.stats = stats
        self.max_bytes, self.max_seconds, self.mode = max_bytes, max_seconds, mode
        #: the limits as given, for messages
        self.given = {MAX_TRANSFER: max_transfer, MAX_DURATION: max_duration}
        self.deadline = time.monotonic() + max_seconds if max_seconds is not None else None
        #: which limit stopped the run (None: not reached)
        self.reached: str | None = None
        #: cautious: the bytes of the objects started
        self.started_bytes = 0
        #: objects listed (queued) and left unstarted, and objects in flight aborted (hard)
        self.not_started = 0
        self.aborted = 0
        self._scopes: set[anyio.CancelScope] = set()

    @classmethod
    def of(cls, settings: Any, stats: JobStats) -> Cutoff | None:
        """The cutoff ``settings`` (:class:`~vertexflow.ops.spec.TransferSettings`) ask for, or None."""
        max_bytes, max_seconds = settings.limits()
        if max_bytes is None and max_seconds is None:
            return None
        cutoff = cls(stats, max_bytes=max_bytes, max_seconds=max_seconds, mode=settings.cutoff_mode,
                     max_transfer=settings.max_transfer, max_duration=settings.max_duration)
        stats.reporters["cutoff"] = cutoff
        return cutoff

    # -- what the engine asks --------------------------------------------
    def check(self) -> str | None:
        """Whether a limit is reached now (and which)."""
        if self.reached is None:
            if self.max_bytes is not None and self.stats.moved_bytes >= self.max_bytes:
                self._reach(MAX_TRANSFER)
            elif self.deadline is not None and time.monotonic() >= self.deadline:
                self._reach(MAX_DURATION)
        return self.reached

    def may_start(self, size: int, objects: int = 1) -> bool:
        """Whether an object (or a batch of ``objects``) of ``size`` bytes may start; counts those that may not."""
        if self.check() is None and self.mode == "cautious" and self.max_bytes is not None \
                and self.started_bytes + size > self.max_bytes:
            self._reach(MAX_TRANSFER)
        if self.reached is not None:
            self.not_started += objects
            return False
        self.started_bytes += size
        return True

    @contextmanager
    def in_flight(self, objects: int = 1) -> Iterator[None]:
        """Around one transfer: a hard cutoff cancels it (the cancellation ends here, not the job)."""
        scope = anyio.CancelScope()
        self._scopes.add(scope)
        try:
            with scope:
                yield
        finally:
            self._scopes.discard(scope)
            if scope.cancel_called:
                self.aborted += objects

    async def watch(self) -> None:
        """Run beside the transfers: notice a limit while objects are in flight (hard mode aborts them)."""
        while self.check() is None:
            wait = WATCH_INTERVAL
            if self.deadline is not None:
                wait = max(0.0, min(wait, self.deadline - time.monotonic()))
            await anyio.sleep(wait)
        if self.mode == "hard":
            for scope in list(self._scopes):
                scope.cancel()

    def _reach(self, which: str) -> None:
        self.reached = which
        log.warning("limit reached: starting no more transfers", limit=which, given=self.given[which],
                    mode=self.mode, bytes_moved=self.stats.moved_bytes)

    # -- the summary's ``cutoff`` entry ----------------------------------
    def as_dict(self) -> dict[str, Any]:
        return {"max_transfer": self.given[MAX_TRANSFER], "max_duration": self.given[MAX_DURATION],
                "mode": self.mode, "reached": self.reached, "not_started": self.not_started,
                "aborted": self.aborted}

    def describe(self) -> str:
        limits = ", ".join(f"--{n} {v}" for n, v in self.given.items() if v is not None)
        if self.reached is None:
            return f"not reached ({limits}, {self.mode})"
        moved = f"{human_bytes(self.stats.moved_bytes)} moved"
        left = f"{self.not_started:,} queued not started" + (f", {self.aborted:,} aborted" if self.aborted else "")
        return (f"--{self.reached} {self.given[self.reached]} reached ({self.mode}, {moved}): {left}; "
                "run the same command again to continue")
