"""``vertexflow company ...`` and ``vertexflow migrate ...``: the platform's companies and their storage.

Both groups find the platform database with ``--db`` (``VERTEXFLOW_DB``)
and the storage config with ``--storage-config`` (``VERTEXFLOW_STORAGE_CONFIG``).
The work is done by :mod:`vertexflow.tenancy` and :mod:`vertexflow.ops.migrate`;
this module only parses and prints; :mod:`.run` maps errors to exit codes
(0 ok, 1 a check found problems or a migration failed and was rolled back,
2 bad input).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..errors import first_error
from ..tenancy.manager import DEFAULT_SUBFOLDERS, StorageManager
from .platform import TenancyCtx, echo_data, platform_options, run_with_manager
from .run import EXIT_PARTIAL, progress_json_option, reported, run_job
from ..ops.assembly import open_journal
from .transfer import build_filter, with_filter_options


# -- company ---------------------------------------------------------------------
@click.group()
@platform_options
@click.pass_context
def company(ctx: click.Context, db: str | None, storage_config: str | None) -> None:
    """Companies of the platform database and their storage."""
    ctx.obj = TenancyCtx(db, storage_config)


def _company_dict(m: StorageManager, c: Any) -> dict[str, Any]:
    out = {"id": c.id, "slug": c.slug, "name": c.name, **c.placement.as_dict()}
    if c.storage_connection_id is not None:
        out["connection"] = m.require_registry().connection(c.storage_connection_id).name
    return out


@company.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def company_list(obj: TenancyCtx, as_json: bool) -> None:
    async def run(m: StorageManager) -> list[dict[str, Any]]:
        return [_company_dict(m, c) for c in m.require_registry().companies()]

    rows = run_with_manager(obj, run)
    echo_data(rows, as_json, "\n".join(
        f"{r['id']:>4}  {r['slug']:<24} {r.get('connection') or r['storage_type']}" for r in rows) or "(no companies)")


@company.command("show")
@click.argument("company_ref")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def company_show(obj: TenancyCtx, company_ref: str, as_json: bool) -> None:
    """A company, where each content type of it is stored, and its migrations."""
    async def run(m: StorageManager) -> dict[str, Any]:
        c = m.company(company_ref)
        out = _company_dict(m, c)
        out["locations"] = {ct: m.target(c, ct).label() for ct in m.config.content_type_names()}
        out["migrations"] = [r.as_dict() for r in m.require_registry().migrations(c.id)]
        for r in out["migrations"]:
            r.pop("report", None)
        return out

    data = run_with_manager(obj, run)
    lines = [f"{k}: {v}" for k, v in data.items() if k not in ("locations", "migrations")]
    lines += [f"  {ct}: {where}" for ct, where in data["locations"].items()]
    lines += [f"  migration {r['id']}: {r['state']} -> {r['to'].get('name')} {r['message'] or ''}"
              for r in data["migrations"]]
    echo_data(data, as_json, "\n".join(lines))


@company.command("add")
@click.argument("slug")
@click.option("--name", default=None)
@click.option("--storage-type", type=click.Choice(["default", "local", "minio", "yandex_disk"]), default="default",
              show_default=True)
@click.option("--connection", default=None, help="A storage connection (database or storage config) by name.")
@click.option("--yandex-folder", default=None, help="Folder name on Yandex.Disk [the slug].")
@click.pass_obj
def company_add(obj: TenancyCtx, slug: str, name: str | None, storage_type: str, connection: str | None,
                yandex_folder: str | None) -> None:
    """Register a company (for rehearsals; the platform normally does this)."""
    from ..ops.migrate import resolve_target
    from ..tenancy.registry import Company, Placement

    async def run(m: StorageManager) -> int:
        conn_id, stype = None, storage_type
        if connection:
            probe = Company(0, slug, name, Placement(storage_type, None, yandex_folder))
            placement, _ = resolve_target(m, probe, connection)
            conn_id, stype = placement.storage_connection_id, placement.storage_type
        return m.require_registry().add_company(slug, name=name, storage_type=stype, storage_connection_id=conn_id,
                                         yandex_disk_folder_id=yandex_folder).id

    click.echo(run_with_manager(obj, run))


def _categories(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--subfolder", "subfolders", multiple=True, metavar="NAME",
                      help=f"Subfolder of every category (repeatable) [{', '.join(DEFAULT_SUBFOLDERS)}].")(fn)
    fn = click.option("--content-type", "content_types", multiple=True, metavar="NAME",
                      help="Only this content type (repeatable) [all].")(fn)
    fn = click.option("--json", "as_json", is_flag=True)(fn)
    return click.option("--category", "categories", multiple=True, required=True, metavar="SLUG",
                        help="Category slug (repeatable).")(fn)


@company.command("provision")
@click.argument("company_ref")
@_categories
@click.pass_obj
def company_provision(obj: TenancyCtx, company_ref: str, categories: tuple[str, ...], subfolders: tuple[str, ...],
                      content_types: tuple[str, ...], as_json: bool) -> None:
    """Create COMPANY/CATEGORY/SUBFOLDER on the company's backend for every content type."""
    async def run(m: StorageManager) -> dict[str, Any]:
        c = m.company(company_ref)
        report = await m.provision_company_storage(c.id, categories, subfolders or DEFAULT_SUBFOLDERS,
                                                   content_types=content_types or None)
        return report.as_dict()

    data = run_with_manager(obj, run)
    echo_data(data, as_json, f"created {len(data['created'])}, already there {len(data['existing'])}")


