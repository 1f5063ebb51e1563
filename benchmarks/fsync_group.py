#!/usr/bin/env python3
"""Whether a group commit (one ``syncfs`` shared by the files written meanwhile) beats an fsync per file in
threads of their own, for small files written one by one (a download or a restore with fsync on).

    python benchmarks/fsync_group.py                         # 3,000 files of 1-64 KiB, 3 rounds
    python benchmarks/fsync_group.py --files 10000 --rounds 5 --work /mnt/disk/tmp

Each file is written as vertexflow's local writes are: to a temporary name, made durable, renamed over
its key, its folder made durable, by 32 threads at once (``LocalBackend``'s limit for such writes).
Three ways of making them durable, in an order that turns from round to round:

* ``none``: no flush at all (``--no-fsync``);
* ``fsync``: an fsync of the file before its rename and of its folder after (what vertexflow does);
* ``group``: instead of each fsync, a wait for a ``syncfs`` that started after the write; one thread runs
  it, the others wait for it, the next starts when it ends (a group commit).

Prints the median seconds of each way and the number of ``syncfs`` calls. Linux only (``syncfs``).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import random
import shutil
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from vertexflow.durability import sync_directory  # noqa: E402

#: LocalBackend's threads for small writes that end in an fsync (SYNC_THREADS)
THREADS = 32
#: folders the files are spread over
FOLDERS = 20


class GroupSync:
    """Waits for a ``syncfs`` of ``root``'s filesystem that started after the call; one runs at a time."""

    def __init__(self, root: Path) -> None:
        self.root, self.cond = root, threading.Condition()
        self.started = self.done = self.calls = 0
        self.running = False
        self.libc = ctypes.CDLL(None, use_errno=True)

    def wait(self) -> None:
        with self.cond:
            target = self.started + 1
            while self.done < target:
                if self.running:
                    self.cond.wait()
                    continue
                self.running, self.started = True, self.started + 1
                gen = self.started
                self.cond.release()
                try:
                    fd = os.open(self.root, os.O_RDONLY)
                    try:
                        self.libc.syncfs(fd)
                    finally:
                        os.close(fd)
                    self.calls += 1
                finally:
                    self.cond.acquire()
                self.running, self.done = False, gen
                self.cond.notify_all()


def write_all(root: Path, datas: list[bytes], way: str) -> tuple[float, int]:
    group = GroupSync(root)

    def one(i: int) -> None:
        folder = root / f"d{i % FOLDERS}"
        folder.mkdir(exist_ok=True)
        tmp = folder / f".tmp-{i}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, datas[i])
            if way == "fsync":
                os.fsync(fd)
            elif way == "group":
                group.wait()
        finally:
            os.close(fd)
        os.rename(tmp, folder / f"f{i}")
        if way == "fsync":
            sync_directory(str(folder))
        elif way == "group":
            group.wait()

    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(one, range(len(datas))))
    return time.perf_counter() - started, group.calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=HERE / "work" / "fsync-group",
                    help="a folder on the disk to measure (not a tmpfs)")
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    rng = random.Random(1)
    datas = [rng.randbytes(rng.randint(1024, 64 * 1024)) for _ in range(a.files)]
    ways = ["none", "fsync", "group"]
    times: dict[str, list[float]] = {w: [] for w in ways}
    calls: list[int] = []
    for r in range(a.rounds):
        for way in ways[r % 3:] + ways[:r % 3]:
            shutil.rmtree(a.work, ignore_errors=True)
            a.work.mkdir(parents=True)
            os.sync()
            took, n = write_all(a.work, datas, way)
            times[way].append(took)
            if way == "group":
                calls.append(n)
    shutil.rmtree(a.work, ignore_errors=True)
    print(f"{a.files} files of 1-64 KiB, {THREADS} threads, {a.rounds} rounds (median seconds, all rounds):")
    for way in ways:
        extra = f"; syncfs calls {calls}" if way == "group" else ""
        print(f"  {way:5} {statistics.median(times[way]):6.2f} s  {[round(t, 2) for t in times[way]]}{extra}")


if __name__ == "__main__":
    main()
