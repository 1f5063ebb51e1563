"""The per-object report of each daemon run (``--report``'s JSON lines), kept beside the journal and served.

Where: files beside the daemon's journal, ``<journal>.reports/<job>/<run>.jsonl``
(``<job>`` the job's name with anything but letters, digits, ``-``, ``_``
and ``.`` written as ``%XX``; ``<run>`` the run's id, the milliseconds of
its start). Files, not rows of the journal: a report is as long as the run
had objects (about 200 bytes each), written as the run goes by the same
streaming writer as ``copy --report`` (flat memory), served by streaming
the file, and dropping one is an unlink, where rows of that size would
bloat the database and its WAL.

Bounded: a job keeps the reports of its newest ``history`` runs (as the
journal keeps their results) and at most :data:`BYTES_KEPT` of them (its
newest report always). A run that wrote no report (a kind that writes none:
backup, migrate) has none. Reports of a job removed from the config stay
until a job of that name runs again.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: per job: a year of daily runs of a 100,000-object sync (~20 MB each) would not fit; 20 of them do
BYTES_KEPT = 512 * 1024 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
SUFFIX = ".jsonl"


def run_id(started: float) -> int:
    """A run's id: the milliseconds of its start (wall clock); a job's runs never start in the same one."""
    return int(started * 1000)


class RunReports:
    """The reports of every job's runs under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def beside(cls, journal_path: Path) -> RunReports:
        return cls(journal_path.with_name(journal_path.name + ".reports"))

    def folder(self, job: str) -> Path:
        name = _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), job)
        return self.root / (name if name not in (".", "..") else name.replace(".", "%2E"))

    def path(self, job: str, run: int) -> Path:
        return self.folder(job) / f"{run}{SUFFIX}"

    def start(self, job: str, run: int) -> str:
        """The path run ``run`` of ``job`` writes its report to (its folder made)."""
        folder = self.folder(job)
        folder.mkdir(parents=True, exist_ok=True)
        return str(self.path(job, run))

    def find(self, job: str, run: int) -> Path | None:
        """The report of run ``run`` of ``job``, if kept."""
        path = self.path(job, run)
        return path if path.is_file() else None

    def runs(self, job: str) -> list[int]:
        """The runs of ``job`` with a report kept, oldest first."""
        try:
            names = os.listdir(self.folder(job))
        except FileNotFoundError:
            return []
        return sorted(int(n[:-len(SUFFIX)]) for n in names if n.endswith(SUFFIX) and n[:-len(SUFFIX)].isdigit())

    def prune(self, job: str, keep: int, max_bytes: int = BYTES_KEPT) -> list[int]:
        """Delete all but the newest ``keep`` reports of ``job`` and those beyond ``max_bytes`` together
        (the newest stays whatever its size); the runs whose reports were deleted."""
        kept_bytes, dropped = 0, []
        for i, run in enumerate(reversed(self.runs(job))):
            path = self.path(job, run)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            kept_bytes += size
            if i >= keep or (i > 0 and kept_bytes > max_bytes):
                path.unlink(missing_ok=True)
                dropped.append(run)
        return dropped
