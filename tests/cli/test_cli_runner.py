"""The one runner of the command line: exception -> exit status, and what a command imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from vertexflow.cli.run import (
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    exit_status,
    run_or_exit,
)
from vertexflow.errors import BackupError, ConfigError, CorruptData, MigrationFailed, NotFound

from .helpers import vf


def test_the_table() -> None:
    assert (EXIT_OK, EXIT_PARTIAL, EXIT_FATAL, EXIT_INTERRUPTED) == (0, 1, 2, 130)
    assert exit_status(ConfigError("x")) == EXIT_FATAL
    assert exit_status(NotFound("x")) == EXIT_FATAL
    assert exit_status(BackupError("x")) == EXIT_FATAL
    assert exit_status(MigrationFailed("x")) == EXIT_PARTIAL
    assert exit_status(KeyboardInterrupt()) == EXIT_INTERRUPTED
    assert exit_status(ValueError("a bug")) is None
    # a command that checks something (backup verify) names the errors that mean "problems found"
    assert exit_status(CorruptData("x"), problems=(BackupError, CorruptData)) == EXIT_PARTIAL
    assert exit_status(ConfigError("x"), problems=(BackupError, CorruptData)) == EXIT_FATAL


def test_run_or_exit_unwraps_task_groups_and_lets_bugs_through(capsys: pytest.CaptureFixture[str]) -> None:
    async def fails_in_a_task() -> None:
        async def bad() -> None:
            raise ConfigError("remotes.x.endpoint: not a URL")

        async with anyio.create_task_group() as tg:
            tg.start_soon(bad)

    with pytest.raises(SystemExit) as exit:
        run_or_exit(fails_in_a_task)
    assert exit.value.code == EXIT_FATAL
    assert "vertexflow: error: remotes.x.endpoint: not a URL" in capsys.readouterr().err

    async def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit:
        run_or_exit(interrupted)
    assert exit.value.code == EXIT_INTERRUPTED

    async def bug() -> None:
        raise ValueError("a bug keeps its traceback")

    with pytest.raises(ValueError):
        run_or_exit(bug)


def test_bad_location_exits_2(tmp_path: Path) -> None:
    for args in (("ls", "ftp://host/x"), ("copy", "ftp://host/x", str(tmp_path)),
                 ("backup", "list", "--to", "ftp://host/x")):
        r = vf(*args)
        assert r.code == 2, (args, r.err)
        assert r.err.startswith("vertexflow: error: unknown scheme 'ftp'"), (args, r.err)


def test_malformed_config_file_exits_2_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[remotes.old]\ntype = "s3"\nendpoint = "not-a-url"\n')
    for args in (("ls", "old:bucket"), ("verify", "old:bucket", str(tmp_path))):
        r = vf("--config", str(cfg), *args)
        assert r.code == 2, (args, r.err)
        assert "vertexflow: error:" in r.err and "remotes.old.endpoint" in r.err and str(cfg) in r.err


def test_missing_source_exits_2_and_a_failed_object_exits_1(tmp_path: Path) -> None:
    r = vf("copy", str(tmp_path / "nope"), str(tmp_path / "dst"), "--no-progress")
    assert r.code == 2 and "vertexflow: error: no such directory" in r.err, r.err

    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "a" / "b.txt").write_text("b")
    (tmp_path / "src" / "c.txt").write_text("c")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "a").write_text("a file where a directory must go")
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--no-progress", "--retries", "1")
    assert r.code == 1, r.err
    assert "FAILED a/b.txt" in r.err and (tmp_path / "dst" / "c.txt").read_text() == "c"

    r = vf("verify", str(tmp_path / "src"), str(tmp_path / "dst"))
    assert r.code == 1 and "MISMATCH" in r.err, r.err


def test_usage_errors_keep_their_message(tmp_path: Path) -> None:
    r = vf("verify", str(tmp_path), str(tmp_path), "--sample", "200%")
    assert r.code == 2 and "--sample '200%': use a percentage between 0 and 100" in r.err
    r = vf("jobs", "show", "99")
    assert r.code == 2 and "vertexflow: error: no job 99 in the journal" in r.err
    r = vf("company", "list", env={"VERTEXFLOW_DB": ""})
    assert r.code == 2 and "vertexflow: error: no platform database" in r.err


_IMPORTS = ("import sys, runpy\n"
            "sys.argv = ['vertexflow', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('vertexflow', run_name='__main__')\n"
            "except SystemExit as exit:\n    assert not exit.code, exit.code\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('vertexflow.'))))\n")


def _modules_loaded(tmp_path: Path, *args: str) -> set[str]:
    env = {k: v for k, v in os.environ.items() if k != "VERTEXFLOW_CONFIG"}
    env |= {"XDG_CONFIG_HOME": str(tmp_path / "no-config")}
    out = subprocess.run([sys.executable, "-c", _IMPORTS, *args], capture_output=True, text=True, env=env,
                         timeout=120, check=True).stdout
    return set(out.splitlines()[-1].split())  # the last line: the modules (help or a summary comes first)


def test_copy_does_not_import_the_other_command_groups(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    others = {"vertexflow.cli.backup", "vertexflow.cli.tenancy", "vertexflow.cli.daemon",
              "vertexflow.tenancy", "vertexflow.daemon"}
    for args in (("copy", "--help"), ("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--no-progress")):
        loaded = _modules_loaded(tmp_path, *args)
        assert "vertexflow.cli.transfer" in loaded, loaded
        assert not others & loaded, (args, others & loaded)
    assert (tmp_path / "dst" / "a.txt").read_text() == "a"
    # --help lists every command, so it loads every group
    loaded = _modules_loaded(tmp_path, "--help")
    assert {"vertexflow.cli.backup", "vertexflow.cli.tenancy", "vertexflow.cli.daemon"} <= loaded


def test_help_lists_every_command() -> None:
    r = vf("--help")
    assert r.code == 0, r.err
    for name in ("backup", "company", "copy", "daemon", "demo", "emulate", "jobs", "ls", "migrate", "sync",
                 "verify"):
        assert f"  {name} " in r.out, name
