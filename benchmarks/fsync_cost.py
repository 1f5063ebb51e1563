#!/usr/bin/env python3
"""What fsync before a local write becomes visible costs: local -> local with and without ``--no-fsync``.

    python benchmarks/fsync_cost.py                      # 20,000 files of 1-64 KiB and 4 x 64 MiB, 5 rounds
    python benchmarks/fsync_cost.py --files 2000 --big 2 --rounds 3    # a smaller run (a shared machine)

Two data sets, made once under ``--work`` (on the disk being measured: a
tmpfs or the page cache alone would hide the cost) from a fixed seed:

* ``small``: dataset B's shape, ``--files`` files of 1-64 KiB in 100 folders;
* ``big``: ``--big`` files of 64 MiB.

Each round copies each data set twice into an empty destination, with the
default (every file fsynced before its rename, its folder after) and with
``--no-fsync``, in an order that alternates from round to round, so a busier
machine for a while slows both alike. Each copy is a fresh ``vertexflow copy
SRC DST --no-journal --json``; the destination is removed and ``sync(1)`` run
between copies, so no copy pays for the dirty pages of the one before.

Reported per data set and variant: the median of the job's own objects/s and
MB/s (the summary's, without the interpreter's start-up) and of the wall time,
and what fsync costs: the ratio of the medians. ``--json`` prints them as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: dataset B's file sizes (benchmarks/datasets.py): small files of the platform's kind
SMALL_MIN, SMALL_MAX = 1 << 10, 64 << 10
BIG_SIZE = 64 << 20
#: folders the small files are spread over, as B's are
FOLDERS = 100
VARIANTS = {"fsync": [], "no-fsync": ["--no-fsync"]}


def make_data(work: Path, files: int, big: int) -> dict[str, Path]:
    """The two data sets under ``work`` (kept between runs when they have the asked shape)."""
    rng = random.Random(25)
    small, large = work / f"small-{files}", work / f"big-{big}"
    if not small.exists():
        tmp = small.with_name(small.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        for i in range(files):
            folder = tmp / f"d{i % FOLDERS:03}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"f{i:06}.bin").write_bytes(rng.randbytes(rng.randint(SMALL_MIN, SMALL_MAX)))
        tmp.rename(small)
    if not large.exists():
        tmp = large.with_name(large.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for i in range(big):
            with open(tmp / f"big{i}.bin", "wb") as f:
                for _ in range(BIG_SIZE >> 20):
                    f.write(rng.randbytes(1 << 20))
        tmp.rename(large)
    subprocess.run(["sync"], check=False)
    return {"small": small, "big": large}


def one_copy(src: Path, dst: Path, extra: list[str]) -> dict[str, float]:
    shutil.rmtree(dst, ignore_errors=True)
    subprocess.run(["sync"], check=False)  # the last copy's dirty pages are not this one's to write
    cmd = [sys.executable, "-m", "vertexflow", *extra, "copy", str(src), str(dst), "--no-journal", "--json",
           "--no-progress"]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr[-2000:]}")
    summary = json.loads(out.stdout)
    seconds = summary["seconds"] or wall
    return {"objects_per_s": summary["objects"] / seconds, "mb_per_s": summary["bytes"] / seconds / 1e6,
            "wall_s": wall, "objects": summary["objects"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=HERE / "data" / "fsync-cost",
                    help="where the data and the copies go: a folder on the disk to measure")
    ap.add_argument("--files", type=int, default=20_000, help="small files (1-64 KiB)")
    ap.add_argument("--big", type=int, default=4, help="64 MiB files")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = make_data(args.work, args.files, args.big)
    runs: dict[tuple[str, str], list[dict[str, float]]] = {(d, v): [] for d in data for v in VARIANTS}
    for r in range(args.rounds):
        order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
        for name, src in data.items():
            for variant in order:
                runs[(name, variant)].append(one_copy(src, args.work / "dst", VARIANTS[variant]))
    shutil.rmtree(args.work / "dst", ignore_errors=True)
    table = {}
    for (name, variant), results in runs.items():
        table[f"{name} {variant}"] = {k: statistics.median(x[k] for x in results)
                                      for k in ("objects_per_s", "mb_per_s", "wall_s")}
    for name in data:
        on, off = table[f"{name} fsync"], table[f"{name} no-fsync"]
        table[f"{name} cost"] = {"no_fsync_over_fsync_objects_per_s": off["objects_per_s"] / on["objects_per_s"],
                                 "fsync_extra_wall_s": on["wall_s"] - off["wall_s"]}
    if args.json:
        each = {f"{name} {variant}": [round(x["objects_per_s"], 1) for x in results]
                for (name, variant), results in runs.items()}
        print(json.dumps({"files": args.files, "big": args.big, "rounds": args.rounds, "results": table,
                          "objects_per_s_by_round": each}, indent=2))
        return 0
    print(f"{args.files} files of 1-64 KiB, {args.big} x 64 MiB, {args.rounds} rounds, medians; work: {args.work}")
    print(f"{'data set, variant':<22} {'objects/s':>10} {'MB/s':>8} {'wall s':>8}")
    for name in data:
        for variant in VARIANTS:
            t = table[f"{name} {variant}"]
            print(f"{name + ', ' + variant:<22} {t['objects_per_s']:>10.0f} {t['mb_per_s']:>8.1f} {t['wall_s']:>8.2f}")
        c = table[f"{name} cost"]
        print(f"{name + ', cost':<22} --no-fsync {c['no_fsync_over_fsync_objects_per_s']:.2f}x as fast, "
              f"fsync adds {c['fsync_extra_wall_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
