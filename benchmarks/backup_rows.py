#!/usr/bin/env python3
"""Backup create/restore throughput against ``tar | zstd`` and ``tar czf`` on the same data, same run.

    python benchmarks/backup_rows.py             # datasets A and B at full size, 2 rounds
    python benchmarks/backup_rows.py --quick     # the --quick sizes, 1 round (start-up dominates: a smoke test)

Rows, per dataset and codec:

* create:  ``vertexflow backup create --type storage --compress zstd|gzip``
  against ``tar -cf - DIR | zstd -3 -T1`` (zstd) or ``tar czf`` (gzip);
* restore: ``vertexflow backup restore`` (which checks the whole backup
  first, then writes: two passes over the parts) against ``zstd -d | tar x``
  or ``tar xzf``.

Every figure is the median wall time of the rounds, with vertexflow and the
peer taking turns; the ratio is vertexflow's throughput over the peer's
(above 1: vertexflow is faster). The datasets are random bytes (nothing
compresses), the benchmark suite's datasets A (16 x 128 MiB) and B (20,000
files of 1-64 KiB); at the ``--quick`` sizes the peers finish in a fifth of a
second and the ratios mostly measure Python's start-up.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import datasets

HERE = Path(__file__).resolve().parent


def timed(cmd: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def clean(*paths: Path) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the small datasets and 1 round (a smoke test)")
    p.add_argument("--data-dir", type=Path, default=HERE / "data")
    p.add_argument("--work", type=Path, default=HERE / "work" / "backup")
    p.add_argument("--datasets", default="A,B")
    args = p.parse_args()
    rounds = 1 if args.quick else 2
    env = {**os.environ}
    env.pop("AWS_CA_BUNDLE", None)
    vf = f"{sys.executable} -m vertexflow"
    specs = datasets.specs(quick=args.quick)
    rows = []
    for label in args.datasets.split(","):
        ds = datasets.ensure(args.data_dir, specs[label], say=lambda m: print(m, file=sys.stderr))
        datasets.warm(ds.root)
        for codec in ("zstd", "gzip"):
            work = args.work / f"{label}-{codec}"
            clean(work)
            work.mkdir(parents=True)
            suffix = "tar.zst" if codec == "zstd" else "tar.gz"
            peer_file = work / f"peer.{suffix}"
            peer_create = (f"tar -cf - -C {ds.root} . | zstd -3 -T1 -q -f -o {peer_file}" if codec == "zstd"
                           else f"tar czf {peer_file} -C {ds.root} .")
            peer_extract = (f"zstd -d -q -c {peer_file} | tar xf - -C {work / 'peer-out'}" if codec == "zstd"
                            else f"tar xzf {peer_file} -C {work / 'peer-out'}")
            vf_create = (f"{vf} backup create --type storage --storage {ds.root} --to {work / 'vf'} "
                         f"--compress {codec}")
            times: dict[str, list[float]] = {k: [] for k in ("vf_c", "peer_c", "vf_r", "peer_r")}
            for _ in range(rounds):
                clean(work / "vf", peer_file)
                times["vf_c"].append(timed(vf_create, env))
                times["peer_c"].append(timed(peer_create, env))
                (folder,) = (work / "vf").iterdir()
                for _ in range(1):
                    clean(work / "vf-out", work / "peer-out")
                    (work / "peer-out").mkdir()
                    times["vf_r"].append(timed(f"{vf} backup restore {folder} --target-storage {work / 'vf-out'}",
                                               env))
                    times["peer_r"].append(timed(peer_extract, env))
            check = subprocess.run(["diff", "-rq", str(ds.root), str(work / "vf-out")], capture_output=True, check=False)
            med = {k: statistics.median(v) for k, v in times.items()}
            mb = ds.bytes / 1e6
            peer_name = "tar \\| zstd -3 -T1" if codec == "zstd" else "tar czf"
            for op, v, pr in (("create", "vf_c", "peer_c"), ("restore", "vf_r", "peer_r")):
                rows.append((f"{label} ({ds.files:,} files, {mb:,.0f} MB)", codec, op, mb / med[v], peer_name,
                             mb / med[pr], med[pr] / med[v], "yes" if check.returncode == 0 else "NO"))
            clean(work)
    print(f"# backup create/restore vs tar, {platform.node()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, {rounds} round(s), median\n")
    print("| dataset | codec | op | vertexflow MB/s | peer | peer MB/s | ratio (vf/peer) | restored tree identical |")
    print("| --- | --- | --- | ---: | --- | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.1f} | {r[4]} | {r[5]:.1f} | {r[6]:.2f} | {r[7]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
