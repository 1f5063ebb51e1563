#!/usr/bin/env python3
"""Local -> Yandex.Disk and Yandex.Disk -> local through the bundled emulator, and the emulator's limit.

    python benchmarks/yandex_rows.py               # 2,000 files of B and 2 files of A, latency 20 ms
    python benchmarks/yandex_rows.py --quick
    python benchmarks/yandex_rows.py --markdown benchmarks/results/NAME.md

The emulator (``vertexflow emulate yandex-disk``, state in a scratch
directory) adds 20 ms to every request it answers, API calls and the
upload and download links alike. Each vertexflow row runs at upload
concurrency 3 (the Yandex default) and 16 (``YANDEX_UPLOAD_CONCURRENCY``,
with ``--transfers 16``). There is no peer to compare with here (rclone's
Yandex backend cannot be pointed at another API URL); instead the same
emulator, on the same files, is driven by a trivial aiohttp client making
only the calls the protocol needs (``benchmarks/yandex_limit.py``) at
concurrency 16: the emulator's own limit. The concurrency-16 rows are given
as a fraction of it (target >= 0.90), and the calls each makes per file are
counted by an in-process emulator on a tree like B.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import yandex_limit  # noqa: E402
from vertexflow.testing.sample_tree import make_tree  # noqa: E402
from vertexflow.testing.yandex_disk.process import emulator_process  # noqa: E402

LATENCY = 0.02
#: the concurrency the limit client runs at, and the vertexflow rows compared with it
LIMIT_CONCURRENCY = 16
#: the share of the limit the concurrency-16 rows should reach (issue 23)
TARGET = 0.90


def copy(src: str, dst: str, env: dict[str, str], transfers: int) -> dict[str, float]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "vertexflow", "copy", src, dst, "--json", "--no-progress",
                          "--no-journal", "--transfers", str(transfers)],
                         env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"vertexflow copy {src} {dst} failed: {out.stderr[-2000:]}")
    summary = json.loads(out.stdout)
    wall = time.perf_counter() - start
    return {"objects": summary["objects"], "bytes": summary["bytes"], "wall_s": round(wall, 2),
            "objects_per_s": round(summary["objects"] / wall, 1), "mb_per_s": round(summary["bytes"] / 1e6 / wall, 1),
            "retries": summary["retries"], "engine_s": summary["seconds"], "requests": summary["requests"]}


def fraction(row: dict[str, float], limit: dict[str, float]) -> float:
    """Objects/s of ``row`` over the limit's, from their wall times (vertexflow's includes starting Python)."""
    return round(row["objects"] / row["wall_s"] / (limit["objects"] / limit["wall_s"]), 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = p.parse_args()
    small_files, big_files = (200, 1) if args.quick else (2000, 2)
    rows = []
    limits = {}
    with tempfile.TemporaryDirectory(prefix="vf-yandex-bench-") as tmp:
        data = Path(tmp) / "data"
        make_tree(data / "small", files=small_files, min_size=1024, max_size=64 * 1024)
        (data / "big").mkdir(parents=True)
        for i in range(big_files):
            with open(data / "big" / f"video{i}.bin", "wb") as f:
                for _ in range(128):
                    f.write(os.urandom(1 << 20))
        datasets = ((f"B ({small_files} files 1-64 KiB)", "small"), (f"A ({big_files} x 128 MiB)", "big"))
        flags = ["--data-dir", str(Path(tmp) / "state"), "--latency", str(LATENCY),
                 "--total-space", "100G", "--max-file-size", "50G"]
        with emulator_process(*flags) as api_url:
            for concurrency in (3, 16):
                env = {**os.environ, "YANDEX_DISK_TOKEN": yandex_limit.TOKEN,
                       "YANDEX_DISK_API_URL": api_url,
                       "YANDEX_UPLOAD_CONCURRENCY": str(concurrency)}
                for label, sub in datasets:
                    remote = f"yadisk:/bench-c{concurrency}/{sub}"
                    up = copy(str(data / sub), remote, env, concurrency)
                    back = Path(tmp) / f"back-{concurrency}-{sub}"
                    down = copy(remote, str(back), env, concurrency)
                    shutil.rmtree(back)
                    rows.append({"dataset": label, "concurrency": concurrency, "up": up, "down": down})
            for label, sub in datasets:
                remote = f"/bench-limit/{sub}"
                up = asyncio.run(yandex_limit.upload(api_url, data / sub, remote, LIMIT_CONCURRENCY))
                back = Path(tmp) / f"back-limit-{sub}"
                keys = yandex_limit.files_below(data / sub)
                down = asyncio.run(yandex_limit.download(api_url, remote, keys, back, LIMIT_CONCURRENCY))
                shutil.rmtree(back)
                limits[label] = {"up": up, "down": down}
    calls = asyncio.run(yandex_limit.count_calls(small_files, LIMIT_CONCURRENCY))
    print(json.dumps({"rows": rows, "limits": limits, "calls_per_file": calls}, indent=2))
    lines = ["| dataset | client | concurrency | local -> Yandex objects/s | MB/s | Yandex -> local objects/s | MB/s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | vertexflow | {r['concurrency']} | {r['up']['objects_per_s']} "
                     f"| {r['up']['mb_per_s']} | {r['down']['objects_per_s']} | {r['down']['mb_per_s']} |")
    for label, lim in limits.items():
        lines.append(f"| {label} | limit client | {LIMIT_CONCURRENCY} | {lim['up']['objects_per_s']} "
                     f"| {lim['up']['mb_per_s']} | {lim['down']['objects_per_s']} | {lim['down']['mb_per_s']} |")
    lines += ["", f"vertexflow at concurrency {LIMIT_CONCURRENCY} as a fraction of the limit (target >= {TARGET:.2f}; "
              "wall time, vertexflow's including its Python start; in brackets its engine time):", "",
              "| dataset | local -> Yandex | Yandex -> local |", "|---|---:|---:|"]
    for r in rows:
        if r["concurrency"] != LIMIT_CONCURRENCY:
            continue
        lim = limits[r["dataset"]]
        cells = []
        for way in ("up", "down"):
            engine = dict(r[way], wall_s=r[way]["engine_s"])
            cells.append(f"{fraction(r[way], lim[way]):.2f} ({fraction(engine, lim[way]):.2f})")
        lines.append(f"| {r['dataset']} | {cells[0]} | {cells[1]} |")
    lines += ["", f"API calls per file, counted by an in-process emulator ({small_files} files laid out as B; "
              "folder creation and listing included, amortized):", "",
              "| client, direction | per file: route -> calls | total |", "|---|---|---:|"]
    for who, routes in calls.items():
        detail = ", ".join(f"{k} {v:g}" for k, v in routes.items() if k != "total")
        lines.append(f"| {who} | {detail} | {routes['total']:g} |")
    lines.append(f"\nEmulator latency {LATENCY * 1000:.0f} ms per request (API and links).")
    text = "\n".join(lines)
    print("\n" + text)
    if args.markdown is not None:
        command = "python benchmarks/yandex_rows.py" + (" --quick" if args.quick else "")
        args.markdown.write_text(f"# Yandex.Disk rows and the emulator's limit\n\n`{command}`\n\n{text}\n")


if __name__ == "__main__":
    main()
