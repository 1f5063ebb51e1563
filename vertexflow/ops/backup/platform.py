"""``backup create --platform``: the platform's database, then every company's files from wherever each is routed.

A platform backup (type ``platform``) is a full backup in the open format
(``docs/backup.md``) whose storage archive holds, for every company of the
platform database and every content type of the storage config, the files of
that company under ``<content type>/<company folder>/``, read from the
company's current route (:meth:`~vertexflow.tenancy.StorageManager.target`:
local disk, any MinIO/S3 connection, Yandex.Disk, with the content type's
folder, ``base_paths`` and the connection's root). ``metadata.json`` gains a
``platform`` section (:class:`~.metadata.PlatformSection`): per company and
content type the route, the files, bytes and folders archived, whether it is
complete and what changed while the backup ran.

Order:

1. every company's route is resolved and every store it points at is
   checked (its root: a bucket, a folder, the disk), **before anything is
   written**: an unreachable store stops the backup, naming the company,
   the content type and the route, unless ``allow_incomplete``, which marks
   the companies routed there incomplete (``complete: false`` and the error
   in the metadata, a line in the command's output, exit status 1);
2. the database: one consistent snapshot by SQLite's backup API;
3. the routes read again (a company switched meanwhile is read on its new
   route) and the files archived, content type by content type, company by
   company, one store open at a time;
4. every route listed again: a file added, modified or deleted after its
   listing is named in its section's ``changed`` (with the count). A file is
   never half-read: a member's header is written once the read of the
   listed version has begun (S3 If-Match, the local file's version, the
   Yandex.Disk revision), and a file that changed or vanished before that is
   left out and named ``not archived``. A company whose placement changed
   during the backup (a migration switched it) is named too.

A company in a live migration is read from its old placement, which every
write reaches first (dual writes); its entry names the migration.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from anyio.streams.memory import MemoryObjectSendStream

from ... import __version__
from ...backends.base import Backend
from ...errors import BackendError, ConfigError, NotFound
from ...model import ObjectInfo
from ...tenancy.live_state import LiveState, Route
from ...tenancy.manager import StorageManager, Target
from ...tenancy.registry import Company
from ...transforms.compression import Codec
from .archive import ArchiveBuilder, archive_source, finish, send_pieces
from .create import DEFAULT_CHUNK, CreateResult, finish_backup, free_id, store_archive, store_database
from .metadata import CHANGED_SHOWN, CompanyEntry, ContentEntry, Metadata, PlatformSection, section_path

KIND = "platform"


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformOptions:
    codec: Codec
    chunk_size: int = DEFAULT_CHUNK
    #: back up the companies whose stores answer and mark the others incomplete, instead of failing
    allow_incomplete: bool = False


@dataclass(slots=True)
class _Section:
    """One company's files of one content type while they are archived."""

    company: Company
    content_type: str
    target: Target
    route: Route
    connection: str | None
    error: str | None = None
    files: int = 0
    bytes: int = 0
    directories: int = 0
    #: every archived file as listed: key -> version (what the change check compares)
    archived: dict[str, str | None] = field(default_factory=dict)
    #: files left out: they changed or vanished between their listing and their read
    left_out: set[str] = field(default_factory=set)
    changed: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        return section_path(self.content_type, self.company.slug)

    def what(self) -> str:
        """``company 'acme' (id 3), portraits on seaweed:portraits/acme``: how messages name it."""
        return f"company {self.company.slug!r} (id {self.company.id}), {self.content_type} on {self.target.label()}"

    def entry(self) -> ContentEntry:
        return ContentEntry(content_type=self.content_type, path=self.path, route=self.target.name,
                            kind=self.target.kind, location=self.target.label(), files=self.files,
                            bytes=self.bytes, directories=self.directories, complete=self.error is None,
                            error=self.error, changed_count=len(self.changed),
                            changed=tuple(self.changed[:CHANGED_SHOWN]))


def plan_sections(manager: StorageManager) -> list[_Section]:
    """Every company's route of every content type, content type by content type (the archive's order)."""
    registry = manager.require_registry()
    live = LiveState(registry)
    companies = [(c, live.route(c.id)) for c in registry.companies()]
    names: dict[int, str] = {}
    out: list[_Section] = []
    for ct in manager.config.content_type_names():
        for company, route in companies:
            conn_id = route.placement.storage_connection_id
            if conn_id is not None and conn_id not in names:
                names[conn_id] = registry.connection(conn_id).name
            out.append(_Section(company, ct, manager.target(company, ct, route.placement), route,
                                names.get(conn_id) if conn_id is not None else None))
    return out


