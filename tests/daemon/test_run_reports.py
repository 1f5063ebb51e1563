"""The daemon keeps each sync run's per-object report beside its journal, serves it, and keeps a bounded number.

The daemon runs as a subprocess; the report is read over HTTP and checked
against the files (hashlib) and against what lies in the folder beside the
journal (os.listdir).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import anyio

from vertexflow.config import Config
from vertexflow.daemon.config import DaemonSettings, JobSpec
from vertexflow.daemon.controller import JobController
from vertexflow.daemon.jobs import SUCCESS, ErrorLog
from vertexflow.daemon.reports import RunReports
from vertexflow.daemon.runners import SyncRunner
from vertexflow.state.journal import Journal

from .helpers import DaemonProcess, wait_until

CONFIG = """
[daemon]
listen = "127.0.0.1:{PORT}"
journal = "state/journal.db"
history = 3

[[jobs]]
name = "photos.nightly"
kind = "sync"
source = "src"
dest = "dst"
interval = "1s"

[[jobs]]
name = "backups"
kind = "backup"
source = "src"
dest = "backups"
"""

JOB = "photos.nightly"


def lines(body: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in body.decode().splitlines()]


def test_each_sync_run_keeps_its_report_and_the_daemon_serves_it(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    files = {f"f{i}.txt": f"content {i}".encode() * (i + 1) for i in range(3)}
    for name, data in files.items():
        (src / name).write_bytes(data)
    d = DaemonProcess(tmp_path, CONFIG).start()
    try:
        first = wait_until(lambda: (d.job(JOB)["results"] or [None])[-1], 15, what="the first run")
        assert first["outcome"] == "success" and first["report"] is True and isinstance(first["id"], int)
        status, body, headers = d.request("GET", f"/api/jobs/{JOB}/runs/{first['id']}/report")
        assert status == 200 and headers["Content-Type"].startswith("application/x-ndjson")
        *objects, summary = lines(body)
        assert {o["key"]: (o["action"], o["sha256"]) for o in objects} == {
            name: ("copied", hashlib.sha256(data).hexdigest()) for name, data in files.items()}
        assert summary["summary"]["objects"] == 3  # type: ignore[index]

        # later runs find everything unchanged, and say so; at most `history` reports stay
        wait_until(lambda: first["id"] not in [r["id"] for r in d.job(JOB)["results"]], 20,
                   what="more runs than the history keeps")
        latest = d.job(JOB)["results"][0]  # newest first
        status, body, _ = d.request("GET", f"/api/jobs/{JOB}/runs/{latest['id']}/report")
        assert status == 200
        *objects, summary = lines(body)
        assert {o["action"] for o in objects} == {"skipped"} and len(objects) == 3
        folder = tmp_path / "state" / "journal.db.reports" / JOB
        wait_until(lambda: len(os.listdir(folder)) <= 3, 10, what="old reports pruned")
        assert sorted(os.listdir(folder))[-1] >= f"{latest['id']}.jsonl"
        status, body, _ = d.request("GET", f"/api/jobs/{JOB}/runs/{first['id']}/report")
        assert status == 404 and b"no report of run" in body
        assert d.request("GET", f"/api/jobs/{JOB}/runs/nope/report")[0] == 404

        # a backup job writes no per-object report
        d.post("/api/jobs/backups/start")
        backup = wait_until(lambda: (d.job("backups")["results"] or [None])[-1], 20, what="the backup")
        assert backup["report"] is False
        assert d.request("GET", f"/api/jobs/backups/runs/{backup['id']}/report")[0] == 404

        # the report survives a restart of the daemon, with the run that wrote it
        d.post(f"/api/jobs/{JOB}/pause")
        wait_until(lambda: d.job(JOB)["state"] == "paused", 10, what="paused")
        kept = d.job(JOB)["results"][0]
        d.stop()
        d.start()
        wait_until(lambda: any(r["id"] == kept["id"] for r in d.job(JOB)["results"]), 10,
                   what="the run recalled from the journal")
        status, body, _ = d.request("GET", f"/api/jobs/{JOB}/runs/{kept['id']}/report")
        assert status == 200 and "summary" in lines(body)[-1]
    finally:
        d.stop()


def test_reports_are_bounded_by_count_and_bytes_and_named_safely(tmp_path: Path) -> None:
    reports = RunReports(tmp_path / "r")
    for run, size in ((1, 300), (2, 300), (3, 300), (4, 50), (5, 900)):
        Path(reports.start("a/b", run)).write_bytes(b"x" * size)
    assert reports.folder("a/b").name == "a%2Fb" and reports.folder("..").name == "%2E%2E"
    assert reports.prune("a/b", keep=4, max_bytes=10_000) == [1]
    assert reports.runs("a/b") == [2, 3, 4, 5]
    # the newest stays whatever its size; older ones go once the kept ones pass the bytes allowed
    assert reports.prune("a/b", keep=10, max_bytes=1000) == [3, 2]
    assert reports.runs("a/b") == [4, 5]
    assert reports.prune("a/b", keep=10, max_bytes=10) == [4]
    assert reports.runs("a/b") == [5] and reports.find("a/b", 5) is not None and reports.find("a/b", 4) is None


async def test_a_run_whose_report_cannot_be_kept_still_runs(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_bytes(b"a")
    (tmp_path / "journal.db.reports").write_text("a file where the reports' folder would be")
    job = JobSpec.model_validate({"kind": "sync", "name": "j", "source": str(tmp_path / "src"),
                                  "dest": str(tmp_path / "dst")})
    async with await Journal.open(tmp_path / "journal.db") as journal:
        c = JobController(job, SyncRunner(job, remotes=Config(), journal=journal), settings=DaemonSettings(),
                          errors=ErrorLog(50), journal=journal)
        async with anyio.create_task_group() as tg:
            tg.start_soon(c.run)
            c.start()
            deadline = time.monotonic() + 20
            while not c.results:
                assert time.monotonic() < deadline, "no run"
                await anyio.sleep(0.05)
            c.drain()
    [result] = c.results
    assert result.outcome == SUCCESS and result.report is False
    assert (tmp_path / "dst" / "a.txt").read_bytes() == b"a"
