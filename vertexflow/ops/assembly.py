"""The one assembly path: a job spec in, a running job out.

The command line, the daemon, a Dask shard, ``jobs resume`` and a company
migration all come here; none of them wraps a backend or builds a job
itself. For a transfer it goes:

1. :meth:`Transfer.prepare` checks the spec without touching the network:
   locations parsed against the config file, filters, stages and bandwidth
   limits built (a bad value raises :class:`~vertexflow.errors.ConfigError`
   naming it);
2. :meth:`Transfer.run` opens the two backends, puts the decorators the spec
   asks for around them (:class:`JobLayers`, which calls
   :func:`vertexflow.middleware.wrap.wrap`, the only function that stacks
   decorators), opens the journal (or a throw-away one) and runs a
   :class:`~vertexflow.ops.sync.SyncJob`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .overlap import check_overlap

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..locations import Location
    from ..pipeline.runner import StopSignal
    from ..pipeline.stats import JobStats
    from ..state.journal import Journal
    from ..throttle import Bandwidth
    from ..transforms import Stages
    from .plan import Decision
    from .spec import TransferSettings, TransferSpec
    from .sync import SyncOptions


@dataclass(frozen=True, slots=True)
class JobLayers:
    """What to put around a job's source and destination, built once per job from its settings.

    The job's bandwidth limit is one pair of buckets shared by both ends
    (reads count against ``down``, writes against ``up``); a remote's own
    limit from the config file applies to that remote alone.
    """

    source_stages: Stages
    dest_stages: Stages
    bandwidth: Bandwidth | None
    source_bandwidth: Bandwidth | None
    dest_bandwidth: Bandwidth | None
    adaptive: int | None  # most requests in flight to a remote store; None: off

    @classmethod
    def build(cls, settings: TransferSettings, *, transfers: int,
              source_limit: str | None = None, dest_limit: str | None = None) -> JobLayers:
        """Raises ConfigError naming a bad stage or limit. ``*_limit``: the remotes' own ``bwlimit``."""
        from ..throttle import Bandwidth

        return cls(source_stages=settings.source_stages(), dest_stages=settings.dest_stages(),
                   bandwidth=Bandwidth.from_options(settings.bwlimit, settings.bwlimit_up, settings.bwlimit_down),
                   source_bandwidth=Bandwidth.from_options(source_limit) if source_limit else None,
                   dest_bandwidth=Bandwidth.from_options(dest_limit) if dest_limit else None,
                   adaptive=transfers if settings.adaptive else None)

    def source(self, backend: Backend, stats: JobStats) -> Backend:
        return self._wrap(backend, self.source_stages, self.source_bandwidth, stats)

    def destination(self, backend: Backend, stats: JobStats) -> Backend:
        return self._wrap(backend, self.dest_stages, self.dest_bandwidth, stats)

    def _wrap(self, backend: Backend, stages: Stages, remote: Bandwidth | None, stats: JobStats) -> Backend:
        from ..middleware.wrap import wrap

        # local disk never answers "slow down"; leaving it bare keeps the engine's direct routes
        adaptive = None if backend.features.direct_files else self.adaptive
        return wrap(backend, stages=stages, bandwidth=self.bandwidth, remote_bandwidth=remote,
                    adaptive=adaptive, stats=stats)


def sync_options(spec: TransferSpec, *, local_only: bool) -> SyncOptions:
    """The engine's options for ``spec`` (the journal keeps the spec itself with the job)."""
    from ..retry import RetryPolicy
    from .copy import CopyOptions
    from .sync import SyncOptions

    s = spec.settings
    return SyncOptions(mode=spec.mode, delete=spec.delete, max_delete=spec.max_delete, compare=spec.compare,
                       dry_run=spec.dry_run, order_by=spec.order_by, filter=spec.filter,
                       stages={**s.stages.identity(), **s.metadata_identity()},
                       replay={**s.replay(), "spec": spec.to_dict()}, spec=spec,
                       copy=CopyOptions(transfers=s.transfers_for(local_only), retry=RetryPolicy(attempts=s.retries),
                                        verify=s.verify))


def with_metadata_options(location: Location, settings: TransferSettings) -> Location:
    """``location`` whose backend is told the job's metadata options and write settings.

    ``--no-metadata`` / ``--metadata-set``, ``--timeout`` / ``--contimeout``, and the settings every object is
    written with (storage class, encryption, ACL, tags, Content-Type globs,
    metadata exclusions), reach the backends themselves because every way an
    object is written passes their ``put`` (routes and batches alike), and
    because a source told not to carry metadata lists nothing to ask a stat
    for. A backend gets only the settings it declares it takes
    (``features.write_settings``); local disk keeps only mtimes, which it always keeps.
    """
    from ..backends import backend_class

    cls = backend_class(location.kind)
    options = {**settings.backend_options(cls.features), **settings.network_options(cls.features)}
    return replace(location, kwargs={**location.kwargs, **options}) if options else location


def _remote_limit(location: Location, config: Any) -> str | None:
    name = location.kwargs.get("name")
    remote = config.remotes.get(name) if name else None
    return remote.bwlimit if remote is not None else None


