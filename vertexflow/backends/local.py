"""Local disk backend.

Writes are atomic: bytes go to a temporary file in the destination directory
(named ``.vertexflow-tmp-<host>-<pid>-<random>``, skipped by listings), which
is fsynced and renamed over the key only when complete, then the directory is
fsynced (:mod:`vertexflow.durability`; ``--no-fsync`` leaves both out). A process killed outright (kill
-9, power loss) leaves its temporary files behind; the next listing of that
directory removes those whose process, on this host, is gone. Blocking file work runs in worker threads,
and each thread call does as much as it can (a small file's whole
read-hash-write is one call) because each hand-off costs ~100-250 µs.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import mimetypes
import os
import socket
import stat as stat_mod
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import anyio

from ..errors import (
    AccessDenied,
    BackendError,
    Conflict,
    InsufficientStorage,
    IntegrityError,
    InvalidKey,
    NotFound,
    ReadOnly,
    SourceChanged,
    VertexflowError,
)
from ..durability import WRITEBACK_EVERY, fsync_enabled, start_writeback, sync_directory, sync_filesystem
from ..logs import get_logger
from ..model import CRC64NVME, SHA256, BodyFactory, Features, ObjectInfo, Pace
from .base import Backend, UploadCheckpoint, check_key
from .s3.checksums import Running, computable
from .short_calls import ShortCalls

log = get_logger(__name__)

TMP_PREFIX = ".vertexflow-tmp-"
#: Files up to this size are read, hashed and written in a single thread call.
SMALL_FILE = 1 << 20
#: a put of at most this many bytes is written by one call of a few system calls that can run on
#: the event loop (see short_calls); larger ones always go to a thread (hashing them takes longer)
INLINE_WRITE = 128 << 10
#: Buffer for streaming large files; big enough to amortise syscalls and
#: thread hops, small enough to keep memory flat with many workers.
STREAM_BUFFER = 4 << 20
#: small writes with their fsync in flight at once: concurrent fsyncs share the filesystem journal's
#: commits (ext4, xfs), where one after another each waits for a disk flush of its own
SYNC_THREADS = 32
#: ...of which this much is hashed and then written at once (half a core's 1 MiB L2 cache here)
WRITE_GROUP = 512 << 10
#: Buffer of the read-hash-write loops (local copies, hashing a file). Small
#: enough that the bytes just read are still in the CPU cache when hashed and
#: written: 1 MiB copied A (4 x 128 MiB) at ~1.85 GB/s here, 4 MiB at 0.6-1.8.
COPY_BUFFER = 1 << 20
#: Listing entries handed from the walker thread to the event loop per hop.
LIST_PAGE = 1000
#: Directories known to exist; bounded so millions of directories stay cheap.
DIR_CACHE_SIZE = 10_000

# One table from errno to our exceptions; anything else stays a BackendError.
_ERRNO_MAP: dict[int, type[BackendError]] = {
    errno.ENOENT: NotFound,
    errno.ENOSPC: InsufficientStorage,
    errno.EDQUOT: InsufficientStorage,
    errno.EROFS: ReadOnly,
    errno.EACCES: AccessDenied,
    errno.EPERM: AccessDenied,
    errno.ENAMETOOLONG: InvalidKey,
    errno.EISDIR: Conflict,
    errno.ENOTDIR: Conflict,
    errno.EEXIST: Conflict,
    errno.EFBIG: InsufficientStorage,
}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _mtime(ns: int) -> datetime:
    # integer arithmetic: a float timestamp rounds the microseconds
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _version(st: os.stat_result) -> str:
    return f"{st.st_mtime_ns}:{st.st_size}"


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(key=key, size=st.st_size, mtime=_mtime(st.st_mtime_ns), version=_version(st),
                      content_type=media_type(key))


#: the platform's media types, ahead of Python's table (which lacks the 3D
#: formats and HEIC and may name others differently); the marker tracking
#: files (fset, iset, fset3) are opaque binaries
PLATFORM_TYPES = {
    "mp4": "video/mp4", "webm": "video/webm", "mov": "video/quicktime",
    "jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "heic": "image/heic",
    "glb": "model/gltf-binary", "gltf": "model/gltf+json", "usdz": "model/vnd.usdz+zip",
    "fset": "application/octet-stream", "iset": "application/octet-stream", "fset3": "application/octet-stream",
}
#: a file whose name says nothing known: what rclone and browsers take for unknown bytes
UNKNOWN_TYPE = "application/octet-stream"


def _type_table() -> dict[str, str]:
    # Python's built-in table only (MimeTypes() reads no system file): the same answer on every machine
    db = mimetypes.MimeTypes()
    table = {ext[1:]: t for ext, t in {**db.types_map[False], **db.types_map[True]}.items()}
    table.update(PLATFORM_TYPES)
    return table


_TYPES = _type_table()


def media_type(key: str) -> str:
    """The Content-Type a file named ``key`` is sent with: by its extension, case-insensitive."""
    name = key.rpartition("/")[2]
    ext = name.rpartition(".")[2].lower() if "." in name else ""
    return _TYPES.get(ext, UNKNOWN_TYPE)


def mtime_ns_of(info: ObjectInfo) -> int | None:
    if info.mtime is None:
        return None
    delta = info.mtime - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


#: one file for :meth:`LocalBackend.copy_files`: (key, version the listing saw, mtime_ns to give the copy)
FileJob = tuple[str, str | None, int | None]


class Written(NamedTuple):
    """A file written by this backend: its size, digest ("" when not hashed) and final mtime.

    The digest is a SHA-256, or for a streamed object whose source keeps a
    CRC64NVME the CRC64NVME (``algorithm``): see :func:`stream_digest`.
    """

    size: int
    digest: str
    mtime_ns: int
    algorithm: str = SHA256


def stream_digest(info: ObjectInfo) -> str:
    """The digest a streamed write of ``info`` takes and checks: the cheapest trustworthy one it carries.

    A CRC64NVME the source store keeps (it checked it against the bytes when
    they were written, as AWS does for every object since December 2024) runs
    at memory speed; SHA-256, the only one of a source that keeps nothing
    else, costs a CPU core about a second per GB here. Either proves the
    written file is the source's object end to end.
    """
    if info.hashes.get(CRC64NVME) and computable(CRC64NVME):
        return CRC64NVME
    return SHA256


class LocalBackend(Backend):
    """Objects are files under ``root``; keys are their relative paths."""

    scheme = "file"
    features = Features(local_path=True, direct_files=True, whole_reads=True, folders=True,
                        preserves_mtime=True, sorted_listing=True)

    def __init__(self, root: str | os.PathLike[str], *, hash_files: bool = True,
                 thread_limit: int = 4, name: str | None = None, prune_dirs: bool = True,
                 fsync: bool | None = None) -> None:
        self.root = Path(os.path.abspath(os.fspath(root)))
        self._root = str(self.root).rstrip("/")
        self._name = name
        self._dirs: OrderedDict[str, None] = OrderedDict()
        # A few threads: the kernel's per-file cost does not scale past the cores.
        self._limiter = anyio.CapacityLimiter(thread_limit)
        #: small writes of bytes already in memory: on the loop while they stay quick
        self.short_calls = ShortCalls(self._limiter)
        #: threads for small writes that end in an fsync: they wait on the disk, not the CPU
        self._sync_limiter = anyio.CapacityLimiter(SYNC_THREADS)
        #: take the SHA-256 of every byte written (and check it against an
        #: expected one); off only for ``copy --no-verify``: writes then report no digest
        self.hash_files = hash_files
        #: remove the directories a delete empties (a mirror's); off where folders are part of a layout
        #: (a platform's provisioned category folders outlive their last file)
        self.prune_dirs = prune_dirs
        #: fsync each file before it is renamed into place, and its directory after (None: the
        #: process's setting, :func:`vertexflow.durability.fsync_enabled`); kept by a worker process
        self.fsync = fsync_enabled() if fsync is None else fsync
        #: per thread (batches run in several at once), during :meth:`copy_files` with ``fsync``: ``batch``,
        #: the files written and not yet renamed into place (index in the batch, temporary name, path, key),
        #: made durable together (:meth:`_land`), and ``index``, the batch's file being written
        self._landing = threading.local()

    def describe(self) -> str:
        return f"{self._name}:{self.root}" if self._name else str(self.root)

    # -- keys and paths -------------------------------------------------
    def local_path(self, key: str) -> Path:
        return Path(self.path_of(key))

    def path_of(self, key: str) -> str:
        """The file that holds ``key``, as a string: ``local_path`` without pathlib's cost per call.

        Rejects what :func:`check_key` rejects and segments over 255 bytes.
        """
        parts = key.split("/")
        if not key or "\x00" in key or "" in parts or "." in parts or ".." in parts:
            check_key(key, backend=self.describe())  # raises, naming the problem
        # a segment of at most 63 characters cannot exceed 255 bytes in UTF-8
        if len(key) > 63 and any(len(p) > 63 and len(os.fsencode(p)) > 255 for p in parts):
            raise InvalidKey("a path segment is longer than 255 bytes", backend=self.describe(), key=key)
        return f"{self._root}/{key}"

    def _error(self, exc: OSError, key: str | None, action: str) -> BackendError:
        cls = _ERRNO_MAP.get(exc.errno or 0, BackendError)
        return cls(f"{action} failed: {exc.strerror or exc}", backend=self.describe(), key=key)

    async def _run(self, fn, *args):  # type: ignore[no-untyped-def]
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    # -- contract -------------------------------------------------------
    async def check(self, *, write: bool = False) -> None:
        def probe() -> None:
            if write:
                try:
                    self._make_dirs(self._root)
                except OSError as exc:
                    raise self._error(exc, None, "creating the destination directory") from exc
                if not os.access(self.root, os.W_OK):
                    raise ReadOnly("destination directory is not writable (read-only file system or permissions)",
                                   backend=self.describe())
                # os.access is not enough (read-only mounts, root ignoring modes): try it.
                probe_path = self.root / f"{TMP_PREFIX}probe-{os.getpid()}"
                try:
                    fd = os.open(probe_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    os.close(fd)
                    os.unlink(probe_path)
                except OSError as exc:
                    raise self._error(exc, None, "writing to the destination") from exc
            elif not self.root.is_dir():
                if self.root.exists():
                    return  # a single file: the engine copies it on its own
                raise NotFound("no such directory", backend=self.describe())

        await self._run(probe)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:  # type: ignore[override]
        walker = self._walk(prefix)
        try:
            while True:
                page = await self._run(_next_page, walker)
                if not page:
                    return
                for info in page:
                    yield info
        finally:
            walker.close()

    def _walk(self, prefix: str) -> Iterator[ObjectInfo]:
        """Yield objects under the root in key order, depth first.

        A directory ``d`` sorts as ``d/`` so that the walk's order is the
        order of the full keys (``a.txt`` < ``a/b`` because '.' < '/').
        """
        if "\x00" in prefix or prefix.startswith("/") or ".." in prefix.split("/"):
            raise InvalidKey("invalid listing prefix", backend=self.describe(), key=prefix)
        start_dir, _, _ = prefix.rpartition("/")
        base = self.root.joinpath(*start_dir.split("/")) if start_dir else self.root
        try:
            if not self.root.is_dir():
                raise NotFound("no such directory", backend=self.describe())
        except OSError as exc:
            raise self._error(exc, None, "listing") from exc
        rel0 = f"{start_dir}/" if start_dir else ""
        stack: list[tuple[str, list[tuple[str, os.DirEntry[str], bool]]]] = []

        def entries(path: Path, rel: str) -> list[tuple[str, os.DirEntry[str], bool]]:
            try:
                with os.scandir(path) as it:
                    items = []
                    for e in it:
                        if e.name.startswith(TMP_PREFIX):
                            _sweep_if_orphaned(e)
                            continue
                        try:
                            is_dir = e.is_dir(follow_symlinks=False)
                        except OSError:
                            continue
                        items.append((e.name + "/" if is_dir else e.name, e, is_dir))
            except FileNotFoundError:
                return []
            except NotADirectoryError:
                return []
            except OSError as exc:
                raise self._error(exc, rel or None, "listing") from exc
            items.sort(key=lambda t: t[0], reverse=True)  # pop() from the end = ascending
            return items

        stack.append((rel0, entries(base, rel0)))
        while stack:
            rel, items = stack[-1]
            if not items:
                stack.pop()
                continue
            sort_name, entry, is_dir = items.pop()
            key = rel + entry.name
            if is_dir:
                # descend only where the prefix can still match
                if key.startswith(prefix) or prefix.startswith(key + "/"):
                    stack.append((key + "/", entries(Path(entry.path), key + "/")))
                continue
            if not key.startswith(prefix):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted while listing
            if stat_mod.S_ISLNK(st.st_mode):
                log.warning("skipping symlink", backend=self.describe(), key=key)
                continue
            if not stat_mod.S_ISREG(st.st_mode):
                log.warning("skipping special file", backend=self.describe(), key=key)
                continue
            yield _info(key, st)

    async def stat(self, key: str) -> ObjectInfo:
        path = self.path_of(key)

        def do() -> ObjectInfo:
            try:
                st = os.stat(path)
            except OSError as exc:
                if exc.errno == errno.ENOTDIR:
                    raise NotFound("no such object", backend=self.describe(), key=key) from exc
                raise self._error(exc, key, "stat") from exc
            if not stat_mod.S_ISREG(st.st_mode):
                raise NotFound("not a regular file", backend=self.describe(), key=key)
            return _info(key, st)

        return await self._run(do)

    @asynccontextmanager
    async def open(self, key: str, *, offset: int = 0, length: int | None = None,
                   if_version: str | None = None) -> AsyncIterator[AsyncIterator[bytes]]:
        path = self.path_of(key)

        def do_open():  # type: ignore[no-untyped-def]
            try:
                f = open(path, "rb", buffering=0)
            except OSError as exc:
                if exc.errno in (errno.EISDIR, errno.ENOTDIR):
                    raise NotFound("no such object", backend=self.describe(), key=key) from exc
                raise self._error(exc, key, "open") from exc
            opened = _version(os.fstat(f.fileno()))
            if if_version is not None and opened != if_version:
                f.close()
                raise SourceChanged("file changed since it was listed", backend=self.describe(), key=key)
            if offset:
                f.seek(offset)
            return f, opened

        f, opened = await self._run(do_open)

        def unchanged() -> None:
            # written to (or truncated) while read: what was read may mix old and new bytes
            if _version(os.fstat(f.fileno())) != opened:
                raise SourceChanged("file changed while it was read", backend=self.describe(), key=key)

        async def chunks() -> AsyncIterator[bytes]:
            remaining = length
            while remaining is None or remaining > 0:
                n = STREAM_BUFFER if remaining is None else min(STREAM_BUFFER, remaining)
                try:
                    data = await self._run(f.read, n)
                except OSError as exc:
                    raise self._error(exc, key, "read") from exc
                if not data:
                    break
                if remaining is not None:
                    remaining -= len(data)
                yield data
            await self._run(unchanged)

        it = chunks()
        try:
            yield it
        finally:
            await it.aclose()
            await self._run(f.close)

    async def put(self, info: ObjectInfo, body: BodyFactory, *, checkpoint: UploadCheckpoint | None = None,
                  pace: Pace | None = None) -> ObjectInfo:
        path = self.path_of(info.key)
        mtime_ns = mtime_ns_of(info)
        if info.size is not None and info.size <= SMALL_FILE:
            # small: gather in memory, then one call does everything (the smallest on the loop)
            chunks = [c async for c in body()]
            if self.fsync:
                # a disk flush per file: many at once in threads of their own, so the filesystem's
                # journal commits them together instead of one flush after another
                written = await anyio.to_thread.run_sync(self._write_small, path, info, chunks, mtime_ns,
                                                         limiter=self._sync_limiter)
            elif info.size <= INLINE_WRITE:
                written = await self.short_calls.run(self._write_small, path, info, chunks, mtime_ns)
            else:
                written = await self._run(self._write_small, path, info, chunks, mtime_ns)
        else:
            written = await self._write_stream(path, info, body, mtime_ns)
        return self.written_info(info.key, written)

    async def delete(self, key: str) -> None:
        path = self.local_path(key)

        def do() -> None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                return
            except IsADirectoryError:
                return  # a directory is not an object: nothing to delete
            except OSError as exc:
                if exc.errno == errno.ENOTDIR:
                    return
                raise self._error(exc, key, "delete") from exc
            if self.prune_dirs:
                self._prune_empty_parents(path.parent)

        await self._run(do)

    async def free_space(self) -> int | None:
        def do() -> int | None:
            try:
                st = os.statvfs(self.root)
            except OSError:
                return None
            return st.f_bavail * st.f_frsize

        return await self._run(do)

    # -- writing ----------------------------------------------------------
    def _ensure_dir(self, directory: str) -> None:
        if directory in self._dirs:
            self._dirs.move_to_end(directory)
            return
        existed = os.path.isdir(directory)
        try:
            self._make_dirs(directory)
        except FileExistsError as exc:
            raise Conflict("a parent of this key is a file", backend=self.describe(),
                           key=os.path.relpath(directory, self.root)) from exc
        if existed:
            # a killed run's temporary files are swept by the next listing of their folder, and a writer that
            # lists nothing first (a restore) would never meet them: once per folder it writes into
            _sweep_folder(directory)
        self._dirs[directory] = None
        if len(self._dirs) > DIR_CACHE_SIZE:
            self._dirs.popitem(last=False)

    def _make_dirs(self, directory: str) -> None:
        """``os.makedirs``; with ``fsync``, the parent of each directory made is synced: its name is durable."""
        made = []  # deepest first
        if self.fsync:
            missing = directory
            while not os.path.isdir(missing) and missing != os.path.dirname(missing):
                made.append(missing)
                missing = os.path.dirname(missing)
        os.makedirs(directory, exist_ok=True)
        for created in made:
            sync_directory(os.path.dirname(created))

    def _open_tmp(self, path: str, key: str) -> tuple[int, str]:
        directory = os.path.dirname(path)
        try:
            self._ensure_dir(directory)
        except OSError as exc:
            raise self._error(exc, key, "creating the directory") from exc
        tmp = f"{directory}/{TMP_PREFIX}{_HOST_TAG}-{os.getpid()}-{next(_TMP_SEQUENCE) & _TMP_MASK:012x}"
        try:
            # read-write: a large copy hashes what it has just written (_copy_hashing)
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise self._error(exc, key, "creating a temporary file") from exc
        return fd, tmp

    def _finish(self, fd: int, tmp: str, path: str, key: str, mtime_ns: int | None) -> int:
        """Set the mtime, rename into place and close; returns the final mtime_ns."""
        if mtime_ns is not None:
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        final = os.fstat(fd).st_mtime_ns
        landing = getattr(self._landing, "batch", None)
        if landing is not None:  # a batch: synced and renamed with the others (_land)
            landing.append((self._landing.index, tmp, path, key))
            os.close(fd)
            return final
        if self.fsync:  # the bytes reach the disk before the name does (see sync_renamed)
            os.fsync(fd)
        try:
            os.rename(tmp, path)
        except IsADirectoryError as exc:
            raise Conflict("a directory stands where the object should go", backend=self.describe(), key=key) from exc
        # closed last, so any failure above leaves the fd for the caller's cleanup
        try:
            os.close(fd)
        except OSError:
            pass
        return final

    def _sync_renamed(self, path: str, key: str) -> None:
        """fsync the directory a file was just renamed into: the rename itself is durable."""
        if self.fsync and getattr(self._landing, "batch", None) is None:
            try:
                sync_directory(os.path.dirname(path))
            except OSError as exc:
                raise self._error(exc, key, "syncing the directory") from exc

    def _guarded_write(self, path: str, key: str, mtime_ns: int | None, write) -> Written:  # type: ignore[no-untyped-def]
        """Open a temp file, let ``write(fd)`` fill it, rename it into place.

        ``write`` returns ``(size, sha256)``. On any error the temp file is
        removed, so a failed write leaves nothing behind.
        """
        fd, tmp = self._open_tmp(path, key)
        closed = False
        try:
            size, digest = write(fd)
            final_ns = self._finish(fd, tmp, path, key, mtime_ns)
            closed = True
            self._sync_renamed(path, key)
            return Written(size, digest, final_ns)
        except BaseException as exc:
            _discard(None if closed else fd, tmp)
            if isinstance(exc, OSError):
                raise self._error(exc, key, "write") from exc
            raise

    def _check_written(self, info: ObjectInfo, size: int, digest: str, algorithm: str = SHA256) -> None:
        if info.size is not None and size != info.size:
            raise SourceChanged(f"got {size} bytes of the {info.size} listed: the source changed while it was read",
                                backend=self.describe(), key=info.key)
        expected = info.hashes.get(algorithm)
        if expected is not None and digest and expected.lower() != digest:
            raise IntegrityError(f"{algorithm} of the written bytes differs from the expected one",
                                 backend=self.describe(), key=info.key)

    def _write_small(self, path: str, info: ObjectInfo, chunks: list[bytes], mtime_ns: int | None) -> Written:
        data = b"".join(chunks) if len(chunks) != 1 else chunks[0]

        def write(fd: int) -> tuple[int, str]:
            digest = hashlib.sha256(data).hexdigest() if self.hash_files else ""
            self._check_written(info, len(data), digest)
            _write_all(fd, memoryview(data))
            return len(data), digest

        return self._guarded_write(path, info.key, mtime_ns, write)

    async def _write_stream(self, path: str, info: ObjectInfo, body: BodyFactory,
                            mtime_ns: int | None) -> Written:
        fd, tmp = await self._run(self._open_tmp, path, info.key)
        algorithm = stream_digest(info)
        h = Running(algorithm) if self.hash_files else None
        size = 0
        done = False
        # bytes written and not yet handed to the disk's writeback (with fsync: start_writeback)
        unsynced = [0, 0]  # first byte, count

        def write_chunks(chunks: list[bytes]) -> None:
            # hashed and written half a megabyte at a time: the bytes are still in the CPU's cache
            group: list[bytes] = []
            group_size = 0
            for chunk in chunks:
                if h is not None:
                    h.update(chunk)
                group.append(chunk)
                group_size += len(chunk)
                if group_size >= WRITE_GROUP:
                    _writev_all(fd, group)
                    unsynced[1] += group_size
                    group, group_size = [], 0
            if group:
                _writev_all(fd, group)
                unsynced[1] += group_size
            if self.fsync and unsynced[1] >= WRITEBACK_EVERY:
                start_writeback(fd, *unsynced)
                unsynced[0], unsynced[1] = unsynced[0] + unsynced[1], 0

        pending: list[bytes] = []
        pending_size = 0

        async def flush() -> None:
            nonlocal pending, pending_size
            chunks = pending
            pending, pending_size = [], 0
            try:
                await self._run(write_chunks, chunks)
            except OSError as exc:
                raise self._error(exc, info.key, "write") from exc

        try:
            async with aclosing(body()) as chunks:  # type: ignore[type-var]
                async for chunk in chunks:
                    size += len(chunk)
                    if info.size is not None and size > info.size:
                        raise SourceChanged(f"more than the {info.size} bytes listed: the source changed while "
                                            "it was read", backend=self.describe(), key=info.key)
                    # network bodies come in small pieces: gather them so that
                    # each thread hop hashes and writes (writev) a few megabytes
                    pending.append(chunk)
                    pending_size += len(chunk)
                    if pending_size >= STREAM_BUFFER:
                        await flush()
            if pending:
                await flush()
            digest = h.hexdigest() if h is not None else ""
            self._check_written(info, size, digest, algorithm)
            try:
                final_ns = await self._run(self._finish, fd, tmp, path, info.key, mtime_ns)
            except OSError as exc:
                raise self._error(exc, info.key, "write") from exc
            done = True
            await self._run(self._sync_renamed, path, info.key)
            return Written(size, digest, final_ns, algorithm)
        finally:
            if not done:
                with anyio.CancelScope(shield=True):
                    await self._run(_discard, fd, tmp)

    def _prune_empty_parents(self, directory: Path) -> None:
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            self._dirs.pop(str(directory), None)
            directory = directory.parent

    # -- fast paths used by the engine -------------------------------------
    def copy_from_file(self, src: str | os.PathLike[str], src_info: ObjectInfo, info: ObjectInfo) -> ObjectInfo:
        """Blocking: copy the file ``src`` (``src_info`` as listed) to ``info.key``; see :meth:`copy_file`."""
        written = self.copy_file(src, info.key, src_key=src_info.key, version=src_info.version,
                                 mtime_ns=mtime_ns_of(info))
        return self.written_info(info.key, written)

    def copy_file(self, src: str | os.PathLike[str], key: str, *, src_key: str, version: str | None,
                  mtime_ns: int | None, fd_in: int | None = None) -> Written:
        """Blocking: copy the file ``src`` to ``key`` in this thread.

        With ``hash_files`` a small file is read once, hashed and written; a
        large one goes by ``copy_file_range`` a piece at a time, each piece
        hashed as the destination then holds it. Without, ``copy_file_range``
        alone, which never brings the bytes into user space. Raises
        :class:`SourceChanged` if the source is not at ``version`` or changes
        while read. Call it from a worker thread (or a worker process:
        :mod:`.local_processes`). It is the hot loop of local copies, so it
        works on plain strings and file descriptors (a small file costs 11
        system calls and no pathlib). ``fd_in``: ``src`` already open (see
        :meth:`copy_files`); this call closes it.
        """
        if fd_in is None:
            try:
                fd_in = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise self._error(exc, src_key, "open source") from exc
        try:
            path = self.path_of(key)
            st = os.fstat(fd_in)
            listed = _version(st)
            if version is not None and listed != version:
                raise SourceChanged("file changed since it was listed", backend=os.fspath(src), key=src_key)
            size = st.st_size

            def write(fd: int) -> tuple[int, str]:
                if self.hash_files:
                    copied, digest = _copy_hashing(fd_in, fd, size, writeback=self.fsync)
                else:
                    copied, digest = _copy_kernel(fd_in, fd, size), ""
                if copied != size or _version(os.fstat(fd_in)) != listed:
                    raise SourceChanged("file changed while it was copied", backend=os.fspath(src), key=src_key)
                return copied, digest

            return self._guarded_write(path, key, mtime_ns, write)
        finally:
            os.close(fd_in)

    def copy_files(self, src: LocalBackend, jobs: list[FileJob]) -> list[Written | Exception]:
        """Blocking: :meth:`copy_file` for each ``(key, listed version, mtime_ns)`` of ``src``, in order.

        Each file succeeds or fails on its own: the result holds what was
        written or the error, always one of ours (it must survive pickling
        back from a worker process).

        The whole batch's sources are opened first, each with a read-ahead
        hint, so that files not in the page cache are read from the disk
        together rather than one after another (dataset B read cold by two
        worker processes: 2.4 s one file at a time, 1.2 s so).
        """
        out: list[Written | Exception] = []
        ahead = [_open_ahead(src, key) for key, _, _ in jobs]
        # with fsync, the batch's files are made durable together: one filesystem sync before any is renamed
        # into place (instead of an fsync per file), then one fsync per directory after
        self._landing.batch = [] if self.fsync and len(jobs) > 1 else None
        try:
            for i, (key, version, mtime_ns) in enumerate(jobs):
                fd, ahead[i] = ahead[i], None  # copy_file closes it (None: copy_file opens and names the error)
                self._landing.index = i
                try:
                    out.append(self.copy_file(src.path_of(key), key, src_key=key, version=version,
                                              mtime_ns=mtime_ns, fd_in=fd))
                except VertexflowError as exc:
                    out.append(exc)
                except Exception as exc:  # noqa: BLE001 - reported per file, as one of ours
                    out.append(BackendError(f"{type(exc).__name__}: {exc}", backend=self.describe(), key=key))
        finally:
            for fd in ahead:  # left open only when the loop was cut short
                if fd is not None:
                    os.close(fd)
            landing, self._landing.batch = self._landing.batch, None
            if landing:
                self._land(landing, out)
        return out

    def _land(self, landing: list[tuple[int, str, str, str]], out: list[Written | Exception]) -> None:
        """Blocking: make a batch's written files durable and rename them into place; a file that cannot
        be has its result in ``out`` replaced by the error, its temporary file removed."""
        try:
            sync_filesystem(self._root)  # every file's bytes reach the disk before any name does
        except OSError as exc:
            for i, tmp, _path, key in landing:
                _discard(None, tmp)
                out[i] = self._error(exc, key, "syncing the written files")
            return
        directories: dict[str, list[tuple[int, str]]] = {}
        for i, tmp, path, key in landing:
            try:
                os.rename(tmp, path)
            except OSError as exc:
                _discard(None, tmp)
                out[i] = (Conflict("a directory stands where the object should go", backend=self.describe(),
                                   key=key) if isinstance(exc, IsADirectoryError)
                          else self._error(exc, key, "rename into place"))
                continue
            directories.setdefault(os.path.dirname(path), []).append((i, key))
        for directory, renamed in directories.items():
            try:
                sync_directory(directory)
            except OSError as exc:
                for i, key in renamed:
                    out[i] = self._error(exc, key, "syncing the directory")

    @staticmethod
    def written_info(key: str, written: Written) -> ObjectInfo:
        """What :meth:`copy_file` stored, as the object's info."""
        hashes = {written.algorithm: written.digest} if written.digest else {}
        return ObjectInfo(key=key, size=written.size, mtime=_mtime(written.mtime_ns), hashes=hashes,
                          version=f"{written.mtime_ns}:{written.size}")

    def remove_temp_files(self, directories: set[str], pids: frozenset[int]) -> None:
        """Blocking: remove the temporary files that processes ``pids`` of this host left in ``directories``.

        For worker processes that died mid-batch (their pids may not be reaped
        yet, so the listing's own sweep would still think them alive).
        """
        prefixes = tuple(f"{TMP_PREFIX}{_HOST_TAG}-{pid}-" for pid in pids)
        for directory in directories:
            try:
                with os.scandir(self.path_of(directory) if directory else self._root) as entries:
                    doomed = [e.path for e in entries if e.name.startswith(prefixes)]
            except OSError:
                continue
            for path in doomed:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    async def read_whole(self, key: str, *, limit: int, if_version: str | None = None,
                         on_bytes: Callable[[int], None] | None = None) -> bytes:
        data = await self._run(self.read_file, key, if_version, limit)
        if on_bytes is not None:
            on_bytes(len(data))
        return data

    def read_file(self, key: str, version: str | None, limit: int | None = None) -> bytes:
        """Blocking: the whole content of a (small) file, checked against ``version`` and ``limit``."""
        path = self.path_of(key)
        try:
            with open(path, "rb", buffering=0) as f:
                st = os.fstat(f.fileno())
                if version is not None and _version(st) != version:
                    raise SourceChanged("file changed since it was listed", backend=self.describe(), key=key)
                if limit is not None and st.st_size > limit:
                    raise SourceChanged(f"listed as small, now {st.st_size} bytes", backend=self.describe(), key=key)
                data = f.readall()
                if len(data) != st.st_size or _version(os.fstat(f.fileno())) != _version(st):
                    raise SourceChanged("file changed while it was read", backend=self.describe(), key=key)
                return data
        except OSError as exc:
            raise self._error(exc, key, "read") from exc

    def sha256(self, key: str) -> str:
        """Blocking: SHA-256 of a file, read once through one reused buffer."""
        h = hashlib.sha256()
        view = memoryview(bytearray(COPY_BUFFER))
        try:
            with open(self.path_of(key), "rb", buffering=0) as f:
                while n := f.readinto(view):
                    h.update(view[:n])
        except OSError as exc:
            raise self._error(exc, key, "read") from exc
        return h.hexdigest()

    async def file_sha256(self, key: str) -> str:
        return await self._run(self.sha256, key)

    async def make_folder(self, path: str) -> None:
        target = self.local_path(path)
        try:
            await self._run(lambda: os.makedirs(target, exist_ok=True))
        except OSError as exc:  # a file where a folder should be: Conflict, naming the path
            raise self._error(exc, path, "creating the folder") from exc

    async def is_folder(self, path: str) -> bool:
        return await self._run(self.local_path(path).is_dir)

    async def list_folders(self, path: str) -> list[str]:
        base = self.local_path(path) if path else self.root

        def names() -> list[str]:
            try:
                with os.scandir(base) as entries:
                    return sorted(e.name for e in entries
                                  if not e.name.startswith(TMP_PREFIX) and e.is_dir(follow_symlinks=False))
            except (FileNotFoundError, NotADirectoryError):
                return []
            except OSError as exc:
                raise self._error(exc, path or None, "listing folders") from exc

        return await self._run(names)

    def run_blocking(self, fn, *args):  # type: ignore[no-untyped-def]
        """Run blocking ``fn(*args)`` in this backend's bounded thread pool."""
        return self._run(fn, *args)


