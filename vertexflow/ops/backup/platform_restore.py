"""``backup restore --platform``: a platform backup's database and every company's files, back onto their routes.

Where each company's files go is resolved the way the platform resolves it
(:meth:`~vertexflow.tenancy.StorageManager.target`) with the storage config
given to the restore (its content type folders, ``base_paths``, connection
roots and credentials) and:

* a whole restore: the company's placement in the backup's own database (the
  route recorded in the backup); the database is restored too;
* ``company``: one tenant's files only, and not the database (it holds the
  other companies): the company as the platform database has it now, which
  must still be on the routes the backup recorded (else the restore refuses
  and names ``connection`` as the way to say where they go);
* ``connection``: every restored company's files go onto that one connection
  (a built-in ``local``/``minio``/``yandex_disk`` section or a connection of
  the database or storage config), and after the files (and the database) are
  in place each company is re-routed there, recorded in
  ``vertexflow_migrations`` as a switched migration (``restored from backup
  ...``), as a migration would be.

Nothing is written before everything has been checked: the backup (metadata,
member lists, every part and the archive to its end, the database copy), the
storage config against the backup's content types (a content type the backup
has and the storage config has not stops the restore: exit 2), every member
lying in a recorded company's folder, the companies and the connection, and
every store a file will go to (it answers; a missing bucket is refused, a
folder not made yet on local disk or Yandex.Disk is made). Routes are
resolved on a scratch copy of the database that will be in place (the
backup's copy, or the platform's database for ``company``), so that naming a
storage-config connection registers nothing before the checks have passed.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import anyio

from ...backends.base import Backend
from ...errors import BadMetadata, ConfigError
from ...tenancy.manager import BUILTIN_TYPES, StorageManager, Target
from ...tenancy.registry import ACTIVE_STATES, DEFAULT_COMPANY_FOLDER, Company, Placement, Registry
from ...tenancy.storage_config import StorageConfig
from ..migrate import resolve_target
from .database import copy_checked, snapshot
from .metadata import CompanyEntry, PlatformSection
from .platform import probe_root
from .reading import Opened, platform_problems
from .restore import (
    CheckedStorage,
    RestoreResult,
    check_storage,
    fetch_checked_copy,
    remove_with_side_files,
    restore_database,
    write_storage,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformRestoreOptions:
    #: the platform database: restored there (a whole restore), or read and re-routed in (``company``)
    db_path: str
    company: str | None = None
    only: str | None = None
    connection: str | None = None


@dataclass(slots=True)
class PlatformRestoreResult(RestoreResult):
    #: per company: its folder, where each content type went and how many files
    companies: list[dict[str, Any]] = field(default_factory=list)
    #: companies routed onto the connection: folder, migration record id (None: already there)
    rerouted: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: the declared file references checked against what was restored (None: the platform declares none)
    references: dict[str, Any] | None = None


@dataclass(slots=True)
class _Dest:
    """One company's files of one content type: where they go."""

    entry: CompanyEntry
    content_type: str
    target: Target
    files: int = 0


def content_type_problem(platform: PlatformSection, config: StorageConfig, bid: str) -> str | None:
    """Why the backup's content types have no place in ``config``, or None."""
    have = config.content_type_names()
    missing = [ct for ct in platform.content_types if ct not in have]
    if not missing:
        return None
    return (f"backup {bid} is of a platform with the content types {', '.join(platform.content_types)}; the storage "
            f"config {config.source or '(none given)'} has {', '.join(have)}: "
            f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no place there. Restore it onto a "
            "platform with these content types (or add them to its storage config); nothing was written")


async def restore_platform(opened: Opened, config: StorageConfig, opts: PlatformRestoreOptions, *,
                           result: PlatformRestoreResult | None = None,
                           environ: Any = os.environ) -> PlatformRestoreResult:
    """Check everything, then put the files back, then the database, then re-route (see the module docstring)."""
    result = result if result is not None else PlatformRestoreResult()
    result.checked.append("metadata.json and SHA256SUMS")
    meta = opened.meta
    platform = meta.platform
    if platform is None:
        raise ConfigError(f"backup {opened.name} is a {meta.type} backup, not a platform backup: restore it "
                          "without --platform")
    problem = content_type_problem(platform, config, opened.name)
    if problem:
        raise ConfigError(problem)
    chosen = list(platform.companies)
    if opts.company is not None:
        entry = platform.company(opts.company)
        if entry is None:
            names = ", ".join(c.folder for c in platform.companies[:20]) or "(none)"
            raise ConfigError(f"backup {opened.name} holds no company {opts.company!r}; it holds {names}")
        chosen = [entry]
    whole = opts.company is None
    sound = await check_storage(opened, result)
    _check_sections(opened, platform, sound)
    copy: str | None = None
    try:
        if whole:
            copy = await fetch_checked_copy(opened, opts.db_path, result)
        dests = await _resolve(opened, config, opts, chosen, copy, result, environ)
        result.checked.append(f"where the files of {len(chosen)} compan{'y' if len(chosen) == 1 else 'ies'} go, "
                              "and that every store there answers")
        for entry in chosen:
            for e in entry.content:
                if not e.complete:
                    result.warnings.append(f"company {entry.folder!r}: {e.content_type} was incomplete in this "
                                           f"backup ({e.error}); files of it there may be missing")
        result.phase = "writing storage"
        await _write(opened, sound, dests, opts.only, result, environ)
        if copy is not None:
            await restore_database(copy, opts.db_path, result)
        if opts.connection is not None:
            result.phase = "re-routing"
            await anyio.to_thread.run_sync(_reroute, opened.name, config, opts, chosen, result, environ)
        if config.references:
            result.phase = "checking references"
            await _check_references(config, opts, chosen, result)
        result.companies = [{"company": entry.folder, "id": entry.id,
                             "content": {d.content_type: {"location": d.target.label(), "files": d.files}
                                         for d in dests.values() if d.entry is entry}} for entry in chosen
                            if any(d.entry is entry for d in dests.values())]
        result.phase = "done"
    finally:
        if copy is not None:
            remove_with_side_files(copy)
    return result


