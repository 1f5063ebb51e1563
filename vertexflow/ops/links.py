"""What a local source's listing leaves out: symbolic links (``--links``, ``--copy-links``) and empty folders
(``--create-empty-src-dirs``).

The local backend lists regular files only: a symbolic link is skipped with
a warning, and a folder is only the prefix of the keys under it. A job asked
for more walks the source tree once more, for those alone, and merges what
it finds into the listing in key order (:meth:`SourceTree.listing`):

* ``--links`` (rclone's ``--links``): a link ``NAME`` becomes an object
  ``NAME.rclonelink`` whose bytes are the link's target, as rclone stores
  one; its mtime is the link's own. Written by :meth:`SourceTree.store_link`.
  The other way, to a local destination from a store without links, an
  object ``NAME.rclonelink`` becomes the link ``NAME`` again, pointing where
  its bytes say, with the object's mtime (as rclone's ``--links`` does); a
  link already there with as many bytes of target and that mtime is left as
  it is, as an unchanged object would be. From local disk to local disk a
  link is made as a link at once (rclone's ``--links`` on both ends).
* ``--copy-links`` (rclone's ``--copy-links``): a link is followed: a link
  to a file is that file's bytes under the link's name, a link to a folder
  is walked as a folder (a folder met twice, a loop, is walked once). A link
  whose target is missing is skipped with a warning.
* ``--create-empty-src-dirs``: the folders of the source that hold no object
  passing the filters are made at the destination, once the transfers are
  done, where both stores have real folders (``features.folders``: local
  disk, Yandex.Disk); elsewhere a warning says none are made.
"""

from __future__ import annotations

import hashlib
import os
import stat as stat_mod
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from ..backends.base import Backend
from ..backends.local import TMP_PREFIX
from ..errors import IntegrityError, NotFound
from ..filters import Filter
from ..logs import get_logger
from ..model import ObjectInfo, body_from_bytes
from .plan import merge, ordered_listing

log = get_logger(__name__)

