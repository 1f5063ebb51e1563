"""Adaptive concurrency per remote: AIMD on the requests in flight.

When a store answers "slow down" (:class:`~vertexflow.errors.Throttled`:
HTTP 429, 503, S3 ``SlowDown``), the number of requests allowed in flight
to it is cut by half (multiplicative decrease). Backends retry idempotent
single requests themselves (a 429 on a Yandex.Disk folder creation, an S3
stat) and count those retries in ``Backend.retries``: a request during which
that count rose was pushed back too, and cuts the same way. Each success adds
``1 / limit`` (additive increase: one more per round of ``limit`` successes),
up to the configured maximum. One burst of throttling, seen by many requests
already in flight, cuts once: only a request started after the last cut can
cut again (as TCP reacts once per round trip).

A "request" is one backend operation: a ``put``, an ``open`` stream for as
long as it is read, a ``stat``, a ``delete``, a server-side copy. The HTTP
requests inside one (an S3 multipart upload's parts) are bounded by the
backend's own settings. Listings are not limited (one stream per job).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio

from ..backends.base import Backend, UploadCheckpoint
from ..errors import Throttled
from ..model import BodyFactory, ObjectInfo, Pace
from .base import BackendWrapper

#: Cut to this share of the limit on throttling: halving is TCP's choice, and
#: recovers from a 16-to-1 collapse in ~4 cuts rather than oscillating.
DECREASE = 0.5
#: Added per round of successes.
INCREASE = 1.0


class AIMDLimiter:
    """How many requests may be in flight to one remote; adapts to throttling."""

    def __init__(self, maximum: int, *, minimum: int = 1, decrease: float = DECREASE,
                 increase: float = INCREASE) -> None:
        if maximum < minimum or minimum < 1:
            raise ValueError("need 1 <= minimum <= maximum")
        self.maximum, self.minimum = maximum, minimum
        self.decrease, self.increase = decrease, increase
        self.limit = float(maximum)
        self.in_flight = 0
        self.lowest = float(maximum)
        self.peak_in_flight = 0
        self.throttled = 0
        self.cuts = 0
        self._epoch = 0  # bumped by each cut
        self._waiters: list[anyio.Event] = []

    @property
    def allowed(self) -> int:
        return max(self.minimum, int(self.limit))

    @asynccontextmanager
    async def slot(self, pushback: Callable[[], int] | None = None) -> AsyncIterator[None]:
        """Hold one place in flight; a :class:`Throttled` raised inside cuts the limit.

        ``pushback()`` counts the store's refusals that were retried out of
        sight; a request during which it rose cuts the limit too.
        """
        while self.in_flight >= self.allowed:
            event = anyio.Event()
            self._waiters.append(event)
            await event.wait()
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        epoch = self._epoch
        before = pushback() if pushback else 0
        try:
            yield
        except Throttled:
            self._cut(epoch)
            raise
        else:
            if pushback and pushback() > before:
                self._cut(epoch)
            else:
                self.limit = min(float(self.maximum), self.limit + self.increase / self.limit)
        finally:
            self.in_flight -= 1
            self._wake()

    def _cut(self, epoch: int) -> None:
        self.throttled += 1
        if epoch != self._epoch:
            return  # started before the last cut: that cut already answered this congestion
        self._epoch += 1
        self.cuts += 1
        self.limit = max(float(self.minimum), self.limit * self.decrease)
        self.lowest = min(self.lowest, self.limit)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for event in waiters:
            event.set()  # each looks at the limit again; those still over it wait anew

    def as_dict(self) -> dict[str, Any]:
        return {"max": self.maximum, "limit": round(self.limit, 2), "lowest": round(self.lowest, 2),
                "peak_in_flight": self.peak_in_flight, "throttled": self.throttled, "cuts": self.cuts}

    def describe(self) -> str:
        if not self.throttled:
            return f"up to {self.peak_in_flight} in flight (max {self.maximum}), never throttled"
        return (f"throttled {self.throttled} times: in flight cut to {self.lowest:.0f}, now {self.limit:.1f} "
                f"(max {self.maximum}, peak {self.peak_in_flight})")


class AdaptiveBackend(BackendWrapper):
    """Every request to ``inner`` takes a slot of ``limiter``."""

    def __init__(self, inner: Backend, limiter: AIMDLimiter) -> None:
        super().__init__(inner)
        self.limiter = limiter

    def _slot(self) -> AbstractAsyncContextManager[None]:
        return self.limiter.slot(lambda: self.inner.retries)

    async def stat(self, key: str) -> ObjectInfo:
        async with self._slot():
            return await self.inner.stat(key)

    def open(self, key: str, *, offset: int = 0, length: int | None = None,
             if_version: str | None = None) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        return self._open(key, offset, length, if_version)

    @asynccontextmanager
    async def _open(self, key: str, offset: int, length: int | None,
                    if_version: str | None) -> AsyncIterator[AsyncIterator[bytes]]:
        async with self._slot():
            async with self.inner.open(key, offset=offset, length=length, if_version=if_version) as chunks:
                yield chunks

    async def read_whole(self, key: str, *, limit: int, if_version: str | None = None,
                         on_bytes: Callable[[int], None] | None = None) -> bytes:
        if not self.features.whole_reads:  # joins what open() streams, which takes the slot
            return await super().read_whole(key, limit=limit, if_version=if_version, on_bytes=on_bytes)
        async with self._slot():
            return await self.inner.read_whole(key, limit=limit, if_version=if_version, on_bytes=on_bytes)

    async def read_whole_described(self, key: str, *, limit: int, if_version: str | None = None,
                                   on_bytes: Callable[[int], None] | None = None) -> tuple[bytes, ObjectInfo | None]:
        if not self.features.whole_reads:  # read_whole joins what open() streams, which takes the slot
            return await super().read_whole_described(key, limit=limit, if_version=if_version, on_bytes=on_bytes)
        async with self._slot():
            return await self.inner.read_whole_described(key, limit=limit, if_version=if_version, on_bytes=on_bytes)

    async def put(self, info: ObjectInfo, body: BodyFactory, *, checkpoint: UploadCheckpoint | None = None,
                  pace: Pace | None = None) -> ObjectInfo:
        async with self._slot():
            return await self.inner.put(info, body, checkpoint=checkpoint, pace=pace)

    async def delete(self, key: str) -> None:
        async with self._slot():
            await self.inner.delete(key)

    async def set_description(self, key: str, info: ObjectInfo, *, if_version: str | None = None) -> bool:
        if not self.features.description_in_place:
            return await super().set_description(key, info, if_version=if_version)
        async with self._slot():
            return await self.inner.set_description(key, info, if_version=if_version)

    async def server_copy(self, source: Backend, src: ObjectInfo, dst_key: str) -> ObjectInfo:
        async with self._slot():
            return await super().server_copy(source, src, dst_key)