async def _check_references(config: StorageConfig, opts: PlatformRestoreOptions, chosen: list[CompanyEntry],
                            result: PlatformRestoreResult) -> None:
    """The platform's declared file references against what was restored: every dangling one is a warning."""
    from ..refs import check_references

    registry = Registry.open(opts.db_path, company_folder=config.company_folder or DEFAULT_COMPANY_FOLDER)
    async with StorageManager(config, registry) as manager:
        dangling = orphans = 0
        first: list[str] = []
        for entry in chosen:
            report = await check_references(manager, entry.id)
            dangling += report.dangling
            orphans += report.orphans
            first += [d.describe() for co in report.companies for c in co.content for d in c.first_dangling]
    result.references = {"dangling": dangling, "orphans": orphans, "first_dangling": first[:10]}
    result.checked.append("the declared file references against what was restored")
    if dangling:
        result.warnings.append(f"{dangling} database references name files the restore did not bring back "
                               f"(first: {first[0] if first else '?'}); `vertexflow company refs --all` lists them")


def _check_sections(opened: Opened, platform: PlatformSection, sound: CheckedStorage) -> None:
    """Every member lies in a recorded company's folder, and each folder holds the files its entry counts."""
    for where, what in platform_problems(platform, sound.members):
        raise BadMetadata(f"backup {opened.name}: {where} {what}")


async def _resolve(opened: Opened, config: StorageConfig, opts: PlatformRestoreOptions, chosen: list[CompanyEntry],
                   copy: str | None, result: PlatformRestoreResult, environ: Any) -> dict[str, _Dest]:
    """``{section path: where it goes}`` for the chosen companies, resolved on a scratch copy of the database."""
    with tempfile.TemporaryDirectory(prefix="vertexflow-restore-") as tmp:
        scratch = os.path.join(tmp, "routes.sqlite3")
        if copy is not None:
            await anyio.to_thread.run_sync(copy_checked, copy, scratch)
        else:
            if not os.path.isfile(opts.db_path):
                raise ConfigError(f"no platform database at {opts.db_path}: a one-company restore puts the "
                                  "company's files where the platform database routes it; restore the whole "
                                  "platform (without --company) to bring the database back")
            await anyio.to_thread.run_sync(snapshot, opts.db_path, scratch)
        registry = Registry.open(scratch, company_folder=config.company_folder or DEFAULT_COMPANY_FOLDER)
        manager = StorageManager(config, registry, environ=environ)
        try:
            dests = _targets(opened, manager, opts, chosen, result, copy is not None)
        finally:
            await manager.aclose()
    known: dict[tuple[str, str], str | None] = {}
    for d in dests.values():
        key = (d.target.name, d.target.remote.model_dump_json())
        if key not in known:
            known[key] = await probe_root(d.target, environ)
        if known[key] is not None:
            raise ConfigError(f"company {d.entry.folder!r}, {d.content_type} would go to {d.target.label()}: "
                              f"{known[key]}; nothing was written")
    return dests


