"""Running a command's work and turning its outcome into an exit status: the one place for both.

Exit status of every ``vertexflow`` command:

* 0 (:data:`EXIT_OK`): all done;
* 1 (:data:`EXIT_PARTIAL`): some objects failed, or a check found problems
  (each is named); a company migration failed and was rolled back;
* 2 (:data:`EXIT_FATAL`): usage, config or connection error, or a fatal error
  that stopped the job (the message says what and where);
* 8 (:data:`EXIT_MAX_TRANSFER`) / 10 (:data:`EXIT_MAX_DURATION`), rclone's numbers: a copy or
  sync stopped at ``--max-transfer`` / ``--max-duration`` with no object failed; the same
  command again continues it (:mod:`vertexflow.ops.cutoff`);
* 130 (:data:`EXIT_INTERRUPTED`): interrupted by Ctrl-C / SIGTERM.

Which exception gives which status is :data:`EXIT_STATUS`, the one table.
Commands run their async work with :func:`run_or_exit` (or :func:`run_job` for a
transfer, with signal handling, a progress bar and a summary from
:func:`print_summary`) and check their options inside :func:`reported`;
none keeps an error ladder of its own.

Progress (:mod:`vertexflow.pipeline.progress`): a command that counts its
work in a :class:`JobStats` shows a live line on a terminal's stderr and
nothing but its summary elsewhere (``--progress`` / ``--no-progress`` decide
otherwise), and with ``--progress-json FILE`` writes one JSON object a second
and a final one to FILE (``-``: stderr, where the live line then stays off
unless ``--progress`` asks for it). The options are :func:`progress_options`
(or :data:`progress_json_option` for a command with its own ``--progress``);
:func:`run_job` and :func:`run_or_exit` (given ``progress=stats``) draw both.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import anyio
import click
from rich.console import Console
from rich.table import Table

from ..errors import MigrationFailed, VertexflowError, first_error
from ..interrupts import INTERRUPTS
from ..pipeline.progress import ProgressJson, ProgressView, human_bytes
from ..pipeline.runner import StopSignal
from ..pipeline.stats import JobStats
from .names import shown

EXIT_OK, EXIT_PARTIAL, EXIT_FATAL, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_MAX_TRANSFER, EXIT_MAX_DURATION = 8, 10

#: Exception class -> exit status, the first matching row wins. An exception
#: that matches no row is a bug: it propagates with its traceback.
EXIT_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (MigrationFailed, EXIT_PARTIAL),       # the company stays on (or went back to) its previous backend
    (VertexflowError, EXIT_FATAL),         # ConfigError, BackendError, JobAborted, ClusterError, BackupError ...
    (KeyboardInterrupt, EXIT_INTERRUPTED),
)

T = TypeVar("T")
Problems = tuple[type[BaseException], ...]


def exit_status(exc: BaseException, problems: Problems = ()) -> int | None:
    """The exit status for ``exc`` from :data:`EXIT_STATUS`, or None when it is not one of ours.

    ``problems``: classes that mean, for the command at hand, that what it
    checked has problems (``backup verify``: a damaged backup): those exit
    :data:`EXIT_PARTIAL` rather than by the table.
    """
    if problems and isinstance(exc, problems):
        return EXIT_PARTIAL
    return next((status for cls, status in EXIT_STATUS if isinstance(exc, cls)), None)


def fail(message: str, code: int = EXIT_FATAL) -> NoReturn:
    click.echo(f"vertexflow: error: {message}", err=True)
    sys.exit(code)


#: where the options of :func:`progress_options` keep their values (the command's ``ctx.meta``)
PROGRESS_LINE, PROGRESS_JSON = "vertexflow.progress", "vertexflow.progress_json"


def _keep(key: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def keep(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None:
            if key == PROGRESS_JSON and value != "-":
                from ..ops.report import check_report_path

                with reported():
                    check_report_path(value, "--progress-json")
            ctx.meta[key] = value
        return value

    return keep


#: ``--progress-json FILE``: its value is read by :func:`run_job` / :func:`run_or_exit`, not passed to the command.
#: FILE is required (``-`` for stderr): an optional value would take the next argument (``--progress-json SRC DST``)
progress_json_option = click.option(
    "--progress-json", metavar="FILE", default=None, expose_value=False, callback=_keep(PROGRESS_JSON),
    envvar="VERTEXFLOW_PROGRESS_JSON", show_envvar=False,  # settings.give_envvars passes options not exposed
    help="Write the progress as one JSON object a second, and a final one, to FILE ('-': stderr): bytes and "
         "objects done and in all, the rate, the ETA, the phase.")


def progress_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--progress/--no-progress`` and ``--progress-json FILE`` for a command run by :func:`run_or_exit` with stats."""
    fn = progress_json_option(fn)
    return click.option("--progress/--no-progress", "progress_line", default=None, expose_value=False,
                        callback=_keep(PROGRESS_LINE), envvar="VERTEXFLOW_PROGRESS", show_envvar=False,
                        help="Live progress line on stderr [on for a terminal].")(fn)