@company.command("verify")
@click.argument("company_ref")
@_categories
@click.pass_obj
def company_verify(obj: TenancyCtx, company_ref: str, categories: tuple[str, ...], subfolders: tuple[str, ...],
                   content_types: tuple[str, ...], as_json: bool) -> None:
    """Check the provisioned hierarchy; exit 1 and name what is missing."""
    async def run(m: StorageManager) -> dict[str, Any]:
        c = m.company(company_ref)
        report = await m.verify_company_storage(c.id, categories, subfolders or DEFAULT_SUBFOLDERS,
                                                content_types=content_types or None)
        return report.as_dict()

    data = run_with_manager(obj, run)
    echo_data(data, as_json, "ok" if data["ok"] else "missing:\n" + "\n".join(f"  {m}" for m in data["missing"]))
    if not data["ok"]:
        raise SystemExit(EXIT_PARTIAL)


# -- migrate ---------------------------------------------------------------------
@click.group()
@platform_options
@click.pass_context
def migrate(ctx: click.Context, db: str | None, storage_config: str | None) -> None:
    """Move a company to another backend (plan, quota, provision, copy, verify, switch), or back."""
    ctx.obj = TenancyCtx(db, storage_config)


@migrate.command("company")
@click.argument("company_ref")
@click.option("--to", "to", required=True, metavar="CONNECTION",
              help="local, minio, yandex_disk, or a named connection.")
@click.option("--live", is_flag=True, help="Dual-write while copying (in every process using the platform database), then "
                   "incremental syncs and a short write fence (no downtime).")
@click.option("--dry-run", is_flag=True, help="Print the plan; change and record nothing.")
@click.option("--category", "categories", multiple=True, metavar="SLUG", help="Also provision this category.")
@click.option("--transfers", type=click.IntRange(1, 1024), default=None,
              help="Files in flight at once [8 local, 16 remote].")
@click.option("--bwlimit", metavar="RATE",
              help='Bytes per second each way: 10M, 10M:1M (up:down), off, or a timetable "08:00,512k 19:00,10M".')
@click.option("--max-delete", type=click.IntRange(0), default=None, metavar="N",
              help="Refuse the run (before changing anything) if it would delete more than N files on the target "
                   "that the company no longer has (a backend it used before) [no limit].")
