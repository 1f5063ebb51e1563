"""``vertexflow copy`` and ``vertexflow sync``, and the options other commands share with them.

``transfer_options`` (copy and sync), ``filter_options`` / ``with_filter_options``
and ``build_filter`` (also verify and migrate), ``cluster_option`` (also verify),
``open_journal`` (also jobs and migrate).
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import click

from ..errors import ConfigError
from ..filters import Filter, parse_age, parse_size
from ..locations import parse_location
from ..middleware.options import JobMiddleware, given_options, middleware_options
from ..pipeline.runner import StopSignal
from ..pipeline.stats import JobStats
from ..retry import RetryPolicy
from ..state.journal import Journal, default_journal_path
from .context import Ctx
from .run import fail, print_summary, reported, run_job

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


@click.command()
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


@click.command()
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
    from ..ops.copy import CopyOptions, resolve_source
    from ..ops.sync import SyncJob, SyncOptions

    if checksum and size_only:
        fail("--checksum and --size-only exclude each other")
    with reported():
        filt = build_filter(filter_kw)
        src_loc = parse_location(src, obj.config)
        dst_loc = parse_location(dst, obj.config)
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
    with reported():  # stages, bandwidth limits, adaptive concurrency: decorators around the two backends
        layers = JobMiddleware.from_cli(filter_kw, config=obj.config, src=src_loc, dst=dst_loc,
                                        transfers=options.copy.transfers, retry=options.copy.retry)
    show_progress = (sys.stderr.isatty() if progress is None else progress) and not dry_run
    if cluster and not dry_run:  # a dry run only plans: it stays in this process
        from ..distributed.jobs import cluster_transfer

        code, stats = cluster_transfer(address=cluster, mode=mode, src_loc=src_loc, dst_loc=dst_loc,
                                       config_path=obj.config_path, options=options, layers=layers,
                                       given={**stage_options, **replay}, journal_path=journal_path,
                                       no_journal=no_journal, show_progress=show_progress)
        print_summary(stats, as_json, f"{src} -> {dst} on {cluster}")
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

    code = run_job(job, stats, stop, show_progress)
    print_summary(stats, as_json, f"{src} -> {dst}" + (" (dry run)" if dry_run else ""),
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
