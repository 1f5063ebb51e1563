"""A daemon backup job of the whole platform, scheduled and pruned by the platform's own settings.

A ``kind = "backup"`` job with ``options.type = "platform"``: ``source`` is
the platform's ``storage_config.json``, ``options.db`` its database, ``dest``
where backups are kept. Each run is ``backup create --platform``
(:mod:`vertexflow.ops.backup.platform`) and then prunes the platform backups
at ``dest`` to the newest ``backup.keep``; the job runs on
``backup.schedule`` (a cron expression). Both come from the storage config,
not from the job: the platform's settings are the one place they live. The
schedule is read when the daemon config is loaded (start, and every reload:
SIGHUP picks up a changed schedule); ``keep`` at every run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..pipeline.runner import StopSignal
    from ..pipeline.stats import JobStats
    from ..tenancy.storage_config import BackupSettings
    from .config import JobSpec

TYPE = "platform"


def backup_settings(storage_config: str) -> BackupSettings:
    """``backup`` of the storage config; a ConfigError naming the file when it has none."""
    from ..tenancy.storage_config import load_storage_config

    config = load_storage_config(storage_config)
    if config.backup is None:
        raise ConfigError(f"storage config {storage_config} has no backup section: a platform backup job runs on "
                          'its backup.schedule and keeps backup.keep, e.g. "backup": {"schedule": "0 3 * * *", '
                          '"keep": 7}')
    return config.backup


def settle(spec: JobSpec, base: Path) -> JobSpec:
    """The job as it runs: ``options.db`` absolute against ``base``, ``cron`` the storage config's ``backup.schedule``.

    The schedule is the platform's: a job that gives ``cron`` or ``interval``
    itself is refused, naming both places.
    """
    from .schedule import check_cron

    where = f"the storage config {spec.source}"
    for key in ("cron", "interval"):
        if getattr(spec, key) is not None:
            raise ConfigError(f"{key}: a platform backup runs on backup.schedule of {where}; remove {key} from "
                              "the job (or change the schedule there)")
    settings = backup_settings(spec.source)
    try:
        check_cron(settings.schedule)
    except ValueError as exc:
        raise ConfigError(f"backup.schedule of {where}: {exc}") from None
    options = dict(spec.options)
    db = options.get("db")
    if isinstance(db, str) and db and not os.path.isabs(os.path.expanduser(db)):
        options["db"] = str(base / db)
    elif isinstance(db, str):
        options["db"] = os.path.expanduser(db)
    return spec.model_copy(update={"cron": settings.schedule, "options": options})


def check_options(options: dict[str, Any]) -> None:
    """The options a platform backup takes (checked with the other backup options)."""
    if not isinstance(options.get("db"), str) or not options["db"]:
        raise ConfigError("options.db: a platform backup needs the platform database path")
    if "keep" in options:
        raise ConfigError("options.keep: a platform backup keeps backup.keep of its storage config (source); "
                          "set it there")
    if not isinstance(options.get("allow_incomplete", False), bool):
        raise ConfigError("options.allow_incomplete: must be true or false")


async def run(spec: JobSpec, settings: dict[str, Any], dst_loc: Any, stats: JobStats, stop: StopSignal) -> str | None:
    """One run: the backup, then pruning to ``backup.keep``. Returns the new backup's id (None if stopped).

    Companies marked incomplete (``allow_incomplete``) count as failed objects
    (the run is partial, its error names them); files that changed while it
    ran are reported in the backup's metadata, not as failures.
    """
    import anyio

    from ..errors import BackupError
    from ..ops.backup.catalog import delete_backup, plan_prune, scan
    from ..ops.backup.platform import PlatformOptions, create_platform_backup
    from ..tenancy.manager import StorageManager

    keep = backup_settings(spec.source).keep  # read afresh: a changed keep applies at the next run
    bid = None
    with anyio.CancelScope() as scope:
        stop.attach(scope)  # a hard stop (drain timeout, cancel) aborts the backup; it is pruned after grace
        async with StorageManager.open(spec.source, settings["db"]) as manager, dst_loc.backend() as dest:
            result = await create_platform_backup(dest, manager, PlatformOptions(
                codec=settings["codec"], chunk_size=settings["chunk"],
                allow_incomplete=bool(spec.options.get("allow_incomplete", False))))
            meta = result.metadata
            assert meta.storage is not None and meta.platform is not None
            bid = meta.id
            size = meta.storage.bytes + (meta.database.size if meta.database else 0)
            stats.listed_objects = stats.done_objects = meta.storage.files + 1
            stats.listed_bytes = stats.done_bytes = size
            stats.moved_bytes = max(stats.moved_bytes, size)
            stats.listing_done = True
            for company in meta.platform.companies:
                for entry in company.content:
                    if not entry.complete:
                        stats.record_failure(f"{entry.path}/", BackupError(
                            f"backup {bid}: company {company.folder!r}, {entry.content_type} on {entry.location} "
                            f"is incomplete: {entry.error}"))
            ours = [e for e in await scan(dest) if e.type == TYPE]  # other jobs' backups there are theirs to prune
            for doomed in plan_prune(ours, keep, grace=settings["grace"]):
                await delete_backup(dest, doomed)
                stats.deleted_objects += 1
    if scope.cancelled_caught:
        stats.interrupted = True
    return bid
