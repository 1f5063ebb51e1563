"""A short, fixed-seed chaos run: vertexflow's command line under network faults and signals loses nothing.

One round of every operation of ``vertexflow.testing.killer.OPERATIONS``
(copy and sync local <-> S3, S3 -> S3 and local -> the Yandex.Disk emulator,
move local -> S3, verify --fix both ways, backup create and restore, all
through the fault proxy; a 24 MiB multipart copy killed with SIGKILL, SIGTERM
and SIGINT, a move and a backup killed with SIGKILL, each rerun until it
exits 0; the daemon running a sync job through the faults, SIGKILLed and
restarted; Yandex.Disk -> local; a company migrated between two servers, live,
rolled back and with its migrator SIGKILLed, while a platform writer changes
its files), against SeaweedFS servers of its own. A failure names the seed that
replays it: ``python benchmarks/chaos.py --ops OP --seed SEED --rounds 1``.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from vertexflow.testing.killer import (
    EXIT_INTERRUPTED,
    MIGRATIONS,
    OPERATIONS,
    ChaosLab,
    RoundResult,
    Run,
    check_exit_status,
    check_foreign,
    check_journal_agrees,
    check_moved,
    check_no_multipart_uploads,
    check_no_temp_files,
    check_resend,
    check_whole,
    local_snapshot,
    make_tree,
    read_backups,
    reported_copies,
    run_cli,
    run_rounds,
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
    # the same lost create, whose one AbortMultipartUpload met a 500: the upload stayed after a sync that exited
    # 0; a multipart abort is now asked again like any idempotent request (daemon_job seed 255 met it too)
    pytest.param("sync_up", 258, id="sync_up-seed258-lost-create-abort-500"),
]


#: the in-suite labs' settings: signals land after the CLI's start-up and come one at a time (a signal during
#: start-up and signals again and again have tests of their own below; a second signal at a drawn moment is the
#: benchmark's); shorter stalls and delays than the benchmark's keep this file under 3 minutes, the faults
#: drawn are the same
LAB_SETTINGS: dict[str, Any] = dict(signal_window=(0.8, 2.0), second_signal=False, stall_seconds=1.5,
                                    delay_seconds=0.5)
#: seconds a migration test waits for its round (the three run one after another beside the other tests)
MIGRATIONS_WAIT = 600


@pytest.fixture(scope="module")
def migrations(
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ChaosLab, dict[str, Future[RoundResult]]]]:
    """The migration rounds, started with the first test that needs a lab and run one after another in a
    thread of their own, against servers of their own: a round waits mostly on its platform writer and its
    bandwidth limit, so it costs the other rounds little, and the file's time is not the sum of both.
    Faults a quarter as frequent as the other rounds' here: a migration makes many small requests one after
    another, and at the full rates a round takes minutes (the benchmark's)."""
    with ChaosLab(tmp_path_factory.mktemp("chaos-migrations"), yandex=False, **LAB_SETTINGS) as lab, \
            ThreadPoolExecutor(1, thread_name_prefix="chaos-migrations") as pool:
        lab.rates = {kind: rate / 4 for kind, rate in lab.rates.items()}
        futures = {op: pool.submit(lab.round, op, SEED) for op in MIGRATIONS}
        try:
            yield lab, futures
        finally:
            for future in futures.values():
                future.cancel()  # those not begun; the one running ends by itself (its runs are bounded)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory,
        migrations: tuple[ChaosLab, dict[str, Future[RoundResult]]]) -> Iterator[ChaosLab]:
    with ChaosLab(tmp_path_factory.mktemp("chaos"), **LAB_SETTINGS) as lab:
        yield lab


def assert_proved(result: RoundResult, operation: str) -> None:
    """No violation, and the round did what it was for: objects checked, faults injected or signals landed."""
    assert result.violations == [], "\n".join(map(str, result.violations))
    assert result.objects_checked > 0
    if OPERATIONS[operation][1] == "faults":
        assert sum(result.faults.values()) > 0, "no fault was injected: the round proved nothing"
    else:
        assert any(run.signal for run in result.runs), "no signal landed: the round proved nothing"


@pytest.mark.parametrize("operation", [op for op in OPERATIONS if op not in MIGRATIONS])
def test_nothing_is_lost(lab: ChaosLab, operation: str) -> None:
    result = lab.round(operation, SEED)
    assert_proved(result, operation)
    # a clean round leaves nothing behind: a long run's disk use is that of a few rounds
    prefix = f"{operation}-{SEED}"
    assert not (lab.workdir / prefix).exists()
    for client in lab.clients.values():
        left = client.list_objects_v2(Bucket="chaos", Prefix=prefix).get("Contents", [])
        left += client.list_objects_v2(Bucket="chaos", Prefix=f"foreign/{prefix}/").get("Contents", [])
        assert left == [], [o["Key"] for o in left]


