"""``--report`` lines are the JSON json.dumps writes, whatever the key holds (quotes, control characters,
any script), one object per line."""

from __future__ import annotations

import io
import json

from vertexflow.model import ObjectInfo
from vertexflow.ops.report import TransferReport

KEYS = ['plain/key.jpg', 'quote"and\\backslash', 'new\nline\tand\x00\x1f', 'имя с пробелом', '😀/ü/é', '']


def test_every_line_is_the_json_of_its_object() -> None:
    out = io.StringIO()
    report = TransferReport(out)
    for key in KEYS:
        info = ObjectInfo(key=key, size=12)
        report.copied(info, ObjectInfo(key=key, size=12, hashes={"sha256": "ab" * 32}), "streamed", 0.0123456)
        report.skipped(info, 'same size and mtime "exactly"')
        report.failed(info, OSError(f"cannot read {key}"))
        report.deleted(key)
    report.copied(ObjectInfo(key="n", size=None), ObjectInfo(key="n", size=10 ** 15), "local_batch", None)
    lines = out.getvalue().split("\n")
    assert lines[-1] == "" and len(lines) == 4 * len(KEYS) + 2
    for line in lines[:-1]:
        data = json.loads(line)
        assert json.dumps(data, ensure_ascii=False) == line
        assert list(data) == ["key", "action", "size", "route", "sha256", "crc64nvme", "seconds", "reason",
                              "message"]
    first = json.loads(lines[0])
    assert first == {"key": KEYS[0], "action": "copied", "size": 12, "route": "streamed", "sha256": "ab" * 32,
                     "crc64nvme": None, "seconds": 0.0123, "reason": None, "message": None}
    assert [json.loads(line)["key"] for line in lines[:-2:4]] == KEYS
    assert json.loads(lines[2])["reason"] == "OSError" and json.loads(lines[-2])["size"] == 10 ** 15
