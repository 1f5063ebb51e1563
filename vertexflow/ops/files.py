"""Operations on the objects and folders of one location: what ``delete``, ``purge``, ``rmdir``, ``mkdir``,
``cat``, ``lsd``, ``lsjson``, ``size``, ``about`` and ``cleanup`` do (the commands: :mod:`vertexflow.cli.files`).

Safety, as ``sync --delete`` has it:

* ``delete`` and ``purge`` refuse the root of a store (a bucket, a remote's
  root, ``/``) unless told it is meant (:func:`refuse_root`), before
  anything is listed;
* with ``max_delete``, the objects are counted first, up to one more than
  allowed, and nothing is deleted when there are more (:func:`delete_objects`);
* an object that cannot be deleted is reported and the others go on; a store
  that refuses the first delete outright (a read-only key) stops the command.

Folders: a store of local files has them as directories (removed through
``local_path``), a store with folders of its own removes them where it
declares ``folder_removal``; S3 has none, only key prefixes, which vanish
with their last object.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from ..backends.base import Backend, direct_files
from ..backends.local import TMP_PREFIX
from ..errors import AccessDenied, BackendError, ConfigError, Conflict, JobAborted, NotFound
from ..filters import NO_FILTER, Filter
from ..model import IncompleteUpload, ObjectInfo
from ..pipeline.runner import StopSignal, run_pipeline
from .deletes import Deleter, batch_size, batched

#: what :func:`open_location` says when a location names nothing
NOTHING_THERE = "nothing at this location"
#: deletes in flight at once (as ``sync --delete`` runs them)
DELETE_WORKERS = 8
#: failures kept with their keys and messages; the rest are counted
MAX_FAILURES_KEPT = 1000
#: folders below a folder that ``purge`` and ``--delete-empty-src-dirs`` walk at most: bounds the walk
#: (and the list of folders it keeps) against a store that answers a folder inside itself
MAX_FOLDERS = 1_000_000


# -- what a location is ----------------------------------------------------------------

def remote_path(location: Any) -> str | None:
    """The path a named remote's location gives after ``NAME:``; None for a location of no remote."""
    if "name" not in location.kwargs:
        return None
    return str(location.spec).partition(":")[2]


def is_store_root(location: Any) -> bool:
    """True for the root of a store: an S3 bucket, Yandex.Disk's ``/``, the local ``/``, or a remote's own root."""
    path = remote_path(location)
    if path is not None and not path.strip("/"):
        return True
    if location.kind == "s3":
        return not str(location.args[1]).strip("/")
    if location.kind == "yandex_disk":
        return not str(location.kwargs.get("root", "/")).strip("/")
    if location.kind == "local":
        return os.path.realpath(str(location.args[0])) == os.sep
    return False


def refuse_root(location: Any, what: str, force_root: bool) -> None:
    """ConfigError for ``what`` at a store's root, unless ``force_root``."""
    if force_root or not is_store_root(location):
        return
    raise ConfigError(f"{what} {location.spec}: that is the root of the store (a whole bucket or remote); "
                      f"name a folder under it, or add --force-root on the command line if the whole of it is "
                      f"meant; nothing was done")


async def open_location(location: Any) -> tuple[Backend, str | None]:
    """Open ``location``: (its backend, None) for a folder or prefix (a store's root, an empty folder),
    or (its parent's backend, the key) when it names one object. NotFound when nothing is there.

    The object is looked for only when the location is no folder holding
    objects: one stat of its last segment under the parent.
    """
    backend: Backend = location.backend()
    folder: bool | None = None  # None: not known to be a folder (not one, or no such path)
    try:
        try:
            await backend.check()
            if backend.features.local_path and os.path.isfile(str(location.args[0])):
                folder = None
            else:
                async with aclosing(backend.list()) as listing:  # type: ignore[type-var]
                    async for _ in listing:
                        return backend, None
                folder = False  # listed, empty
        except NotFound:
            if not backend.features.folders and not backend.features.local_path:
                raise  # a store without folders has every prefix: its root (a bucket) is what is missing
        split = location.split_last()
        if split is not None:
            parent_location, name = split
            parent: Backend = parent_location.backend()
            try:
                await parent.stat(name)
            except NotFound:
                await parent.aclose()
            except BaseException:
                await parent.aclose()
                raise
            else:
                await backend.aclose()
                return parent, name
        if folder is False and (split is None or backend.features.folders):
            return backend, None  # an empty folder, or the empty root of a store
        raise NotFound(NOTHING_THERE, backend=backend.describe())
    except BaseException:
        await backend.aclose()
        raise


