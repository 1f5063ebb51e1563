"""A daemon sync job takes the routine options of copy and sync (``ignore_existing``, ``max_transfer``...),
parsed from its ``[[jobs]]`` table into the same job spec the command line builds; a bad one stops the load."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cli.helpers import vf
from vertexflow.daemon.config import JobSpec, load_daemon_config
from vertexflow.daemon.runners import SyncRunner
from vertexflow.errors import ConfigError
from vertexflow.pipeline.runner import StopSignal
from vertexflow.pipeline.stats import JobStats
from vertexflow.state.journal import Journal


def write(tmp_path: Path, extra: str, *, kind: str = "sync") -> Path:
    path = tmp_path / "daemon.toml"
    path.write_text(f'[[jobs]]\nname = "pics"\nkind = "{kind}"\nsource = "src"\ndest = "dst"\n{extra}\n',
                    encoding="utf-8")
    return path


async def run_job(tmp_path: Path, extra: str) -> JobStats:
    """Load the daemon config with the job ``pics`` (src -> dst beside it) and run the job once, in-process."""
    config, remotes = load_daemon_config(write(tmp_path, extra), {})
    job = config.job("pics")
    assert job is not None
    stats = JobStats()
    async with await Journal.open(tmp_path / "journal.db") as journal:
        await SyncRunner(job, remotes=remotes, journal=journal).run(stats, StopSignal())
    return stats


async def test_ignore_existing_leaves_what_the_destination_has(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    (tmp_path / "src" / "kept.txt").write_text("the source's newer, longer version")
    (tmp_path / "dst" / "kept.txt").write_text("old")
    (tmp_path / "src" / "new.txt").write_text("new")
    stats = await run_job(tmp_path, "ignore_existing = true")
    assert (tmp_path / "dst" / "kept.txt").read_text() == "old"
    assert (tmp_path / "dst" / "new.txt").read_text() == "new"
    assert stats.done_objects == 1 and stats.skipped_objects == 1


async def test_max_transfer_stops_the_run_and_the_next_continues(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    for i in range(4):
        (tmp_path / "src" / f"f{i}.bin").write_bytes(os.urandom(100_000))
    extra = 'max_transfer = "150k"\ncutoff_mode = "cautious"\ntransfers = 1'
    stats = await run_job(tmp_path, extra)
    assert stats.reporters["cutoff"].reached == "max-transfer"
    assert stats.done_objects == 1
    assert len(list((tmp_path / "dst").iterdir())) == 1
    again = await run_job(tmp_path, extra)
    assert again.done_objects == 1
    assert len(list((tmp_path / "dst").iterdir())) == 2


async def test_filter_files_are_read_from_beside_the_config(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    for name in ("a.txt", "b.txt", "c.log"):
        (tmp_path / "src" / name).write_text(name)
    (tmp_path / "names.txt").write_text("# the one wanted\na.txt\nc.log\n")
    (tmp_path / "no-logs.txt").write_text("*.log\n")
    stats = await run_job(tmp_path, '[jobs.filters]\nfiles_from = ["names.txt"]\nexclude_from = ["no-logs.txt"]')
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["a.txt"]
    assert stats.done_objects == 1


def test_the_job_spec_is_the_command_lines() -> None:
    job = JobSpec(name="j", kind="sync", source="/s", dest="/d", update=True, immutable=True,
                  create_empty_src_dirs=True, links=True, max_duration="1h", timeout="30s", contimeout="5s",
                  max_delete=3, delete=True)
    spec = job.transfer_spec()
    assert (spec.mode, spec.update, spec.immutable, spec.create_empty_src_dirs, spec.links) == \
        ("sync", True, True, True, "store")
    assert (spec.max_delete, spec.delete) == (3, True)
    assert spec.settings.timeouts() == (30.0, 5.0)
    assert spec.settings.limits() == (None, 3600.0)


@pytest.mark.parametrize(("extra", "message"), [
    ('max_transfer = "abc"', "jobs.pics: max_transfer: invalid size"),
    ('timeout = "soon"', "jobs.pics: timeout 'soon': not a duration"),
    ("timeout = 30", "jobs.pics: timeout '30': not a duration"),
    ('cutoff_mode = "gentle"', "jobs.pics.cutoff_mode: Input should be 'hard', 'soft' or 'cautious'"),
    ("links = true\ncopy_links = true", "jobs.pics: links and copy_links"),
    ("ignore_existing = true\nimmutable = true", "jobs.pics: ignore_existing and immutable"),
    ("ignore_existng = true", "jobs.pics.ignore_existng: unknown key"),
    ('backup_dir = "dst/old"', "jobs.pics: backup_dir"),
    ('[jobs.filters]\nfiles_from = ["missing.txt"]', "missing.txt: no such file"),
])
def test_a_bad_option_is_refused_at_load(tmp_path: Path, extra: str, message: str) -> None:
    (tmp_path / "src").mkdir()
    with pytest.raises(ConfigError) as caught:
        load_daemon_config(write(tmp_path, extra), {})
    assert message in str(caught.value)


def test_only_sync_jobs_take_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="jobs.pics: ignore_existing, timeout: only sync jobs take them"):
        load_daemon_config(write(tmp_path, 'ignore_existing = true\ntimeout = "1m"', kind="backup"), {})


def test_the_daemon_exits_2_naming_the_job_and_the_key(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    r = vf("daemon", "--config", str(write(tmp_path, 'max_transfer = "lots"')), "--check", timeout=60)
    assert r.code == 2, r.err
    assert "jobs.pics: max_transfer: invalid size 'lots'" in r.err, r.err
    assert not (tmp_path / "dst").exists()
    ok = vf("daemon", "--config", str(write(tmp_path, 'max_transfer = "10G"\nignore_existing = true')), "--check",
            timeout=60)
    assert ok.code == 0 and "OK (1 jobs)" in ok.out, ok.err
