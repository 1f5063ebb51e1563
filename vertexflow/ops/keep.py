"""``sync --backup-dir LOCATION``: keep what a sync overwrites or deletes, as rclone's option of that name.

Before a sync overwrites a destination object, or deletes one (``--delete``),
it copies that object to ``LOCATION`` under the same key, with the engine's
checks (every byte's SHA-256 against what ``LOCATION`` stored); only then is
the object overwritten or deleted. An object whose copy failed is neither:
it is a failure of the run (so the run deletes nothing more, as after any
failed transfer). Where rclone moves the object away first, this copies it
and leaves the destination as it was until the new version replaces it, so
an interrupted sync never leaves a key missing.

``LOCATION`` is any location (a folder, a bucket prefix, a remote); it must
overlap neither the source nor the destination (the sync would list its own
backups, or keep the backups of its backups): that is refused before
anything is listed. A later sync with the same ``LOCATION`` overwrites an
older backup of the same key: give each run its own (a dated folder) to keep
every version.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from ..backends.base import Backend
from ..errors import ConfigError
from ..filters import NO_FILTER
from ..locations import Location, parse_location
from ..model import ObjectInfo
from ..pipeline.runner import StopSignal
from ..pipeline.stats import JobStats
from .copy import CopyJob, CopyOptions
from .overlap import check_overlap


def backup_location(spec: Any, config: Any) -> Location:
    """The ``--backup-dir`` of ``spec`` (a :class:`~vertexflow.ops.spec.TransferSpec`), parsed against
    ``config``; ConfigError when it overlaps the source or the destination."""
    assert spec.backup_dir is not None
    backup = parse_location(spec.backup_dir, config)
    for role, where in (("destination", spec.dest), ("source", spec.source)):
        try:
            check_overlap(parse_location(where, config), backup, NO_FILTER, what="--backup-dir")
        except ConfigError:
            raise ConfigError(f"--backup-dir {spec.backup_dir}: it overlaps the {role} {where} (the same place, "
                              f"or one inside the other): the sync would {'list' if role == 'source' else 'keep'} "
                              "its own backups; choose a place outside both, e.g. a sibling folder; "
                              "nothing was done") from None
    return backup


class _Outcomes:
    def __init__(self) -> None:
        self.kept = 0
        self.failures: list[tuple[ObjectInfo, BaseException]] = []

    def done(self, src: ObjectInfo, result: ObjectInfo) -> None:
        self.kept += 1

    def failed(self, src: ObjectInfo, exc: BaseException) -> None:
        self.failures.append((src, exc))


class Keeper:
    """Copies destination objects to the backup location (the job's stats report it as ``backup_dir``)."""

    def __init__(self, dst: Backend, backup: Backend, where: str, options: CopyOptions, stop: StopSignal) -> None:
        self.dst, self.backup, self.where = dst, backup, where
        self.options, self.stop = options, stop
        self.kept = 0
        self.failed = 0
        self.stats = JobStats()

    @classmethod
    @asynccontextmanager
    async def open(cls, spec: Any, dst: Backend, options: CopyOptions, stats: JobStats,
                   stop: StopSignal) -> AsyncIterator[Keeper]:
        """The keeper of ``spec.backup_dir``, its remotes read from ``spec.config_path``."""
        from ..config_file import load_remotes

        location = backup_location(spec, load_remotes(spec.config_path))
        async with location.backend() as backend:
            keeper = cls(dst, backend, location.spec, options, stop)
            stats.reporters["backup_dir"] = keeper
            yield keeper

    async def keep(self, infos: Iterable[ObjectInfo]) -> list[tuple[ObjectInfo, BaseException]]:
        """Copy the destination objects ``infos`` to the backup location; returns those that failed."""
        items = list(infos)
        if not items:
            return []

        async def listing() -> AsyncIterator[ObjectInfo]:
            for info in items:
                yield info

        outcomes = _Outcomes()
        await CopyJob(self.dst, self.backup, self.options, items=listing(), recorder=outcomes,
                      stats=self.stats, stop=self.stop).run()
        self.kept += outcomes.kept
        self.failed += len(outcomes.failures)
        return outcomes.failures

    def as_dict(self) -> dict[str, Any]:
        return {"location": self.where, "kept": self.kept, "failed": self.failed,
                "bytes": self.stats.done_bytes}

    def describe(self) -> str:
        failed = f", {self.failed:,} failed (left as they were)" if self.failed else ""
        return f"{self.kept:,} objects kept in {self.where} before being overwritten or deleted{failed}"
