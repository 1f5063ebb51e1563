"""What a Dask worker runs: one shard of a copy, sync or verify job.

A copy or sync task carries the job spec (:class:`~vertexflow.ops.spec.TransferSpec`,
as plain data: the two location specs as typed, the path of the config
file, filters and options) and the shard's key range. The worker opens the
job from it through the one assembly path (:mod:`vertexflow.ops.assembly`)
with its *own* config file and environment, which is how credentials reach
it: they are never in a task, a result or a log line.

A shard runs vertexflow's ordinary async engine (``SyncJob`` or
``VerifyJob``) on the shard's key range, inside its own event loop, with a
throw-away journal: the driver's journal is the record of the job. Running
a shard again is harmless: objects already at the destination and
unchanged are skipped by the normal comparison, and every put replaces
its key whole.

While it runs, a reporter thread sends progress snapshots to the driver
through a ``distributed.Queue`` and reads the job's bandwidth share from a
``distributed.Variable`` (:mod:`.bandwidth`).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

import anyio

from ..errors import ClusterError, first_error
from ..filters import Filter
from ..logs import get_logger
from ..pipeline.stats import JobStats
from .bandwidth import POLL_SECONDS, ShardBandwidth
from .shards import listing_prefix

log = get_logger(__name__)

#: seconds between progress snapshots sent to the driver
REPORT_SECONDS = 0.5
#: JobStats counters a progress snapshot carries
SNAPSHOT_FIELDS = ("done_objects", "done_bytes", "moved_bytes", "skipped_objects", "failed_objects",
                   "retries", "in_flight", "deleted_objects")


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardTask:
    """One shard of a job, as sent to a worker. Holds no secret (checked by the tests)."""

    kind: str  # copy | sync | verify
    src: str
    dst: str
    config_path: str | None
    index: int
    start_at: str | None
    end_before: str | None
    #: the user's filter, as ``Filter.describe()`` gives it
    filter: dict[str, Any]
    #: verify: mode, sample, fix, transfers
    options: dict[str, Any]
    #: copy/sync: the job spec (``TransferSpec.to_dict()``), without journal
    spec: dict[str, Any] | None = None
    #: the job's (--bwlimit, --bwlimit-up, --bwlimit-down) and this shard's starting share
    bwlimit: tuple[str | None, str | None, str | None] = (None, None, None)
    share: float = 1.0
    #: names of the job's Dask queue (progress) and variable (bandwidth share)
    queue: str | None = None
    variable: str | None = None

    def shard_filter(self) -> Filter:
        from datetime import timedelta

        f = self.filter
        prefix = f.get("prefix") or ""
        return Filter(include=tuple(f.get("include", ())), exclude=tuple(f.get("exclude", ())),
                      min_size=f.get("min_size"), max_size=f.get("max_size"),
                      min_age=timedelta(seconds=f["min_age"]) if f.get("min_age") else None,
                      max_age=timedelta(seconds=f["max_age"]) if f.get("max_age") else None,
                      extensions=tuple(f.get("extensions", ())),
                      prefix=listing_prefix(self.start_at, self.end_before, prefix),
                      start_at=self.start_at, end_before=self.end_before)


async def warm(kinds: tuple[str, ...] = ()) -> None:
    """Start importing the engine and the backends of ``kinds`` in a thread, and return at once.

    The driver runs it on every worker (``Client.run(..., wait=False)``
    takes only coroutine functions, run on the worker's event loop, which
    must not block) while it lists the source: a fresh worker process
    otherwise pays these imports (about a second of CPU) when its first
    shard starts.
    """
    threading.Thread(target=_imports, args=(kinds,), name="vertexflow-warm", daemon=True).start()


def _imports(kinds: tuple[str, ...]) -> None:
    from ..backends import backend_class
    from ..ops import assembly, copy, sync, verify  # noqa: F401
    from ..state import journal  # noqa: F401

    for kind in kinds:
        backend_class(kind)


def run_shard(task: ShardTask) -> dict[str, Any]:
    """The Dask task: run ``task`` to the end; returns its summary (a plain dict).

    A fatal error (bad credentials, a missing bucket) raises, and Dask
    retries the task as the driver asked. Per-object failures do not raise:
    they are in the summary.
    """
    attempt = uuid.uuid4().hex[:8]
    stats = JobStats()
    bandwidth = ShardBandwidth.from_texts(task.bwlimit, task.share)
    reporter = _Reporter(task, attempt, stats, bandwidth)
    clock = _ByteClock()
    reporter.start()
    error: ClusterError | None = None
    try:
        if task.kind == "verify":
            def job(stop: Any) -> Any:
                return _verify(task, stop)
        else:
            def job(stop: Any) -> Any:
                return _transfer(task, stats, bandwidth, stop)
        result = run_loop(lambda: _stoppable(reporter.stop_requested, job, stats, clock))
    except BaseExceptionGroup as group:
        error = _plain(first_error(group))
    except Exception as exc:  # noqa: BLE001 - every error goes back to the driver, as plain text
        error = _plain(exc)
    finally:
        reporter.stop()
    if error is not None:
        raise error  # outside the handler: no link to the original (Dask must pickle what is raised)
    return {"shard": task.index, "attempt": attempt, "worker_pid": os.getpid(), "moving": clock.window(),
            **result}


def _plain(exc: BaseException) -> ClusterError:
    """What the driver gets for a failed shard: the error's class and message, nothing that may not pickle.

    Errors may hold live objects (sockets, event loops, tracebacks through
    them) that Dask cannot send back; messages never hold secrets.
    """
    return ClusterError(f"{type(exc).__name__}: {exc}")


class _ByteClock:
    """When the shard's bytes first and last moved (wall clock, within ``TICK`` s): its busy window."""

    TICK = 0.05

    def __init__(self) -> None:
        self.first: float | None = None
        self.last: float | None = None

    async def run(self, stats: JobStats) -> None:
        seen = 0
        while True:
            await anyio.sleep(self.TICK)
            if stats.moved_bytes != seen:
                seen = stats.moved_bytes
                self.last = time.time()
                if self.first is None:
                    self.first = self.last - self.TICK

    def window(self) -> list[float] | None:
        return [self.first, self.last] if self.first is not None and self.last is not None else None