@click.option("--smoke/--no-smoke", default=True, show_default=True,
              help="After the switch, try the new route as the platform uses it (company smoke); exit 1 if it fails.")
@click.option("--progress/--no-progress", default=None, help="Live progress bar on stderr [on for a terminal].")
@progress_json_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (also when the migration fails).")
@click.option("--journal", "journal_path", type=click.Path(dir_okay=False), envvar="VERTEXFLOW_JOURNAL")
@with_filter_options
@click.pass_obj
def migrate_company_cmd(obj: TenancyCtx, company_ref: str, to: str, live: bool, dry_run: bool,
                        categories: tuple[str, ...], transfers: int | None, bwlimit: str | None,
                        max_delete: int | None, smoke: bool, progress: bool | None, as_json: bool,
                        journal_path: str | None, **kw: Any) -> None:
    """Migrate COMPANY (id or slug) to CONNECTION.

    \b
    With a filter (--include, --exclude, --prefix...) it is a staged copy: the
    company is switched only if every file of it is then verified on the
    target; otherwise it stays where it is (state "staged") and the command
    that completes the move is printed. A migration whose process is gone
    (killed) shows as stale and is taken over by this command.

    \b
    Files on the target that the company no longer has (a backend it used
    before keeps the copy it left there) are deleted, so that the target ends
    as the company is: --dry-run counts and names them, --max-delete bounds them.
    """
    import sys

    from ..ops.migrate import migrate_company
    from ..ops.spec import TransferSettings
    from ..pipeline.runner import StopSignal
    from ..pipeline.stats import JobStats

    with reported():
        filt = build_filter(kw)
        settings = TransferSettings(transfers=transfers, bwlimit=bwlimit)
        settings.check()
    stats, stop = JobStats(), StopSignal()
    out: dict[str, Any] = {}

    async def job() -> None:
        try:
            async with obj.manager() as m:
                company = m.company(company_ref)
                before = max((r.id for r in m.require_registry().migrations(company.id)), default=0)
                try:
                    async with open_journal(journal_path, False) as journal:
                        result = await migrate_company(m, company.id, to, live=live, filt=filt, dry_run=dry_run,
                                                       journal=journal, categories=categories, settings=settings,
                                                       stats=stats, stop=stop, max_delete=max_delete, smoke=smoke,
                                                       on_event=lambda state, _: _phase(stats, state))
                    out["data"] = result.as_dict()
                except BaseException as exc:
                    out["data"] = _failed_migration(m, company.id, before, exc)
                    raise
        except BaseException as exc:
            out.setdefault("data", {"migration_id": None, "company": company_ref, "state": "error",
                                    "message": str(first_error(exc))})
            raise

    show_progress = (sys.stderr.isatty() if progress is None else progress) and not dry_run and not as_json
    def settle(code: int) -> int:
        if code == EXIT_PARTIAL and (out.get("data") or {}).get("state") in ("switched", "staged"):
            code = 0  # a file the platform changed or deleted during a live copy failed there: reconciled and verified
        if code == 0 and not ((out.get("data") or {}).get("smoke") or {"ok": True})["ok"]:
            code = EXIT_PARTIAL  # switched, but the new route does not serve as the platform uses it
        return code

    code = run_job(job, stats, stop, show_progress, settle)
    data = out.get("data")
    if data is not None:
        data["transfer"] = {k: v for k, v in stats.summary().items()
                            if k in ("objects", "bytes", "skipped", "failed", "seconds", "mb_per_s", "retries")}
        if as_json:
            echo_data(data, True, "")
        else:
            _print_migration(data)
        if data.get("state") == "interrupted" and as_json:
            click.echo(f"vertexflow: {data['message']}", err=True)
    sys.exit(code)


def _phase(stats: Any, state: str) -> None:
    """A migration's step as its progress's phase (copying, verifying, closing, switched)."""
    if state in ("copying", "verifying", "closing", "switched"):
        stats.phase = state


