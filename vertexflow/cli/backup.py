"""``vertexflow backup create|list|verify|restore|prune`` (docs/backup.md).

Exit status: 0 done; 1 a backup failed verification (each problem is named
by part, object or member), or a restore refused a damaged or unsafe backup
(:data:`PROBLEMS`); 2 usage, config or connection error, or a fatal error
that stopped the job (the table of :mod:`.run`).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

import click

from ..errors import BackupError, ConfigError, IntegrityError
from .run import EXIT_OK, EXIT_PARTIAL, fail, progress_options, reported, run_or_exit

#: what ``backup verify`` and ``backup restore`` check: these errors mean a damaged backup (exit 1)
PROBLEMS = (BackupError, IntegrityError)
DEFAULT_TO = os.path.join(os.path.expanduser("~"), ".local", "state", "vertexflow", "backups")


def _config(ctx: click.Context) -> Any:
    with reported():
        return ctx.obj.config


def _location(spec: str, config: Any) -> Any:
    from ..locations import parse_location

    with reported():
        return parse_location(spec, config)


def _backup_location(spec: str, config: Any) -> tuple[Any, str]:
    """``.../<id>/metadata.json`` or ``.../<id>``: the location holding the backup folder, and the id."""
    from ..ops.backup.metadata import METADATA, parse_id

    loc = _location(spec, config)
    split = loc.split_last()
    if split and split[1] == METADATA:
        loc = split[0]
        split = loc.split_last()
    if not split or parse_id(split[1]) is None:
        fail(f"{spec!r} is not a backup: give its metadata.json or its folder (vertexflow-<type>-<time>)")
    return split


@click.group()
def backup() -> None:
    """Back up and restore the database and the storage tree (docs/backup.md)."""


def _platform_option(fn: Any) -> Any:
    return click.option(
        "--platform", "platform", is_flag=False, flag_value="", default=None, metavar="[STORAGE_CONFIG]",
        help="The platform of this storage_config.json (bare: $VERTEXFLOW_STORAGE_CONFIG): its database and every "
             "company's files, wherever each is routed.")(fn)


def _storage_config(value: str) -> str:
    """The path ``--platform`` names; bare ``--platform`` takes $VERTEXFLOW_STORAGE_CONFIG."""
    path = value or os.environ.get("VERTEXFLOW_STORAGE_CONFIG", "")
    if not path:
        fail("--platform needs the platform's storage_config.json (or VERTEXFLOW_STORAGE_CONFIG set)")
    return path


@backup.command("create")
@click.option("--type", "kind", type=click.Choice(["full", "database", "storage"]), default="full", show_default=True)
@click.option("--db", "db_path", envvar="VERTEXFLOW_DB", type=click.Path(dir_okay=False),
              help="The SQLite database to copy (database and full).")
@click.option("--storage", "storage", help="The storage tree to archive: a path, s3://..., yadisk:/..., NAME:path.")
@click.option("--to", "to", envvar="VERTEXFLOW_BACKUP_TO", default=DEFAULT_TO, show_default=True,
              help="Where backups are kept (a path, s3://..., yadisk:/..., NAME:path).")
@click.option("--compress", "compress", default="gzip", show_default=True, help="gzip[:1-9] or zstd[:1-19].")
@click.option("--chunk-size", default="100M", show_default=True, help="Largest part of the archive.")
@_platform_option
@click.option("--allow-incomplete", is_flag=True,
              help="With --platform: back up the companies whose stores answer, mark the others incomplete (exit 1).")
@click.option("--json", "as_json", is_flag=True)
@progress_options
@click.pass_context
def create(ctx: click.Context, kind: str, db_path: str | None, storage: str | None, to: str, compress: str,
           chunk_size: str, platform: str | None, allow_incomplete: bool, as_json: bool) -> None:
    """Write a new backup to --to; metadata.json is written last."""
    from ..filters import parse_size
    from ..ops.backup.create import CreateOptions, create_backup
    from ..transforms.compression import parse_codec

    config = _config(ctx)
    with reported():
        codec = parse_codec(compress)
        size = parse_size(chunk_size)
    if platform is not None:
        if ctx.get_parameter_source("kind") != click.core.ParameterSource.DEFAULT:
            fail("--platform backs up the whole platform (database and files): give it without --type")
        if storage:
            fail("--platform reads every company's files where the platform routes them: give it without --storage")
        if not db_path:
            fail("--platform needs the platform database: --db PATH (or VERTEXFLOW_DB)")
        _create_platform(config, _storage_config(platform), db_path, to, codec, size, allow_incomplete, as_json)
        return
    if allow_incomplete:
        fail("--allow-incomplete goes with --platform")
    if kind in ("full", "storage") and not storage:
        fail(f"--type {kind} needs --storage URL")
    if kind in ("full", "database") and not db_path:
        fail(f"--type {kind} needs --db PATH (or VERTEXFLOW_DB)")
    dest_loc = _location(to, config)
    src_loc = _location(storage, config) if storage and kind != "database" else None
    from ..ops.backup.progress import archived_source, database_only, settled
    from ..pipeline.stats import JobStats

    stats = JobStats(phase="archiving")  # progress: what the archive has read
    db_size = os.path.getsize(db_path) if kind != "storage" and db_path and os.path.isfile(db_path) else None

    async def run() -> Any:
        async with dest_loc.backend() as dest:
            if src_loc is None:
                database_only(stats, db_size or 0)
                result = await create_backup(dest, CreateOptions(kind=kind, codec=codec, chunk_size=size,
                                                                 db_path=db_path))
                settled(stats)
                return result
            async with src_loc.backend() as source:
                await source.check()
                async with archived_source(source, stats, db_size) as counted:
                    result = await create_backup(dest, CreateOptions(
                        kind=kind, codec=codec, chunk_size=size, db_path=db_path if kind != "storage" else None,
                        storage=counted, storage_spec=src_loc.canonical))
                settled(stats)
                return result

    result = run_or_exit(run, progress=stats)
    meta = result.metadata
    summary: dict[str, Any] = {"backup": meta.id, "location": f"{to.rstrip('/')}/{meta.id}", "type": meta.type,
                               "seconds": round(result.seconds, 3), "skipped": result.skipped}
    if meta.storage:
        s = meta.storage
        summary.update(parts=len(s.parts), files=s.files, directories=s.directories, bytes=s.bytes,
                       stored_bytes=s.stream_size,
                       mb_per_s=round(s.bytes / 1e6 / max(result.seconds, 1e-9), 1))
    if meta.database:
        summary.update(database_bytes=meta.database.size)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(f"backup {meta.id} written to {summary['location']}")
        for k, v in summary.items():
            if k not in ("backup", "location") and v not in (None, []):
                click.echo(f"  {k}: {v}")


def _create_platform(config: Any, storage_config: str, db_path: str, to: str, codec: Any, size: int,
                     allow_incomplete: bool, as_json: bool) -> None:
    from ..ops.backup.platform import PlatformOptions, create_platform_backup, summary
    from ..tenancy.manager import StorageManager

    dest_loc = _location(to, config)
    with reported():
        if not os.path.isfile(db_path):
            raise ConfigError(f"--db {db_path!r}: no such database file")

    from ..middleware.progress import CountedWrites
    from ..pipeline.stats import JobStats

    stats = JobStats(phase="archiving")  # progress: what is written to the backup (its total is unknown)

    async def run() -> Any:
        async with StorageManager.open(storage_config, db_path) as manager, dest_loc.backend() as dest:
            return await create_platform_backup(CountedWrites(dest, stats), manager, PlatformOptions(
                codec=codec, chunk_size=size, allow_incomplete=allow_incomplete))

    result = run_or_exit(run, progress=stats, status_of=lambda r: EXIT_OK if all(
        c["complete"] for c in summary(r.metadata)) else EXIT_PARTIAL)
    meta = result.metadata
    assert meta.storage is not None and meta.platform is not None
    s = meta.storage
    companies = summary(meta)
    incomplete = [c for c in companies if not c["complete"]]
    out: dict[str, Any] = {
        "backup": meta.id, "location": f"{to.rstrip('/')}/{meta.id}", "type": meta.type,
        "seconds": round(result.seconds, 3), "parts": len(s.parts), "files": s.files, "directories": s.directories,
        "bytes": s.bytes, "stored_bytes": s.stream_size, "database_bytes": meta.database.size if meta.database else 0,
        "mb_per_s": round(s.bytes / 1e6 / max(result.seconds, 1e-9), 1),
        "objects_per_s": round(s.files / max(result.seconds, 1e-9), 1),
        "complete": not incomplete, "changed": sum(c["changed"] for c in companies), "companies": companies}
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(f"backup {meta.id} written to {out['location']}")
        for k in ("type", "seconds", "parts", "files", "directories", "bytes", "stored_bytes", "database_bytes",
                  "mb_per_s", "objects_per_s", "changed"):
            click.echo(f"  {k}: {out[k]}")
        for c in companies:
            state = "complete" if c["complete"] else "INCOMPLETE"
            click.echo(f"  company {c['company']}: {c['files']} files, {c['bytes']} bytes, {c['changed']} changed, "
                       f"{state}")
    for c in incomplete:
        for ct, error in c["errors"].items():
            click.echo(f"vertexflow: company {c['company']}, {ct} ({c['routes'][ct]}) is INCOMPLETE in this "
                       f"backup: {error}", err=True)
    if out["changed"]:
        click.echo(f"vertexflow: {out['changed']} files changed while the backup ran; metadata.json names them "
                   "(platform.companies[].content.<type>.changed)", err=True)
    sys.exit(EXIT_PARTIAL if incomplete else EXIT_OK)


@backup.command("list")
@click.option("--to", "to", envvar="VERTEXFLOW_BACKUP_TO", default=DEFAULT_TO, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_(ctx: click.Context, to: str, as_json: bool) -> None:
    """The backups at --to, oldest first; incomplete (interrupted or damaged) ones are marked."""
    from ..ops.backup.catalog import scan

    loc = _location(to, _config(ctx))

    async def run() -> Any:
        async with loc.backend() as dest:
            return await scan(dest)

    entries = run_or_exit(run)
    if as_json:
        click.echo(json.dumps([e.as_dict() for e in entries], indent=2))
        return
    for e in entries:
        state = "complete" if e.complete else ("INCOMPLETE" + (f" ({e.problem})" if e.problem else ""))
        files = f"{e.metadata.storage.files} files" if e.metadata and e.metadata.storage else ""
        click.echo(f"{e.id}\t{e.type}\t{e.created:%Y-%m-%dT%H:%M:%SZ}\t{e.size} bytes\t{files}\t{state}")
    if not entries:
        click.echo(f"no backups at {to}", err=True)


@backup.command("verify")
@click.argument("backup_spec", metavar="BACKUP")
@click.option("--json", "as_json", is_flag=True)
@progress_options
@click.pass_context
def verify(ctx: click.Context, backup_spec: str, as_json: bool) -> None:
    """Check every part's SHA-256, read the archive to its end, check the database copy (exit 1 on a problem)."""
    from ..ops.backup.reading import Opened, load_metadata
    from ..ops.backup.verify import verify_backup

    from ..ops.backup.progress import counted
    from ..pipeline.stats import JobStats

    loc, bid = _backup_location(backup_spec, _config(ctx))
    stats = JobStats(phase="checking")  # progress: the stored objects read and checked

    async def run() -> Any:
        async with loc.backend() as store:
            meta = await load_metadata(store, bid)
            return await verify_backup(counted(Opened(store, bid, meta), stats))

    report = run_or_exit(run, problems=PROBLEMS, progress=stats,
                         status_of=lambda r: EXIT_OK if r.ok else EXIT_PARTIAL)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for p in report.problems:
            click.echo(f"PROBLEM {p}")
        click.echo(f"backup {bid}: {report.parts} parts, {report.files} files, {report.directories} directories, "
                   f"{report.bytes} bytes: "
                   + ("OK" if report.ok else f"{len(report.problems)} problem(s)"), err=not report.ok)
    sys.exit(EXIT_OK if report.ok else EXIT_PARTIAL)