async def _stoppable(requested: threading.Event, job: Any, stats: JobStats, clock: _ByteClock) -> Any:
    """Run ``job(stop)``; a stop the driver requests becomes a graceful stop of the shard."""
    from ..pipeline.runner import StopSignal

    stop = StopSignal()

    async def watch() -> None:
        while not requested.is_set():
            await anyio.sleep(POLL_SECONDS)
        stop.request_graceful()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        tg.start_soon(clock.run, stats)
        try:
            return await job(stop)
        finally:
            tg.cancel_scope.cancel()


async def _transfer(task: ShardTask, stats: JobStats, bandwidth: ShardBandwidth | None,
                    stop: Any) -> dict[str, Any]:
    from ..ops.assembly import Transfer
    from ..ops.spec import TransferSpec
    from ..config_file import load_remotes

    assert task.spec is not None, "a copy or sync shard carries its job spec"
    # the shard's key range, and a throw-away journal: the driver's journal is the record of the job
    spec = replace(TransferSpec.from_dict(task.spec), filter=task.shard_filter(), no_journal=True)
    transfer = Transfer.prepare(spec, load_remotes(task.config_path))
    if bandwidth is not None:
        transfer = transfer.with_layers(lambda layers: replace(layers, bandwidth=bandwidth))
    await transfer.run(stats, stop)
    return {"stats": stats.summary(), "planned_deletes": stats.planned_deletes}


async def _verify(task: ShardTask, stop: Any) -> dict[str, Any]:
    from ..locations import parse_location
    from ..ops.copy import resolve_source
    from ..ops.verify import verify_and_fix
    from ..config_file import load_remotes

    config = load_remotes(task.config_path)
    src_loc, dst_loc = parse_location(task.src, config), parse_location(task.dst, config)
    o = task.options
    source, _ = await resolve_source(src_loc)
    async with source, dst_loc.backend() as target:
        report = await verify_and_fix(source, target, mode=o["mode"], filt=task.shard_filter(), sample=o["sample"],
                                      workers=o["transfers"], fix=bool(o.get("fix")), stop=stop)
    return {"report": report}


class _Reporter:
    """A thread beside the shard's event loop: progress out, bandwidth share in.

    The Dask client calls block, so they stay off the shard's event loop.
    Without a running Dask worker (a direct call in tests) it does nothing.
    """

    def __init__(self, task: ShardTask, attempt: str, stats: JobStats, bandwidth: ShardBandwidth | None) -> None:
        self.task, self.attempt, self.stats, self.bandwidth = task, attempt, stats, bandwidth
        self._stop = threading.Event()
        #: set when the driver asks the job to stop (read by the shard's event loop)
        self.stop_requested = threading.Event()
        self._thread: threading.Thread | None = None
        self.queue = self.variable = None
        try:
            from distributed import Queue, Variable, get_client

            client = get_client()  # in the task's thread: the worker's client
        except (ImportError, ValueError):
            return
        self.queue = Queue(task.queue, client=client) if task.queue else None
        self.variable = Variable(task.variable, client=client) if task.variable else None

    def start(self) -> None:
        if self.queue is None and self.variable is None:
            return
        self._send({"event": "start"})
        self._poll_share()  # before the first byte: the share may have grown since the task was made
        self._thread = threading.Thread(target=self._loop, name=f"vertexflow-shard-{self.task.index}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._send({"event": "end"})

    def _loop(self) -> None:
        next_report = 0.0
        while not self._stop.wait(POLL_SECONDS):
            self._poll_share()
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + REPORT_SECONDS
                self._send({"event": "progress", **{f: getattr(self.stats, f) for f in SNAPSHOT_FIELDS}})

    def _poll_share(self) -> None:
        if self.variable is None:
            return
        try:
            control = self.variable.get(timeout=2)
        except Exception:  # noqa: BLE001 - driver gone or slow: keep the last share
            return
        if not isinstance(control, dict):
            return
        if control.get("stop"):
            self.stop_requested.set()
        share = control.get("share")
        if self.bandwidth is not None and isinstance(share, float) and 0 < share <= 1:
            self.bandwidth.share = share

    def _send(self, event: dict[str, Any]) -> None:
        if self.queue is None:
            return
        try:
            self.queue.put({"shard": self.task.index, "attempt": self.attempt, **event}, timeout=5)
        except Exception as exc:  # noqa: BLE001 - progress is best effort; the task's result is the record
            log.debug("progress not sent", shard=self.task.index, error=type(exc).__name__)


def run_loop(fn: Any) -> Any:
    """``fn()`` on a fresh event loop in this (the task's) thread, on uvloop where installed."""
    try:
        import uvloop  # noqa: F401
        options: dict[str, Any] = {"use_uvloop": True}
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        options = {}
    return anyio.run(fn, backend="asyncio", backend_options=options)
