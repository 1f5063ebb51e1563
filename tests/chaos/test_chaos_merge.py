"""``benchmarks/chaos.py --merge``: runs made side by side summed into one table, a round counted once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "chaos.py"


def _row(op: str, seed: int, *, faults: dict[str, int] | None = None, signals: list[str | None] | None = None,
         checked: int = 3, violations: list[str] | None = None) -> dict:
    signals = signals or [None]
    return {"operation": op, "seed": seed, "faults": faults or {}, "exits": [0] * len(signals),
            "signals": signals, "objects_checked": checked, "violations": violations or [], "seconds": 4.0 + seed}


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps({"rounds": 1, "seed": 1, "seconds": 12.0, "rates": {}, "results": rows}))
    return path


def _merge(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--merge", *map(str, paths)],
                          capture_output=True, text=True, timeout=60)


def test_merge_sums_every_run_and_names_the_seeds(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.json", [_row("copy_up", 1, faults={"error": 2}), _row("copy_up", 2, faults={"stall": 1}),
                                     _row("kill_up_SIGKILL", 1, signals=["SIGKILL at 1.0s", None], checked=5)])
    b = _write(tmp_path / "b.json", [_row("copy_up", 4, faults={"error": 1}),
                                     _row("kill_up_SIGKILL", 2, signals=["SIGKILL at 0.5s", None], checked=5)])
    done = _merge(a, b)
    assert done.returncode == 0, done.stderr
    assert "all: 5 rounds, 4 faults injected, 2 signals, 19 objects checked, 0 violations" in done.stdout
    assert "- copy_up: 3 rounds, seeds 1-2, 4, 6.3 s a round" in done.stdout
    assert "- kill_up_SIGKILL: 2 rounds, seeds 1-2, 5.5 s a round" in done.stdout
    assert "| **copy_up** (copy local -> S3) | all | 3 | 4 | 3 | 9 | 0 |" in done.stdout
    assert "| copy_up | 3 | 4 | 0 | 9 | 0 |" in done.stdout and "| kill_up_SIGKILL | 2 | 0 | 2 | 10 | 0 |" in done.stdout


def test_merge_reports_violations_and_refuses_a_round_twice(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.json", [_row("copy_down", 7, violations=["copy_down seed=7 [whole] torn: x"])])
    done = _merge(a)
    assert done.returncode == 1
    assert "* copy_down seed=7 [whole] torn: x" in done.stdout
    b = _write(tmp_path / "b.json", [_row("copy_down", 7)])
    twice = _merge(a, b)
    assert twice.returncode == 2
    assert "copy_down seed 7 is also in" in twice.stderr


@pytest.mark.s3
@pytest.mark.slow
def test_jobs_run_side_by_side_and_share_the_seeds(tmp_path: Path) -> None:
    """``--jobs 2``: two runs at once, each with servers of its own and half the seeds, in one table."""
    out = tmp_path / "all.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--rounds", "2", "--seed", "5", "--jobs", "2",
                           "--ops", "copy_up", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "--jobs 2 --ops copy_up`" in done.stdout
    assert "- copy_up: 2 rounds, seeds 5-6, " in done.stdout and " s a round" in done.stdout
    rows = json.loads(out.read_text())["results"]
    assert sorted(r["seed"] for r in rows) == [5, 6]
    assert all(r["objects_checked"] > 0 and r["violations"] == [] for r in rows)
    # the seeds were shared: each run's progress names its one seed
    assert done.stderr.count("copy_up seed=5:") == 1 and done.stderr.count("copy_up seed=6:") == 1