@backup.command("restore")
@click.argument("backup_spec", metavar="BACKUP")
@click.option("--target-storage", help="Where the storage goes: a remote NAME, a URL or a path "
                                       "(default: where it was backed up from).")
@click.option("--db-path", type=click.Path(dir_okay=False),
              help="Where the database goes (default: where it was copied from); the old file is kept beside it.")
@click.option("--only", "only", metavar="PREFIX", help="Restore only the files under this path.")
@_platform_option
@click.option("--company", "company", metavar="COMPANY",
              help="With --platform: this company's files only (id or folder); the database is left as it is.")
@click.option("--connection", "connection", metavar="NAME",
              help="With --platform: put the files onto this connection and route the companies there.")
@click.option("--json", "as_json", is_flag=True)
@progress_options
@click.pass_context
def restore(ctx: click.Context, backup_spec: str, target_storage: str | None, db_path: str | None,
            only: str | None, platform: str | None, company: str | None, connection: str | None,
            as_json: bool) -> None:
    """Check the whole backup (parts, members, database copy), then write the files and the database."""
    from ..ops.backup.reading import Opened, load_metadata
    from ..ops.backup.restore import RestoreResult, restore_backup

    config = _config(ctx)
    loc, bid = _backup_location(backup_spec, config)
    if platform is not None:
        if target_storage:
            fail("--platform puts every company's files onto its route: give it without --target-storage "
                 "(--connection NAME puts them onto one connection)")
        _restore_platform(loc, bid, backup_spec, _storage_config(platform), db_path, company, connection, only,
                          as_json)
        return
    if company or connection:
        fail("--company and --connection go with --platform")
    from ..ops.backup.progress import counted
    from ..pipeline.stats import JobStats

    result = RestoreResult()
    stats = JobStats(phase="checking")  # progress: the backup's objects read, checking then writing
    where: dict[str, str | None] = {"target": None, "database": None}

    async def run() -> Any:
        async with loc.backend() as store:
            meta = await load_metadata(store, bid)
            opened = counted(Opened(store, bid, meta), stats, result=result)
            target = None
            if meta.platform is not None and not target_storage:
                raise ConfigError(f"backup {bid} is a platform backup: restore it with --platform "
                                  "STORAGE_CONFIG (each company onto its route), or give --target-storage to "
                                  "unpack the whole archive into one place")
            if meta.storage is not None:
                target = _target_location(target_storage or meta.storage.source, config)
                where["target"] = target.canonical.removeprefix("file://")
            db = db_path or (meta.database.source if meta.database else None)
            where["database"] = db if meta.database else None
            if target is None:
                return await restore_backup(opened, target=None, db_path=db, only=only, result=result)
            async with target.backend() as backend:
                return await restore_backup(opened, target=backend, db_path=db, only=only, result=result)

    try:
        run_or_exit(run, problems=PROBLEMS, progress=stats)
    except SystemExit as stop:
        if stop.code:  # the error is printed; say what was checked, what was written, what to do
            click.echo(_restore_next_step(backup_spec, result, where), err=True)
        raise
    out = {"backup": bid, "files": result.files, "bytes": result.bytes, "directories": result.directories,
           "skipped": result.skipped, "database": result.database, "kept_database": result.kept_database}
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(f"restored backup {bid}: {result.files} files, {result.bytes} bytes"
                   + (f", {result.directories} empty folders" if result.directories else "")
                   + (f" ({result.skipped} outside --only)" if only else ""))
        if result.database:
            click.echo(f"database restored to {result.database}"
                       + (f"; the previous file is kept at {result.kept_database}" if result.kept_database else ""))


