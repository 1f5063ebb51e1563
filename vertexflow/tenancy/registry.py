"""The company registry in the platform's SQLite database.

Tables (created when absent; an existing database that has them is used as
it is, extra columns included)::

    storage_connections(id INTEGER PK, name TEXT UNIQUE, storage_type TEXT, config TEXT)
    companies(id INTEGER PK, slug TEXT UNIQUE, name TEXT, storage_type TEXT,
              storage_connection_id INTEGER NULL, yandex_disk_folder_id TEXT NULL)
    vertexflow_migrations(id INTEGER PK, company_id, from_json, to_json, state, live,
                          started_at, finished_at, message, report)
    vertexflow_routing, vertexflow_inflight, vertexflow_migration_dirty
        (live migrations across processes: see :mod:`.live_state`)

``storage_connections.config`` is the connection's settings as JSON (the
shape of a ``connections`` entry of the storage config); NULL, or a table
without that column, means "the connection of that name in the storage
config", so secrets can stay in the config file. A company's storage is
chosen by ``storage_connection_id`` when set, else by ``storage_type``
(``local``, ``minio``, ``yandex_disk``: the storage config's sections of
that name; ``default`` or NULL: each content type's own ``storage_type``).

The registry is synchronous: every call is one short SQLite transaction on a
local file, cheaper than a thread hand-off. A switch (:meth:`set_placement`)
is one transaction, which also bumps the company's routing generation. The
database is in WAL mode with a busy timeout, as several processes share it.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import string
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from ..errors import ConfigError, MigrationFailed
from ..logs import get_logger

log = get_logger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS storage_connections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    storage_type TEXT NOT NULL,
    config TEXT
);
CREATE TABLE IF NOT EXISTS companies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    slug TEXT NOT NULL UNIQUE,
    name TEXT,
    storage_type TEXT NOT NULL DEFAULT 'default',
    storage_connection_id INTEGER REFERENCES storage_connections(id),
    yandex_disk_folder_id TEXT
);
CREATE TABLE IF NOT EXISTS vertexflow_company_folders (
    company_id INTEGER PRIMARY KEY,
    folder TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS vertexflow_migrations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    company_id INTEGER NOT NULL,
    from_json TEXT NOT NULL,
    to_json TEXT NOT NULL,
    state TEXT NOT NULL,
    live INTEGER NOT NULL DEFAULT 0,
    started_at REAL NOT NULL,
    finished_at REAL,
    message TEXT,
    report TEXT,
    owner_pid INTEGER,
    owner_host TEXT,
    heartbeat_at REAL
);
CREATE TABLE IF NOT EXISTS vertexflow_routing (
    company_id INTEGER PRIMARY KEY,
    generation INTEGER NOT NULL DEFAULT 0,
    migration_id INTEGER,
    state TEXT,
    target_json TEXT
);
CREATE TABLE IF NOT EXISTS vertexflow_inflight (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    company_id INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS vertexflow_inflight_company ON vertexflow_inflight (company_id, generation);
CREATE TABLE IF NOT EXISTS vertexflow_migration_dirty (
    migration_id INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    key TEXT NOT NULL,
    generation INTEGER NOT NULL,
    PRIMARY KEY (migration_id, content_type, key)
);
"""
#: how long a statement waits for another process's transaction before failing
BUSY_TIMEOUT_MS = 30_000
_REQUIRED = {
    "companies": ("id", "storage_type", "storage_connection_id", "yandex_disk_folder_id"),
    "storage_connections": ("id", "name", "storage_type"),
}
#: how a company's folder is named when the storage config does not say (``company_folder``):
#: its ``slug`` column (the schema vertexflow creates has one)
DEFAULT_COMPANY_FOLDER = "slug"
#: migration states; "switched" and "rolled_back" are final, "failed" left the company where it was,
#: "staged" (a filtered run) copied part of the company and left it where it was
MIGRATION_STATES = ("planned", "copying", "closing", "verifying", "switched", "failed", "rolled_back", "staged")
#: states of a migration in progress (one per company at a time)
ACTIVE_STATES = ("planned", "copying", "closing", "verifying")
#: columns added to vertexflow_migrations since it was first created (added to an older table on open)
_MIGRATION_LEASE_COLUMNS = (("owner_pid", "INTEGER"), ("owner_host", "TEXT"), ("heartbeat_at", "REAL"))
#: a running migration renews its lease (heartbeat_at) this often, in seconds
LEASE_HEARTBEAT = 2.0
#: a migration in progress whose lease is older than this (seconds) is stale: its process is gone. Longer
#: than the database's busy timeout, which a renewal may wait out; on the migration's own host a dead pid
#: makes it stale at once
LEASE_TTL = 45.0


