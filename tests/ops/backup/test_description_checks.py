"""MEMBERS.jsonl is checked like the other lists: a self-consistent but malformed one is refused before any write."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tests.cli.helpers import vf
from vertexflow.backends.local import LocalBackend
from vertexflow.ops.backup.create import CreateOptions, create_backup
from vertexflow.transforms.compression import parse_codec

from .conftest import fill
from .forge import folder_of, read_meta, stored, write_meta

FILES = {"a/clip.mp4": b"video" * 100, "a/b.txt": b"text"}


async def local_backup(tmp_path: Path) -> Path:
    async with LocalBackend(tmp_path / "data") as source, LocalBackend(tmp_path / "backups") as dest:
        await fill(source, FILES)
        await create_backup(dest, CreateOptions(kind="storage", codec=parse_codec("gzip"), storage=source))
    return folder_of(tmp_path / "backups")


def rewrite(folder: Path, lines: list[dict[str, object]]) -> None:
    """A new MEMBERS.jsonl with SHA256SUMS and metadata.json to match (what a careful tamperer does)."""
    path = folder / "MEMBERS.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    meta = read_meta(folder)
    assert meta.storage is not None
    write_meta(folder, dataclasses.replace(meta, storage=dataclasses.replace(meta.storage, descriptions=stored(path))))


async def test_a_local_tree_is_described_by_extension_and_mtime(tmp_path: Path) -> None:
    folder = await local_backup(tmp_path)
    lines = [json.loads(line) for line in (folder / "MEMBERS.jsonl").read_text().splitlines()]
    assert [(d["path"], d["content_type"], sorted(d)) for d in lines] == [
        ("a/b.txt", "text/plain", ["content_type", "mtime", "path"]),
        ("a/clip.mp4", "video/mp4", ["content_type", "mtime", "path"])]
    mtime = (tmp_path / "data" / "a" / "clip.mp4").stat().st_mtime_ns
    assert lines[1]["mtime"] == f"{mtime // 10**9}.{mtime % 10**9 // 1000 * 1000:09d}"


@pytest.mark.parametrize("bad,needle", [
    ({"path": "a/clip.mp4", "content_type": "video/mp4\r\nX-Evil: 1"}, "control character"),
    ({"path": "a/clip.mp4", "headers": {"x-amz-acl": "public-read"}}, "'x-amz-acl'"),
    ({"path": "a/clip.mp4", "mtime": "yesterday"}, "'mtime'"),
    ({"path": "a/other.mp4"}, "'a/other.mp4' is not a file of MEMBERS.sha256"),
    ({"path": "a/b.txt"}, "described twice"),
], ids=["control", "header", "mtime", "unlisted", "twice"])
async def test_malformed_descriptions_are_refused(tmp_path: Path, bad: dict[str, object], needle: str) -> None:
    folder = await local_backup(tmp_path)
    rewrite(folder, [{"path": "a/b.txt"}, bad])

    v = vf("backup", "verify", str(folder))
    assert v.code == 1 and needle in v.out, v.out
    r = vf("backup", "restore", str(folder), "--target-storage", str(tmp_path / "t"))
    assert r.code == 1 and needle in r.err and "MEMBERS.jsonl" in r.err and "nothing was written" in r.err
    assert not (tmp_path / "t").exists()


async def test_a_file_left_undescribed_is_refused(tmp_path: Path) -> None:
    folder = await local_backup(tmp_path)
    rewrite(folder, [{"path": "a/b.txt"}])
    r = vf("backup", "restore", str(folder), "--target-storage", str(tmp_path / "t"))
    assert r.code == 1 and "describes 1 files, MEMBERS.sha256 lists 2" in r.err
    assert not (tmp_path / "t").exists()