def _restore_platform(loc: Any, bid: str, spec: str, storage_config: str, db_path: str | None,
                      company: str | None, connection: str | None, only: str | None, as_json: bool) -> None:
    from ..ops.backup.platform_restore import PlatformRestoreOptions, PlatformRestoreResult, restore_platform
    from ..ops.backup.reading import Opened, load_metadata
    from ..tenancy.storage_config import load_storage_config

    with reported():
        storage = load_storage_config(storage_config)
    from ..ops.backup.progress import counted
    from ..pipeline.stats import JobStats

    result = PlatformRestoreResult()
    stats = JobStats(phase="checking")  # progress: the backup's objects read, checking then writing
    where: dict[str, str | None] = {"target": "the companies' stores", "database": None}

    async def run() -> Any:
        async with loc.backend() as store:
            meta = await load_metadata(store, bid)
            db = db_path or os.environ.get("VERTEXFLOW_DB") or (meta.database.source if meta.database else None)
            if not db:
                raise ConfigError("--platform needs the platform database: --db-path PATH (or VERTEXFLOW_DB)")
            where["database"] = db if company is None else None
            opts = PlatformRestoreOptions(db_path=db, company=company, only=only, connection=connection)
            return await restore_platform(counted(Opened(store, bid, meta), stats, database=company is None,
                                                  result=result), storage, opts, result=result)

    try:
        run_or_exit(run, problems=PROBLEMS, progress=stats)
    except SystemExit as stop:
        if stop.code == EXIT_PARTIAL or (stop.code and result.wrote_anything):
            click.echo(_restore_next_step(spec, result, where), err=True)
        elif stop.code:  # bad input: the message above says what to change
            click.echo(f"vertexflow: checked and sound: {', '.join(result.checked) or 'nothing yet'}; nothing "
                       "was written" + (f", the database {where['database']} was not replaced" if where["database"]
                                        else "") + ".", err=True)
        if stop.code:
            if result.phase == "re-routing":
                click.echo("vertexflow: the files and the database are restored; re-routing stopped after "
                           f"{len(result.rerouted)} companies: run the same restore with --company for the others, "
                           "or `vertexflow migrate company ... --to` them", err=True)
        raise
    for w in result.warnings:
        click.echo(f"vertexflow: warning: {w}", err=True)
    out = {"backup": bid, "files": result.files, "bytes": result.bytes, "directories": result.directories,
           "skipped": result.skipped, "database": result.database, "kept_database": result.kept_database,
           "companies": result.companies, "rerouted": result.rerouted, "warnings": result.warnings,
           "references": result.references}
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"restored backup {bid}: {result.files} files, {result.bytes} bytes"
               + (f", {result.directories} empty folders" if result.directories else "")
               + (f" ({result.skipped} not restored: other companies or outside --only)" if result.skipped else ""))
    for c in result.companies:
        click.echo(f"  company {c['company']}: " + ", ".join(f"{ct} {v['files']} files to {v['location']}"
                                                             for ct, v in c["content"].items()))
    for r in result.rerouted:
        click.echo(f"  company {r['company']} " + (f"routed to {r['to']} (migration {r['migration']})"
                                                   if r["migration"] is not None else f"already on {r['to']}"))
    if result.database:
        click.echo(f"database restored to {result.database}"
                   + (f"; the previous file is kept at {result.kept_database}" if result.kept_database else ""))


