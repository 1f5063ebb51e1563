"""The daemon as users run it: a subprocess on 127.0.0.1, driven over HTTP and by signals."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from .helpers import DaemonProcess, partial_files, tree, wait_until

pytestmark = pytest.mark.slow

CONFIG = """
[daemon]
listen = "127.0.0.1:{PORT}"
drain_timeout = "{DRAIN}"
backoff_initial = "1s"

[[jobs]]
name = "mirror"
kind = "sync"
source = "watched"
dest = "mirror"
continuous = true
debounce = "200ms"
reconcile_interval = "1h"
transfers = 1
{BWLIMIT}

[[jobs]]
name = "every2s"
kind = "sync"
source = "second"
dest = "second-copy"
interval = "2s"
delete = true

[[jobs]]
name = "backups"
kind = "backup"
source = "second"
dest = "backups"
interval = "1s"
options = { keep = 2 }
"""


def config(drain: str = "1s", bwlimit: str | None = None) -> str:
    return CONFIG.replace("{DRAIN}", drain).replace("{BWLIMIT}", f'bwlimit = "{bwlimit}"' if bwlimit else "")


def test_daemon_end_to_end(tmp_path: Path) -> None:
    watched, mirror, second, second_copy = (tmp_path / n for n in ("watched", "mirror", "second", "second-copy"))
    watched.mkdir()
    second.mkdir()
    (second / "one.txt").write_text("1")
    d = DaemonProcess(tmp_path, config(bwlimit="512k")).start()
    try:
        # the interval job runs at start, and again every 2 s
        wait_until(lambda: (second_copy / "one.txt").exists(), 10, what="the interval job's first run")
        (second / "two.txt").write_text("2")
        (second / "one.txt").unlink()
        wait_until(lambda: sorted(tree(second_copy)) == ["two.txt"], 10, what="the next interval run (with delete)")

        # files written into the watched source arrive within seconds
        t0 = time.monotonic()
        for i in range(3):
            (watched / f"new-{i}.txt").write_text(f"content {i}")
        wait_until(lambda: len(tree(mirror)) == 3, 10, what="watched files to arrive")
        assert time.monotonic() - t0 < 8
        assert tree(mirror) == tree(watched)

        # the scheduled backup: a new complete backup every second, the newest two kept (a third may
        # be between its metadata.json and the pruning)
        wait_until(lambda: d.job("backups")["totals"]["runs"].get("success", 0) >= 4, 15,
                   what="four backups")
        complete = sorted(p.parent.name for p in (tmp_path / "backups").glob("*/metadata.json"))
        assert 2 <= len(complete) <= 3 and all(n.startswith("vertexflow-storage-") for n in complete), complete
        assert d.job("backups")["last_result"]["objects"] == 1  # the one file of "second"

        jobs = {j["name"]: j for j in d.get("/api/jobs")["jobs"]}
        assert set(jobs) == {"mirror", "every2s", "backups"}
        assert jobs["mirror"]["schedule"]["continuous"] and jobs["mirror"]["schedule"]["watching"]
        assert jobs["mirror"]["last_result"]["trigger"] in ("watch", "reconcile", "resume")
        assert jobs["every2s"]["last_result"]["outcome"] == "success" and jobs["every2s"]["next_run"]
        assert jobs["mirror"]["bwlimit"] == "512.00 KiB/s"
        m = d.metrics()
        assert m['vertexflow_objects_transferred_total{job="mirror"}'] == 3
        assert m['vertexflow_bytes_transferred_total{job="mirror"}'] == sum(len(v) for v in tree(watched).values())
        assert m['vertexflow_objects_deleted_total{job="every2s"}'] == 1
        assert m['vertexflow_job_runs_total{job="every2s",outcome="success"}'] >= 2
        assert m['vertexflow_job_last_success_timestamp_seconds{job="every2s"}'] > time.time() - 60
        assert m['vertexflow_job_state{job="mirror",state="scheduled"}'] == 1
        assert m["process_open_fds"] > 0 and "vertexflow_event_loop_lag_seconds" in m
        assert any(k.startswith("vertexflow_job_duration_seconds_count") for k in m)

        # API actions and their answers
        status, body = d.post("/api/jobs/every2s/pause")
        assert status == 200 and body["result"] in ("paused", "pausing")
        assert d.post("/api/jobs/every2s/pause")[0] == 409
        wait_until(lambda: d.job("every2s")["state"] == "paused", 5, what="paused")
        status, body = d.post("/api/jobs/every2s/resume")
        # the answer states the state that results, and when the job runs next
        assert status == 200 and body["result"] == "resumed" and body["state"] in ("scheduled", "running")
        assert "next_run" in body
        assert d.post("/api/jobs/nope/start")[0] == 404
        assert d.post("/api/jobs/every2s/explode")[0] == 404
        assert d.request("POST", "/api/jobs/every2s/start", headers={"Origin": "http://evil.example"})[0] == 403
        assert d.request("GET", "/api/jobs", headers={"Host": f"rebound.example:{d.port}"})[0] == 403
        assert d.request("GET", "/api/jobs", headers={"Host": f"localhost:{d.port}"})[0] == 200

        # a large transfer, slowed by the bandwidth limit: SIGTERM in the middle of it
        (watched / "zz-large.bin").write_bytes(os.urandom(3 * 1024 * 1024))  # 6 s at 512 KiB/s
        wait_until(lambda: (p := d.job("mirror")["progress"]) and p["moved_bytes"] > 256 * 1024, 10,
                   what="the large transfer to be under way")
        m = d.metrics()
        assert sum(m[f'vertexflow_throttle_waits_total{{direction="{way}",job="mirror"}}'] for way in ("up", "down")) > 0
        d.signal(signal.SIGTERM)
        wait_until(lambda: d.get("/readyz")["ready"] is False, 5, what="readyz to say draining")
        assert d.wait_exit(20) == 0
        events = [e["event"] for e in d.log_events()]
        assert "drain timeout: aborting the transfers still in flight" in events and "daemon stopped" in events
        assert partial_files(mirror) == [] and "zz-large.bin" not in tree(mirror)  # nothing partial left

        # restarted (without the limit): the interrupted run is continued from the journal
        d.write_config(config())
        d.start()
        wait_until(lambda: (r := d.job("mirror")["last_result"]) and r["outcome"] == "success", 20,
                   what="the resumed run")
        last = d.job("mirror")["last_result"]
        assert last["trigger"] == "resume" and last["resumed"] and last["objects"] == 1
        assert tree(mirror) == tree(watched)

        # SIGHUP: a job added, the running ones kept
        with open(d.config, "a", encoding="utf-8") as f:
            f.write('\n[[jobs]]\nname = "added"\nkind = "sync"\nsource = "second"\ndest = "third"\n'
                    'interval = "1h"\n')
        before = d.job("every2s")["totals"]["runs"]
        d.signal(signal.SIGHUP)
        wait_until(lambda: (tmp_path / "third" / "two.txt").exists(), 10, what="the added job's first run")
        assert d.get("/api/daemon")["reloads"] == 1
        assert sum(d.job("every2s")["totals"]["runs"].values()) >= sum(before.values())  # not restarted
        # a broken file is refused and the daemon keeps going
        d.config.write_text(d.config.read_text() + "\n[[jobs]]\nname = 3\n")
        d.signal(signal.SIGHUP)
        wait_until(lambda: any(e["kind"] == "config" for e in d.get("/api/errors")["errors"]), 5,
                   what="the refused reload in /api/errors")
        assert {j["name"] for j in d.get("/api/jobs")["jobs"]} == {"mirror", "every2s", "backups", "added"}
        d.signal(signal.SIGINT)
        assert d.wait_exit(20) == 0
    finally:
        d.stop()


def test_token_is_required_when_set(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    token = "let-me-in-" + "0123456789" * 3
    text = (f'[daemon]\nlisten = "127.0.0.1:{{PORT}}"\ntoken = "{token}"\n'
            '[[jobs]]\nname = "j"\nkind = "sync"\nsource = "a"\ndest = "b"\n')
    d = DaemonProcess(tmp_path, text, token=token).start()
    try:
        assert d.request("GET", "/api/jobs", token="wrong")[0] == 401
        assert d.request("GET", "/metrics", token="")[0] == 401
        assert d.request("GET", "/healthz", token="")[0] == 200  # probes stay open
        status, body, _ = d.request("GET", f"/api/jobs?token={token}", token="")
        assert status == 401 and b"Authorization header" in body  # never in the URL
        status, body, headers = d.request("GET", "/", token="")  # the page holds no data: it asks for the token
        assert status == 200 and b'fetch("/events"' in body and headers["Content-Type"].startswith("text/html")
        assert d.get("/api/jobs")["jobs"][0]["state"] == "idle"  # no schedule: on demand only
        assert d.post("/api/jobs/j/start")[0] == 200
        wait_until(lambda: d.job("j")["last_result"], 10, what="the manual run")
        assert d.job("j")["last_result"]["trigger"] == "manual"
    finally:
        d.stop()
    assert d.proc is not None and d.proc.returncode == 0


@pytest.mark.s3
def test_continuous_sync_to_s3(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str, seaweed: object) -> None:
    """A watched local tree mirrored to a real S3 server (SeaweedFS), with deletes."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("alpha")
    text = ('[daemon]\nlisten = "127.0.0.1:{PORT}"\n'
            f'[[jobs]]\nname = "to-s3"\nkind = "sync"\nsource = "src"\ndest = "s3://{s3_bucket}/mirror"\n'
            'continuous = true\ndebounce = "200ms"\ndelete = true\n')
    d = DaemonProcess(tmp_path, text).start()
    client = seaweed.boto3_client()  # type: ignore[attr-defined]

    def keys() -> list[str]:
        listing = client.list_objects_v2(Bucket=s3_bucket, Prefix="mirror/")
        return sorted(o["Key"] for o in listing.get("Contents", []))

    try:
        wait_until(lambda: keys() == ["mirror/a.txt"], 15, what="the first run")
        (src / "b" / "c").mkdir(parents=True)
        (src / "b" / "c" / "deep.bin").write_bytes(os.urandom(70_000))
        (src / "a.txt").unlink()
        wait_until(lambda: keys() == ["mirror/b/c/deep.bin"], 15, what="the change and the delete")
        body = client.get_object(Bucket=s3_bucket, Key="mirror/b/c/deep.bin")["Body"].read()
        assert body == (src / "b" / "c" / "deep.bin").read_bytes()
        m = d.metrics()
        assert m['vertexflow_objects_deleted_total{job="to-s3"}'] == 1
        assert m['vertexflow_objects_transferred_total{job="to-s3"}'] == 2
    finally:
        d.stop()
