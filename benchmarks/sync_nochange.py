#!/usr/bin/env python3
"""No-change sync of dataset B: vertexflow against ``rclone sync`` on the same data.

    python benchmarks/sync_nochange.py            # local -> local and local -> S3 (SeaweedFS)
    python benchmarks/sync_nochange.py --only local

Each tool first syncs B into its own fresh destination (untimed), then syncs
again with nothing changed (timed, median of --repeat rounds). vertexflow's
summary reports the requests it sent; for S3 that is the listing pages of the
destination and nothing per object (rclone sends a HEAD per object to read
the mtime it keeps in metadata, unless told --size-only or --checksum).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import datasets, tools  # noqa: E402

HERE = Path(__file__).resolve().parent


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({out.returncode}): {out.stderr[-2000:]}")
    return time.perf_counter() - start, out.stdout


def scenario(name: str, src: Path, vf_dst: str, rc_dst: str, env: dict[str, str], rclone_env: dict[str, str],
             repeat: int, objects: int, journal: str) -> dict[str, object]:
    vf = [sys.executable, "-m", "vertexflow", "sync", str(src), vf_dst, "--json", "--no-progress",
          "--journal", journal]
    rc = [tools.find("rclone"), "sync", str(src), rc_dst, "--transfers", "16", "--checkers", "16"]
    timed(vf, env)
    timed(rc, rclone_env)
    vf_times, rc_times, requests = [], [], []
    for _ in range(repeat):
        t, out = timed(vf, env)
        summary = json.loads(out)
        assert summary["objects"] == 0 and summary["skipped"] == objects, summary
        vf_times.append(t)
        requests.append(summary["requests"])
        rc_times.append(timed(rc, rclone_env)[0])
    vf_t, rc_t = statistics.median(vf_times), statistics.median(rc_times)
    return {"scenario": name, "objects": objects, "vertexflow_s": round(vf_t, 2), "rclone_s": round(rc_t, 2),
            "vertexflow_objects_per_s": round(objects / vf_t), "rclone_objects_per_s": round(objects / rc_t),
            "ratio": round(rc_t / vf_t, 2), "vertexflow_requests": requests[-1]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="local,s3")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--data-dir", type=Path, default=HERE / "data")
    p.add_argument("--quick", action="store_true", help="the small B (2,000 files), 1 round")
    args = p.parse_args()
    data = datasets.ensure(args.data_dir, datasets.specs(args.quick)["B"])
    src, objects = data.root, data.files
    repeat = 1 if args.quick else args.repeat
    rows = []
    with tempfile.TemporaryDirectory(prefix="vf-sync-bench-") as tmp:
        env = {**os.environ}
        rclone_env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        journal = str(Path(tmp) / "journal.db")
        if "local" in args.only:
            rows.append(scenario("B local -> local, no change", src, f"{tmp}/vf", f"{tmp}/rc", env, rclone_env,
                                 repeat, objects, journal))
        if "s3" in args.only:
            from vertexflow.testing.seaweedfs import SeaweedFS

            with SeaweedFS(Path(tmp) / "seaweed") as server:
                server.create_bucket("vf-bench")
                server.create_bucket("rc-bench")
                s3env = {**env, "AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key,
                         "AWS_REGION": server.region, "AWS_ENDPOINT_URL": server.endpoint}
                rcenv = {**rclone_env, "RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
                         "RCLONE_CONFIG_BENCH_ENDPOINT": server.endpoint,
                         "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": server.access_key,
                         "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": server.secret_key,
                         "RCLONE_CONFIG_BENCH_REGION": server.region}
                rows.append(scenario("B local -> S3, no change", src, "s3://vf-bench/b", "bench:rc-bench/b", s3env, rcenv,
                                     repeat, objects, journal))
    print(json.dumps(rows, indent=2))
    print("\n| scenario | vertexflow s | rclone sync s | ratio (rclone time / ours) | vertexflow requests |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['scenario']} | {r['vertexflow_s']} | {r['rclone_s']} | {r['ratio']}x | {r['vertexflow_requests']} |")


if __name__ == "__main__":
    main()
