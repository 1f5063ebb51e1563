"""Remove the copy of a company that a migration left behind, once the operator says so.

A migration never deletes the backend a company leaves: after a switch the
old backend keeps the files as they were (a rollback syncs back only what
changed), and a migration that failed, was rolled back or staged leaves what
it copied on its target. :func:`cleanup_migration` deletes that copy:

* which copy: a ``switched`` migration left the company's files on its
  source; a ``failed``, ``rolled_back`` or ``staged`` one left a partial or
  stale copy on its target;
* never a place something reads: a content type whose left-behind location
  is the company's current route (it came back there), or the route of
  another company, is skipped and named;
* never while the company has a migration in progress (or stale);
* only after a grace period since the migration ended (:data:`DEFAULT_GRACE`,
  ``--grace``), so that the copy an operator may still want is not removed by
  a command typed too early;
* ``dry_run`` counts what it would delete and deletes nothing.

What was deleted is added to the migration's report (``cleanup``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from ..errors import ConfigError, NotFound
from ..tenancy.adapters import FOLDER_MARKER, StorageAdapter
from ..tenancy.manager import StorageManager
from ..tenancy.registry import ACTIVE_STATES, MigrationRecord, Placement
from .deletes import Deleter, batch_size
from .plan import empty_if_missing

#: seconds a left-behind copy is kept after its migration ended (a week: a bad switch is usually seen by then)
DEFAULT_GRACE = 7 * 86400.0

@dataclass(slots=True)
class CleanupLocation:
    content_type: str
    where: str
    files: int = 0
    bytes: int = 0
    deleted: int = 0
    #: why this location was left alone (None: it was, or would be, cleaned)
    skipped: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"content_type": self.content_type, "where": self.where, "files": self.files, "bytes": self.bytes,
                "deleted": self.deleted, "skipped": self.skipped}


@dataclass(slots=True)
class CleanupResult:
    migration_id: int
    company: str
    #: what the copy is: "source" (left by a switch) or "target" (a run that did not switch)
    copy_of: str
    placement: dict[str, Any]
    state: str = "cleaned"  # or "dry_run"
    locations: list[CleanupLocation] = field(default_factory=list)
    message: str = ""

    @property
    def deleted(self) -> int:
        return sum(loc.deleted for loc in self.locations)

    def as_dict(self) -> dict[str, Any]:
        return {"migration_id": self.migration_id, "company": self.company, "copy_of": self.copy_of,
                "placement": self.placement, "state": self.state, "deleted": self.deleted,
                "locations": [loc.as_dict() for loc in self.locations], "message": self.message}


def left_behind(record: MigrationRecord) -> tuple[str, dict[str, Any]]:
    """Which side of ``record`` holds the copy the company left: ("source" | "target", its placement)."""
    if record.state in ACTIVE_STATES:
        raise ConfigError(f"migration {record.id} is {'stale' if record.is_stale() else 'in progress'}: run the "
                          "migration again (it takes a stale one over) or `vertexflow migrate abandon "
                          f"{record.id}` before cleaning up")
    if record.state == "switched":
        return "source", record.source
    return "target", record.target


def _placement(desc: dict[str, Any]) -> Placement:
    return Placement(desc["storage_type"], desc.get("storage_connection_id"), desc.get("yandex_disk_folder_id"))


def _ago(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


async def cleanup_migration(manager: StorageManager, migration_id: int, *, grace: float = DEFAULT_GRACE,
                            dry_run: bool = False) -> CleanupResult:
    """Delete the copy migration ``migration_id`` left behind (see the module docstring).

    Raises :class:`ConfigError` (nothing deleted) for an unknown migration, one
    in progress, a company with a migration in progress, or a copy still in
    its grace period (a dry run reports that instead of raising).
    """
    registry = manager.require_registry()
    record = registry.migration(migration_id)
    company = registry.company(record.company_id)
    copy_of, desc = left_behind(record)
    busy = [r for r in registry.migrations(company.id) if r.state in ACTIVE_STATES]
    if busy:
        raise ConfigError(f"company {company.slug} has migration {busy[0].id} in progress: clean up after it ends")
    where_name = desc.get("name") or desc.get("storage_type")
    result = CleanupResult(record.id, company.slug, copy_of, desc, "dry_run" if dry_run else "cleaned")
    ended = record.finished_at or record.started_at
    age = time.time() - ended
    waiting = age < grace
    if waiting and not dry_run:
        raise ConfigError(f"migration {record.id} ended {_ago(age)} ago; the copy it left on {where_name} is kept "
                          f"for {_ago(grace)} after (--grace): run again after "
                          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(ended + grace))}, or give --grace 0 "
                          "to clean it now; nothing was deleted")
    left = _placement(desc)
    in_use: dict[str, str] = {}  # location label -> who reads it
    for other in registry.companies():
        for ct in manager.config.content_type_names():
            label = manager.target(other, ct).label()
            in_use.setdefault(label, "the current route of " + ("company " + other.slug if other.id != company.id
                                                               else "this company"))
    for ct in manager.config.content_type_names():
        target = manager.target(company, ct, left)
        loc = CleanupLocation(ct, target.label())
        result.locations.append(loc)
        if target.label() in in_use:
            loc.skipped = in_use[target.label()]
            continue
        adapter = manager.adapter_for(target)
        try:
            await _clean(adapter, loc, dry_run)
        finally:
            with anyio.CancelScope(shield=True):
                await adapter.aclose()
    cleaned = [loc for loc in result.locations if loc.skipped is None]
    if cleaned:
        where_name += f" ({', '.join(loc.where for loc in cleaned)})"
    files = sum(loc.files for loc in cleaned)
    skipped = "; ".join(f"{loc.content_type} kept ({loc.skipped})" for loc in result.locations if loc.skipped)
    if dry_run:
        result.message = (f"would delete {files} files ({sum(loc.bytes for loc in cleaned):,} bytes) of company "
                          f"{company.slug} on {where_name}, the copy migration {record.id} left on its {copy_of}"
                          + (f"; {skipped}" if skipped else "")
                          + (f"; the grace period ends in {_ago(grace - age)} (or give --grace 0)" if waiting else
                             f"; to delete them: vertexflow migrate cleanup {record.id}"))
        return result
    result.message = (f"deleted {result.deleted} files of company {company.slug} on {where_name}, the copy "
                      f"migration {record.id} left on its {copy_of}" + (f"; {skipped}" if skipped else ""))
    registry.record_cleanup(record.id, {**result.as_dict(), "at": time.time()})
    return result


async def _clean(adapter: StorageAdapter, loc: CleanupLocation, dry_run: bool) -> None:
    keys: list[str] = []
    async for info in empty_if_missing(adapter.backend.list("")):
        keys.append(info.key)
        loc.files += 1
        loc.bytes += info.size or 0
    if dry_run:
        return
    backend = adapter.backend
    deleter, size = Deleter(backend), batch_size(backend)  # S3: a thousand a request (DeleteObjects)
    for start in range(0, len(keys), size):
        batch = keys[start:start + size]
        failed = {k: e for k, e in (await deleter.delete(batch)).items() if not isinstance(e, NotFound)}
        loc.deleted += len(batch) - len(failed)
        if failed:
            raise next(iter(failed.values()))
    if backend.features.local_path:  # local disk: the emptied folders go too, the company's folder with them
        root = backend.local_path(FOLDER_MARKER).parent  # the root itself has no key; a key just below it has
        await anyio.to_thread.run_sync(_remove_empty_dirs, Path(root))


def _remove_empty_dirs(root: Path) -> None:
    if not root.is_dir():
        return
    for dirpath, _dirs, _files in os.walk(root, topdown=False):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass  # not empty: something not listed as an object (the store's own files) stays