#: the suffix rclone gives the object that stands for a symbolic link
LINK_SUFFIX = ".rclonelink"
#: the longest link target read back (Linux's PATH_MAX): a larger ``.rclonelink`` object is no link's,
#: and is copied as the file it is
LINK_TARGET_LIMIT = 4096
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _when(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


class SourceTree:
    """One job's view of its source tree beyond the listing (see the module docstring)."""

    def __init__(self, src: Backend, dst: Backend, filt: Filter, *, links: str, empty_dirs: bool,
                 restore: bool = False) -> None:
        self.src, self.dst, self.filter = src, dst, filt
        self.links, self.empty_dirs = links, empty_dirs
        #: ``--links`` to local disk: the source's ``NAME.rclonelink`` objects become links again
        self.restore = restore
        #: ``--links`` from local disk to local disk: a link is made as the link it is
        self.relink = links == "store" and dst.features.local_path
        #: ``--links``: stored key -> the link's target
        self.targets: dict[str, str] = {}
        #: ``restore``: the source's keys ``NAME.rclonelink`` to make links of
        self.restoring: set[str] = set()
        #: folders that hold an object the job listed (``--create-empty-src-dirs``)
        self.filled: set[str] = set()
        self.folders_made = 0

    @classmethod
    def of(cls, spec: Any, src: Backend, dst: Backend, filt: Filter) -> SourceTree | None:
        """The tree ``spec`` (a :class:`~vertexflow.ops.spec.TransferSpec`) asks for, or None."""
        if spec is None or (spec.links == "skip" and not spec.create_empty_src_dirs):
            return None
        links = spec.links if src.features.local_path else "skip"  # only local disk has links
        # to local disk from a store without links, NAME.rclonelink objects become links again
        restore = spec.links == "store" and not src.features.local_path and dst.features.local_path
        return cls(src, dst, filt, links=links, empty_dirs=spec.create_empty_src_dirs, restore=restore)

    # -- the listing -------------------------------------------------------
    async def listing(self) -> AsyncIterator[ObjectInfo]:
        """The source's objects passing the filter, in key order, links included as asked."""
        listed = ordered_listing(self.src, self.filter)
        if self.links != "skip":
            extra = sorted((i for i in await self._links() if self.filter.matches(i)), key=lambda i: i.key)
            listed = self._merged(listed, extra)
        async with aclosing(listed):
            async for info in listed:
                if self.empty_dirs:
                    self._fill(info.key)
                if (self.restore and _stands_for_link(info)) or (self.relink and info.key in self.targets):
                    if self._link_in_place(info):
                        log.debug("link unchanged", key=info.key)
                        continue
                    if self.restore:
                        self.restoring.add(info.key)
                yield info

    async def _merged(self, listed: AsyncIterator[ObjectInfo], extra: list[ObjectInfo]) -> AsyncIterator[ObjectInfo]:
        async def extras() -> AsyncIterator[ObjectInfo]:
            for info in extra:
                yield info

        async with aclosing(listed):
            async for a, b in merge(listed, extras()):
                if a is not None and b is not None:
                    log.warning("a file and a link stored under one name: the file is copied", key=a.key)
                    self.targets.pop(a.key, None)
                yield a if a is not None else b  # type: ignore[misc]

    def _fill(self, key: str) -> None:
        folder = key.rpartition("/")[0]
        while folder and folder not in self.filled:
            self.filled.add(folder)
            folder = folder.rpartition("/")[0]

    def _root(self) -> str:
        return os.path.dirname(str(self.src.local_path("x")))  # type: ignore[attr-defined]

    async def _links(self) -> list[ObjectInfo]:
        """The links under the source (stored as objects, or followed), found by a walk of the tree."""
        root = self._root()
        start = self.filter.listing_prefix.rpartition("/")[0]
        found: list[tuple[str, os.stat_result, str]] = await anyio.to_thread.run_sync(
            _walk_links, root, start, self.links == "follow")
        out = []
        for key, st, target in found:
            if self.links == "store":
                data = os.fsencode(target)
                stored = key + LINK_SUFFIX
                self.targets[stored] = target
                out.append(ObjectInfo(key=stored, size=len(data), mtime=_when(st.st_mtime_ns),
                                      version=f"link:{st.st_mtime_ns}:{hashlib.sha256(data).hexdigest()[:16]}",
                                      content_type="application/octet-stream"))
            else:
                try:
                    out.append(await self.src.stat(key))
                except NotFound:
                    log.warning("skipping a link whose target is missing", key=key, target=target)
        return out

    def is_stored_link(self, key: str) -> bool:
        """``key`` is written as a link's object (``--links`` from local disk) or as a link (to local disk)."""
        return key in self.targets or key in self.restoring

    def _link_path(self, key: str) -> str:
        """The destination file of the link ``NAME.rclonelink`` stands for."""
        return str(self.dst.local_path(key[:-len(LINK_SUFFIX)]))  # type: ignore[attr-defined]

    def _link_in_place(self, info: ObjectInfo) -> bool:
        """The destination has the link ``info`` stands for: a target of its size, with its mtime."""
        try:
            st = os.lstat(self._link_path(info.key))
        except (OSError, ValueError):
            return False
        if not stat_mod.S_ISLNK(st.st_mode) or st.st_size != info.size or info.mtime is None:
            return False
        return abs(_when(st.st_mtime_ns) - info.mtime) < timedelta(seconds=1)

    async def store_link(self, info: ObjectInfo) -> ObjectInfo:
        """Write the object that stands for the link ``info`` names, its SHA-256 checked; or, restoring,
        the link a ``NAME.rclonelink`` object stands for."""
        if info.key in self.restoring:
            return await self._restore_link(info)
        if self.relink:
            return await self._relink(info)
        data = os.fsencode(self.targets[info.key])
        result = await self.dst.put(info, body_from_bytes(data))
        sent = hashlib.sha256(data).hexdigest()
        stored = result.hashes.get("sha256")
        if stored is not None and stored != sent:
            raise IntegrityError("the link's object was stored with other bytes", backend=self.dst.describe(),
                                 key=info.key)
        return result

    async def _restore_link(self, info: ObjectInfo) -> ObjectInfo:
        """Make the link ``NAME`` that the source's object ``NAME.rclonelink`` stands for (its bytes: the target)."""
        data = await self.src.read_whole(info.key, limit=LINK_TARGET_LIMIT, if_version=info.version)
        if not data or b"\0" in data:
            raise IntegrityError("an empty object, or one holding a NUL byte, is no link target: "
                                 "not made into a link", backend=self.src.describe(), key=info.key)
        return await self._make(info, os.fsdecode(data))

    async def _relink(self, info: ObjectInfo) -> ObjectInfo:
        """Make the source's link that ``info`` (``NAME.rclonelink``) stands for as the link ``NAME``."""
        return await self._make(info, self.targets[info.key])

    async def _make(self, info: ObjectInfo, target: str) -> ObjectInfo:
        """The link ``NAME`` -> ``target`` for ``info`` (``NAME.rclonelink``), with its mtime; what it stored."""
        mtime_ns = None if info.mtime is None else int((info.mtime - _EPOCH).total_seconds() * 1e9)
        await anyio.to_thread.run_sync(_make_link, self._link_path(info.key), target, mtime_ns)
        data = os.fsencode(target)
        return ObjectInfo(key=info.key, size=len(data), mtime=info.mtime, version=info.version,
                          hashes={"sha256": hashlib.sha256(data).hexdigest()})

    # -- empty folders ---------------------------------------------------------
    async def make_empty_folders(self) -> None:
        """``--create-empty-src-dirs``: make the source's folders that hold no object at the destination."""
        if not self.empty_dirs or self.filter.files is not None:
            return  # --files-from names objects, not folders
        if not (self.src.features.folders and self.dst.features.folders):
            log.warning("--create-empty-src-dirs: no folders made: the source or the destination has none "
                        "(an S3 bucket's folders are key prefixes)", source=self.src.describe(),
                        destination=self.dst.describe())
            return
        start = self.filter.listing_prefix.rpartition("/")[0]
        for folder in await self._folders(start):
            prefix = self.filter.prefix
            if folder not in self.filled and not self.filter.excludes_subtree(folder) \
                    and (not prefix or (folder + "/").startswith(prefix)):
                await self.dst.make_folder(folder)  # type: ignore[attr-defined]
                self.folders_made += 1
                log.info("empty folder made", folder=folder)

    async def _folders(self, start: str) -> list[str]:
        """Every folder under ``start`` (the source's own folders: what ``list_folders`` gives)."""
        out: list[str] = []
        pending = [start]
        while pending:
            path = pending.pop()
            for name in await self.src.list_folders(path):  # type: ignore[attr-defined]
                folder = f"{path}/{name}" if path else name
                if not self.filter.excludes_subtree(folder):
                    out.append(folder)
                    pending.append(folder)
        return sorted(out)


def _stands_for_link(info: ObjectInfo) -> bool:
    """``info`` is an object rclone's ``--links`` would make a link of: ``NAME.rclonelink``, small enough."""
    name = info.key.rpartition("/")[2]
    return (name.endswith(LINK_SUFFIX) and len(name) > len(LINK_SUFFIX)
            and info.size is not None and info.size <= LINK_TARGET_LIMIT)


def _make_link(path: str, target: str, mtime_ns: int | None) -> None:
    """The link ``path`` -> ``target``, put in place in one rename (over a file or link of that name)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    # hidden from listings by its prefix, as the local backend's temporary files are
    temporary = os.path.join(folder, f"{TMP_PREFIX}link-{os.getpid()}-{os.urandom(6).hex()}")
    os.symlink(target, temporary)
    try:
        if mtime_ns is not None:
            os.utime(temporary, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _walk_links(root: str, start: str, follow: bool) -> list[tuple[str, os.stat_result, str]]:
    """(key, the link's own stat, its target) of every link under ``root/start``; ``follow``: also the
    files under links to folders, as (key, stat, target)."""
    out: list[tuple[str, os.stat_result, str]] = []
    #: the folders being walked, outermost first: a link back to one of them is a loop
    walking: set[tuple[int, int]] = set()

    def walk(path: str, rel: str, through_link: bool) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        here = (st.st_dev, st.st_ino)
        if here in walking:
            log.warning("a link loops back to a folder it is in: not followed again", key=rel.rstrip("/"))
            return
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot read a folder for links", path=path, error=str(exc))
            return
        walking.add(here)
        try:
            visit(entries, rel, through_link)
        finally:
            walking.discard(here)

    def visit(entries: list[os.DirEntry[str]], rel: str, through_link: bool) -> None:
        for e in entries:
            key = rel + e.name
            if e.name.startswith(TMP_PREFIX):
                continue
            try:
                lst = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat_mod.S_ISLNK(lst.st_mode):
                target = os.readlink(e.path)
                if not follow:
                    out.append((key, lst, target))
                    continue
                try:
                    real = os.stat(e.path)
                except OSError:
                    out.append((key, lst, target))  # missing target: stat() reports it
                    continue
                if stat_mod.S_ISDIR(real.st_mode):
                    walk(e.path, key + "/", True)
                elif stat_mod.S_ISREG(real.st_mode):
                    out.append((key, lst, target))
            elif stat_mod.S_ISDIR(lst.st_mode):
                walk(e.path, key + "/", through_link)
            elif through_link and stat_mod.S_ISREG(lst.st_mode):
                out.append((key, lst, ""))  # a file reached through a link to its folder
    base = os.path.join(root, start) if start else root
    walk(base, f"{start}/" if start else "", False)
    return out