@pytest.mark.parametrize("operation", MIGRATIONS)
def test_a_migrated_company_loses_nothing(migrations: tuple[ChaosLab, dict[str, Future[RoundResult]]],
                                         operation: str) -> None:
    """A company migrated between the two servers (live, rolled back, its migrator SIGKILLed) while a platform
    writer changes its files: every acknowledged write and original whole where it lives at the end. The
    round's bucket is then gone from both servers (a long run would exhaust their volumes)."""
    lab, futures = migrations
    result = futures[operation].result(timeout=MIGRATIONS_WAIT)
    assert_proved(result, operation)
    bucket = f"{operation}-{SEED}".replace("_", "-").lower()
    for client in lab.clients.values():
        assert bucket not in [b["Name"] for b in client.list_buckets()["Buckets"]]


@pytest.mark.parametrize(("operation", "seed"), KNOWN)
def test_known_violation(lab: ChaosLab, operation: str, seed: int) -> None:
    result = lab.round(operation, seed)
    assert result.violations == [], "\n".join(map(str, result.violations))


#: kill rounds the harness found a second signal killing the process in (exit -15 / -2 instead of 130):
#: each is replayed with the signal sent again every 50 ms until the run ends, so that a second one
#: lands at every stage of the shutdown (the harness's drawn moment only replays as far as timing does)
AGAIN_AND_AGAIN = [
    # kill_up_SIGTERM seed 1: two SIGTERMs early in a run (0.43 s, then within 0.5 s): the first was handled,
    # the second met the default action once the job's signal receiver was gone (and the interpreter's
    # finalization gives SIGTERM its default action back): exit -15
    pytest.param("kill_up_SIGTERM", 1, id="kill_up_SIGTERM-seed1-second-signal"),
    # the same with SIGINT: exit -2
    pytest.param("kill_up_SIGINT", 1, id="kill_up_SIGINT-seed1-second-signal"),
]


@pytest.mark.parametrize(("operation", "seed"), AGAIN_AND_AGAIN)
def test_signals_again_and_again_exit_130(lab: ChaosLab, operation: str, seed: int) -> None:
    """Every signalled run exits 130 (or 0 if it had finished), leaves no multipart upload and a journal that
    opens; the rerun completes every object."""
    lab.signal_every, lab.signal_window = 0.05, (0.3, 2.0)
    try:
        result = lab.round(operation, seed)
    finally:
        lab.signal_every, lab.signal_window = None, (0.8, 2.0)
    assert result.violations == [], "\n".join(map(str, result.violations))
    assert any(run.signal and " x" in run.signal for run in result.runs), "no run got a second signal"


