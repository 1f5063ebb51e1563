"""A daemon job backs up the whole platform on the schedule, and keeps the number, of its storage_config.json.

``kind = "backup"`` with ``options.type = "platform"``: ``source`` is the
platform's storage config, ``options.db`` its database. The job's cron is
the storage config's ``backup.schedule`` (read at load and on reload), each
run prunes the platform backups at ``dest`` to ``backup.keep`` (read at each
run), and leaves other backups there alone. Bad settings stop the daemon at
load (``vertexflow daemon --check``: exit 2, naming the file and the key).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import anyio
import pytest

from vertexflow.daemon.config import load_daemon_config
from vertexflow.daemon.runners import BackupRunner
from vertexflow.errors import ConfigError
from vertexflow.backends.local import LocalBackend
from vertexflow.ops.backup.create import CreateOptions, create_backup
from vertexflow.pipeline.runner import StopSignal
from vertexflow.pipeline.stats import JobStats
from vertexflow.state.journal import Journal
from vertexflow.tenancy import StorageManager
from vertexflow.tenancy.registry import Registry
from vertexflow.testing.yandex_disk.process import free_port
from vertexflow.transforms.compression import parse_codec

from ..cli.helpers import vf


def _platform(root: Path, backup: dict[str, object] | None = None) -> None:
    """A platform on local disk: two companies with a file each; its storage config has ``backup`` if given."""
    (root / "platform").mkdir(parents=True)
    raw: dict[str, object] = {"portraits": {"storage_type": "local"}, "local": {"base_path": "storage"}}
    if backup is not None:
        raw["backup"] = backup
    (root / "platform" / "storage_config.json").write_text(json.dumps(raw))
    with Registry.open(root / "platform" / "platform.db") as reg:
        for slug in ("acme", "beta"):
            reg.add_company(slug)
    for slug in ("acme", "beta"):
        folder = root / "platform" / "storage" / "portraits" / slug / "cats"
        folder.mkdir(parents=True)
        (folder / "a.jpg").write_bytes(f"{slug} portrait".encode())


def _job(extra: str = "", options: str = 'db = "platform/platform.db"') -> str:
    return ('[[jobs]]\nname = "platform"\nkind = "backup"\nsource = "platform/storage_config.json"\n'
            f'dest = "backups"\n{extra}options = {{ type = "platform", {options} }}\n')


async def test_the_job_runs_on_the_platforms_schedule_and_keeps_its_number(tmp_path: Path) -> None:
    _platform(tmp_path, {"schedule": "15 2 * * *", "keep": 2})
    (tmp_path / "daemon.toml").write_text(_job())
    config, remotes = load_daemon_config(tmp_path / "daemon.toml", {})
    (job,) = config.jobs
    assert job.cron == "15 2 * * *" and job.interval is None  # the storage config's backup.schedule
    assert job.options["db"] == str(tmp_path / "platform" / "platform.db")  # relative to the daemon config
    assert job.expected() is not None  # overdue is judged by that schedule

    backups = tmp_path / "backups"
    async with LocalBackend(backups) as dest:  # another job's backup at the same place: not this job's to prune
        await create_backup(dest, CreateOptions(kind="database", codec=parse_codec("gzip"),
                                                db_path=str(tmp_path / "platform" / "platform.db")))
    async with await Journal.open(tmp_path / "journal.db") as journal:
        runner = BackupRunner(job, remotes=remotes, journal=journal)
        ids = []
        for _ in range(3):
            stats = JobStats()
            with anyio.fail_after(60):
                await runner.run(stats, StopSignal())
            assert stats.listing_done and not stats.failed_objects
            ids.append(runner.last_backup)
            await anyio.sleep(1.05)  # backup ids are by the second
        assert stats.deleted_objects == 1
    kept = sorted(p.name for p in backups.iterdir())
    assert [k for k in kept if k.startswith("vertexflow-platform-")] == ids[1:]
    assert len([k for k in kept if k.startswith("vertexflow-database-")]) == 1
    for bid in ids[1:]:  # each a whole platform backup, checked with sha256sum
        check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=backups / bid, capture_output=True)
        assert check.returncode == 0, check.stdout
        meta = json.loads((backups / bid / "metadata.json").read_text())
        assert [c["folder"] for c in meta["platform"]["companies"]] == ["acme", "beta"]

    # keep is read at every run: lowered to 1, the next run leaves one
    raw = json.loads((tmp_path / "platform" / "storage_config.json").read_text())
    raw["backup"]["keep"] = 1
    (tmp_path / "platform" / "storage_config.json").write_text(json.dumps(raw))
    async with await Journal.open(tmp_path / "journal.db") as journal:
        await BackupRunner(job, remotes=remotes, journal=journal).run(JobStats(), StopSignal())
    assert len([p for p in backups.iterdir() if p.name.startswith("vertexflow-platform-")]) == 1


async def test_an_unreachable_company_makes_the_run_partial_with_allow_incomplete(tmp_path: Path) -> None:
    _platform(tmp_path, {"schedule": "0 3 * * *", "keep": 3})
    raw = json.loads((tmp_path / "platform" / "storage_config.json").read_text())
    raw["connections"] = {"dead": {"type": "minio", "endpoint": f"127.0.0.1:{free_port()}", "access_key": "k",
                                   "secret_key": "s", "bucket": "gone"}}
    (tmp_path / "platform" / "storage_config.json").write_text(json.dumps(raw))
    with Registry.open(tmp_path / "platform" / "platform.db") as reg:
        reg.add_company("omega", storage_type="minio", storage_connection_id=reg.add_connection("dead", "minio").id)
    (tmp_path / "daemon.toml").write_text(_job(options='db = "platform/platform.db", allow_incomplete = true'))
    config, remotes = load_daemon_config(tmp_path / "daemon.toml", {})
    async with await Journal.open(tmp_path / "journal.db") as journal:
        stats = JobStats()
        with anyio.fail_after(60):
            await BackupRunner(config.jobs[0], remotes=remotes, journal=journal).run(stats, StopSignal())
    assert stats.failed_objects == 1 and "company 'omega', portraits on dead:portraits/omega is incomplete" in \
        stats.failures[0].message
    async with StorageManager.open(tmp_path / "platform" / "storage_config.json",
                                   tmp_path / "platform" / "platform.db") as m:
        assert len(m.require_registry().companies()) == 3


@pytest.mark.parametrize(("backup", "extra", "options", "error"), [
    (None, "", 'db = "platform/platform.db"', "has no backup section"),
    ({"schedule": "0 3 * * *", "keep": 2}, 'cron = "0 4 * * *"\n', 'db = "platform/platform.db"',
     "jobs.platform: cron: a platform backup runs on backup.schedule of the storage config"),
    ({"schedule": "0 3 * * *", "keep": 2}, "", 'db = "platform/platform.db", keep = 3',
     "options.keep: a platform backup keeps backup.keep of its storage config"),
    ({"schedule": "0 3 * * *", "keep": 2}, "", 'compress = "gzip"', "options.db: a platform backup needs"),
    ({"schedule": "0 99 * * *", "keep": 2}, "", 'db = "platform/platform.db"', "backup.schedule of the storage"),
])
def test_bad_settings_stop_the_daemon_at_load(tmp_path: Path, backup: dict[str, object] | None, extra: str,
                                              options: str, error: str) -> None:
    _platform(tmp_path, backup)
    (tmp_path / "daemon.toml").write_text(_job(extra, options))
    with pytest.raises(ConfigError) as info:
        load_daemon_config(tmp_path / "daemon.toml", {})
    assert error in str(info.value) and str(tmp_path / "daemon.toml") in str(info.value), str(info.value)


def test_daemon_check_names_the_storage_config_without_a_backup_section(tmp_path: Path) -> None:
    _platform(tmp_path)
    (tmp_path / "daemon.toml").write_text(_job())
    r = vf("daemon", "--config", str(tmp_path / "daemon.toml"), "--check")
    assert r.code == 2 and "storage_config.json has no backup section" in r.err and "jobs.platform" in r.err, r.err
