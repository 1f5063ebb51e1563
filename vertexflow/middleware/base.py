"""The base of every backend decorator: delegate everything, override what changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import replace

from ..backends.base import Backend, UploadCheckpoint
from ..errors import NotFound
from ..model import BodyFactory, ObjectInfo


def unwrap(backend: Backend) -> Backend:
    """The real backend under any number of decorators."""
    while isinstance(backend, BackendWrapper):
        backend = backend.inner
    return backend


class BackendWrapper(Backend):
    """Delegates every call to ``inner``.

    Hides ``local_path`` (the engine's local fast paths would bypass the
    decorator); subclasses adjust the rest of :attr:`features` to what they do.
    """

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.scheme = inner.scheme  # type: ignore[misc]
        self.features = replace(inner.features, local_path=False)

    @property  # type: ignore[override]
    def requests(self) -> int:
        return self.inner.requests

    @property  # type: ignore[override]
    def retries(self) -> int:
        return self.inner.retries

    def describe(self) -> str:
        return self.inner.describe()

    async def check(self, *, write: bool = False) -> None:
        try:
            await self.inner.check(write=write)
        except NotFound:
            # A local directory not made yet is empty, not missing: jobs tell the two
            # apart by the local_path feature, which this class hides.
            if write or not unwrap(self.inner).features.local_path:
                raise

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        return self.inner.list(prefix)

    async def stat(self, key: str) -> ObjectInfo:
        return await self.inner.stat(key)

    def open(self, key: str, *, offset: int = 0, length: int | None = None,
             if_version: str | None = None) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        return self.inner.open(key, offset=offset, length=length, if_version=if_version)

    async def put(self, info: ObjectInfo, body: BodyFactory, *,
                  checkpoint: UploadCheckpoint | None = None) -> ObjectInfo:
        return await self._put(self.inner, info, body, checkpoint)

    @staticmethod
    async def _put(target: Backend, info: ObjectInfo, body: BodyFactory,
                   checkpoint: UploadCheckpoint | None) -> ObjectInfo:
        # the checkpoint goes only to backends that declare resumable uploads
        if checkpoint is None:
            return await target.put(info, body)
        return await target.put(info, body, checkpoint=checkpoint)  # type: ignore[call-arg]

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def server_copy(self, source: Backend, src: ObjectInfo, dst_key: str) -> ObjectInfo:
        return await self.inner.server_copy(unwrap(source), src, dst_key)

    def same_store(self, other: Backend) -> bool:
        return self.inner.same_store(unwrap(other))

    async def free_space(self) -> int | None:
        return await self.inner.free_space()

    async def aclose(self) -> None:
        await self.inner.aclose()
