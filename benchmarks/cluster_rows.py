#!/usr/bin/env python3
"""The cost of distribution: dataset B local -> S3 in one process and on ``--cluster local:2``.

    python benchmarks/cluster_rows.py                # dataset B, 3 rounds, median
    python benchmarks/cluster_rows.py --quick        # B-quick (2,000 files), 1 round

Each round copies B into a fresh bucket of a SeaweedFS started here, once
per way, alternating which goes first; the wall time of the whole command
(cluster start, listing, shards, summary) is measured. The ratio is
cluster time / single-process time: above 1 is the overhead of distribution
(on a 2-core machine the target is an overhead of at most 15%, not a
speed-up).
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

from benchmarks import datasets

HERE = Path(__file__).resolve().parent


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, dict]:  # type: ignore[type-arg]
    start = time.perf_counter()
    out = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"failed ({out.returncode}): {out.stderr[-2000:]}")
    return time.perf_counter() - start, json.loads(out.stdout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeat", type=int, default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--data-dir", type=Path, default=HERE / "data")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    spec = datasets.specs(args.quick)["B"]
    ds = datasets.ensure(args.data_dir, spec, say=lambda m: print(m, file=sys.stderr))

    from vertexflow.testing.seaweedfs import SeaweedFS

    with tempfile.TemporaryDirectory(prefix="vf-cluster-bench-") as tmp:
        server = SeaweedFS(Path(tmp) / "seaweedfs")
        server.start()
        try:
            env = {**os.environ, "AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key,
                   "AWS_REGION": server.region, "AWS_ENDPOINT_URL": server.endpoint,
                   "VERTEXFLOW_JOURNAL": str(Path(tmp) / "journal.db")}
            env.pop("VERTEXFLOW_CLUSTER", None)
            times: dict[str, list[float]] = {"single": [], "cluster": []}
            for i in range(repeat):
                order = ["single", "cluster"] if i % 2 == 0 else ["cluster", "single"]
                for way in order:
                    bucket = f"bench-{way}-{i}"
                    server.create_bucket(bucket)
                    cmd = [sys.executable, "-m", "vertexflow", "copy", str(ds.root), f"s3://{bucket}",
                           "--json", "--no-progress"]
                    if way == "cluster":
                        cmd += ["--cluster", f"local:{args.workers}"]
                    t, summary = run(cmd, env)
                    assert summary["objects"] == ds.files and summary["failed"] == 0, summary
                    times[way].append(t)
                    print(f"round {i + 1} {way}: {t:.2f}s", file=sys.stderr)
                    server.delete_bucket_recursive(bucket)
        finally:
            server.stop()
    single, cluster = statistics.median(times["single"]), statistics.median(times["cluster"])
    ratio = cluster / single
    # each round's two runs are back to back: their ratio is less exposed to load that drifts between rounds
    paired = statistics.median(c / s for s, c in zip(times["single"], times["cluster"], strict=True))
    load = os.getloadavg()
    lines = [
        f"# vertexflow --cluster local:{args.workers} vs one process: dataset {spec.label} local -> S3",
        "",
        (f"{ds.files:,} files, {ds.bytes / 1e6:,.1f} MB; SeaweedFS on the same machine; {os.cpu_count()} cores; "
        f"load {load[0]:.1f}; {repeat} round(s), median wall time of the whole command."),
        "",
        "| run | seconds | objects/s | vs one process |",
        "|---|---:|---:|---:|",
        f"| one process | {single:.2f} | {ds.files / single:,.0f} | 1.00x |",
        f"| --cluster local:{args.workers} | {cluster:.2f} | {ds.files / cluster:,.0f} | {ratio:.2f}x time |",
        "",
        f"overhead of distribution (ratio of the medians): {100 * (ratio - 1):+.1f}% "
        f"(target on 2 cores: at most +15%): " + ("met" if ratio <= 1.15 else "**missed**"),
        f"median of the per-round ratios: {100 * (paired - 1):+.1f}%",
        (f"rounds: single {', '.join(f'{t:.2f}' for t in times['single'])}; "
        f"cluster {', '.join(f'{t:.2f}' for t in times['cluster'])}"),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / ("cluster-quick-latest.md" if args.quick else "cluster-latest.md")).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
