"""Whether local writes are made to survive a power loss before they become visible (fsync).

A file vertexflow writes on local disk (a copied or downloaded object, a backup part, a restored
file) goes to a temporary name, is fsynced, renamed over its key, and its directory fsynced:
after a crash the key holds the old file or the whole new one, never a renamed file whose bytes
had not reached the disk (the rename may otherwise be written first, leaving it empty or short).
The journal records an object as copied only after its put returned, so only once it is durable.

``--no-fsync`` (``VERTEXFLOW_NO_FSYNC``) turns this off for the whole process, for speed where a
power loss is not a concern (a scratch copy): the writes are still atomic against a killed
process, and the journal's SQLite then runs with ``synchronous=OFF``. benchmarks/fsync_cost.py
measures what it saves.
"""

from __future__ import annotations

import functools
import os
from typing import Any

#: ``--no-fsync``'s variable; read here at import, so that a worker process of this one (the small-file
#: copiers of :mod:`vertexflow.backends.local_processes`, started afresh) follows the process's setting
NO_FSYNC = "VERTEXFLOW_NO_FSYNC"
#: the values click reads as true, for the variable to mean the same to the option and to a worker
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
#: fsync before a write is visible: what a copy must guarantee unless told otherwise
_fsync = os.environ.get(NO_FSYNC, "").strip().lower() not in _TRUE


def fsync_enabled() -> bool:
    """The process's setting (``--no-fsync`` makes it False); a backend made later takes it as its default."""
    return _fsync


def set_fsync(enabled: bool) -> None:
    """The process's setting, and that of the processes it starts from now on (through :data:`NO_FSYNC`)."""
    global _fsync
    _fsync = enabled
    if enabled:
        os.environ.pop(NO_FSYNC, None)
    else:
        os.environ[NO_FSYNC] = "true"


def sync_directory(path: str) -> None:
    """fsync the directory ``path``: the names created, renamed or removed in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_filesystem(path: str) -> None:
    """Write every dirty page of the filesystem holding ``path`` to the disk (Linux ``syncfs``; elsewhere
    ``sync``): a batch of files made durable in one go, where an fsync each costs a disk flush each."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc().syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
    finally:
        os.close(fd)


@functools.cache
def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


#: bytes a large file's write runs ahead of the disk before its writeback is started: a few disk
#: requests' worth, so that the fsync before the rename waits for the last piece only
WRITEBACK_EVERY = 8 << 20
#: sync_file_range's flag: start writing the range's dirty pages, do not wait for them
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing bytes ``offset``..``offset + length`` of ``fd`` to the disk, without waiting for them.

    Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``; elsewhere nothing. A
    hint only, never a guarantee (the fsync before the rename is that): a
    large file written with fsync otherwise reaches the disk all at once at
    its end, and its copy waits for all of it there.
    """
    writeback = _sync_file_range()
    if writeback is not None:
        writeback(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # a hint: an error changes nothing


@functools.cache
def _sync_file_range() -> Any:
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    fn = getattr(_libc(), "sync_file_range", None)
    if fn is not None:
        fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
        fn.restype = ctypes.c_int
    return fn


def sync_file(path: str) -> None:
    """fsync the file ``path`` (written by other code through another descriptor)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
