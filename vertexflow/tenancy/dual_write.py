"""DualWriteAdapter: a company's adapter while a live migration copies it.

Contract: writes and deletes go to the old backend (the authority until the
switch) and then to the new one. Reads go to the old backend (``reads_new``
False: what company migrations and rollbacks use, since the new one may hold
an older copy of the company); with ``reads_new`` they prefer the new backend
and fall back to the old, except for dirty keys (below), whose new copy may be
stale and which are read from the old one.

Why the result is exact although the platform keeps writing during the copy
-------------------------------------------------------------------------------
The bulk copy (a sync job old -> new) runs without any lock; a dual write
races it (a stale overwrite: the copy puts an older version on new after the
write; a resurrection: the copy puts a key the write deleted). Both need a
dual write or delete of the key while the copy runs, and every such key is
marked dirty in the platform database *before* the write's first request,
and again when it ends (:mod:`.live_state`; the marks are made by the
routing adapter, in any process, so they cover writers in every process).

The final incremental sync (:func:`reconcile_key` for each dirty key, then
``LiveState.clean`` with the key's generation read before the copy) makes
new equal old: copy old's current bytes, or delete on new if old has none
(old is where deletes are recorded). It can race a dual write of the same
key; then the write's end mark bumps the key's generation and the clean
fails, so the key stays dirty and is reconciled again. What may remain is
reconciled under the write fence, when no write is in flight at all.
A dual write whose second half (new) failed is only logged: its key is dirty.

A rollback (the sync back of :func:`vertexflow.ops.migrate.rollback_company`)
runs the same way in reverse, but its new side already holds every file as
it was at the switch, possibly stale: its adapters read the old side only
(``reads_new=False``), as for dirty keys.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from ..errors import NotFound
from ..logs import get_logger
from ..model import BodyFactory, ObjectInfo, body_from_bytes
from .adapters import StorageAdapter

log = get_logger(__name__)


class DualWriteAdapter(StorageAdapter):
    """Writes to ``old`` then ``new``; reads ``new`` first unless ``is_dirty(key)``. Owns neither."""

    def __init__(self, old: StorageAdapter, new: StorageAdapter, is_dirty: Callable[[str], bool], *,
                 reads_new: bool = True) -> None:
        super().__init__(new.backend, public_base_url=new.public_base_url,
                         label=f"dual({old.describe()} -> {new.describe()})")
        self.old, self.new = old, new
        #: ``reads_new`` False (a rollback, whose new side holds stale copies): every key reads as if dirty
        self.is_dirty = is_dirty if reads_new else (lambda key: True)
        self.writes = self.deletes = self.secondary_failures = 0

    async def save_file(self, key: str, data: bytes | BodyFactory, *, size: int | None = None) -> ObjectInfo:
        if isinstance(data, bytes | bytearray | memoryview):
            data, size = body_from_bytes(bytes(data)), len(data)
        info = await self.old.save_file(key, data, size=size)
        self.writes += 1
        try:
            await self.new.save_file(key, data, size=size)
        except Exception as exc:  # noqa: BLE001 - old holds it and the key is dirty: the reconcile copies it
            self.secondary_failures += 1
            log.warning("dual write to the new backend failed", key=key, error=str(exc))
        return info

    async def delete_file(self, key: str) -> None:
        await self.old.delete_file(key)
        self.deletes += 1
        try:
            await self.new.delete_file(key)
        except Exception as exc:  # noqa: BLE001 - the key is dirty: the reconcile deletes it again
            self.secondary_failures += 1
            log.warning("dual delete on the new backend failed", key=key, error=str(exc))

    async def get_file(self, key: str) -> bytes:
        if not self.is_dirty(key):
            try:
                return await self.new.get_file(key)
            except NotFound:
                pass
        return await self.old.get_file(key)

    async def file_exists(self, key: str) -> bool:
        if not self.is_dirty(key) and await self.new.file_exists(key):
            return True
        return await self.old.file_exists(key)

    async def stat(self, key: str) -> ObjectInfo:
        if not self.is_dirty(key):
            try:
                return await self.new.stat(key)
            except NotFound:
                pass
        return await self.old.stat(key)

    async def get_public_url(self, key: str) -> str:
        # a URL must outlive the switch only if the file is already on new
        if not self.is_dirty(key) and await self.new.file_exists(key):
            return await self.new.get_public_url(key)
        return await self.old.get_public_url(key)

    async def aclose(self) -> None:
        """Nothing: the owner of ``old`` and ``new`` closes them."""


async def reconcile_key(old: StorageAdapter, new: StorageAdapter, key: str) -> str:
    """Make new's ``key`` equal old's now; returns "copied" or "deleted"."""
    try:
        info = await old.stat(key)
    except NotFound:
        await new.delete_file(key)
        return "deleted"
    source = old.backend

    async def body() -> AsyncIterator[bytes]:  # streamed: a video need not fit in memory
        async with source.open(key, if_version=info.version) as chunks:
            async for chunk in chunks:
                yield chunk

    # what describes the file goes with it: a reconciled key keeps its Content-Type, headers and user metadata
    await new.backend.put(ObjectInfo(key=key, size=info.size, mtime=info.mtime, content_type=info.content_type,
                                     headers=info.headers, metadata=info.metadata), body)
    return "copied"
