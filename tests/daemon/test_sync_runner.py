"""The daemon's sync runner opens each run through the job assembly, afresh."""

from __future__ import annotations

import time
from pathlib import Path

from vertexflow.config import Config
from vertexflow.daemon.config import JobSpec
from vertexflow.daemon.runners import SyncRunner
from vertexflow.pipeline.runner import StopSignal
from vertexflow.pipeline.stats import JobStats
from vertexflow.state.journal import Journal


async def test_age_filters_count_from_each_run_not_from_the_daemon_start(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    job = JobSpec(name="aged", kind="sync", source=str(tmp_path / "src"), dest=str(tmp_path / "dst"),
                  interval=60, filters={"min_age": "1s"})
    async with await Journal.open(tmp_path / "journal.db") as journal:
        runner = SyncRunner(job, remotes=Config(), journal=journal)  # the daemon loads its jobs at start
        (tmp_path / "src" / "new.txt").write_text("written after the daemon started")
        time.sleep(1.5)  # older than min_age by the time the run starts
        stats = JobStats()
        await runner.run(stats, StopSignal())
    assert stats.done_objects == 1 and (tmp_path / "dst" / "new.txt").is_file()
