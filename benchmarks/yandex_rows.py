#!/usr/bin/env python3
"""Local -> Yandex.Disk and Yandex.Disk -> local through the bundled emulator.

    python benchmarks/yandex_rows.py               # 2,000 files of B and 2 files of A, latency 20 ms
    python benchmarks/yandex_rows.py --quick

The emulator (``vertexflow emulate yandex-disk``, state in a scratch
directory) adds 20 ms to every API call, as a distant server would; the
upload and download links carry no added latency, as on the real service.
Each row runs at upload concurrency 3 (the Yandex default) and 16
(``YANDEX_UPLOAD_CONCURRENCY``, with ``--transfers 16``). There is no peer to
compare with here (rclone's Yandex backend cannot be pointed at another API
URL), so the rows report objects/s and MB/s only.
"""

from __future__ import annotations

import argparse
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

from vertexflow.testing.sample_tree import make_tree  # noqa: E402
from vertexflow.testing.yandex_disk.process import emulator_process  # noqa: E402

LATENCY = 0.02


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
            "retries": summary["retries"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    small_files, big_files = (200, 1) if args.quick else (2000, 2)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vf-yandex-bench-") as tmp:
        data = Path(tmp) / "data"
        make_tree(data / "small", files=small_files, min_size=1024, max_size=64 * 1024)
        (data / "big").mkdir(parents=True)
        for i in range(big_files):
            with open(data / "big" / f"video{i}.bin", "wb") as f:
                for _ in range(128):
                    f.write(os.urandom(1 << 20))
        flags = ["--data-dir", str(Path(tmp) / "state"), "--latency", str(LATENCY),
                 "--total-space", "100G", "--max-file-size", "50G"]
        with emulator_process(*flags) as api_url:
            for concurrency in (3, 16):
                env = {**os.environ, "YANDEX_DISK_TOKEN": "bench",
                       "YANDEX_DISK_API_URL": api_url,
                       "YANDEX_UPLOAD_CONCURRENCY": str(concurrency)}
                for label, sub in ((f"B ({small_files} files 1-64 KiB)", "small"),
                                   (f"A ({big_files} x 128 MiB)", "big")):
                    remote = f"yadisk:/bench-c{concurrency}/{sub}"
                    up = copy(str(data / sub), remote, env, concurrency)
                    back = Path(tmp) / f"back-{concurrency}-{sub}"
                    down = copy(remote, str(back), env, concurrency)
                    shutil.rmtree(back)
                    rows.append({"dataset": label, "concurrency": concurrency, "up": up, "down": down})
    print(json.dumps(rows, indent=2))
    print("\n| dataset | concurrency | local -> Yandex objects/s | MB/s | Yandex -> local objects/s | MB/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['dataset']} | {r['concurrency']} | {r['up']['objects_per_s']} | {r['up']['mb_per_s']} "
              f"| {r['down']['objects_per_s']} | {r['down']['mb_per_s']} |")
    print(f"\nEmulator API latency {LATENCY * 1000:.0f} ms per request.")


if __name__ == "__main__":
    main()
