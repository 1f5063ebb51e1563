"""Local faults for real (issue 25, item 6) and durability (item 7): a full disk, a destination made
read-only mid-run, a locked journal and two runs of one job, a source file changed while it is read,
fsync before a write becomes visible.

Each fault is real: a small tmpfs that fills up (mounted here; skipped where mounting is not allowed),
``mount -o remount,ro`` (root ignores file modes), another process holding SQLite's lock, a file
truncated or rewritten by the test while vertexflow reads it under ``--bwlimit``. What vertexflow
left is checked with hashlib and sqlite3, never through vertexflow.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import Result, vf
from vertexflow.backends.local import TMP_PREFIX

NO_SPACE = "no space"


class Tmpfs:
    """A tmpfs mounted at ``path``: ``resize`` and ``read_only`` change it for real."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def resize(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def read_only(self, ro: bool = True) -> None:
        subprocess.run(["mount", "-o", "remount,ro" if ro else "remount,rw", str(self.path)], check=True)


def mount_tmpfs(path: Path, size: str) -> Iterator[Tmpfs]:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {r.stderr.decode().strip()}")
    try:
        yield Tmpfs(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[Tmpfs]:
    """A 2 MiB tmpfs."""
    yield from mount_tmpfs(tmp_path / "tiny", "2m")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(f"{TMP_PREFIX}*")] if root.exists() else []


def files(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``root`` but vertexflow's temporary ones."""
    return {p.relative_to(root).as_posix(): sha(p) for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(TMP_PREFIX)} if root.exists() else {}


def make_source(root: Path, n: int, size: int) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"f{i}.bin").write_bytes(os.urandom(size))
    return files(root)


def error_lines(r: Result) -> list[str]:
    return [line for line in r.err.splitlines() if line.startswith("vertexflow: error:")]


def assert_full_disk(r: Result, where: Path) -> None:
    assert r.code == 2, (r.code, r.out, r.err)
    lines = error_lines(r)
    assert len(lines) == 1, r.err  # one message, no traceback
    assert "Traceback" not in r.err
    assert NO_SPACE in lines[0].lower() and str(where) in lines[0], lines[0]


def journal_jobs(path: str) -> list[tuple[int, str]]:
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return db.execute("SELECT id, state FROM jobs ORDER BY id").fetchall()
    finally:
        db.close()


def done_rows(path: str) -> dict[str, str | None]:
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT key, sha256 FROM objects WHERE action = 'copy' AND state = 'done'"))
    finally:
        db.close()


# -- a full disk ------------------------------------------------------------------------------------


def test_local_copy_onto_a_full_disk_stops_once_and_the_rerun_completes(tmp_path: Path, tiny: Tmpfs) -> None:
    made = make_source(tmp_path / "src", 6, 700 * 1024)
    dst = tiny.path / "dst"
    r = vf("copy", str(tmp_path / "src"), str(dst))
    assert_full_disk(r, dst)
    assert temp_files(tiny.path) == []
    landed = files(dst)
    assert landed and all(made[k] == v for k, v in landed.items())  # whole, or not there
    assert len(landed) < len(made)
    tiny.resize("8m")
    r = vf("copy", str(tmp_path / "src"), str(dst))
    assert r.code == 0, r.err
    assert files(dst) == made and temp_files(tiny.path) == []


