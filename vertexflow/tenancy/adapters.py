"""StorageAdapter: the platform's small file API over one backend.

An adapter is rooted where a company's files of one content type live (for
example ``<bucket>/portraits/acme``); keys are relative to that root, as for
backends (``category/Image/photo.jpg``). All methods are coroutines.

Folders: local disk and Yandex.Disk have real folders and get them. Object
stores have none, so a folder is a zero-byte marker object ``<folder>/.keep``
(:data:`FOLDER_MARKER`); a folder "exists" there when any object lies under
it. Markers are ordinary objects: they are copied by migrations and left out
of migration verification.

Public URLs: a configured ``public_base_url`` wins (``<base>/<key as stored>``,
for a CDN or a web server in front of the store). Otherwise local disk gives
a ``file://`` URL, S3 a presigned GET URL (valid :data:`PRESIGN_SECONDS`),
Yandex.Disk publishes the file and gives its ``public_url``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from urllib.parse import quote


from ..backends.base import Backend, check_key
from ..errors import NotFound
from ..model import BodyFactory, ObjectInfo, body_from_bytes, read_all

FOLDER_MARKER = ".keep"
#: a week: the longest a SigV4 presigned URL may live
PRESIGN_SECONDS = 7 * 24 * 3600


class StorageAdapter:
    """File operations on ``backend`` (owned: :meth:`aclose` closes it)."""

    def __init__(self, backend: Backend, *, public_base_url: str | None = None, label: str | None = None) -> None:
        self.backend = backend
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.label = label or backend.describe()

    def describe(self) -> str:
        return self.label

    async def save_file(self, key: str, data: bytes | BodyFactory, *, size: int | None = None) -> ObjectInfo:
        """Store ``data`` at ``key``, replacing what was there: all of it or nothing."""
        if isinstance(data, bytes | bytearray | memoryview):
            data = bytes(data)
            return await self.backend.put(ObjectInfo(key=key, size=len(data)), body_from_bytes(data))
        return await self.backend.put(ObjectInfo(key=key, size=size), data)

    async def get_file(self, key: str) -> bytes:
        """The whole content of ``key``; raises :class:`~vertexflow.errors.NotFound`."""
        async with self.backend.open(key) as body:
            return await read_all(body)

    async def delete_file(self, key: str) -> None:
        """Remove ``key``; absent is fine."""
        await self.backend.delete(key)

    async def file_exists(self, key: str) -> bool:
        try:
            await self.backend.stat(key)
        except NotFound:
            return False
        return True

    async def stat(self, key: str) -> ObjectInfo:
        return await self.backend.stat(key)

    async def list_files(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object under ``prefix``; a root that does not exist yet holds nothing."""
        listing = self.backend.list(prefix)
        try:
            async with aclosing(listing):  # type: ignore[type-var]
                async for info in listing:
                    yield info
        except NotFound:
            return

    async def get_public_url(self, key: str) -> str:
        check_key(key, backend=self.describe())
        b = self.backend
        if self.public_base_url:
            return f"{self.public_base_url}/{quote(key)}"
        if b.features.public_links:
            return await b.public_link(key, expires=PRESIGN_SECONDS)
        if b.features.local_path:
            return b.local_path(key).as_uri()
        raise NotImplementedError(f"{self.describe()} has no public URLs; set public_base_url")

    # -- folders ------------------------------------------------------------
    async def ensure_folder(self, path: str) -> None:
        """Create folder ``path`` (and its parents) under the root; existing is fine."""
        check_key(path, backend=self.describe())
        b = self.backend
        if b.features.folders:
            await b.make_folder(path)
        else:
            await self.save_file(f"{path}/{FOLDER_MARKER}", b"")

    async def folder_exists(self, path: str) -> bool:
        check_key(path, backend=self.describe())
        b = self.backend
        if b.features.folders:
            return await b.is_folder(path)
        async for _ in self.list_files(f"{path}/"):
            return True
        return False

    async def aclose(self) -> None:
        await self.backend.aclose()
