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
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from ..errors import ConfigError

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
    report TEXT
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
    "companies": ("id", "slug", "storage_type", "storage_connection_id", "yandex_disk_folder_id"),
    "storage_connections": ("id", "name", "storage_type"),
}
#: migration states; "switched" and "rolled_back" are final, "failed" left the company where it was
MIGRATION_STATES = ("planned", "copying", "closing", "verifying", "switched", "failed", "rolled_back")
#: states of a migration in progress (one per company at a time)
ACTIVE_STATES = ("planned", "copying", "closing", "verifying")


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

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "company_id": self.company_id, "from": self.source, "to": self.target,
                "state": self.state, "live": self.live, "started_at": self.started_at,
                "finished_at": self.finished_at, "message": self.message, "report": self.report}


class Registry:
    """The platform database at ``path``. ``Registry.open(path)``; close with :meth:`close` or ``with``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._has_config_column = False

    @classmethod
    def open(cls, path: str | Path) -> Registry:
        reg = cls(path)
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
    _COMPANY_COLS = "id, slug, name, storage_type, storage_connection_id, yandex_disk_folder_id"

    def _company(self, row: tuple[Any, ...]) -> Company:
        return Company(id=row[0], slug=row[1], name=row[2],
                       placement=Placement(row[3] or "default", row[4], row[5]))

    def add_company(self, slug: str, *, name: str | None = None, storage_type: str = "default",
                    storage_connection_id: int | None = None, yandex_disk_folder_id: str | None = None) -> Company:
        if not slug or "/" in slug or slug in (".", ".."):
            raise ConfigError(f"company slug {slug!r} must be a non-empty folder name without '/'")
        try:
            with self.transaction() as db:
                cur = db.execute("INSERT INTO companies (slug, name, storage_type, storage_connection_id, "
                                 "yandex_disk_folder_id) VALUES (?, ?, ?, ?, ?)",
                                 (slug, name, storage_type, storage_connection_id, yandex_disk_folder_id))
        except sqlite3.IntegrityError as exc:
            raise ConfigError(f"cannot add company {slug!r}: {exc}") from None
        return self.company(int(cur.lastrowid or 0))

    def company(self, ref: int | str) -> Company:
        """A company by id, or by slug; :class:`ConfigError` if there is none."""
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            row = self.db.execute(f"SELECT {self._COMPANY_COLS} FROM companies WHERE id = ?", (int(ref),)).fetchone()
        else:
            row = self.db.execute(f"SELECT {self._COMPANY_COLS} FROM companies WHERE slug = ?", (ref,)).fetchone()
        if row is None:
            raise ConfigError(f"no company {ref!r} in {self.path}")
        return self._company(row)

    def companies(self) -> list[Company]:
        return [self._company(r) for r in self.db.execute(f"SELECT {self._COMPANY_COLS} FROM companies ORDER BY id")]

    def set_placement(self, company_id: int, placement: Placement, *, migration_id: int | None = None,
                      state: str | None = None, message: str | None = None) -> None:
        """Switch a company's storage (and, in the same transaction, its migration's state)."""
        with self.transaction() as db:
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
    _MIG_COLS = "id, company_id, from_json, to_json, state, live, started_at, finished_at, message, report"

    def _migration(self, r: tuple[Any, ...]) -> MigrationRecord:
        return MigrationRecord(id=r[0], company_id=r[1], source=json.loads(r[2]), target=json.loads(r[3]),
                               state=r[4], live=bool(r[5]), started_at=r[6], finished_at=r[7], message=r[8],
                               report=json.loads(r[9]) if r[9] else None)

    def start_migration(self, company_id: int, source: dict[str, Any], target: dict[str, Any], *,
                        live: bool) -> MigrationRecord:
        with self.transaction() as db:
            busy = db.execute("SELECT id FROM vertexflow_migrations WHERE company_id = ? AND state IN "
                              f"({', '.join(repr(s) for s in ACTIVE_STATES)})", (company_id,)).fetchone()
            if busy is not None:
                raise ConfigError(f"company {company_id} already has migration {busy[0]} in progress "
                                  "(finish it, or mark it failed with `vertexflow migrate abandon`)")
            cur = db.execute("INSERT INTO vertexflow_migrations (company_id, from_json, to_json, state, live, "
                             "started_at) VALUES (?, ?, ?, 'planned', ?, ?)",
                             (company_id, json.dumps(source), json.dumps(target), int(live), time.time()))
        return self.migration(int(cur.lastrowid or 0))

    def update_migration(self, migration_id: int, *, state: str, message: str | None = None,
                         report: dict[str, Any] | None = None, final: bool = False) -> None:
        assert state in MIGRATION_STATES, state
        with self.transaction() as db:
            db.execute("UPDATE vertexflow_migrations SET state = ?, message = COALESCE(?, message), "
                       "report = COALESCE(?, report), finished_at = ? WHERE id = ?",
                       (state, message, json.dumps(report) if report is not None else None,
                        time.time() if final else None, migration_id))

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
