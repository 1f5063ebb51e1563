"""The daemon's ``smoke`` job kind: a periodic health check of a company's storage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vertexflow.config import Config
from vertexflow.daemon.config import load_daemon_config
from vertexflow.daemon.runners import SmokeRunner
from vertexflow.errors import ConfigError
from vertexflow.pipeline.runner import StopSignal
from vertexflow.pipeline.stats import JobStats
from vertexflow.state.journal import Journal
from vertexflow.tenancy import StorageManager
from vertexflow.tenancy.registry import Placement
from vertexflow.testing.yandex_disk import running_emulator


def job_toml(tmp_path: Path, options: str, dest: str = "*") -> Path:
    path = tmp_path / "daemon.toml"
    path.write_text(f'[[jobs]]\nname = "check-acme"\nkind = "smoke"\nsource = "acme"\ndest = "{dest}"\n'
                    f'interval = "1h"\noptions = {{ {options} }}\n', encoding="utf-8")
    return path


def test_a_smoke_job_needs_the_platform_paths_and_content_types(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"jobs.check-acme: options.db: a smoke job needs"):
        load_daemon_config(job_toml(tmp_path, 'storage_config = "s.json"'), {})
    with pytest.raises(ConfigError, match=r"jobs.check-acme: options: unknown colour \(smoke jobs take db, "
                                          r"storage_config\)"):
        load_daemon_config(job_toml(tmp_path, 'db = "p.db", storage_config = "s.json", colour = "red"'), {})
    with pytest.raises(ConfigError, match=r"jobs.check-acme: dest: the content types to check"):
        load_daemon_config(job_toml(tmp_path, 'db = "p.db", storage_config = "s.json"', dest=" , "), {})
    config, _ = load_daemon_config(job_toml(tmp_path, 'db = "p.db", storage_config = "s.json"'), {})
    assert config.jobs[0].options["db"] == str(tmp_path.resolve() / "p.db")  # relative to the config file


async def test_a_smoke_job_counts_steps_and_fails_a_route_whose_token_is_refused(tmp_path: Path) -> None:
    files = tmp_path / "files"
    async with running_emulator(token="the-disk-token") as disk:
        await _run(tmp_path, files, disk.base_url)


async def _run(tmp_path: Path, files: Path, disk_url: str) -> None:
    raw = {"portraits": {"storage_type": "local"}, "videos": {"storage_type": "local"},
           "local": {"base_path": str(files)},
           "connections": {"disk": {"type": "yandex_disk", "token": "a-refused-token", "base_url": disk_url}}}
    cfg, db = tmp_path / "storage_config.json", tmp_path / "platform.db"
    cfg.write_text(json.dumps(raw))
    async with StorageManager.open(cfg, db) as m:
        acme = m.registry.add_company("acme")
        await m.save_file("portraits", "cats/Image/a.jpg", b"jpeg", company_id=acme.id)
    config, _ = load_daemon_config(job_toml(tmp_path, f'db = "{db}", storage_config = "{cfg}"', dest="portraits"), {})
    async with await Journal.open(tmp_path / "journal.db") as journal:
        runner = SmokeRunner(config.jobs[0], remotes=Config(), journal=journal)
        stats = JobStats()
        await runner.run(stats, StopSignal())
        assert runner.last_result is not None and runner.last_result["ok"]
        assert list(runner.last_result["routes"]) == ["portraits"]
        assert (stats.done_objects, stats.failed_objects, stats.skipped_objects) == (5, 0, 0)
        assert sorted(p.name for p in files.rglob("*") if p.is_file()) == ["a.jpg"]

        async with StorageManager.open(cfg, db) as m:  # the company's new route refuses its credentials
            conn = m.registry.add_connection("disk", "yandex_disk")
            m.registry.set_placement(acme.id, Placement("yandex_disk", conn.id, None))
        broken = JobStats()
        await runner.run(broken, StopSignal())
    assert runner.last_result is not None and not runner.last_result["ok"]
    assert broken.failed_objects >= 2 and broken.done_objects == 0
    assert broken.failures[0].key == "portraits/upload" and broken.failures[0].reason == "smoke"
    assert "refused" in broken.failures[0].message
    assert broken.failures[0].message.endswith("(on disk:portraits/acme)")
