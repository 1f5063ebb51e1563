"""copy, sync and verify with --cluster on real LocalCluster worker processes and a real SeaweedFS.

The module's cluster (3 single-threaded worker processes, scheduler on
127.0.0.1) is reached as ``--cluster tcp://...`` by the CLI run in a
subprocess (the driver); the workers get the S3 credentials from the
environment they were started with, never from the tasks.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.helpers import vf
from vertexflow.testing.sample_tree import make_tree

distributed = pytest.importorskip("distributed")

pytestmark = [pytest.mark.s3, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(seaweed) -> Iterator[tuple[str, object]]:  # type: ignore[no-untyped-def]
    """(scheduler address, a client of it); worker processes inherit the AWS variables set here."""
    env = {"AWS_ACCESS_KEY_ID": seaweed.access_key, "AWS_SECRET_ACCESS_KEY": seaweed.secret_key,
           "AWS_REGION": seaweed.region, "AWS_ENDPOINT_URL": seaweed.endpoint}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    lc = distributed.LocalCluster(n_workers=3, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, worker_dashboard_address=None)
    client = distributed.Client(lc)
    try:
        yield lc.scheduler_address, client
    finally:
        client.close()
        lc.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(autouse=True)
def small_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards far smaller than the defaults, so that these small jobs still run as several shards."""
    monkeypatch.setenv("VERTEXFLOW_SHARD_MIN_OBJECTS", "1000")
    monkeypatch.setenv("VERTEXFLOW_SHARD_MIN_BYTES", "16M")


@pytest.fixture(scope="module")
def tree_20k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("src20k")
    made = make_tree(root, files=20_000, min_size=256, max_size=1024, dirs=20)
    assert made.files == 20_000
    return root


def more_bucket(seaweed, name: str) -> str:  # type: ignore[no-untyped-def]
    seaweed.create_bucket(name)
    return name


def summary(out: str) -> dict:  # type: ignore[type-arg]
    return json.loads(out)


def check_same(src: str, dst: str, objects: int, *extra: str) -> dict:  # type: ignore[type-arg]
    """Every object at the destination exactly once and equal to the source byte for byte (SHA-256)."""
    r = vf("verify", src, dst, "--checksum", "--json", *extra, timeout=300)
    report = r.json()
    assert r.code == 0, (r.err[-2000:], report["problems"][:5])
    assert report["ok"] and report["src_objects"] == report["dst_objects"] == objects
    assert report["matched"] == objects and report["extra"] == report["missing"] == report["different"] == 0
    return report


@pytest.fixture(scope="module")
def uploaded_20k(cluster, tree_20k, seaweed) -> Iterator[tuple[str, dict]]:  # type: ignore[no-untyped-def,type-arg]
    """``tree_20k`` copied local -> S3 on the cluster as 8 shards: (bucket, the copy's summary)."""
    address, _ = cluster
    bucket = more_bucket(seaweed, f"vf-cluster-20k-{os.getpid()}")
    env = {"VERTEXFLOW_SHARD_MIN_OBJECTS": "2500", "VERTEXFLOW_SHARD_MIN_BYTES": "16M"}  # 8 shards on 3 workers
    try:
        t0 = time.monotonic()
        r = vf("copy", str(tree_20k), f"s3://{bucket}", "--cluster", address, "--json", "--no-progress",
               env=env, timeout=300)
        assert r.code == 0, r.err[-3000:]
        print(f"copy local->S3 {time.monotonic() - t0:.1f}s")
        yield bucket, summary(r.out)
    finally:
        seaweed.delete_bucket_recursive(bucket)


def test_copy_20000_objects_local_to_s3(uploaded_20k, tree_20k, s3_env) -> None:  # type: ignore[no-untyped-def]
    bucket, s = uploaded_20k
    assert s["objects"] == 20_000 and s["failed"] == 0 and s["cluster"]["shards"] == 8
    assert s["cluster"]["ran"] == 8 and s["cluster"]["workers"] == 3
    check_same(str(tree_20k), f"s3://{bucket}", 20_000)  # one process, independent of the shards


