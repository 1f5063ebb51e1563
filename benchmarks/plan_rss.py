#!/usr/bin/env python3
"""Peak RSS of planning a sync of N objects (source and destination generated as listings).

    python benchmarks/plan_rss.py              # 1,000,000 objects (target: <= 300 MB)
    python benchmarks/plan_rss.py --count 100000

Both sides are :class:`vertexflow.testing.generated.GeneratedListing`s (no
files, no server): the run measures the planner alone (sorted merge, journal
look-ups in batches, decisions), which is what must stay flat however many
objects there are. Each count runs in a fresh interpreter so ru_maxrss is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def measure(count: int, journal: str) -> dict[str, float]:
    import anyio

    from vertexflow.ops.plan import Planner
    from vertexflow.state.journal import Journal
    from vertexflow.testing.generated import GeneratedListing

    async def main() -> dict[str, float]:
        async with await Journal.open(journal) as j:
            planner = Planner(GeneratedListing(count), GeneratedListing(count, changed_every=100), journal=j,
                              delete=True)
            actions: dict[str, int] = {}
            start = time.perf_counter()
            async for d in planner.decisions():
                actions[d.action] = actions.get(d.action, 0) + 1
            seconds = time.perf_counter() - start
        return {"count": count, "seconds": round(seconds, 2), "objects_per_s": round(count / seconds),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **actions}

    return anyio.run(main)


def run(count: int) -> dict[str, float]:
    """Measure in a child interpreter; returns its result."""
    with tempfile.TemporaryDirectory(prefix="vf-plan-") as tmp:
        out = subprocess.run([sys.executable, __file__, "--child", "--count", str(count), "--journal",
                              str(Path(tmp) / "j.db")], capture_output=True, text=True, timeout=1800, check=True)
    return json.loads(out.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=1_000_000)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--journal", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.count, args.journal)))
        return
    small = run(max(1, args.count // 10))
    big = run(args.count)
    print(json.dumps({"small": small, "big": big}, indent=2))
    print(f"planning {big['count']:,} objects: peak RSS {big['peak_rss_mb']:.0f} MB "
          f"({small['count']:,}: {small['peak_rss_mb']:.0f} MB), {big['objects_per_s']:,} objects/s; target <= 300 MB")


if __name__ == "__main__":
    main()
