#!/usr/bin/env python3
"""What carrying metadata costs: dataset B local -> S3 and S3 -> S3 across two endpoints, with and without
``--no-metadata`` (issue 20's goal: under 5 % for local -> S3, at most one request more per object across
endpoints).

    python benchmarks/metadata_rows.py                # B (20,000 files), 3 rounds
    python benchmarks/metadata_rows.py --quick        # B-quick (2,000 files), 1 round
    python benchmarks/metadata_rows.py --quick --repeat 3   # the reduced run reported in docs/fidelity.md

Two SeaweedFS servers with different credentials (the second stands for another store: no server-side
copy between them). The S3 -> S3 source is filled once by vertexflow from B (so every object carries a
Content-Type and the ``mtime`` metadata, as a migrated platform's would). Each timed run copies into a
prefix of its own; the rows alternate (default, ``--no-metadata``, default...) so slow changes of the
machine's load hit both alike, and the median of the rounds is reported with the requests per object
(vertexflow's summary counts every request of both ends, bucket checks and listing pages included).
The report says whether full-object checksums (CRC64NVME, which needs ``awscrt``) were written.
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

from benchmarks import datasets  # noqa: E402

HERE = Path(__file__).resolve().parent
#: seconds one copy may take (B over SeaweedFS on the shared 2-core VM: ~10-40 s)
TIMEOUT = 1800


def copy(src: str, dst: str, env: dict[str, str], *flags: str) -> dict[str, float]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "vertexflow", "copy", src, dst, "--json", "--no-progress",
                          "--no-journal", *flags], env=env, capture_output=True, text=True, timeout=TIMEOUT)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"vertexflow copy {src} {dst} {' '.join(flags)} failed: {out.stderr[-2000:]}")
    summary = json.loads(out.stdout)
    if summary["failed"]:
        raise RuntimeError(f"vertexflow copy {src} {dst}: {summary['failed']} objects failed")
    return {"objects": summary["objects"], "wall_s": wall, "requests": summary["requests"]}


def checksum_written() -> str:
    """What full-object checksum the S3 backend writes here (the vertexflow run by the rows imports the same)."""
    out = subprocess.run([sys.executable, "-c", "from vertexflow.backends.s3 import checksums; "
                          "print(checksums.WRITTEN or 'none (awscrt not installed)')"],
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip() or f"unknown: {out.stderr[-300:]}"


def scenario(name: str, src: str, dst_prefix: str, env: dict[str, str], repeat: int) -> dict[str, object]:
    runs: dict[str, list[dict[str, float]]] = {"default": [], "--no-metadata": []}
    for round_no in range(repeat):
        # the order turns from round to round: neither row always runs first (after the untimed fill)
        for label in (list(runs) if round_no % 2 == 0 else list(runs)[::-1]):
            flags = ("--no-metadata",) if label != "default" else ()
            dst = f"{dst_prefix}/r{round_no}-{'plain' if flags else 'meta'}"
            runs[label].append(copy(src, dst, env, *flags))
    row: dict[str, object] = {"scenario": name}
    for label, results in runs.items():
        objects = results[0]["objects"]
        wall = statistics.median(r["wall_s"] for r in results)
        row[label] = {"objects": objects, "wall_s": round(wall, 2), "objects_per_s": round(objects / wall, 1),
                      "requests_per_object": round(statistics.median(r["requests"] for r in results) / objects, 3),
                      "walls": [round(r["wall_s"], 2) for r in results]}
    meta, plain = row["default"], row["--no-metadata"]
    assert isinstance(meta, dict) and isinstance(plain, dict)
    row["cost_pct"] = round(100 * (plain["objects_per_s"] - meta["objects_per_s"]) / plain["objects_per_s"], 1)
    row["extra_requests_per_object"] = round(meta["requests_per_object"] - plain["requests_per_object"], 3)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the small B (2,000 files), 1 round")
    p.add_argument("--repeat", type=int, default=None, help="rounds [3; 1 with --quick]")
    p.add_argument("--data-dir", type=Path, default=HERE / "data")
    p.add_argument("--only", default="up,s3", help="scenarios: up (local -> S3), s3 (S3 -> S3) [up,s3]")
    args = p.parse_args()
    data = datasets.ensure(args.data_dir, datasets.specs(args.quick)["B"])
    repeat = args.repeat if args.repeat is not None else 1 if args.quick else 3
    from vertexflow.testing.seaweedfs import SeaweedFS

    rows = []
    with tempfile.TemporaryDirectory(prefix="vf-metadata-bench-") as tmp, \
            SeaweedFS(Path(tmp) / "one") as one, \
            SeaweedFS(Path(tmp) / "two", access_key="other", secret_key="other-secret") as two:
        one.create_bucket("meta-one")
        two.create_bucket("meta-two")
        env = {**os.environ}
        for name, server in (("ONE", one), ("TWO", two)):
            env.update({f"VERTEXFLOW_REMOTE_{name}_TYPE": "s3", f"VERTEXFLOW_REMOTE_{name}_ENDPOINT": server.endpoint,
                        f"VERTEXFLOW_REMOTE_{name}_REGION": server.region,
                        f"VERTEXFLOW_REMOTE_{name}_ACCESS_KEY_ID": server.access_key,
                        f"VERTEXFLOW_REMOTE_{name}_SECRET_ACCESS_KEY": server.secret_key,
                        f"VERTEXFLOW_REMOTE_{name}_ADDRESSING_STYLE": "path"})
        if "up" in args.only:
            rows.append(scenario(f"B ({data.files} files) local -> S3", str(data.root), "one:meta-one/up", env,
                                 repeat))
        if "s3" in args.only:
            copy(str(data.root), "one:meta-one/source", env)  # the S3 -> S3 source, untimed
            rows.append(scenario(f"B ({data.files} files) S3 -> S3, other endpoint", "one:meta-one/source",
                                 "two:meta-two/down", env, repeat))
    print(json.dumps(rows, indent=2))
    print(f"\nFull-object checksum written: {checksum_written()}; rounds: {repeat}.")
    print("\n| scenario | objects/s default | objects/s `--no-metadata` | cost | requests/object default "
          "| requests/object `--no-metadata` | extra requests/object |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        meta, plain = r["default"], r["--no-metadata"]
        assert isinstance(meta, dict) and isinstance(plain, dict)
        print(f"| {r['scenario']} | {meta['objects_per_s']} | {plain['objects_per_s']} | {r['cost_pct']} % "
              f"| {meta['requests_per_object']} | {plain['requests_per_object']} | {r['extra_requests_per_object']} |")
    print("\nGoal: cost under 5 % local -> S3; at most 1 extra request per object S3 -> S3 across endpoints.")


if __name__ == "__main__":
    main()
