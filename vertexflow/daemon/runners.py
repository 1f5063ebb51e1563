"""Job kinds: each ``kind`` of ``[[jobs]]`` is one adapter class registered here.

A runner is built once per job (and again when a reload changes the job) and
its :meth:`Runner.run` is called for every run. The contract:

* ``run(stats, stop)`` does one run and returns when it is finished or
  stopped. It fills ``stats`` (:class:`~vertexflow.pipeline.stats.JobStats`)
  as it goes: the daemon reads it live for the API, dashboard and metrics.
* ``stop.request_graceful()`` means: start no new object, let those in
  flight finish, flush the journal, return (``stats.interrupted`` set).
  ``stop.request_hard()`` aborts transfers in flight; cleanup still runs.
* A fatal problem raises (a :class:`~vertexflow.errors.VertexflowError`
  preferably); per-object failures are counted in ``stats``, not raised.
* A rerun of an interrupted run continues it (the journal's fingerprint).
* ``check(spec)`` (a class method) raises :class:`ConfigError` for a job this
  kind cannot run, at config load, so a bad job never starts the daemon.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    from ..config import Config
    from ..pipeline.runner import StopSignal
    from ..pipeline.stats import JobStats
    from ..state.journal import Journal
    from ..throttle import TokenBucket
    from .config import JobSpec


#: finished journal runs kept per sync job (older ones are forgotten), and how far back to look
JOURNAL_RUNS_KEPT = 10
JOURNAL_SCAN = 500


class ThrottleCounters:
    """How often and how long a job's transfers waited for its bandwidth limit, by direction."""

    def __init__(self) -> None:
        self.waits: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()


class CountingBucket:
    """A token bucket that counts the calls that had to wait (the rest is the bucket's)."""

    #: shorter waits are the bucket's normal pacing of slices, not a throttle wait
    THRESHOLD = 0.001

    def __init__(self, inner: TokenBucket, direction: str, counters: ThrottleCounters) -> None:
        self.inner, self.direction, self.counters = inner, direction, counters

    def slice_size(self) -> int:
        return self.inner.slice_size()

    @property
    def passed(self) -> int:
        return self.inner.passed

    async def consume(self, n: int) -> None:
        t0 = time.monotonic()
        await self.inner.consume(n)
        waited = time.monotonic() - t0
        if waited > self.THRESHOLD:
            self.counters.waits[self.direction] += 1
            self.counters.seconds[self.direction] += waited


class Runner:
    """The base of every job kind's adapter."""

    kind: ClassVar[str]
    #: ``source`` and ``dest`` are locations (paths are taken from the config file's directory)
    locations: ClassVar[bool] = True
    #: whether a run writes a per-object report (``--report``'s lines), which the daemon keeps
    reports: ClassVar[bool] = False
    #: where the run about to start writes it (set by the controller for each run of a kind that reports)
    report_path: str | None = None

    def __init__(self, spec: JobSpec, *, remotes: Config, journal: Journal) -> None:
        self.spec, self.remotes, self.journal = spec, remotes, journal
        self.throttle = ThrottleCounters()

    @classmethod
    def check(cls, spec: JobSpec) -> None:
        """Raise ConfigError if this kind cannot run ``spec``."""

    async def run(self, stats: JobStats, stop: StopSignal) -> None:
        raise NotImplementedError

    @classmethod
    def settle(cls, spec: JobSpec, base: Path) -> JobSpec:
        """The job as this kind runs it (at config load): settings it takes from elsewhere filled in."""
        return spec

    #: the keys ``options`` may hold
    OPTIONS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def _known_options(cls, options: dict[str, Any]) -> None:
        unknown = sorted(set(options) - set(cls.OPTIONS))
        if unknown:
            raise ConfigError(f"options: unknown {', '.join(unknown)} "
                              f"({cls.kind} jobs take {', '.join(cls.OPTIONS) or 'none'})")

    async def has_unfinished_run(self) -> bool:
        """Whether the journal holds an interrupted run of this job (run it at start)."""
        return False

    async def last_success(self) -> float | None:
        """When a run of this job last succeeded, from records that outlive the daemon (None: unknown)."""
        return None

    def bandwidth_now(self) -> str | None:
        """The bandwidth limit in force now, for the dashboard (None: no limit)."""
        if not self.spec.bwlimit:
            return None
        from ..pipeline.progress import human_bytes
        from ..throttle import parse_bwlimit

        rates = parse_bwlimit(self.spec.bwlimit, "bwlimit").rates_at(datetime.now())

        def show(rate: float | None) -> str:
            return "off" if rate is None else f"{human_bytes(int(rate))}/s"

        if rates.up is None and rates.down is None:
            return None
        return show(rates.up) if rates.up == rates.down else f"up {show(rates.up)}, down {show(rates.down)}"

    def watch_path(self) -> str | None:
        """The local directory whose changes trigger a run (continuous jobs), if any."""
        return None

    def remotes_in_flight(self, stats: JobStats) -> dict[str, int]:
        """Requests in flight by remote (its description)."""
        return {}


