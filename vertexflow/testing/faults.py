"""Fault injection by wrapping a backend (never by patching a client).

:class:`FaultyBackend` delegates to a real backend and fails chosen calls,
so engine tests can see retries, per-object failures and aborts against real
storage. It hides the ``local_path`` feature so the engine goes through
``put``/``open`` where the faults are injected.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace

from ..backends.base import Backend
from ..errors import TransientError
from ..model import BodyFactory, ObjectInfo


def _transient(key: str) -> Exception:
    return TransientError("injected 503 Service Unavailable", backend="faulty", key=key)


class FaultyBackend(Backend):
    """Wraps ``inner``; the first ``put_failures`` puts of each key raise ``error(key)``."""

    scheme = "faulty"

    def __init__(self, inner: Backend, *, put_failures: int = 0,
                 error: Callable[[str], Exception] = _transient) -> None:
        self.inner = inner
        self.put_failures = put_failures
        self.error = error
        self.put_calls: dict[str, int] = {}
        self.features = replace(inner.features, local_path=False)

    def describe(self) -> str:
        return f"faulty({self.inner.describe()})"

    async def check(self, *, write: bool = False) -> None:
        await self.inner.check(write=write)

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        return self.inner.list(prefix)

    async def stat(self, key: str) -> ObjectInfo:
        return await self.inner.stat(key)

    def open(self, key: str, *, offset: int = 0, length: int | None = None,
             if_version: str | None = None) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        return self.inner.open(key, offset=offset, length=length, if_version=if_version)

    async def put(self, info: ObjectInfo, body: BodyFactory) -> ObjectInfo:
        n = self.put_calls[info.key] = self.put_calls.get(info.key, 0) + 1
        if n <= self.put_failures:
            raise self.error(info.key)
        return await self.inner.put(info, body)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def aclose(self) -> None:
        await self.inner.aclose()
