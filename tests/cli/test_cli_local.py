"""The command line on local disk: exit statuses, messages, summaries, Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from vertexflow.backends.local import TMP_PREFIX
from vertexflow.testing.sample_tree import make_tree, trees_equal

from .helpers import vf


def test_demo_runs_the_embedded_default_job(tmp_path: Path) -> None:
    r = vf("demo", "--dir", str(tmp_path), "--files", "200", "--json")
    assert r.code == 0, r.err
    summary = r.json()
    assert summary["objects"] == 200 and summary["failed"] == 0
    assert "verified" in r.err
    assert trees_equal(tmp_path / "source", tmp_path / "copy") == []


def test_copy_json_summary(tmp_path: Path) -> None:
    made = make_tree(tmp_path / "src", files=50)
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--json")
    assert r.code == 0, r.err
    s = r.json()
    assert (s["objects"], s["bytes"], s["failed"]) == (50, made.bytes, 0)
    assert s["seconds"] > 0 and s["mb_per_s"] > 0
    assert trees_equal(tmp_path / "src", tmp_path / "dst") == []


def test_copy_human_summary(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=5)
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "dst"))
    assert r.code == 0, r.err
    assert "objects copied" in r.out and "MB/s" in r.out


def test_single_file_goes_under_destination(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
    r = vf("copy", str(tmp_path / "a.txt"), str(tmp_path / "out"))
    assert r.code == 0, r.err
    assert (tmp_path / "out" / "a.txt").read_text() == "hello"


def test_missing_source_exit_2(tmp_path: Path) -> None:
    r = vf("copy", str(tmp_path / "nope"), str(tmp_path / "dst"))
    assert r.code == 2
    assert "no such directory" in r.err and str(tmp_path / "nope") in r.err


def test_unknown_scheme_exit_2(tmp_path: Path) -> None:
    r = vf("copy", "ftp://host/x", str(tmp_path))
    assert r.code == 2
    assert "unknown scheme 'ftp'" in r.err


def test_unknown_remote_exit_2(tmp_path: Path) -> None:
    r = vf("copy", "nosuchremote:bucket/x", str(tmp_path), env={"VERTEXFLOW_CONFIG": ""})
    assert r.code == 2
    assert "unknown remote 'nosuchremote'" in r.err


def test_malformed_config_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[remotes.old]\ntype = "s3"\nendpoint = "not-a-url"\nsecret_access_key = "hunter2"\n')
    r = vf("--config", str(cfg), "copy", "old:bucket/x", str(tmp_path))
    assert r.code == 2
    assert "remotes.old.endpoint" in r.err and str(cfg) in r.err
    assert "hunter2" not in r.err


def test_config_that_is_not_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[remotes.old\n")
    r = vf("--config", str(cfg), "ls", "old:b")
    assert r.code == 2 and "not valid TOML" in r.err


def test_ls_long(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x y.txt").write_text("12345")
    r = vf("ls", "--long", str(tmp_path))
    assert r.code == 0, r.err
    assert "d/x y.txt" in r.out and "5" in r.out


def test_ctrl_c_stops_gracefully_leaving_only_whole_files(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=4000, min_size=32 * 1024, max_size=256 * 1024)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vertexflow", "copy", str(tmp_path / "src"), str(tmp_path / "dst"),
         "--transfers", "1", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait until copying is under way
        if (tmp_path / "dst").exists() and sum(1 for _ in (tmp_path / "dst").rglob("*.bin")) > 50:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopping" in err
    copied = [p for p in (tmp_path / "dst").rglob("*") if p.is_file()]
    assert 0 < len(copied) < 4000, "the stop came too late to test anything"
    assert not [p for p in copied if p.name.startswith(TMP_PREFIX)]
    for p in copied:
        assert p.read_bytes() == (tmp_path / "src" / p.relative_to(tmp_path / "dst")).read_bytes()
    assert json.loads(out)["interrupted"] is True


def test_python_dash_m_and_version() -> None:
    r = vf("--version")
    assert r.code == 0 and "vertexflow" in r.out


def test_kill_9_then_rerun_completes_without_leftovers(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=20_000, min_size=1024, max_size=8 * 1024)
    proc = subprocess.Popen([sys.executable, "-m", "vertexflow", "copy", str(tmp_path / "src"),
                             str(tmp_path / "dst"), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (tmp_path / "dst").exists() and sum(1 for _ in (tmp_path / "dst").rglob("*.bin")) > 2000:
            break
        time.sleep(0.05)
    helpers = descendants(proc.pid)  # the worker processes copying small files, and their forkserver
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    partial = sum(1 for _ in (tmp_path / "dst").rglob("*.bin"))
    assert 0 < partial < 20_000, "the kill came too late to test anything"
    assert len(helpers) >= 2, "the copy had no worker processes to leave behind"
    deadline = time.monotonic() + 15
    while (alive := [pid for pid in helpers if Path(f"/proc/{pid}").exists()]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alive == [], "processes of the killed copy are still running"
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--json")
    assert r.code == 0, r.err
    s = r.json()
    assert s["resumed"] is True
    assert s["objects"] + s["skipped"] == 20_000
    assert s["skipped"] >= partial - 100  # what the journal recorded before the kill is not sent again
    assert trees_equal(tmp_path / "src", tmp_path / "dst") == []
    assert not list((tmp_path / "dst").rglob(f"{TMP_PREFIX}*"))


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
