"""StorageManager: which backend holds a company's files of one content type.

Routing (see :mod:`.registry` for the columns):

* a company with ``storage_connection_id`` uses that connection for every
  content type, under ``<connection root>/<content type>/<company folder>``;
* ``storage_type`` ``local`` / ``minio`` / ``yandex_disk`` uses the storage
  config's section of that name; ``default`` (or NULL) uses each content
  type's own ``storage_type``. The content type's folder there is its
  ``path`` (local, MinIO) or ``yandex_disk.base_paths[content type]``, else
  its name; the company's files are under ``<that>/<company folder>``;
* the company folder is ``yandex_disk_folder_id`` on Yandex.Disk when set,
  else the company's slug.

Keys given to an adapter are relative to that company root:
``<category>/<subfolder>/<file>``. A company's adapter is a
:class:`~.routing.CompanyAdapter`: it follows the company's route in the
platform database (its routing generation, :mod:`.live_state`), so a live
migration or a switch made by *any* process changes where this process's
requests go: writes see the change at once, reads within :attr:`route_ttl`
seconds. The backend adapters behind it are cached per (company, content
type) for one route; when the route changes (or
:meth:`StorageManager.clear_company_cache` is called) they are dropped and
closed by :meth:`aclose`, so a request still running on one is never cut off.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self

import anyio
from pydantic import TypeAdapter, ValidationError

from ..backends.base import Backend
from ..config import LocalRemote, S3Remote, YandexDiskRemote
from ..errors import ConfigError, WriteFenced
from ..locations import remote_location
from ..model import BodyFactory, ObjectInfo
from .adapters import StorageAdapter
from .dual_write import DualWriteAdapter
from .live_state import LiveState, Route
from .registry import DEFAULT_COMPANY_FOLDER, Company, Placement, Registry
from .routing import CompanyAdapter
from .storage_config import (
    Connection,
    MinioConnection,
    StorageConfig,
    connection_storage_type,
    load_storage_config,
)

DEFAULT_SUBFOLDERS = ("Image", "QR", "nft_markers")
BUILTIN_TYPES = ("local", "minio", "yandex_disk")
_CONNECTION = TypeAdapter(Connection)


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved place: a remote, the path below its root, and how to spell public URLs."""

    name: str
    remote: Any  # LocalRemote | S3Remote | YandexDiskRemote (or a subclass)
    path: str
    public_base_url: str | None = None
    kind: str = field(default="")

    def label(self) -> str:
        return f"{self.name}:{self.path}"

    def bwlimit(self) -> str | None:
        """The store's own bandwidth limit (a storage connection's ``bwlimit``), or None."""
        return getattr(self.remote, "bwlimit", None)

    def backend(self, environ: Mapping[str, str] = os.environ) -> Backend:
        location = remote_location(self.label(), self.name, self.remote, self.path, environ)
        if location.kind == "local":  # a company's provisioned folders stay when their last file is deleted
            location = replace(location, kwargs={**location.kwargs, "prune_dirs": False})
        return location.backend()


@dataclass(slots=True)
class ProvisionReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "created": self.created, "existing": self.existing, "missing": self.missing}