class SyncRunner(Runner):
    """``kind = "sync"``: :class:`~vertexflow.ops.sync.SyncJob` from ``source`` to ``dest``."""

    kind = "sync"
    reports = True

    def __init__(self, spec: JobSpec, *, remotes: Config, journal: Journal) -> None:
        super().__init__(spec, remotes=remotes, journal=journal)
        from ..ops.assembly import Transfer

        checked = Transfer.prepare(self.transfer_spec(spec), remotes)  # a bad job stops the daemon at load
        self.src_loc, self.dst_loc = checked.src, checked.dst
        self._dest_description: str | None = None

    @staticmethod
    def transfer_spec(spec: JobSpec) -> Any:
        """The job spec of a ``[[jobs]]`` entry of kind sync (its filter files read now)."""
        return spec.transfer_spec()

    @classmethod
    def check(cls, spec: JobSpec) -> None:
        if spec.options:
            raise ConfigError(f"options: sync jobs take none (got {', '.join(sorted(spec.options))})")

    def _count_waits(self, layers: Any) -> Any:
        for bw in (layers.bandwidth, layers.source_bandwidth, layers.dest_bandwidth):
            if bw is not None:  # count the waits: buckets are read when the backends are wrapped
                bw.up = CountingBucket(bw.up, "up", self.throttle) if bw.up else None
                bw.down = CountingBucket(bw.down, "down", self.throttle) if bw.down else None
        return layers

    async def run(self, stats: JobStats, stop: StopSignal) -> None:
        def opened(source: Any, target: Any) -> None:
            self._dest_description = target.describe()

        from ..ops.assembly import Transfer

        # prepared afresh for every run: age filters count from now, bandwidth buckets start empty
        spec = dataclasses.replace(self.transfer_spec(self.spec), report=self.report_path)
        transfer = Transfer.prepare(spec, self.remotes).with_layers(self._count_waits)
        await transfer.run(stats, stop, journal=self.journal, on_open=opened)
        if stats.job_id is not None and not stop.stopping:
            await self._forget_old_runs(stats.job_id)

    async def _forget_old_runs(self, current: int) -> None:
        """Keep the journal's record of this pair to its newest finished runs.

        A continuous job may run every few seconds for months: one journal job
        per run would grow without bound. What makes later syncs cheap (the
        destination index) is kept per destination, not per run, and stays.
        """
        src, dst = self.src_loc.canonical, self.dst_loc.canonical
        done = [j.id for j in await self.journal.list_jobs(limit=JOURNAL_SCAN)
                if j.kind == "sync" and j.src == src and j.dst == dst and j.state == "done" and j.id != current]
        for job_id in sorted(done, reverse=True)[JOURNAL_RUNS_KEPT - 1:]:
            await self.journal.forget_job(job_id)

    async def has_unfinished_run(self) -> bool:
        src, dst = self.src_loc.canonical, self.dst_loc.canonical
        for job in await self.journal.list_jobs(limit=500):
            if job.kind == "sync" and job.src == src and job.dst == dst:
                return job.state != "done"  # the newest run of this pair decides
        return False

    async def last_success(self) -> float | None:
        src, dst = self.src_loc.canonical, self.dst_loc.canonical
        for job in await self.journal.list_jobs(limit=JOURNAL_SCAN):
            if job.kind == "sync" and job.src == src and job.dst == dst and job.state == "done":
                failed = (job.summary or {}).get("failed", 0)
                return job.updated if not failed else None
        return None

    def watch_path(self) -> str | None:
        return str(self.src_loc.args[0]) if self.src_loc.kind == "local" else None

    def remotes_in_flight(self, stats: JobStats) -> dict[str, int]:
        report = stats.reporters.get("concurrency")
        out = {name: limiter.in_flight for name, limiter in getattr(report, "limiters", {}).items()}
        if self._dest_description and self._dest_description not in out:
            out[self._dest_description] = stats.in_flight  # local disk: one request per object in flight
        return out