# -- deleting objects ----------------------------------------------------------------------

@dataclass(slots=True)
class DeleteReport:
    """What a delete did (or, ``dry_run``, would do)."""

    dry_run: bool = False
    deleted: int = 0
    bytes: int = 0
    failed: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (key, reason, message)
    folders_removed: int = 0
    #: folders still there that the store's backend cannot remove
    folders_left: int = 0

    def failure(self, key: str, exc: BaseException) -> None:
        self.failed += 1
        if len(self.failures) < MAX_FAILURES_KEPT:
            self.failures.append((key, getattr(exc, "reason", type(exc).__name__), str(exc)))

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "deleted": self.deleted, "bytes": self.bytes, "failed": self.failed,
                "failures": [{"key": k, "reason": r, "message": m} for k, r, m in self.failures],
                "failures_not_shown": max(0, self.failed - len(self.failures)),
                "folders_removed": self.folders_removed, "folders_left": self.folders_left}


async def objects_at(backend: Backend, single_key: str | None, filt: Filter = NO_FILTER) -> AsyncIterator[ObjectInfo]:
    """The objects under ``backend``'s root that pass ``filt`` (only ``single_key``, when the location is one)."""
    if single_key is not None:
        info = await backend.stat(single_key)
        if filt.matches(info):
            yield info
        return
    async with aclosing(backend.list(filt.prefix)) as listing:  # type: ignore[type-var]
        async for info in listing:
            if filt.matches(info):
                yield info


async def delete_objects(backend: Backend, objects: AsyncIterator[ObjectInfo], *, dry_run: bool = False,
                         max_delete: int | None = None, on_object: Callable[[ObjectInfo], None] | None = None,
                         stop: StopSignal | None = None, workers: int = DELETE_WORKERS) -> DeleteReport:
    """Delete ``objects`` from ``backend`` (``on_object`` sees each, deleted or, ``dry_run``, to be).

    With ``max_delete``, up to ``max_delete + 1`` objects are listed before
    anything is deleted: more than ``max_delete`` raises JobAborted and
    nothing is deleted. The first delete the store refuses (AccessDenied)
    before any succeeded stops the run (raises); later failures are reported
    in the result and the others go on.
    """
    report = DeleteReport(dry_run=dry_run)
    if max_delete is not None:
        first: list[ObjectInfo] = []
        async with aclosing(objects):  # type: ignore[type-var]
            async for info in objects:
                first.append(info)
                if len(first) > max_delete:
                    raise JobAborted(f"more than {max_delete} objects would be deleted at {backend.describe()}, "
                                     f"more than --max-delete {max_delete}: nothing was deleted")
        objects = _replay(first)

    deleter = Deleter(backend)

    async def delete(batch: list[ObjectInfo]) -> None:
        failed = {} if dry_run else await deleter.delete([info.key for info in batch])
        for info in batch:
            exc = failed.get(info.key)
            if exc is not None:
                if isinstance(exc, AccessDenied) and not report.deleted:
                    raise JobAborted(f"{exc}: the store refuses deletes (credentials that may only read, or a "
                                     "policy); stopped before trying the other objects") from exc
                report.failure(info.key, exc)
                continue
            report.deleted += 1
            report.bytes += info.size or 0
            if on_object is not None:
                on_object(info)

    # where the backend deletes in batches (S3 DeleteObjects), a batch at a time: one request each
    size = 1 if dry_run else batch_size(backend)
    await run_pipeline(batched(objects, size), delete, workers=1 if dry_run else workers, queue_size=256 // size or 1,
                       stop=stop, name="to_delete")
    return report


async def _replay(items: list[ObjectInfo]) -> AsyncIterator[ObjectInfo]:
    for item in items:
        yield item


