"""Live migration state shared by every process on the platform database.

Tables (created by :class:`~vertexflow.tenancy.registry.Registry`, which holds their schema)::

    vertexflow_routing(company_id PK, generation, migration_id, state, target_json)
    vertexflow_inflight(id PK, company_id, generation, pid, started_at)
    vertexflow_migration_dirty(migration_id, content_type, key, generation, PK(migration_id, content_type, key))

``vertexflow_routing`` is a company's routing generation: every change of
where its requests go (a live migration's state change, a switch, a
rollback) bumps it in the same transaction, so a process notices the change
by comparing one integer. ``state`` is NULL (no live migration), ``copying``
(writes are dual; reads go where ``reads_current`` says) or ``closing`` (the write
fence: writers wait, reads go on).

Every write of a company registers itself in ``vertexflow_inflight`` in the
transaction that reads the route it will use (:meth:`LiveState.begin_write`)
and unregisters when done. A state change at generation ``g`` is therefore
complete once no live process has a write registered under a generation
below ``g`` (:meth:`LiveState.writes_before`): the migration waits for that
before it copies (none -> copying) and before its last reconcile (copying ->
closing). A row of a dead process (same host: SQLite needs a local file) is
ignored and removed.

A dual write or delete marks its key dirty when it registers (before its
first request) and again when it ends; each mark bumps the key's
generation. The reconcile removes a key only if its generation is still
the one it read before copying (:meth:`LiveState.clean`), so a key written
during its reconcile stays dirty. A write's end mark is made only while its
migration is still the company's live one: a write that ends after the
migration was abandoned, failed or taken over leaves no dirty row behind.

A migration whose process is gone (its lease in ``vertexflow_migrations``
expired, or its pid is dead on this host: :meth:`MigrationRecord.is_stale`)
is stale; the next run of the company takes it over, clearing its live state
here in the transaction that starts the new record
(:meth:`Registry.start_migration`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from ..errors import MigrationFailed
from .registry import ACTIVE_STATES, Placement, Registry, process_alive

LIVE_STATES = ("copying", "closing")


@dataclass(frozen=True, slots=True)
class Route:
    """Where a company's requests go at one routing generation."""

    company_id: int
    generation: int
    placement: Placement
    migration_id: int | None = None
    state: str | None = None  # None, "copying" or "closing"
    target: Placement | None = None
    #: reads go to the current placement, not the target first (a rollback: the target holds stale copies)
    reads_current: bool = False

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    def adapters_key(self) -> tuple[Any, ...]:
        """What the adapters depend on (copying -> closing keeps them)."""
        return (self.placement, self.migration_id if self.live else None, self.target if self.live else None,
                self.reads_current if self.live else None)


def _placement(d: dict[str, Any]) -> Placement:
    return Placement(d["storage_type"], d["storage_connection_id"], d.get("yandex_disk_folder_id"))