def _root(target: Target) -> Target:
    return Target(target.name, target.remote, "", target.public_base_url, target.kind)


def _root_key(target: Target) -> tuple[str, str]:
    return target.name, target.remote.model_dump_json()


async def probe_root(target: Target, environ: Any) -> str | None:
    """None when the store ``target`` lies in answers; else what is wrong with it.

    A store with folders (local disk, Yandex.Disk) whose root folder does not
    exist yet holds nothing, and is reachable; a missing bucket is not.
    Raises :class:`ConfigError` (a connection without credentials...): that is
    a broken configuration, not an unreachable store.
    """
    root = _root(target)
    backend = root.backend(environ)
    try:
        async with backend:
            try:
                await backend.check()
            except NotFound as exc:
                if backend.features.folders or backend.features.local_path:
                    return None
                return f"{root.label()} does not exist ({exc})"
            except BackendError as exc:
                return f"{root.label()} cannot be reached ({exc})"
    except BackendError as exc:  # closing it failed too
        return f"{root.label()} cannot be reached ({exc})"
    return None


async def probe_sections(sections: list[_Section], environ: Any, known: dict[tuple[str, str], str | None]) -> None:
    """Check each distinct store of ``sections`` once (``known`` caches the answers); mark the sections there."""
    for s in sections:
        key = _root_key(s.target)
        if key not in known:
            known[key] = await probe_root(s.target, environ)
        s.error = known[key]


def _reworded(exc: BackendError, what: str) -> BackendError:
    """``exc`` with ``what`` (the company, content type and route) in front of its message, same class."""
    try:
        return type(exc)(f"{what}: {exc.message}", backend=exc.backend, key=exc.key)
    except TypeError:  # a class with a constructor of its own: its message as it is
        return exc


async def create_platform_backup(dest: Backend, manager: StorageManager, opts: PlatformOptions, *,
                                 now: datetime | None = None) -> CreateResult:
    """Write one platform backup into a new folder of ``dest`` (see the module docstring)."""
    if opts.chunk_size < 1024:
        raise ConfigError("--chunk-size must be at least 1K")
    registry = manager.require_registry()
    started = time.monotonic()
    now = now or datetime.now(UTC)
    known: dict[tuple[str, str], str | None] = {}
    sections = plan_sections(manager)
    await probe_sections(sections, manager.environ, known)
    _refuse_broken(sections, opts, "nothing was written")
    await dest.check(write=True)
    bid = await free_id(dest, KIND, now)
    db_section = await store_database(dest, bid, str(registry.path), opts.codec)
    # the routes as they are after the snapshot: a company switched meanwhile is read where it is now
    sections = plan_sections(manager)
    await probe_sections(sections, manager.environ, known)
    _refuse_broken(sections, opts, f"the backup {bid} is left incomplete (no metadata.json; prune removes it)")
    content_types = manager.config.content_type_names()
    storage, _ = await store_archive(dest, bid, _producer(sections, content_types, manager.environ, opts),
                                     codec=opts.codec, chunk_size=opts.chunk_size,
                                     source=manager.config.source or "(no storage config)")
    await _changes(sections, manager, LiveState(registry))
    platform = PlatformSection(storage_config=os.path.abspath(manager.config.source) if manager.config.source
                               else "", content_types=tuple(content_types), companies=_companies(sections))
    meta = Metadata(id=bid, type=KIND, created=now.replace(microsecond=0), vertexflow_version=__version__,
                    storage=storage, database=db_section, platform=platform)
    await finish_backup(dest, meta)
    return CreateResult(meta, bid, time.monotonic() - started,
                        [f"{s.path}/{key}" for s in sections for key in sorted(s.left_out)])


def _refuse_broken(sections: list[_Section], opts: PlatformOptions, written: str) -> None:
    """Unless ``allow_incomplete``, a store that does not answer stops the backup, naming what it holds."""
    broken = [s for s in sections if s.error is not None]
    if broken and not opts.allow_incomplete:
        first = broken[0]
        companies = sorted({s.company.slug for s in broken})
        raise ConfigError(f"{first.what()}: {first.error}; {len(companies)} compan"
                          f"{'y' if len(companies) == 1 else 'ies'} cannot be backed up ({', '.join(companies[:10])})"
                          f"; {written}. Fix the route, or give --allow-incomplete to back up the others and mark "
                          "these incomplete")


