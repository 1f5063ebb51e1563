"""Logging: structlog is imported only for an event that passes the configured level; secrets are redacted."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from vertexflow import logs

_RUN = ("import sys, runpy\n"
        "sys.argv = ['vertexflow', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('vertexflow', run_name='__main__')\n"
        "except SystemExit as exit:\n    print('exit', exit.code)\n"
        "print('structlog loaded:', 'structlog' in sys.modules)\n")


def _vertexflow(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "VERTEXFLOW_CONFIG"}
    env |= {"XDG_CONFIG_HOME": str(tmp_path / "no-config"), "VERTEXFLOW_JOURNAL": str(tmp_path / "j.db")}
    return subprocess.run([sys.executable, "-c", _RUN, *args], capture_output=True, text=True, env=env, timeout=120)


def test_a_run_that_logs_nothing_does_not_import_structlog_and_one_that_fails_logs(tmp_path: Path) -> None:
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "a" / "b.txt").write_text("b")
    (tmp_path / "src" / "c.txt").write_text("c")
    quiet = _vertexflow(tmp_path, "copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--no-progress")
    assert "exit 0" in quiet.stdout and "structlog loaded: False" in quiet.stdout, quiet.stderr
    assert (tmp_path / "dst" / "a" / "b.txt").read_text() == "b"

    (tmp_path / "dst2").mkdir()
    (tmp_path / "dst2" / "a").write_text("a file where a directory must go")
    failing = _vertexflow(tmp_path, "--log-format", "json", "copy", str(tmp_path / "src"), str(tmp_path / "dst2"),
                          "--no-progress", "--retries", "1")
    assert "exit 1" in failing.stdout and "structlog loaded: True" in failing.stdout
    events = [json.loads(line) for line in failing.stderr.splitlines() if line.startswith("{")]
    failed = [e for e in events if e.get("event") == "object failed"]
    assert failed and failed[0]["key"] == "a/b.txt" and failed[0]["level"] == "error", failing.stderr
    assert (tmp_path / "dst2" / "c.txt").read_text() == "c"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    logs._threshold, logs._pending = logging.WARNING, None


def test_events_below_the_level_are_dropped_and_secrets_redacted(
        restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    log = logs.get_logger("vertexflow.test")
    logs.configure("json", "warning")
    log.info("quiet")
    log.warning("loud", api_token="abc", objects=3)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert (event["event"], event["level"], event["objects"], event["api_token"]) == ("loud", "warning", 3, "***")


async def test_a_library_user_gets_no_per_object_lines_uninvited(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from vertexflow.backends.local import LocalBackend
    from vertexflow.ops.copy import CopyJob

    (tmp_path / "src").mkdir()
    for i in range(3):
        (tmp_path / "src" / f"{i}.txt").write_text("x")
    async with LocalBackend(tmp_path / "src") as src, LocalBackend(tmp_path / "dst") as dst:
        assert (await CopyJob(src, dst).run()).done_objects == 3
    out = capsys.readouterr()
    assert "object copied" not in out.out + out.err  # info lines only where logging was configured for them
