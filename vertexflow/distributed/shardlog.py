"""The driver's record of a cluster job's shards, in the journal database.

The job itself is an ordinary row of the journal's ``jobs`` table (its
fingerprint says it ran as shards, so it is a job of its own); this module
adds one table beside it::

    cluster_shards (job_id, shard, start_at, end_before, objects, bytes,
                    state, attempts, stats, message, updated)

``state`` is ``planned`` -> ``running`` -> ``done``, ``failed`` (a shard
error, or some object in it failed) or ``interrupted`` (the job was stopped). A rerun
of the same command resumes the job, reuses its shard plan (the bounds
cover the whole key space, so objects added since still belong to exactly
one shard) and submits only the shards that are not ``done``.

It opens its own connection to the journal file (SQLite in WAL mode lets it
sit beside the journal's), and deleting the job (``jobs forget``) deletes
its shards through the foreign key.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from .shards import Shard

SCHEMA = """
CREATE TABLE IF NOT EXISTS cluster_shards (
    job_id     INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    shard      INTEGER NOT NULL,
    start_at   TEXT,                      -- NULL: from the first key
    end_before TEXT,                      -- NULL: to the last key
    objects    INTEGER NOT NULL,          -- as planned
    bytes      INTEGER NOT NULL,
    state      TEXT NOT NULL,             -- planned | running | done | failed | interrupted
    attempts   INTEGER NOT NULL DEFAULT 0,
    stats      TEXT,                      -- JSON summary of the last finished attempt
    message    TEXT,                      -- why it failed
    updated    REAL NOT NULL,
    PRIMARY KEY (job_id, shard)
);
"""


class ShardLog:
    """Synchronous access for the driver (one thread)."""

    def __init__(self, path: str | Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load(self, job_id: int) -> list[tuple[Shard, str]]:
        """The job's shards and their states, by index (empty if none were planned)."""
        rows = self.db.execute("SELECT shard, start_at, end_before, objects, bytes, state FROM cluster_shards "
                               "WHERE job_id = ? ORDER BY shard", (job_id,)).fetchall()
        return [(Shard(i, a, b, n, size), state) for i, a, b, n, size, state in rows]

    def save_plan(self, job_id: int, shards: list[Shard]) -> None:
        now = time.time()
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM cluster_shards WHERE job_id = ?", (job_id,))
            self.db.executemany(
                "INSERT INTO cluster_shards (job_id, shard, start_at, end_before, objects, bytes, state, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, 'planned', ?)",
                [(job_id, s.index, s.start_at, s.end_before, s.objects, s.bytes, now) for s in shards])

    def mark(self, job_id: int, shard: int, state: str, *, stats: Mapping[str, Any] | None = None,
             message: str | None = None, attempt: bool = False) -> None:
        self.db.execute(
            "UPDATE cluster_shards SET state = ?, updated = ?, attempts = attempts + ?, "
            "stats = COALESCE(?, stats), message = ? WHERE job_id = ? AND shard = ?",
            (state, time.time(), 1 if attempt else 0, json.dumps(dict(stats), default=str) if stats else None,
             message, job_id, shard))

    def stats(self, job_id: int, shard: int) -> dict[str, Any] | None:
        row = self.db.execute("SELECT stats FROM cluster_shards WHERE job_id = ? AND shard = ?",
                              (job_id, shard)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def states(self, job_id: int) -> dict[str, int]:
        return dict(self.db.execute("SELECT state, COUNT(*) FROM cluster_shards WHERE job_id = ? GROUP BY state",
                                    (job_id,)).fetchall())