class BackupRunner(Runner):
    """``kind = "backup"``: a new backup of ``source`` into ``dest`` (:mod:`vertexflow.ops.backup`),
    then retention: all but the newest ``keep`` complete backups of the type are deleted.

    ``options``: ``type`` (``storage`` [default], ``full``: ``source`` plus the
    database ``db``, ``database``: ``source`` is the database file),
    ``compress`` (``gzip`` [default], ``zstd:3``...), ``chunk_size`` (``100M``),
    ``keep`` (none: keep all), ``grace`` (``1h``: incomplete backups younger
    than this are left alone by the pruning). ``type = "platform"``: the whole
    platform whose storage_config.json is ``source`` (database ``db``), on the
    schedule and keep of its ``backup`` section (:mod:`.platform_backup`).

    A backup is one unit: a graceful stop lets it finish (the drain timeout
    then aborts it); an aborted one has no ``metadata.json``, is never taken
    for a backup, and is pruned after ``grace``. There is nothing to resume:
    the next run writes a new backup.
    """

    kind = "backup"
    module = "vertexflow.ops.backup"
    OPTIONS = ("type", "db", "compress", "chunk_size", "keep", "grace", "allow_incomplete")

    def __init__(self, spec: JobSpec, *, remotes: Config, journal: Journal) -> None:
        super().__init__(spec, remotes=remotes, journal=journal)
        from ..locations import parse_location

        self.settings = self._settings(spec)
        self.src_loc = (parse_location(spec.source, remotes) if self.settings["type"] not in ("database", "platform")
                        else None)
        self.dst_loc = parse_location(spec.dest, remotes)

    @classmethod
    def _settings(cls, spec: JobSpec) -> dict[str, Any]:
        from ..filters import parse_age, parse_size

        o = spec.options
        cls._known_options(o)
        kind = o.get("type", "storage")
        if kind not in ("full", "database", "storage", "platform"):
            raise ConfigError(f"options.type: {kind!r}: use storage, full or database, or platform (the platform of "
                              "the storage config that is the source)")
        if kind == "platform":
            from .platform_backup import check_options

            check_options(o)
        elif "allow_incomplete" in o:
            raise ConfigError("options.allow_incomplete: goes with type = \"platform\"")
        if kind == "full" and not isinstance(o.get("db"), str):
            raise ConfigError("options.db: a full backup needs the database path")
        keep = o.get("keep")
        if keep is not None and (not isinstance(keep, int) or isinstance(keep, bool) or keep < 1):
            raise ConfigError("options.keep: must be a whole number of backups, at least 1")
        try:
            from ..transforms.compression import parse_codec

            codec = parse_codec(str(o.get("compress", "gzip")))
            chunk = parse_size(str(o.get("chunk_size", "100M")))
            grace = parse_age(str(o.get("grace", "1h"))).total_seconds()
        except ConfigError as exc:
            raise ConfigError(f"options: {exc}") from None
        db = o.get("db") if kind in ("full", "platform") else spec.source if kind == "database" else None
        return {"type": kind, "db": db, "codec": codec, "chunk": chunk, "keep": keep, "grace": grace}

    def bandwidth_now(self) -> str | None:
        return None  # a backup's writes are not limited (``bwlimit`` applies to sync and migrate jobs)

    @classmethod
    def check(cls, spec: JobSpec) -> None:
        try:
            from ..ops.backup.catalog import delete_backup, plan_prune, scan  # noqa: F401
            from ..ops.backup.create import CreateOptions, create_backup  # noqa: F401
        except ImportError as exc:
            raise ConfigError(f"kind: backup jobs need vertexflow.ops.backup ({exc})") from None
        if spec.continuous:
            raise ConfigError("continuous: backup jobs run on a schedule, not on filesystem events")
        cls._settings(spec)

    @classmethod
    def settle(cls, spec: JobSpec, base: Path) -> JobSpec:
        if spec.options.get("type") != "platform":
            return spec
        from .platform_backup import settle

        return settle(spec, base)

    async def run(self, stats: JobStats, stop: StopSignal) -> None:
        if self.settings["type"] == "platform":
            from . import platform_backup

            self.last_backup = await platform_backup.run(self.spec, self.settings, self.dst_loc, stats, stop)
            return
        import os

        import anyio

        from ..middleware.progress import ListedReads, count_listing
        from ..ops.backup.catalog import delete_backup, plan_prune, scan
        from ..ops.backup.create import CreateOptions, create_backup

        s = self.settings
        db_size = os.path.getsize(s["db"]) if s["db"] and os.path.isfile(s["db"]) else 0
        with anyio.CancelScope() as scope:
            stop.attach(scope)  # a hard stop (drain timeout, cancel) aborts the backup
            async with self.dst_loc.backend() as dest:
                if self.src_loc is None:
                    stats.listed_objects, stats.listed_bytes, stats.listing_done = 1, db_size, True
                    result = await create_backup(dest, CreateOptions(kind=s["type"], codec=s["codec"],
                                                                     chunk_size=s["chunk"], db_path=s["db"]))
                else:
                    async with self.src_loc.backend() as source, anyio.create_task_group() as tg:
                        await source.check()
                        if s["db"]:
                            stats.listed_objects, stats.listed_bytes = 1, db_size
                        tg.start_soon(count_listing, source, stats)  # the total, for the fraction and the ETA
                        result = await create_backup(dest, CreateOptions(
                            kind=s["type"], codec=s["codec"], chunk_size=s["chunk"], db_path=s["db"],
                            storage=ListedReads(source, stats, db_size if s["db"] else None),
                            storage_spec=self.src_loc.canonical))
                        tg.cancel_scope.cancel()
                meta = result.metadata
                files = meta.storage.files if meta.storage else 0
                size = (meta.storage.bytes if meta.storage else 0) + (meta.database.size if meta.database else 0)
                stats.listed_objects = stats.done_objects = files + (1 if meta.database else 0)
                stats.listed_bytes = stats.done_bytes = size
                stats.moved_bytes = max(stats.moved_bytes, size)  # never backwards: the rate is taken from it
                stats.listing_done = True
                self.last_backup = meta.id
                if s["keep"] is not None:
                    for entry in plan_prune(await scan(dest), s["keep"], grace=s["grace"]):
                        await delete_backup(dest, entry)
                        stats.deleted_objects += 1
        if scope.cancelled_caught:
            stats.interrupted = True


