"""``vertexflow jobs list|show|resume|forget``: the jobs recorded in the journal."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table

from ..config_file import load_remotes
from ..errors import ConfigError
from ..ops.assembly import open_journal
from ..ops.spec import spec_of_job
from ..state.journal import default_journal_path
from .names import shown
from .run import fail, reported, run_or_exit
from .transfer import run_spec


@click.group()
def jobs() -> None:
    """Jobs recorded in the journal: list, show, resume, forget."""


@jobs.command("list")
@click.option("--journal", "journal_path", type=click.Path(dir_okay=False), envvar="VERTEXFLOW_JOURNAL")
@click.option("--json", "as_json", is_flag=True)
def jobs_list(journal_path: str | None, as_json: bool) -> None:
    async def run() -> list[Any]:
        async with open_journal(journal_path, False) as journal:
            return await journal.list_jobs()

    records = run_or_exit(run)
    if as_json:
        click.echo(json.dumps([_job_dict(j) for j in records], indent=2))
        return
    table = Table(box=box.SIMPLE_HEAD)
    for name in ("id", "kind", "state"):
        table.add_column(name, overflow="fold")
    for name in ("source", "destination"):  # a location is folded over lines, never cut short
        table.add_column(name, overflow="fold", ratio=1, min_width=len(name))
    for name in ("objects", "failed"):
        table.add_column(name, justify="right", overflow="fold")
    table.add_column("updated", overflow="fold", max_width=10)
    for j in records:
        s = j.summary or {}
        table.add_row(str(j.id), j.kind, j.state, shown(j.src), shown(j.dst), str(s.get("objects", "")),
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

    job, counts, failed = run_or_exit(run)
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

    job = run_or_exit(run)
    if job is None:
        fail(f"no job {job_id} in the journal")
    if job.kind not in ("copy", "sync"):
        fail(f"job {job_id} is a {job.kind} job; only copy and sync jobs resume")
    with reported():
        spec = spec_of_job(job.kind, job.src, job.dst, job.options)
        # the same run, recorded in the same journal; a config file given now names the remotes
        spec = replace(spec, journal=journal_path or str(default_journal_path()), no_journal=False, dry_run=False,
                       config_path=ctx.obj.config_path or spec.config_path)
        config = ctx.obj.config if ctx.obj.config_path else load_remotes(spec.config_path)
    run_spec(spec, config, as_json=as_json, progress=progress, cluster=None, title=f"{spec.source} -> {spec.dest}")


@jobs.command("forget")
@click.argument("job_id", type=int)
@click.option("--journal", "journal_path", type=click.Path(dir_okay=False), envvar="VERTEXFLOW_JOURNAL")
def jobs_forget(job_id: int, journal_path: str | None) -> None:
    """Remove a job and its object records from the journal."""
    async def run() -> bool:
        async with open_journal(journal_path, False) as journal:
            return await journal.forget_job(job_id)

    if not run_or_exit(run):
        fail(f"no job {job_id} in the journal")
    click.echo(f"forgot job {job_id}")


def _job_dict(j: Any) -> dict[str, Any]:
    return {"id": j.id, "kind": j.kind, "state": j.state, "src": j.src, "dst": j.dst, "options": j.options,
            "created": _when(j.created), "updated": _when(j.updated), "summary": j.summary}


def _when(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
