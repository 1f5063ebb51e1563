#!/usr/bin/env python3
"""What ``--report`` and the progress outputs cost: dataset B copied local -> local, objects/s with and without.

    python benchmarks/report_cost.py                 # full: B = 20,000 files, 5 rounds of each variant
    python benchmarks/report_cost.py --quick         # the small B (2,000 files), 3 rounds (a shared machine)

Variants, each a fresh ``vertexflow copy B DST --no-journal --json`` into an
empty destination (the rounds interleave the variants, so a slower machine
for a while slows all of them alike):

* ``plain``: ``--no-progress``: the counters the progress reads are kept
  anyway (they are always on), nothing is drawn;
* ``report``: ``--report FILE``: a JSON line per object;
* ``progress-json``: ``--progress-json FILE``: an object a second;
* ``progress line``: ``--progress``: the live line, drawn to a pipe here;
* ``all``: the three together.

Reported per variant: the median of the job's own ``objects_per_s`` (the
summary's, without the interpreter's start-up), of the wall time, and of the
CPU seconds the process used (user + system, its threads included), and the
cost against ``plain`` in percent of each (the goal: under 3 %). On a shared
machine the CPU seconds are the steadier measure: what the report and the
progress add is work on this CPU, while the wall time follows the other
processes' load. The CPU cost is taken over the job's own CPU seconds: those
of a copy of an empty folder (the interpreter's start-up and exit, measured
in the same rounds) are subtracted first. The report file is checked to have
a line per object plus the summary.

Beside the runs, in this process (steadier still on a shared machine): the
CPU time of one report line (``TransferReport.copied``, into a file), of one
redraw of the live line and of one JSON progress object; set against the
job's own CPU time per object (``plain``'s, start-up left out) they give the
cost the report and the progress add, whatever the load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
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

VARIANTS: dict[str, list[str]] = {
    "plain": ["--no-progress"],
    "report": ["--no-progress", "--report", "{work}/report.jsonl"],
    "progress-json": ["--no-progress", "--progress-json", "{work}/progress.jsonl"],
    "progress line": ["--progress"],
    "all": ["--progress", "--report", "{work}/report.jsonl", "--progress-json", "{work}/progress.jsonl"],
}


def one_run(src: Path, work: Path, extra: list[str], objects: int) -> tuple[float, float, float]:
    """(objects/s of the job, wall seconds, CPU seconds) of one copy into an empty destination."""
    dst = work / "dst"
    shutil.rmtree(dst, ignore_errors=True)
    args = [a.replace("{work}", str(work)) for a in extra]
    cmd = [sys.executable, "-m", "vertexflow", "copy", str(src), str(dst), "--no-journal", "--json", *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # one child at a time: the difference is this run's
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr[-2000:]}")
    summary = json.loads(out.stdout)
    assert summary["objects"] == objects, summary
    if "--report" in extra:
        lines = (work / "report.jsonl").read_text().splitlines()
        assert len(lines) == objects + 1 and "summary" in json.loads(lines[-1]), len(lines)
    return objects / max(summary["seconds"], 1e-9), wall, cpu


def per_call_us(fn: object, n: int) -> float:
    """The least CPU microseconds one call of ``fn`` took, over 5 rounds of ``n`` calls."""
    best = float("inf")
    for _ in range(5):
        t = time.process_time()
        for _ in range(n):
            fn()  # type: ignore[operator]
        best = min(best, (time.process_time() - t) / n)
    return best * 1e6


def in_process_costs(work: Path) -> dict[str, float]:
    """CPU microseconds of a report line, a live-line redraw and a JSON progress object."""
    import io

    from rich.console import Console

    from vertexflow.model import ObjectInfo
    from vertexflow.ops.report import TransferReport
    from vertexflow.pipeline.progress import ProgressJson, ProgressView
    from vertexflow.pipeline.stats import JobStats

    report = TransferReport.open(str(work / "line-cost.jsonl"))
    src = ObjectInfo(key="d12/d7/file-0012345.bin", size=34567)
    done = ObjectInfo(key=src.key, size=src.size, hashes={"sha256": "5e" * 32})
    line = per_call_us(lambda: report.copied(src, done, "local_batch", None), 20_000)
    report.close(None)
    stats = JobStats(listed_objects=20_000, listed_bytes=660_000_000, listing_done=True, done_objects=7_000,
                     moved_bytes=231_000_000)
    view = ProgressView(stats, Console(file=io.StringIO(), width=160, force_terminal=True))
    redraw = per_call_us(lambda: view.console.print(view.render()), 2_000)
    writer = ProgressJson(stats, io.StringIO())
    progress_object = per_call_us(lambda: writer._write(writer.fields()), 2_000)  # noqa: SLF001
    return {"report_line_us": round(line, 2), "live_redraw_us": round(redraw, 1),
            "json_object_us": round(progress_object, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the small B (2,000 files)")
    p.add_argument("--repeat", type=int, default=None, help="rounds of each variant [5; 3 with --quick]")
    p.add_argument("--data-dir", type=Path, default=HERE / "data")
    p.add_argument("--work", type=Path, default=None, help="where the copies go [a temporary directory]")
    args = p.parse_args()
    repeat = args.repeat or (3 if args.quick else 5)
    data = datasets.ensure(args.data_dir, datasets.specs(args.quick)["B"], say=lambda m: print(m, file=sys.stderr))
    datasets.warm(data.root)
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    walls: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpus: dict[str, list[float]] = {v: [] for v in VARIANTS}
    startup: list[float] = []
    with tempfile.TemporaryDirectory(prefix="vf-report-cost-", dir=args.work) as tmp:
        work = Path(tmp)
        empty = work / "empty"
        empty.mkdir()
        one_run(data.root, work, VARIANTS["plain"], data.files)  # warm-up, untimed
        for r in range(repeat):
            startup.append(one_run(empty, work, VARIANTS["plain"], 0)[2])
            for name, extra in VARIANTS.items():
                rate, wall, cpu = one_run(data.root, work, extra, data.files)
                rates[name].append(rate)
                walls[name].append(wall)
                cpus[name].append(cpu)
                print(f"round {r + 1}/{repeat} {name}: {rate:,.0f} objects/s, {wall:.2f} s, {cpu:.2f} CPU s",
                      file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="vf-report-cost-", dir=args.work) as tmp:
        costs = in_process_costs(Path(tmp))
    fixed = statistics.median(startup)
    base, base_cpu = statistics.median(rates["plain"]), statistics.median(cpus["plain"]) - fixed
    rows = [{"variant": name, "objects_per_s": round(statistics.median(rates[name])),
             "wall_s": round(statistics.median(walls[name]), 2), "cpu_s": round(statistics.median(cpus[name]), 3),
             "cost_percent": round((base - statistics.median(rates[name])) / base * 100, 1),
             "cpu_cost_percent": round((statistics.median(cpus[name]) - fixed - base_cpu) / base_cpu * 100, 1),
             "rounds": [round(x) for x in rates[name]], "cpu_rounds": [round(x, 3) for x in cpus[name]]}
            for name in VARIANTS]
    job_us = base_cpu / data.files * 1e6  # the job's CPU per object, start-up left out
    job_s = statistics.median(walls["plain"])
    estimate = {"job_cpu_us_per_object": round(job_us, 1),
                "report_cost_percent": round(costs["report_line_us"] / job_us * 100, 2),
                # the live line redraws 4 times a second, the JSON writer writes once
                "progress_cost_percent": round((4 * costs["live_redraw_us"] + costs["json_object_us"])
                                               / (base_cpu / job_s * 1e6) * 100, 2)}
    print(json.dumps({"dataset": data.spec.name, "files": data.files, "bytes": data.bytes, "repeat": repeat,
                      "load": os.getloadavg(), "startup_cpu_s": round(fixed, 3), "rows": rows,
                      "in_process": costs, "estimate": estimate}, indent=2))
    print(f"\nB local -> local, {data.files:,} files, median of {repeat} rounds; "
          f"start-up and exit {fixed:.2f} CPU s (left out of the CPU cost)\n")
    print("| variant | objects/s | cost vs plain | wall s | CPU s | CPU cost vs plain |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['variant']} | {row['objects_per_s']:,} | {row['cost_percent']} % | {row['wall_s']} | "
              f"{row['cpu_s']} | {row['cpu_cost_percent']} % |")
    print(f"\nIn this process: a report line {costs['report_line_us']} us of CPU, a live-line redraw "
          f"{costs['live_redraw_us']} us, a JSON progress object {costs['json_object_us']} us; the job spends "
          f"{estimate['job_cpu_us_per_object']} us of CPU per object: --report adds "
          f"{estimate['report_cost_percent']} %, the progress outputs {estimate['progress_cost_percent']} %.")


if __name__ == "__main__":
    main()