class MigrateRunner(Runner):
    """``kind = "migrate"``: move company ``source`` (id or slug) to connection ``dest``
    (:func:`vertexflow.ops.migrate.migrate_company`), for a migration to run in a window.

    ``options``: ``db`` (the platform database) and ``storage_config`` (its
    ``storage_config.json``), both required; ``live`` (true [default]: dual
    writes and a short write fence, no downtime); ``categories`` (slugs also
    provisioned on the target). ``filters`` make each run a staged copy: it copies the
    files they select and switches only once every file of the company is on the target
    (:mod:`vertexflow.ops.migrate`). A pause or a window's end stops the copy gracefully.

    A company already on ``dest`` is a successful run with nothing to do, so a
    schedule may keep the job after the move. A stopped or failed migration
    rolls back by itself (the company stays where it was) and the next run
    starts it again; its copy resumes from the journal.
    """

    kind = "migrate"
    locations = False
    OPTIONS = ("db", "storage_config", "live", "categories")

    def __init__(self, spec: JobSpec, *, remotes: Config, journal: Journal) -> None:
        super().__init__(spec, remotes=remotes, journal=journal)
        self.settings = self._settings(spec)
        self.last_result: dict[str, Any] | None = None

    @classmethod
    def _settings(cls, spec: JobSpec) -> dict[str, Any]:
        o = spec.options
        cls._known_options(o)
        for name in ("db", "storage_config"):
            if not isinstance(o.get(name), str) or not o[name]:
                raise ConfigError(f"options.{name}: a migrate job needs the platform's {name.replace('_', ' ')} path")
        live = o.get("live", True)
        if not isinstance(live, bool):
            raise ConfigError("options.live: must be true or false")
        categories = o.get("categories", [])
        if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            raise ConfigError("options.categories: must be a list of category slugs")
        return {"db": o["db"], "storage_config": o["storage_config"], "live": live, "categories": tuple(categories)}

    @classmethod
    def check(cls, spec: JobSpec) -> None:
        if spec.continuous:
            raise ConfigError("continuous: migrate jobs run on a schedule or on demand, not on filesystem events")
        cls._settings(spec)
        cls.settings_of(spec).check()

    @staticmethod
    def settings_of(spec: JobSpec) -> Any:
        """How the migration's copies run: the job's bandwidth limit, transfers, retries and verification."""
        from ..ops.spec import TransferSettings

        return TransferSettings(transfers=spec.transfers, retries=spec.retries, verify=spec.verify,
                                bwlimit=spec.bwlimit)

    async def run(self, stats: JobStats, stop: StopSignal) -> None:
        import anyio

        from ..ops.migrate import migrate_company, resolve_target
        from ..tenancy.manager import StorageManager

        s = self.settings
        with anyio.CancelScope() as scope:
            stop.attach(scope)  # a hard stop aborts; the migration then rolls back by itself
            async with StorageManager.open(s["storage_config"], s["db"]) as manager:
                company = manager.company(self.spec.source)
                target, _ = resolve_target(manager, company, self.spec.dest)
                if company.placement == target:
                    stats.listing_done = True
                    self.last_result = {"state": "already there", "company": company.slug}
                    return
                result = await migrate_company(manager, self.spec.source, self.spec.dest, live=s["live"],
                                               filt=self.spec.filters.build(), journal=self.journal,
                                               categories=s["categories"], settings=self.settings_of(self.spec),
                                               stats=stats, stop=stop)
                self.last_result = result.as_dict()
                stats.listing_done = True
        if scope.cancelled_caught:
            stats.interrupted = True


