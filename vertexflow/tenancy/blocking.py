"""A synchronous facade of :class:`StorageManager`, for platform code that is not async.

Each :class:`BlockingStorageManager` owns one event loop, run by a thread of
its own; every call is handed to that loop and waited for, so calls from
several threads at once run concurrently (as many ``asyncio`` tasks) and the
manager's SQLite connection is only ever used by the loop's thread. The
errors are the async API's, raised unchanged in the calling thread.

    with BlockingStorageManager.open("storage_config.json", "platform.db") as storage:
        storage.save_file("portraits", "cats/Image/a.jpg", b"...", company_id=7)
        data = storage.get_file("portraits", "cats/Image/a.jpg", company_id=7)
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from typing import Self, TypeVar

from ..model import ObjectInfo
from .manager import DEFAULT_SUBFOLDERS, ProvisionReport, StorageManager
from .registry import Company

T = TypeVar("T")

#: seconds a call may take before the caller gets TimeoutError (a write may wait up to
#: StorageManager.fence_wait at a live migration's fence; a large file takes its own time)
CALL_TIMEOUT = 600.0
#: seconds close() waits for the loop to close the manager's adapters and stop
CLOSE_TIMEOUT = 30.0


class BlockingStorageManager:
    """:class:`StorageManager`'s file API as blocking calls; safe to use from several threads at once."""

    call_timeout = CALL_TIMEOUT

    def __init__(self, opener: Callable[[], StorageManager]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vertexflow-storage", daemon=True)
        self._thread.start()
        self._closed = False

        async def open_() -> StorageManager:
            return opener()  # on the loop's thread: the registry's SQLite connection belongs to it

        try:
            self.manager: StorageManager = self._submit(open_()).result(self.call_timeout)
        except BaseException:
            self._stop()
            raise

    @classmethod
    def open(cls, storage_config: str | os.PathLike[str] | None, db: str | os.PathLike[str] | None) -> Self:
        """Read the storage config and open the platform database (errors as :meth:`StorageManager.open`)."""
        return cls(lambda: StorageManager.open(storage_config, db))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _submit(self, coro: Awaitable[T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]

    def call(self, fn: Callable[[StorageManager], Awaitable[T]]) -> T:
        """Run ``fn(manager)`` on the manager's loop and return its result (or raise its error) here."""
        if self._closed:
            raise RuntimeError("the storage manager is closed")
        if threading.current_thread() is self._thread:
            raise RuntimeError("a blocking call from the storage manager's own loop would wait for itself")

        async def run() -> T:
            return await fn(self.manager)

        future = self._submit(run())
        try:
            return future.result(self.call_timeout)
        except TimeoutError:
            future.cancel()
            raise TimeoutError(f"storage call did not finish within {self.call_timeout:g} s") from None

    # -- the platform's file API --------------------------------------------------------
    def save_file(self, content_type: str, key: str, data: bytes, *, company_id: int | None = None) -> ObjectInfo:
        return self.call(lambda m: m.save_file(content_type, key, data, company_id=company_id))

    def get_file(self, content_type: str, key: str, *, company_id: int | None = None) -> bytes:
        return self.call(lambda m: m.get_file(content_type, key, company_id=company_id))

    def delete_file(self, content_type: str, key: str, *, company_id: int | None = None) -> None:
        self.call(lambda m: m.delete_file(content_type, key, company_id=company_id))

    def file_exists(self, content_type: str, key: str, *, company_id: int | None = None) -> bool:
        return self.call(lambda m: m.file_exists(content_type, key, company_id=company_id))

    def get_public_url(self, content_type: str, key: str, *, company_id: int | None = None) -> str:
        return self.call(lambda m: m.get_public_url(content_type, key, company_id=company_id))

    def list_files(self, content_type: str, prefix: str = "", *, company_id: int | None = None) -> list[str]:
        """The keys under ``prefix`` (folder markers left out)."""
        async def keys(m: StorageManager) -> list[str]:
            adapter = (await m.get_company_adapter(company_id, content_type) if company_id is not None
                       else await m.get_adapter(content_type))
            return [i.key async for i in adapter.list_files(prefix) if not i.key.endswith("/.keep")]

        return self.call(keys)

    def provision_company_storage(self, company_id: int, category_slugs: Sequence[str],
                                  subfolders: Sequence[str] = DEFAULT_SUBFOLDERS) -> ProvisionReport:
        return self.call(lambda m: m.provision_company_storage(company_id, category_slugs, subfolders))

    def verify_company_storage(self, company_id: int, category_slugs: Sequence[str],
                               subfolders: Sequence[str] = DEFAULT_SUBFOLDERS) -> ProvisionReport:
        return self.call(lambda m: m.verify_company_storage(company_id, category_slugs, subfolders))

    def company(self, ref: int | str) -> Company:
        async def find(m: StorageManager) -> Company:
            return m.company(ref)

        return self.call(find)

    def clear_company_cache(self, company_id: int) -> None:
        async def clear(m: StorageManager) -> None:
            m.clear_company_cache(company_id)

        self.call(clear)

    # -- closing -------------------------------------------------------------------------
    def close(self) -> None:
        """Close the manager (its adapters and database) and stop the loop; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._submit(self.manager.aclose()).result(CLOSE_TIMEOUT)
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CLOSE_TIMEOUT)
        if not self._thread.is_alive():
            self._loop.close()

