"""Blocking calls that are usually short: run on the event loop while they stay short.

Why: handing a call to a worker thread costs the event loop about as much as
writing a small file into the page cache (a queue put and a thread wake-up,
the answer's hand-back, and the GIL passed back and forth around each of the
file's system calls), so a small write made on the loop is cheaper than
handing it off (measurements: ``benchmarks/NOTES.md``).

The catch is a slow disk (a network filesystem, a device busy flushing): a
call that blocks the loop stalls every transfer and the progress display with
it. So each inline call is timed; when their moving average passes
``slow_s``, or one call takes longer than ``stall_s``, calls go to worker
threads for ``cool_down_s`` seconds, then inline is tried afresh. A lone
outlier does not move the average much; a disk that is slow for good costs
the loop a few dozen slow calls per cool-down.

Contract: ``await ShortCalls(limiter).run(fn, *args)`` returns ``fn(*args)`` or
raises what it raised, like ``anyio.to_thread.run_sync(fn, *args, limiter=...)``.
``fn`` must be safe to run in either place (no event-loop calls, no waiting
on other tasks) and should be meant to be short; callers decide by size.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.lowlevel

from ..logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")

#: moving average of inline call time above which calls go to threads (far above a small file's write)
SLOW_S = 0.002
#: one inline call longer than this sends calls to threads at once
STALL_S = 0.25
#: how long calls stay in threads after that
COOL_DOWN_S = 10.0
#: weight of the newest call in the moving average (about the last 64 calls count)
_WEIGHT = 1 / 64


class ShortCalls:
    def __init__(self, limiter: anyio.CapacityLimiter, *, slow_s: float = SLOW_S, stall_s: float = STALL_S,
                 cool_down_s: float = COOL_DOWN_S) -> None:
        self._limiter = limiter
        self.slow_s, self.stall_s, self.cool_down_s = slow_s, stall_s, cool_down_s
        self._average = 0.0
        self._threads_until = 0.0
        #: calls made on the loop and in threads (read by tests)
        self.inline_calls = self.thread_calls = 0

    @property
    def inline(self) -> bool:
        return time.monotonic() >= self._threads_until

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if not self.inline:
            self.thread_calls += 1
            return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        await anyio.lowlevel.checkpoint_if_cancelled()  # as a thread call would, before it starts
        self.inline_calls += 1
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self._timed(time.perf_counter() - started)

    def _timed(self, took: float) -> None:
        self._average += (took - self._average) * _WEIGHT
        if self._average > self.slow_s or took > self.stall_s:
            log.info("local.slow_calls", last_s=round(took, 4), average_s=round(self._average, 4),
                     note=f"blocking calls go to threads for {self.cool_down_s:g} s")
            self._threads_until = time.monotonic() + self.cool_down_s
            self._average = 0.0
