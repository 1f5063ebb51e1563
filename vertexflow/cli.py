"""The ``vertexflow`` command line (click).

Exit status: 0 all done; 1 some objects failed (each is named); 2 usage,
config or connection error, or a fatal error that stopped the job (the
message says what and where); 130 interrupted by Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sqlite3
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import click
from rich.console import Console
from rich.table import Table

from . import __version__, logs
from .config_file import NoConfigFile, config_or_none
from .errors import ConfigError, VertexflowError, first_error
from .filters import Filter, parse_age, parse_size
from .locations import parse_location
from .middleware.options import (
    JobMiddleware,
    as_arguments,
    given_options,
    middleware_options,
)
from .pipeline.progress import ProgressView, human_bytes
from .pipeline.runner import StopSignal
from .pipeline.stats import JobStats
from .retry import RetryPolicy
from .state.journal import Journal, default_journal_path

if TYPE_CHECKING:
    from .config import Config

EXIT_OK, EXIT_PARTIAL, EXIT_FATAL, EXIT_INTERRUPTED = 0, 1, 2, 130
T = TypeVar("T")


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """Run on asyncio, with uvloop where installed (faster thread hand-offs)."""
    try:
        import uvloop  # noqa: F401
        options: dict[str, Any] = {"use_uvloop": True}
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        options = {}
    return anyio.run(fn, backend="asyncio", backend_options=options)


def fail(message: str, code: int = EXIT_FATAL) -> None:
    click.echo(f"vertexflow: error: {message}", err=True)
    sys.exit(code)


class Ctx:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | NoConfigFile | None = None

    @property
    def config(self) -> Config | NoConfigFile:
        """The config file's remotes; without a file, a stand-in that has none (see :mod:`.config_file`)."""
        if self._config is None:
            self._config = config_or_none(self.config_path)
        return self._config