class SmokeRunner(Runner):
    """``kind = "smoke"``: a periodic health check of company ``source`` (id or slug): upload, read back,
    fetch by public URL and delete a test file, and read an existing one, on the content types ``dest``
    names (comma-separated; ``*``: every one), through the platform's StorageManager
    (:func:`vertexflow.ops.smoke.smoke_company`).

    ``options``: ``db`` and ``storage_config`` (the platform's database and storage config), required.
    A passed step counts as an object done, a failed one as an object failed (named ``<content
    type>/<step>`` with what failed and where), so a failing check is a partial run: logged as an
    error, shown on the dashboard and counted in the job's metrics. ``last_result`` is the report.
    """

    kind = "smoke"
    locations = False
    OPTIONS = ("db", "storage_config")

    def __init__(self, spec: JobSpec, *, remotes: Config, journal: Journal) -> None:
        super().__init__(spec, remotes=remotes, journal=journal)
        self.settings = self._settings(spec)
        self.last_result: dict[str, Any] | None = None

    @classmethod
    def _settings(cls, spec: JobSpec) -> dict[str, Any]:
        o = spec.options
        cls._known_options(o)
        for name in ("db", "storage_config"):
            if not isinstance(o.get(name), str) or not o[name]:
                raise ConfigError(f"options.{name}: a smoke job needs the platform's {name.replace('_', ' ')} path")
        names = [n.strip() for n in spec.dest.split(",") if n.strip()]
        if not names:
            raise ConfigError("dest: the content types to check, comma-separated, or * for every one")
        return {"db": o["db"], "storage_config": o["storage_config"],
                "content_types": None if names == ["*"] else names}

    @classmethod
    def check(cls, spec: JobSpec) -> None:
        if spec.continuous:
            raise ConfigError("continuous: smoke jobs run on a schedule or on demand, not on filesystem events")
        cls._settings(spec)

    async def run(self, stats: JobStats, stop: StopSignal) -> None:
        from ..ops.smoke import smoke_company
        from ..pipeline.stats import Failure
        from ..tenancy.manager import StorageManager

        s = self.settings
        async with StorageManager.open(s["storage_config"], s["db"]) as manager:
            report = await smoke_company(manager, self.spec.source, content_types=s["content_types"])
        for step in report.steps:
            if step.ok is False:
                stats.failed_objects += 1
                stats.failures_by_reason["smoke"] += 1
                stats.failures.append(Failure(f"{step.content_type}/{step.step}", "smoke",
                                              f"{step.detail} (on {report.routes.get(step.content_type)})"))
            elif step.ok:
                stats.done_objects += 1
            else:
                stats.skipped_objects += 1
        stats.listing_done = True
        self.last_result = report.as_dict()


RUNNERS: dict[str, type[Runner]] = {r.kind: r for r in (SyncRunner, BackupRunner, MigrateRunner, SmokeRunner)}


def runner_class(kind: str) -> type[Runner]:
    try:
        return RUNNERS[kind]
    except KeyError:
        raise ConfigError(f"kind: unknown job kind {kind!r} (known: {', '.join(RUNNERS)})") from None


def kinds() -> Sequence[str]:
    return tuple(RUNNERS)
