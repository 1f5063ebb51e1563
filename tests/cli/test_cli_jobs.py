"""The journal from the command line: sync twice, jobs list/show/resume/forget, dry runs."""

from __future__ import annotations

from pathlib import Path

from vertexflow.testing.sample_tree import make_tree, trees_equal

from .helpers import vf


def test_sync_twice_then_jobs(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=30)
    first = vf("sync", str(tmp_path / "src"), str(tmp_path / "dst"), "--json")
    assert first.code == 0, first.err
    job_id = first.json()["job_id"]
    second = vf("sync", str(tmp_path / "src"), str(tmp_path / "dst"), "--json").json()
    assert (second["objects"], second["skipped"]) == (0, 30)
    listed = vf("jobs", "list", "--json").json()
    assert [j["id"] for j in listed][-1] == job_id and listed[-1]["state"] == "done"
    shown = vf("jobs", "show", str(job_id))
    assert shown.code == 0
    assert '"copy:done": 30' in shown.out
    assert vf("jobs", "forget", str(job_id)).code == 0
    assert vf("jobs", "show", str(job_id)).code == 2


def test_resume_by_id(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=10)
    r = vf("sync", str(tmp_path / "src"), str(tmp_path / "dst"), "--json", "--exclude", "*0.bin")
    job_id = r.json()["job_id"]
    (tmp_path / "src" / "late.txt").write_text("added later")
    again = vf("jobs", "resume", str(job_id), "--json")
    assert again.code == 0, again.err
    s = again.json()
    assert s["objects"] == 1 and s["skipped"] == 9  # the filter came back with the job
    assert (tmp_path / "dst" / "late.txt").read_text() == "added later"


def test_dry_run_prints_plan_and_touches_nothing(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=3)
    r = vf("sync", str(tmp_path / "src"), str(tmp_path / "dst"), "--dry-run")
    assert r.code == 0, r.err
    assert r.out.count("copy ") == 3
    assert not (tmp_path / "dst").exists()


def test_empty_source_delete_refused_exit_2(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    make_tree(tmp_path / "dst", files=3)
    r = vf("sync", str(tmp_path / "src"), str(tmp_path / "dst"), "--delete")
    assert r.code == 2 and "refusing to delete 3 objects" in r.err
    assert len(list((tmp_path / "dst").rglob("*.bin"))) == 3


def test_copy_resumes_after_rerun(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=20)
    vf("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--include", "dir00[0-4]/**")
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--json").json()
    assert r["skipped"] == 5 and r["objects"] == 15
    assert trees_equal(tmp_path / "src", tmp_path / "dst") == []


def test_resume_gives_back_the_stage_and_bandwidth_options(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=6)
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--json", "--compress", "gzip:1",
           "--bwlimit", "50M", "--no-adaptive", "--transfers", "3")
    assert r.code == 0, r.err
    job_id = r.json()["job_id"]
    stored = vf("jobs", "show", str(job_id)).out
    assert '"compress": "gzip:1"' in stored and '"bwlimit": "50M"' in stored and '"transfers": 3' in stored
    (tmp_path / "src" / "late.txt").write_text("added later " * 100)
    again = vf("jobs", "resume", str(job_id), "--json")
    assert again.code == 0, again.err
    s = again.json()
    # the same stored form, the same limit in force, and the options kept again
    assert s["objects"] == 1 and s["bwlimit"]["up"] == "50M"
    assert (tmp_path / "dst" / "late.txt.gz").is_file() and not (tmp_path / "dst" / "late.txt").exists()
    assert '"compress": "gzip:1"' in vf("jobs", "show", str(s["job_id"])).out


def test_size_only_through_stages_reads_sizes_from_the_journal(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=5)
    args = ["sync", str(tmp_path / "src"), str(tmp_path / "dst"), "--compress", "zstd:1", "--size-only", "--json"]
    assert vf(*args).code == 0
    (tmp_path / "src" / "grown.txt").write_text("x" * 10)
    first = next(p for p in sorted((tmp_path / "src").rglob("*.bin")))
    first.write_bytes(first.read_bytes() + b"longer")  # same key, other size
    again = vf(*args)
    assert again.code == 0, again.err
    assert (again.json()["objects"], again.json()["skipped"]) == (2, 4)
    # without the journal the stored size is unknown: size-only cannot call them equal
    blind = vf(*args, "--no-journal")
    assert blind.json()["objects"] == 6


def test_no_journal_reports_no_job_id(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=4)
    kept = vf("copy", str(tmp_path / "src"), str(tmp_path / "a"), "--json")
    assert kept.code == 0 and kept.json()["job_id"] is not None  # the journal has a job 1 now
    for args in (["--json"], []):
        r = vf("copy", str(tmp_path / "src"), str(tmp_path / f"b{len(args)}"), "--no-journal", *args)
        assert r.code == 0, r.err
        if args:
            assert r.json()["job_id"] is None  # a throw-away journal's id names no job a user can find
        else:
            assert "journal job" not in r.out


def test_resume_reopens_the_spec_the_journal_kept(tmp_path: Path) -> None:
    import json
    import os
    import sqlite3

    make_tree(tmp_path / "src", files=6)
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--json", "--exclude", "*.bin",
           "--transfers", "2", "--retries", "3", "--no-verify")
    assert r.code == 0, r.err
    job_id = r.json()["job_id"]
    options = json.loads(vf("jobs", "show", str(job_id)).out)["options"]
    spec = options["replay"]["spec"]
    assert spec["source"] == str(tmp_path / "src") and spec["filter"]["exclude"] == ["*.bin"]
    assert spec["settings"]["transfers"] == 2 and spec["settings"]["retries"] == 3
    assert spec["settings"]["verify"] is False
    # a job recorded before specs existed (no "spec" kept) resumes from the options it kept
    db = sqlite3.connect(os.environ["VERTEXFLOW_JOURNAL"])
    legacy = dict(options)
    legacy["replay"] = {k: v for k, v in options["replay"].items() if k != "spec"}
    db.execute("UPDATE jobs SET options = ?, state = 'interrupted' WHERE id = ?", (json.dumps(legacy), job_id))
    db.commit()
    db.close()
    (tmp_path / "src" / "late.txt").write_text("late")
    (tmp_path / "src" / "late.bin").write_bytes(b"excluded")
    again = vf("jobs", "resume", str(job_id), "--json")
    assert again.code == 0, again.err
    s = again.json()
    assert s["job_id"] == job_id and s["resumed"] and s["objects"] == 1
    assert (tmp_path / "dst" / "late.txt").is_file() and not (tmp_path / "dst" / "late.bin").exists()
