"""``copy SRC DST``: put every object of SRC under DST.

The job is one pipeline (:mod:`vertexflow.pipeline.runner`): the source
listing is streamed into a bounded channel (``to_transfer``) and drained by
``transfers`` workers. Small files of a bare local source are cut into
batches while listing (one worker-thread call reads, and between local
directories writes, a whole batch). Every other object takes the cheapest
route its two ends allow (:mod:`.routes`: ``local_file``, ``server_side``,
``whole_read``, ``streamed``), chosen once per job; a route that cannot serve
an object raises :class:`~vertexflow.errors.CantCopy` and the object is
streamed instead. The summary counts the objects each route carried.

Every transfer is checked: the destination reports the SHA-256 of the bytes
it stored (computed in-stream), the byte count must match the listing, and
when the source already knew a SHA-256 the two must agree. A mismatch is
retried; after ``retry.attempts`` the object is reported as failed and the
job goes on. Errors marked ``fatal`` (bad credentials, full disk, read-only
destination) stop the job.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import anyio

from ..backends.base import Backend, UploadCheckpoint, direct_files
from ..backends.local import SMALL_FILE, LocalBackend, mtime_ns_of
from ..backends.local_processes import FileCopyProcesses, processes_allowed
from ..errors import (
    CantCopy,
    JobAborted,
    NotFound,
    ProcessesUnavailable,
    VertexflowError,
    WriteDenied,
    first_error,
)
from ..logs import get_logger
from ..model import ObjectInfo, body_from_bytes
from ..pipeline.runner import StopSignal, run_pipeline
from ..pipeline.stats import JobStats
from ..retry import RetryPolicy, release_frames, retry_call
from .cutoff import Cutoff
from .report import TransferReport
from .routes import RouteContext, choose_routes
from .spec import LOCAL_TRANSFERS

log = get_logger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyOptions:
    #: objects in flight (the spec chooses: :data:`~vertexflow.ops.spec.LOCAL_TRANSFERS` or ``REMOTE_TRANSFERS``)
    transfers: int = LOCAL_TRANSFERS
    #: listed objects waiting for a worker; bounds memory (an ObjectInfo is ~0.5 KB)
    queue_size: int = 1024
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: hash every byte and check it against what the destination stored
    verify: bool = True
    #: small local files copied per worker-thread call (local -> local)
    batch_files: int = 32
    batch_bytes: int = 4 * 1024 * 1024
    #: objects above ``large_object`` bytes in flight at once. Each streams
    #: through a backend that keeps a few parts in memory (S3: parts in flight
    #: x part size), so this, not ``transfers``, bounds memory for big files:
    #: 4 x 4 parts x 8 MiB = 128 MiB. Small objects still use every transfer slot.
    large_transfers: int = 4
    large_object: int = 8 * 1024 * 1024
    #: local -> local: batches of small files go to this many worker processes
    #: once the job has listed ``processes_after`` small files (fewer stay on
    #: threads: the first start of the forkserver costs ~0.3 s of CPU). 0:
    #: threads only. Why: see
    #: :mod:`vertexflow.backends.local_processes`.
    processes: int = min(4, os.cpu_count() or 1)
    processes_after: int = 256


@dataclass(slots=True)
class _Batch:
    items: list[ObjectInfo]


class Recorder(Protocol):
    """Told the outcome of every object (the sync job writes them to the journal)."""

    def done(self, src: ObjectInfo, result: ObjectInfo) -> None: ...

    def failed(self, src: ObjectInfo, exc: BaseException) -> None: ...


class CopyJob:
    """Copy objects of ``src`` to the same keys under ``dst``.

    Which objects: ``items`` when given (a plan), else only ``single_key``,
    else the whole listing of ``src``. ``cutoff``: the run's ``--max-transfer`` /
    ``--max-duration`` (:mod:`.cutoff`): once reached, nothing more starts.
    """

    def __init__(self, src: Backend, dst: Backend, options: CopyOptions | None = None, *,
                 single_key: str | None = None, items: AsyncIterator[ObjectInfo] | None = None,
                 recorder: Recorder | None = None, report: TransferReport | None = None,
                 checkpoints: Callable[[ObjectInfo], UploadCheckpoint] | None = None,
                 stats: JobStats | None = None,
                 stop: StopSignal | None = None, cutoff: Cutoff | None = None) -> None:
        self.src = src
        self.dst = dst
        self.options = options or CopyOptions()
        self.single_key = single_key
        self.source_items = items
        self.recorder = recorder
        #: ``--report``: a line per object
        self.report = report
        #: gives the durable checkpoint of an object's upload (from the journal)
        self.checkpoints = checkpoints
        self._large_slots = anyio.CapacityLimiter(self.options.large_transfers)
        #: large local files hashed at once ahead of their upload (a core each)
        self._prehash_slots = anyio.CapacityLimiter(max(1, min(self.options.large_transfers, os.cpu_count() or 1)))
        self.stats = stats or JobStats()
        self.stop = stop or StopSignal()
        self.cutoff = cutoff
        self._route_context = RouteContext(src=src, dst=dst, stats=self.stats, verify=self.options.verify,
                                           checkpoints=checkpoints)
        self._routes = choose_routes(self._route_context)
        self._streamed = self._routes[-1]
        # bytes moved between local files by the engine itself (nothing wrapped around either end)
        self._local_to_local = self._routes[0].name == "local_file"
        self._server_side = self._routes[0].name == "server_side"
        # small local files read in batches, one thread call each (a bare local source)
        self._batch_source = src.features.direct_files
        if dst.features.direct_files:  # local writes hash every byte unless the job does not verify
            direct_files(dst).hash_files = self.options.verify
        self._small_listed = 0
        self._processes: FileCopyProcesses | None = None
        #: batches of small files that worker processes copied
        self.process_batches = 0

    async def run(self) -> JobStats:
        """Run to the end (or until stopped); fatal errors raise :class:`JobAborted`."""
        try:
            await self.dst.check(write=True)
            if self.cutoff is None:
                await run_pipeline(self._items(), self._handle, workers=self.options.transfers,
                                   queue_size=self.options.queue_size, stop=self.stop, name="to_transfer")
            else:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self.cutoff.watch, name="to_transfer:cutoff")
                    await run_pipeline(self._items(), self._handle, workers=self.options.transfers,
                                       queue_size=self.options.queue_size, stop=self.stop, name="to_transfer")
                    tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise self._abort(first_error(group)) from None
        except VertexflowError as exc:
            raise self._abort(exc) from None
        finally:
            if self._processes is not None:
                await self._processes.aclose()
            self.stats.interrupted = self.stop.stopping
            self.stats.finished = time.monotonic()
        return self.stats

    def _abort(self, exc: BaseException) -> BaseException:
        if not isinstance(exc, VertexflowError):
            return exc
        self.stats.fatal = str(exc)
        aborted = JobAborted(str(exc))
        aborted.__cause__ = exc
        return aborted

    # -- producer ---------------------------------------------------------
    async def _items(self) -> AsyncIterator[ObjectInfo | _Batch]:
        stats = self.stats
        batch: list[ObjectInfo] = []
        batch_bytes = 0
        # --max-transfer counts objects one by one: a batch would start (and be counted) as one
        batching = self._batch_source and not self._server_side and (
            self.cutoff is None or self.cutoff.max_bytes is None)
        async for info in self._listing():
            if self.cutoff is not None and self.cutoff.check() is not None:
                break  # a limit is reached: list no further, the next run plans the rest
            stats.listed_objects += 1
            stats.listed_bytes += info.size or 0
            if batching and (info.size or 0) <= SMALL_FILE:
                batch.append(info)
                batch_bytes += info.size or 0
                self._small_listed += 1
                if len(batch) >= self.options.batch_files or batch_bytes >= self.options.batch_bytes:
                    yield _Batch(batch)
                    batch, batch_bytes = [], 0
            else:
                yield info
        if batch:
            yield _Batch(batch)
        stats.listing_done = True

    async def _listing(self) -> AsyncIterator[ObjectInfo]:
        if self.source_items is not None:
            async for info in self.source_items:
                yield info
            return
        if self.single_key is not None:
            yield await self.src.stat(self.single_key)
            return
        async for info in self.src.list():
            yield info

    # -- workers ----------------------------------------------------------
    async def _handle(self, item: ObjectInfo | _Batch) -> None:
        if self.cutoff is not None:
            infos = item.items if isinstance(item, _Batch) else [item]
            if not self.cutoff.may_start(sum(i.size or 0 for i in infos), len(infos)):
                return  # left planned: the next run copies it
            with self.cutoff.in_flight(len(infos)):
                await self._handle_one(item)
            return
        await self._handle_one(item)

    async def _handle_one(self, item: ObjectInfo | _Batch) -> None:
        if isinstance(item, _Batch):
            await self._copy_batch(item.items)
        else:
            await self._copy_one(item)

    async def _copy_batch(self, items: list[ObjectInfo]) -> None:
        """Small local files: one worker-thread call reads (and, local -> local, writes) them all."""
        if not self._local_to_local:
            await self._put_batch(items)
            return
        src, dst = direct_files(self.src), direct_files(self.dst)
        jobs = [(info.key, info.version, mtime_ns_of(info)) for info in items]
        self.stats.in_flight += len(items)
        try:
            results = None
            processes = self._file_processes()
            if processes is not None:
                try:
                    results = await processes.copy(jobs)
                    self.process_batches += 1
                except ProcessesUnavailable as exc:
                    log.warning("copying small files in threads instead of worker processes", error=str(exc))
                    directories = {key.rpartition("/")[0] for key, _, _ in jobs}
                    await dst.run_blocking(dst.remove_temp_files, directories, exc.pids)
            if results is None:
                results = await dst.run_blocking(dst.copy_files, src, jobs)
        finally:
            self.stats.in_flight -= len(items)
        for info, result in zip(items, results, strict=True):
            if isinstance(result, Exception):
                await self._after_batch_failure(info, result)
            else:
                self._done(info, LocalBackend.written_info(info.key, result), "local_batch")
                self.stats.moved_bytes += result.size

    def _file_processes(self) -> FileCopyProcesses | None:
        """The worker processes for small local files, started once the job has listed enough of them."""
        if self._processes is None:
            if (not self.options.processes or self._small_listed < self.options.processes_after
                    or not processes_allowed()):
                return None
            src, dst = direct_files(self.src), direct_files(self.dst)
            self._processes = FileCopyProcesses(str(src.root), str(dst.root), hash_files=self.options.verify,
                                                processes=self.options.processes)
        return None if self._processes.broken else self._processes

    async def _put_batch(self, items: list[ObjectInfo]) -> None:
        """Read a batch of small local files in one thread call, then put them one by one.

        Each put keeps this worker's one slot of ``transfers``; a file that
        fails (to read or to put) goes through the per-object path, which
        retries with backoff.
        """
        src = direct_files(self.src)

        def read_all() -> list[bytes | Exception]:
            out: list[bytes | Exception] = []
            for info in items:
                try:
                    out.append(src.read_file(info.key, info.version))
                except Exception as exc:  # each object succeeds or fails on its own
                    out.append(exc)
            return out

        for info, data in zip(items, await src.run_blocking(read_all), strict=True):
            if isinstance(data, Exception):
                await self._after_batch_failure(info, data)
                continue
            self.stats.in_flight += 1
            try:
                result = self._route_context.verified(info, await self.dst.put(info, body_from_bytes(data)))
            except Exception as exc:
                await self._after_batch_failure(info, exc)
            else:
                self.stats.moved_bytes += len(data)
                self._done(info, result, "batch_read")
            finally:
                self.stats.in_flight -= 1

    async def _after_batch_failure(self, info: ObjectInfo, exc: Exception) -> None:
        """A batched object failed: stop the job, try again on the per-object path, or report it."""
        if getattr(exc, "fatal", False):
            raise exc
        if getattr(exc, "retryable", False) and self.options.retry.attempts > 1:
            self._retrying(info, exc, 1, 0.0)
            await self._copy_one(info, attempts_used=1)  # retries with backoff
        else:
            self._failed(info, exc)

    async def _copy_one(self, info: ObjectInfo, attempts_used: int = 0) -> None:
        started = time.monotonic()
        self.stats.in_flight += 1
        policy = self.options.retry
        if attempts_used:  # replace() costs a few microseconds: per object, only when needed
            policy = replace(policy, attempts=policy.attempts - attempts_used)
        try:
            if (info.size or 0) > self.options.large_object and not self._local_to_local:
                if self._route_context.needs_prehash(info):
                    # before taking a large slot: the next files are hashed while
                    # those in the slots upload, instead of all pausing together
                    async with self._prehash_slots:
                        info = await retry_call(lambda: self._route_context.prehashed(info), policy,
                                                on_retry=lambda exc, n, d: self._retrying(info, exc, n, d))
                async with self._large_slots:
                    result, route = await self._transfer_with_retries(info, policy)
            else:
                result, route = await self._transfer_with_retries(info, policy)
        except Exception as exc:
            if getattr(exc, "fatal", False):
                raise
            self._failed(info, exc)
        else:
            self._done(info, result, route, time.monotonic() - started)
        finally:
            self.stats.in_flight -= 1

    async def _transfer_with_retries(self, info: ObjectInfo, policy: RetryPolicy) -> tuple[ObjectInfo, str]:
        return await retry_call(lambda: self._transfer(info), policy,
                                on_retry=lambda exc, n, d: self._retrying(info, exc, n, d))

    def _done(self, info: ObjectInfo, result: ObjectInfo, route: str, seconds: float | None = None) -> None:
        self.stats.done_objects += 1
        self.stats.done_bytes += result.size or 0
        self.stats.routes[route] += 1
        if self.recorder is not None:
            self.recorder.done(info, result)
        if self.report is not None:
            self.report.copied(info, result, route, seconds)
        log.info("object copied", key=info.key, bytes=result.size, route=route)

    def _failed(self, info: ObjectInfo, exc: BaseException) -> None:
        if isinstance(exc, WriteDenied) and not self.stats.done_objects:
            # refused before anything was written: every other object would be refused the same way
            raise JobAborted(f"{exc}: the destination refuses writes (credentials that may only read, or a "
                             "bucket policy); stopped before trying the other objects") from exc
        release_frames(exc)
        self.stats.record_failure(info.key, exc)
        if self.recorder is not None:
            self.recorder.failed(info, exc)
        if self.report is not None:
            self.report.failed(info, exc)
        log.error("object failed", key=info.key, reason=getattr(exc, "reason", type(exc).__name__),
                  error=str(exc))

    def _retrying(self, info: ObjectInfo, exc: BaseException, attempt: int, delay: float) -> None:
        self.stats.retries += 1
        log.warning("retrying", key=info.key, attempt=attempt, delay=round(delay, 2),
                    reason=getattr(exc, "reason", "error"), error=str(exc))

    async def _transfer(self, info: ObjectInfo) -> tuple[ObjectInfo, str]:
        route = next(r for r in self._routes if r.serves(info))
        try:
            result = await route.copy(info)
        except CantCopy as exc:
            if route is self._streamed:
                raise
            log.info("route cannot copy: streaming", key=info.key, route=route.name, error=str(exc))
            route = self._streamed
            result = await route.copy(info)
        return result, route.name


async def resolve_source(location: Any) -> tuple[Backend, str | None]:
    """Open a source location: a tree, or a single object (``copy file.txt DST``).

    Returns the backend and, for a single object, its key relative to that
    backend. Raises :class:`NotFound` when there is nothing at the location.
    """
    backend: Backend = location.backend()
    try:
        split = location.split_last()
        missing: NotFound | None = None  # what the store said of the location as a folder
        try:
            await backend.check()
            if backend.features.local_path:
                if os.path.isfile(location.args[0]):
                    return await _single(backend, location)
                return backend, None
            async for _ in backend.list():
                return backend, None
        except NotFound as exc:
            if split is None or not backend.features.folders or backend.features.local_path:
                raise  # (a missing bucket or directory stays that)
            missing = exc  # a store with folders says "no such folder" of a file: perhaps it names one object
        # nothing under it as a prefix: perhaps it names one object
        if split is not None:
            parent_loc, name = split
            parent = parent_loc.backend()
            try:
                await parent.stat(name)
            except NotFound:
                await parent.aclose()
            else:
                await backend.aclose()
                return parent, name
        if missing is not None:
            raise missing
        if _has_path(location):
            raise NotFound("nothing found at this source", backend=backend.describe())
        return backend, None
    except BaseException:
        await backend.aclose()
        raise


async def _single(backend: Backend, location: Any) -> tuple[Backend, str]:
    parent_loc, name = location.split_last()
    await backend.aclose()
    return parent_loc.backend(), name


def _has_path(location: Any) -> bool:
    if location.kind == "s3":
        return bool(location.args[1])
    if location.kind == "yandex_disk":
        return location.kwargs.get("root", "/").strip("/") != ""
    return True

