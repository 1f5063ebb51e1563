"""Progress of ``backup create``, ``backup restore`` and ``backup verify``, counted into a :class:`JobStats`.

What counts, per phase (``stats.phase``):

* ``archiving`` (create): the source's objects and bytes as the archive
  reads them (:class:`~vertexflow.middleware.progress.ListedReads`), the
  totals from a listing of its own beside it; a full backup's database copy
  is one object more, done when the files start;
* ``checking`` (restore's first pass, verify): the backup's stored objects
  (parts, member lists, the database copy) and their bytes as they are read;
* ``writing storage`` (restore's second pass): the parts again, read as
  their members are written to the target: counted from zero, with the
  parts' total.

The bytes of a restore or a check are the backup's as stored (compressed):
what is read, and what the time goes by.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio

from ...middleware.progress import CountedReads, ListedReads, count_listing
from .reading import Opened

if TYPE_CHECKING:
    from ...backends.base import Backend
    from ...pipeline.stats import JobStats

ARCHIVING, CHECKING, WRITING = "archiving", "checking", "writing storage"


@asynccontextmanager
async def archived_source(source: Backend, stats: JobStats, database: int | None = None) -> AsyncIterator[Backend]:
    """``source`` counting what the archive reads of it into ``stats``, its totals listed beside it meanwhile.

    ``database``: the size of the database copy a full backup writes first (one object more).
    """
    stats.phase = ARCHIVING
    if database is not None:
        stats.listed_objects, stats.listed_bytes = 1, database
    async with anyio.create_task_group() as tg:
        tg.start_soon(count_listing, source, stats)
        try:
            yield ListedReads(source, stats, database)
        finally:
            tg.cancel_scope.cancel()


def database_only(stats: JobStats, size: int) -> None:
    """A backup of the database alone: one object of ``size`` bytes (done when the backup is)."""
    stats.phase = ARCHIVING
    stats.listed_objects, stats.listed_bytes, stats.listing_done = 1, size, True


def settled(stats: JobStats) -> None:
    """The backup is written: what was listed is done."""
    stats.done_objects, stats.done_bytes = stats.listed_objects, stats.listed_bytes
    stats.moved_bytes = max(stats.moved_bytes, stats.listed_bytes)


def counted(opened: Opened, stats: JobStats, *, database: bool = True, result: Any = None) -> Opened:
    """``opened`` reading through a counter into ``stats`` (phase ``checking``, the stored objects it will read
    as the totals). ``database``: whether the database copy is read. ``result``: a restore's result; when its
    phase turns to ``writing storage``, the parts count again from zero."""
    meta = opened.meta
    skipped = meta.database.stored if meta.database is not None and not database else None
    files = [f for f in meta.stored_files() if f is not skipped]
    stats.phase = CHECKING
    stats.listed_objects, stats.listed_bytes, stats.listing_done = len(files), sum(f.size for f in files), True

    def on_bytes(n: int) -> None:
        if result is not None and result.phase == WRITING and stats.phase != WRITING and meta.storage is not None:
            stats.new_phase(WRITING)
            stats.listed_objects, stats.listed_bytes = len(meta.storage.parts), meta.storage.stream_size
            stats.listing_done = True
        stats.moved_bytes += n

    def on_done() -> None:
        stats.done_objects += 1

    return Opened(CountedReads(opened.folder, on_bytes, on_done), opened.name, meta)
