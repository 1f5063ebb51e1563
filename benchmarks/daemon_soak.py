"""Soak run of the daemon: a changing tree synced for minutes; RSS, open fds and event-loop lag.

    python benchmarks/daemon_soak.py                # 10 minutes
    python benchmarks/daemon_soak.py --minutes 2 --json results/soak.json

Starts ``vertexflow daemon`` as a subprocess with two jobs on one local tree
that keeps changing (files created, rewritten and deleted every second, the
tree's size held steady): a continuous job (filesystem events plus a
reconcile pass every minute) and an interval job with ``delete``. Every few
seconds it samples the daemon's RSS (/proc/PID/status), its open file
descriptors (/proc/PID/fd) and the event-loop lag the daemon measures itself
(``vertexflow_event_loop_lag_max_seconds`` on /metrics). At the end it stops
the changes, checks that both destinations converge on the source, sends
SIGTERM and expects a clean exit.

The RSS slope is the least-squares line through the samples after the
warm-up, in MiB an hour: a leak shows as a slope that does not fall as the
run gets longer (quote it from a run of 30 minutes or more).

``--breakdown FILE`` runs the daemon under ``benchmarks/daemon_memory.py``,
which writes every minute where its memory is (Python objects by type,
SQLite's own memory, the C allocator's heap in use and free): what a growing
RSS is made of.

Verdict: the figures at the end (median of the last tenth of the samples)
against the start (median of the first tenth after a warm-up): RSS may grow by
at most 25% + 16 MiB, open fds by at most 8, and the largest lag stays under
0.5 s. Growth beyond that over a 10-minute run suggests a leak.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CONFIG = """
[daemon]
listen = "127.0.0.1:{port}"
journal = "journal.db"
drain_timeout = "10s"

[[jobs]]
name = "continuous"
kind = "sync"
source = "tree"
dest = "mirror"
continuous = true
debounce = "500ms"
reconcile_interval = "1m"
delete = true

[[jobs]]
name = "interval"
kind = "sync"
source = "tree"
dest = "copy"
interval = "20s"
delete = true
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        out = {}
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out


def jobs(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/jobs", timeout=10) as r:
        return {j["name"]: j for j in json.loads(r.read())["jobs"]}


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if json.loads(r.read())["ready"]:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the daemon did not become ready")


class Churn:
    """Keeps ``size`` files under ``root`` changing: each step creates, rewrites and deletes a few."""

    def __init__(self, root: Path, size: int, per_step: int, seed: int = 1) -> None:
        self.root, self.size, self.per_step = root, size, per_step
        self.rng = random.Random(seed)
        self.names = [f"d{i % 20:02d}/f{i:06d}.bin" for i in range(size)]
        self.next_id = size
        for name in self.names:
            self._write(name)

    def _write(self, name: str) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(self.rng.randint(100, 64 * 1024)))

    def step(self) -> None:
        for _ in range(self.per_step):
            op = self.rng.random()
            i = self.rng.randrange(len(self.names))
            if op < 0.4:
                self._write(self.names[i])  # rewrite
            else:  # replace: delete one, create another (the tree keeps its size)
                (self.root / self.names[i]).unlink(missing_ok=True)
                name = f"d{self.next_id % 20:02d}/f{self.next_id:06d}.bin"
                self.next_id += 1
                self.names[i] = name
                self._write(name)


def listing(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".vertexflow-tmp-")}


