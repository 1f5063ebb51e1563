"""CompanyAdapter: a company's adapter of one content type that follows the platform database.

What :meth:`StorageManager.get_company_adapter` hands out. Each call picks
the adapter for the company's current route (:mod:`.live_state`): its own
placement, or a :class:`~.dual_write.DualWriteAdapter` while a live
migration copies it, and after a switch the new placement, whichever
process made the change.

* Writes (save, delete, folder creation) read the route afresh in the
  transaction that registers them as in flight, and wait while a live
  migration's write fence is up (at most ``StorageManager.fence_wait``
  seconds, then :class:`~vertexflow.errors.WriteFenced`). A fence whose
  migration is stale (its process gone) is lifted by the waiting writer.
* Reads never wait and use a route at most ``StorageManager.route_ttl``
  seconds old (a process's own writes refresh it).

Holding one across a switch is fine: the next call goes to the new backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..model import BodyFactory, ObjectInfo
from .adapters import FOLDER_MARKER, StorageAdapter

if TYPE_CHECKING:
    from ..backends.base import Backend
    from .manager import StorageManager


class CompanyAdapter(StorageAdapter):
    """Routes each call of ``company_id``'s ``content_type`` files (see the module docstring)."""

    def __init__(self, manager: StorageManager, company_id: int, content_type: str) -> None:
        # no StorageAdapter.__init__: backend, label and public URL base are the current route's
        self.manager, self.company_id, self.content_type = manager, company_id, content_type

    def _current(self) -> StorageAdapter:
        return self.manager.current_adapter(self.company_id, self.content_type)

    @property
    def backend(self) -> Backend:  # type: ignore[override]
        return self._current().backend

    @property
    def public_base_url(self) -> str | None:  # type: ignore[override]
        return self._current().public_base_url

    def describe(self) -> str:
        return self._current().describe()

    async def _read(self) -> StorageAdapter:
        return await self.manager.read_adapter(self.company_id, self.content_type)

    # -- writes -------------------------------------------------------------
    async def save_file(self, key: str, data: bytes | BodyFactory, *, size: int | None = None) -> ObjectInfo:
        async with self.manager.write_adapter(self.company_id, self.content_type, key) as inner:
            return await inner.save_file(key, data, size=size)

    async def delete_file(self, key: str) -> None:
        async with self.manager.write_adapter(self.company_id, self.content_type, key) as inner:
            await inner.delete_file(key)

    async def ensure_folder(self, path: str) -> None:
        async with self.manager.write_adapter(self.company_id, self.content_type, f"{path}/{FOLDER_MARKER}") as inner:
            await inner.ensure_folder(path)

    # -- reads --------------------------------------------------------------
    async def get_file(self, key: str) -> bytes:
        return await (await self._read()).get_file(key)

    async def file_exists(self, key: str) -> bool:
        return await (await self._read()).file_exists(key)

    async def stat(self, key: str) -> ObjectInfo:
        return await (await self._read()).stat(key)

    async def list_files(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        async for info in (await self._read()).list_files(prefix):
            yield info

    async def get_public_url(self, key: str) -> str:
        return await (await self._read()).get_public_url(key)

    async def folder_exists(self, path: str) -> bool:
        return await (await self._read()).folder_exists(path)

    async def aclose(self) -> None:
        """Nothing: the manager owns the adapters it routes to."""
