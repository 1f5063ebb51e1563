"""The daemon's ``migrate`` job kind: a company migration run as a scheduled job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vertexflow.config import Config
from vertexflow.daemon.config import load_daemon_config
from vertexflow.daemon.runners import MigrateRunner
from vertexflow.errors import ConfigError
from vertexflow.pipeline.runner import StopSignal
from vertexflow.pipeline.stats import JobStats
from vertexflow.state.journal import Journal
from vertexflow.tenancy import StorageManager

FILES = {f"cat{i}/Image/f{i}.jpg": f"photo {i}".encode() * 50 for i in range(4)}


def job_toml(tmp_path: Path, options: str) -> Path:
    path = tmp_path / "daemon.toml"
    path.write_text(f'[[jobs]]\nname = "move-acme"\nkind = "migrate"\nsource = "acme"\ndest = "nas"\n'
                    f'cron = "0 2 * * *"\noptions = {{ {options} }}\n', encoding="utf-8")
    return path


def test_a_migrate_job_needs_the_platform_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"jobs.move-acme: options.db: a migrate job needs"):
        load_daemon_config(job_toml(tmp_path, 'storage_config = "s.json"'), {})
    with pytest.raises(ConfigError, match=r"options.live: must be true or false"):
        load_daemon_config(job_toml(tmp_path, 'db = "p.db", storage_config = "s.json", live = "yes"'), {})


async def test_a_migrate_job_moves_the_company_then_has_nothing_to_do(tmp_path: Path) -> None:
    raw = {"portraits": {"storage_type": "local"}, "local": {"base_path": str(tmp_path / "files")},
           "connections": {"nas": {"type": "local", "path": str(tmp_path / "nas")}}}
    (tmp_path / "storage_config.json").write_text(json.dumps(raw))
    db, cfg = tmp_path / "platform.db", tmp_path / "storage_config.json"
    async with StorageManager.open(cfg, db) as m:
        acme = m.registry.add_company("acme")
        for key, data in FILES.items():
            await m.save_file("portraits", key, data, company_id=acme.id)
    config, _ = load_daemon_config(job_toml(tmp_path, f'db = "{db}", storage_config = "{cfg}", live = true'), {})
    async with await Journal.open(tmp_path / "journal.db") as journal:
        runner = MigrateRunner(config.jobs[0], remotes=Config(), journal=journal)
        stats = JobStats()
        await runner.run(stats, StopSignal())
        assert runner.last_result is not None and runner.last_result["state"] == "switched"
        assert stats.done_objects == len(FILES)
        again = JobStats()
        await runner.run(again, StopSignal())  # the next scheduled run: already there
        assert runner.last_result == {"state": "already there", "company": "acme"} and again.done_objects == 0
    async with StorageManager.open(cfg, db) as m:
        assert m.registry.company(acme.id).storage_connection_id is not None
        for key, data in FILES.items():
            assert await m.get_file("portraits", key, company_id=acme.id) == data
    assert sorted(p.name for p in (tmp_path / "nas").rglob("*.jpg")) == sorted(k.rsplit("/", 1)[1] for k in FILES)


async def test_a_migrate_job_honours_its_bwlimit_and_reports_bytes_as_they_move(tmp_path: Path) -> None:
    import os
    import time

    import anyio

    files = {f"cat{i}/Image/big{i}.bin": os.urandom(100 * 1024) for i in range(6)}
    total = sum(len(d) for d in files.values())
    raw = {"portraits": {"storage_type": "local"}, "local": {"base_path": str(tmp_path / "files")},
           "connections": {"nas": {"type": "local", "path": str(tmp_path / "nas")}}}
    (tmp_path / "storage_config.json").write_text(json.dumps(raw))
    db, cfg = tmp_path / "platform.db", tmp_path / "storage_config.json"
    async with StorageManager.open(cfg, db) as m:
        acme = m.registry.add_company("acme")
        for key, data in files.items():
            await m.save_file("portraits", key, data, company_id=acme.id)
    path = job_toml(tmp_path, f'db = "{db}", storage_config = "{cfg}", live = false')
    path.write_text(path.read_text().replace('cron = ', 'bwlimit = "200k"\ncron = '), encoding="utf-8")
    config, _ = load_daemon_config(path, {})
    samples: list[int] = []
    async with await Journal.open(tmp_path / "journal.db") as journal:
        runner = MigrateRunner(config.jobs[0], remotes=Config(), journal=journal)
        assert runner.bandwidth_now() is not None  # the dashboard shows the limit in force
        stats = JobStats()

        async def watch() -> None:
            while True:
                samples.append(stats.moved_bytes)
                await anyio.sleep(0.1)

        t0 = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await runner.run(stats, StopSignal())
            tg.cancel_scope.cancel()
        elapsed = time.monotonic() - t0
    assert runner.last_result is not None and runner.last_result["state"] == "switched"
    # 600 KiB at 200 KiB/s: the first slice goes at once, the rest is paced
    assert elapsed >= 2.0, f"{total} bytes in {elapsed:.2f} s under a 200k limit"
    assert stats.done_objects == len(files) and stats.done_bytes == total
    assert any(0 < s < total for s in samples), "progress showed no bytes while they moved"