def _progress_json_target() -> str | None:
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get(PROGRESS_JSON) if ctx is not None else None


def show_progress_line(asked: bool | None = None) -> bool:
    """Whether to draw the live line: as asked (``--progress`` / ``--no-progress``), else on a terminal's
    stderr, unless ``--progress-json -`` writes there."""
    ctx = click.get_current_context(silent=True)
    if asked is None and ctx is not None:
        asked = ctx.meta.get(PROGRESS_LINE)
    if asked is not None:
        return asked
    return sys.stderr.isatty() and _progress_json_target() != "-"


def open_progress_json(stats: JobStats) -> ProgressJson | None:
    """The ``--progress-json`` writer of this command (None when not asked); exits 2 naming a FILE it cannot open."""
    target = _progress_json_target()
    if target is None:
        return None
    if target == "-":
        return ProgressJson(stats, sys.stderr)
    try:
        return ProgressJson(stats, open(target, "w", encoding="utf-8"), close=True)  # noqa: SIM115 - closed by finish()
    except OSError as exc:
        fail(f"--progress-json {target}: {exc.strerror}")


def exit_for(exc: BaseException, problems: Problems = ()) -> NoReturn:
    """Exit with the table's status for ``exc`` (naming it on stderr); re-raise what the table does not know."""
    err = first_error(exc) if isinstance(exc, BaseExceptionGroup) else exc
    status = exit_status(err, problems)
    if status is None:
        raise exc
    if isinstance(err, KeyboardInterrupt):
        sys.exit(status)
    fail(str(err), status)


@contextmanager
def reported(problems: Problems = ()) -> Iterator[None]:
    """Errors raised inside (reading the config, parsing locations and options) exit by the table.

    A SIGINT/SIGTERM noted before or during the block (start-up: nothing begun) exits 130 at its end.
    """
    try:
        INTERRUPTS.check()
        yield
        INTERRUPTS.check()
    except BaseException as exc:  # SystemExit and click's own exceptions are not in the table: re-raised
        exit_for(exc, problems)


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """Run on asyncio, with uvloop where installed (faster thread hand-offs)."""
    try:
        import uvloop  # noqa: F401
        options: dict[str, Any] = {"use_uvloop": True}
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        options = {}
    return anyio.run(fn, backend="asyncio", backend_options=options)


def run_or_exit(fn: Callable[[], Awaitable[T]], *, problems: Problems = (), progress: JobStats | None = None,
                status_of: Callable[[T], int] | None = None) -> T:
    """Run ``fn`` (async) and return its result; an error exits by the table, with its message.

    SIGINT and SIGTERM (once :mod:`vertexflow.interrupts` is installed) cancel it: exit 130.
    ``progress``: the stats ``fn`` counts its work in, drawn as the command's options ask
    (:func:`progress_options`) while it runs; ``status_of``: the exit status a result means
    (for the final ``--progress-json`` object) when it is not 0 for every result.
    """
    signals = 0
    line = progress is not None and show_progress_line()
    writer = open_progress_json(progress) if progress is not None else None

    async def main() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def cancel(signum: int) -> None:
            nonlocal signals
            signals += 1
            loop.call_soon_threadsafe(task.cancel)

        with INTERRUPTS.receiving(cancel):
            if progress is None or not (line or writer):
                return await fn()
            return await _drawn(fn, progress, line, writer)

    status = EXIT_FATAL  # what the final JSON object says when an error the table does not know escapes
    try:
        with reported(problems):
            try:
                result = run_async(main)
            except asyncio.CancelledError:
                if signals:
                    raise KeyboardInterrupt from None
                raise
            status = status_of(result) if status_of is not None else EXIT_OK
            return result
    except SystemExit as done:  # reported() exits with the table's status
        status = done.code if isinstance(done.code, int) else EXIT_FATAL
        raise
    finally:
        if writer is not None:
            writer.finish(status)
    raise AssertionError("unreachable: reported() exits or re-raises")  # pragma: no cover


async def _drawn(fn: Callable[[], Awaitable[T]], stats: JobStats, line: bool, writer: ProgressJson | None) -> T:
    """``fn`` with the live line and the JSON progress drawn beside it until it returns."""
    async with anyio.create_task_group() as tg:
        if line:
            tg.start_soon(ProgressView(stats).run)
        if writer is not None:
            tg.start_soon(writer.run)
        try:
            return await fn()
        finally:
            stats.finished = stats.finished or time.monotonic()
            tg.cancel_scope.cancel()