def _failed_migration(m: StorageManager, company_id: int, before: int, exc: BaseException) -> dict[str, Any]:
    """What a migration that raised recorded (its report), or the error alone when it recorded nothing."""
    records = [r for r in m.require_registry().migrations(company_id) if r.id > before]
    if not records:
        return {"migration_id": None, "company_id": company_id, "state": "error", "message": str(first_error(exc))}
    rec = records[-1]
    data = dict(rec.report or {"migration_id": rec.id, "company_id": company_id})
    data["state"] = data.get("state") if data.get("state") not in (None, "planned") else rec.state
    data["message"] = data.get("message") or rec.message or str(first_error(exc))
    return data


def _print_migration(data: dict[str, Any]) -> None:
    for p in data.get("plan", ()):
        left = f" ({p['left_out']} left out by the filter)" if p.get("left_out") else ""
        click.echo(f"{p['content_type']}: {p['objects']} files, {p['bytes']:,} bytes{left}  {p['from']} -> {p['to']}")
        if p.get("extras"):
            verb = "to delete" if data["state"] == "dry_run" else "deleted"
            shown = ", ".join(p["first_extras"]) + (", ..." if p["extras"] > len(p["first_extras"]) else "")
            click.echo(f"  {p['extras']} files on the target the company no longer has ({p['extra_bytes']:,} bytes), "
                       f"{verb}: {shown}")
    if data["state"] == "dry_run":
        if data.get("left_out"):
            click.echo(f"a filtered run is a staged copy: the company is switched only if all its files are then "
                       f"on the target ({data['left_out']} left out)")
        return
    if data.get("taken_over"):
        click.echo(f"took over stale migration {', '.join(map(str, data['taken_over']))} (its process was gone)")
    if data["state"] == "switched":
        click.echo(f"migration {data['migration_id']}: switched: {data['message']} "
                   f"(copied {data['copied']}, verified {data['verified']})")
        if data.get("smoke") and data["smoke"]["ok"]:
            click.echo(f"smoke check of the new route: every step passed ({len(data['smoke']['steps'])} steps)")
    elif data["state"] == "staged":
        click.echo(f"migration {data['migration_id']}: staged: {data['message']}")
    elif data["state"] == "interrupted":
        click.echo(f"migration {data['migration_id']}: interrupted: {data['message']}"
                   if data.get("migration_id") is not None else data["message"])
    elif data.get("migration_id") is not None:
        click.echo(f"migration {data['migration_id']}: {data['state']}: the company stays on "
                   f"{(data.get('from') or {}).get('name')}")


@migrate.command("rollback")
@click.argument("company_ref")
@click.option("--no-sync-back", is_flag=True, help="Do not copy changes made since the switch back to the old backend.")
@click.option("--transfers", type=click.IntRange(1, 1024), default=None,
              help="Files in flight at once [8 local, 16 remote].")
@click.option("--bwlimit", metavar="RATE", help="Bytes per second each way while syncing back (as for copy).")
@click.option("--smoke/--no-smoke", default=True, show_default=True,
              help="After the switch back, try the route as the platform uses it (company smoke); exit 1 if it fails.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--journal", "journal_path", type=click.Path(dir_okay=False), envvar="VERTEXFLOW_JOURNAL")