# -- folders ---------------------------------------------------------------------------------

def removes_folders(backend: Backend) -> bool:
    """Whether :func:`remove_folder` works on ``backend``: its folders are local directories, or it removes them."""
    f = backend.features
    return f.folder_removal or (f.folders and f.local_path)


async def remove_folder(backend: Backend, path: str) -> bool:
    """Remove the folder ``path`` if it holds nothing (False: it holds something; absent: True).

    Only where :func:`removes_folders`; elsewhere NotImplementedError.
    """
    if backend.features.folder_removal:
        return await backend.remove_folder(path)
    if not removes_folders(backend):
        raise NotImplementedError(f"{backend.describe()} cannot remove folders")
    target = backend.local_path(path)

    def rmdir() -> bool:
        try:
            os.rmdir(target)
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return False
            if exc.errno == errno.ENOTDIR:
                raise Conflict("a file, not a folder", backend=backend.describe(), key=path) from exc
            cls = AccessDenied if exc.errno in (errno.EACCES, errno.EPERM) else BackendError
            raise cls(f"removing the folder failed: {exc.strerror or exc}", backend=backend.describe(),
                      key=path) from exc
        return True

    return await anyio.to_thread.run_sync(rmdir)


async def folders_below(backend: Backend, path: str = "") -> list[str]:
    """Every folder under ``path`` (``""``: the root), deepest first, so that each comes before its parent."""
    out: list[str] = []
    stack = [path]
    while stack:
        here = stack.pop()
        for name in await backend.list_folders(here):
            below = f"{here}/{name}" if here else name
            out.append(below)
            stack.append(below)
            if len(out) > MAX_FOLDERS:
                raise BackendError(f"more than {MAX_FOLDERS:,} folders: stopped walking them",
                                   backend=backend.describe())
    out.sort(key=lambda p: p.count("/"), reverse=True)
    return out


async def remove_empty_folders(backend: Backend, path: str = "", *, dry_run: bool = False,
                               on_folder: Callable[[str], None] | None = None) -> tuple[int, int]:
    """Remove the folders under ``path`` that hold no object (nor any folder that does).

    Returns (removed, left: empty folders the store cannot remove). Stores
    without folders have nothing to remove: (0, 0).
    """
    if not backend.features.folders:
        return 0, 0
    removed = left = 0
    holding: set[str] = set()  # folders (dry run) known to hold an object somewhere below
    if dry_run:
        async with aclosing(backend.list(f"{path}/" if path else "")) as listing:  # type: ignore[type-var]
            async for info in listing:
                parts = info.key.split("/")[:-1]
                holding.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    for folder in await folders_below(backend, path):
        if dry_run:
            if folder not in holding:
                removed += 1
                if on_folder is not None:
                    on_folder(folder)
            continue
        if not removes_folders(backend):
            left += 1
            continue
        if await remove_folder(backend, folder):
            removed += 1
            if on_folder is not None:
                on_folder(folder)
    return removed, left


# -- reading ---------------------------------------------------------------------------------

async def folder_names(backend: Backend) -> AsyncIterator[str]:
    """The folders directly under ``backend``'s root: real folders, else the key prefixes one level down.

    A store that has neither (none declared) is listed whole and each first
    segment named once (the listing is in key order where the store keeps one).
    """
    f = backend.features
    if f.folders:
        for name in await backend.list_folders(""):
            yield name
        return
    if f.common_prefixes:
        async with aclosing(backend.list_prefixes("")) as names:  # type: ignore[type-var]
            async for name in names:
                yield name
        return
    seen: set[str] = set()
    async with aclosing(backend.list()) as listing:  # type: ignore[type-var]
        async for info in listing:
            first, slash, _ = info.key.partition("/")
            if slash and first not in seen:
                seen.add(first)
                yield first


def info_json(info: ObjectInfo) -> dict[str, Any]:
    """An object as ``lsjson`` and ``ls --json`` show it."""
    return {"key": info.key, "size": info.size, "mtime": info.mtime.isoformat() if info.mtime else None,
            "hashes": dict(info.hashes), "etag": info.etag, "content_type": info.content_type}


