"""Windows and control say what they do: pausing is a state, start outside a window is refused with the
next window, next_run is when a run can really start, and a run that finished its work is a success."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import anyio

from vertexflow.daemon.jobs import INTERRUPTED, OUTSIDE_WINDOWS, SUCCESS, JobState
from vertexflow.state.journal import Journal

from .test_controller import assert_whole, controller, eventually, journal, make_files  # noqa: F401 - a fixture


async def test_pause_is_pausing_until_the_transfers_in_flight_finish(tmp_path: Path, journal: Journal) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_files(src, 4, 96 * 1024)
    c = controller(journal, name="slow", source=str(src), dest=str(dst), bwlimit="128k", transfers=1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(c.run)
        assert c.start() == "started"
        await eventually(lambda: c.stats is not None and c.stats.moved_bytes > 0, 10, "bytes moving")
        assert c.pause() == "pausing"
        assert c.state == JobState.PAUSING and c.snapshot()["state"] == "pausing"
        assert c.pause() == "already pausing" and c.state == JobState.PAUSING
        await eventually(lambda: c.results and c.stats is None, 10, "the run to stop")
        await eventually(lambda: c.state == JobState.PAUSED, 5, "paused")
        assert c.pause() == "already paused"
        assert c.results[-1].outcome == INTERRUPTED and c.results[-1].interrupted_by == "pause"
        assert_whole(src, dst)
        c.drain()


async def test_start_outside_the_windows_is_refused_and_next_run_is_the_next_window(
        tmp_path: Path, journal: Journal) -> None:
    now = [datetime(2026, 11, 23, 12, 0)]  # a Monday noon, outside 01:00-02:00
    make_files(tmp_path / "src", 1, 100)
    c = controller(journal, clock=lambda: now[0], name="nightly", source=str(tmp_path / "src"),
                   dest=str(tmp_path / "dst"), windows=["01:00-02:00"], interval=600)
    async with anyio.create_task_group() as tg:
        tg.start_soon(c.run)
        await eventually(lambda: c.state == JobState.PAUSED, 5, "waiting for its window")
        assert c.start() == OUTSIDE_WINDOWS
        await anyio.sleep(0.3)
        assert not c.results  # nothing started
        # due since the daemon started, but the run can only start when the window opens
        assert c.snapshot()["next_run"] == "2026-11-24T01:00:00"
        c.drain()


async def test_a_run_that_finished_its_work_before_the_window_closed_is_a_success(
        tmp_path: Path, journal: Journal) -> None:
    from vertexflow.daemon.controller import _finished_its_work
    from vertexflow.pipeline.stats import JobStats

    done = JobStats(listed_objects=3, listing_done=True, done_objects=2, skipped_objects=1)
    assert _finished_its_work(done)
    assert not _finished_its_work(JobStats(listed_objects=3, listing_done=True, done_objects=2))
    assert not _finished_its_work(JobStats(listed_objects=3, listing_done=False, done_objects=3))
    assert not _finished_its_work(JobStats(listed_objects=3, listing_done=True, done_objects=3,
                                           planned_deletes=2, deleted_objects=1))

    now = [datetime(2026, 11, 23, 1, 30)]
    make_files(tmp_path / "src", 2, 100)
    c = controller(journal, clock=lambda: now[0], name="quick", source=str(tmp_path / "src"),
                   dest=str(tmp_path / "dst"), windows=["01:00-02:00"])
    async with anyio.create_task_group() as tg:
        tg.start_soon(c.run)
        c.start()
        await eventually(lambda: c.results, 10, "the run")
        assert c.results[-1].outcome == SUCCESS and c.last_success is not None
        c.drain()
