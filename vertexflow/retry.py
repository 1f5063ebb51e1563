"""Retry with exponential backoff and full jitter, bounded in count and time.

Used by the engine around whole-object transfers and by backends around
idempotent single requests (a listing page, a stat, a mkdir). Only errors
whose ``retryable`` attribute is true are retried; a server's Retry-After
hint (``TransientError.retry_after``) is honoured, capped at ``max_delay``.
"""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio

from .errors import VertexflowError

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    # 5 attempts over ~10 s rides out a server restart or a burst of 429s
    # without making a dead endpoint hang a job for minutes.
    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 10.0
    #: give up once this many seconds have passed since the first attempt
    deadline: float = 120.0

    def delay(self, attempt: int, hint: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        if hint is not None and hint >= 0:
            return min(hint, self.max_delay)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


NO_RETRY = RetryPolicy(attempts=1)


def release_frames(exc: BaseException) -> None:
    """Drop the local variables of the finished frames an error passed through.

    A failed transfer's traceback keeps its frames, and with them the
    buffers they held (a multipart upload: every part in flight, 8 MiB each);
    tracebacks and the exceptions chained to them form reference cycles that
    only the cyclic collector frees, late. Under a failing server that held
    over 1 GB. Called where an error is handled for good: before a retry's
    wait, and when an object is reported failed. Frames still running (the
    handler's own) are left as they are; file names and lines stay for logs.
    """
    seen: set[int] = set()
    pending = [exc]
    while pending:
        e = pending.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)
        pending.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        if isinstance(e, BaseExceptionGroup):
            pending.extend(e.exceptions)


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, VertexflowError) and exc.retryable


async def retry_call(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
    at_once: tuple[type[BaseException], ...] = (),
) -> T:
    """Await ``fn()`` until it succeeds, fails permanently, or the policy runs out.

    ``on_retry(exc, attempt, delay)`` is called before each wait (for stats and
    logs). ``at_once``: errors raised without a retry though retryable (what
    they mean is the caller's). The last error is raised unchanged.
    """
    # time.monotonic, not anyio.current_time: this runs twice per object, and
    # anyio looks up the running event loop's library on every call
    start = time.monotonic()
    attempt = 1
    while True:
        try:
            return await fn()
        except Exception as exc:
            if not is_retryable(exc) or isinstance(exc, at_once) or attempt >= policy.attempts:
                raise
            delay = policy.delay(attempt, getattr(exc, "retry_after", None))
            if time.monotonic() + delay - start > policy.deadline:
                raise
            if on_retry is not None:
                on_retry(exc, attempt, delay)
            release_frames(exc)
            await anyio.sleep(delay)
            attempt += 1