_HOST_TAG = hashlib.blake2b(socket.gethostname().encode(), digest_size=4).hexdigest()
#: the last part of a temporary file's name: a counter from a random start, unique within the
#: process (the pid tells processes apart, the random start a pid reused after a crash) and,
#: unlike os.urandom for each file, no system call (1.5 % of a small download's loop time)
_TMP_SEQUENCE = itertools.count(int.from_bytes(os.urandom(6), "big"))
_TMP_MASK = (1 << 48) - 1


def _sweep_folder(directory: str) -> None:
    """:func:`_sweep_if_orphaned` for each temporary file directly in ``directory``."""
    try:
        with os.scandir(directory) as it:
            for e in it:
                if e.name.startswith(TMP_PREFIX):
                    _sweep_if_orphaned(e)
    except OSError:
        pass  # a sweep is a courtesy: the write goes on


def _sweep_if_orphaned(entry: os.DirEntry[str]) -> None:
    """Remove a temporary file left by a dead vertexflow process of this host."""
    parts = entry.name[len(TMP_PREFIX):].split("-")
    if len(parts) != 3 or parts[0] != _HOST_TAG or not parts[1].isdigit():
        return  # another host's, or an old-style name: not ours to judge
    try:
        os.kill(int(parts[1]), 0)
        return  # still running
    except ProcessLookupError:
        pass
    except PermissionError:
        return  # alive, owned by someone else
    try:
        os.unlink(entry.path)
        log.info("removed a temporary file left by a killed run", path=entry.path)
    except OSError:
        pass


