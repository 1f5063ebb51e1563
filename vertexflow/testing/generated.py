"""A backend whose listing is generated, not stored: for planning at scale.

``GeneratedListing(count)`` lists ``count`` objects with deterministic keys,
sizes and mtimes, in key order, without any data behind them. Two of them
with different ``changed_every`` model a source and a destination that differ
in a known number of objects. Reading or writing raises: only planning
(listing, diffing) can use it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta

from ..backends.base import Backend
from ..errors import NotFound
from ..model import BodyFactory, Features, ObjectInfo

BASE_TIME = datetime(2024, 1, 1, tzinfo=UTC)


class GeneratedListing(Backend):
    scheme = "generated"
    features = Features(sorted_listing=True, preserves_mtime=True)

    def __init__(self, count: int, *, changed_every: int = 0, page: int = 1000) -> None:
        self.count = count
        self.changed_every = changed_every
        self.page = page

    def describe(self) -> str:
        return f"generated:{self.count}"

    def _info(self, i: int) -> ObjectInfo:
        changed = bool(self.changed_every) and i % self.changed_every == 0
        size = 1024 + (i * 7919) % 65536 + (1 if changed else 0)
        return ObjectInfo(key=f"tenant{i % 16:02d}/obj{i:09d}", size=size,
                          mtime=BASE_TIME + timedelta(seconds=i), version=f"v{i}:{size}")

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:  # type: ignore[override]
        # keys sort by tenant first, so generate tenant by tenant
        for tenant in range(16):
            for i in range(tenant, self.count, 16):
                if i // 16 % self.page == 0:
                    self.requests += 1
                info = self._info(i)
                if info.key.startswith(prefix):
                    yield info

    async def stat(self, key: str) -> ObjectInfo:
        raise NotFound("generated listings have no objects to stat", backend=self.describe(), key=key)

    def open(self, key: str, *, offset: int = 0, length: int | None = None,
             if_version: str | None = None) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        raise NotFound("generated listings have no content", backend=self.describe(), key=key)

    async def put(self, info: ObjectInfo, body: BodyFactory) -> ObjectInfo:
        raise NotImplementedError("generated listings are read-only")

    async def delete(self, key: str) -> None:
        raise NotImplementedError("generated listings are read-only")
