"""Bandwidth limits around a backend: bytes read through ``open`` and written through ``put``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from dataclasses import replace

from ..backends.base import Backend, UploadCheckpoint
from ..model import BodyFactory, ObjectInfo, Pace
from ..throttle import TokenBucket
from .base import BackendWrapper


async def throttled(chunks: AsyncIterator[bytes], buckets: Sequence[TokenBucket]) -> AsyncIterator[bytes]:
    """``chunks`` handed on no faster than every bucket allows, in slices no larger than a burst."""
    async with aclosing(chunks):  # type: ignore[type-var]
        async for chunk in chunks:
            view = memoryview(chunk)
            while view:
                piece = view[:min(b.slice_size() for b in buckets)]
                view = view[len(piece):]
                for bucket in buckets:
                    await bucket.consume(len(piece))
                yield chunk if len(piece) == len(chunk) else bytes(piece)


async def pace_through(buckets: Sequence[TokenBucket], n: int) -> None:
    """Wait until ``n`` bytes may pass every bucket, taken in slices no larger than a burst."""
    while n > 0:
        piece = min(n, *(b.slice_size() for b in buckets))
        for bucket in buckets:
            await bucket.consume(piece)
        n -= piece


class ThrottledBackend(BackendWrapper):
    """Reads pass the ``reads`` buckets, writes the ``writes`` buckets (each shared with other backends).

    A server-side copy moves no bytes through here and is not limited. A
    backend with ``paced_writes`` is given a ``pace`` and charges only the
    bytes it sends (a resumed upload's parts already stored cost nothing);
    another's body is paced as it streams. Whole reads are read through the
    limited stream.
    """

    def __init__(self, inner: Backend, *, reads: Sequence[TokenBucket] = (),
                 writes: Sequence[TokenBucket] = ()) -> None:
        super().__init__(inner)
        self.reads = tuple(reads)
        self.writes = tuple(writes)
        if self.reads:
            self.features = replace(self.features, whole_reads=False)

    def open(self, key: str, *, offset: int = 0, length: int | None = None,
             if_version: str | None = None) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        if not self.reads:
            return self.inner.open(key, offset=offset, length=length, if_version=if_version)
        return self._open(key, offset, length, if_version)

    @asynccontextmanager
    async def _open(self, key: str, offset: int, length: int | None,
                    if_version: str | None) -> AsyncIterator[AsyncIterator[bytes]]:
        async with self.inner.open(key, offset=offset, length=length, if_version=if_version) as chunks:
            it = throttled(chunks, self.reads)
            try:
                yield it
            finally:
                await it.aclose()  # type: ignore[attr-defined]

    async def put(self, info: ObjectInfo, body: BodyFactory, *, checkpoint: UploadCheckpoint | None = None,
                  pace: Pace | None = None) -> ObjectInfo:
        writes = self.writes
        if not writes:
            return await self.inner.put(info, body, checkpoint=checkpoint, pace=pace)
        if self.inner.features.paced_writes:
            async def paced(n: int) -> None:
                await pace_through(writes, n)
                if pace is not None:
                    await pace(n)

            return await self.inner.put(info, body, checkpoint=checkpoint, pace=paced)

        def limited() -> AsyncIterator[bytes]:
            return throttled(body(), writes)

        return await self.inner.put(info, limited, checkpoint=checkpoint, pace=pace)