def _next_page(walker: Iterator[ObjectInfo]) -> list[ObjectInfo]:
    page = []
    for info in walker:
        page.append(info)
        if len(page) >= LIST_PAGE:
            break
    return page


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _writev_all(fd: int, chunks: list[bytes]) -> None:
    """Write ``chunks`` in order with as few writev calls as the kernel allows (no joining copy)."""
    views = [memoryview(c) for c in chunks if c]
    while views:
        n = os.writev(fd, views[:_IOV_MAX])
        while views and n >= len(views[0]):
            n -= len(views.pop(0))
        if n:
            views[0] = views[0][n:]


def _open_ahead(src: LocalBackend, key: str) -> int | None:
    """A descriptor open on ``key`` in ``src``, whose pages the kernel starts reading now; None if it
    cannot be opened (:meth:`LocalBackend.copy_file` then tries itself and reports why)."""
    try:
        fd = os.open(src.path_of(key), os.O_RDONLY | os.O_CLOEXEC)
    except (OSError, VertexflowError):
        return None
    if _FADVISE is not None:
        try:
            _FADVISE(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass  # only a hint
    return fd


_FADVISE = getattr(os, "posix_fadvise", None)


def _copy_hashing(fd_in: int, fd_out: int, size_hint: int, *, writeback: bool = False) -> tuple[int, str]:
    """Copy ``fd_in`` to ``fd_out`` (opened read-write); returns the size and SHA-256 of what was written.
    ``writeback``: the written bytes are handed to the disk as they go (the file is fsynced before its rename)."""
    if size_hint <= SMALL_FILE:
        # one read of one byte more than listed: a file that grew shows as a size mismatch
        data = os.read(fd_in, size_hint + 1)
        while len(data) <= size_hint and (more := os.read(fd_in, size_hint + 1 - len(data))):
            data += more  # a short read (rare on local files)
        _write_all(fd_out, memoryview(data))
        return len(data), hashlib.sha256(data).hexdigest()
    h = hashlib.sha256()
    # one reused buffer: a fresh bytes per read costs page faults and halves throughput
    buf = bytearray(COPY_BUFFER)
    view = memoryview(buf)
    total = 0
    kernel_copy = True
    while True:
        if kernel_copy:
            # The kernel copies a piece, then we hash that piece as the destination
            # now holds it (read back from the page cache, still warm). Steadier
            # than write() from our buffer, whose kernel time varied 1-10x from
            # run to run here; and the digest describes the stored bytes.
            try:
                n = os.copy_file_range(fd_in, fd_out, COPY_BUFFER)
            except OSError as exc:
                if exc.errno not in _NO_KERNEL_COPY or total:
                    raise
                kernel_copy = False
                continue
            if n and os.preadv(fd_out, [view[:n]], total) != n:
                raise OSError(errno.EIO, "short read of the bytes just written")
        else:
            n = os.readv(fd_in, [view])
            _write_all(fd_out, view[:n])
        if not n:
            break
        h.update(view[:n])
        total += n
        if writeback and total % WRITEBACK_EVERY < n:
            start_writeback(fd_out, max(0, total - WRITEBACK_EVERY), WRITEBACK_EVERY)
    return total, h.hexdigest()


#: the most buffers one writev takes
_IOV_MAX = max(16, os.sysconf("SC_IOV_MAX")) if hasattr(os, "sysconf") else 16
#: copy_file_range cannot copy between these two files (another filesystem, an old kernel)
_NO_KERNEL_COPY = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP)


def _copy_kernel(fd_in: int, fd_out: int, size: int) -> int:
    total = 0
    try:
        while True:
            n = os.copy_file_range(fd_in, fd_out, max(size - total, STREAM_BUFFER))
            if n == 0:
                return total
            total += n
    except OSError as exc:
        if exc.errno not in _NO_KERNEL_COPY or total:
            raise
    while True:  # sendfile works across filesystems where copy_file_range may not
        n = os.sendfile(fd_out, fd_in, total, STREAM_BUFFER)
        if n == 0:
            return total
        total += n


def _discard(fd: int | None, tmp: str) -> None:
    """Close (if still open) and remove a temporary file, ignoring what already went."""
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        os.unlink(tmp)
    except OSError:
        pass


__all__ = ["FileJob", "LocalBackend", "TMP_PREFIX", "Written", "media_type", "mtime_ns_of"]
