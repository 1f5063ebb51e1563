"""Job supervision in-process with the real sync runner, local disk and a real journal:
crash-loop backoff, pause/resume at a clean point, windows, cancel, overdue alerts."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from vertexflow.config import Config
from vertexflow.daemon.config import DaemonSettings, JobSpec
from vertexflow.daemon.controller import JobController
from vertexflow.daemon.jobs import (
    CANCELLED,
    FAILED,
    INTERRUPTED,
    SUCCESS,
    ErrorLog,
    JobState,
)
from vertexflow.daemon.runners import SyncRunner
from vertexflow.state.journal import Journal

from .helpers import partial_files, tree

SETTINGS = DaemonSettings(backoff_initial=0.2, backoff_max=1.0)


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    async with await Journal.open(tmp_path / "journal.db") as j:
        yield j


async def eventually(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        await anyio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def controller(journal: Journal, errors: ErrorLog | None = None, clock: Callable[[], datetime] = datetime.now,
               **spec: Any) -> JobController:
    job = JobSpec.model_validate({"kind": "sync", **spec})
    return JobController(job, SyncRunner(job, remotes=Config(), journal=journal), settings=SETTINGS,
                         errors=errors or ErrorLog(50), clock=clock)


def make_files(root: Path, count: int, size: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / f"f{i:02d}.bin").write_bytes(os.urandom(size))


def assert_whole(src: Path, dst: Path) -> dict[str, bytes]:
    """Every file at ``dst`` equals its source; no temporary file is left."""
    assert partial_files(dst) == []
    got, want = tree(dst), tree(src)
    for key, data in got.items():
        assert data == want[key], f"{key} differs from its source"
    return got


async def test_crash_loop_backs_off_and_spares_other_jobs(tmp_path: Path, journal: Journal) -> None:
    errors = ErrorLog(100)
    make_files(tmp_path / "good-src", 2, 1000)
    broken = controller(journal, errors, name="broken", source=str(tmp_path / "missing"),
                        dest=str(tmp_path / "b-dst"), interval=0.1)
    good = controller(journal, errors, name="good", source=str(tmp_path / "good-src"),
                      dest=str(tmp_path / "g-dst"), interval=0.3)
    async with anyio.create_task_group() as tg:
        tg.start_soon(broken.run)
        tg.start_soon(good.run)
        await eventually(lambda: len(broken.results) >= 4, 10, "four failed runs")
        assert all(r.outcome == FAILED for r in broken.results)
        assert broken.state == JobState.FAILED and broken.failures >= 4
        gaps = [b.started - a.started for a, b in zip(broken.results, list(broken.results)[1:], strict=False)]
        # 0.2, 0.4, 0.8 s: each gap about twice the one before, capped at backoff_max (1 s)
        assert gaps[0] >= 0.18 and gaps[1] >= 0.36 and gaps[2] >= 0.72, gaps
        assert "no such directory" in (broken.results[-1].error or "")
        assert any(e.job == "broken" and e.kind == "run" for e in errors.events)
        # the healthy job kept its schedule the whole time
        assert sum(r.outcome == SUCCESS for r in good.results) >= 3
        assert sorted(tree(tmp_path / "g-dst")) == ["f00.bin", "f01.bin"]
        # the cause goes away: the next retry succeeds and the streak resets
        make_files(tmp_path / "missing", 1, 10)
        await eventually(lambda: broken.results[-1].outcome == SUCCESS, 5, "a successful retry")
        assert broken.failures == 0 and broken.state != JobState.FAILED
        for c in (broken, good):
            c.drain()
        await broken.done.wait()
        await good.done.wait()


async def test_pause_stops_at_a_clean_point_and_resume_continues(tmp_path: Path, journal: Journal) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_files(src, 4, 96 * 1024)
    c = controller(journal, name="slow", source=str(src), dest=str(dst), bwlimit="256k", transfers=1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(c.run)
        assert c.start() == "started"
        await eventually(lambda: c.stats is not None and c.stats.done_objects >= 1, 10, "one object done")
        assert c.start() == "already running"
        assert c.pause() == "pausing"
        await eventually(lambda: c.results and c.stats is None, 10, "the run to stop")
        stopped = c.results[-1]
        assert stopped.outcome == INTERRUPTED and stopped.interrupted_by == "pause"
        assert c.state == JobState.PAUSED
        copied = assert_whole(src, dst)  # the object in flight finished whole
        assert 1 <= len(copied) < 4
        await anyio.sleep(0.3)
        assert len(c.results) == 1  # held: nothing starts while paused
        assert c.resume() == "resumed"
        await eventually(lambda: len(c.results) == 2, 15, "the resumed run")
        again = c.results[-1]
        assert again.outcome == SUCCESS and again.trigger == "resume" and again.resumed
        assert again.journal_job == stopped.journal_job
        assert again.objects == 4 - len(copied)  # what the first run finished is not sent again
        assert assert_whole(src, dst).keys() == tree(src).keys()
        c.drain()


async def test_window_end_pauses_and_the_next_window_continues(tmp_path: Path, journal: Journal) -> None:
    now = [datetime(2026, 11, 23, 1, 30)]  # a Monday, inside 01:00-02:00
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_files(src, 4, 96 * 1024)
    c = controller(journal, clock=lambda: now[0], name="nightly", source=str(src), dest=str(dst),
                   windows=["01:00-02:00"], bwlimit="256k", transfers=1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(c.run)
        c.start()
        await eventually(lambda: c.stats is not None and c.stats.done_objects >= 1, 10, "one object done")
        now[0] = datetime(2026, 11, 23, 2, 30)  # the window closes
        await eventually(lambda: c.results, 10, "the run to stop at the window end")
        assert c.results[-1].outcome == INTERRUPTED and c.results[-1].interrupted_by == "window"
        await eventually(lambda: c.state == JobState.PAUSED, 5, "paused")
        assert c.state_detail == "outside its windows" and c.pending == "window"
        done_before = len(assert_whole(src, dst))
        await anyio.sleep(0.3)
        assert len(c.results) == 1
        now[0] = datetime(2026, 11, 24, 1, 5)  # the next night's window
        c.poke()
        await eventually(lambda: len(c.results) == 2, 15, "the run in the next window")
        assert c.results[-1].outcome == SUCCESS and c.results[-1].trigger == "window" and c.results[-1].resumed
        assert c.results[-1].objects == 4 - done_before
        c.drain()


async def test_cancel_aborts_in_flight_and_holds_the_schedule(tmp_path: Path, journal: Journal) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_files(src, 2, 512 * 1024)
    c = controller(journal, name="big", source=str(src), dest=str(dst), bwlimit="128k", interval=0.2, transfers=1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(c.run)
        await eventually(lambda: c.stats is not None and c.stats.moved_bytes > 64 * 1024, 10, "bytes moving")
        assert c.cancel() == "cancelling"
        await eventually(lambda: c.results, 5, "the run to end")
        assert c.results[-1].outcome == CANCELLED
        assert tree(dst) == {} and partial_files(dst) == []  # aborted: nothing partial left
        await anyio.sleep(0.5)  # the 0.2 s interval is held
        assert len(c.results) == 1 and c.state == JobState.CANCELLED
        snapshot = c.snapshot()
        assert snapshot["state"] == "cancelled" and snapshot["next_run"] is None
        c.drain()


async def test_overdue_job_logs_an_error_and_shows_it(tmp_path: Path, journal: Journal) -> None:
    errors = ErrorLog(20)
    c = controller(journal, errors, name="late", source=str(tmp_path / "missing"), dest=str(tmp_path / "d"),
                   interval=60, expected_interval="0.2s")
    async with anyio.create_task_group() as tg:
        tg.start_soon(c.run)
        await eventually(lambda: c.results, 5, "a failed run")
        with capture_logs() as logs:
            c.check_overdue(time.time())  # not yet: created moments ago
            assert not c.overdue
            await anyio.sleep(0.3)
            c.check_overdue(time.time())
            c.check_overdue(time.time())  # logged once per expected interval, not per check
        overdue = [e for e in logs if e["event"] == "job overdue"]
        assert len(overdue) == 1 and overdue[0]["log_level"] == "error" and overdue[0]["job"] == "late"
        assert c.snapshot()["overdue"] is True
        assert [e.kind for e in errors.recent("late")][-1] == "overdue"
        c.drain()


def test_expected_interval_defaults() -> None:
    base = {"name": "j", "kind": "sync", "source": "/a", "dest": "/b"}
    assert JobSpec.model_validate({**base, "interval": "10m"}).expected() == 1800
    assert JobSpec.model_validate({**base, "cron": "0 * * * *"}).expected() == 3 * 3600
    assert JobSpec.model_validate({**base, "continuous": True, "reconcile_interval": "5m"}).expected() == 900
    assert JobSpec.model_validate({**base, "interval": "10m", "windows": ["01:00-02:00"]}).expected() is None
    assert JobSpec.model_validate({**base}).expected() is None


async def test_the_journal_keeps_a_bounded_number_of_runs(tmp_path: Path, journal: Journal) -> None:
    make_files(tmp_path / "src", 1, 100)
    c = controller(journal, name="often", source=str(tmp_path / "src"), dest=str(tmp_path / "dst"), interval=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(c.run)
        await eventually(lambda: len(c.results) >= 14, 20, "fourteen runs")
        c.drain()
    assert all(r.outcome == SUCCESS for r in c.results)
    runs = [j for j in await journal.list_jobs(limit=100) if j.dst == f"file://{tmp_path / 'dst'}"]
    assert 1 <= len(runs) <= 10 and runs[0].id == c.results[-1].journal_job
    # the destination index survives: the last runs found everything unchanged, with no copy
    assert c.results[0].objects == 1 and c.results[-1].objects == 0 and c.results[-1].skipped == 1


async def test_last_success_outlives_a_restart(tmp_path: Path, journal: Journal) -> None:
    make_files(tmp_path / "src", 1, 100)
    spec = {"name": "j", "source": str(tmp_path / "src"), "dest": str(tmp_path / "dst")}
    first = controller(journal, **spec)
    async with anyio.create_task_group() as tg:
        tg.start_soon(first.run)
        first.start()
        await eventually(lambda: first.results, 10, "a run")
        first.drain()
    assert first.results[-1].outcome == SUCCESS and first.last_success is not None
    again = controller(journal, **spec)  # a new daemon on the same journal: no run yet
    async with anyio.create_task_group() as tg:
        tg.start_soon(again.run)
        await eventually(lambda: again.last_success, 5, "the last success read from the journal")
        assert abs(again.last_success - first.last_success) < 2 and not again.results
        again.drain()


async def test_drain_lets_the_object_in_flight_finish(tmp_path: Path, journal: Journal) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_files(src, 3, 160 * 1024)
    c = controller(journal, name="draining", source=str(src), dest=str(dst), bwlimit="256k", transfers=1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(c.run)
        c.start()
        await eventually(lambda: c.stats is not None and 0 < c.stats.moved_bytes < 140 * 1024, 10,
                         "the first object in flight")
        c.drain()
        with anyio.fail_after(10):
            await c.done.wait()
    result = c.results[-1]
    assert result.outcome == INTERRUPTED and result.interrupted_by == "drain"
    assert result.objects == 1 and list(assert_whole(src, dst)) == ["f00.bin"]  # finished, nothing started


@pytest.mark.s3
async def test_daemon_job_seed25_a_run_whose_failures_may_pass_is_tried_again_after_the_backoff(
        tmp_path: Path, journal: Journal, seaweed: Any, s3_bucket: str, s3_env: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """daemon_job seed 25: one object failed for good in a run (503s and resets beyond every retry), the run
    ended partial, and the job waited for its schedule (an hour) with the object missing. A run whose
    failures are all of the kinds that may pass is tried again after the backoff, as a failed run is."""
    from vertexflow.daemon.jobs import PARTIAL
    from vertexflow.testing.faults import ThreadedFaultProxy

    make_files(tmp_path / "src", 2, 1000)
    put = f"PUT /{s3_bucket}/p/f01.bin?#"
    with ThreadedFaultProxy(int(seaweed.endpoint.rsplit(":", 1)[1]), seed=0, rates={}, statuses=(503,),
                            retry_after=0, force={f"{put}{n}": "error" for n in range(40)}) as tp:
        monkeypatch.setenv("AWS_ENDPOINT_URL", tp.proxy.endpoint)
        job = controller(journal, name="flaky", source=str(tmp_path / "src"), dest=f"s3://{s3_bucket}/p",
                         interval=3600, retries=1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(job.run)
            await eventually(lambda: job.results and job.results[-1].outcome == SUCCESS, 30, "a successful run")
            job.drain()
        asked = [i for i in tp.proxy.identities if i.startswith(put)]
    outcomes = [(r.outcome, r.trigger) for r in job.results]
    assert outcomes[0] == (PARTIAL, "schedule") and outcomes[-1] == (SUCCESS, "retry"), outcomes
    assert len(asked) > 40, asked  # every forced error was met before the object went through
    assert job.failures == 0
    body = seaweed.boto3_client().get_object(Bucket=s3_bucket, Key="p/f01.bin")["Body"].read()
    assert body == (tmp_path / "src" / "f01.bin").read_bytes()