def _restore_next_step(spec: str, result: Any, where: dict[str, str | None]) -> str:
    """After a failed restore: what was checked, what was (not) written, and what to do next."""
    target, database = where["target"], where["database"]
    checked = (", ".join(result.checked) if result.checked
               else "nothing yet (the backup's metadata.json and SHA256SUMS did not load)")
    lines = [f"checked and sound: {checked}"]
    if not result.wrote_anything:
        untouched = [f"nothing was written to {target}" if target else "nothing was written",
                     *([f"the database {database} was not replaced"] if database else [])]
        lines.append("; ".join(untouched) + ".")
        lines.append(f"next: run `vertexflow backup verify {spec}` to list every problem of this backup, and "
                     "restore an older one (`vertexflow backup list --to ...`); if the error is about the target "
                     "or the connection, fix that and run the restore again.")
    else:
        lines.append(f"written before the failure: {result.files} files, {result.directories} empty folders to "
                     f"{target}, each checked against MEMBERS.sha256"
                     + ("; the database was being replaced (the previous file is kept beside it as "
                        "<db>.before-restore-<time>)" if result.phase == "restoring database"
                        else (f"; the database {database} was not replaced" if database else "")) + ".")
        lines.append("next: fix the cause above and run the same restore again; it rewrites every file.")
    return "\n".join(f"vertexflow: {line}" for line in lines)


