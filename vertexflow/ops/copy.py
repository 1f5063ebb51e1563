"""``copy SRC DST``: put every object of SRC under DST.

The job is one pipeline (:mod:`vertexflow.pipeline.runner`): the source
listing is streamed into a bounded queue and drained by ``transfers``
workers. Each object is moved by the cheapest route its two ends allow,
chosen once per job:

* local -> local: one worker-thread call per object, or per batch of small
  files, reading, hashing and writing each byte once (``copy_file_range``
  when hashing is off);
* same store (S3 -> S3 on one endpoint): the server copies;
* local -> anywhere: a small file is read (and checked against its listed
  version) in one thread call, then put from memory; a large one is streamed;
* anything else: ``src.open`` streamed into ``dst.put``.

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

from ..backends.base import Backend, UploadCheckpoint
from ..backends.local import SMALL_FILE, LocalBackend, mtime_ns_of
from ..backends.local_processes import FileCopyProcesses, processes_allowed
from ..errors import IntegrityError, JobAborted, NotFound, ProcessesUnavailable, SourceChanged, VertexflowError, first_error
from ..logs import get_logger
from ..middleware.stages import TransformedBackend
from ..model import SHA256, BodyFactory, ObjectInfo, body_from_bytes
from ..pipeline.runner import StopSignal, run_pipeline
from ..pipeline.stats import JobStats
from ..retry import RetryPolicy, release_frames, retry_call

log = get_logger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyOptions:
    # 8 transfers keep a 2-core machine's disks and both cores busy; remote
    # stores want more in flight (the CLI default for them is 16).
    transfers: int = 8
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
    else the whole listing of ``src``.
    """

    def __init__(self, src: Backend, dst: Backend, options: CopyOptions | None = None, *,
                 single_key: str | None = None, items: AsyncIterator[ObjectInfo] | None = None,
                 recorder: Recorder | None = None,
                 checkpoints: Callable[[ObjectInfo], UploadCheckpoint] | None = None,
                 stats: JobStats | None = None,
                 stop: StopSignal | None = None) -> None:
        self.src = src
        self.dst = dst
        self.options = options or CopyOptions()
        self.single_key = single_key
        self.source_items = items
        self.recorder = recorder
        #: gives the durable checkpoint of an object's upload (from the journal)
        self.checkpoints = checkpoints
        self._large_slots = anyio.CapacityLimiter(self.options.large_transfers)
        #: large local files hashed at once ahead of their upload (a core each)
        self._prehash_slots = anyio.CapacityLimiter(max(1, min(self.options.large_transfers, os.cpu_count() or 1)))
        self.stats = stats or JobStats()
        self.stop = stop or StopSignal()
        self._local_to_local = isinstance(dst, LocalBackend) and isinstance(src, LocalBackend)
        self._server_side = dst.features.server_side_copy and dst.same_store(src)
        self._local_source = isinstance(src, LocalBackend)
        # small objects are read whole where the source has a cheaper way to (local files,
        # S3); elsewhere, and under a bandwidth limit (which paces the read and the write of
        # the same bytes together while they stream), they stream as large ones do
        self._whole_reads = type(src).read_whole is not Backend.read_whole
        # stages hash every byte as it streams, and store other bytes: no first pass over a file
        self._hashes_in_stream = isinstance(dst, TransformedBackend)
        # the SHA-256 a large object's stat gives checks its copy end to end (see _with_stat_hash)
        self._hash_by_stat = (self.options.verify and SHA256 in src.features.stat_hashes
                              and not self._hashes_in_stream)
        if isinstance(dst, LocalBackend):
            dst.hash_files = self.options.verify
        self._small_listed = 0
        self._processes: FileCopyProcesses | None = None
        #: batches of small files that worker processes copied
        self.process_batches = 0

    async def run(self) -> JobStats:
        """Run to the end (or until stopped); fatal errors raise :class:`JobAborted`."""
        try:
            await self.dst.check(write=True)
            await run_pipeline(self._items(), self._handle, workers=self.options.transfers,
                               queue_size=self.options.queue_size, stop=self.stop)
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
        async for info in self._listing():
            stats.listed_objects += 1
            stats.listed_bytes += info.size or 0
            if self._local_source and not self._server_side and (info.size or 0) <= SMALL_FILE:
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
        if isinstance(item, _Batch):
            await self._copy_batch(item.items)
        else:
            await self._copy_one(item)

    async def _copy_batch(self, items: list[ObjectInfo]) -> None:
        """Small local files: one worker-thread call reads (and, local -> local, writes) them all."""
        if not self._local_to_local:
            await self._put_batch(items)
            return
        src, dst = self.src, self.dst
        assert isinstance(src, LocalBackend) and isinstance(dst, LocalBackend)
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
                self._done(info, dst.written_info(info.key, result))
                self.stats.moved_bytes += result.size

    def _file_processes(self) -> FileCopyProcesses | None:
        """The worker processes for small local files, started once the job has listed enough of them."""
        if self._processes is None:
            if (not self.options.processes or self._small_listed < self.options.processes_after
                    or not processes_allowed()):
                return None
            src, dst = self.src, self.dst
            assert isinstance(src, LocalBackend) and isinstance(dst, LocalBackend)
            self._processes = FileCopyProcesses(str(src.root), str(dst.root), hash_files=dst.hash_files,
                                                processes=self.options.processes)
        return None if self._processes.broken else self._processes

    async def _put_batch(self, items: list[ObjectInfo]) -> None:
        """Read a batch of small local files in one thread call, then put them one by one.

        Each put keeps this worker's one slot of ``transfers``; a file that
        fails (to read or to put) goes through the per-object path, which
        retries with backoff.
        """
        src = self.src
        assert isinstance(src, LocalBackend)

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
                result = self._verified(info, await self.dst.put(info, body_from_bytes(data)))
            except Exception as exc:
                await self._after_batch_failure(info, exc)
            else:
                self.stats.moved_bytes += len(data)
                self._done(info, result)
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
        self.stats.in_flight += 1
        policy = self.options.retry
        if attempts_used:  # replace() costs a few microseconds: per object, only when needed
            policy = replace(policy, attempts=policy.attempts - attempts_used)
        try:
            if (info.size or 0) > self.options.large_object and not self._local_to_local:
                if self._needs_prehash(info):
                    # before taking a large slot: the next files are hashed while
                    # those in the slots upload, instead of all pausing together
                    async with self._prehash_slots:
                        info = await retry_call(lambda: self._prehashed(info), policy,
                                                on_retry=lambda exc, n, d: self._retrying(info, exc, n, d))
                async with self._large_slots:
                    result = await self._transfer_with_retries(info, policy)
            else:
                result = await self._transfer_with_retries(info, policy)
        except Exception as exc:
            if getattr(exc, "fatal", False):
                raise
            self._failed(info, exc)
        else:
            self._done(info, result)
        finally:
            self.stats.in_flight -= 1

    async def _transfer_with_retries(self, info: ObjectInfo, policy: RetryPolicy) -> ObjectInfo:
        return await retry_call(lambda: self._transfer(info), policy,
                                on_retry=lambda exc, n, d: self._retrying(info, exc, n, d))

    def _done(self, info: ObjectInfo, result: ObjectInfo) -> None:
        self.stats.done_objects += 1
        self.stats.done_bytes += result.size or 0
        if self.recorder is not None:
            self.recorder.done(info, result)

    def _failed(self, info: ObjectInfo, exc: BaseException) -> None:
        release_frames(exc)
        self.stats.record_failure(info.key, exc)
        if self.recorder is not None:
            self.recorder.failed(info, exc)
        log.error("object failed", key=info.key, reason=getattr(exc, "reason", type(exc).__name__),
                  error=str(exc))

    def _retrying(self, info: ObjectInfo, exc: BaseException, attempt: int, delay: float) -> None:
        self.stats.retries += 1
        log.warning("retrying", key=info.key, attempt=attempt, delay=round(delay, 2),
                    reason=getattr(exc, "reason", "error"), error=str(exc))

    async def _transfer(self, info: ObjectInfo) -> ObjectInfo:
        src, dst = self.src, self.dst
        if self._local_to_local:
            assert isinstance(src, LocalBackend) and isinstance(dst, LocalBackend)
            result = await dst.run_blocking(dst.copy_from_file, src.path_of(info.key), info, info)
            self.stats.moved_bytes += result.size or 0
            return self._verified(info, result)
        if self._server_side:
            result = await dst.server_copy(src, info, info.key)
            self.stats.server_side_copies += 1
            self.stats.moved_bytes += result.size or 0
            return self._verified(info, result)
        target = info
        if self._whole_reads and info.size is not None and info.size <= SMALL_FILE:
            data = await src.read_whole(info.key, limit=SMALL_FILE, if_version=info.version,
                                        on_bytes=self._moved)
            return self._verified(info, await dst.put(info, body_from_bytes(data)))
        if self._hash_by_stat and SHA256 not in info.hashes and (info.size or 0) > self.options.large_object:
            target = await self._with_stat_hash(info)
        if self._needs_prehash(info):
            target = await self._prehashed(info)
        if dst.features.resumable_uploads and self.checkpoints is not None:
            result = await dst.put(target, self._stream(info), checkpoint=self.checkpoints(info))  # type: ignore[call-arg]
        else:
            result = await dst.put(target, self._stream(info))
        return self._verified(target, result)

    def _needs_prehash(self, info: ObjectInfo) -> bool:
        return (self._local_source and self.options.verify and SHA256 not in info.hashes
                and not self._hashes_in_stream)

    async def _prehashed(self, info: ObjectInfo) -> ObjectInfo:
        """``info`` with the SHA-256 of its local file.

        Stores that keep the SHA-256 beside the object (S3 metadata) need it
        before a multipart upload starts; hashing the file first also proves
        the upload matches the file as listed.
        """
        src = self.src
        assert isinstance(src, LocalBackend)
        digest = await src.run_blocking(src.sha256, info.key)
        return replace(info, hashes={**info.hashes, SHA256: digest})

    async def _with_stat_hash(self, info: ObjectInfo) -> ObjectInfo:
        """``info`` with the SHA-256 the source's stat reports, so that the copy is checked against it.

        Listings of S3 do not carry the SHA-256 metadata, and a read of a large
        object cannot check its bytes otherwise (a multipart ETag is not a
        digest of them). The destination compares what it receives with the
        digest given (and an S3 destination stores it at creation). Only for
        objects over ``large_object`` bytes: beside them one more request is
        small, and smaller S3 objects come whole in one answer, checked by it.
        """
        head = await self.src.stat(info.key)
        digest = head.hashes.get(SHA256)
        if digest is None or (info.version is not None and head.version != info.version):
            return info  # none kept, or changed since listed (the read then says so)
        return replace(info, hashes={**info.hashes, SHA256: digest})

    def _moved(self, n: int) -> None:
        self.stats.moved_bytes += n

    def _stream(self, info: ObjectInfo) -> BodyFactory:
        src, stats = self.src, self.stats

        async def body() -> AsyncIterator[bytes]:
            async with src.open(info.key, if_version=info.version) as chunks:
                async for chunk in chunks:
                    stats.moved_bytes += len(chunk)
                    yield chunk

        return body

    def _verified(self, info: ObjectInfo, result: ObjectInfo) -> ObjectInfo:
        if info.size is not None and result.size is not None and info.size != result.size:
            raise SourceChanged(f"listed with {info.size} bytes, copied {result.size}",
                                backend=self.dst.describe(), key=info.key)
        expected, got = info.hashes.get(SHA256), result.hashes.get(SHA256)
        if expected and got and expected != got:
            raise IntegrityError("SHA-256 of the copy differs from the source's",
                                 backend=self.dst.describe(), key=info.key)
        return result


async def resolve_source(location: Any) -> tuple[Backend, str | None]:
    """Open a source location: a tree, or a single object (``copy file.txt DST``).

    Returns the backend and, for a single object, its key relative to that
    backend. Raises :class:`NotFound` when there is nothing at the location.
    """
    backend: Backend = location.backend()
    try:
        await backend.check()
        if isinstance(backend, LocalBackend):
            if backend.root.is_file():
                return await _single(backend, location)
            return backend, None
        async for _ in backend.list():
            return backend, None
        # nothing under it as a prefix: perhaps it names one object
        split = location.split_last()
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
        if _has_path(location):
            raise NotFound("nothing found at this source", backend=backend.describe())
        return backend, None
    except BaseException:
        await backend.aclose()
        raise


async def _single(backend: LocalBackend, location: Any) -> tuple[Backend, str]:
    parent_loc, name = location.split_last()
    await backend.aclose()
    return parent_loc.backend(), name


def _has_path(location: Any) -> bool:
    if location.kind == "s3":
        return bool(location.args[1])
    if location.kind == "yandex_disk":
        return location.kwargs.get("root", "/").strip("/") != ""
    return True

