"""The journal: a SQLite database of jobs, their objects, and what each destination holds.

Tables (the schema below is the documentation):

* ``jobs``: one row per copy/sync/verify run: its kind, source, destination,
  options, a fingerprint of those (rerunning the same command finds the
  unfinished job and resumes it), state and final summary.
* ``objects``: per job and key, the object's state (``planned``, ``done``,
  ``failed``), the source version it was planned from, size, SHA-256, the
  destination's version/ETag, and the failure reason.
* ``dest_index``: per destination (its description) and key, what vertexflow
  last wrote there: the destination version/ETag it got back, the source
  size/mtime/version it copied, and the SHA-256. A later sync compares the
  destination listing's ETag with this record instead of sending a HEAD per
  object.
* ``uploads``: multipart uploads in progress (upload id and completed parts,
  and the job whose run began it), so a resumed job continues a large upload
  instead of starting again, and a later run of the job aborts one it no
  longer needs (:mod:`vertexflow.ops.orphans`).
* ``daemon_runs`` and ``daemon_jobs``: what the daemon must remember across
  restarts, per job of its config: its last runs (outcome, counts, error),
  and its state (last start and success, failures in a row, a user's pause or
  cancel). Bounded: a job keeps its newest ``history`` runs.

Retention: a job's ``done`` object rows serve only ``jobs show`` once the job
is ``done`` (a done job is never resumed; later syncs read ``dest_index``).
So when a job finishes ``done``, the done rows of every older done job beyond
the newest :data:`KEEP_DONE_ROWS_OF` are deleted and the job is marked
``rows_pruned``; its row, summary and failed rows stay. Without this the
journal grew by every object of every run (663 MB after a few hundred
benchmark runs). SQLite reuses the freed pages; the file does not shrink.

All access goes through one connection used by one thread at a time (anyio's
worker threads behind a capacity limiter of 1); writes are batched into
transactions by the callers (``record_objects`` takes lists). WAL mode keeps
readers and the writer from blocking each other, and a crash loses at most the
last uncommitted batch: the objects in it are copied again on resume, which is
harmless because every put replaces its key atomically.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from ..durability import fsync_enabled
from ..errors import InsufficientStorage, JobAborted, JobBusy, ReadOnly

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,             -- copy | sync | verify
    src         TEXT NOT NULL,
    dst         TEXT NOT NULL,
    options     TEXT NOT NULL,             -- JSON
    fingerprint TEXT NOT NULL,             -- sha256 of kind, src, dst, options
    state       TEXT NOT NULL,             -- planning | running | done | failed | interrupted
    planned     INTEGER NOT NULL DEFAULT 0, -- 1 once the whole plan is recorded
    created     REAL NOT NULL,
    updated     REAL NOT NULL,
    summary     TEXT,                      -- JSON summary of the last run
    rows_pruned INTEGER NOT NULL DEFAULT 0 -- 1 once its done object rows are deleted (see Retention)
);
CREATE INDEX IF NOT EXISTS jobs_fingerprint ON jobs (fingerprint, state);

CREATE TABLE IF NOT EXISTS objects (
    job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    action      TEXT NOT NULL DEFAULT 'copy', -- copy | delete
    state       TEXT NOT NULL,             -- planned | done | failed
    size        INTEGER,
    mtime       REAL,
    src_version TEXT,
    sha256      TEXT,
    dst_version TEXT,
    reason      TEXT,
    message     TEXT,
    PRIMARY KEY (job_id, key, action)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS dest_index (
    dest        TEXT NOT NULL,
    key         TEXT NOT NULL,
    dst_version TEXT,
    size        INTEGER,
    src_mtime   REAL,
    src_version TEXT,
    sha256      TEXT,
    PRIMARY KEY (dest, key)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS uploads (
    dest        TEXT NOT NULL,
    key         TEXT NOT NULL,
    upload_id   TEXT NOT NULL,
    src_version TEXT,
    part_size   INTEGER NOT NULL,
    parts       TEXT NOT NULL,             -- JSON list of completed parts
    extra       TEXT,                      -- JSON object: the rest of the backend's saved state
    PRIMARY KEY (dest, key)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS daemon_runs (
    id          INTEGER PRIMARY KEY,
    job         TEXT NOT NULL,             -- the job's name in the daemon's config
    result      TEXT NOT NULL              -- JSON: the run's result as the API shows it
);
CREATE INDEX IF NOT EXISTS daemon_runs_job ON daemon_runs (job, id);

CREATE TABLE IF NOT EXISTS daemon_jobs (
    job         TEXT PRIMARY KEY,
    state       TEXT NOT NULL              -- JSON: last start/success, failures in a row, held by the user
) WITHOUT ROWID;
"""