class LiveState:
    """The SQL of live migrations over a :class:`Registry` (each call one short transaction)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @property
    def db(self) -> Any:
        return self.registry.db

    # -- routes -------------------------------------------------------------
    def _route(self, db: Any, company_id: int) -> Route:
        row = db.execute(
            "SELECT c.storage_type, c.storage_connection_id, c.yandex_disk_folder_id, r.generation, "
            "r.migration_id, r.state, r.target_json FROM companies c LEFT JOIN vertexflow_routing r "
            "ON r.company_id = c.id WHERE c.id = ?", (company_id,)).fetchone()
        if row is None:
            self.registry.company(company_id)  # raises the usual "no company" error
        placement = Placement(row[0] or "default", row[1], row[2])
        raw = json.loads(row[6]) if row[6] else None
        target = _placement(raw) if raw else None
        return Route(company_id, row[3] or 0, placement, row[4], row[5], target,
                     bool(raw and raw.get("reads_current")))

    def route(self, company_id: int) -> Route:
        """The company's current route (one read; never waits for writers)."""
        return self._route(self.db, company_id)

    def begin_write(self, company_id: int, content_type: str, key: str) -> tuple[Route, int | None]:
        """Register a write of ``key``: (route, in-flight id), or (route, None) while the fence is up.

        Under ``copying`` the key is marked dirty in the same transaction.
        """
        with self.registry.transaction() as db:
            route = self._route(db, company_id)
            if route.state == "closing":
                return route, None
            cur = db.execute("INSERT INTO vertexflow_inflight (company_id, generation, pid, started_at) "
                             "VALUES (?, ?, ?, ?)", (company_id, route.generation, os.getpid(), time.time()))
            if route.state == "copying":
                self._mark(db, route.migration_id, content_type, key)
            return route, int(cur.lastrowid or 0)

    def end_write(self, inflight_id: int, route: Route, content_type: str, key: str) -> None:
        """Unregister a write; a dual one marks its key dirty again (see the module docstring)."""
        with self.registry.transaction() as db:
            db.execute("DELETE FROM vertexflow_inflight WHERE id = ?", (inflight_id,))
            if route.state == "copying" and self._still_live(db, route):
                self._mark(db, route.migration_id, content_type, key)

    @staticmethod
    def _still_live(db: Any, route: Route) -> bool:
        """Whether ``route``'s live migration is still the company's (not ended, abandoned or taken over since)."""
        row = db.execute("SELECT migration_id, state FROM vertexflow_routing WHERE company_id = ?",
                         (route.company_id,)).fetchone()
        return row is not None and row[0] == route.migration_id and row[1] in LIVE_STATES

    @staticmethod
    def _mark(db: Any, migration_id: int | None, content_type: str, key: str) -> None:
        db.execute("INSERT INTO vertexflow_migration_dirty (migration_id, content_type, key, generation) "
                   "VALUES (?, ?, ?, 1) ON CONFLICT (migration_id, content_type, key) "
                   "DO UPDATE SET generation = generation + 1", (migration_id, content_type, key))

    # -- dirty keys ---------------------------------------------------------
    def is_dirty(self, migration_id: int, content_type: str, key: str) -> bool:
        return self.db.execute("SELECT 1 FROM vertexflow_migration_dirty WHERE migration_id = ? AND "
                               "content_type = ? AND key = ?", (migration_id, content_type, key)).fetchone() is not None

    def dirty(self, migration_id: int, content_type: str, limit: int = 100_000) -> list[tuple[str, int]]:
        """(key, generation) of the dirty keys, oldest first."""
        return list(self.db.execute("SELECT key, generation FROM vertexflow_migration_dirty WHERE migration_id = ? "
                                    "AND content_type = ? ORDER BY rowid LIMIT ?", (migration_id, content_type, limit)))

    def dirty_count(self, migration_id: int) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM vertexflow_migration_dirty WHERE migration_id = ?",
                                   (migration_id,)).fetchone()[0])

    def clean(self, migration_id: int, content_type: str, key: str, generation: int) -> bool:
        """Forget ``key`` if nobody marked it since ``generation`` was read; True if it was forgotten."""
        with self.registry.transaction() as db:
            cur = db.execute("DELETE FROM vertexflow_migration_dirty WHERE migration_id = ? AND content_type = ? "
                             "AND key = ? AND generation = ?", (migration_id, content_type, key, generation))
        return cur.rowcount == 1

    # -- the migration's side -----------------------------------------------
    def _bump(self, db: Any, company_id: int, migration_id: int | None, state: str | None,
              target: dict[str, Any] | None) -> int:
        db.execute("INSERT INTO vertexflow_routing (company_id, generation, migration_id, state, target_json) "
                   "VALUES (?, 1, ?, ?, ?) ON CONFLICT (company_id) DO UPDATE SET generation = generation + 1, "
                   "migration_id = excluded.migration_id, state = excluded.state, target_json = excluded.target_json",
                   (company_id, migration_id, state, json.dumps(target) if target is not None else None))
        return int(db.execute("SELECT generation FROM vertexflow_routing WHERE company_id = ?",
                              (company_id,)).fetchone()[0])

    def set_state(self, company_id: int, migration_id: int, state: str, target: Placement, *,
                  reads_current: bool = False) -> int:
        """Enter ``copying`` or ``closing``; the new generation (the record's state follows).

        ``reads_current``: dual-write adapters read the current placement (a
        rollback, whose target holds the files as they were at the switch).
        """
        assert state in LIVE_STATES, state
        with self.registry.transaction() as db:
            row = db.execute("SELECT state, message FROM vertexflow_migrations WHERE id = ?",
                             (migration_id,)).fetchone()
            if row is None or row[0] not in ACTIVE_STATES:  # taken over or abandoned meanwhile
                raise MigrationFailed(f"migration {migration_id} is no longer in progress "
                                      f"({row[0] if row else 'gone'}: {row[1] if row else ''})",
                                      migration_id=migration_id)
            gen = self._bump(db, company_id, migration_id, state,
                             {**target.as_dict(), **({"reads_current": True} if reads_current else {})})
            db.execute("UPDATE vertexflow_migrations SET state = ? WHERE id = ?", (state, migration_id))
        return gen

    def bump(self, company_id: int) -> int:
        """A new generation without a live migration (a switch or a rollback, inside its transaction)."""
        return self._bump(self.db, company_id, None, None, None)

    def clear(self, company_id: int, migration_id: int) -> None:
        """End a live migration without a switch (failure, rollback, abandon): writes go to the old backend."""
        with self.registry.transaction() as db:
            row = db.execute("SELECT migration_id FROM vertexflow_routing WHERE company_id = ?",
                             (company_id,)).fetchone()
            if row is not None and row[0] == migration_id:
                self._bump(db, company_id, None, None, None)
            db.execute("DELETE FROM vertexflow_migration_dirty WHERE migration_id = ?", (migration_id,))

    def writes_before(self, company_id: int, generation: int) -> int:
        """How many writes of live processes registered under a generation below ``generation`` are in flight."""
        rows = list(self.db.execute("SELECT id, pid FROM vertexflow_inflight WHERE company_id = ? AND generation < ?",
                                    (company_id, generation)))
        dead = [r[0] for r in rows if not process_alive(r[1])]
        if dead:
            with self.registry.transaction() as db:
                db.executemany("DELETE FROM vertexflow_inflight WHERE id = ?", [(i,) for i in dead])
        return len(rows) - len(dead)
