"""CPU work of a stage (hashing, compressing) kept off the event loop.

Each stage has its own :class:`CpuLane`, a bounded set of worker threads: the
stage's concurrency setting. hashlib, zlib, zstandard and blake3 release the
GIL, so two lanes (or two threads of one) use both cores of a 2-core machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import anyio

T = TypeVar("T")

#: A thread hand-off costs ~100-250 µs on a 2-core machine: work expected to
#: take less than this runs on the event loop, where it costs less than the hop.
INLINE_SECONDS = 200e-6


def default_threads() -> int:
    return os.cpu_count() or 2


class CpuLane:
    """Runs a stage's CPU work in at most ``threads`` worker threads at once."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads or default_threads()
        self._limiter = anyio.CapacityLimiter(self.threads)

    async def run(self, fn: Callable[..., T], *args: object, seconds: float) -> T:
        """``fn(*args)``, expected to take ``seconds``: in a worker thread unless that is too short to be worth it."""
        if seconds < INLINE_SECONDS:
            return fn(*args)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)
