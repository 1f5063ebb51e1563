"""Backups at a destination: ``backup list`` and ``backup prune``.

A backup is a top-level folder whose name is a backup id. It is complete
when its metadata.json exists and checks out (the file is written last);
anything else is incomplete: interrupted, or damaged.

Prune keeps the newest N complete backups of each type and deletes the
rest whole. A deletion removes metadata.json first, so a prune that is
itself interrupted leaves an incomplete backup (removed by the next prune),
never a complete-looking one with parts missing. Incomplete backups are
deleted once nothing in them was written for ``grace`` seconds, so a backup
still being written is left alone.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ...backends.base import Backend
from ...errors import BackupError
from .metadata import METADATA, Metadata, parse_id


@dataclass(slots=True)
class Entry:
    id: str
    type: str
    created: datetime
    seq: int
    keys: list[str] = field(default_factory=list)
    size: int = 0
    newest: datetime | None = None
    metadata: Metadata | None = None
    problem: str | None = None  # why an entry with metadata.json is not complete

    @property
    def complete(self) -> bool:
        return self.metadata is not None

    def as_dict(self) -> dict[str, object]:
        m = self.metadata
        return {"id": self.id, "type": self.type, "created": self.created.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "complete": self.complete, "objects": len(self.keys), "bytes": self.size,
                "files": m.storage.files if m and m.storage else None, "problem": self.problem}


async def scan(dest: Backend) -> list[Entry]:
    """Every backup folder at ``dest``, oldest first; metadata read (not verified) for the complete ones."""
    from .reading import load_metadata

    entries: dict[str, Entry] = {}
    async for info in dest.list():
        top, sep, _ = info.key.partition("/")
        parsed = parse_id(top) if sep else None
        if parsed is None:
            continue
        e = entries.get(top)
        if e is None:
            e = entries[top] = Entry(top, parsed[0], parsed[1], parsed[2])
        e.keys.append(info.key)
        e.size += info.size or 0
        if info.mtime and (e.newest is None or info.mtime > e.newest):
            e.newest = info.mtime
    for e in entries.values():
        if f"{e.id}/{METADATA}" in e.keys:
            try:
                e.metadata = await load_metadata(dest, e.id)
            except BackupError as exc:
                e.problem = str(exc)
    return sorted(entries.values(), key=lambda e: (e.created, e.seq))


def plan_prune(entries: list[Entry], keep: int, *, grace: float, now: datetime | None = None) -> list[Entry]:
    """The entries prune deletes: complete beyond the newest ``keep`` of their type, and stale incomplete ones."""
    now = now or datetime.now(UTC)
    by_type: dict[str, list[Entry]] = defaultdict(list)
    doomed: list[Entry] = []
    for e in entries:
        if e.complete:
            by_type[e.type].append(e)
        else:
            last = e.newest or e.created
            if (now - last).total_seconds() >= grace:
                doomed.append(e)
    for group in by_type.values():
        group.sort(key=lambda e: (e.created, e.seq))
        doomed.extend(group[:max(len(group) - keep, 0)])
    return sorted(doomed, key=lambda e: (e.created, e.seq))


async def delete_backup(dest: Backend, entry: Entry) -> None:
    """Delete a whole backup: metadata.json first (it stops being complete), then everything else."""
    meta_key = f"{entry.id}/{METADATA}"
    if meta_key in entry.keys:
        await dest.delete(meta_key)
    for key in entry.keys:
        if key != meta_key:
            await dest.delete(key)