def test_sigterm_during_start_up_exits_130_with_nothing_begun(tmp_path: Path) -> None:
    """A SIGTERM while the command starts (here: while it reads its config file, a FIFO it waits on)
    ends it with 130, before a journal or anything at the destination exists. (It exited -15: the
    handlers came with the job's event loop.)"""
    src, dst, journal = tmp_path / "src", tmp_path / "dst", tmp_path / "journal.db"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a")
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VERTEXFLOW_"))}
    env.update(VERTEXFLOW_CONFIG=str(fifo), VERTEXFLOW_JOURNAL=str(journal))
    proc = subprocess.Popen([sys.executable, "-m", "vertexflow", "copy", str(src), str(dst), "--json", "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        # a writer opens a FIFO without waiting only once a reader has it open: the command is at its config
        deadline = time.monotonic() + 60
        while True:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:
                if exc.errno != errno.ENXIO or proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the command never opened its config file (exit {proc.poll()})") from exc
                time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        os.write(fd, b"# an empty config\n")
        os.close(fd)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run = Run([], proc.returncode, out, err, 0.0, "SIGTERM", 0.0)
    assert check_exit_status(run, {EXIT_INTERRUPTED}) == []
    assert not dst.exists() and not journal.exists()


# -- the invariants catch what they should --------------------------------------

def test_whole_objects_catches_torn_missing_and_unexpected() -> None:
    src = {"a": "1" * 64, "b": "2" * 64}
    assert check_whole(dict(src), src, complete=True) == []
    problems = check_whole({"a": "f" * 64, "z": "3" * 64}, src, complete=True)
    assert [p.split(" ")[0] for p in problems] == ["torn", "unexpected", "missing"]
    assert check_whole({"a": src["a"]}, src, complete=False) == []
    assert check_whole({"a": src["a"], "old": "0" * 64}, src, complete=False, extra_ok={"old"}) == []


def test_rounds_cut_short_have_tried_every_operation() -> None:
    class Lab:
        def __init__(self) -> None:
            self.calls: list[tuple[str, int]] = []

        def round(self, op: str, seed: int) -> RoundResult:
            self.calls.append((op, seed))
            return RoundResult(op, seed)

    lab = Lab()
    ran = run_rounds(lab, ["a", "b"], 3, 10)  # type: ignore[arg-type]
    assert lab.calls == [("a", 10), ("b", 10), ("a", 11), ("b", 11), ("a", 12), ("b", 12)]
    assert [(r.operation, r.seed) for r in ran] == lab.calls
    cut = Lab()
    assert run_rounds(cut, ["a", "b"], 3, 10, deadline=time.monotonic() - 1) == []  # type: ignore[arg-type]


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


def test_moved_catches_lost_changed_and_left_behind() -> None:
    src = {"a": "1" * 64, "b": "2" * 64, "c": "3" * 64}
    assert check_moved({"a": src["a"]}, {"b": src["b"], "c": src["c"]}, src, done=False) == []
    assert check_moved({"a": src["a"]}, {"a": src["a"], "b": src["b"], "c": src["c"]}, src, done=False) == []
    assert check_moved({}, dict(src), src, done=True) == []
    problems = check_moved({"a": "f" * 64}, {"b": "e" * 64}, src, done=True)
    assert [p.split(" ")[0] for p in problems] == ["lost", "lost", "lost", "source", "moved"]


def test_foreign_objects_deleted_or_changed_are_seen(tmp_path: Path) -> None:
    kept, changed, gone = tmp_path / "kept", tmp_path / "changed", tmp_path / "gone"
    for p in (kept, changed, gone):
        p.write_bytes(b"mine")
    before = local_snapshot([kept, changed, gone])
    changed.write_bytes(b"yours")
    gone.unlink()
    problems = check_foreign(before, local_snapshot([kept, changed, gone]))
    assert [p.split("' ")[1].split(" ")[0] for p in problems] == ["changed:", "deleted"]
    assert problems[0].startswith(f"foreign object {str(changed)!r}") and str(kept) not in "".join(problems)


def test_resend_sees_an_object_sent_again(tmp_path: Path) -> None:
    report = tmp_path / "report.jsonl"
    report.write_text('{"key": "a", "action": "copied"}\n{"key": "b", "action": "skipped"}\n'
                      '{"key": "c", "action": "copied"}\n{"key": "d", "act')  # a killed run's last line
    assert reported_copies(report) == {"a", "c"}
    assert check_resend({"a", "c"}, {"b"}) == []
    assert check_resend({"a", "c"}, {"a", "b"}) == [
        "re-sent object 'a': it was whole at the destination before this run"]


def test_sigkill_while_a_multipart_upload_is_created_leaves_none(lab: ChaosLab, tmp_path: Path) -> None:
    """daemon_job seed 100 (a one-server lab): after the daemon's converging run an incomplete upload of
    multi/six.bin was left that no journal named. Replayed here with the command: the answer to the
    CreateMultipartUpload of a 6 MiB object held 30 s by the proxy (the server has made the upload), the
    command SIGKILLed meanwhile, then run again to exit 0: nothing incomplete may be left (the journal noted
    when the upload was asked for; the rerun finds it by its key and that time)."""
    prefix = "daemon_job-seed100-killed-create"
    src = tmp_path / "src"
    src.mkdir()
    (src / "six.bin").write_bytes(random.Random(100).randbytes(6 * 1024 * 1024 + 5))
    proxy = lab.proxies["a"]
    create = f"POST /chaos/{prefix}/six.bin?uploads"
    proxy.rearm(100, {})
    saved = proxy.force, proxy.delay_seconds
    proxy.force, proxy.delay_seconds = {f"{create}#0": "delay", f"{create}=#0": "delay"}, 30.0
    env = lab.environ(tmp_path)
    args = ["copy", str(src), f"a:chaos/{prefix}", "--json", "--no-progress"]
    try:
        proc = subprocess.Popen([sys.executable, "-m", "vertexflow", *args], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not any(i.startswith(create) for i in proxy.identities):
                assert proc.poll() is None and time.monotonic() < deadline, "the upload was never created"
                time.sleep(0.02)
            time.sleep(1.0)  # the server has answered; the proxy holds the answer back
            proc.kill()
        finally:
            proc.kill()
            proc.wait()
    finally:
        proxy.force, proxy.delay_seconds = saved
    assert lab.clients["a"].list_multipart_uploads(Bucket="chaos", Prefix=f"{prefix}/").get("Uploads")
    rerun = run_cli(args, env)
    assert rerun.code == 0, rerun.err
    assert check_no_multipart_uploads(lab.clients["a"], "chaos", prefix) == []


def test_backups_read_back_catch_a_missing_part_and_mark_the_incomplete(lab: ChaosLab, tmp_path: Path) -> None:
    """read_backups (boto3, gzip and tarfile only) reads a whole backup's files; a folder without metadata.json
    is incomplete; one whose metadata names a part that is gone or differs is an error, not a backup."""
    src = tmp_path / "src"
    tree = make_tree(src, random.Random(5))
    prefix = "read-backups"
    lab.proxies["a"].rearm(0, {})
    env = lab.environ(tmp_path)
    made = run_cli(["backup", "create", "--type", "storage", "--storage", str(src), "--to", f"a:chaos/{prefix}",
                    "--chunk-size", "4M", "--json"], env)
    assert made.code == 0, made.err
    bid = made.summary()["backup"]
    client = lab.clients["a"]
    assert read_backups(client, "chaos", prefix) == {bid: tree}
    part = f"{prefix}/{bid}/storage.tar.gz.part0001"
    body = client.get_object(Bucket="chaos", Key=part)["Body"].read()
    client.put_object(Bucket="chaos", Key=part, Body=body[:-1] + bytes([body[-1] ^ 1]))
    with pytest.raises(ValueError, match="part0001 differs"):
        read_backups(client, "chaos", prefix)
    client.delete_object(Bucket="chaos", Key=part)
    with pytest.raises(ValueError, match="part0001 is missing"):
        read_backups(client, "chaos", prefix)
    client.delete_object(Bucket="chaos", Key=f"{prefix}/{bid}/metadata.json")
    assert read_backups(client, "chaos", prefix) == {bid: None}


def test_journal_must_agree_with_the_destination(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE objects (key TEXT, action TEXT, state TEXT, sha256 TEXT)")
        db.execute("CREATE TABLE dest_index (key TEXT, sha256 TEXT)")
        db.executemany("INSERT INTO objects VALUES (?, ?, ?, ?)", [
            ("a", "copy", "done", "1" * 64), ("b", "copy", "planned", "2" * 64), ("c", "delete", "done", None)])
        db.execute("INSERT INTO dest_index VALUES ('a', ?)", ("1" * 64,))
    assert check_journal_agrees(path, {"a": "1" * 64}) == []
    assert check_journal_agrees(tmp_path / "none.db", {}) == []
    problems = check_journal_agrees(path, {"a": "f" * 64})
    assert len(problems) == 2 and all(p.startswith("the journal has 'a'") for p in problems)
    assert check_journal_agrees(path, {})[0].endswith("has no such object")
    # kill_up_SIGKILL seed 357: a run killed while it made its journal left the file without its tables yet;
    # it records nothing (the next run makes them), which agrees with any destination
    bare = tmp_path / "bare.db"
    with closing(sqlite3.connect(bare)) as db, db:
        db.execute("PRAGMA user_version = 0")
    assert check_journal_agrees(bare, {"a": "1" * 64}) == []


def test_abort_while_a_multipart_upload_is_created_leaves_none(lab: ChaosLab, tmp_path: Path) -> None:
    """kill_up_SIGTERM seed 3 (the 10-round benchmark, timing-dependent): after SIGTERM x2, exit 130 with an
    incomplete upload of multi/six.bin. Replayed here: the proxy holds the answer to a 6 MiB object's
    CreateMultipartUpload for 4 s (the server has made the upload), two SIGTERMs 0.1 s apart meanwhile: the
    run exits 130, and an interrupted run leaves no multipart upload (README): the upload's checkpoint was
    being saved when the abort came, and that cancellation skipped the abort of the upload just made."""
    prefix = "kill_up_SIGTERM-seed3-abort-during-create"
    src = tmp_path / "src"
    src.mkdir()
    (src / "six.bin").write_bytes(random.Random(3).randbytes(6 * 1024 * 1024 + 5))
    proxy = lab.proxies["a"]
    create = f"POST /chaos/{prefix}/six.bin?uploads"
    proxy.rearm(3, {})
    saved = proxy.force, proxy.delay_seconds
    proxy.force, proxy.delay_seconds = {f"{create}#0": "delay", f"{create}=#0": "delay"}, 4.0
    try:
        proc = subprocess.Popen([sys.executable, "-m", "vertexflow", "copy", str(src), f"a:chaos/{prefix}", "--json",
                                 "--no-progress"], env=lab.environ(tmp_path), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        try:
            deadline = time.monotonic() + 60
            while not any(i.startswith(create) for i in proxy.identities):
                assert proc.poll() is None and time.monotonic() < deadline, "the upload was never created"
                time.sleep(0.02)
            time.sleep(0.5)  # the server has answered; the proxy holds the answer back
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        proxy.force, proxy.delay_seconds = saved
    assert check_exit_status(Run([], proc.returncode, out, err, 0.0, "SIGTERM x2", 0.5), {EXIT_INTERRUPTED}) == []
    assert check_no_multipart_uploads(lab.clients["a"], "chaos", prefix) == []