@dataclass(frozen=True, slots=True)
class Usage:
    """What a store says of its space, in bytes (None: it does not say)."""

    total: int | None = None
    used: int | None = None
    free: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return {"total": self.total, "used": self.used, "free": self.free}


async def usage(backend: Backend) -> Usage:
    """The space of the store ``backend`` is in: a local file system's from statvfs, else the free space
    the backend reports (Yandex.Disk: its quota less what is used); S3 reports none."""
    if backend.features.direct_files:
        root = direct_files(backend).root

        def statvfs() -> Usage:
            where = root
            while not where.exists() and where != where.parent:  # a directory not made yet: its file system
                where = where.parent
            st = os.statvfs(where)
            total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
            return Usage(total=total, used=(st.f_blocks - st.f_bfree) * st.f_frsize, free=free)

        return await anyio.to_thread.run_sync(statvfs)
    return Usage(free=await backend.free_space())


# -- cleanup ---------------------------------------------------------------------------------

@dataclass(slots=True)
class CleanupReport:
    dry_run: bool = False
    uploads: int = 0
    temp_files: int = 0
    temp_bytes: int = 0
    #: incomplete uploads left because the store did not say when they began
    undated: int = 0
    #: what this store keeps that cleanup looks at: "uploads", "temp_files", or nothing
    looked_at: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "looked_at": self.looked_at, "incomplete_uploads": self.uploads,
                "undated_uploads_left": self.undated, "temp_files": self.temp_files,
                "temp_bytes": self.temp_bytes}


async def cleanup(backend: Backend, *, older_than: timedelta, dry_run: bool = False,
                  on_upload: Callable[[IncompleteUpload], None] | None = None,
                  on_temp_file: Callable[[str, int], None] | None = None, now: datetime | None = None) -> CleanupReport:
    """Abort the incomplete uploads under ``backend``'s root begun more than ``older_than`` ago, and remove
    this tool's temporary files (local disk) not written to for as long.

    A younger upload or temporary file may belong to a run still going: it is left.
    """
    report = CleanupReport(dry_run=dry_run)
    cutoff = (now or datetime.now(UTC)) - older_than
    f = backend.features
    if f.incomplete_uploads:
        report.looked_at.append("uploads")
        stale: list[IncompleteUpload] = []
        async with aclosing(backend.list_incomplete_uploads()) as uploads:  # type: ignore[type-var]
            async for upload in uploads:
                if upload.initiated is None:
                    report.undated += 1
                elif upload.initiated <= cutoff:
                    stale.append(upload)
        for upload in stale:  # listed first: aborting while paging could move the markers
            if not dry_run:
                await backend.abort_incomplete_upload(upload)
            report.uploads += 1
            if on_upload is not None:
                on_upload(upload)
    if f.direct_files:
        report.looked_at.append("temp_files")
        root = str(direct_files(backend).root)
        found = await anyio.to_thread.run_sync(_stale_temp_files, root, cutoff.timestamp(), dry_run)
        for path, size in found:
            report.temp_files += 1
            report.temp_bytes += size
            if on_temp_file is not None:
                on_temp_file(os.path.relpath(path, root), size)
    return report


def _stale_temp_files(root: str, cutoff: float, dry_run: bool) -> list[tuple[str, int]]:
    """Blocking: the temporary files of this tool under ``root`` last written before ``cutoff``, removed
    (unless ``dry_run``). A run that is writing one keeps its mtime fresh."""
    out = []
    for directory, _, names in os.walk(root):
        for name in names:
            if not name.startswith(TMP_PREFIX):
                continue
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
                if not stat_mod.S_ISREG(st.st_mode) or st.st_mtime > cutoff:
                    continue
                if not dry_run:
                    os.unlink(path)
            except FileNotFoundError:
                continue  # its run finished (renamed it) or removed it meanwhile
            out.append((path, st.st_size))
    return out


__all__ = ["NOTHING_THERE", "CleanupReport", "DeleteReport", "Usage", "cleanup", "delete_objects", "folder_names",
           "folders_below", "info_json", "is_store_root", "objects_at", "open_location", "refuse_root", "remove_empty_folders",
           "remove_folder", "removes_folders", "usage"]