def rss_slope(samples: list[dict[str, Any]]) -> float:
    """The least-squares slope of RSS over time, in bytes an hour (0 with fewer than two samples)."""
    if len(samples) < 2:
        return 0.0
    ts = [s["t"] for s in samples]
    mean_t, mean_r = statistics.fmean(ts), statistics.fmean(s["rss"] for s in samples)
    var = sum((t - mean_t) ** 2 for t in ts)
    if var == 0:
        return 0.0
    return sum((s["t"] - mean_t) * (s["rss"] - mean_r) for s in samples) / var * 3600


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--files", type=int, default=2000, help="files in the tree (held steady)")
    ap.add_argument("--changes", type=int, default=10, help="files changed per second")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=30.0, help="seconds before the baseline")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write the samples and the verdict here")
    ap.add_argument("--breakdown", type=Path, default=None,
                    help="run the daemon under benchmarks/daemon_memory.py, which writes where its memory is "
                         "(Python objects, SQLite, the C allocator) here every minute")
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="vertexflow-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (work / "daemon.toml").write_text(CONFIG.replace("{port}", str(port)))
    churn = Churn(work / "tree", args.files, args.changes)
    log = open(work / "daemon.log", "wb")  # noqa: SIM115
    command, env = [sys.executable, "-m", "vertexflow"], None
    if args.breakdown is not None:
        here = Path(__file__).resolve().parent
        command = [sys.executable, str(here / "daemon_memory.py")]
        env = {**os.environ, "VF_MEMORY_OUT": str(args.breakdown.resolve()),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(here.parent), os.environ.get("PYTHONPATH")]))}
        args.breakdown.unlink(missing_ok=True)
    proc = subprocess.Popen([*command, "--log-format", "json", "daemon", "--config", str(work / "daemon.toml")],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    samples: list[dict[str, float]] = []
    try:
        wait_ready(port, proc)
        t0 = time.monotonic()
        end = t0 + args.minutes * 60
        next_sample = t0
        print(f"soak: {args.minutes:g} min, {args.files} files, {args.changes} changes/s, pid {proc.pid}, "
              f"work {work}", flush=True)
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise SystemExit(f"the daemon exited with {proc.returncode} during the soak: see {work}/daemon.log")
            churn.step()
            if time.monotonic() >= next_sample:
                m = metrics(port)
                samples.append({"t": round(time.monotonic() - t0, 1), "rss": rss_bytes(proc.pid),
                                "fds": open_fds(proc.pid), "lag": m["vertexflow_event_loop_lag_seconds"],
                                "lag_max": m["vertexflow_event_loop_lag_max_seconds"],
                                "objects": sum(v for k, v in m.items()
                                               if k.startswith("vertexflow_objects_transferred_total"))})
                next_sample += args.sample
            time.sleep(1.0)
        # the changes stop: both destinations must converge on the source
        want = listing(work / "tree")
        converge_deadline = time.monotonic() + 120
        converged = False
        while time.monotonic() < converge_deadline:
            if listing(work / "mirror") == want and listing(work / "copy") == want:
                converged = True
                break
            time.sleep(1.0)
        state = jobs(port)
        last_metrics = metrics(port)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()

    base = [s for s in samples if s["t"] >= min(args.warmup, args.minutes * 30)] or samples
    k = max(1, len(base) // 10)
    start = {f: statistics.median(s[f] for s in base[:k]) for f in ("rss", "fds", "lag")}
    final = {f: statistics.median(s[f] for s in base[-k:]) for f in ("rss", "fds", "lag")}
    lag_max = max(s["lag_max"] for s in samples)
    slope = rss_slope(base)
    checks = {
        "rss": final["rss"] <= start["rss"] * 1.25 + 16 * 2**20,
        "fds": final["fds"] <= start["fds"] + 8,
        "lag": lag_max < 0.5,
        "converged": converged,
        "clean exit": code == 0,
    }
    mib = 2**20
    print(f"{'':14}{'start':>12}{'end':>12}{'peak':>12}")
    print(f"{'RSS':14}{start['rss'] / mib:>10.1f}Mi{final['rss'] / mib:>10.1f}Mi"
          f"{max(s['rss'] for s in samples) / mib:>10.1f}Mi")
    print(f"{'open fds':14}{start['fds']:>12.0f}{final['fds']:>12.0f}{max(s['fds'] for s in samples):>12.0f}")
    print(f"{'loop lag (s)':14}{start['lag']:>12.4f}{final['lag']:>12.4f}{lag_max:>12.4f}")
    print(f"RSS slope after the warm-up (least squares over {len(base)} samples): {slope / mib:+.2f} MiB/hour"
          + ("" if args.minutes >= 30 else " (a run under 30 minutes says little about it)"))
    runs = {name: sum(v for k, v in last_metrics.items()
                      if k.startswith("vertexflow_job_runs_total") and f'job="{name}"' in k) for name in state}
    print(f"objects transferred: {samples[-1]['objects']:.0f}; runs: {runs}; {len(samples)} samples; "
          f"last results: " + ", ".join(f"{n}={j['last_result']['outcome'] if j['last_result'] else None}"
                                        for n, j in state.items()))
    verdict = "PASS" if all(checks.values()) else "FAIL"
    print(f"verdict: {verdict} " + " ".join(f"{name}={'ok' if ok else 'FAILED'}" for name, ok in checks.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "samples": samples,
                                         "start": start, "end": final, "lag_max": lag_max,
                                         "rss_slope_bytes_per_hour": slope, "checks": checks,
                                         "verdict": verdict, "runs": runs}, indent=2))
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
