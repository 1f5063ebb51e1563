"""``vertexflow jobs list|show|resume|forget``: the jobs recorded in the journal."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..errors import ConfigError
from ..middleware.options import as_arguments
from ..state.journal import default_journal_path
from .run import fail, run_or_exit
from .transfer import copy, open_journal, sync


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

    if not run_or_exit(run):
        fail(f"no job {job_id} in the journal")
    click.echo(f"forgot job {job_id}")


def _job_dict(j: Any) -> dict[str, Any]:
    return {"id": j.id, "kind": j.kind, "state": j.state, "src": j.src, "dst": j.dst, "options": j.options,
            "created": _when(j.created), "updated": _when(j.updated), "summary": j.summary}


def _when(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