@asynccontextmanager
async def open_journal(path: str | None, disabled: bool) -> AsyncIterator[Journal]:
    """The journal at ``path`` (or the default), or a throw-away one (``disabled``)."""
    import sqlite3

    from ..state.journal import Journal, default_journal_path

    if disabled:
        async with Journal.temporary() as journal:
            yield journal
        return
    try:
        journal = await Journal.open(path)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(f"cannot open the journal {path or default_journal_path()}: {exc}") from exc
    async with journal:
        yield journal


@dataclass(frozen=True, slots=True)
class Transfer:
    """A copy or sync, checked and ready to run (:meth:`prepare`); run it as often as needed."""

    spec: TransferSpec
    config: Any
    src: Location
    dst: Location
    options: SyncOptions
    layers: JobLayers

    @classmethod
    def prepare(cls, spec: TransferSpec, config: Any = None) -> Transfer:
        """Check ``spec`` against ``config`` (its remotes; None: the spec's config file). Raises ConfigError."""
        from ..locations import parse_location
        from ..config_file import load_remotes

        if config is None:
            config = load_remotes(spec.config_path)
        src, dst = parse_location(spec.source, config), parse_location(spec.dest, config)
        check_overlap(src, dst, spec.filter, what=spec.mode)
        src, dst = with_metadata_options(src, spec.settings), with_metadata_options(dst, spec.settings)
        options = sync_options(spec, local_only=src.kind == "local" and dst.kind == "local")
        if spec.report is not None:
            from .report import check_report_path

            check_report_path(spec.report)
        layers = JobLayers.build(spec.settings, transfers=options.copy.transfers,
                                 source_limit=_remote_limit(src, config), dest_limit=_remote_limit(dst, config))
        return cls(spec, config, src, dst, options, layers)

    def with_layers(self, adjust: Callable[[JobLayers], JobLayers]) -> Transfer:
        """The same transfer with its layers changed (the daemon counts bandwidth waits, a shard takes a share)."""
        return replace(self, layers=adjust(self.layers))

    async def run(self, stats: JobStats, stop: StopSignal, *, journal: Journal | None = None,
                  on_plan: Callable[[Decision], None] | None = None,
                  on_open: Callable[[Backend, Backend], None] | None = None) -> JobStats:
        """Run once. ``journal``: one already open (else the spec's); ``on_open`` sees the bare backends."""
        from .copy import resolve_source
        from .sync import SyncJob

        report = None
        if self.spec.report is not None and not self.spec.dry_run:
            from .report import TransferReport

            report = TransferReport.open(self.spec.report)
        try:
            source, single_key = await resolve_source(self.src)
            async with source, self.dst.backend() as target, self._journal(journal) as j:
                if on_open is not None:
                    on_open(source, target)
                await SyncJob(self.layers.source(source, stats), self.layers.destination(target, stats), j,
                              src_spec=self.src.canonical, dst_spec=self.dst.canonical, options=self.options,
                              single_key=single_key, stats=stats, stop=stop, on_plan=on_plan, report=report).run()
        finally:
            if report is not None:
                report.close(stats.summary())
        return stats

    @asynccontextmanager
    async def _journal(self, journal: Journal | None) -> AsyncIterator[Journal]:
        if journal is not None:
            yield journal
            return
        async with open_journal(self.spec.journal, self.spec.no_journal) as j:
            yield j


async def run_between(source: Backend, target: Backend, journal: Journal, *, src_spec: str, dst_spec: str,
                      settings: TransferSettings, stats: JobStats, stop: StopSignal | None = None,
                      mode: str = "copy", delete: bool = False, compare: str = "size_mtime",
                      filt: Any = None, source_limit: str | None = None,
                      dest_limit: str | None = None) -> JobStats:
    """A copy or sync between two backends opened elsewhere (a company's routes), run as any other job.

    ``settings`` reach it as they reach a command-line job: bandwidth limits,
    stages and adaptive concurrency are put around the two backends, and
    ``stats`` fills as bytes move. ``source_limit`` / ``dest_limit``: the two
    stores' own ``bwlimit`` (a storage connection's), on top of the job's. ``stats`` may be shared by several runs:
    each starts its clock and listing afresh, the counters add up.
    """
    from ..filters import NO_FILTER
    from .spec import TransferSpec
    from .sync import SyncJob

    spec = TransferSpec(mode=mode, source=src_spec, dest=dst_spec, delete=delete, compare=compare,  # type: ignore[arg-type]
                        filter=filt or NO_FILTER, settings=settings)
    options = sync_options(spec, local_only=source.features.direct_files and target.features.direct_files)
    layers = JobLayers.build(settings, transfers=options.copy.transfers, source_limit=source_limit,
                             dest_limit=dest_limit)
    stats.finished, stats.listing_done = None, False
    return await SyncJob(layers.source(source, stats), layers.destination(target, stats), journal,
                         src_spec=src_spec, dst_spec=dst_spec, options=options, stats=stats, stop=stop).run()
