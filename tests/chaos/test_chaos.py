"""A short, fixed-seed chaos run: vertexflow's command line under network faults and signals loses nothing.

One round of every operation of ``vertexflow.testing.killer.OPERATIONS``
(copy and sync local <-> S3, S3 -> S3 and local -> the Yandex.Disk emulator
through the fault proxy; a 24 MiB
multipart copy killed with SIGKILL, SIGTERM and SIGINT, then rerun until it
exits 0), against SeaweedFS servers of its own. A failure names the seed that
replays it: ``python benchmarks/chaos.py --ops OP --seed SEED --rounds 1``.
"""

from __future__ import annotations

from collections.abc import Iterator
import os
import signal
from pathlib import Path

import pytest

from vertexflow.testing.killer import (
    EXIT_INTERRUPTED,
    OPERATIONS,
    ChaosLab,
    Run,
    check_exit_status,
    check_no_temp_files,
    check_whole,
    run_cli,
)

pytestmark = [pytest.mark.s3, pytest.mark.slow]

SEED = 100

#: violations the harness found, fixed since; each replays its operation and seed as a regression test
KNOWN = [
    # one byte flipped in a GET of a 6 MiB object read in two ranged GETs (above the 5 MiB part size) went
    # unnoticed: the S3 download now checks a plain-MD5 ETag across all the answers of a whole object
    pytest.param("copy_down", 15, id="copy_down-seed15-torn-download"),
    # the answer to CreateMultipartUpload cut: the server kept an upload whose id the client never learnt;
    # the S3 backend now aborts the uploads of that key begun since it asked
    pytest.param("copy_up", 7, id="copy_up-seed7-lost-create"),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosLab]:
    # signals land after the CLI's start-up and come one at a time here: a signal during start-up,
    # and a second signal (abort) racing an upload's creation, are in KNOWN / the benchmark
    # (shorter stalls and delays than the benchmark's keep this file under 90 s; the faults drawn are the same)
    with ChaosLab(tmp_path_factory.mktemp("chaos"), signal_window=(0.8, 2.0), second_signal=False,
                  stall_seconds=1.5, delay_seconds=0.5) as lab:
        yield lab


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_nothing_is_lost(lab: ChaosLab, operation: str) -> None:
    result = lab.round(operation, SEED)
    assert result.violations == [], "\n".join(map(str, result.violations))
    assert result.objects_checked > 0
    if OPERATIONS[operation][1] == "faults":
        assert sum(result.faults.values()) > 0, "no fault was injected: the round proved nothing"
    else:
        assert any(run.signal for run in result.runs), "no signal landed: the round proved nothing"


@pytest.mark.parametrize(("operation", "seed"), KNOWN)
def test_known_violation(lab: ChaosLab, operation: str, seed: int) -> None:
    result = lab.round(operation, seed)
    assert result.violations == [], "\n".join(map(str, result.violations))


@pytest.mark.xfail(strict=True, reason="SIGTERM during start-up exits -15, not the documented 130")
def test_sigterm_during_start_up_exits_as_documented(tmp_path: Path) -> None:
    """Before the CLI installs its handlers, SIGTERM kills the process (-15), where the documented
    status of an interrupted run is 130. (The kill rounds found a related window, not replayable by
    seed alone since it is a matter of timing: kill_up_SIGTERM seed 1, two SIGTERMs early in a run
    (0.43 s, then within 0.5 s): the first is handled ("stopping"), the second kills the process,
    -15; likewise two SIGINTs at 0.35-0.45 s, 0.1 s apart, exit -2.)"""
    run = run_cli(["copy", str(tmp_path / "nothing"), str(tmp_path / "dst")], dict(os.environ),
                  sig=signal.SIGTERM, at=0.05)
    assert check_exit_status(run, {EXIT_INTERRUPTED, 0, 2}) == []


# -- the invariants catch what they should --------------------------------------

def test_whole_objects_catches_torn_missing_and_unexpected() -> None:
    src = {"a": "1" * 64, "b": "2" * 64}
    assert check_whole(dict(src), src, complete=True) == []
    problems = check_whole({"a": "f" * 64, "z": "3" * 64}, src, complete=True)
    assert [p.split(" ")[0] for p in problems] == ["torn", "unexpected", "missing"]
    assert check_whole({"a": src["a"]}, src, complete=False) == []
    assert check_whole({"a": src["a"], "old": "0" * 64}, src, complete=False, extra_ok={"old"}) == []


def test_temporary_files_are_seen(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_bytes(b"x")
    assert check_no_temp_files(tmp_path) == []
    (tmp_path / "d" / ".vertexflow-tmp-0a1b2c3d-123-00000000abcd").write_bytes(b"")
    assert check_no_temp_files(tmp_path) == ["temporary file left: d/.vertexflow-tmp-0a1b2c3d-123-00000000abcd"]


def test_exit_status_must_be_documented_and_agree_with_the_summary() -> None:
    ok = '{"failed": 0, "failures": [], "interrupted": false, "fatal_error": null}'
    assert check_exit_status(Run([], 0, ok, "", 1.0)) == []
    assert check_exit_status(Run([], 3, "", "", 1.0))
    assert check_exit_status(Run([], 1, ok, "", 1.0)) == ["exit 1 but the summary names no failure"]
    assert check_exit_status(Run([], 130, ok, "", 1.0)) == ["exit 130 but the summary does not say interrupted"]
    assert check_exit_status(Run([], 0, ok, "Traceback (most recent call last):\n  boom", 1.0))
    assert check_exit_status(Run([], -9, "", "", 1.0, hung=True)) == ["hung: still running after 1 s"]
