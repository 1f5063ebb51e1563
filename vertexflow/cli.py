"""The ``vertexflow`` command line (click).

Exit status: 0 all done; 1 some objects failed (each is named); 2 usage,
config or connection error, or a fatal error that stopped the job (the
message says what and where); 130 interrupted by Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import click
from rich.console import Console
from rich.table import Table

from . import __version__, logs
from .config import Config, load_config
from .errors import ConfigError, VertexflowError, first_error
from .locations import parse_location
from .pipeline.progress import ProgressView, human_bytes
from .pipeline.runner import StopSignal
from .pipeline.stats import JobStats
from .retry import RetryPolicy

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
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


@main.command()
@click.argument("src")
@click.argument("dst")
@click.option("--transfers", type=click.IntRange(1, 1024), default=None,
              help="Objects in flight at once [8 local, 16 remote].")
@click.option("--progress/--no-progress", default=None, help="Live progress bar on stderr [on for a terminal].")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--no-verify", is_flag=True, help="Skip SHA-256 hashing (local copies use copy_file_range).")
@click.option("--retries", type=click.IntRange(1, 100), default=5, show_default=True,
              help="Attempts per object before it is reported as failed.")
@click.pass_obj
def copy(obj: Ctx, src: str, dst: str, transfers: int | None, progress: bool | None, as_json: bool,
         no_verify: bool, retries: int) -> None:
    """Copy the contents of SRC under DST (a plain path is local disk).

    \b
    Locations: ./dir, /abs/dir, s3://bucket/prefix, yadisk:/path, or REMOTE:path
    with a remote from the config file.
    """
    from .ops.copy import CopyJob, CopyOptions, resolve_source

    try:
        src_loc = parse_location(src, obj.config)
        dst_loc = parse_location(dst, obj.config)
    except ConfigError as exc:
        fail(str(exc))
    local_only = src_loc.kind == "local" and dst_loc.kind == "local"
    options = CopyOptions(transfers=transfers or (8 if local_only else 16),
                          retry=RetryPolicy(attempts=retries), verify=not no_verify)
    show_progress = sys.stderr.isatty() if progress is None else progress
    stats = JobStats()
    stop = StopSignal()

    async def job() -> None:
        source, single_key = await resolve_source(src_loc)
        async with source, dst_loc.backend() as target:
            await CopyJob(source, target, options, single_key=single_key, stats=stats, stop=stop).run()

    code = _run_job(job, stats, stop, show_progress)
    _print_summary(stats, as_json, f"{src} -> {dst}")
    sys.exit(code)


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


def _print_summary(stats: JobStats, as_json: bool, title: str) -> None:
    summary = stats.summary()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    console = Console()
    table = Table(title=title, show_header=False, box=None)
    table.add_row("objects copied", f"{stats.done_objects:,}")
    table.add_row("bytes", f"{stats.done_bytes:,} ({human_bytes(stats.done_bytes)})")
    table.add_row("seconds", f"{summary['seconds']:.2f}")
    table.add_row("throughput", f"{summary['mb_per_s']:.1f} MB/s, {summary['objects_per_s']:,.0f} objects/s")
    if stats.server_side_copies:
        table.add_row("server-side copies", f"{stats.server_side_copies:,}")
    table.add_row("retries", f"{stats.retries:,}")
    table.add_row("failed", f"{stats.failed_objects:,}")
    for reason, count in sorted(stats.failures_by_reason.items()):
        table.add_row(f"  {reason}", f"{count:,}")
    if stats.interrupted:
        table.add_row("interrupted", "yes: objects not listed above were not copied")
    console.print(table)
    for f in stats.failures:
        click.echo(f"FAILED {f.key}: [{f.reason}] {f.message}", err=True)
    if summary["failures_not_shown"]:
        click.echo(f"... and {summary['failures_not_shown']:,} more failures", err=True)


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


def entry() -> None:  # pragma: no cover - console script shim
    main()


if __name__ == "__main__":  # pragma: no cover
    main()
