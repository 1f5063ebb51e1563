"""The copy engine between local trees: correctness, failures, stops."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from vertexflow.backends.local import TMP_PREFIX, LocalBackend
from vertexflow.errors import JobAborted
from vertexflow.middleware.base import BackendWrapper
from vertexflow.model import ObjectInfo
from vertexflow.ops.copy import CopyJob, CopyOptions
from vertexflow.pipeline.runner import StopSignal
from vertexflow.retry import RetryPolicy
from vertexflow.testing.faults import FaultyBackend
from vertexflow.testing.sample_tree import make_tree, trees_equal

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(f"{TMP_PREFIX}*")]


async def copy(src: Path, dst: Path, **kw: object) -> CopyJob:
    options = kw.pop("options", CopyOptions(retry=FAST_RETRY))
    job = CopyJob(LocalBackend(src), LocalBackend(dst), options, **kw)  # type: ignore[arg-type]
    await job.run()
    return job


async def test_tree_copied_byte_for_byte_with_mtimes(tmp_path: Path) -> None:
    made = make_tree(tmp_path / "src", files=300, max_size=3 * 1024 * 1024 // 100)
    big = tmp_path / "src" / "big.bin"
    big.write_bytes(os.urandom(5 * 1024 * 1024 + 7))  # takes the streaming path
    os.utime(big, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    job = await copy(tmp_path / "src", tmp_path / "dst")
    assert trees_equal(tmp_path / "src", tmp_path / "dst") == []
    assert job.stats.done_objects == made.files + 1
    assert job.stats.done_bytes == made.bytes + big.stat().st_size
    assert job.stats.failed_objects == 0
    # microsecond precision survives (ObjectInfo carries a datetime)
    assert (tmp_path / "dst" / "big.bin").stat().st_mtime_ns // 1000 == 1_600_000_000_123_456
    assert temp_files(tmp_path / "dst") == []


async def test_no_verify_uses_kernel_copy_and_still_copies(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=50)
    (tmp_path / "src" / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    await copy(tmp_path / "src", tmp_path / "dst", options=CopyOptions(verify=False, retry=FAST_RETRY))
    assert trees_equal(tmp_path / "src", tmp_path / "dst") == []


async def test_copy_overwrites_changed_destination_files(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"new content")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "f").write_bytes(b"old")
    await copy(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "dst" / "f").read_bytes() == b"new content"


class MutatingSource(LocalBackend):
    """Changes or deletes files right after listing them, as a live system would."""

    def __init__(self, root: Path, *, change: set[str] = frozenset(), delete: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        super().__init__(root)
        self.change, self.delete_after_listing = change, delete

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:  # type: ignore[override]
        async for info in super().list(prefix):
            path = self.local_path(info.key)
            if info.key in self.change:
                with open(path, "ab") as f:
                    f.write(b"appended while copying")
            if info.key in self.delete_after_listing:
                path.unlink()
            yield info


@pytest.mark.parametrize("size", [100, 3 * 1024 * 1024])
async def test_source_changed_after_listing_is_reported_not_copied_torn(tmp_path: Path, size: int) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b", "c"):
        (src / name).write_bytes(os.urandom(size))
    job = CopyJob(MutatingSource(src, change={"b"}, delete={"c"}), LocalBackend(tmp_path / "dst"),
                  CopyOptions(retry=FAST_RETRY))
    await job.run()
    assert job.stats.done_objects == 1
    reasons = {f.key: f.reason for f in job.stats.failures}
    assert reasons == {"b": "source_changed", "c": "not_found"}
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["a"]


def flaky(root: Path, failures: int) -> FaultyBackend:
    """A real local destination whose first ``failures`` puts of each key fail with a 503."""
    return FaultyBackend(LocalBackend(root), put_failures=failures)


async def test_transient_failures_are_retried_and_counted(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=20)
    dst = flaky(tmp_path / "dst", failures=2)
    job = CopyJob(LocalBackend(tmp_path / "src"), dst, CopyOptions(retry=FAST_RETRY))
    await job.run()
    assert trees_equal(tmp_path / "src", tmp_path / "dst") == []
    assert job.stats.retries == 40
    assert job.stats.failed_objects == 0


async def test_persistent_failures_are_reported_and_the_job_goes_on(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=5)
    dst = flaky(tmp_path / "dst", failures=10)
    job = CopyJob(LocalBackend(tmp_path / "src"), dst, CopyOptions(retry=FAST_RETRY))
    await job.run()
    assert job.stats.failed_objects == 5
    assert job.stats.failures_by_reason == {"transient": 5}
    assert all(c == 3 for c in dst.put_calls.values())  # attempts per object
    assert temp_files(tmp_path / "dst") == []


async def test_graceful_stop_finishes_in_flight_and_leaves_nothing_partial(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=2000)
    stop = StopSignal()
    job = CopyJob(LocalBackend(tmp_path / "src"), LocalBackend(tmp_path / "dst"),
                  CopyOptions(transfers=2, queue_size=4, batch_files=4), stop=stop)

    async def stop_soon() -> None:
        while job.stats.done_objects < 100:
            await anyio.sleep(0.001)
        stop.request_graceful()

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_soon)
        await job.run()
    assert job.stats.interrupted
    copied = [p for p in (tmp_path / "dst").rglob("*") if p.is_file()]
    assert 100 <= len(copied) < 2000
    assert len(copied) == job.stats.done_objects
    for p in copied:  # every file that exists is whole
        assert p.read_bytes() == (tmp_path / "src" / p.relative_to(tmp_path / "dst")).read_bytes()


async def test_hard_stop_aborts_large_transfer_without_leftovers(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "huge.bin").write_bytes(os.urandom(64 * 1024 * 1024))
    stop = StopSignal()
    # a wrapped destination streams the file chunk by chunk, so it can be cancelled midway
    job = CopyJob(LocalBackend(src), flaky(tmp_path / "dst", failures=0), CopyOptions(), stop=stop)

    async def abort_midway() -> None:
        while job.stats.moved_bytes == 0:
            await anyio.sleep(0.001)
        stop.request_hard()

    async with anyio.create_task_group() as tg:
        tg.start_soon(abort_midway)
        await job.run()
    assert job.stats.interrupted
    assert [p for p in (tmp_path / "dst").rglob("*") if p.is_file()] == []


async def test_missing_source_is_fatal(tmp_path: Path) -> None:
    with pytest.raises(JobAborted, match="no such directory"):
        await copy(tmp_path / "nope", tmp_path / "dst")


@pytest.fixture
def tiny_fs(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 2 MiB tmpfs, for running out of space for real; skipped where mounting is not allowed."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_disk_full_stops_the_job_and_leaves_no_partial_file(tmp_path: Path, tiny_fs: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}.bin").write_bytes(os.urandom(900 * 1024))
    with pytest.raises(JobAborted) as info:
        await copy(src, tiny_fs / "dst")
    assert "No space left" in str(info.value)
    assert temp_files(tiny_fs) == []
    for p in (tiny_fs / "dst").iterdir():  # whatever is there is whole
        assert p.read_bytes() == (src / p.name).read_bytes()


async def test_read_only_destination_is_fatal(tmp_path: Path, tiny_fs: Path) -> None:
    (tiny_fs / "dst").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    make_tree(tmp_path / "src", files=3)
    with pytest.raises(JobAborted, match="read-only"):
        await copy(tmp_path / "src", tiny_fs / "dst")


async def test_single_file_source(tmp_path: Path) -> None:
    from vertexflow.locations import parse_location
    from vertexflow.ops.copy import resolve_source

    (tmp_path / "one.txt").write_bytes(b"just me")
    src, key = await resolve_source(parse_location(str(tmp_path / "one.txt")))
    assert key == "one.txt"
    job = CopyJob(src, LocalBackend(tmp_path / "out"), single_key=key)
    await job.run()
    assert (tmp_path / "out" / "one.txt").read_bytes() == b"just me"


def test_mtime_helper_round_trip() -> None:
    from vertexflow.backends.local import mtime_ns_of

    when = datetime(2020, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert mtime_ns_of(ObjectInfo(key="k", size=0, mtime=when)) == int(when.timestamp()) * 10**9 + 678901000


# -- small files in worker processes ------------------------------------------
IN_PROCESSES = CopyOptions(retry=FAST_RETRY, processes=2, processes_after=0, batch_files=8)


async def test_worker_processes_copy_small_files_byte_for_byte(tmp_path: Path) -> None:
    made = make_tree(tmp_path / "src", files=200)
    first = min(p.relative_to(tmp_path / "src") for p in (tmp_path / "src").rglob("*") if p.is_file())
    os.utime(tmp_path / "src" / first, ns=(1_500_000_000_987_654_321,) * 2)
    for verify in (True, False):
        dst = tmp_path / f"dst-{verify}"
        job = await copy(tmp_path / "src", dst, options=replace(IN_PROCESSES, verify=verify))
        assert job.process_batches >= 200 // 8
        assert trees_equal(tmp_path / "src", dst) == []
        assert (job.stats.done_objects, job.stats.done_bytes) == (made.files, made.bytes)
        assert temp_files(dst) == []
        assert (dst / first).stat().st_mtime_ns // 1000 == 1_500_000_000_987_654


async def test_worker_processes_report_changed_and_vanished_sources(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b", "c"):
        (src / name).write_bytes(os.urandom(100))
    job = CopyJob(MutatingSource(src, change={"b"}, delete={"c"}), LocalBackend(tmp_path / "dst"), IN_PROCESSES)
    await job.run()
    assert job.process_batches == 1
    assert {f.key: f.reason for f in job.stats.failures} == {"b": "source_changed", "c": "not_found"}
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["a"]


async def test_killed_worker_processes_fall_back_to_threads(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=600)
    job = CopyJob(LocalBackend(tmp_path / "src"), LocalBackend(tmp_path / "dst"),
                  replace(IN_PROCESSES, transfers=2, batch_files=2))

    async def kill_workers() -> None:
        with anyio.fail_after(30):
            while job.process_batches == 0:
                await anyio.sleep(0.001)
        assert job._processes is not None
        for pid in job._processes.pids():
            os.kill(pid, signal.SIGKILL)

    async with anyio.create_task_group() as tg:
        tg.start_soon(kill_workers)
        await job.run()
    assert job._processes is not None and job._processes.broken
    assert job.process_batches < 300  # the rest went through threads
    assert job.stats.failed_objects == 0
    assert trees_equal(tmp_path / "src", tmp_path / "dst") == []


async def test_worker_processes_outlive_sigterm_and_stop_with_their_pool(tmp_path: Path) -> None:
    from vertexflow.backends.local_processes import FileCopyProcesses

    make_tree(tmp_path / "src", files=8)
    keys = sorted(str(p.relative_to(tmp_path / "src")) for p in (tmp_path / "src").rglob("*") if p.is_file())
    pool = FileCopyProcesses(str(tmp_path / "src"), str(tmp_path / "dst"), hash_files=True, processes=1)
    try:
        first = await pool.copy([(keys[0], None, None)])
        pids = pool.pids()
        for pid in pids:  # what a service manager's stop sends to every process of the service
            os.kill(pid, signal.SIGTERM)
        await anyio.sleep(0.2)
        rest = await pool.copy([(key, None, None) for key in keys[1:]])
        assert not pool.broken and pool.pids() == pids
        assert not any(isinstance(r, Exception) for r in [*first, *rest])
    finally:
        await pool.aclose()
    assert trees_equal(tmp_path / "src", tmp_path / "dst") == []
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


async def test_the_next_large_file_is_hashed_while_one_uploads(tmp_path: Path) -> None:
    """A destination that needs the SHA-256 first (as S3 does) gets it without the large slots waiting for it."""
    events: list[tuple[str, str]] = []

    class Source(LocalBackend):
        def sha256(self, key: str) -> str:
            events.append(("hashed", key))
            return super().sha256(key)

    class SlowStore(BackendWrapper):  # not a LocalBackend: the engine takes its general path
        async def put(self, info: ObjectInfo, body: Any, **kw: Any) -> ObjectInfo:
            events.append(("put", info.key))
            await anyio.sleep(0.3)
            stored = await self.inner.put(info, body)
            events.append(("stored", info.key))
            return stored

    (tmp_path / "src").mkdir()
    for name in ("a.bin", "b.bin"):
        (tmp_path / "src" / name).write_bytes(os.urandom(9 * 1024 * 1024))  # over large_object
    dst = SlowStore(LocalBackend(tmp_path / "dst"))
    job = CopyJob(Source(tmp_path / "src"), dst, CopyOptions(large_transfers=1, transfers=2))
    await job.run()
    assert job.stats.failed_objects == 0
    first, second = (key for kind, key in events if kind == "put")
    # with one large slot, the second file's hash is taken while the first one is being stored
    assert events.index(("hashed", second)) < events.index(("stored", first))
    for name in ("a.bin", "b.bin"):
        assert (tmp_path / "dst" / name).read_bytes() == (tmp_path / "src" / name).read_bytes()