@click.pass_obj
def migrate_rollback(obj: TenancyCtx, company_ref: str, no_sync_back: bool, transfers: int | None,
                     bwlimit: str | None, smoke: bool, as_json: bool, journal_path: str | None) -> None:
    """Return COMPANY to the backend its last migration moved it from.

    The sync back runs as a live migration in reverse: writes of the platform
    meanwhile go to both backends, and a short write fence covers the switch.
    """
    from ..ops.migrate import rollback_company
    from ..ops.spec import TransferSettings

    with reported():
        settings = TransferSettings(transfers=transfers, bwlimit=bwlimit)
        settings.check()

    failure: dict[str, Any] = {}

    async def run(m: StorageManager) -> dict[str, Any]:
        try:
            async with open_journal(journal_path, False) as journal:
                return (await rollback_company(m, company_ref, sync_back=not no_sync_back, journal=journal,
                                               settings=settings, smoke=smoke)).as_dict()
        except BaseException as exc:
            err = first_error(exc)  # a task group's: the error inside it
            failure.update({"migration_id": getattr(err, "migration_id", None), "company": company_ref,
                            "state": "failed" if getattr(err, "migration_id", None) else "error",
                            "message": str(err)})
            raise

    try:
        data = run_with_manager(obj, run)
    except SystemExit:
        if as_json and failure:  # the result also when it fails; the exit status stays the table's
            echo_data(failure, True, "")
        raise
    echo_data(data, as_json, f"{data['message']} (synced back {data['copied']} files)")
    if data.get("smoke") and not data["smoke"]["ok"]:
        raise SystemExit(EXIT_PARTIAL)  # back where it was, but that route does not serve as the platform uses it