def test_s3_to_local_onto_a_full_disk_stops_once_and_the_rerun_completes(
        tmp_path: Path, tiny: Tmpfs, seaweed, s3_bucket: str, s3_env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    client = seaweed.boto3_client()
    made = {}
    for i in range(6):
        data = os.urandom(700 * 1024)
        client.put_object(Bucket=s3_bucket, Key=f"in/f{i}.bin", Body=data)
        made[f"f{i}.bin"] = hashlib.sha256(data).hexdigest()
    dst = tiny.path / "dst"
    r = vf("copy", f"s3://{s3_bucket}/in", str(dst))
    assert_full_disk(r, dst)
    assert temp_files(tiny.path) == []
    landed = files(dst)
    assert len(landed) < len(made) and all(made[k] == v for k, v in landed.items())
    tiny.resize("8m")
    r = vf("copy", f"s3://{s3_bucket}/in", str(dst))
    assert r.code == 0, r.err
    assert files(dst) == made and temp_files(tiny.path) == []


def test_backup_restore_onto_a_full_disk_stops_once_and_the_rerun_completes(tmp_path: Path, tiny: Tmpfs) -> None:
    made = make_source(tmp_path / "data", 6, 700 * 1024)
    r = vf("backup", "create", "--type", "storage", "--storage", str(tmp_path / "data"),
           "--to", str(tmp_path / "backups"), "--json")
    assert r.code == 0, r.err
    meta = next((tmp_path / "backups").rglob("metadata.json"))
    target = tiny.path / "restored"
    r = vf("backup", "restore", str(meta), "--target-storage", str(target))
    assert_full_disk(r, target)
    assert temp_files(tiny.path) == []
    landed = files(target)
    assert len(landed) < len(made) and all(made[k] == v for k, v in landed.items())
    tiny.resize("8m")
    r = vf("backup", "restore", str(meta), "--target-storage", str(target))
    assert r.code == 0, r.err
    assert files(target) == made and temp_files(tiny.path) == []


def test_kill_restore_sigkill_seed2_a_restore_killed_mid_file_leaves_no_temporary_file_after_its_rerun(
        tmp_path: Path) -> None:
    """kill_restore_SIGKILL seeds 2 and 3: a restore SIGKILLed while it wrote a file left that file's temporary
    copy, and the rerun (which lists nothing at the target) never removed it. The rerun now sweeps, once per
    folder it writes into, the temporary files of dead runs of this host."""
    made = make_source(tmp_path / "data" / "sub", 3, 12 * 1024 * 1024)
    r = vf("backup", "create", "--type", "storage", "--storage", str(tmp_path / "data"),
           "--to", str(tmp_path / "backups"), "--json")
    assert r.code == 0, r.err
    meta = next((tmp_path / "backups").rglob("metadata.json"))
    target = tmp_path / "restored"
    proc = subprocess.Popen([sys.executable, "-m", "vertexflow", "backup", "restore", str(meta),
                             "--target-storage", str(target)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not temp_files(target):
            assert proc.poll() is None, f"the restore ended before a temporary file was seen: {proc.stderr.read()!r}"
            assert time.monotonic() < deadline, "no temporary file seen"
            time.sleep(0.005)
        proc.kill()
    finally:
        proc.kill()
        proc.wait()
    left = temp_files(target)
    assert left, "killed: its temporary file stays until a run of this host meets it"
    r = vf("backup", "restore", str(meta), "--target-storage", str(target))
    assert r.code == 0, r.err
    assert files(target) == {f"sub/{k}": v for k, v in made.items()}
    assert temp_files(target) == [], "the rerun left the killed run's temporary file"


def test_a_journal_on_a_full_disk_stops_the_job_with_one_message_and_still_opens(tmp_path: Path, tiny: Tmpfs) -> None:
    src = tmp_path / "src"
    for i in range(2000):
        (src / f"d{i % 20}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 20}" / f"a-file-with-a-long-enough-name-{i:05}.txt").write_bytes(os.urandom(64))
    made = files(src)
    (tiny.path / "filler").write_bytes(b"\0" * (1900 * 1024))  # leaves ~150 KiB for the journal
    journal = str(tiny.path / "journal.db")
    dst = tmp_path / "dst"
    r = vf("copy", str(src), str(dst), "--journal", journal)
    assert_full_disk(r, Path(journal))
    assert temp_files(dst) == []
    assert all(made[k] == v for k, v in files(dst).items())
    (tiny.path / "filler").unlink()
    # the journal opens, and claims nothing the destination does not hold whole
    assert journal_jobs(journal)
    assert all(made[k] == v for k, v in done_rows(journal).items() if v)
    r = vf("copy", str(src), str(dst), "--journal", journal)
    assert r.code == 0, r.err
    assert files(dst) == made
    assert journal_jobs(journal)[-1][1] == "done"


# -- a destination made read-only while a copy runs -----------------------------------------------------


def test_destination_made_read_only_mid_run_stops_the_job_and_leaves_nothing_partial(tmp_path: Path) -> None:
    made = make_source(tmp_path / "src", 3, 3 << 20)
    dst = tmp_path / "dst"
    dst.mkdir()
    p = subprocess.Popen([sys.executable, "-m", "vertexflow", "copy", str(tmp_path / "src"), str(dst),
                          "--bwlimit", "2M", "--transfers", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mounted = False
    try:
        deadline = time.monotonic() + 60
        while not temp_files(dst) and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.05)
        assert temp_files(dst), "the copy never started writing"
        # a read-only bind mount over the destination (a remount of a file system with a file open for
        # writing is refused): the open temporary file can still be written, not renamed nor removed
        r = subprocess.run(["mount", "--bind", str(dst), str(dst)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot bind-mount here (needs root or CAP_SYS_ADMIN): {r.stderr.decode().strip()}")
        mounted = True
        subprocess.run(["mount", "-o", "remount,bind,ro", str(dst)], check=True)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if mounted:
            subprocess.run(["umount", str(dst)], check=False)
    r = Result(p.returncode, out, err)
    assert r.code == 2, (r.out, r.err)
    lines = error_lines(r)
    assert len(lines) == 1 and "read-only" in lines[0].lower() and str(dst) in lines[0], r.err
    assert "Traceback" not in r.err
    assert len(files(dst)) < len(made) and all(made[k] == v for k, v in files(dst).items())  # whole, or absent
    # the temporary file the read-only mount kept is swept by the next run, which completes
    r = vf("copy", str(tmp_path / "src"), str(dst))
    assert r.code == 0, r.err
    assert files(dst) == made and temp_files(dst) == []


# -- the journal locked, one job run twice at once ------------------------------------------------------

HOLD_LOCK = textwrap.dedent("""
    import sqlite3, sys, time
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("CREATE TABLE IF NOT EXISTS other_program (x)")
    db.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    db.execute("COMMIT")
""")


def hold_lock(journal: str, seconds: float) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, journal, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "locked"
    return p


def test_a_journal_locked_for_a_while_is_waited_for(tmp_path: Path) -> None:
    made = make_source(tmp_path / "src", 20, 1000)
    journal = str(tmp_path / "j" / "journal.db")
    assert vf("jobs", "list", "--journal", journal).code == 0  # makes the journal
    holder = hold_lock(journal, 3)
    try:
        started = time.monotonic()
        r = vf("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--journal", journal)
        assert r.code == 0, r.err
        assert time.monotonic() - started >= 2  # it waited for the lock rather than failing
    finally:
        holder.wait(timeout=30)
    assert files(tmp_path / "dst") == made


async def test_a_journal_locked_for_longer_than_the_wait_is_refused_naming_it(tmp_path: Path) -> None:
    from vertexflow.errors import VertexflowError
    from vertexflow.state.journal import Journal

    journal = tmp_path / "journal.db"
    async with await Journal.open(journal):
        pass
    holder = hold_lock(str(journal), 20)
    try:
        started = time.monotonic()
        async with await Journal.open(journal, wait=1) as j:  # reading goes on beside a writer (WAL)
            with pytest.raises(VertexflowError) as info:
                await j.start_job("copy", "/a", "/b", {})
        assert time.monotonic() - started < 10
    finally:
        holder.kill()
        holder.wait()
    message = str(info.value)
    assert "locked" in message and str(journal) in message and "another process" in message
    assert info.value.fatal


def test_two_runs_of_one_job_at_once_one_refuses_and_the_other_completes(tmp_path: Path) -> None:
    made = make_source(tmp_path / "src", 24, 256 * 1024)  # 6 s at 1 MiB/s: the second starts meanwhile
    journal = str(tmp_path / "journal.db")
    args = [sys.executable, "-m", "vertexflow", "copy", str(tmp_path / "src"), str(tmp_path / "dst"),
            "--journal", journal, "--bwlimit", "1M", "--transfers", "2"]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (temp_files(tmp_path / "dst") or files(tmp_path / "dst")) and time.monotonic() < deadline \
                and first.poll() is None:
            time.sleep(0.05)  # writing: the first run has its job
        assert first.poll() is None, "the first run ended before the second started"
        second = vf(*args[3:])
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert second.code == 2, (second.out, second.err)
    lines = error_lines(second)
    assert len(lines) == 1 and "another vertexflow" in lines[0] and journal in lines[0], second.err
    assert first.returncode == 0, err
    assert files(tmp_path / "dst") == made and temp_files(tmp_path / "dst") == []
    jobs = journal_jobs(journal)
    assert [state for _, state in jobs] == ["done"]  # the refused run started no job and touched none
    assert {k: v for k, v in done_rows(journal).items()} == made


# -- a source file changed while it is read -------------------------------------------------------------

SOURCE_SIZE = 6 << 20


def change(path: Path, how: str) -> None:
    if how == "truncated":
        os.truncate(path, SOURCE_SIZE // 2)
    elif how == "grown":
        with open(path, "ab") as f:
            f.write(os.urandom(1 << 20))
    elif how == "rewritten":  # same size, other bytes, in place
        with open(path, "r+b") as f:
            f.write(os.urandom(SOURCE_SIZE))
    else:  # replaced: a new file renamed over it
        new = path.with_name("new.tmp")
        new.write_bytes(os.urandom(SOURCE_SIZE))
        os.replace(new, path)


@pytest.mark.parametrize("how", ["truncated", "grown", "rewritten", "replaced"])
def test_source_changed_while_read_is_never_recorded_with_mixed_content(tmp_path: Path, how: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    before = os.urandom(SOURCE_SIZE)
    (src / "big.bin").write_bytes(before)
    journal = str(tmp_path / "journal.db")
    dst = tmp_path / "dst"
    p = subprocess.Popen([sys.executable, "-m", "vertexflow", "copy", str(src), str(dst), "--journal", journal,
                          "--bwlimit", "2M", "--retries", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not temp_files(dst) and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.02)
        assert temp_files(dst), "the copy never started writing"
        change(src / "big.bin", how)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    after = (src / "big.bin").read_bytes()
    whole = {hashlib.sha256(before).hexdigest(), hashlib.sha256(after).hexdigest()}
    landed = files(dst)
    assert temp_files(dst) == []
    recorded = done_rows(journal)
    if p.returncode == 0:  # copied one whole version (the file replaced: the one opened)
        assert landed["big.bin"] in whole and recorded["big.bin"] == landed["big.bin"]
    else:  # or failed, saying why, with nothing at the destination nor recorded as copied
        assert p.returncode == 1, err
        assert "[source_changed]" in err and "changed while it was read" in err, err
        assert landed == {} and recorded == {}


# -- fsync before a write is visible ----------------------------------------------------------------------

COUNT_FSYNC = textwrap.dedent("""
    import atexit, os, runpy, sys
    import vertexflow.durability as durability
    calls = {"file": 0, "dir": 0}
    real, real_fs = os.fsync, durability.sync_filesystem
    def counting(fd):
        import stat
        calls["dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"] += 1
        return real(fd)
    def counting_fs(path):  # a batch of files made durable at once counts for each of them
        calls["file"] += 1
        return real_fs(path)
    os.fsync = counting
    durability.sync_filesystem = counting_fs
    atexit.register(lambda: print("FSYNC", calls["file"], calls["dir"], file=sys.stderr))
    sys.argv = ["vertexflow", *sys.argv[1:]]
    runpy.run_module("vertexflow", run_name="__main__")
""")


def counted(*args: str, env: dict[str, str] | None = None) -> tuple[Result, int, int]:
    p = subprocess.run([sys.executable, "-c", COUNT_FSYNC, *args], capture_output=True, text=True,
                       env={**os.environ, **(env or {})}, timeout=120)
    line = next(line for line in p.stderr.splitlines() if line.startswith("FSYNC "))
    _, file_syncs, dir_syncs = line.split()
    return Result(p.returncode, p.stdout, p.stderr), int(file_syncs), int(dir_syncs)


def test_local_writes_are_fsynced_before_they_are_visible_unless_no_fsync(tmp_path: Path) -> None:
    made = make_source(tmp_path / "src", 5, 3000)
    (tmp_path / "src" / "big.bin").write_bytes(os.urandom(3 << 20))  # the streamed route too
    made = files(tmp_path / "src")
    r, file_syncs, dir_syncs = counted("copy", str(tmp_path / "src"), str(tmp_path / "a"))
    assert r.code == 0, r.err
    assert file_syncs >= 2 and dir_syncs >= 1  # the large file's fsync, and a sync of the small files' batch
    for args, env in ((("--no-fsync",), None), ((), {"VERTEXFLOW_NO_FSYNC": "true"})):
        dst = tmp_path / f"b{len(args)}"
        r, file_syncs, dir_syncs = counted(*args, "copy", str(tmp_path / "src"), str(dst), env=env)
        assert r.code == 0, r.err
        assert (file_syncs, dir_syncs) == (0, 0)
        assert files(dst) == made
    # after the command, as global options may come
    r, file_syncs, dir_syncs = counted("copy", str(tmp_path / "src"), str(tmp_path / "c"), "--no-fsync")
    assert r.code == 0 and (file_syncs, dir_syncs) == (0, 0), r.err


def strace_fsyncs(*args: str) -> tuple[Result, int]:
    """The command run under strace, which follows its worker processes too; and its fsync calls."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed: the fsync calls of worker processes cannot be counted")
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as counts:
        p = subprocess.run(["strace", "-f", "-qq", "-c", "-o", counts.name, "-e", "trace=fsync,fdatasync,syncfs",
                            sys.executable, "-m", "vertexflow", *args], capture_output=True, text=True, timeout=300)
        if "PTRACE" in p.stderr or "Operation not permitted" in p.stderr:
            pytest.skip(f"strace cannot trace here: {p.stderr.strip()[:200]}")
        calls = sum(int(line.split()[3]) for line in counts.read().splitlines()
                    if line.split()[-1:] in (["fsync"], ["fdatasync"], ["syncfs"]))
    return Result(p.returncode, p.stdout, p.stderr), calls


def test_worker_processes_follow_no_fsync(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(400):  # past the 256 small files after which batches go to worker processes
        (src / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 4}" / f"f{i}").write_bytes(os.urandom(100))
    made = files(src)
    r, calls = strace_fsyncs("copy", str(src), str(tmp_path / "a"), "--no-journal", "--json")
    assert r.code == 0, r.err
    # a batch's files synced together (syncfs), then each folder they went into
    assert calls >= 4 and files(tmp_path / "a") == made
    r, calls = strace_fsyncs("--no-fsync", "copy", str(src), str(tmp_path / "b"), "--no-journal", "--json")
    assert r.code == 0, r.err
    assert calls == 0 and files(tmp_path / "b") == made


def strace_writebacks(*args: str) -> tuple[Result, dict[int, int]]:
    """The command under strace: bytes handed to sync_file_range per file descriptor number."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed: the writeback requests cannot be counted")
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as trace:
        p = subprocess.run(["strace", "-f", "-qq", "-o", trace.name, "-e", "trace=sync_file_range",
                            sys.executable, "-m", "vertexflow", *args], capture_output=True, text=True, timeout=300)
        if "PTRACE" in p.stderr or "Operation not permitted" in p.stderr:
            pytest.skip(f"strace cannot trace here: {p.stderr.strip()[:200]}")
        handed: dict[int, int] = {}
        for line in trace.read().splitlines():
            if "sync_file_range(" in line and "= 0" in line:
                fd, _offset, length = line.split("sync_file_range(", 1)[1].split(",")[:3]
                handed[int(fd)] = handed.get(int(fd), 0) + int(length)
    return Result(p.returncode, p.stdout, p.stderr), handed


def test_a_large_file_goes_to_the_disk_as_it_is_written_not_all_at_its_fsync(tmp_path: Path) -> None:
    # with fsync the file's writeback is started every 8 MiB, so the fsync before the rename waits for the
    # last piece only; --no-fsync asks nothing of the disk
    (tmp_path / "src").mkdir()
    data = os.urandom(40 << 20)
    (tmp_path / "src" / "big.bin").write_bytes(data)
    r, handed = strace_writebacks("copy", str(tmp_path / "src"), str(tmp_path / "a"), "--no-journal")
    assert r.code == 0, r.err
    assert (tmp_path / "a" / "big.bin").read_bytes() == data
    assert handed and max(handed.values()) >= 32 << 20, handed
    r, handed = strace_writebacks("--no-fsync", "copy", str(tmp_path / "src"), str(tmp_path / "b"), "--no-journal")
    assert r.code == 0 and handed == {}, (r.err, handed)


def test_a_large_download_goes_to_the_disk_as_it_arrives(tmp_path: Path, seaweed: Any, s3_bucket: str,
                                                         s3_env: dict[str, str]) -> None:
    data = os.urandom(40 << 20)
    seaweed.boto3_client().put_object(Bucket=s3_bucket, Key="in/big.bin", Body=data)
    r, handed = strace_writebacks("copy", f"s3://{s3_bucket}/in", str(tmp_path / "a"), "--no-journal")
    assert r.code == 0, r.err
    assert (tmp_path / "a" / "big.bin").read_bytes() == data
    assert handed and max(handed.values()) >= 32 << 20, handed


def test_backup_parts_and_restored_files_are_fsynced(tmp_path: Path) -> None:
    make_source(tmp_path / "data", 4, 5000)
    r, file_syncs, dir_syncs = counted("backup", "create", "--type", "storage", "--storage", str(tmp_path / "data"),
                                       "--to", str(tmp_path / "backups"))
    assert r.code == 0, r.err
    stored = [p for p in (tmp_path / "backups").rglob("*") if p.is_file()]
    assert file_syncs >= len(stored) and dir_syncs >= 1
    meta = next((tmp_path / "backups").rglob("metadata.json"))
    r, file_syncs, dir_syncs = counted("backup", "restore", str(meta), "--target-storage", str(tmp_path / "t"))
    assert r.code == 0, r.err
    assert file_syncs >= 4 and dir_syncs >= 1
    r, file_syncs, dir_syncs = counted("--no-fsync", "backup", "restore", str(meta),
                                       "--target-storage", str(tmp_path / "t2"))
    assert r.code == 0 and (file_syncs, dir_syncs) == (0, 0), r.err


async def test_the_journal_is_synchronous_unless_no_fsync(tmp_path: Path) -> None:
    from vertexflow.state.journal import Journal

    async with await Journal.open(tmp_path / "a.db") as j:
        assert j.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert j.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: see Journal.open
    async with await Journal.open(tmp_path / "b.db", fsync=False) as j:
        assert j.db.execute("PRAGMA synchronous").fetchone()[0] == 0  # OFF
