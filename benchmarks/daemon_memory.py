"""Runs the vertexflow CLI with a thread that writes where the process's memory is, as JSON lines.

    VF_MEMORY_OUT=mem.jsonl python benchmarks/daemon_memory.py daemon --config daemon.toml

(``benchmarks/daemon_soak.py --breakdown mem.jsonl`` starts the daemon this way.) Every
``VF_MEMORY_EVERY`` seconds (60), after a full garbage collection, one line:

* ``rss``: the resident size; ``blocks``: Python's allocated blocks (``sys.getallocatedblocks``);
  ``gc``: objects the collector tracks, and ``grow``, the types that gained most since the last line;
* ``sqlite``: SQLite's own memory (``sqlite3_memory_used``: statements, page cache), which no
  Python-side count shows;
* ``malloc``: glibc's ``mallinfo2`` (``arena``: the heap's size, ``uordblks``: in use, ``fordblks``:
  free but kept, ``hblkhd``: blocks mapped on their own); ``threads``.

A figure that grows with ``malloc.fordblks`` while ``uordblks`` stays flat is the allocator keeping
freed memory, not a leak; one that grows with ``sqlite`` or ``blocks`` is held by the program.
``VF_MEMORY_TRACE=N`` also keeps ``tracemalloc`` with N frames and writes the 15 tracebacks that grew
most since the second line (slow: a daemon under it runs several times slower).
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import gc
import json
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _lib(name: str | None) -> Any:
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def resident() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def sampler(out: Path, every: float, frames: int) -> None:
    libc = _lib(None)
    mallinfo = getattr(libc, "mallinfo2", None)
    if mallinfo is not None:
        mallinfo.restype = MallInfo2
    sqlite = _lib(ctypes.util.find_library("sqlite3"))
    memory_used = getattr(sqlite, "sqlite3_memory_used", None)
    if memory_used is not None:
        memory_used.restype = ctypes.c_int64
    t0 = time.monotonic()
    previous: collections.Counter[str] | None = None
    first: tracemalloc.Snapshot | None = None
    while True:
        time.sleep(every)
        gc.collect()
        counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
        line: dict[str, Any] = {"t": round(time.monotonic() - t0, 1), "rss": resident(),
                                "blocks": sys.getallocatedblocks(), "gc": sum(counts.values()),
                                "threads": threading.active_count(),
                                "sqlite": memory_used() if memory_used is not None else None}
        if mallinfo is not None:
            info = mallinfo()
            line["malloc"] = {name: getattr(info, name) for name, _ in MallInfo2._fields_}
        if previous is not None:
            diff = counts.copy()
            diff.subtract(previous)
            line["grow"] = [(k, v) for k, v in diff.most_common(12) if v > 0]
        previous = counts
        if frames:
            snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
            if first is None:
                first = snap
            else:
                line["traced"] = [{"bytes": s.size_diff, "count": s.count_diff,
                                   "at": [f"{f.filename}:{f.lineno}" for f in s.traceback][-8:]}
                                  for s in snap.compare_to(first, "traceback")[:15]]
        with out.open("a") as f:
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":  # worker processes (forkserver) import the main module again: only here
    frames = int(os.environ.get("VF_MEMORY_TRACE", "0"))
    if frames:
        tracemalloc.start(frames)
    threading.Thread(target=sampler, name="memory-sampler", daemon=True,
                     args=(Path(os.environ["VF_MEMORY_OUT"]), float(os.environ.get("VF_MEMORY_EVERY", "60")),
                           frames)).start()
    from vertexflow.interrupts import INTERRUPTS

    INTERRUPTS.install()
    from vertexflow.cli import main

    main(prog_name="vertexflow")
