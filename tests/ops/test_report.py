"""``--report FILE``: a JSON line per object, streamed as the job runs, then the summary."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

from vertexflow.errors import AccessDenied
from vertexflow.model import ObjectInfo
from vertexflow.ops.report import TransferReport
from vertexflow.testing.sample_tree import make_tree

from ..cli.helpers import vf


def lines(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_object_has_a_line_copied_skipped_deleted(tmp_path: Path) -> None:
    src, dst, report = tmp_path / "src", tmp_path / "dst", tmp_path / "report.jsonl"
    made = make_tree(src, files=12)
    (src / "big.bin").write_bytes(b"x" * (3 * 1024 * 1024))  # over the small-file size: its own route
    r = vf("sync", str(src), str(dst), "--report", str(report), "--json")
    assert r.code == 0, r.err
    first = lines(report)
    copied = [x for x in first if x.get("action") == "copied"]
    assert len(copied) == made.files + 1 and first[-1]["summary"]["objects"] == made.files + 1
    big = next(x for x in copied if x["key"] == "big.bin")
    assert big["route"] == "local_file" and big["size"] == 3 * 1024 * 1024 and big["seconds"] is not None
    assert big["sha256"] == hashlib.sha256(b"x" * (3 * 1024 * 1024)).hexdigest()
    assert {x["route"] for x in copied} == {"local_file", "local_batch"}

    (src / "big.bin").unlink()
    (dst / "extra.txt").write_text("only at the destination")
    r = vf("sync", str(src), str(dst), "--delete", "--report", str(report), "--json")
    assert r.code == 0, r.err
    second = lines(report)  # the file is written anew by each run
    by_action: dict[str, set[str]] = {}
    for x in second[:-1]:
        by_action.setdefault(x["action"], set()).add(x["key"])
    assert len(by_action["skipped"]) == made.files and "copied" not in by_action
    assert by_action["deleted"] == {"big.bin", "extra.txt"}
    assert second[-1]["summary"]["deleted"] == 2


def test_a_report_in_a_missing_directory_is_refused_before_anything_moves(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=3)
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--report", str(tmp_path / "no" / "r.jsonl"))
    assert r.code == 2 and f"the directory {tmp_path / 'no'} does not exist" in r.err
    assert not (tmp_path / "dst").exists()


def test_a_failed_object_says_why() -> None:
    out = io.StringIO()
    report = TransferReport(out)
    report.failed(ObjectInfo(key="k.jpg", size=3), AccessDenied("PutObject failed: AccessDenied", key="k.jpg"))
    line = json.loads(out.getvalue())
    assert line["action"] == "failed" and line["reason"] == "access_denied" and "AccessDenied" in line["message"]


def test_log_level_info_names_each_object_copied(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=4)
    quiet = vf("copy", str(tmp_path / "src"), str(tmp_path / "a"))
    assert quiet.code == 0 and "object copied" not in quiet.err
    loud = vf("--log-level", "info", "--log-format", "json", "copy", str(tmp_path / "src"), str(tmp_path / "b"))
    assert loud.code == 0, loud.err
    events = [json.loads(line) for line in loud.err.splitlines() if line.startswith("{")]
    copied = sorted(e["key"] for e in events if e.get("event") == "object copied")
    assert len(copied) == 4 and all(e.get("route") for e in events if e.get("event") == "object copied")
