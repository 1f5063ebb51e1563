"""The daemon remembers across restarts: runs, last success, the schedule's clock, a user's cancel.

A restart is a new controller (as a new daemon process makes) on the same journal.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio

from vertexflow.config import Config
from vertexflow.daemon.config import JobSpec
from vertexflow.daemon.controller import JobController
from vertexflow.daemon.jobs import SUCCESS, ErrorLog, JobState
from vertexflow.daemon.runners import SyncRunner
from vertexflow.state.journal import Journal

from .test_controller import SETTINGS, eventually


def controller(journal: Journal, **spec: Any) -> JobController:
    job = JobSpec.model_validate({"kind": "sync", **spec})
    return JobController(job, SyncRunner(job, remotes=Config(), journal=journal), settings=SETTINGS,
                         errors=ErrorLog(50), journal=journal)


def job(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "a.bin").write_bytes(os.urandom(1000))
    return {"name": "hourly", "source": str(tmp_path / "src"), "dest": str(tmp_path / "dst"), "interval": 3600}


async def test_history_last_success_and_the_schedule_survive_a_restart(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path / "journal.db") as journal:
        first = controller(journal, **job(tmp_path))
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.run)  # an interval job runs at its first start
            await eventually(lambda: first.results and first.results[-1].outcome == SUCCESS, 10, "a run")
            first.drain()
        success = first.last_success
        assert success is not None

    async with await Journal.open(tmp_path / "journal.db") as journal:  # the daemon restarts
        second = controller(journal, **job(tmp_path))
        async with anyio.create_task_group() as tg:
            tg.start_soon(second.run)
            await eventually(lambda: second.results, 5, "the history")
            await anyio.sleep(1.0)  # time for a run at start, if one wrongly came
            assert len(second.results) == 1 and second.results[0].outcome == SUCCESS  # not rerun
            assert second.last_success == success and second.state == JobState.SCHEDULED
            snapshot = second.snapshot()
            assert snapshot["last_result"]["objects"] == 1 and not snapshot["overdue"]
            assert snapshot["next_run"] is not None and second.next_run is not None
            assert (second.next_run - second.last_start).total_seconds() == 3600  # type: ignore[operator]
            second.drain()


async def test_a_user_cancel_survives_a_restart(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path / "journal.db") as journal:
        first = controller(journal, **{**job(tmp_path), "interval": None, "cron": "0 3 * * *"})
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.run)
            await eventually(lambda: first.state == JobState.SCHEDULED, 5, "scheduled")
            assert first.cancel() == "cancelled"
            for _ in range(100):  # the controller saves it as soon as it wakes
                if (await journal.daemon_state("hourly") or {}).get("held") == "cancelled":
                    break
                await anyio.sleep(0.05)
            else:
                raise AssertionError("the cancel was not saved in the journal")
            first.drain()

    async with await Journal.open(tmp_path / "journal.db") as journal:
        second = controller(journal, **{**job(tmp_path), "interval": None, "cron": "0 3 * * *"})
        async with anyio.create_task_group() as tg:
            tg.start_soon(second.run)
            await eventually(lambda: second.state == JobState.CANCELLED, 5, "still cancelled")
            assert second.snapshot()["next_run"] is None
            assert second.start() == "started"  # the user lifts it
            await eventually(lambda: second.results, 10, "the run the user asked for")
            second.drain()
    assert (tmp_path / "dst" / "a.bin").is_file()
