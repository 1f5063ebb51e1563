"""Backends that count what a job reads into its :class:`~vertexflow.pipeline.stats.JobStats`, as it reads.

For jobs that do not go through the copy engine (which counts by itself) but
read through a backend: a backup's archive of a store, a restore's or a
backup check's reads of the backup's parts. The bytes count as they arrive,
so a progress display follows a large object as it moves, not in one step
when it is done.

* :class:`ListedReads`: a reader that takes the objects in the order it
  lists them, one at a time (a backup's archive): an object is done once
  the listing moves past it; the bytes of a streamed read count as they
  arrive, the rest of the object's size when it is done (small objects read
  whole, possibly ahead in batches). :func:`count_listing` gives the totals
  beside it.
* :class:`CountedReads`: every byte read from the backend (``open``) counts,
  and an object is done when its read is closed (a backup's parts).
* :class:`CountedWrites`: every byte written (``put``) counts as it is sent,
  and an object is done when its put returns (a platform backup's parts,
  whose sources are opened inside the job).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING

from .base import BackendWrapper

if TYPE_CHECKING:
    from ..backends.base import Backend, UploadCheckpoint
    from ..model import BodyFactory, ObjectInfo, Pace
    from ..pipeline.stats import JobStats


class ListedReads(BackendWrapper):
    """``inner``, counting into ``stats`` what a reader in listing order has read (see the module's text).

    ``first``: the size of something the reader does before the first object
    (a full backup's database copy), done when the listing starts.
    """

    def __init__(self, inner: Backend, stats: JobStats, first: int | None = None) -> None:
        super().__init__(inner)
        self.stats = stats
        self.current: int | None = first  # the size of the object being read
        self.read = 0  # of it, the bytes already counted

    def settle(self) -> None:
        """The object being read is done."""
        if self.current is not None:
            self.stats.done_objects += 1
            self.stats.done_bytes += self.current
            self.stats.moved_bytes += max(0, self.current - self.read)
            self.current = None

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:  # type: ignore[override]
        async for info in self.inner.list(prefix):
            self.settle()
            self.current, self.read = info.size or 0, 0
            yield info
        self.settle()

    def open(self, key: str, *, offset: int = 0, length: int | None = None,
             if_version: str | None = None) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        return _counted(self.inner.open(key, offset=offset, length=length, if_version=if_version), self._count)

    def _count(self, n: int) -> None:
        self.read += n
        self.stats.moved_bytes += n


class CountedReads(BackendWrapper):
    """``inner``, calling ``on_bytes(n)`` for every ``n`` bytes read through ``open`` and ``on_done()`` when such a
    read is closed."""

    def __init__(self, inner: Backend, on_bytes: Callable[[int], None],
                 on_done: Callable[[], None] | None = None) -> None:
        super().__init__(inner)
        self.on_bytes, self.on_done = on_bytes, on_done

    def open(self, key: str, *, offset: int = 0, length: int | None = None,
             if_version: str | None = None) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        return _counted(self.inner.open(key, offset=offset, length=length, if_version=if_version), self.on_bytes,
                        self.on_done)


class CountedWrites(BackendWrapper):
    """``inner``, counting into ``stats`` the bytes ``put`` sends as they go, and each object put."""

    def __init__(self, inner: Backend, stats: JobStats) -> None:
        super().__init__(inner)
        self.stats = stats

    async def put(self, info: ObjectInfo, body: BodyFactory, *, checkpoint: UploadCheckpoint | None = None,
                  pace: Pace | None = None) -> ObjectInfo:
        def counted_body() -> AsyncIterator[bytes]:
            return _chunks(body(), self._count)

        stored = await self.inner.put(info, counted_body, checkpoint=checkpoint, pace=pace)
        self.stats.done_objects += 1
        self.stats.done_bytes += stored.size or 0
        return stored

    def _count(self, n: int) -> None:
        self.stats.moved_bytes += n


@asynccontextmanager
async def _counted(opened: AbstractAsyncContextManager[AsyncIterator[bytes]], count: Callable[[int], None],
                   done: Callable[[], None] | None = None) -> AsyncIterator[AsyncIterator[bytes]]:
    async with opened as chunks:
        yield _chunks(chunks, count)
    if done is not None:
        done()


async def _chunks(chunks: AsyncIterator[bytes], count: Callable[[int], None]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        count(len(chunk))
        yield chunk


async def count_listing(source: Backend, stats: JobStats) -> None:
    """Count what ``source`` holds into ``stats``' totals, beside a job that reads it by a listing of its own."""
    try:
        async for info in source.list():
            stats.listed_objects += 1
            stats.listed_bytes += info.size or 0
    except Exception:  # noqa: BLE001 - only the progress's total is missing: the job says what went wrong
        return
    stats.listing_done = True