def test_sync_20000_objects_s3_to_s3(cluster, uploaded_20k, tree_20k, seaweed, s3_bucket, s3_env) -> None:  # type: ignore[no-untyped-def]
    address, _ = cluster
    source, _ = uploaded_20k
    t0 = time.monotonic()
    r = vf("sync", f"s3://{source}", f"s3://{s3_bucket}", "--cluster", address, "--json", "--no-progress",
           timeout=300)
    assert r.code == 0, r.err[-3000:]
    s = summary(r.out)
    assert s["objects"] == 20_000 and s["failed"] == 0 and s["cluster"]["shards"] >= 3
    print(f"sync S3->S3 {time.monotonic() - t0:.1f}s")
    # the content of every object against the local original, verified as shards too: each local file
    # hashed with the CRC64NVME the store checked on upload and keeps (or, without one, both sides read)
    r = vf("verify", str(tree_20k), f"s3://{s3_bucket}", "--cluster", address, "--json", timeout=300)
    report = r.json()
    assert r.code == 0 and report["ok"], report["problems"][:5]
    assert report["matched"] == report["compared"] == report["dst_objects"] == 20_000
    assert report["shards"] >= 3


def executing_shards(client) -> dict[str, tuple[int, list[str]]]:  # type: ignore[no-untyped-def]
    def probe(dask_worker):  # type: ignore[no-untyped-def]
        return os.getpid(), [str(ts.key) for ts in dask_worker.state.executing]

    return client.run(probe)


