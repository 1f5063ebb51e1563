"""The journal keeps the done object rows of its newest done jobs only (retention), and upgrades old journals."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from vertexflow.state.journal import KEEP_DONE_ROWS_OF, SCHEMA, Journal, ObjectRecord


async def _job(journal: Journal, name: str, final: str) -> int:
    job, resumed = await journal.start_job("copy", f"/src/{name}", "/dst", {})
    assert not resumed
    await journal.record_objects(job.id, [ObjectRecord(key=f"{name}/{i}", state="done", size=i) for i in range(3)]
                                 + [ObjectRecord(key=f"{name}/bad", state="failed", reason="io")])
    await journal.finish_job(job.id, final, {"objects": 3, "failed": 1})
    return job.id


async def _rows(journal: Journal, job_id: int) -> dict[str, int]:
    return await journal.job_counts(job_id)


async def test_done_rows_of_older_done_jobs_are_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path / "journal.db") as journal:
        interrupted = await _job(journal, "interrupted", "interrupted")
        done = [await _job(journal, f"run{i}", "done") for i in range(KEEP_DONE_ROWS_OF + 2)]
        oldest, kept = done[:2], done[2:]

        for job_id in oldest:
            assert await _rows(journal, job_id) == {"copy:failed": 1}  # what failed stays
            job = await journal.get_job(job_id)
            assert job is not None and job.rows_pruned and job.summary == {"objects": 3, "failed": 1}
        for job_id in kept:
            assert await _rows(journal, job_id) == {"copy:done": 3, "copy:failed": 1}
            assert not (await journal.get_job(job_id)).rows_pruned  # type: ignore[union-attr]
        # an unfinished job is what a rerun resumes: none of its rows go
        assert await _rows(journal, interrupted) == {"copy:done": 3, "copy:failed": 1}
        again, resumed = await journal.start_job("copy", "/src/interrupted", "/dst", {})
        assert resumed and again.id == interrupted

        # a job that ends without "done" prunes nothing; the next done one prunes the next oldest
        await _job(journal, "failed-run", "failed")
        assert await _rows(journal, kept[0]) == {"copy:done": 3, "copy:failed": 1}
        await _job(journal, "one-more", "done")
        assert await _rows(journal, kept[0]) == {"copy:failed": 1}
        assert await _rows(journal, kept[1]) == {"copy:done": 3, "copy:failed": 1}


async def test_a_journal_from_before_retention_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old_schema = SCHEMA.replace(
        "summary     TEXT,                      -- JSON summary of the last run\n"
        "    rows_pruned INTEGER NOT NULL DEFAULT 0", "summary     TEXT")
    assert "rows_pruned" not in old_schema.split("CREATE TABLE IF NOT EXISTS objects")[0]
    db = sqlite3.connect(path)
    db.executescript(old_schema)
    db.execute("INSERT INTO jobs (kind, src, dst, options, fingerprint, state, created, updated) "
               "VALUES ('copy', '/a', '/b', '{}', 'x', 'done', 1, 1)")
    db.commit()
    db.close()

    async with await Journal.open(path) as journal:
        old = await journal.get_job(1)
        assert old is not None and old.state == "done" and not old.rows_pruned
        await _job(journal, "new", "done")

