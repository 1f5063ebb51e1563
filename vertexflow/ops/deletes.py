"""Deleting many objects of one backend: in batches where it takes them, else one by one.

Two routes, tried in this order:

* ``batch``: ``delete_many`` (``features.batch_deletes``; S3 DeleteObjects,
  a thousand keys a request), each key's failure its own; a key that failed
  with a transient error (the store busy) is tried again on the single route;
* ``single``: one ``delete`` per object, :data:`SINGLE_WORKERS` at once;
  the route of a backend without batched deletes, and of one whose store
  says it has none (``delete_many`` raises NotImplementedError: the batch
  is deleted one by one, and so is every later one).

What may be deleted is decided before (``--max-delete``, ``--dry-run``, the
checks of ``sync --delete`` and ``move``): these only send the deletes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from typing import TypeVar

import anyio

from ..backends.base import Backend
from ..errors import TransientError, VertexflowError
from ..logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")

#: keys a batch takes: S3's DeleteObjects limit, one request each
BATCH_SIZE = 1000
#: deletes in flight at once on the single route (each a round trip)
SINGLE_WORKERS = 8


def batch_size(backend: Backend) -> int:
    """How many objects to hand :meth:`Deleter.delete` at once: a batch where it takes them, else one."""
    return BATCH_SIZE if backend.features.batch_deletes else 1


async def batched(items: AsyncIterator[T], size: int) -> AsyncIterator[list[T]]:
    """``items`` in lists of ``size`` (the last may be shorter)."""
    batch: list[T] = []
    async with aclosing(items):  # type: ignore[type-var]
        async for item in items:
            batch.append(item)
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch


class Deleter:
    """Deletes keys of ``backend`` by the cheapest route it has; ``routes`` counts the objects each deleted."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.batches = backend.features.batch_deletes
        self.routes: dict[str, int] = {"batch": 0, "single": 0}

    async def delete(self, keys: Sequence[str]) -> dict[str, VertexflowError]:
        """Delete ``keys``; those not deleted, each with its error. A fatal error raises."""
        if self.batches and len(keys) > 1:
            try:
                failed: dict[str, VertexflowError] = dict(await self.backend.delete_many(keys))
            except NotImplementedError as exc:
                self.batches = False
                log.warning("batched deletes refused: deleting one by one", backend=self.backend.describe(),
                            error=str(exc))
            except VertexflowError as exc:
                if getattr(exc, "fatal", False):
                    raise
                return dict.fromkeys(keys, exc)  # the request failed whole: so did each of its keys
            else:
                self.routes["batch"] += len(keys) - len(failed)
                # a key the store could not delete just now (SlowDown, InternalError) gets a request of its own
                again = [key for key, exc in failed.items() if isinstance(exc, TransientError)]
                if again:
                    for key in again:
                        del failed[key]
                    failed.update(await self._singly(again))
                return failed
        return await self._singly(keys)

    async def _singly(self, keys: Sequence[str]) -> dict[str, VertexflowError]:
        failed: dict[str, VertexflowError] = {}
        slots = anyio.Semaphore(SINGLE_WORKERS)

        async def one(key: str) -> None:
            async with slots:
                try:
                    await self.backend.delete(key)
                except VertexflowError as exc:
                    if getattr(exc, "fatal", False):
                        raise
                    failed[key] = exc
                    return
            self.routes["single"] += 1

        if len(keys) == 1:
            await one(keys[0])
            return failed
        async with anyio.create_task_group() as tg:
            for key in keys:
                tg.start_soon(one, key)
        return failed