def test_a_killed_worker_does_not_lose_or_duplicate_objects(cluster, tmp_path, s3_bucket, s3_env) -> None:  # type: ignore[no-untyped-def]
    address, client = cluster
    src = tmp_path / "src"
    make_tree(src, files=6000, min_size=2048, max_size=6144, dirs=12)
    # a job-wide 3 MiB/s keeps the ~24 MiB job running for about 8 s: time to kill a worker mid-shard
    cmd = [sys.executable, "-m", "vertexflow", "copy", str(src), f"s3://{s3_bucket}", "--cluster", address,
           "--bwlimit", "3M", "--json", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    try:
        deadline = time.monotonic() + 60
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            for pid, keys in executing_shards(client).values():
                if any("vertexflow-shard" in k for k in keys):
                    time.sleep(1.0)  # let the shard get well into its objects
                    os.kill(pid, signal.SIGKILL)
                    killed = pid
                    break
            else:
                time.sleep(0.1)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, "no shard was seen running"
    assert proc.returncode == 0, err[-3000:]
    s = json.loads(out)
    assert s["cluster"]["attempts"] > s["cluster"]["ran"], s["cluster"]  # the killed shard ran again
    assert s["failed"] == 0
    check_same(str(src), f"s3://{s3_bucket}", 6000)


def test_ctrl_c_stops_the_shards_and_a_rerun_finishes(cluster, tmp_path, s3_bucket, s3_env) -> None:  # type: ignore[no-untyped-def]
    address, client = cluster
    src = tmp_path / "src"
    make_tree(src, files=3000, min_size=2048, max_size=6144, dirs=6)
    cmd = [sys.executable, "-m", "vertexflow", "copy", str(src), f"s3://{s3_bucket}", "--cluster", address,
           "--bwlimit", "1M", "--json", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if any("vertexflow-shard" in k for _, keys in executing_shards(client).values() for k in keys):
                break
            time.sleep(0.1)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    first = json.loads(out)
    assert first["interrupted"] and first["objects"] < 3000
    # the shards stopped with the driver: nothing keeps writing behind a rerun's back
    deadline = time.monotonic() + 10
    while any(keys for _, keys in executing_shards(client).values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(keys for _, keys in executing_shards(client).values())
    r = vf("copy", str(src), f"s3://{s3_bucket}", "--cluster", address, "--json", "--no-progress", timeout=180)
    assert r.code == 0, r.err[-3000:]
    again = summary(r.out)
    assert again["resumed"] and again["job_id"] == first["job_id"]
    # stopped shards finished their transfers in flight and reported them, so the rerun sends what
    # is missing; at most the objects one stop can catch in flight (3 workers x 16) may go again
    # (more went again while an object stored in the second its file was written counted as older)
    missing = 3000 - first["objects"]
    assert 0 < first["objects"] and missing <= again["objects"] <= missing + 3 * 16
    check_same(str(src), f"s3://{s3_bucket}", 3000)


def test_rerun_skips_shards_already_done(cluster, tmp_path, private_journal) -> None:  # type: ignore[no-untyped-def]
    address, _ = cluster
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, files=3000, min_size=100, max_size=300, dirs=6)
    r = vf("copy", str(src), str(dst), "--cluster", address, "--json", "--no-progress")
    assert r.code == 0, r.err[-2000:]
    first = summary(r.out)
    shards = first["cluster"]["shards"]
    assert shards >= 2
    # as if the run had been cut off: the job unfinished and its last shard not done, that shard's objects gone
    db = sqlite3.connect(private_journal)
    db.execute("UPDATE jobs SET state = 'interrupted' WHERE id = ?", (first["job_id"],))
    db.execute("UPDATE cluster_shards SET state = 'running' WHERE job_id = ? AND shard = ?",
               (first["job_id"], shards - 1))
    (start,) = db.execute("SELECT start_at FROM cluster_shards WHERE job_id = ? AND shard = ?",
                          (first["job_id"], shards - 1)).fetchone()
    db.commit()
    db.close()
    removed = [p for p in dst.rglob("*") if p.is_file() and str(p.relative_to(dst)) >= start]
    for p in removed:
        p.unlink()
    assert removed
    r = vf("copy", str(src), str(dst), "--cluster", address, "--json", "--no-progress")
    assert r.code == 0, r.err[-2000:]
    again = summary(r.out)
    assert again["job_id"] == first["job_id"] and again["resumed"]
    assert again["cluster"]["already_done"] == shards - 1 and again["cluster"]["ran"] == 1
    assert again["objects"] == len(removed)
    check_same(str(src), str(dst), 3000)


def test_job_wide_bandwidth_limit_holds_across_two_workers(tmp_path, s3_bucket, s3_env) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    make_tree(src, files=192, min_size=256 * 1024, max_size=256 * 1024, dirs=4)  # 48 MiB
    limit = 4 * 1024 ** 2
    r = vf("copy", str(src), f"s3://{s3_bucket}", "--cluster", "local:2", "--bwlimit", "4M", "--json",
           "--no-progress", timeout=180)
    assert r.code == 0, r.err[-3000:]
    s = summary(r.out)
    assert s["bytes"] == 192 * 256 * 1024
    assert s["cluster"]["workers"] == 2 and s["cluster"]["shards"] >= 2
    # the rate while bytes move (shards' setup gaps aside), and over the whole transfer
    rate = s["bytes"] / s["cluster"]["moving_seconds"]
    overall = s["bytes"] / s["cluster"]["transfer_seconds"]
    print(f"aggregate rate {rate / 1024 ** 2:.2f} MiB/s while moving ({s['cluster']['moving_seconds']:.1f}s), "
          f"{overall / 1024 ** 2:.2f} MiB/s from first shard start to last end, {s['cluster']['shards']} shards")
    assert abs(rate - limit) / limit <= 0.10, rate / limit
    assert overall <= limit * 1.10 and overall >= limit * 0.75, overall / limit
    check_same(str(src), f"s3://{s3_bucket}", 192)


def test_a_shard_failing_on_every_try_exits_2_naming_it(cluster, tmp_path, seaweed, s3_env) -> None:  # type: ignore[no-untyped-def]
    address, _ = cluster
    src = tmp_path / "src"
    make_tree(src, files=20, min_size=10, max_size=100, dirs=2)
    r = vf("copy", str(src), "s3://vf-no-such-bucket-here", "--cluster", address, "--json", "--no-progress")
    assert r.code == 2, r.err[-2000:]
    assert "shard 0: JobAborted: bucket 'vf-no-such-bucket-here' does not exist" in r.err
    assert seaweed.secret_key not in r.err + r.out  # no credential in what the driver shows
    s = summary(r.out)
    assert s["cluster"]["failed"] == 1 and s["objects"] == 0


def test_bad_cluster_address_is_a_usage_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "src").mkdir()
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "d"), "--cluster", "scheduler:8786", "--no-progress")
    assert r.code == 2 and "tcp://HOST:PORT" in r.err
