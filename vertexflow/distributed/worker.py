"""What a Dask worker runs: one shard of a copy, sync or verify job.

The task carries only what a user types: the two location specs, the path
of the config file, filters and options. The worker rebuilds the backends
from them with its *own* config file and environment
(:func:`vertexflow.locations.parse_location`), which is how credentials
reach it: they are never in a task, a result or a log line.

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
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
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
    #: copy/sync: compare, delete, max_delete, transfers, retries, verify;
    #: verify: mode, sample, fix, transfers
    options: dict[str, Any]
    #: the stage/middleware options given (``middleware.options.given_options``), bandwidth excluded
    middleware: dict[str, Any] = field(default_factory=dict)
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
    from ..ops import copy, sync, verify  # noqa: F401
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
    from ..config import load_config
    from ..locations import parse_location
    from ..ops.copy import CopyOptions, resolve_source
    from ..ops.sync import SyncJob, SyncOptions
    from ..retry import RetryPolicy
    from ..state.journal import Journal

    config = load_config(task.config_path)
    src_loc, dst_loc = parse_location(task.src, config), parse_location(task.dst, config)
    o = task.options
    options = SyncOptions(mode=task.kind, delete=o.get("delete", False),  # type: ignore[arg-type]
                          max_delete=o.get("max_delete"), compare=o.get("compare", "size_mtime"),
                          filter=task.shard_filter(), stages=_stage_options(task.middleware),
                          copy=CopyOptions(transfers=o["transfers"], retry=RetryPolicy(attempts=o["retries"]),
                                           verify=o.get("verify", True)))
    layers = _middleware(task, config, src_loc, dst_loc, options)
    if bandwidth is not None:
        layers = replace(layers, bandwidth=bandwidth)
    source, single_key = await resolve_source(src_loc)
    with tempfile.TemporaryDirectory(prefix="vertexflow-shard-") as tmp:
        async with source, dst_loc.backend() as target, await Journal.open(os.path.join(tmp, "j.db")) as journal:
            await SyncJob(layers.source(source, stats), layers.destination(target, stats), journal,
                          src_spec=src_loc.canonical, dst_spec=dst_loc.canonical, options=options,
                          single_key=single_key, stats=stats, stop=stop).run()
    stats.job_id = None  # the shard's journal is thrown away; the driver's job id is the one to show
    return {"stats": stats.summary(), "planned_deletes": stats.planned_deletes}


async def _verify(task: ShardTask, stop: Any) -> dict[str, Any]:
    from ..config import load_config
    from ..locations import parse_location
    from ..ops.copy import CopyJob, CopyOptions, resolve_source
    from ..ops.verify import VerifyJob

    config = load_config(task.config_path)
    src_loc, dst_loc = parse_location(task.src, config), parse_location(task.dst, config)
    o, filt = task.options, task.shard_filter()
    source, _ = await resolve_source(src_loc)
    async with source, dst_loc.backend() as target:
        job = VerifyJob(source, target, mode=o["mode"], filt=filt, sample=o["sample"], workers=o["transfers"],
                        stop=stop)
        report = await job.run()
        result: dict[str, Any] = {"before_fix": None, "fixed": 0, **report.as_dict()}
        if o.get("fix") and not report.ok:
            keys = job.keys_to_fix()

            async def items():  # type: ignore[no-untyped-def]
                for key in keys:
                    yield await source.stat(key)

            stats = JobStats()
            await CopyJob(source, target, CopyOptions(transfers=o["transfers"]), items=items(), stats=stats).run()
            again = await VerifyJob(source, target, mode=o["mode"], filt=filt, sample=o["sample"],
                                    workers=o["transfers"]).run()
            result = {"before_fix": report.as_dict(), "fixed": stats.done_objects, **again.as_dict()}
    return {"report": result}


def _stage_options(given: dict[str, Any]) -> dict[str, Any]:
    from ..middleware.options import STAGE_NAMES

    return {n: v for n, v in given.items() if n in STAGE_NAMES}


def _middleware(task: ShardTask, config: Any, src_loc: Any, dst_loc: Any, options: Any) -> Any:
    """The job's stages and adaptive concurrency, rebuilt from the options as the CLI parses them."""
    import click

    from ..middleware.options import JobMiddleware, as_arguments, middleware_options

    def command(**kw: Any) -> None:  # pragma: no cover - never invoked, only parsed
        pass

    for opt in reversed(middleware_options):
        command = opt(command)
    kw = click.command()(command).make_context("shard", as_arguments(task.middleware)).params
    return JobMiddleware.from_cli(kw, config=config, src=src_loc, dst=dst_loc,
                                  transfers=options.copy.transfers, retry=options.copy.retry)


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