#: what a checkpoint's state (``extra``) names the job whose run began the upload by
UPLOAD_JOB = "job_id"
#: keys of an upload's saved state that have their own column; the rest goes to ``extra``
_UPLOAD_COLUMNS = ("upload_id", "src_version", "part_size", "parts")

#: Rows fetched per thread hop when streaming a plan back.
FETCH_BATCH = 2000

#: done jobs whose done object rows are kept (the newest by finish time); see Retention
KEEP_DONE_ROWS_OF = 10

#: keys looked up in the destination index per statement (SQLite's default limit of host parameters
#: was 999 before 3.32)
DEST_LOOKUP = 512

#: seconds a run waits for another process to release the journal's lock before it gives up: far
#: longer than any one transaction of another run or the daemon holds it
JOURNAL_WAIT = 30.0


def default_journal_path(environ: Mapping[str, str] = os.environ) -> Path:
    if environ.get("VERTEXFLOW_JOURNAL"):
        return Path(environ["VERTEXFLOW_JOURNAL"])
    base = Path(environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "vertexflow" / "journal.db"


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: int
    kind: str
    src: str
    dst: str
    options: dict[str, Any]
    state: str
    planned: bool
    created: float
    updated: float
    summary: dict[str, Any] | None
    rows_pruned: bool = False


@dataclass(frozen=True, slots=True)
class ObjectRecord:
    key: str
    state: str
    action: str = "copy"
    size: int | None = None
    mtime: float | None = None
    src_version: str | None = None
    sha256: str | None = None
    dst_version: str | None = None
    reason: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class DestRecord:
    key: str
    dst_version: str | None
    size: int | None
    src_mtime: float | None
    src_version: str | None
    sha256: str | None


def fingerprint(kind: str, src: str, dst: str, options: Mapping[str, Any]) -> str:
    blob = json.dumps([kind, src, dst, options], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class Journal:
    """The journal database. Create with :meth:`open`; every method is async and thread-safe."""

    def __init__(self, path: Path, *, kept: bool = True, wait: float = JOURNAL_WAIT,
                 fsync: bool | None = None) -> None:
        self.path = path
        #: False for a throw-away journal (``--no-journal``): its job ids name nothing a user can find
        self.kept = kept
        #: seconds to wait for another process's lock on the database
        self.wait = wait
        #: commits reach the disk (None: the process's setting, :mod:`vertexflow.durability`)
        self.fsync = fsync_enabled() if fsync is None else fsync
        self._db: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)
        #: job id -> the open lock file that keeps a second process from running the same job (see start_job)
        self._job_locks: dict[int, int] = {}

    @classmethod
    async def open(cls, path: str | os.PathLike[str] | None = None, *, wait: float = JOURNAL_WAIT,
                   fsync: bool | None = None) -> Journal:
        """The journal at ``path`` (None: the default place). ``wait``: seconds to wait for another
        process's lock; ``fsync``: whether commits are synced (None: the process's setting)."""
        journal = cls(Path(path) if path is not None else default_journal_path(), wait=wait, fsync=fsync)
        await journal._run(journal._connect)
        return journal

    @classmethod
    @asynccontextmanager
    async def temporary(cls) -> AsyncIterator[Journal]:
        """A throw-away journal in a temporary directory, removed on exit (``kept`` is False)."""
        with tempfile.TemporaryDirectory(prefix="vertexflow-journal-") as tmp:
            journal = cls(Path(tmp) / "journal.db", kept=False, fsync=False)  # gone after the run: nothing to keep
            await journal._run(journal._connect)
            async with journal:
                yield journal

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=self.wait)
        try:
            self._setup(db)
        except BaseException:
            db.close()
            raise

    def _setup(self, db: sqlite3.Connection) -> None:
        # WAL + NORMAL: never corrupt, and a power loss can only undo the newest commits, which
        # record objects already durable (every local write is fsynced before its put returns):
        # they are copied again on resume. FULL would sync every small batch for nothing more.
        # Set first: the switch to WAL syncs by it.
        db.execute("PRAGMA synchronous=NORMAL" if self.fsync else "PRAGMA synchronous=OFF")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(SCHEMA)
        if "extra" not in {row[1] for row in db.execute("PRAGMA table_info(uploads)")}:
            db.execute("ALTER TABLE uploads ADD COLUMN extra TEXT")  # journals made before the column
        if "rows_pruned" not in {row[1] for row in db.execute("PRAGMA table_info(jobs)")}:
            db.execute("ALTER TABLE jobs ADD COLUMN rows_pruned INTEGER NOT NULL DEFAULT 0")
        self._db = db

    async def _run(self, fn, *args):  # type: ignore[no-untyped-def]
        return await anyio.to_thread.run_sync(self._guarded, fn, args, limiter=self._limiter)

    def _guarded(self, fn, args):  # type: ignore[no-untyped-def]
        """``fn(*args)``, a SQLite error raised as one of ours naming the journal; a transaction it
        left open is rolled back, so the connection can go on (or close) cleanly."""
        try:
            return fn(*args)
        except sqlite3.Error as exc:
            if self._db is not None and self._db.in_transaction:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise self.failure(exc) from exc

    def failure(self, exc: sqlite3.Error) -> Exception:
        """What a SQLite error of this journal means, as an error of ours that names the journal."""
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        where = f"journal {self.path}"
        if code == sqlite3.SQLITE_FULL:
            return InsufficientStorage(f"writing the journal failed: no space left on the device ({exc})",
                                       backend=where)
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return JobBusy(f"the journal {self.path} is locked by another process (waited {self.wait:g} s); "
                           "run again once it is done, or give this run another --journal")
        if code == sqlite3.SQLITE_READONLY:
            return ReadOnly(f"the journal cannot be written ({exc})", backend=where)
        return JobAborted(f"the journal {self.path} cannot be used: {exc}")

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "journal is closed"
        return self._db

    async def aclose(self) -> None:
        for job_id in list(self._job_locks):
            self._release_job(job_id)
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None

    def _lock_job(self, fp: str) -> int:
        """Blocking: an open file locked (flock) for the job of fingerprint ``fp``, beside the journal.

        Two processes running the same job (same command, same journal) would both resume its rows
        and write the same keys: the second is refused instead. The kernel drops the lock with its
        process, so a killed run leaves none behind. A throw-away journal is this process's alone.
        """
        import fcntl

        folder = self.path.parent / f"{self.path.name}.locks"
        try:
            folder.mkdir(exist_ok=True)
            fd = os.open(folder / f"{fp[:32]}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            cls = InsufficientStorage if exc.errno in (errno.ENOSPC, errno.EDQUOT) else JobAborted
            raise cls(f"cannot make the job's lock file in {folder}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JobBusy(f"another vertexflow process is running this job with the journal {self.path}; "
                          "two runs at once would write the same objects: wait for it to end "
                          "(or stop it), then run again to resume") from None
        return fd

    def _release_job(self, job_id: int) -> None:
        fd = self._job_locks.pop(job_id, None)
        if fd is not None:
            os.close(fd)  # drops the flock

    async def __aenter__(self) -> Journal:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- jobs -------------------------------------------------------------
    async def start_job(self, kind: str, src: str, dst: str, options: Mapping[str, Any], *,
                        replay: Mapping[str, Any] | None = None, resume: bool = True) -> tuple[JobRecord, bool]:
        """The unfinished job with the same fingerprint (resumed), or a new one.

        ``options`` make the fingerprint; ``replay`` (how the run goes:
        transfers, bandwidth...) is stored with them under ``"replay"`` but is
        not part of it, and a resumed job takes the newest. Returns ``(job, resumed)``.
        """
        fp = fingerprint(kind, src, dst, options)
        stored = json.dumps({**options, **({"replay": dict(replay)} if replay else {})}, sort_keys=True, default=str)

        def do() -> tuple[int, bool]:
            lock = self._lock_job(fp) if self.kept else None
            try:
                job_id, resumed = find_or_add()
            except BaseException:
                if lock is not None:
                    os.close(lock)
                raise
            if lock is not None:
                self._job_locks[job_id] = lock
            return job_id, resumed

        def find_or_add() -> tuple[int, bool]:
            now = time.time()
            if resume:
                row = self.db.execute(
                    "SELECT id FROM jobs WHERE fingerprint = ? AND state NOT IN ('done') ORDER BY id DESC LIMIT 1",
                    (fp,)).fetchone()
                if row:
                    self.db.execute("UPDATE jobs SET state = 'running', updated = ?, options = ? WHERE id = ?",
                                    (now, stored, row[0]))
                    return row[0], True
            cur = self.db.execute(
                "INSERT INTO jobs (kind, src, dst, options, fingerprint, state, created, updated) "
                "VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
                (kind, src, dst, stored, fp, now, now))
            return int(cur.lastrowid or 0), False

        job_id, resumed = await self._run(do)
        job = await self.get_job(job_id)
        assert job is not None
        return job, resumed

    async def mark_planned(self, job_id: int) -> None:
        await self._run(lambda: self.db.execute("UPDATE jobs SET planned = 1 WHERE id = ?", (job_id,)))

    async def finish_job(self, job_id: int, state: str, summary: Mapping[str, Any]) -> None:
        def do() -> None:
            self.db.execute("UPDATE jobs SET state = ?, updated = ?, summary = ? WHERE id = ?",
                            (state, time.time(), json.dumps(dict(summary), default=str), job_id))
            if state == "done":
                self._prune_done_rows()

        try:
            await self._run(do)
        finally:
            self._release_job(job_id)

    def _prune_done_rows(self) -> None:
        """Blocking: delete the done object rows of done jobs beyond the newest ``KEEP_DONE_ROWS_OF``."""
        older = self.db.execute(
            "SELECT id FROM jobs WHERE state = 'done' AND rows_pruned = 0 ORDER BY updated DESC, id DESC "
            "LIMIT -1 OFFSET ?", (KEEP_DONE_ROWS_OF,)).fetchall()
        for (job_id,) in older:  # a transaction per job: a journal of millions of rows is pruned in steps
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM objects WHERE job_id = ? AND state = 'done'", (job_id,))
            self.db.execute("UPDATE jobs SET rows_pruned = 1 WHERE id = ?", (job_id,))
            self.db.execute("COMMIT")

    async def get_job(self, job_id: int) -> JobRecord | None:
        def do() -> JobRecord | None:
            row = self.db.execute(
                "SELECT id, kind, src, dst, options, state, planned, created, updated, summary, rows_pruned "
                "FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return _job(row) if row else None

        return await self._run(do)

    # -- the daemon's memory of its jobs --------------------------------------------------
    async def record_daemon_run(self, job: str, result: Mapping[str, Any], *, keep: int) -> None:
        """Add a finished run of daemon job ``job``, keeping its newest ``keep`` runs."""
        def do() -> None:
            self.db.execute("BEGIN")
            self.db.execute("INSERT INTO daemon_runs (job, result) VALUES (?, ?)",
                            (job, json.dumps(dict(result), default=str)))
            self.db.execute("DELETE FROM daemon_runs WHERE job = ? AND id NOT IN "
                            "(SELECT id FROM daemon_runs WHERE job = ? ORDER BY id DESC LIMIT ?)",
                            (job, job, keep))
            self.db.execute("COMMIT")

        await self._run(do)

    async def daemon_runs(self, job: str, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` runs of daemon job ``job``, oldest first."""
        rows = await self._run(lambda: self.db.execute(
            "SELECT result FROM daemon_runs WHERE job = ? ORDER BY id DESC LIMIT ?", (job, limit)).fetchall())
        return [json.loads(r[0]) for r in reversed(rows)]

    async def save_daemon_state(self, job: str, state: Mapping[str, Any]) -> None:
        await self._run(lambda: self.db.execute(
            "INSERT INTO daemon_jobs (job, state) VALUES (?, ?) ON CONFLICT (job) DO UPDATE SET state = excluded.state",
            (job, json.dumps(dict(state), default=str))))

    async def daemon_state(self, job: str) -> dict[str, Any] | None:
        row = await self._run(lambda: self.db.execute("SELECT state FROM daemon_jobs WHERE job = ?",
                                                      (job,)).fetchone())
        return json.loads(row[0]) if row else None

    async def list_jobs(self, limit: int = 50) -> list[JobRecord]:
        def do() -> list[JobRecord]:
            rows = self.db.execute(
                "SELECT id, kind, src, dst, options, state, planned, created, updated, summary, rows_pruned "
                "FROM jobs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
            return [_job(r) for r in rows]

        return await self._run(do)

    async def forget_job(self, job_id: int) -> bool:
        def do() -> bool:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM objects WHERE job_id = ?", (job_id,))
            cur = self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            self.db.execute("COMMIT")
            return cur.rowcount > 0

        return await self._run(do)

    async def job_counts(self, job_id: int) -> dict[str, int]:
        def do() -> dict[str, int]:
            rows = self.db.execute("SELECT action || ':' || state, count(*) FROM objects WHERE job_id = ? "
                                   "GROUP BY action, state", (job_id,)).fetchall()
            return {k: n for k, n in rows}

        return await self._run(do)

    # -- objects ----------------------------------------------------------
    async def record_objects(self, job_id: int, records: Sequence[ObjectRecord]) -> None:
        """Insert or update object rows in one transaction."""
        if not records:
            return

        def do() -> None:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT INTO objects (job_id, key, action, state, size, mtime, src_version, sha256, dst_version, "
                "reason, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (job_id, key, action) DO UPDATE SET state = excluded.state, "
                "size = coalesce(excluded.size, size), mtime = coalesce(excluded.mtime, mtime), "
                "src_version = coalesce(excluded.src_version, src_version), "
                "sha256 = coalesce(excluded.sha256, sha256), dst_version = coalesce(excluded.dst_version, dst_version), "
                "reason = excluded.reason, message = excluded.message",
                [(job_id, r.key, r.action, r.state, r.size, r.mtime, r.src_version, r.sha256, r.dst_version,
                  r.reason, r.message) for r in records])
            self.db.execute("COMMIT")

        await self._run(do)

    def iter_objects(self, job_id: int, *, states: Iterable[str] = ("planned", "failed"), action: str = "copy",
                     order_by: str = "key") -> Any:
        """Async-iterate a job's object rows in the given order, fetched in batches."""
        states = tuple(states)
        order = {"key": "key", "size,asc": "size ASC, key", "size,desc": "size DESC, key",
                 "mtime,asc": "mtime ASC, key", "mtime,desc": "mtime DESC, key"}.get(order_by)
        if order is None:
            raise ValueError(f"unknown order {order_by!r}")
        marks = ",".join("?" * len(states))
        sql = (f"SELECT key, state, action, size, mtime, src_version, sha256, dst_version, reason, message "
               f"FROM objects WHERE job_id = ? AND action = ? AND state IN ({marks}) ORDER BY {order}")
        return self._stream(sql, (job_id, action, *states))

    async def _stream(self, sql: str, params: tuple[Any, ...]):  # type: ignore[no-untyped-def]
        # A dedicated connection: the cursor stays open across thread hops
        # while the main connection keeps recording results.
        db = await self._run(lambda: sqlite3.connect(self.path, check_same_thread=False, timeout=30))
        try:
            cur = await self._run(db.execute, sql, params)
            while True:
                rows = await self._run(cur.fetchmany, FETCH_BATCH)
                if not rows:
                    return
                for row in rows:
                    yield ObjectRecord(*row)
        finally:
            await self._run(db.close)

    async def planned_bytes(self, job_id: int) -> int:
        """Bytes of the objects still planned for copying."""
        def do() -> int:
            row = self.db.execute("SELECT coalesce(sum(size), 0) FROM objects WHERE job_id = ? AND action = 'copy' "
                                  "AND state = 'planned'", (job_id,)).fetchone()
            return int(row[0])

        return await self._run(do)

    async def clear_planned(self, job_id: int) -> None:
        """Drop rows still ``planned`` from an earlier run before planning again."""
        await self._run(lambda: self.db.execute("DELETE FROM objects WHERE job_id = ? AND state = 'planned'",
                                                (job_id,)))

    # -- destination index --------------------------------------------------
    async def dest_records(self, dest: str, keys: Sequence[str]) -> dict[str, DestRecord]:
        def do() -> dict[str, DestRecord]:
            out: dict[str, DestRecord] = {}
            for i in range(0, len(keys), DEST_LOOKUP):
                chunk = keys[i:i + DEST_LOOKUP]
                # the list is padded (NULL matches no key) to a power of two: every length of it is a
                # statement of its own in the connection's cache (128 kept, up to ~90 KB each in SQLite's
                # memory), and a long-running daemon looks up every count of keys sooner or later
                padded = min(DEST_LOOKUP, 1 << (len(chunk) - 1).bit_length())
                marks = ",".join("?" * padded)
                for row in self.db.execute(
                        f"SELECT key, dst_version, size, src_mtime, src_version, sha256 FROM dest_index "
                        f"WHERE dest = ? AND key IN ({marks})", (dest, *chunk, *[None] * (padded - len(chunk)))):
                    out[row[0]] = DestRecord(*row)
            return out

        return await self._run(do)

    async def record_dest(self, dest: str, records: Sequence[DestRecord]) -> None:
        if not records:
            return

        def do() -> None:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR REPLACE INTO dest_index (dest, key, dst_version, size, src_mtime, src_version, sha256) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(dest, r.key, r.dst_version, r.size, r.src_mtime, r.src_version, r.sha256) for r in records])
            self.db.execute("COMMIT")

        await self._run(do)

    async def forget_dest(self, dest: str, keys: Sequence[str]) -> None:
        def do() -> None:
            self.db.execute("BEGIN")
            self.db.executemany("DELETE FROM dest_index WHERE dest = ? AND key = ?", [(dest, k) for k in keys])
            self.db.execute("COMMIT")

        await self._run(do)

    # -- multipart uploads ----------------------------------------------------
    async def get_upload(self, dest: str, key: str) -> dict[str, Any] | None:
        def do() -> dict[str, Any] | None:
            row = self.db.execute("SELECT upload_id, src_version, part_size, parts, extra FROM uploads "
                                  "WHERE dest = ? AND key = ?", (dest, key)).fetchone()
            if not row:
                return None
            return {**json.loads(row[4] or "{}"), "upload_id": row[0], "src_version": row[1],
                    "part_size": row[2], "parts": json.loads(row[3])}

        return await self._run(do)

    async def save_upload(self, dest: str, key: str, state: Mapping[str, Any]) -> None:
        def do() -> None:
            self.db.execute(
                "INSERT OR REPLACE INTO uploads (dest, key, upload_id, src_version, part_size, parts, extra) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (dest, key, state["upload_id"], state.get("src_version"), state["part_size"],
                 json.dumps(state["parts"]),
                 json.dumps({k: v for k, v in state.items() if k not in _UPLOAD_COLUMNS})))

        await self._run(do)

    async def drop_upload(self, dest: str, key: str, *, upload_id: str | None = None) -> None:
        """Forget the upload of ``key`` at ``dest`` (only if it is still ``upload_id``, when given)."""
        if upload_id is None:
            await self._run(lambda: self.db.execute("DELETE FROM uploads WHERE dest = ? AND key = ?", (dest, key)))
            return
        await self._run(lambda: self.db.execute("DELETE FROM uploads WHERE dest = ? AND key = ? AND upload_id = ?",
                                                (dest, key, upload_id)))

    async def job_uploads(self, dest: str, job_id: int) -> list[tuple[str, dict[str, Any]]]:
        """(key, saved state: its ``upload_id`` and the rest the backend saved) of the uploads at ``dest``
        that a run of job ``job_id`` began and left (its checkpoints record the job: :class:`JournalCheckpoint`);
        an empty ``upload_id``: a run stopped while the upload was being created."""
        def do() -> list[tuple[str, dict[str, Any]]]:
            rows = self.db.execute("SELECT key, upload_id, extra FROM uploads WHERE dest = ? ORDER BY key",
                                   (dest,)).fetchall()
            states = [(key, {**json.loads(extra or "{}"), "upload_id": upload_id}) for key, upload_id, extra in rows]
            return [(key, state) for key, state in states if state.get(UPLOAD_JOB) == job_id]

        return await self._run(do)



def _job(row: tuple[Any, ...]) -> JobRecord:
    return JobRecord(id=row[0], kind=row[1], src=row[2], dst=row[3], options=json.loads(row[4]), state=row[5],
                     planned=bool(row[6]), created=row[7], updated=row[8],
                     summary=json.loads(row[9]) if row[9] else None, rows_pruned=bool(row[10]))



class JournalCheckpoint:
    """An :class:`~vertexflow.backends.base.UploadCheckpoint` kept in the journal's ``uploads`` table.

    ``job_id``: the job whose run makes the upload, saved with it, so that a later run of that job
    knows an upload left behind as its own (:meth:`Journal.job_uploads`) and may abort it.
    """

    def __init__(self, journal: Journal, dest: str, key: str, src_version: str | None,
                 job_id: int | None = None) -> None:
        self.journal, self.dest, self.key, self.src_version = journal, dest, key, src_version
        self.job_id = job_id

    async def load(self) -> Mapping[str, Any] | None:
        return await self.journal.get_upload(self.dest, self.key)

    async def save(self, state: Mapping[str, Any]) -> None:
        with anyio.CancelScope(shield=True):  # the upload exists on the server: never lose its id
            job = {UPLOAD_JOB: self.job_id} if self.job_id is not None else {}
            await self.journal.save_upload(self.dest, self.key, {**state, "src_version": self.src_version, **job})

    async def clear(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.journal.drop_upload(self.dest, self.key)
