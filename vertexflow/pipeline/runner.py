"""Bounded producer -> workers pipeline with back-pressure and two stop levels.

``run_pipeline`` connects one producer to N workers through an anyio memory
object stream of fixed capacity: when the workers fall behind, the producer
blocks on ``send``, so memory holds at most ``queue_size`` items however long
the listing is. Every task lives in one task group (no stray tasks).

Stopping:

* :meth:`StopSignal.request_graceful` (first Ctrl-C): the producer stops
  listing and workers take no new item; transfers in flight finish.
* :meth:`StopSignal.request_hard` (second Ctrl-C): the whole group is
  cancelled; backends clean up (temp files, multipart uploads) in shielded
  ``finally`` blocks.

A worker raising an exception is fatal: it cancels the group and the
exception propagates. Per-item failures that should not stop the job are the
worker's to catch and record.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import TypeVar

import anyio

T = TypeVar("T")


class StopSignal:
    def __init__(self) -> None:
        self.graceful = anyio.Event()
        self._scopes: list[anyio.CancelScope] = []
        self.hard = False

    def request_graceful(self) -> None:
        self.graceful.set()

    def request_hard(self) -> None:
        self.hard = True
        self.graceful.set()
        for scope in self._scopes:
            scope.cancel()

    def attach(self, scope: anyio.CancelScope) -> None:
        self._scopes.append(scope)
        if self.hard:
            scope.cancel()

    @property
    def stopping(self) -> bool:
        return self.graceful.is_set()


async def run_pipeline(
    items: AsyncIterator[T],
    worker: Callable[[T], Awaitable[None]],
    *,
    workers: int,
    queue_size: int,
    stop: StopSignal | None = None,
    name: str = "to_work",
) -> None:
    """Feed ``items`` to ``workers`` concurrent calls of ``worker`` until exhausted or stopped.

    ``name`` names the channel after the stage it feeds (``to_transfer``,
    ``to_delete``, ``to_compare``); its tasks carry it (``to_transfer:fill``,
    ``to_transfer:worker-3``), as debuggers and task dumps show them.
    """
    stop = stop or StopSignal()
    send, receive = anyio.create_memory_object_stream[T](queue_size)
    producer_scope = anyio.CancelScope()

    async def produce() -> None:
        with producer_scope:
            async with send, aclosing(items):  # type: ignore[type-var]
                try:
                    async for item in items:
                        await send.send(item)
                except anyio.BrokenResourceError:
                    pass  # every worker has stopped

    async def consume(stream: anyio.abc.ObjectReceiveStream[T]) -> None:
        async with stream:
            async for item in stream:
                if stop.stopping:
                    break
                await worker(item)

    async def cut_listing_on_stop() -> None:
        await stop.graceful.wait()
        producer_scope.cancel()

    async with anyio.create_task_group() as outer:
        stop.attach(outer.cancel_scope)
        outer.start_soon(cut_listing_on_stop)
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce, name=f"{name}:fill")
            async with receive:
                for i in range(workers):
                    tg.start_soon(consume, receive.clone(), name=f"{name}:worker-{i}")
        outer.cancel_scope.cancel()  # only the stop watcher is left