class StorageManager:
    """Routes content types and companies to adapters. ``async with StorageManager.open(...)``."""

    #: the oldest route a read may use, in seconds (writes always read it afresh)
    route_ttl = 0.5
    #: the longest a write waits for a live migration's write fence to lift, in seconds
    fence_wait = 30.0
    #: how often a write waiting at the fence looks again, in seconds
    fence_poll = 0.05
    #: how often a write waiting at the fence checks whether the migration holding it is stale (its process
    #: gone: then the fence is lifted and the company stays where it was), in seconds
    fence_stale_check = 1.0

    def __init__(self, config: StorageConfig, registry: Registry | None = None, *,
                 environ: Mapping[str, str] = os.environ) -> None:
        self.config = config
        self.registry = registry
        self.environ = environ
        self._global: dict[str, StorageAdapter] = {}
        #: backend adapters of a company's current route (content type -> adapter)
        self._company: dict[int, dict[str, StorageAdapter]] = {}
        self._routes: dict[int, tuple[Route, float]] = {}  # company -> (route, when read)
        self._routed: dict[tuple[int, str], CompanyAdapter] = {}
        self._retired: list[StorageAdapter] = []

    @classmethod
    def open(cls, storage_config: str | os.PathLike[str] | None, db: str | os.PathLike[str] | None, *,
             environ: Mapping[str, str] = os.environ) -> StorageManager:
        config = load_storage_config(storage_config)
        registry = None if db is None else Registry.open(db, company_folder=config.company_folder or DEFAULT_COMPANY_FOLDER)
        return cls(config, registry, environ=environ)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        adapters = [*self._global.values(), *self._retired,
                    *(a for per in self._company.values() for a in per.values())]
        self._global, self._company, self._retired = {}, {}, []
        for adapter in adapters:
            await adapter.aclose()
        if self.registry is not None:
            self.registry.close()

    # -- routing ------------------------------------------------------------
    def require_registry(self) -> Registry:
        """The platform database's registry; ConfigError when none was given."""
        if self.registry is None:
            raise ConfigError("no platform database: give --db or VERTEXFLOW_DB")
        return self.registry

    def company(self, ref: int | str) -> Company:
        return self.require_registry().company(ref)

    def _local_base(self, base: str) -> str:
        # a relative base_path is relative to the storage config file, not to the working directory
        if not os.path.isabs(base) and self.config.source and os.path.exists(self.config.source):
            return str(Path(self.config.source).resolve().parent / base)
        return os.path.abspath(base)

    def _builtin(self, storage_type: str, content_type: str) -> Target:
        ct = self.config.content_type(content_type)
        folder = (ct.path or content_type).strip("/")
        if storage_type == "local":
            local = self.config.local
            base = self._local_base(local.base_path if local else "storage")
            return Target("local", LocalRemote(type="local", path=base), folder,
                          ct.public_base_url or (local.public_base_url if local else None), "local")
        if storage_type == "minio":
            minio = self.config.minio
            if minio is None:
                raise ConfigError(f"content type {content_type!r}: storage type minio, but the storage config "
                                  "has no 'minio' section")
            remote = minio.as_remote()
            bucket = ct.bucket or minio.bucket
            if not bucket:
                raise ConfigError(f"content type {content_type!r}: no bucket ({content_type}.bucket or minio.bucket)")
            remote = remote.model_copy(update={"bucket": bucket})
            return Target("minio", remote, folder, ct.public_base_url or minio.public_base_url, "minio")
        if storage_type == "yandex_disk":
            yd = self.config.yandex_disk
            if yd is None or not yd.enabled:
                raise ConfigError(f"content type {content_type!r}: Yandex.Disk is not enabled in the storage config")
            remote = YandexDiskRemote(type="yandex_disk", token=yd.token, token_env=yd.token_env,
                                      base_url=yd.base_url, root="/")
            path = yd.base_paths.get(content_type, "/" + folder).strip("/")
            return Target("yandex_disk", remote, path, ct.public_base_url, "yandex_disk")
        raise ConfigError(f"unknown storage type {storage_type!r} (local, minio, yandex_disk or default)")

    def connection_settings(self, connection_id: int) -> tuple[str, Any]:
        """(name, settings model) of a registered connection."""
        row = self.require_registry().connection(connection_id)
        if row.config is not None:
            try:
                return row.name, _CONNECTION.validate_python(row.config)
            except ValidationError as exc:
                raise ConfigError(f"storage connection {row.name!r} in {self.require_registry().path}: "
                                  + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                                  ) from None
        if row.name in self.config.connections:
            return row.name, self.config.connections[row.name]
        raise ConfigError(f"storage connection {row.name!r} has no settings in the database and none in "
                          f"the storage config {self.config.source or '(none given)'}")

    def target(self, company: Company, content_type: str, placement: Placement | None = None) -> Target:
        """Where ``company``'s files of ``content_type`` live under ``placement`` (its own by default)."""
        placement = placement or company.placement
        self.config.content_type(content_type)  # unknown content type: a clear error
        if placement.storage_connection_id is not None:
            name, conn = self.connection_settings(placement.storage_connection_id)
            kind = connection_storage_type(conn)
            remote = conn.as_remote() if isinstance(conn, MinioConnection) else conn
            if isinstance(remote, S3Remote) and not remote.bucket:
                raise ConfigError(f"storage connection {name!r}: a company connection needs a fixed bucket")
            base = Target(name, remote, content_type, conn.public_base_url, kind)
        else:
            stype = placement.storage_type or "default"
            if stype == "default":
                stype = self.config.content_type(content_type).storage_type
            base = self._builtin(stype, content_type)
        folder = company.slug
        if base.kind == "yandex_disk" and placement.yandex_disk_folder_id:
            folder = placement.yandex_disk_folder_id
        path = "/".join(p for p in (base.path.strip("/"), folder) if p)
        return Target(base.name, base.remote, path, base.public_base_url, base.kind)

    def adapter_for(self, target: Target) -> StorageAdapter:
        """A new (uncached) adapter on ``target``; the caller closes it."""
        return StorageAdapter(target.backend(self.environ), public_base_url=target.public_base_url,
                              label=target.label())

    # -- adapters -----------------------------------------------------------
    async def get_adapter(self, content_type: str) -> StorageAdapter:
        """The platform-wide adapter of ``content_type`` (no company folder)."""
        if content_type not in self._global:
            stype = self.config.content_type(content_type).storage_type
            self._global[content_type] = self.adapter_for(self._builtin(stype, content_type))
        return self._global[content_type]

    async def get_company_adapter(self, company_id: int, content_type: str) -> StorageAdapter:
        """The company's adapter of ``content_type``: a :class:`CompanyAdapter` following its route."""
        await self.read_adapter(company_id, content_type)  # unknown company, content type, connection: raise now
        routed = self._routed.get((company_id, content_type))
        if routed is None:
            routed = self._routed[(company_id, content_type)] = CompanyAdapter(self, company_id, content_type)
        return routed

    def clear_company_cache(self, company_id: int) -> None:
        """Forget ``company_id``'s adapters and route: the next call routes from the registry again."""
        self._retire(self._company.pop(company_id, {}).values())
        self._routes.pop(company_id, None)
        for key in [k for k in self._routed if k[0] == company_id]:
            del self._routed[key]

    def _retire(self, adapters: Any) -> None:
        for a in adapters:
            self._retired.extend((a.old, a.new) if isinstance(a, DualWriteAdapter) else (a,))

    def _live(self) -> LiveState:
        return LiveState(self.require_registry())

    def _apply_route(self, route: Route) -> None:
        """Remember ``route``; drop the company's adapters if they were built for another one."""
        cached = self._routes.get(route.company_id)
        if cached is not None and cached[0].adapters_key() != route.adapters_key():
            self._retire(self._company.pop(route.company_id, {}).values())
        self._routes[route.company_id] = (route, time.monotonic())

    def _inner(self, company_id: int, content_type: str) -> StorageAdapter:
        """The backend adapter of the company's remembered route (built on first use)."""
        route = self._routes[company_id][0]
        per = self._company.setdefault(company_id, {})
        if content_type not in per:
            company = self.company(company_id)
            old = self.adapter_for(self.target(company, content_type, route.placement))
            if route.live and route.target is not None and route.migration_id is not None:
                try:
                    new = self.adapter_for(self.target(company, content_type, route.target))
                except BaseException:
                    self._retired.append(old)
                    raise
                live, mid = self._live(), route.migration_id
                per[content_type] = DualWriteAdapter(
                    old, new, lambda key: live.is_dirty(mid, content_type, key), reads_new=not route.reads_current)
            else:
                per[content_type] = old
        return per[content_type]

    # -- what a CompanyAdapter routes to -------------------------------------
    def current_adapter(self, company_id: int, content_type: str) -> StorageAdapter:
        """The backend adapter of the company's route as last read (read now if never); never waits."""
        if company_id not in self._routes:
            self._apply_route(self._live().route(company_id))
        return self._inner(company_id, content_type)

    async def read_adapter(self, company_id: int, content_type: str) -> StorageAdapter:
        """The backend adapter a read uses: the route is re-read when older than :attr:`route_ttl`."""
        cached = self._routes.get(company_id)
        if cached is None or time.monotonic() - cached[1] > self.route_ttl:
            self._apply_route(self._live().route(company_id))
        self.config.content_type(content_type)  # unknown content type: a clear error
        return self._inner(company_id, content_type)

    @asynccontextmanager
    async def write_adapter(self, company_id: int, content_type: str, key: str) -> AsyncIterator[StorageAdapter]:
        """Register a write of ``key`` as in flight and yield the backend adapter of the current route.

        Waits while a live migration's write fence is up, at most :attr:`fence_wait` seconds; a
        fence held by a stale migration (its process gone) is lifted after at most
        :attr:`fence_stale_check` seconds, and the write goes to the company's old placement.
        """
        self.config.content_type(content_type)
        live = self._live()
        deadline = time.monotonic() + self.fence_wait
        next_look = time.monotonic() + self.fence_stale_check
        while True:
            route, inflight = live.begin_write(company_id, content_type, key)
            self._apply_route(route)
            if inflight is not None:
                break
            if time.monotonic() >= next_look and route.migration_id is not None:
                next_look = time.monotonic() + self.fence_stale_check
                self._lift_stale_fence(route.migration_id)
            if time.monotonic() >= deadline:
                raise WriteFenced(f"company {company_id}: migration {route.migration_id} has held writes for "
                                  f"more than {self.fence_wait:g} s (is it still running? `vertexflow migrate "
                                  "abandon` lifts the fence of a dead one)", key=key)
            await anyio.sleep(self.fence_poll)
        try:
            yield self._inner(company_id, content_type)
        finally:
            live.end_write(inflight, route, content_type, key)

    def _lift_stale_fence(self, migration_id: int) -> None:
        """A write fence whose migration's process is gone (its lease is stale) is lifted, as ``abandon`` would."""
        registry = self.require_registry()
        try:
            rec = registry.migration(migration_id)
            if rec.is_stale():
                registry.abandon_migration(migration_id, f"stale ({rec.state}; {rec.owner()} was gone): its write "
                                                         "fence was lifted by a waiting writer")
        except ConfigError:
            pass  # ended meanwhile (switched, abandoned, or lifted by another writer)

    async def _pick(self, content_type: str, company_id: int | None) -> StorageAdapter:
        if company_id is None:
            return await self.get_adapter(content_type)
        return await self.get_company_adapter(company_id, content_type)

    async def save_file(self, content_type: str, key: str, data: bytes | BodyFactory, *,
                        company_id: int | None = None, size: int | None = None) -> ObjectInfo:
        return await (await self._pick(content_type, company_id)).save_file(key, data, size=size)

    async def get_file(self, content_type: str, key: str, *, company_id: int | None = None) -> bytes:
        return await (await self._pick(content_type, company_id)).get_file(key)

    async def delete_file(self, content_type: str, key: str, *, company_id: int | None = None) -> None:
        await (await self._pick(content_type, company_id)).delete_file(key)

    async def file_exists(self, content_type: str, key: str, *, company_id: int | None = None) -> bool:
        return await (await self._pick(content_type, company_id)).file_exists(key)

    async def get_public_url(self, content_type: str, key: str, *, company_id: int | None = None) -> str:
        return await (await self._pick(content_type, company_id)).get_public_url(key)

    # -- provisioning -------------------------------------------------------
    def _folders(self, category_slugs: Sequence[str], subfolders: Sequence[str]) -> list[str]:
        for name in (*category_slugs, *subfolders):
            if not name or "/" in name or name in (".", ".."):
                raise ConfigError(f"category or subfolder {name!r} must be a folder name without '/'")
        return [f"{c}/{s}" for c in category_slugs for s in subfolders]

    async def provision_company_storage(self, company_id: int, category_slugs: Sequence[str],
                                        subfolders: Sequence[str] = DEFAULT_SUBFOLDERS, *,
                                        content_types: Sequence[str] | None = None,
                                        placement: Placement | None = None) -> ProvisionReport:
        """Create ``<company>/<category>/<subfolder>`` for every content type; existing folders are kept.

        ``placement`` provisions where the company is not yet (a migration's target).
        """
        report = ProvisionReport()
        company = self.company(company_id)
        for ct in content_types or self.config.content_type_names():
            target = self.target(company, ct, placement)
            adapter = self.adapter_for(target)
            try:
                for folder in self._folders(category_slugs, subfolders):
                    where = f"{ct}:{folder}"
                    if await adapter.folder_exists(folder):
                        report.existing.append(where)
                    else:
                        await adapter.ensure_folder(folder)
                        report.created.append(where)
            finally:
                await adapter.aclose()
        return report

    async def verify_company_storage(self, company_id: int, category_slugs: Sequence[str],
                                     subfolders: Sequence[str] = DEFAULT_SUBFOLDERS, *,
                                     content_types: Sequence[str] | None = None) -> ProvisionReport:
        """Which of the provisioned folders exist (``existing``) and which do not (``missing``)."""
        report = ProvisionReport()
        company = self.company(company_id)
        for ct in content_types or self.config.content_type_names():
            adapter = self.adapter_for(self.target(company, ct))
            try:
                for folder in self._folders(category_slugs, subfolders):
                    (report.existing if await adapter.folder_exists(folder) else report.missing).append(
                        f"{ct}:{folder}")
            finally:
                await adapter.aclose()
        return report
