"""``vertexflow move``, ``moveto`` and ``copyto`` (how a move keeps every object: :mod:`vertexflow.ops.move`).

They take the options of ``copy`` (:func:`.transfer.transfer_options`) but
the stages that rename what is stored (and, a move, ``--links``/``--copy-links``),
and run in this process (no ``--cluster``). Exit status as copy's: 0
everything copied (and, a move, every source object deleted); 1 some objects
failed or were left at the source, each named; 2 bad input (an overlap, a
missing source) or a fatal error; 8 / 10 the copy stopped at
``--max-transfer`` / ``--max-duration``; 130 interrupted (nothing deleted).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from ..errors import ConfigError
from ..locations import parse_location
from ..pipeline.runner import StopSignal
from ..pipeline.stats import JobStats
from .context import Ctx
from .files import shown
from .run import EXIT_OK, EXIT_PARTIAL, print_summary, reported, run_job
from .transfer import spec_from_options, transfer_options


@click.command()
@click.argument("src")
@click.argument("dst")
@transfer_options
@click.option("--delete-empty-src-dirs", is_flag=True, help="Remove the source's folders left empty.")
@click.pass_obj
def move(obj: Ctx, src: str, dst: str, **kw: Any) -> None:
    """Move the contents of SRC under DST: copy, verify each copy, then delete its source object.

    A source object is deleted only once its copy is proven to hold the same
    bytes (the engine's SHA-256 check recorded in the journal, a hash both
    stores report, or both read); anything else stays at the source.
    """
    _run(obj, "move", src, dst, rename=False, delete_source=True, **kw)


@click.command()
@click.argument("src")
@click.argument("dst")
@transfer_options
@click.pass_obj
def moveto(obj: Ctx, src: str, dst: str, **kw: Any) -> None:
    """Move the object SRC to DST, its new name (a folder SRC: as move)."""
    _run(obj, "moveto", src, dst, rename=True, delete_source=True, **kw)


@click.command()
@click.argument("src")
@click.argument("dst")
@transfer_options
@click.pass_obj
def copyto(obj: Ctx, src: str, dst: str, **kw: Any) -> None:
    """Copy the object SRC to DST, its new name (a folder SRC: as copy)."""
    _run(obj, "copyto", src, dst, rename=True, delete_source=False, **kw)


def _run(obj: Ctx, what: str, src: str, dst: str, *, rename: bool, delete_source: bool, progress: bool | None,
         as_json: bool, cluster: str | None = None, delete_empty_src_dirs: bool = False, **kw: Any) -> None:
    from ..ops.assembly import Transfer
    from ..ops.move import MoveJob, stage_options_given
    from ..ops.overlap import check_overlap

    with reported():
        if given := stage_options_given(kw):
            raise ConfigError(f"{what} does not take {', '.join(given)}: they store objects under other names; "
                              "copy with them, then delete the source")
        if delete_source and (links := [f"--{n.replace('_', '-')}" for n in ("links", "copy_links") if kw.get(n)]):
            raise ConfigError(f"{what} does not take {', '.join(links)}: a symbolic link is no object it could "
                              "prove and delete; copy with it, then delete the source")
        if cluster:  # refused rather than run: proving each copy before its source is deleted is not done by shards
            raise ConfigError(f"{what} does not run as shards on a cluster: leave out --cluster"
                              + (" (a move proves each copy before it deletes the source object, which is not "
                                 "done across shards)" if delete_source else ""))
        spec = spec_from_options("copy", src, dst, obj.config_path, kw)
        config = obj.config
        src_loc, dst_loc = parse_location(src, config), parse_location(dst, config)
        check_overlap(src_loc, dst_loc, spec.filter, what=what)
        if rename and dst_loc.split_last() is None:
            raise ConfigError(f"{what} {dst}: name the destination object (a path under a folder or bucket)")
        job = MoveJob(Transfer.prepare(spec, config), rename=rename, delete_source=delete_source,
                      delete_empty_src_dirs=delete_empty_src_dirs)
    show_progress = (sys.stderr.isatty() if progress is None else progress) and not spec.dry_run
    stats, stop = JobStats(), StopSignal()
    plan: list[str] = []
    outcome: list[Any] = []

    def on_plan(d: Any) -> None:
        if d.action in ("copy", "delete"):
            line = f"{d.action} {shown(d.key)} ({d.why})"
            if as_json:
                plan.append(line)
            else:
                click.echo(line)

    def on_delete(info: Any) -> None:
        if spec.dry_run:
            line = f"delete from the source {shown(info.key)} (once its copy is verified)"
            if as_json:
                plan.append(line)
            else:
                click.echo(line)

    async def work() -> None:
        outcome.append(await job.run(stats, stop, on_plan=on_plan, on_delete=on_delete))

    def settle(code: int) -> int:
        report = outcome[0] if outcome else None
        if report is not None and report.kept and code == EXIT_OK:
            return EXIT_PARTIAL  # a source object stayed: the move is not done
        return code

    code = run_job(work, stats, stop, show_progress, settle)
    report = outcome[0] if outcome else None
    extra: dict[str, Any] = {}
    if report is not None:
        extra["move"] = report.as_dict()
    if spec.dry_run and as_json:
        extra["plan"] = plan
    print_summary(stats, as_json, f"{what} {src} -> {dst}" + (" (dry run)" if spec.dry_run else ""), extra=extra)
    if report is not None:
        _print_move(report, as_json)
    sys.exit(code)


def _print_move(report: Any, as_json: bool) -> None:
    if not as_json:
        verb = "would be deleted" if report.dry_run else "deleted"
        proof = "" if report.dry_run else " (proven by " + ", ".join(
            f"{how.replace('_', ' ')}: {n:,}" for how, n in report.proven_by.items() if n) + ")"
        click.echo(f"source: {report.deleted:,} objects {verb}{proof if report.deleted else ''}"
                   + (f", {report.kept:,} left at the source" if report.kept else "")
                   + (f", {report.not_copied:,} not copied yet (the copy stopped at its limit)"
                      if report.not_copied else "")
                   + (f", {report.folders_removed:,} empty folders removed" if report.folders_removed else ""),
                   err=True)
    for key, why in report.kept_shown:
        click.echo(f"KEPT {shown(key)}: {why}", err=True)
    if report.kept > len(report.kept_shown):
        click.echo(f"... and {report.kept - len(report.kept_shown):,} more left at the source", err=True)
