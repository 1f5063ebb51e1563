"""The command line against a real S3 server (SeaweedFS on 127.0.0.1)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from vertexflow.testing.sample_tree import make_tree, trees_equal
from vertexflow.testing.seaweedfs import SeaweedFS

from .helpers import vf

pytestmark = pytest.mark.s3

ODD_NAMES = ["with space.txt", "юникод ✓.txt", "100%.txt", "a+b.txt", "why?.txt", "#hash.txt",
             "x" * 200 + ".txt"]


def odd_tree(root: Path) -> None:
    make_tree(root, files=120)
    (root / "odd").mkdir(parents=True)
    for name in ODD_NAMES:
        (root / "odd" / name).write_text(name)
    (root / "big.bin").write_bytes(bytes(range(256)) * (40 * 1024 + 3))  # ~10 MiB: multipart


def test_round_trip_local_s3_local(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str) -> None:
    odd_tree(tmp_path / "src")
    up = vf("copy", str(tmp_path / "src"), f"s3://{s3_bucket}/photos", "--json")
    assert up.code == 0, up.err
    assert up.json()["objects"] == 120 + len(ODD_NAMES) + 1
    down = vf("copy", f"s3://{s3_bucket}/photos", str(tmp_path / "back"), "--json")
    assert down.code == 0, down.err
    assert trees_equal(tmp_path / "src", tmp_path / "back") == []
    listing = vf("ls", "--long", f"s3://{s3_bucket}/photos/odd")
    assert listing.code == 0, listing.err
    for name in ODD_NAMES:
        assert name in listing.out


def test_s3_to_s3_on_one_server_copies_server_side(tmp_path: Path, s3_env: dict[str, str],
                                                   s3_bucket: str, seaweed: SeaweedFS) -> None:
    make_tree(tmp_path / "src", files=30)
    assert vf("copy", str(tmp_path / "src"), f"s3://{s3_bucket}/a").code == 0
    seaweed.create_bucket(f"{s3_bucket}-other")
    try:
        r = vf("copy", f"s3://{s3_bucket}/a", f"s3://{s3_bucket}-other/b", "--json")
        assert r.code == 0, r.err
        assert r.json()["server_side_copies"] == 30
        assert vf("copy", f"s3://{s3_bucket}-other/b", str(tmp_path / "back")).code == 0
        assert trees_equal(tmp_path / "src", tmp_path / "back") == []
    finally:
        seaweed.delete_bucket_recursive(f"{s3_bucket}-other")


def test_named_remotes_from_config(tmp_path: Path, seaweed: SeaweedFS, s3_bucket: str) -> None:
    cfg = tmp_path / "vf.toml"
    cfg.write_text(f"""
[remotes.old]
type = "s3"
endpoint = "{seaweed.endpoint}"
region = "{seaweed.region}"
access_key_id_env = "OLD_KEY"
secret_access_key_env = "OLD_SECRET"
addressing_style = "path"

[remotes.new]
type = "s3"
endpoint = "{seaweed.endpoint}"
region = "{seaweed.region}"
bucket = "{s3_bucket}"
access_key_id = "{seaweed.access_key}"
secret_access_key = "{seaweed.secret_key}"
""")
    env = {"OLD_KEY": seaweed.access_key, "OLD_SECRET": seaweed.secret_key}
    make_tree(tmp_path / "src", files=10)
    assert vf("--config", str(cfg), "copy", str(tmp_path / "src"), f"old:{s3_bucket}/media/", env=env).code == 0
    r = vf("--config", str(cfg), "copy", f"old:{s3_bucket}/media/", "new:copy/", "--json", env=env)
    assert r.code == 0, r.err
    assert r.json()["objects"] == 10
    assert vf("--config", str(cfg), "copy", "new:copy", str(tmp_path / "back"), env=env).code == 0
    assert trees_equal(tmp_path / "src", tmp_path / "back") == []


def test_single_object_source(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str) -> None:
    (tmp_path / "src" / "d").mkdir(parents=True)
    (tmp_path / "src" / "d" / "one.txt").write_text("one")
    assert vf("copy", str(tmp_path / "src"), f"s3://{s3_bucket}").code == 0
    r = vf("copy", f"s3://{s3_bucket}/d/one.txt", str(tmp_path / "out"))
    assert r.code == 0, r.err
    assert (tmp_path / "out" / "one.txt").read_text() == "one"


def test_wrong_credentials_exit_2_without_leaking(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str) -> None:
    make_tree(tmp_path / "src", files=2)
    r = vf("copy", str(tmp_path / "src"), f"s3://{s3_bucket}/x",
           env={"AWS_SECRET_ACCESS_KEY": "wrong-secret-value-123"})
    assert r.code == 2
    assert "credentials" in r.err.lower() or "signature" in r.err.lower() or "access" in r.err.lower()
    assert "wrong-secret-value-123" not in r.err + r.out


def test_missing_bucket_exit_2(tmp_path: Path, s3_env: dict[str, str]) -> None:
    make_tree(tmp_path / "src", files=2)
    r = vf("copy", str(tmp_path / "src"), "s3://no-such-bucket-vf/x")
    assert r.code == 2
    assert "no-such-bucket-vf" in r.err and "does not exist" in r.err
    r = vf("copy", "s3://no-such-bucket-vf/x", str(tmp_path / "dst"))
    assert r.code == 2 and "does not exist" in r.err


def test_missing_source_prefix_exit_2(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str) -> None:
    r = vf("copy", f"s3://{s3_bucket}/nothing/here", str(tmp_path / "dst"))
    assert r.code == 2
    assert "nothing found" in r.err


def test_unreachable_endpoint_exit_2_quickly(tmp_path: Path, s3_env: dict[str, str]) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    make_tree(tmp_path / "src", files=2)
    start = time.monotonic()
    r = vf("copy", str(tmp_path / "src"), "s3://bucket/x", env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"})
    assert r.code == 2
    assert f"127.0.0.1:{port}" in r.err
    assert time.monotonic() - start < 60


def test_keys_that_cannot_live_on_disk_fail_alone(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str,
                                                  seaweed: SeaweedFS) -> None:
    client = seaweed.boto3_client()
    client.put_object(Bucket=s3_bucket, Key="clash", Body=b"file")
    client.put_object(Bucket=s3_bucket, Key="clash/inside", Body=b"nested")
    client.put_object(Bucket=s3_bucket, Key="fine.txt", Body=b"ok")
    r = vf("copy", f"s3://{s3_bucket}", str(tmp_path / "dst"), "--json")
    assert r.code == 1, r.err
    s = r.json()
    assert s["objects"] == 2 and s["failed"] == 1
    assert s["failures"][0]["key"] in ("clash", "clash/inside")
    assert "FAILED" in r.err
    assert (tmp_path / "dst" / "fine.txt").read_bytes() == b"ok"