def this_host() -> str:
    return socket.gethostname()


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host is alive (a zombie is not)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a company's files live: the ``companies`` columns a switch changes."""

    storage_type: str
    storage_connection_id: int | None
    yandex_disk_folder_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"storage_type": self.storage_type, "storage_connection_id": self.storage_connection_id,
                "yandex_disk_folder_id": self.yandex_disk_folder_id}


@dataclass(frozen=True, slots=True)
class Company:
    id: int
    slug: str
    name: str | None
    placement: Placement

    @property
    def storage_type(self) -> str:
        return self.placement.storage_type

    @property
    def storage_connection_id(self) -> int | None:
        return self.placement.storage_connection_id

    @property
    def yandex_disk_folder_id(self) -> str | None:
        return self.placement.yandex_disk_folder_id


@dataclass(frozen=True, slots=True)
class StorageConnection:
    id: int
    name: str
    storage_type: str
    config: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class MigrationRecord:
    id: int
    company_id: int
    source: dict[str, Any]
    target: dict[str, Any]
    state: str
    live: bool
    started_at: float
    finished_at: float | None
    message: str | None
    report: dict[str, Any] | None
    #: the lease of a migration in progress: its process, and when it last said it was alive
    owner_pid: int | None = None
    owner_host: str | None = None
    heartbeat_at: float | None = None

    def is_stale(self, now: float | None = None) -> bool:
        """In progress by the record, but its process is gone: the lease expired, or (same host) the pid is dead."""
        if self.state not in ACTIVE_STATES:
            return False
        if self.owner_pid is not None and self.owner_host == this_host() and not process_alive(self.owner_pid):
            return True
        last = self.heartbeat_at if self.heartbeat_at is not None else self.started_at
        return (time.time() if now is None else now) - last > LEASE_TTL

    def owner(self) -> str:
        """``pid 123 on host``, as messages name the process of a migration."""
        return f"pid {self.owner_pid} on {self.owner_host}" if self.owner_pid is not None else "an unknown process"

    def as_dict(self) -> dict[str, Any]:
        """The record as ``migrate list`` / ``status`` show it: ``state`` is ``stale`` for one whose process is gone
        (``recorded_state`` is then the state it was left in)."""
        stale = self.is_stale()
        out = {"id": self.id, "company_id": self.company_id, "from": self.source, "to": self.target,
               "state": "stale" if stale else self.state, "live": self.live, "started_at": self.started_at,
               "finished_at": self.finished_at, "message": self.message, "report": self.report}
        if stale:
            out["recorded_state"] = self.state
        if self.owner_pid is not None:
            out["lease"] = {"pid": self.owner_pid, "host": self.owner_host, "heartbeat_at": self.heartbeat_at}
        return out


