"""The daemon's config file: what it accepts, and errors that name the key (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.helpers import vf
from vertexflow.daemon.config import load_daemon_config, parse_duration
from vertexflow.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_ENV = {"OLD_MINIO_ACCESS_KEY": "a", "OLD_MINIO_SECRET_KEY": "b", "NEW_MINIO_ACCESS_KEY": "c",
               "NEW_MINIO_SECRET_KEY": "d", "YANDEX_DISK_TOKEN": "t"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "daemon.toml"
    path.write_text(text, encoding="utf-8")
    return path


JOB = """
[[jobs]]
name = "pics"
kind = "sync"
source = "src"
dest = "dst"
"""


def test_example_config_loads() -> None:
    config, remotes = load_daemon_config(REPO / "configs" / "daemon.toml", EXAMPLE_ENV)
    assert [j.name for j in config.jobs] == ["uploads", "migration", "photos", "nightly-backup"]
    uploads, migration, photos, backup = config.jobs
    assert backup.kind == "backup" and backup.options["keep"] == 7 and backup.expected() == 3 * 86400
    assert uploads.continuous and uploads.reconcile_interval == 600 and uploads.expected() == 3600
    assert migration.windows == ("Mon-Fri 01:00-06:00",) and migration.max_delete == 1000
    assert photos.interval == 6 * 3600 and photos.expected() == 3 * 6 * 3600
    assert set(remotes.remotes) == {"minio-old", "minio-new", "yd"}
    assert config.daemon.drain_timeout == 30 and config.daemon.backoff_max == 600


def test_relative_local_paths_are_taken_from_the_config_directory(tmp_path: Path) -> None:
    config, _ = load_daemon_config(write(tmp_path, JOB + 'interval = "90s"\n'), {})
    job = config.jobs[0]
    assert job.source == str(tmp_path.resolve() / "src") and job.dest == str(tmp_path.resolve() / "dst")
    assert job.interval == 90


@pytest.mark.parametrize(("extra", "message"), [
    ('interval = "soon"', "jobs.pics.interval: 'soon' is not a duration"),
    ('interval = "0s"', "jobs.pics.interval: must be longer than zero"),
    ('interval = "5m"\ncron = "* * * * *"', "jobs.pics: give interval or cron, not both"),
    ('cron = "61 * * * *"', "jobs.pics.cron: '61 * * * *' is not a cron expression"),
    ('windows = ["Mon-Fri 01:00-25:00"]', "jobs.pics.windows: 'Mon-Fri 01:00-25:00': '25:00' is not a time"),
    ('windows = ["Funday 01:00-02:00"]', "unknown day 'funday'"),
    ('bwlimit = "fast"', "jobs.pics.bwlimit: bwlimit: invalid rate 'fast'"),
    ('colour = "blue"', "jobs.pics.colour: unknown key"),
    ('max_delete = -1', "jobs.pics.max_delete: Input should be greater than or equal to 0"),
    ('options = { keep = 3 }', "jobs.pics: options: sync jobs take none"),
])
def test_bad_job_keys_are_named(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_daemon_config(write(tmp_path, JOB + extra + "\n"), {})
    assert message in str(err.value)
    assert str(tmp_path / "daemon.toml") in str(err.value)


def test_bad_daemon_settings_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"daemon.listen: 'nowhere': use HOST:PORT"):
        load_daemon_config(write(tmp_path, '[daemon]\nlisten = "nowhere"\n'), {})
    with pytest.raises(ConfigError, match=r"daemon.drain_timeout: 'later' is not a duration"):
        load_daemon_config(write(tmp_path, '[daemon]\ndrain_timeout = "later"\n'), {})


def test_duplicate_names_and_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="two jobs are named 'pics'"):
        load_daemon_config(write(tmp_path, JOB + JOB), {})
    with pytest.raises(ConfigError, match=r"jobs.pics.kind: Input should be 'sync', 'backup', 'migrate' or 'smoke'"):
        load_daemon_config(write(tmp_path, JOB.replace('"sync"', '"mirror"')), {})


def test_listening_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    text = '[daemon]\nlisten = "0.0.0.0:8787"\n'
    with pytest.raises(ConfigError, match="daemon.listen: 0.0.0.0:8787 is not a loopback address: set daemon.token"):
        load_daemon_config(write(tmp_path, text), {})
    secret = "s3cret-" + "x" * 25  # the minimum length, 32
    config, _ = load_daemon_config(write(tmp_path, text + 'token_env = "VF_TOKEN"\n'), {"VF_TOKEN": secret})
    assert config.daemon.resolved_token({"VF_TOKEN": secret}) == secret
    with pytest.raises(ConfigError, match="daemon.token_env: environment variable VF_TOKEN is not set"):
        load_daemon_config(write(tmp_path, text + 'token_env = "VF_TOKEN"\n'), {})


def test_continuous_needs_a_local_source(tmp_path: Path) -> None:
    text = JOB.replace('source = "src"', 'source = "s3://bucket/x"') + "continuous = true\n"
    with pytest.raises(ConfigError, match="jobs.pics.continuous: only a local source can be watched"):
        load_daemon_config(write(tmp_path, text), {})


def test_a_watched_source_cannot_hold_its_destination(tmp_path: Path) -> None:
    text = JOB.replace('dest = "dst"', 'dest = "src/mirror"') + "continuous = true\n"
    with pytest.raises(ConfigError, match="jobs.pics.dest: inside the watched source"):
        load_daemon_config(write(tmp_path, text), {})
    load_daemon_config(write(tmp_path, JOB.replace('dest = "dst"', 'dest = "src-mirror"') + "continuous = true\n"), {})


def test_unknown_remote_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"jobs.pics: unknown remote 'nas'"):
        load_daemon_config(write(tmp_path, JOB.replace('dest = "dst"', 'dest = "nas:backup"')), {})


def test_backup_jobs_and_their_options(tmp_path: Path) -> None:
    backup = JOB.replace('"sync"', '"backup"') + 'cron = "30 2 * * *"\n'
    config, _ = load_daemon_config(write(tmp_path, backup + "options = { keep = 3, compress = 'zstd:3' }\n"), {})
    assert config.jobs[0].options == {"keep": 3, "compress": "zstd:3"}
    for options, message in [
        ("{ keep = 0 }", "jobs.pics: options.keep: must be a whole number of backups, at least 1"),
        ("{ type = 'full' }", "jobs.pics: options.db: a full backup needs the database path"),
        ("{ type = 'everything' }", "jobs.pics: options.type: 'everything': use storage, full or database"),
        ("{ colour = 'red' }", "jobs.pics: options: unknown colour"),
        ("{ compress = 'lzma' }", "jobs.pics: options: --compress 'lzma'"),
    ]:
        with pytest.raises(ConfigError) as err:
            load_daemon_config(write(tmp_path, backup + f"options = {options}\n"), {})
        assert message in str(err.value)


def test_durations() -> None:
    assert parse_duration("1h30m") == 5400
    assert parse_duration(45) == 45
    assert parse_duration("250ms") == 0.25
    for bad in ("", "5 parsecs", "-1s", True):
        with pytest.raises(ValueError):
            parse_duration(bad)  # type: ignore[arg-type]


def test_cli_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, JOB + 'interval = "often"\n')
    r = vf("daemon", "--config", str(path), timeout=60)
    assert r.code == 2
    assert "jobs.pics.interval: 'often' is not a duration" in r.err
    ok = write(tmp_path, JOB + 'interval = "5m"\n')
    r = vf("daemon", "--config", str(ok), "--check", timeout=60)
    assert r.code == 0 and "OK (1 jobs)" in r.out