@migrate.command("list")
@click.argument("company_ref", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def migrate_list(obj: TenancyCtx, company_ref: str | None, as_json: bool) -> None:
    """The migration records (of one company)."""
    async def run(m: StorageManager) -> list[dict[str, Any]]:
        cid = m.company(company_ref).id if company_ref else None
        return [r.as_dict() for r in m.require_registry().migrations(cid)]

    rows = run_with_manager(obj, run)
    echo_data(rows, as_json, "\n".join(
        f"{r['id']:>4}  company {r['company_id']}  {r['from'].get('name')} -> {r['to'].get('name')}  "
        f"{r['state']}  {r['message'] or ''}" for r in rows) or "(no migrations)")


@migrate.command("status")
@click.argument("company_ref")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def migrate_status(obj: TenancyCtx, company_ref: str, as_json: bool) -> None:
    """Where COMPANY is and its last migration: running, stale (its process is gone), or how it ended."""
    async def run(m: StorageManager) -> dict[str, Any]:
        c = m.company(company_ref)
        records = m.require_registry().migrations(c.id)
        last = records[-1].as_dict() if records else None
        if last is not None:
            last.pop("report", None)
        return {**_company_dict(m, c), "migration": last}

    data = run_with_manager(obj, run)
    where = data.get("connection") or data["storage_type"]
    mig = data["migration"]
    if mig is None:
        text = f"company {data['slug']} on {where}; no migrations"
    else:
        text = f"company {data['slug']} on {where}; migration {mig['id']} -> {mig['to'].get('name')}: {mig['state']}"
        lease = mig.get("lease")
        if mig["state"] == "stale":
            text += (f" (left {mig['recorded_state']} by pid {lease['pid'] if lease else '?'} on "
                     f"{lease['host'] if lease else '?'}, which is gone: rerun `vertexflow migrate company "
                     f"{data['slug']} --to {mig['to'].get('name')}` to take it over, or `vertexflow migrate "
                     f"abandon {mig['id']}`)")
        elif lease and mig["finished_at"] is None:
            text += f" (pid {lease['pid']} on {lease['host']})"
        if mig.get("message"):
            text += f"\n  {mig['message']}"
    echo_data(data, as_json, text)


@migrate.command("abandon")
@click.argument("migration_id", type=int)
@click.pass_obj
def migrate_abandon(obj: TenancyCtx, migration_id: int) -> None:
    """Mark a migration that was interrupted (killed) as failed, so the company can be migrated again.

    Its live state goes with it: writes go to the old backend alone, a write
    fence is lifted, its dirty-key rows are removed. (A rerun of a migration
    whose process is gone takes it over without this.)
    """
    async def run(m: StorageManager) -> tuple[str, str]:
        # a live one: writes go to the old backend only again (and its write fence, if up, is lifted), its
        # dirty keys are dropped; a write that ends after this leaves none behind (LiveState.end_write)
        rec = m.require_registry().abandon_migration(migration_id, "abandoned by the operator")
        return ("stale " if rec.is_stale() else "") + rec.state, m.require_registry().migration(migration_id).state

    was, now = run_with_manager(obj, run)
    click.echo(f"migration {migration_id} marked {now} (was {was})")


@migrate.command("show")
@click.argument("migration_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def migrate_show(obj: TenancyCtx, migration_id: int, as_json: bool) -> None:
    """One migration and its report: per content type what was copied, skipped, verified, reconciled, deleted,
    and every difference found; a cleanup of what it left behind."""
    async def run(m: StorageManager) -> dict[str, Any]:
        rec = m.require_registry().migration(migration_id)
        return {**rec.as_dict(), "company": m.require_registry().company(rec.company_id).slug}

    data = run_with_manager(obj, run)
    echo_data(data, as_json, _show_text(data))


def _when(t: float | None) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if t else "-"


def _show_text(data: dict[str, Any]) -> str:
    lines = [f"migration {data['id']}: company {data['company']}  {data['from'].get('name')} -> "
             f"{data['to'].get('name')}  {data['state']}{'  (live)' if data['live'] else ''}",
             f"  started {_when(data['started_at'])}, ended {_when(data['finished_at'])}"]
    if data.get("message"):
        lines.append(f"  {data['message']}")
    report = data.get("report") or {}
    for p in report.get("plan", ()):
        lines.append(f"  {p['content_type']}: {p['objects']} files, {p['bytes']:,} bytes; copied {p.get('copied', '-')}, "
                     f"skipped {p.get('skipped', '-')}, verified {p.get('verified', '-')}, reconciled "
                     f"{p.get('reconciled', '-')}, deleted {p.get('deleted', '-')}"
                     + (f", left out {p['left_out']}" if p.get("left_out") else ""))
        lines.extend(f"    difference: {d}" for d in p.get("differences", ()))
    cleanup = report.get("cleanup")
    if cleanup:
        lines.append(f"  cleanup {_when(cleanup.get('at'))}: {cleanup['message']}")
    return "\n".join(lines)


def _grace(text: str) -> float:
    from ..filters import parse_age

    return 0.0 if text.strip() == "0" else parse_age(text).total_seconds()


@migrate.command("cleanup")
@click.argument("migration_id", type=int)
@click.option("--grace", default="7d", show_default=True, metavar="AGE",
              help="Keep the copy this long after the migration ended (0 for none).")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def migrate_cleanup(obj: TenancyCtx, migration_id: int, grace: str, dry_run: bool, as_json: bool) -> None:
    """Delete the copy MIGRATION_ID left behind: a switched one's source, or what a failed, rolled back or
    staged one copied to its target.

    \b
    Never a location the company (or another company) reads now, never while
    the company has a migration in progress, and only once the grace period
    since the migration ended is over. What was deleted goes into the
    migration's report (`vertexflow migrate show ID`).
    """
    from ..ops.migrate_cleanup import cleanup_migration

    with reported():
        seconds = _grace(grace)

    async def run(m: StorageManager) -> dict[str, Any]:
        return (await cleanup_migration(m, migration_id, grace=seconds, dry_run=dry_run)).as_dict()

    data = run_with_manager(obj, run)
    text = "\n".join([*(f"{loc['content_type']}: {loc['where']}: " + (f"kept ({loc['skipped']})" if loc["skipped"]
                        else f"{loc['files']} files, {loc['bytes']:,} bytes" + ("" if dry_run else
                                                                              f", deleted {loc['deleted']}"))
                        for loc in data["locations"]), data["message"]])
    echo_data(data, as_json, text)


from .migrate_plan import plan as plan_command  # noqa: E402  (a migrate subcommand of its own module)
migrate.add_command(plan_command)

from .company_checks import refs as refs_command, smoke as smoke_command  # noqa: E402
company.add_command(refs_command)
company.add_command(smoke_command)