class Registry:
    """The platform database at ``path``. ``Registry.open(path)``; close with :meth:`close` or ``with``."""

    def __init__(self, path: str | Path, *, company_folder: str = DEFAULT_COMPANY_FOLDER) -> None:
        self.path = Path(path)
        self.company_folder = company_folder
        self._company_columns: tuple[str, ...] = ()
        self._db: sqlite3.Connection | None = None
        self._has_config_column = False
        #: the stale migrations the last :meth:`start_migration` took over
        self.taken_over: list[int] = []

    @classmethod
    def open(cls, path: str | Path, *, company_folder: str = DEFAULT_COMPANY_FOLDER) -> Registry:
        """Open (and create the tables of) the platform database at ``path``.

        ``company_folder`` names each company's folder: ``slug`` (the column),
        ``column:NAME`` (another column of ``companies``), or a template of the
        row's columns such as ``company_{id}``. Whatever it is, a company's folder
        is recorded the first time it is named (``vertexflow_company_folders``) and
        kept: a later change of the setting, or of the company's row, never moves
        a company away from its files.
        """
        reg = cls(path, company_folder=company_folder)
        reg._connect()
        return reg

    def _connect(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            # WAL: readers never wait for a writer; processes share the file through short transactions
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA foreign_keys = ON")
            db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the platform database {self.path}: {exc}") from exc
        for table, needed in _REQUIRED.items():
            have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            missing = [c for c in needed if c not in have]
            if missing:
                db.close()
                raise ConfigError(f"platform database {self.path}: table {table} has no column "
                                  f"{', '.join(missing)}")
        self._has_config_column = "config" in {row[1] for row in db.execute("PRAGMA table_info(storage_connections)")}
        self._company_columns = tuple(row[1] for row in db.execute("PRAGMA table_info(companies)"))
        have = {row[1] for row in db.execute("PRAGMA table_info(vertexflow_migrations)")}
        for column, kind in _MIGRATION_LEASE_COLUMNS:  # a table made by an older vertexflow
            if column not in have:
                try:
                    db.execute(f"ALTER TABLE vertexflow_migrations ADD COLUMN {column} {kind}")
                except sqlite3.OperationalError as exc:
                    if "duplicate column" not in str(exc):  # another process added it meanwhile
                        raise ConfigError(f"platform database {self.path}: cannot add "
                                          f"vertexflow_migrations.{column}: {exc}") from exc
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("registry is closed")
        return self._db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: all of it is written, or none."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -- companies ----------------------------------------------------------
    _COMPANY_SELECT = ("SELECT c.*, f.folder AS vertexflow_folder FROM companies c "
                       "LEFT JOIN vertexflow_company_folders f ON f.company_id = c.id")

    def _folder_rule(self) -> tuple[str, str]:
        """("column", NAME) or ("template", TEXT), checked against the table; ConfigError naming the setting."""
        rule = self.company_folder
        if "{" in rule:
            fields = [f for _, f, _, _ in string.Formatter().parse(rule) if f is not None]
            unknown = [f for f in fields if f not in self._company_columns]
            if not fields or unknown:
                raise ConfigError(f"company_folder {rule!r}: " + (f"table companies of {self.path} has no column "
                                  f"{', '.join(unknown)}" if unknown else "a template names at least one column, "
                                  "such as company_{id}"))
            return "template", rule
        column = rule.removeprefix("column:")
        if column not in self._company_columns:
            hint = (" (the platform's table has none: set company_folder in the storage config to a column such "
                    "as column:name, or a template such as company_{id})" if column == "slug" else "")
            raise ConfigError(f"platform database {self.path}: table companies has no column {column}{hint}")
        return "column", column

    def _folder_of(self, row: sqlite3.Row) -> str:
        kind, rule = self._folder_rule()
        try:
            folder = rule.format(**{k: row[k] for k in row.keys()}) if kind == "template" else row[rule]
        except (KeyError, ValueError, IndexError) as exc:
            raise ConfigError(f"company_folder {self.company_folder!r}: {exc}") from None
        folder = "" if folder is None else str(folder)
        if not folder or "/" in folder or folder in (".", ".."):
            raise ConfigError(f"company {row['id']} in {self.path}: its folder {folder!r} (company_folder "
                              f"{self.company_folder!r}) must be a non-empty folder name without '/'")
        return folder

    def _rows(self, where: str = "", args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        db = self.db
        db.row_factory = sqlite3.Row
        try:
            return db.execute(f"{self._COMPANY_SELECT} {where}", args).fetchall()
        finally:
            db.row_factory = None

    def _company(self, row: sqlite3.Row) -> Company:
        folder = row["vertexflow_folder"]
        if folder is None:  # first time named: recorded, so that it never changes under the company's files
            folder = self._folder_of(row)
            try:
                with self.transaction() as db:
                    db.execute("INSERT OR IGNORE INTO vertexflow_company_folders (company_id, folder) VALUES (?, ?)",
                               (row["id"], folder))
                    got = db.execute("SELECT folder FROM vertexflow_company_folders WHERE company_id = ?",
                                     (row["id"],)).fetchone()
            except sqlite3.IntegrityError:
                other = self.db.execute("SELECT company_id FROM vertexflow_company_folders WHERE folder = ?",
                                        (folder,)).fetchone()
                raise ConfigError(f"companies {row['id']} and {other[0] if other else '?'} in {self.path} would "
                                  f"share the folder {folder!r} (company_folder {self.company_folder!r})") from None
            folder = got[0]
        elif self.company_folder == DEFAULT_COMPANY_FOLDER and "slug" in row.keys() and row["slug"] != folder:
            log.warning("company slug changed; its files stay in the folder it had", company=row["id"],
                        slug=row["slug"], folder=folder)
        keys = row.keys()
        return Company(id=row["id"], slug=folder, name=row["name"] if "name" in keys else None,
                       placement=Placement(row["storage_type"] or "default", row["storage_connection_id"],
                                           row["yandex_disk_folder_id"]))

    def add_company(self, slug: str, *, name: str | None = None, storage_type: str = "default",
                    storage_connection_id: int | None = None, yandex_disk_folder_id: str | None = None) -> Company:
        """Add a company; ``slug`` is its slug (a table without one takes it as the name when none is given)."""
        if not slug or "/" in slug or slug in (".", ".."):
            raise ConfigError(f"company slug {slug!r} must be a non-empty folder name without '/'")
        values: dict[str, Any] = {"storage_type": storage_type, "storage_connection_id": storage_connection_id,
                                  "yandex_disk_folder_id": yandex_disk_folder_id}
        if "slug" in self._company_columns:
            values["slug"] = slug
        if "name" in self._company_columns:
            values["name"] = name if name is not None or "slug" in self._company_columns else slug
        try:
            with self.transaction() as db:
                cur = db.execute(f"INSERT INTO companies ({', '.join(values)}) VALUES "
                                 f"({', '.join('?' for _ in values)})", tuple(values.values()))
        except sqlite3.IntegrityError as exc:
            raise ConfigError(f"cannot add company {slug!r}: {exc}") from None
        return self.company(int(cur.lastrowid or 0))

    def company(self, ref: int | str) -> Company:
        """A company by id, or by its folder (its slug); :class:`ConfigError` if there is none."""
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            rows = self._rows("WHERE c.id = ?", (int(ref),))
        else:
            rows = self._rows("WHERE f.folder = ?", (ref,))
            if not rows and "slug" in self._company_columns:
                rows = self._rows("WHERE c.slug = ?", (ref,))
            if not rows:  # companies never named yet: name them all once (each is recorded)
                rows = [r for r in self._rows("WHERE f.folder IS NULL") if self._company(r).slug == ref]
                if rows:
                    rows = self._rows("WHERE f.folder = ?", (ref,))
        if not rows:
            raise ConfigError(f"no company {ref!r} in {self.path}")
        return self._company(rows[0])

    def companies(self) -> list[Company]:
        return [self._company(r) for r in self._rows("ORDER BY c.id")]

    def set_placement(self, company_id: int, placement: Placement, *, migration_id: int | None = None,
                      state: str | None = None, message: str | None = None) -> None:
        """Switch a company's storage (and, in the same transaction, its migration's state).

        A switch (``state="switched"``) of a migration that is no longer in
        progress (another run took it over, or it was abandoned) raises
        :class:`MigrationFailed` and changes nothing.
        """
        with self.transaction() as db:
            if migration_id is not None and state == "switched":
                row = db.execute("SELECT state, message FROM vertexflow_migrations WHERE id = ?",
                                 (migration_id,)).fetchone()
                if row is None or row[0] not in ACTIVE_STATES:
                    raise MigrationFailed(f"migration {migration_id} is no longer in progress "
                                          f"({row[0] if row else 'gone'}: {row[1] if row else ''}); not switched",
                                          migration_id=migration_id)
            cur = db.execute("UPDATE companies SET storage_type = ?, storage_connection_id = ?, "
                             "yandex_disk_folder_id = ? WHERE id = ?",
                             (placement.storage_type, placement.storage_connection_id,
                              placement.yandex_disk_folder_id, company_id))
            if cur.rowcount != 1:
                raise ConfigError(f"no company {company_id} in {self.path}")
            if migration_id is not None and state is not None:
                db.execute("UPDATE vertexflow_migrations SET state = ?, finished_at = ?, message = ? WHERE id = ?",
                           (state, time.time(), message, migration_id))
                db.execute("DELETE FROM vertexflow_migration_dirty WHERE migration_id = ?", (migration_id,))
            # a new routing generation, no live migration: every process routes to the new placement
            # (this also lifts a live migration's write fence)
            db.execute("INSERT INTO vertexflow_routing (company_id, generation) VALUES (?, 1) "
                       "ON CONFLICT (company_id) DO UPDATE SET generation = generation + 1, migration_id = NULL, "
                       "state = NULL, target_json = NULL", (company_id,))

    # -- connections --------------------------------------------------------
    def _connection(self, row: tuple[Any, ...]) -> StorageConnection:
        config = json.loads(row[3]) if len(row) > 3 and row[3] else None
        return StorageConnection(id=row[0], name=row[1], storage_type=row[2], config=config)

    def _conn_cols(self) -> str:
        return "id, name, storage_type" + (", config" if self._has_config_column else "")

    def add_connection(self, name: str, storage_type: str, config: dict[str, Any] | None = None) -> StorageConnection:
        if config is not None and not self._has_config_column:
            raise ConfigError(f"platform database {self.path}: storage_connections has no config column; "
                              f"put connection {name!r} in the storage config instead")
        try:
            with self.transaction() as db:
                if self._has_config_column:
                    cur = db.execute("INSERT INTO storage_connections (name, storage_type, config) VALUES (?, ?, ?)",
                                     (name, storage_type, json.dumps(config) if config is not None else None))
                else:
                    cur = db.execute("INSERT INTO storage_connections (name, storage_type) VALUES (?, ?)",
                                     (name, storage_type))
        except sqlite3.IntegrityError as exc:
            raise ConfigError(f"cannot add storage connection {name!r}: {exc}") from None
        return self.connection(int(cur.lastrowid or 0))

    def connection(self, ref: int | str) -> StorageConnection:
        cols = self._conn_cols()
        if isinstance(ref, int) or ref.isdigit():
            row = self.db.execute(f"SELECT {cols} FROM storage_connections WHERE id = ?", (int(ref),)).fetchone()
        else:
            row = self.db.execute(f"SELECT {cols} FROM storage_connections WHERE name = ?", (ref,)).fetchone()
        if row is None:
            raise ConfigError(f"no storage connection {ref!r} in {self.path}")
        return self._connection(row)

    def find_connection(self, name: str) -> StorageConnection | None:
        try:
            return self.connection(name)
        except ConfigError:
            return None

    def connections(self) -> list[StorageConnection]:
        return [self._connection(r) for r in
                self.db.execute(f"SELECT {self._conn_cols()} FROM storage_connections ORDER BY id")]

    # -- migrations ---------------------------------------------------------
    _MIG_COLS = ("id, company_id, from_json, to_json, state, live, started_at, finished_at, message, report, "
                 "owner_pid, owner_host, heartbeat_at")

    def _migration(self, r: tuple[Any, ...]) -> MigrationRecord:
        return MigrationRecord(id=r[0], company_id=r[1], source=json.loads(r[2]), target=json.loads(r[3]),
                               state=r[4], live=bool(r[5]), started_at=r[6], finished_at=r[7], message=r[8],
                               report=json.loads(r[9]) if r[9] else None, owner_pid=r[10], owner_host=r[11],
                               heartbeat_at=r[12])

    def start_migration(self, company_id: int, source: dict[str, Any], target: dict[str, Any], *,
                        live: bool) -> MigrationRecord:
        """A new migration record in ``planned``, its lease held by this process.

        A migration of the company still in progress refuses it, unless it is
        stale (:meth:`MigrationRecord.is_stale`): then, in the same
        transaction, the stale one is marked failed and its live state (dual
        writes, write fence, dirty keys) is cleared, and the new record's
        ``taken_over`` names it (the caller waits for writes still in flight
        under the old route before it copies).
        """
        with self.transaction() as db:
            # the id AUTOINCREMENT would give (never one used before), known before the insert for the messages
            new_id = 1 + int(db.execute(
                "SELECT MAX(COALESCE((SELECT MAX(id) FROM vertexflow_migrations), 0), COALESCE((SELECT seq FROM "
                "sqlite_sequence WHERE name = 'vertexflow_migrations'), 0))").fetchone()[0])
            busy = self._take_over(db, company_id, f"migration {new_id}")
            now = time.time()
            db.execute("INSERT INTO vertexflow_migrations (id, company_id, from_json, to_json, state, live, "
                       "started_at, owner_pid, owner_host, heartbeat_at) VALUES (?, ?, ?, ?, 'planned', ?, ?, ?, ?, ?)",
                       (new_id, company_id, json.dumps(source), json.dumps(target), int(live), now, os.getpid(),
                        this_host(), now))
        self.taken_over = [r.id for r in busy]
        return self.migration(new_id)

    def begin_rollback(self, company_id: int) -> MigrationRecord:
        """Put the company's last switched migration back in progress (``planned``), its lease held here.

        Stale migrations of the company are taken over first (see
        :meth:`start_migration`); a live one refuses. The rollback ends with
        :meth:`set_placement` (``rolled_back``) or, if it fails,
        :meth:`end_rollback` (``switched`` again).
        """
        with self.transaction() as db:
            busy = self._take_over(db, company_id, "a rollback")
            row = db.execute("SELECT id FROM vertexflow_migrations WHERE company_id = ? AND state = 'switched' "
                             "ORDER BY id DESC LIMIT 1", (company_id,)).fetchone()
            if row is None:
                raise ConfigError(f"company {self._company_name(db, company_id)} has no switched migration to roll "
                                  f"back in {self.path}")
            db.execute("UPDATE vertexflow_migrations SET state = 'planned', owner_pid = ?, owner_host = ?, "
                       "heartbeat_at = ? WHERE id = ?", (os.getpid(), this_host(), time.time(), row[0]))
        self.taken_over = [r.id for r in busy]
        return self.migration(int(row[0]))

    def _take_over(self, db: sqlite3.Connection, company_id: int, new_what: str) -> list[MigrationRecord]:
        """End the company's stale migrations (inside the caller's transaction); refuse if one is alive."""
        busy = [self._migration(r) for r in db.execute(
            f"SELECT {self._MIG_COLS} FROM vertexflow_migrations WHERE company_id = ? AND state IN "
            f"({', '.join(repr(s) for s in ACTIVE_STATES)})", (company_id,))]
        for rec in busy:
            if not rec.is_stale():
                raise ConfigError(f"company {self._company_name(db, company_id)} already has migration {rec.id} "
                                  f"in progress in {self.path} ({rec.state}, {rec.owner()}, which is alive; let it "
                                  f"finish, or end it with `vertexflow migrate abandon {rec.id}`)")
        for rec in busy:
            self._end_stale(db, rec, f"stale ({rec.state}; {rec.owner()} was gone): taken over by {new_what}, "
                                     "its live state rolled back")
        return busy

    @staticmethod
    def _company_name(db: sqlite3.Connection, company_id: int) -> str:
        """``'acme' (id 3)``, as messages name a company."""
        row = db.execute("SELECT folder FROM vertexflow_company_folders WHERE company_id = ?",
                         (company_id,)).fetchone()
        return f"{row[0]!r} (id {company_id})" if row is not None else str(company_id)

    def _end_stale(self, db: sqlite3.Connection, rec: MigrationRecord, message: str) -> None:
        """End ``rec`` and clear its live state (inside the caller's transaction).

        A forward migration ends ``failed``. A rollback in progress (the
        company is still where the record's switch put it) ends ``switched``
        again: the company stays there and can be rolled back later.
        """
        row = db.execute("SELECT storage_type, storage_connection_id, yandex_disk_folder_id FROM companies "
                         "WHERE id = ?", (rec.company_id,)).fetchone()
        t = rec.target
        rolling_back = row is not None and (row[0], row[1], row[2]) == (
            t.get("storage_type"), t.get("storage_connection_id"), t.get("yandex_disk_folder_id"))
        if rolling_back:
            db.execute("UPDATE vertexflow_migrations SET state = 'switched', message = ? WHERE id = ?",
                       (f"rollback {message}; the company stays on {t.get('name')}", rec.id))
        else:
            db.execute("UPDATE vertexflow_migrations SET state = 'failed', finished_at = ?, message = ? WHERE id = ?",
                       (time.time(), message, rec.id))
        # writes go to the old placement only again (a new routing generation; lifts a write fence)
        db.execute("UPDATE vertexflow_routing SET generation = generation + 1, migration_id = NULL, state = NULL, "
                   "target_json = NULL WHERE company_id = ? AND migration_id = ?", (rec.company_id, rec.id))
        db.execute("DELETE FROM vertexflow_migration_dirty WHERE migration_id = ?", (rec.id,))

    def abandon_migration(self, migration_id: int, message: str) -> MigrationRecord:
        """End a migration in progress by hand (``migrate abandon``): as a takeover ends a stale one.

        A forward migration ends ``failed``, a rollback ``switched`` again; its
        live state (dual writes, write fence, dirty keys) is cleared in the
        same transaction. Returns the record as it was.
        """
        with self.transaction() as db:
            row = db.execute(f"SELECT {self._MIG_COLS} FROM vertexflow_migrations WHERE id = ?",
                             (migration_id,)).fetchone()
            if row is None:
                raise ConfigError(f"no migration {migration_id} in {self.path}")
            rec = self._migration(row)
            if rec.state not in ACTIVE_STATES:
                raise ConfigError(f"migration {migration_id} is {rec.state}, not in progress")
            self._end_stale(db, rec, message)
        return rec

    def end_rollback(self, migration_id: int, message: str | None) -> None:
        """A rollback that did not happen: the record is ``switched`` again (its finish time kept)."""
        with self.transaction() as db:
            db.execute("UPDATE vertexflow_migrations SET state = 'switched', message = COALESCE(?, message) "
                       f"WHERE id = ? AND state IN ({', '.join(repr(s) for s in ACTIVE_STATES)})",
                       (message, migration_id))

    def heartbeat(self, migration_id: int, pid: int, host: str) -> bool:
        """Renew the lease of a migration in progress held by ``pid`` on ``host``; False if it is no longer held."""
        with self.transaction() as db:
            cur = db.execute("UPDATE vertexflow_migrations SET heartbeat_at = ? WHERE id = ? AND owner_pid = ? AND "
                             f"owner_host = ? AND state IN ({', '.join(repr(s) for s in ACTIVE_STATES)})",
                             (time.time(), migration_id, pid, host))
        return cur.rowcount == 1

    def update_migration(self, migration_id: int, *, state: str, message: str | None = None,
                         report: dict[str, Any] | None = None, final: bool = False) -> None:
        """Change a record's state; a record already ended in another state (taken over, abandoned) is left alone."""
        assert state in MIGRATION_STATES, state
        with self.transaction() as db:
            db.execute("UPDATE vertexflow_migrations SET state = ?, message = COALESCE(?, message), "
                       "report = COALESCE(?, report), finished_at = ? WHERE id = ? AND "
                       f"(state IN ({', '.join(repr(s) for s in ACTIVE_STATES)}) OR state = ?)",
                       (state, message, json.dumps(report) if report is not None else None,
                        time.time() if final else None, migration_id, state))

    def record_cleanup(self, migration_id: int, cleanup: dict[str, Any]) -> None:
        """Add what a cleanup deleted to an ended migration's report (``report["cleanup"]``, the last one)."""
        with self.transaction() as db:
            row = db.execute("SELECT report FROM vertexflow_migrations WHERE id = ?", (migration_id,)).fetchone()
            report = json.loads(row[0]) if row and row[0] else {}
            report["cleanup"] = cleanup
            db.execute("UPDATE vertexflow_migrations SET report = ? WHERE id = ?", (json.dumps(report), migration_id))

    def migration(self, migration_id: int) -> MigrationRecord:
        row = self.db.execute(f"SELECT {self._MIG_COLS} FROM vertexflow_migrations WHERE id = ?",
                              (migration_id,)).fetchone()
        if row is None:
            raise ConfigError(f"no migration {migration_id} in {self.path}")
        return self._migration(row)

    def migrations(self, company_id: int | None = None) -> list[MigrationRecord]:
        sql = f"SELECT {self._MIG_COLS} FROM vertexflow_migrations"
        args: tuple[Any, ...] = ()
        if company_id is not None:
            sql, args = sql + " WHERE company_id = ?", (company_id,)
        return [self._migration(r) for r in self.db.execute(sql + " ORDER BY id", args)]

    def last_switch(self, company_id: int) -> MigrationRecord | None:
        row = self.db.execute(f"SELECT {self._MIG_COLS} FROM vertexflow_migrations WHERE company_id = ? "
                              "AND state = 'switched' ORDER BY id DESC LIMIT 1", (company_id,)).fetchone()
        return self._migration(row) if row else None