def _target_location(value: str, config: Any) -> Any:
    """A bare remote name means that remote's root; bare ``yandex_disk``/``yadisk`` the Yandex.Disk root."""
    if value in config.remotes:
        value = value + ":"
    elif value in ("yandex_disk", "yadisk"):
        value = "yadisk:/"
    return _location(value, config)


@backup.command("prune")
@click.option("--keep", type=click.IntRange(1), default=7, show_default=True,
              help="Complete backups kept per type (the newest).")
@click.option("--to", "to", envvar="VERTEXFLOW_BACKUP_TO", default=DEFAULT_TO, show_default=True)
@click.option("--grace", default="1h", show_default=True,
              help="Leave incomplete backups written to within this long (they may still be running).")
@click.option("--dry-run", is_flag=True, help="Only say what would be deleted.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def prune(ctx: click.Context, keep: int, to: str, grace: str, dry_run: bool, as_json: bool) -> None:
    """Delete all but the newest --keep complete backups of each type, and interrupted ones, whole."""
    from ..filters import parse_age
    from ..ops.backup.catalog import delete_backup, plan_prune, scan

    with reported():
        grace_s = 0.0 if grace.strip() in ("0", "0s") else parse_age(grace).total_seconds()
    loc = _location(to, _config(ctx))

    async def run() -> Any:
        async with loc.backend() as dest:
            doomed = plan_prune(await scan(dest), keep, grace=grace_s, now=datetime.now(UTC))
            if not dry_run:
                for e in doomed:
                    await delete_backup(dest, e)
            return doomed

    doomed = run_or_exit(run)
    if as_json:
        click.echo(json.dumps({"deleted" if not dry_run else "would_delete": [e.as_dict() for e in doomed]},
                              indent=2))
        return
    for e in doomed:
        click.echo(f"{'would delete' if dry_run else 'deleted'} {e.id} "
                   f"({'complete' if e.complete else 'incomplete'}, {len(e.keys)} objects)")
    if not doomed:
        click.echo("nothing to prune", err=True)