def _producer(sections: list[_Section], content_types: list[str], environ: Any,
              opts: PlatformOptions) -> Callable[[ArchiveBuilder, MemoryObjectSendStream[bytes]], Awaitable[None]]:
    async def produce(builder: ArchiveBuilder, send: MemoryObjectSendStream[bytes]) -> None:
        async with send:
            for ct in content_types:
                builder.add_directories([(ct, time.time())])
                for s in (s for s in sections if s.content_type == ct):
                    builder.add_directories([(s.path, time.time())])
                    await send_pieces(builder, send)
                    if s.error is None:
                        await _archive_section(s, builder, send, environ, opts)
            await finish(builder, send)

    return produce


async def _archive_section(s: _Section, builder: ArchiveBuilder, send: MemoryObjectSendStream[bytes],
                           environ: Any, opts: PlatformOptions) -> None:
    files, size, dirs = builder.stats.files, builder.stats.bytes, builder.stats.directories

    def changed(key: str, why: str) -> None:
        s.left_out.add(key)
        s.changed.append(f"not archived {key} ({why})")

    def archived(info: ObjectInfo) -> None:
        s.archived[info.key] = info.version

    backend = s.target.backend(environ)
    try:
        async with backend:
            await archive_source(backend, builder, send, prefix=s.path + "/", changed=changed, archived=archived)
    except NotFound as exc:
        if exc.key or not (backend.features.folders or backend.features.local_path) or builder.in_member:
            raise _reworded(exc, s.what()) from exc
        # the company's folder does not exist there: it has no files of this content type
    except BackendError as exc:
        if builder.in_member or not opts.allow_incomplete:
            raise _reworded(exc, s.what()) from exc
        s.error = f"failed while it was read: {exc}"  # what was archived before it stays (each file whole)
    finally:
        s.files, s.bytes = builder.stats.files - files, builder.stats.bytes - size
        s.directories = builder.stats.directories - dirs


async def _changes(sections: list[_Section], manager: StorageManager, live: LiveState) -> None:
    """List every route again: name what was added, modified or deleted since it was archived."""
    moved: dict[int, str] = {}
    for s in sections:
        if s.company.id not in moved:
            now = live.route(s.company.id)
            moved[s.company.id] = ("" if now.placement == s.route.placement else
                                   f"company moved during the backup (placement {now.placement.as_dict()}): "
                                   "writes since then went there")
        if moved[s.company.id]:
            s.changed.append(moved[s.company.id])
        if s.error is not None:
            continue
        seen: set[str] = set()
        backend = s.target.backend(manager.environ)
        try:
            async with backend:
                async for info in _listing(backend):
                    seen.add(info.key)
                    if info.key not in s.archived:
                        if info.key not in s.left_out:
                            s.changed.append(f"added {info.key}")
                    elif info.version != s.archived[info.key]:
                        s.changed.append(f"modified {info.key}")
        except BackendError as exc:
            s.changed.append(f"not checked for changes: the listing again failed: {exc}")
            continue
        s.changed.extend(f"deleted {key}" for key in sorted(set(s.archived) - seen))


async def _listing(backend: Backend) -> Any:
    try:
        async for info in backend.list():
            yield info
    except NotFound as exc:
        if exc.key:
            raise  # an object vanished mid-listing is not an absent root


def _companies(sections: list[_Section]) -> tuple[CompanyEntry, ...]:
    by_company: dict[int, list[_Section]] = {}
    for s in sections:
        by_company.setdefault(s.company.id, []).append(s)
    out = []
    for cid, group in by_company.items():
        first = group[0]
        p = first.route.placement
        out.append(CompanyEntry(
            id=cid, folder=first.company.slug, name=first.company.name, storage_type=p.storage_type,
            storage_connection_id=p.storage_connection_id, connection=first.connection,
            yandex_disk_folder_id=p.yandex_disk_folder_id,
            migration=first.route.migration_id if first.route.live else None,
            content=tuple(s.entry() for s in group)))
    return tuple(out)


def summary(meta: Metadata) -> list[dict[str, Any]]:
    """Per company: folder, complete, files, bytes, changed, and the incomplete sections' errors (for output)."""
    assert meta.platform is not None
    return [{"company": c.folder, "id": c.id, "complete": c.complete,
             "files": sum(e.files for e in c.content), "bytes": sum(e.bytes for e in c.content),
             "changed": sum(e.changed_count for e in c.content),
             "routes": {e.content_type: e.location for e in c.content},
             "errors": {e.content_type: e.error for e in c.content if e.error}} for c in meta.platform.companies]