def run_job(job: Callable[[], Awaitable[None]], stats: JobStats, stop: StopSignal, show_progress: bool,
            settle: Callable[[int], int] | None = None) -> int:
    """Run a transfer with signal handling and an optional progress bar; returns the exit status.

    ``--progress-json`` (:data:`progress_json_option`) is written beside it, its final object with the
    status. A run that did all it started but stopped at --max-transfer / --max-duration is 8 / 10.
    ``settle`` turns the job's status into the command's (a command that judges its result further,
    as a migration does) before that final object is written, so that both agree.

    Unlike :func:`run_or_exit` it does not exit, so that the caller can print the
    summary first. A fatal error is named by its cause (the error a
    :class:`~vertexflow.errors.JobAborted` wraps) and kept in ``stats.fatal``.

    SIGINT/SIGTERM (:mod:`vertexflow.interrupts`, installed here if it was not
    yet): one that came before the job starts means it never starts (130);
    during the job, see :func:`on_signal`; after it (tearing down), it is
    noted and the status stays the job's.
    """
    INTERRUPTS.install()
    if INTERRUPTS.pending:
        INTERRUPTS.pending = 0
        stats.interrupted = True
        return EXIT_INTERRUPTED
    if show_progress and _progress_json_target() == "-" and not _asked_for_line():
        show_progress = False  # the JSON lines go to stderr: a line redrawn over them would garble both
    writer = open_progress_json(stats)
    status = EXIT_FATAL
    try:
        status = _run_job(job, stats, stop, show_progress, writer)
        if settle is not None:
            status = settle(status)
        return status
    finally:
        if writer is not None:
            writer.finish(status)


def _asked_for_line() -> bool:
    """Whether ``--progress`` was given (not taken from the default: a terminal)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or "progress" not in ctx.params:
        return False
    return ctx.get_parameter_source("progress") is not click.core.ParameterSource.DEFAULT


def _run_job(job: Callable[[], Awaitable[None]], stats: JobStats, stop: StopSignal, show_progress: bool,
             writer: ProgressJson | None) -> int:
    async def main_task() -> None:
        loop = asyncio.get_running_loop()
        with INTERRUPTS.receiving(lambda signum: loop.call_soon_threadsafe(on_signal, stop)):
            async with anyio.create_task_group() as tg:
                if show_progress:
                    tg.start_soon(ProgressView(stats).run)
                if writer is not None:
                    tg.start_soon(writer.run)
                try:
                    await job()
                finally:
                    stats.finished = stats.finished or time.monotonic()
                    tg.cancel_scope.cancel()

    try:
        try:
            run_async(main_task)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
    except BaseException as exc:
        status = exit_status(exc)
        if status is None:
            raise
        if isinstance(exc, KeyboardInterrupt):
            stats.interrupted = True
        else:
            stats.fatal = stats.fatal or str(exc)
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            click.echo(f"vertexflow: error: {cause}", err=True)
        return status
    if stats.interrupted:
        return EXIT_INTERRUPTED
    if stats.failed_objects:
        return EXIT_PARTIAL
    cutoff = stats.reporters.get("cutoff")  # vertexflow.ops.cutoff: rclone's statuses
    reached = getattr(cutoff, "reached", None)
    return EXIT_OK if reached is None else EXIT_MAX_TRANSFER if reached == "max-transfer" else EXIT_MAX_DURATION


def on_signal(stop: StopSignal) -> None:
    """SIGINT/SIGTERM during a job (on its event loop): the first asks it to finish what is in flight,
    the second (and any later one) to abort it."""
    if not stop.stopping:
        click.echo("\nvertexflow: stopping: finishing transfers in flight "
                   "(press Ctrl-C again to abort them)", err=True)
        stop.request_graceful()
    else:
        click.echo("\nvertexflow: aborting transfers in flight", err=True)
        stop.request_hard()


def print_summary(stats: JobStats, as_json: bool, title: str, extra: dict[str, Any] | None = None) -> None:
    """A transfer's summary: a table on stdout (or JSON), then each failure on stderr."""
    summary = stats.summary()
    if as_json:
        click.echo(json.dumps({**summary, **(extra or {})}, indent=2))
        print_failures(stats, summary)
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
    print_failures(stats, summary)


def print_failures(stats: JobStats, summary: dict[str, Any]) -> None:
    for f in stats.failures:
        click.echo(f"FAILED {shown(f.key)}: [{f.reason}] {f.message}", err=True)
    if summary["failures_not_shown"]:
        click.echo(f"... and {summary['failures_not_shown']:,} more failures", err=True)
