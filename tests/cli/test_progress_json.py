"""``--progress-json FILE``: one JSON object a second and a final one, read from what real runs write.

Copies are throttled with ``--bwlimit`` so that several objects appear while
the bytes move; verify runs against SeaweedFS behind a proxy that answers
late, backup create and restore behind one that trickles every answer. What was written is checked independently
(hashlib, tar). Nothing but the summary reaches a non-terminal's stderr.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from vertexflow.testing.faults import ThreadedFaultProxy
from vertexflow.testing.seaweedfs import SeaweedFS

from .helpers import vf

KiB = 1024
#: keys of every progress object
KEYS = {"time", "elapsed", "phase", "bytes_done", "bytes_total", "objects_done", "objects_total", "totals_final",
        "skipped", "failed", "retries", "rate_bytes_per_s", "rate_window_s", "eta_seconds", "final"}


def read_lines(path: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for line in lines:
        assert KEYS <= line.keys(), line
    return lines


def files(root: Path, count: int, size: int, seed: int = 1) -> dict[str, str]:
    """``count`` files of ``size`` random bytes under ``root``; name -> SHA-256."""
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for i in range(count):
        data = hashlib.shake_256(f"{seed}-{i}".encode()).digest(size)
        (root / f"f{i}.bin").write_bytes(data)
        out[f"f{i}.bin"] = hashlib.sha256(data).hexdigest()
    return out


def sha256s(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.iterdir() if p.is_file()}


def test_a_throttled_copy_writes_an_object_a_second_then_a_final_one(tmp_path: Path) -> None:
    made = files(tmp_path / "src", 4, 150 * KiB)
    total = 4 * 150 * KiB
    out = tmp_path / "progress.jsonl"
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--bwlimit", "150K", "--no-journal", "--json",
           "--progress-json", str(out))
    assert r.code == 0, r.err
    assert r.err == ""  # not a terminal: no live line, only the summary (on stdout)
    assert r.json()["objects"] == 4
    assert sha256s(tmp_path / "dst") == made

    lines = read_lines(out)
    *running, final = lines
    assert len(running) >= 3, lines  # about 4 s at 150 KiB/s: an object a second
    assert not any(line["final"] for line in running)
    times = [line["time"] for line in lines]
    assert times == sorted(times)
    done = [line["bytes_done"] for line in lines]
    assert done == sorted(done), "bytes went backwards"
    # bytes count as they move: some second saw part of the bytes with the objects still in flight
    moving = [line for line in running if line["totals_final"] and 0 < line["bytes_done"] < total]
    assert moving, lines
    assert any(line["objects_done"] < 4 for line in moving)
    for line in moving:
        assert line["bytes_total"] == total and line["objects_total"] == 4
        assert line["rate_bytes_per_s"] > 0 and line["eta_seconds"] is not None
        assert line["phase"] == "transferring"
    assert final["final"] is True and final["exit_status"] == 0 and final["phase"] == "done"
    assert (final["bytes_done"], final["bytes_total"], final["objects_done"], final["objects_total"]) == (
        total, total, 4, 4)
    assert final["eta_seconds"] == 0.0


def test_progress_json_to_stderr_is_json_alone(tmp_path: Path) -> None:
    files(tmp_path / "src", 2, 100 * KiB)
    r = vf("sync", str(tmp_path / "src"), str(tmp_path / "dst"), "--bwlimit", "100K", "--no-journal",
           "--progress-json", "-")
    assert r.code == 0, r.err
    lines = [json.loads(line) for line in r.err.splitlines()]  # every line of stderr is one object
    assert len(lines) >= 2 and lines[-1]["final"] and lines[-1]["exit_status"] == 0
    assert lines[-1]["bytes_done"] == 200 * KiB


def test_an_interrupted_copy_ends_with_a_final_object_saying_so(tmp_path: Path) -> None:
    files(tmp_path / "src", 3, 200 * KiB)
    out = tmp_path / "progress.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "vertexflow", "copy", str(tmp_path / "src"), str(tmp_path / "dst"),
                             "--bwlimit", "50K", "--no-journal", "--progress-json", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and any(json.loads(line)["bytes_done"] > 0 for line in out.read_text().splitlines())):
            assert proc.poll() is None and time.monotonic() < deadline, "no bytes moved"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        time.sleep(1)  # two signals sent at once may reach the process as one
        proc.send_signal(signal.SIGINT)  # the second aborts the transfers in flight
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    final = read_lines(out)[-1]
    assert final["final"] and final["exit_status"] == 130 and final["phase"] == "interrupted"
    assert final["eta_seconds"] is None and final["bytes_done"] < 600 * KiB


def test_a_progress_file_in_a_missing_directory_exits_2_before_anything_moves(tmp_path: Path) -> None:
    files(tmp_path / "src", 1, 10)
    missing = tmp_path / "nowhere" / "p.jsonl"
    for args in (["copy", str(tmp_path / "src"), str(tmp_path / "dst")],
                 ["verify", str(tmp_path / "src"), str(tmp_path / "dst")],
                 ["backup", "create", "--type", "storage", "--storage", str(tmp_path / "src"),
                  "--to", str(tmp_path / "dst")]):
        r = vf(*args, "--progress-json", str(missing))
        assert r.code == 2, (args, r.err)
        assert f"--progress-json {missing}" in r.err and "does not exist" in r.err
        assert not (tmp_path / "dst").exists() and not missing.parent.exists()
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--progress-json", str(tmp_path))
    assert r.code == 2 and "is a directory" in r.err


@pytest.fixture
def slow_s3(seaweed: SeaweedFS, s3_bucket: str, s3_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """SeaweedFS behind a proxy that trickles every answer's body at 128 KiB/s; the variables that point
    the CLI at it (the bucket is filled directly)."""
    port = int(seaweed.endpoint.rsplit(":", 1)[1])
    with ThreadedFaultProxy(port, rates={"throttle": 1.0}, trickle_rate=128 * KiB, trickle_seconds=60) as proxy:
        yield {**s3_env, "AWS_ENDPOINT_URL": proxy.proxy.endpoint}


@pytest.fixture
def late_s3(seaweed: SeaweedFS, s3_bucket: str, s3_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """SeaweedFS behind a proxy that answers every request 0.4 s late (verify reads no body: it compares the
    digests a HeadObject gives with the local files')."""
    port = int(seaweed.endpoint.rsplit(":", 1)[1])
    with ThreadedFaultProxy(port, rates={"delay": 1.0}, delay_seconds=0.4) as proxy:
        yield {**s3_env, "AWS_ENDPOINT_URL": proxy.proxy.endpoint}


def test_verify_and_backup_count_as_they_go(tmp_path: Path, s3_bucket: str, s3_env: dict[str, str],
                                            slow_s3: dict[str, str], late_s3: dict[str, str]) -> None:
    made = files(tmp_path / "src", 4, 96 * KiB)
    total = 4 * 96 * KiB
    remote = f"s3://{s3_bucket}/data"
    up = vf("copy", str(tmp_path / "src"), remote, "--no-journal", env=s3_env)  # straight to the server
    assert up.code == 0, up.err

    # verify: one object at a time, each at the pace of its HeadObject
    out = tmp_path / "verify.jsonl"
    r = vf("verify", str(tmp_path / "src"), remote, "--transfers", "1", "--progress-json", str(out), "--json",
           env=late_s3)
    assert r.code == 0, r.err
    assert r.json()["matched"] == 4
    *running, final = read_lines(out)
    assert len(running) >= 2, running
    assert {line["phase"] for line in running} == {"comparing"}
    seen = [(line["objects_done"], line["bytes_done"]) for line in running]
    assert seen == sorted(seen)
    assert any(0 < n < 4 for n, _ in seen), running  # objects counted as they are checked
    assert (final["phase"], final["exit_status"], final["objects_done"], final["bytes_done"]) == ("done", 0, 4, total)
    assert final["bytes_total"] == total and final["totals_final"]

    # a difference: the final object says exit 1, as the command does
    (tmp_path / "src" / "f3.bin").write_bytes(b"changed")
    r = vf("verify", str(tmp_path / "src"), remote, "--size-only", "--progress-json", str(out), env=s3_env)
    assert r.code == 1
    assert read_lines(out)[-1]["exit_status"] == 1

    # backup create of the bucket (into the bucket, directly): the files count as the archive reads them
    out = tmp_path / "backup.jsonl"
    backups = f"s3://{s3_bucket}/backups"
    env = {**slow_s3, "VERTEXFLOW_CONFIG": str(tmp_path / "direct.toml")}
    (tmp_path / "direct.toml").write_text(f'[remotes.direct]\ntype = "s3"\nendpoint = "{s3_env["AWS_ENDPOINT_URL"]}"\n')
    r = vf("backup", "create", "--type", "storage", "--storage", remote, "--to", f"direct:{s3_bucket}/backups",
           "--json", "--progress-json", str(out), env=env)
    assert r.code == 0, r.err
    *running, final = read_lines(out)
    assert len(running) >= 2 and {line["phase"] for line in running} == {"archiving"}
    seen = [line["bytes_done"] for line in running]
    assert seen == sorted(seen) and any(0 < n < total for n in seen), running
    assert (final["objects_done"], final["objects_total"], final["bytes_done"], final["exit_status"]) == (
        4, 4, total, 0)

    # restore it through the slow proxy: the checking pass, then the writing pass, over the stored objects
    bid = r.json()["backup"]
    answer = boto3.client("s3").get_object(Bucket=s3_bucket, Key=f"backups/{bid}/metadata.json")
    meta = json.loads(answer["Body"].read())
    storage = meta["storage"]
    parts = sum(p["size"] for p in storage["parts"])
    stored = parts + storage["members"]["size"] + (storage["descriptions"] or {"size": 0})["size"]
    out = tmp_path / "restore.jsonl"
    r = vf("backup", "restore", f"{backups}/{bid}", "--target-storage", str(tmp_path / "restored"),
           "--progress-json", str(out), env=slow_s3)
    assert r.code == 0, r.err
    assert sha256s(tmp_path / "restored") == made  # the bucket's copy: f3.bin as it was first
    *running, final = read_lines(out)
    checking = [line for line in running if line["phase"] == "checking" and line["bytes_total"]]
    writing = [line for line in running if line["phase"] == "writing storage"]
    assert checking and writing, running
    assert {(line["bytes_total"], line["objects_total"]) for line in checking} == {(stored, len(storage["parts"]) + 2
                                                                                    if storage["descriptions"] else
                                                                                    len(storage["parts"]) + 1)}
    assert {line["bytes_total"] for line in writing} == {parts}
    assert running.index(checking[-1]) < running.index(writing[0])
    assert final["exit_status"] == 0 and final["phase"] == "done"
    assert final["bytes_done"] == final["bytes_total"] == parts  # the second pass: the parts again
    assert final["objects_done"] == final["objects_total"] == len(storage["parts"])


def test_every_long_command_takes_the_options() -> None:
    r = vf("migrate", "company", "--help")
    assert r.code == 0 and "--progress-json FILE" in r.out
    for args in (["copy", "--help"], ["sync", "--help"], ["verify", "--help"], ["backup", "create", "--help"],
                 ["backup", "restore", "--help"], ["backup", "verify", "--help"]):
        r = vf(*args)
        assert "--progress-json FILE" in r.out and "--progress" in r.out, args


def test_an_environment_variable_asks_for_it_too(tmp_path: Path) -> None:
    files(tmp_path / "src", 1, 1000)
    out = tmp_path / "p.jsonl"
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--no-journal",
           env={**os.environ, "VERTEXFLOW_PROGRESS_JSON": str(out)})
    assert r.code == 0, r.err
    assert read_lines(out)[-1]["final"]
