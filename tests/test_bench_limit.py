"""benchmarks/limit.py, the limit rows' trivial client: it writes and reads every byte of a dataset.

Run as the benchmark runs it (a subprocess, credentials in the environment)
against the suite's SeaweedFS; what it wrote is checked with boto3, what it
read against boto3's listing.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

from vertexflow.testing.seaweedfs import SeaweedFS

LIMIT = Path(__file__).resolve().parent.parent / "benchmarks" / "limit.py"
MiB = 1024 * 1024
PART = 5 * MiB  # S3's smallest part: the large file below takes several


def _limit(env: dict[str, str], *args: str) -> dict[str, int]:
    out = subprocess.run([sys.executable, str(LIMIT), *args], env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _tree(root: Path) -> dict[str, bytes]:
    rng = random.Random(7)
    files = {f"d{i % 3}/e{i % 2}/obj{i:03d}.dat": rng.randbytes(rng.randint(0, 64 * 1024)) for i in range(40)}
    files["d0/with space.dat"] = b"x" * 1000
    files["big.bin"] = rng.randbytes(3 * PART + 12345)  # 4 parts, the last short
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_limit_puts_and_gets_every_byte(seaweed: SeaweedFS, s3_bucket: str, s3_env: dict[str, str],
                                        tmp_path: Path) -> None:
    env = {**os.environ, **s3_env}
    files = _tree(tmp_path)
    total = sum(len(d) for d in files.values())
    sizes = ["--part-size", str(PART), "--multipart-threshold", str(8 * MiB)]

    put = _limit(env, "put", "--bucket", s3_bucket, "--prefix", "p", "--src", str(tmp_path), *sizes)
    assert (put["objects"], put["bytes"]) == (len(files), total)
    client = seaweed.boto3_client()
    stored = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket, Prefix="p/"):
        stored.update({item["Key"]: item["Size"] for item in page.get("Contents", ())})
    assert stored == {f"p/{rel}": len(data) for rel, data in files.items()}
    for rel, data in files.items():
        body = client.get_object(Bucket=s3_bucket, Key=f"p/{rel}")["Body"].read()
        assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest(), rel
    # the large file went up as a multipart upload: its ETag says how many parts
    assert client.head_object(Bucket=s3_bucket, Key="p/big.bin")["ETag"].strip('"').endswith("-4")

    # read back: the small objects in one GET each, the large one in ranged GETs of PART (stream limit below it)
    report = tmp_path.parent / f"{tmp_path.name}-counts.json"
    got = _limit(env, "get", "--bucket", s3_bucket, "--prefix", "p", "--report", str(report),
                 "--stream-limit", str(2 * PART), *sizes)
    assert (got["objects"], got["bytes"]) == (len(files), total)
    assert got["requests"] == 1 + (len(files) - 1) + 4  # one listing page, a GET per small object, 4 ranges
    assert json.loads(report.read_text()) == got

    # streamed whole: one GET per object
    whole = _limit(env, "get", "--bucket", s3_bucket, "--prefix", "p", *sizes)
    assert (whole["objects"], whole["bytes"], whole["requests"]) == (len(files), total, 1 + len(files))


def test_limit_fails_on_a_missing_bucket(s3_env: dict[str, str]) -> None:
    out = subprocess.run([sys.executable, str(LIMIT), "get", "--bucket", "no-such-bucket-here"],
                         env={**os.environ, **s3_env}, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1
    assert "HTTP 404" in out.stderr
