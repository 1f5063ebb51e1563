"""The base of every backend decorator: delegate everything, override what changes.

A decorator forwards the abilities of what it wraps (a local source behind a
bandwidth limit is still a local source), except ``direct_files``: the
engine's zero-copy routes would bypass the decorator. A subclass that changes
keys or bytes hides what no longer holds (:mod:`.stages`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from pathlib import Path

from ..backends.base import Backend, UploadCheckpoint
from ..errors import BackendError, NotFound
from ..model import BodyFactory, IncompleteUpload, ObjectInfo, Pace


def unwrap(backend: Backend) -> Backend:
    """The real backend under any number of decorators."""
    while isinstance(backend, BackendWrapper):
        backend = backend.inner
    return backend


class BackendWrapper(Backend):
    """Delegates every call to ``inner``, and declares the abilities of ``inner`` but ``direct_files``.

    Subclasses adjust :attr:`features` to what they do.
    """

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.scheme = inner.scheme  # type: ignore[misc]
        self.features = replace(inner.features, direct_files=False)

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
            # A local directory not made yet is empty, not missing (also behind stages, which hide its paths).
            if write or not unwrap(self.inner).features.local_path:
                raise

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        return self.inner.list(prefix)

    async def stat(self, key: str) -> ObjectInfo:
        return await self.inner.stat(key)

    def open(self, key: str, *, offset: int = 0, length: int | None = None,
             if_version: str | None = None) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        return self.inner.open(key, offset=offset, length=length, if_version=if_version)

    async def read_whole(self, key: str, *, limit: int, if_version: str | None = None,
                         on_bytes: Callable[[int], None] | None = None) -> bytes:
        if self.features.whole_reads:
            return await self.inner.read_whole(key, limit=limit, if_version=if_version, on_bytes=on_bytes)
        return await super().read_whole(key, limit=limit, if_version=if_version, on_bytes=on_bytes)

    async def read_whole_described(self, key: str, *, limit: int, if_version: str | None = None,
                                   on_bytes: Callable[[int], None] | None = None) -> tuple[bytes, ObjectInfo | None]:
        if self.features.whole_reads:
            return await self.inner.read_whole_described(key, limit=limit, if_version=if_version, on_bytes=on_bytes)
        return await super().read_whole_described(key, limit=limit, if_version=if_version, on_bytes=on_bytes)

    async def put(self, info: ObjectInfo, body: BodyFactory, *, checkpoint: UploadCheckpoint | None = None,
                  pace: Pace | None = None) -> ObjectInfo:
        return await self.inner.put(info, body, checkpoint=checkpoint, pace=pace)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def server_copy(self, source: Backend, src: ObjectInfo, dst_key: str) -> ObjectInfo:
        if not self.features.server_side_copy:
            return await super().server_copy(source, src, dst_key)
        return await self.inner.server_copy(unwrap(source), src, dst_key)

    def same_store(self, other: Backend) -> bool:
        return self.features.server_side_copy and self.inner.same_store(unwrap(other))

    async def free_space(self) -> int | None:
        return await self.inner.free_space()

    def local_path(self, key: str) -> Path:
        if not self.features.local_path:
            return super().local_path(key)
        return self.inner.local_path(key)

    async def file_sha256(self, key: str) -> str:
        if not self.features.local_path:
            return await super().file_sha256(key)
        return await self.inner.file_sha256(key)

    async def public_link(self, key: str, *, expires: int) -> str:
        if not self.features.public_links:
            return await super().public_link(key, expires=expires)
        return await self.inner.public_link(key, expires=expires)

    async def make_folder(self, path: str) -> None:
        if not self.features.folders:
            return await super().make_folder(path)
        await self.inner.make_folder(path)

    async def is_folder(self, path: str) -> bool:
        if not self.features.folders:
            return await super().is_folder(path)
        return await self.inner.is_folder(path)

    async def set_description(self, key: str, info: ObjectInfo, *, if_version: str | None = None) -> bool:
        if not self.features.description_in_place:
            return await super().set_description(key, info, if_version=if_version)
        return await self.inner.set_description(key, info, if_version=if_version)

    def list_incomplete_uploads(self, prefix: str = "") -> AsyncIterator[IncompleteUpload]:
        if not self.features.incomplete_uploads:
            return super().list_incomplete_uploads(prefix)
        return self.inner.list_incomplete_uploads(prefix)

    async def abort_incomplete_upload(self, upload: IncompleteUpload) -> None:
        if not self.features.incomplete_uploads:
            return await super().abort_incomplete_upload(upload)
        await self.inner.abort_incomplete_upload(upload)

    def list_prefixes(self, path: str) -> AsyncIterator[str]:
        if not self.features.common_prefixes:
            return super().list_prefixes(path)
        return self.inner.list_prefixes(path)

    async def remove_folder(self, path: str) -> bool:
        if not self.features.folder_removal:
            return await super().remove_folder(path)
        return await self.inner.remove_folder(path)

    async def list_folders(self, path: str) -> list[str]:
        if not self.features.folders:
            return await super().list_folders(path)
        return await self.inner.list_folders(path)

    async def delete_many(self, keys: Sequence[str]) -> dict[str, BackendError]:
        if not self.features.batch_deletes:
            return await super().delete_many(keys)
        return await self.inner.delete_many(keys)

    async def make_bucket(self) -> bool:
        if not self.features.buckets:
            return await super().make_bucket()
        return await self.inner.make_bucket()

    async def remove_bucket(self) -> bool:
        if not self.features.buckets:
            return await super().remove_bucket()
        return await self.inner.remove_bucket()

    async def aclose(self) -> None:
        await self.inner.aclose()