class _Commands(click.Group):
    """The top-level group; the command groups kept in modules of their own are imported when named.

    Every command pays its imports before it starts (the tenancy, backup and
    daemon groups cost ~40 ms); ``vertexflow --help`` still lists them all.
    """

    LAZY = {"backup": "vertexflow.cli_backup:backup", "daemon": "vertexflow.cli_daemon:daemon",
            "company": "vertexflow.cli_tenancy:company", "migrate": "vertexflow.cli_tenancy:migrate"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.LAZY and name not in self.commands:
            module, _, attr = self.LAZY[name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vertexflow")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="VERTEXFLOW_CONFIG",
              help="Config file with named remotes (TOML or JSON).")
@click.option("--log-format", type=click.Choice(["auto", "console", "json"]), default="auto",
              help="Log lines as text (terminal) or JSON.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="warning")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, log_format: str, log_level: str) -> None:
    """Move objects between local disk, S3-compatible stores and Yandex.Disk."""
    logs.configure(log_format, log_level)
    ctx.obj = Ctx(config_path)


DEFAULT_RETRIES = 5
cluster_option = click.option(
    "--cluster", metavar="ADDR", default=None, envvar="VERTEXFLOW_CLUSTER",
    help="Run as shards on a Dask cluster: tcp://SCHEDULER:8786, or local:N worker processes here "
         "(needs vertexflow[dask]; see docs/cluster.md).")


def transfer_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by copy and sync."""
    for opt in reversed([
        click.option("--transfers", type=click.IntRange(1, 1024), default=None,
                     help="Objects in flight at once [8 local, 16 remote]."),
        click.option("--progress/--no-progress", default=None, help="Live progress bar on stderr [on for a terminal]."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
        click.option("--no-verify", is_flag=True, help="Skip SHA-256 hashing (local copies use copy_file_range)."),
        click.option("--retries", type=click.IntRange(1, 100), default=DEFAULT_RETRIES, show_default=True,
                     help="Attempts per object before it is reported as failed."),
        click.option("--checksum", is_flag=True, help="Compare by SHA-256 instead of size and mtime."),
        click.option("--size-only", is_flag=True, help="Compare by size alone."),
        click.option("--dry-run", is_flag=True, help="Print the plan; change nothing."),
        click.option("--order-by", type=click.Choice(["size,desc", "size,asc", "mtime,asc", "mtime,desc"]),
                     default=None, help="Transfer order (plans everything first)."),
        click.option("--journal", "journal_path", type=click.Path(dir_okay=False), envvar="VERTEXFLOW_JOURNAL",
                     help="Journal database [~/.local/state/vertexflow/journal.db]."),
        click.option("--no-journal", is_flag=True, help="Keep no record (no resume, no incremental sync)."),
        cluster_option,
        *filter_options,
        *middleware_options,
    ]):
        fn = opt(fn)
    return fn


filter_options = [
    click.option("--include", multiple=True, metavar="GLOB", help="Only keys matching (repeatable)."),
    click.option("--exclude", multiple=True, metavar="GLOB", help="Skip keys matching (repeatable)."),
    click.option("--min-size", metavar="SIZE", help="Only objects at least this big (e.g. 1M)."),
    click.option("--max-size", metavar="SIZE", help="Only objects at most this big (e.g. 1G)."),
    click.option("--min-age", metavar="AGE", help="Only objects older than this (e.g. 7d)."),
    click.option("--max-age", metavar="AGE", help="Only objects younger than this (e.g. 1h)."),
    click.option("--prefix", default="", metavar="P", help="Only keys under this prefix."),
    click.option("--ext", "extensions", metavar="LIST", help="Only these file extensions, e.g. jpg,png,mp4."),
]


def with_filter_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(filter_options):
        fn = opt(fn)
    return fn


def build_filter(kw: dict[str, Any]) -> Filter:
    return Filter(
        include=kw.pop("include", ()), exclude=kw.pop("exclude", ()),
        min_size=parse_size(v) if (v := kw.pop("min_size", None)) else None,
        max_size=parse_size(v) if (v := kw.pop("max_size", None)) else None,
        min_age=parse_age(v) if (v := kw.pop("min_age", None)) else None,
        max_age=parse_age(v) if (v := kw.pop("max_age", None)) else None,
        prefix=kw.pop("prefix", "") or "",
        extensions=tuple(e.strip().lower().lstrip(".") for e in (kw.pop("extensions", None) or "").split(",")
                         if e.strip()),
    )


@main.command()
@click.argument("src")
@click.argument("dst")
@transfer_options
@click.pass_obj
def copy(obj: Ctx, src: str, dst: str, **kw: Any) -> None:
    """Copy the contents of SRC under DST, skipping objects already there unchanged.

    \b
    Locations: ./dir, /abs/dir, s3://bucket/prefix, yadisk:/path, or REMOTE:path
    with a remote from the config file. Rerunning an interrupted copy resumes it.
    """
    _transfer(obj, "copy", src, dst, delete=False, max_delete=None, **kw)


@main.command()
@click.argument("src")
@click.argument("dst")
@transfer_options
@click.option("--delete", is_flag=True, help="Delete destination objects that are not at the source.")
@click.option("--max-delete", type=click.IntRange(0), default=None, help="Refuse to delete more than N objects.")
@click.pass_obj
def sync(obj: Ctx, src: str, dst: str, **kw: Any) -> None:
    """Make DST like SRC: copy what is new or changed (and delete extras with --delete).

    A repeated sync compares against the journal's record of DST, so it sends no
    per-object requests for unchanged objects.
    """
    _transfer(obj, "sync", src, dst, **kw)


def _transfer(obj: Ctx, mode: str, src: str, dst: str, *, delete: bool, max_delete: int | None,
              transfers: int | None, progress: bool | None, as_json: bool, no_verify: bool, retries: int,
              checksum: bool, size_only: bool, dry_run: bool, order_by: str | None, journal_path: str | None,
              no_journal: bool, cluster: str | None = None, **filter_kw: Any) -> None:
    from .ops.copy import CopyOptions, resolve_source
    from .ops.sync import SyncJob, SyncOptions

    if checksum and size_only:
        fail("--checksum and --size-only exclude each other")
    try:
        filt = build_filter(filter_kw)
        src_loc = parse_location(src, obj.config)
        dst_loc = parse_location(dst, obj.config)
    except ConfigError as exc:
        fail(str(exc))
    local_only = src_loc.kind == "local" and dst_loc.kind == "local"
    stage_options, replay = given_options(filter_kw)
    replay.update({name: value for name, value in
                   (("transfers", transfers), ("retries", retries), ("no_verify", no_verify))
                   if value and not (name == "retries" and value == DEFAULT_RETRIES)})
    options = SyncOptions(stages=stage_options, replay=replay,
        mode=mode, delete=delete, max_delete=max_delete, dry_run=dry_run, order_by=order_by, filter=filt,
        compare="checksum" if checksum else "size_only" if size_only else "size_mtime",
        copy=CopyOptions(transfers=transfers or (8 if local_only else 16),
                         retry=RetryPolicy(attempts=retries), verify=not no_verify))
    try:  # stages, bandwidth limits, adaptive concurrency: decorators around the two backends
        layers = JobMiddleware.from_cli(filter_kw, config=obj.config, src=src_loc, dst=dst_loc,
                                        transfers=options.copy.transfers, retry=options.copy.retry)
    except ConfigError as exc:
        fail(str(exc))
    show_progress = (sys.stderr.isatty() if progress is None else progress) and not dry_run
    if cluster and not dry_run:  # a dry run only plans: it stays in this process
        from .distributed.jobs import cluster_transfer

        code, stats = cluster_transfer(address=cluster, mode=mode, src_loc=src_loc, dst_loc=dst_loc,
                                       config_path=obj.config_path, options=options, layers=layers,
                                       given={**stage_options, **replay}, journal_path=journal_path,
                                       no_journal=no_journal, show_progress=show_progress)
        _print_summary(stats, as_json, f"{src} -> {dst} on {cluster}")
        sys.exit(code)
    stats = JobStats()
    stop = StopSignal()
    plan_lines: list[str] = []

    def on_plan(d: Any) -> None:
        if d.action in ("copy", "delete"):
            line = f"{d.action} {d.key} ({d.why})"
            if as_json:
                plan_lines.append(line)
            else:
                click.echo(line)

    async def job() -> None:
        source, single_key = await resolve_source(src_loc)
        async with source, dst_loc.backend() as target, open_journal(journal_path, no_journal) as journal:
            await SyncJob(layers.source(source, stats), layers.destination(target, stats), journal,
                          src_spec=src_loc.canonical, dst_spec=dst_loc.canonical,
                          options=options,
                          single_key=single_key, stats=stats, stop=stop, on_plan=on_plan).run()

    code = _run_job(job, stats, stop, show_progress)
    _print_summary(stats, as_json, f"{src} -> {dst}" + (" (dry run)" if dry_run else ""),
                   extra={"plan": plan_lines} if dry_run and as_json else None)
    sys.exit(code)


@asynccontextmanager
async def open_journal(path: str | None, disabled: bool) -> AsyncIterator[Journal]:
    """The journal at ``path`` (or the default), or a throw-away one with ``--no-journal``."""
    if disabled:
        with tempfile.TemporaryDirectory(prefix="vertexflow-nojournal-") as tmp:
            async with await Journal.open(os.path.join(tmp, "journal.db")) as journal:
                yield journal
        return
    try:
        journal = await Journal.open(path)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(f"cannot open the journal {path or default_journal_path()}: {exc}") from exc
    async with journal:
        yield journal


def _run_job(job: Callable[[], Awaitable[None]], stats: JobStats, stop: StopSignal, show_progress: bool) -> int:
    """Run a job with signal handling and an optional progress bar; returns the exit status."""

    async def main_task() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_signals, stop)
            if show_progress:
                tg.start_soon(ProgressView(stats).run)
            try:
                await job()
            finally:
                tg.cancel_scope.cancel()

    try:
        try:
            run_async(main_task)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
    except VertexflowError as exc:
        stats.fatal = stats.fatal or str(exc)
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        click.echo(f"vertexflow: error: {cause}", err=True)
        return EXIT_FATAL
    except KeyboardInterrupt:
        stats.interrupted = True
        return EXIT_INTERRUPTED
    if stats.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_PARTIAL if stats.failed_objects else EXIT_OK


async def _watch_signals(stop: StopSignal) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if not stop.stopping:
                click.echo("\nvertexflow: stopping: finishing transfers in flight "
                           "(press Ctrl-C again to abort them)", err=True)
                stop.request_graceful()
            else:
                click.echo("\nvertexflow: aborting transfers in flight", err=True)
                stop.request_hard()


def _print_summary(stats: JobStats, as_json: bool, title: str, extra: dict[str, Any] | None = None) -> None:
    summary = stats.summary()
    if as_json:
        click.echo(json.dumps({**summary, **(extra or {})}, indent=2))
        _print_failures(stats, summary)
        return
    console = Console()
    table = Table(title=title, show_header=False, box=None)
    table.add_row("objects copied", f"{stats.done_objects:,}")
    if stats.skipped_objects:
        table.add_row("unchanged (skipped)", f"{stats.skipped_objects:,}")
    if stats.planned_deletes:
        table.add_row("deleted", f"{stats.deleted_objects:,} of {stats.planned_deletes:,} planned")
    table.add_row("bytes", f"{stats.done_bytes:,} ({human_bytes(stats.done_bytes)})")
    table.add_row("seconds", f"{summary['seconds']:.2f}")
    table.add_row("throughput", f"{summary['mb_per_s']:.1f} MB/s, {summary['objects_per_s']:,.0f} objects/s")
    if stats.server_side_copies:
        table.add_row("server-side copies", f"{stats.server_side_copies:,}")
    table.add_row("retries", f"{stats.retries:,}")
    for name, reporter in stats.reporters.items():
        table.add_row(name, reporter.describe())
    if stats.requests:
        table.add_row("requests", f"{stats.requests:,}")
    if stats.job_id is not None:
        table.add_row("journal job", f"{stats.job_id}" + (" (resumed)" if stats.resumed else ""))
    table.add_row("failed", f"{stats.failed_objects:,}")
    for reason, count in sorted(stats.failures_by_reason.items()):
        table.add_row(f"  {reason}", f"{count:,}")
    if stats.interrupted:
        table.add_row("interrupted", "yes: objects not listed above were not copied")
    console.print(table)
    _print_failures(stats, summary)


def _print_failures(stats: JobStats, summary: dict[str, Any]) -> None:
    for f in stats.failures:
        click.echo(f"FAILED {f.key}: [{f.reason}] {f.message}", err=True)
    if summary["failures_not_shown"]:
        click.echo(f"... and {summary['failures_not_shown']:,} more failures", err=True)


@main.command()
@click.argument("src")
@click.argument("dst")
@click.option("--checksum", "mode", flag_value="checksum", default=True,
              help="Compare sizes and content hashes (the default).")
@click.option("--size-only", "mode", flag_value="size", help="Compare sizes only.")
@click.option("--sample", default="100%", metavar="PCT", help="Check only this share of common objects, e.g. 5%.")
@click.option("--fix", is_flag=True, help="Copy what is missing or different, then verify again.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--transfers", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Objects hashed at once.")
@cluster_option
@with_filter_options
@click.pass_obj
def verify(obj: Ctx, src: str, dst: str, mode: str, sample: str, fix: bool, as_json: bool, transfers: int,
           cluster: str | None = None, **filter_kw: Any) -> None:
    """Compare SRC and DST: report missing, extra and different objects (exit 1 if any)."""
    from .ops.copy import CopyJob, CopyOptions, resolve_source
    from .ops.verify import VerifyJob

    try:
        filt = build_filter(filter_kw)
        fraction = float(sample.rstrip("%")) / 100
        if not 0 < fraction <= 1:
            raise ValueError
        src_loc = parse_location(src, obj.config)
        dst_loc = parse_location(dst, obj.config)
    except ValueError:
        fail(f"--sample {sample!r}: use a percentage between 0 and 100, e.g. 5%")
    except ConfigError as exc:
        fail(str(exc))

    async def run() -> dict[str, Any]:
        source, _ = await resolve_source(src_loc)
        async with source, dst_loc.backend() as target:
            job = VerifyJob(source, target, mode=mode, filt=filt, sample=fraction, workers=transfers)  # type: ignore[arg-type]
            report = await job.run()
            result: dict[str, Any] = {"before_fix": None, **report.as_dict()}
            if fix and not report.ok:
                keys = job.keys_to_fix()

                async def items() -> AsyncIterator[Any]:
                    for key in keys:
                        yield await source.stat(key)

                stats = JobStats()
                await CopyJob(source, target, CopyOptions(transfers=transfers), items=items(), stats=stats).run()
                again = await VerifyJob(source, target, mode=mode, filt=filt, sample=fraction,  # type: ignore[arg-type]
                                        workers=transfers).run()
                result = {"before_fix": report.as_dict(), "fixed": stats.done_objects, **again.as_dict()}
            return result

    try:
        try:
            if cluster:  # the same job as shards on a Dask cluster (vertexflow.distributed)
                from .distributed.jobs import cluster_verify

                result = cluster_verify(address=cluster, src_loc=src_loc, dst_loc=dst_loc,
                                        config_path=obj.config_path, filt=filt, mode=mode, sample=fraction,
                                        fix=fix, transfers=transfers)
            else:
                result = run_async(run)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
    except VertexflowError as exc:
        fail(str(exc))
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _print_report(result)
    sys.exit(EXIT_OK if result["ok"] else EXIT_PARTIAL)


def _print_report(result: dict[str, Any]) -> None:
    if result.get("before_fix"):
        b = result["before_fix"]
        click.echo(f"before --fix: {b['missing']} missing, {b['extra']} extra, {b['different']} different; "
                   f"copied {result['fixed']}")
    table = Table(title="verify", show_header=False, box=None)
    for label, key in (("source objects", "src_objects"), ("destination objects", "dst_objects"),
                       ("compared", "compared"), ("read and hashed", "hashed_both_sides"),
                       ("matched", "matched"), ("missing at destination", "missing"),
                       ("extra at destination", "extra"), ("different", "different")):
        table.add_row(label, f"{result[key]:,}")
    Console().print(table)
    if result["problems"]:
        problems = Table("kind", "key", "detail", title="problems")
        for p in result["problems"]:
            problems.add_row(p["kind"], p["key"], p["detail"])
        Console().print(problems)
    click.echo("OK: destination matches source" if result["ok"] else "MISMATCH", err=True)


@main.group()
def jobs() -> None:
    """Jobs recorded in the journal: list, show, resume, forget."""


@jobs.command("list")
@click.option("--journal", "journal_path", type=click.Path(dir_okay=False), envvar="VERTEXFLOW_JOURNAL")
@click.option("--json", "as_json", is_flag=True)
def jobs_list(journal_path: str | None, as_json: bool) -> None:
    async def run() -> list[Any]:
        async with open_journal(journal_path, False) as journal:
            return await journal.list_jobs()

    records = _journal_call(run)
    if as_json:
        click.echo(json.dumps([_job_dict(j) for j in records], indent=2))
        return
    table = Table("id", "kind", "state", "source", "destination", "objects", "failed", "updated")
    for j in records:
        s = j.summary or {}
        table.add_row(str(j.id), j.kind, j.state, j.src, j.dst, str(s.get("objects", "")),
                      str(s.get("failed", "")), _when(j.updated))
    Console().print(table)


@jobs.command("show")
@click.argument("job_id", type=int)
@click.option("--journal", "journal_path", type=click.Path(dir_okay=False), envvar="VERTEXFLOW_JOURNAL")
def jobs_show(job_id: int, journal_path: str | None) -> None:
    async def run() -> tuple[Any, dict[str, int], list[Any]]:
        async with open_journal(journal_path, False) as journal:
            job = await journal.get_job(job_id)
            if job is None:
                raise ConfigError(f"no job {job_id} in the journal")
            counts = await journal.job_counts(job_id)
            failed = [r async for r in journal.iter_objects(job_id, states=("failed",))][:100]
            return job, counts, failed

    job, counts, failed = _journal_call(run)
    # a done job's done rows are deleted once ten newer done jobs exist (journal retention): counts then omit them
    click.echo(json.dumps({**_job_dict(job), "objects_by_state": counts, "done_rows_pruned": job.rows_pruned,
                           "failures": [{"key": r.key, "reason": r.reason, "message": r.message} for r in failed]},
                          indent=2))


@jobs.command("resume")
@click.argument("job_id", type=int)
@click.option("--journal", "journal_path", type=click.Path(dir_okay=False), envvar="VERTEXFLOW_JOURNAL")
@click.option("--json", "as_json", is_flag=True)
@click.option("--progress/--no-progress", default=None)
@click.pass_context
def jobs_resume(ctx: click.Context, job_id: int, journal_path: str | None, as_json: bool,
                progress: bool | None) -> None:
    """Run an interrupted copy or sync again from where it stopped."""
    async def run() -> Any:
        async with open_journal(journal_path, False) as journal:
            return await journal.get_job(job_id)

    job = _journal_call(run)
    if job is None:
        fail(f"no job {job_id} in the journal")
    if job.kind not in ("copy", "sync"):
        fail(f"job {job_id} is a {job.kind} job; only copy and sync jobs resume")
    o = job.options
    f = o.get("filter", {})
    args = [job.src, job.dst, "--journal", journal_path or str(default_journal_path())]
    args += ["--checksum"] if o.get("compare") == "checksum" else ["--size-only"] if o.get("compare") == "size_only" else []
    args += ["--delete"] if o.get("delete") else []
    args += ["--order-by", o["order_by"]] if o.get("order_by") else []
    for g in f.get("include", []):
        args += ["--include", g]
    for g in f.get("exclude", []):
        args += ["--exclude", g]
    for name in ("min_size", "max_size"):
        if f.get(name) is not None:
            args += [f"--{name.replace('_', '-')}", str(f[name])]
    for name in ("min_age", "max_age"):
        if f.get(name) is not None:
            args += [f"--{name.replace('_', '-')}", f"{f[name]}s"]
    if f.get("prefix"):
        args += ["--prefix", f["prefix"]]
    if f.get("extensions"):
        args += ["--ext", ",".join(f["extensions"])]
    replay = o.get("replay", {})
    args += as_arguments({**o.get("stages", {}), **replay})
    args += ["--transfers", str(replay["transfers"])] if replay.get("transfers") else []
    args += ["--retries", str(replay["retries"])] if replay.get("retries") else []
    args += ["--no-verify"] if replay.get("no_verify") else []
    args += ["--json"] if as_json else []
    args += [] if progress is None else ["--progress" if progress else "--no-progress"]
    command = copy if job.kind == "copy" else sync
    ctx.invoke(command, **command.make_context(job.kind, args, parent=ctx.parent).params)


@jobs.command("forget")
@click.argument("job_id", type=int)
@click.option("--journal", "journal_path", type=click.Path(dir_okay=False), envvar="VERTEXFLOW_JOURNAL")
def jobs_forget(job_id: int, journal_path: str | None) -> None:
    """Remove a job and its object records from the journal."""
    async def run() -> bool:
        async with open_journal(journal_path, False) as journal:
            return await journal.forget_job(job_id)

    if not _journal_call(run):
        fail(f"no job {job_id} in the journal")
    click.echo(f"forgot job {job_id}")


def _journal_call(fn: Callable[[], Awaitable[T]]) -> T:
    try:
        return run_async(fn)
    except VertexflowError as exc:
        fail(str(exc))
        raise  # unreachable: fail() exits


def _job_dict(j: Any) -> dict[str, Any]:
    return {"id": j.id, "kind": j.kind, "state": j.state, "src": j.src, "dst": j.dst, "options": j.options,
            "created": _when(j.created), "updated": _when(j.updated), "summary": j.summary}


def _when(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


@main.command("ls")
@click.argument("location")
@click.option("--long", "-l", "long_", is_flag=True, help="Size, modification time and hashes.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
def ls(obj: Ctx, location: str, long_: bool, as_json: bool) -> None:
    """List the objects under LOCATION, recursively."""
    try:
        loc = parse_location(location, obj.config)
    except ConfigError as exc:
        fail(str(exc))

    async def run() -> int:
        count = total = 0
        async with loc.backend() as backend:
            await backend.check()
            async for info in backend.list():
                count += 1
                total += info.size or 0
                if as_json:
                    click.echo(json.dumps({"key": info.key, "size": info.size,
                                           "mtime": info.mtime.isoformat() if info.mtime else None,
                                           "hashes": dict(info.hashes), "etag": info.etag}))
                elif long_:
                    when = info.mtime.strftime("%Y-%m-%d %H:%M:%S") if info.mtime else "-" * 19
                    click.echo(f"{info.size if info.size is not None else '-':>12} {when}  {info.key}")
                else:
                    click.echo(info.key)
        if long_ and not as_json:
            click.echo(f"{count:,} objects, {total:,} bytes ({human_bytes(total)})", err=True)
        return EXIT_OK

    try:
        sys.exit(run_async(run))
    except VertexflowError as exc:
        fail(str(exc))


@main.command()
@click.option("--dir", "workdir", type=click.Path(file_okay=False), default=None,
              help="Where to create the sample tree and its copy [a new temporary directory].")
@click.option("--files", type=click.IntRange(1, 1_000_000), default=2000, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def demo(workdir: str | None, files: int, as_json: bool) -> None:
    """The embedded default job: make a sample tree, copy it local-to-local with
    SHA-256 verification, check every byte, print the summary."""
    import tempfile

    from .backends.local import LocalBackend
    from .ops.copy import CopyJob
    from .testing.sample_tree import make_tree, trees_equal

    base = workdir or tempfile.mkdtemp(prefix="vertexflow-demo-")
    src, dst = os.path.join(base, "source"), os.path.join(base, "copy")
    made = make_tree(src, files=files)
    click.echo(f"sample tree: {made.files:,} files, {human_bytes(made.bytes)} in {src}", err=True)
    stats = JobStats()
    stop = StopSignal()

    async def job() -> None:
        async with LocalBackend(src) as s, LocalBackend(dst) as d:
            await CopyJob(s, d, stats=stats, stop=stop).run()

    code = _run_job(job, stats, stop, sys.stderr.isatty())
    _print_summary(stats, as_json, f"{src} -> {dst}")
    if code == EXIT_OK:
        problems = trees_equal(src, dst)
        if problems:
            fail("copy differs from the source: " + "; ".join(problems[:5]), EXIT_PARTIAL)
        click.echo(f"verified: every file of {dst} matches its source byte for byte", err=True)
    sys.exit(code)


@main.group()
def emulate() -> None:
    """Run a local emulator of a storage service, to rehearse without a real account."""


@emulate.command("yandex-disk")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--token", default=None, help="Accept only this OAuth token [any non-empty token].")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Keep state in this directory (survives restarts) [in memory].")
@click.option("--latency", type=float, default=0.0, help="Seconds added to every API request.")
@click.option("--rate-limit", type=click.FloatRange(0, 1), default=0.0, help="Share of requests answered 429.")
@click.option("--retry-after", type=float, default=1.0, help="Retry-After seconds sent with 429s.")
@click.option("--error-rate", type=click.FloatRange(0, 1), default=0.0, help="Share of requests answered 5xx.")
@click.option("--lock-rate", type=click.FloatRange(0, 1), default=0.0, help="Share of requests answered 423.")
@click.option("--async-upload-rate", type=click.FloatRange(0, 1), default=0.0,
              help="Share of uploads answered 202 and finished later.")
@click.option("--async-delay", type=float, default=0.2, help="Seconds an asynchronous operation stays in progress.")
@click.option("--total-space", default="10G", help="Disk size, e.g. 10G.")
@click.option("--max-file-size", default="1G", help="Largest file accepted (1G free, 50G paid accounts).")
@click.option("--paid", is_flag=True, help="Report a paid account.")
@click.option("--seed", type=int, default=0, help="Seed for the injected faults.")
def emulate_yandex_disk(port: int, host: str, token: str | None, data_dir: str | None, total_space: str,
                        max_file_size: str, **knobs: Any) -> None:
    """The Yandex.Disk REST API on HOST:PORT (point a remote's base_url, or
    YANDEX_DISK_API_URL, at http://HOST:PORT/v1/disk)."""
    from pathlib import Path

    from .testing.yandex_disk import serve

    try:
        sizes = {"total_space": parse_size(total_space), "max_file_size": parse_size(max_file_size)}
    except ConfigError as exc:
        fail(str(exc))
    serve(port, host=host, token=token, data_dir=Path(data_dir) if data_dir else None, **sizes, **knobs)


def entry() -> None:  # pragma: no cover - console script shim
    main()


if __name__ == "__main__":  # pragma: no cover
    main()