def _targets(opened: Opened, manager: StorageManager, opts: PlatformRestoreOptions, chosen: list[CompanyEntry],
             result: PlatformRestoreResult, whole: bool) -> dict[str, _Dest]:
    registry = manager.require_registry()
    where = "the backup's database" if whole else f"the platform database {opts.db_path}"
    out: dict[str, _Dest] = {}
    for entry in chosen:
        try:
            company = registry.company(entry.id)
        except ConfigError:
            if whole:  # added while the backup ran: its files were read, its row was not in the snapshot
                result.warnings.append(f"company {entry.folder!r} (id {entry.id}) is not in the backup's database "
                                       "(added while the backup ran): its files are not restored")
                continue
            raise ConfigError(f"company {entry.folder!r} (id {entry.id}) is not in {where}: restore the whole "
                              "platform (without --company), or add the company first") from None
        if company.slug != entry.folder:
            raise ConfigError(f"company id {entry.id} is {company.slug!r} in {where}, the backup's is "
                              f"{entry.folder!r}: not the same company; nothing was written")
        if not whole:
            _not_migrating(registry, company)
        placement = company.placement
        if opts.connection is not None:
            _known_connection(manager, opts.connection, where)
            placement = resolve_target(manager, company, opts.connection)[0]
        for e in entry.content:
            target = manager.target(company, e.content_type, placement)
            if not whole and opts.connection is None and target.name != e.route:
                raise ConfigError(
                    f"company {entry.folder!r}: its {e.content_type} files are on {target.name} now "
                    f"({target.label()}), "
                    f"the backup read it from {e.route} ({e.location}); say where its files go: "
                    f"--connection {target.name} (where it is now) or --connection {e.route} (back there, and "
                    "the company is routed there); nothing was written")
            out[e.path] = _Dest(entry, e.content_type, target)
    return out


def _known_connection(manager: StorageManager, name: str, where: str) -> None:
    """``--connection NAME`` must be a built-in section or a connection of the database or the storage config."""
    registry = manager.require_registry()
    if name in BUILTIN_TYPES or registry.find_connection(name) is not None or name in manager.config.connections:
        return
    known = sorted({c.name for c in registry.connections()} | set(manager.config.connections))
    raise ConfigError(f"--connection {name!r}: no such connection in {where} nor in the storage config "
                      f"{manager.config.source or '(none given)'}; use local, minio, yandex_disk or one of "
                      f"{', '.join(known) or '(no connections defined)'}; nothing was written")


def _not_migrating(registry: Registry, company: Company) -> None:
    for rec in registry.migrations(company.id):
        if rec.state in ACTIVE_STATES and not rec.is_stale():
            raise ConfigError(f"company {company.slug!r} has migration {rec.id} in progress ({rec.state}, "
                              f"{rec.owner()}): let it finish before restoring its files; nothing was written")


async def _write(opened: Opened, sound: CheckedStorage, dests: dict[str, _Dest], only: str | None,
                 result: PlatformRestoreResult, environ: Any) -> None:
    """Pass 2, each member put into its company's store of its content type; one store open at a time."""
    current: tuple[str, Backend] | None = None

    async def place(key: str) -> tuple[Backend, str] | None:
        nonlocal current
        ct, _, rest = key.partition("/")
        folder, _, sub = rest.partition("/")
        d = dests.get(f"{ct}/{folder}")
        if d is None or not sub:
            return None
        if current is None or current[0] != d.target.label():
            if current is not None:
                await current[1].aclose()
                current = None
            backend = d.target.backend(environ)
            current = (d.target.label(), backend)
            await backend.check(write=True)
        if key in sound.members.files:
            d.files += 1
        return current[1], sub

    try:
        await write_storage(opened, sound, place, only, result)
    finally:
        if current is not None:
            with anyio.CancelScope(shield=True):
                await current[1].aclose()


def _reroute(bid: str, config: StorageConfig, opts: PlatformRestoreOptions, chosen: list[CompanyEntry],
             result: PlatformRestoreResult, environ: Any) -> None:
    """Route every restored company onto the connection, each recorded as a switched migration. Blocking."""
    assert opts.connection is not None
    registry = Registry.open(opts.db_path, company_folder=config.company_folder or DEFAULT_COMPANY_FOLDER)
    manager = StorageManager(config, registry, environ=environ)
    try:
        for entry in chosen:
            try:
                company = registry.company(entry.id)
            except ConfigError:
                continue  # not in the database (warned about above)
            placement, name = resolve_target(manager, company, opts.connection)
            if placement == company.placement:
                result.rerouted.append({"company": company.slug, "migration": None, "to": name})
                continue
            source = {**company.placement.as_dict(), "name": _placement_name(registry, company.placement)}
            target = {**placement.as_dict(), "name": name}
            message = f"restored from backup {bid} onto {name}: company {company.slug} now on {name}"
            record = registry.start_migration(company.id, source, target, live=False)
            registry.set_placement(company.id, placement, migration_id=record.id, state="switched", message=message)
            registry.update_migration(record.id, state="switched", final=True,
                                      report={"restored_from": bid, "company": company.slug, "from": source,
                                              "to": target, "state": "switched", "message": message})
            result.rerouted.append({"company": company.slug, "migration": record.id, "to": name})
    finally:
        registry.close()


def _placement_name(registry: Registry, p: Placement) -> str:
    return p.storage_type if p.storage_connection_id is None else registry.connection(p.storage_connection_id).name
