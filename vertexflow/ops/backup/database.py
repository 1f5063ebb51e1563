"""The SQLite side: an online copy by the backup API, its integrity check, and putting it back.

All functions here are blocking; callers run them in a worker thread.

The copy is taken in one ``backup()`` step (``pages=-1``): SQLite then holds
a read transaction for the whole copy, so the copy is one consistent
snapshot. In WAL mode writers go on meanwhile; in rollback-journal mode they
wait (their busy timeout) for the few moments the copy takes. A stepwise
copy would let writers in between steps, but SQLite restarts such a copy
whenever another connection writes, so under a steady writer it might never
finish.

Side files: a read-only connection to a database in WAL mode creates
``-wal`` and ``-shm`` beside it and, unlike a read-write one, cannot remove
them when it closes. So a private copy (the temporary file of a backup or a
restore, which nothing else opens) is read with ``immutable=1`` (no locks,
no side files), and the live database (backed up, or replaced by a restore)
is opened read-write, so that SQLite folds and removes its side files as
the last connection closes (files that other processes hold open keep
theirs, as they should). The backup only reads through that connection; a
live database this user may not write is opened read-only, and SQLite then
leaves the side files it had to create.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from contextlib import closing
from typing import Literal
from urllib.parse import quote
from datetime import UTC, datetime
from pathlib import Path

from ...errors import BackupError, ConfigError

READ = 1024 * 1024


def snapshot(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Copy the live database ``source`` into the new file ``target``; check it; raise on failure."""
    if not Path(source).is_file():
        raise ConfigError(f"--db {str(source)!r}: no such database file")
    try:
        _copy(source, target, source_is="live")
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"database {source}: the copy failed: {exc}") from exc
    problem = integrity_problem(target)
    if problem:
        raise BackupError(f"database {source}: the copy fails its integrity check: {problem}")


def copy_checked(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """A working copy of a checked private copy (a restore's temporary file) into the new file ``target``."""
    _copy(source, target, source_is="private")


#: how a database file is opened: ``live`` among other connections, read-write where this user
#: may write it (only to remove the side files as the last connection), else read-only (the
#: platform's database being backed up); ``private`` a copy nothing else opens (immutable: no
#: locks, no side files); ``shared`` read-write without creating it (the database a restore wrote)
Access = Literal["live", "private", "shared"]
_MODE = {"private": "mode=ro&immutable=1", "shared": "mode=rw"}


def _connect(path: str | os.PathLike[str], access: Access) -> sqlite3.Connection:
    full = Path(path).absolute()
    if access == "live":
        writable = os.access(full, os.W_OK) and os.access(full.parent, os.W_OK | os.X_OK)
        mode = "mode=rw" if writable else "mode=ro"
    else:
        mode = _MODE[access]
    return sqlite3.connect(f"file:{quote(str(full))}?{mode}", uri=True, timeout=30)


def _copy(source: str | os.PathLike[str], target: str | os.PathLike[str], *, source_is: Access) -> None:
    """``source`` into ``target`` by the backup API, in one step (one consistent snapshot)."""
    with closing(_connect(source, source_is)) as src, closing(sqlite3.connect(target, timeout=30)) as dst:
        src.backup(dst, pages=-1)


def integrity_problem(path: str | os.PathLike[str], *, access: Access = "private") -> str | None:
    """None when ``PRAGMA integrity_check`` says ok; else what it (or opening the file) said."""
    try:
        with closing(_connect(path, access)) as con:
            rows = con.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    result = "; ".join(str(r[0]) for r in rows)
    return None if result == "ok" else result


def file_digest(path: str | os.PathLike[str]) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while data := f.read(READ):
            h.update(data)
            size += len(data)
    return size, h.hexdigest()


def restore_into(copy: str | os.PathLike[str], target: str | os.PathLike[str], *, now: datetime | None = None) -> str | None:
    """Put the checked database file ``copy`` in place at ``target`` by the backup API.

    An existing ``target`` is first copied (by the backup API, so consistently
    even while open elsewhere) to ``<target>.before-restore-<UTC time>``
    (``-1``, ``-2``... appended when that name is taken: a file there is
    never overwritten), whose path is returned. Connections open on
    ``target`` see the restored content at their next transaction. The
    result is integrity-checked.
    """
    target = Path(target)
    kept = None
    if target.exists():
        kept = _reserve_kept_name(target, now or datetime.now(UTC))
        try:
            _copy(target, kept, source_is="shared")
        except BaseException:
            os.unlink(kept)
            raise
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
    _copy(copy, target, source_is="private")
    problem = integrity_problem(target, access="shared")
    if problem:
        raise BackupError(f"database {target}: fails its integrity check after the restore: {problem}"
                          + (f" (the previous file is kept at {kept})" if kept else ""))
    return kept


def _reserve_kept_name(target: Path, now: datetime) -> str:
    """A new empty file ``<target>.before-restore-<UTC time>[-N]``, created here (O_EXCL), for the previous database."""
    base = f"{target}.before-restore-{now.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    mode = target.stat().st_mode & 0o777  # the copy is as readable as the database, no more
    for seq in range(1000):
        name = f"{base}-{seq}" if seq else base
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
        except FileExistsError:
            continue
        return name
    raise BackupError(f"database {target}: too many {base}-N files; remove old ones")
