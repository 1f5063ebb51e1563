"""``--links`` both ways: local symbolic links to ``NAME.rclonelink`` objects on S3, and back to links."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vertexflow.testing.seaweedfs import SeaweedFS

from .helpers import vf

pytestmark = pytest.mark.s3


def _source(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "real.txt").write_text("real")
    (root / "sub" / "inner.txt").write_text("inner")
    os.symlink("real.txt", root / "alias")
    os.symlink("../real.txt", root / "sub" / "up")
    os.symlink("sub", root / "folder-link")
    os.symlink("nowhere/at-all", root / "dangling")
    os.symlink("/etc/hostname", root / "absolute")


LINKS = {"alias": "real.txt", "sub/up": "../real.txt", "folder-link": "sub", "dangling": "nowhere/at-all",
         "absolute": "/etc/hostname"}


def test_links_go_to_s3_as_rclonelink_objects_and_come_back_as_links(tmp_path: Path, s3_env: dict[str, str],
                                                                      s3_bucket: str, seaweed: SeaweedFS) -> None:
    _source(tmp_path / "src")
    up = vf("copy", str(tmp_path / "src"), f"s3://{s3_bucket}/l", "--links", "--json")
    assert up.code == 0, up.err
    client = seaweed.boto3_client()
    listed = {o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="l/")["Contents"]}
    assert listed == {"l/real.txt", "l/sub/inner.txt", *(f"l/{name}.rclonelink" for name in LINKS)}
    for name, target in LINKS.items():
        body = client.get_object(Bucket=s3_bucket, Key=f"l/{name}.rclonelink")["Body"].read()
        assert body == target.encode()

    back = tmp_path / "back"
    down = vf("copy", f"s3://{s3_bucket}/l", str(back), "--links", "--json")
    assert down.code == 0, down.err
    assert down.json()["objects"] == 2 + len(LINKS)
    for name, target in LINKS.items():
        assert (back / name).is_symlink(), name
        assert os.readlink(back / name) == target
        assert not (back / f"{name}.rclonelink").exists()
    assert (back / "alias").read_text() == "real"  # resolves inside the copy
    assert (back / "sub" / "up").read_text() == "real"
    assert (back / "folder-link" / "inner.txt").read_text() == "inner"
    assert sorted(p.name for p in back.iterdir()) == sorted(["real.txt", "sub", "alias", "folder-link",
                                                             "dangling", "absolute"])

    # the links already in place are left as they are; a changed one is made again
    again = vf("copy", f"s3://{s3_bucket}/l", str(back), "--links", "--json")
    assert again.code == 0, again.err
    assert again.json()["objects"] == 0
    client.put_object(Bucket=s3_bucket, Key="l/alias.rclonelink", Body=b"sub/inner.txt")
    changed = vf("copy", f"s3://{s3_bucket}/l", str(back), "--links", "--json")
    assert changed.code == 0, changed.err
    assert changed.json()["objects"] == 1
    assert os.readlink(back / "alias") == "sub/inner.txt"
    assert (back / "alias").read_text() == "inner"


def test_without_links_the_objects_stay_files(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str,
                                              seaweed: SeaweedFS) -> None:
    client = seaweed.boto3_client()
    client.put_object(Bucket=s3_bucket, Key="l/alias.rclonelink", Body=b"real.txt")
    client.put_object(Bucket=s3_bucket, Key="l/real.txt", Body=b"real")
    r = vf("copy", f"s3://{s3_bucket}/l", str(tmp_path / "plain"))
    assert r.code == 0, r.err
    assert not (tmp_path / "plain" / "alias").exists()
    assert (tmp_path / "plain" / "alias.rclonelink").read_bytes() == b"real.txt"


def test_an_object_that_is_no_link_target_fails_alone(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str,
                                                      seaweed: SeaweedFS) -> None:
    client = seaweed.boto3_client()
    client.put_object(Bucket=s3_bucket, Key="l/bad.rclonelink", Body=b"a\0b")
    client.put_object(Bucket=s3_bucket, Key="l/good.rclonelink", Body=b"elsewhere")
    client.put_object(Bucket=s3_bucket, Key="l/folder.rclonelink", Body=b"elsewhere")
    (tmp_path / "back" / "folder").mkdir(parents=True)  # a folder of that name is not replaced
    (tmp_path / "back" / "folder" / "kept.txt").write_text("kept")
    r = vf("copy", f"s3://{s3_bucket}/l", str(tmp_path / "back"), "--links", "--json")
    assert r.code == 1, r.err
    assert "bad.rclonelink" in r.err and "folder.rclonelink" in r.err, r.err
    assert r.json()["failed"] == 2
    assert os.readlink(tmp_path / "back" / "good") == "elsewhere"
    assert (tmp_path / "back" / "folder" / "kept.txt").read_text() == "kept"
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == ["folder", "good"]  # no temporary left
