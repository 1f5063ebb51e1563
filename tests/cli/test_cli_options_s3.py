"""The rclone options of copy and sync against a real S3 server (SeaweedFS on 127.0.0.1), checked with boto3."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from vertexflow.testing.seaweedfs import SeaweedFS

from .helpers import vf

pytestmark = pytest.mark.s3

KB = 1024


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored(client: Any, bucket: str, prefix: str) -> dict[str, str]:
    """Every object under ``prefix`` (key relative to it) -> SHA-256 of its bytes, read with boto3."""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", ()):
            out[o["Key"][len(prefix):]] = sha(client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())
    return out


def incomplete_uploads(client: Any, bucket: str) -> list[str]:
    return [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", ())]


def test_max_transfer_to_s3_and_a_rerun_finishes(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str,
                                                  seaweed: SeaweedFS) -> None:
    files = {f"f{i}.bin": os.urandom(300 * KB) for i in range(5)}
    tree(tmp_path / "src", files)
    dst = f"s3://{s3_bucket}/limited/"
    r = vf("copy", str(tmp_path / "src"), dst, "--transfers", "1", "--max-transfer", "700k",
           "--cutoff-mode", "cautious", "--json")
    assert r.code == 8, r.err
    client = seaweed.boto3_client()
    assert len(stored(client, s3_bucket, "limited/")) == 2 == json.loads(r.out)["objects"]
    r = vf("copy", str(tmp_path / "src"), dst, "--json")
    assert r.code == 0 and json.loads(r.out)["skipped"] == 2
    assert stored(client, s3_bucket, "limited/") == {k: sha(v) for k, v in files.items()}


def test_hard_cutoff_during_a_multipart_upload(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str,
                                               seaweed: SeaweedFS) -> None:
    data = os.urandom(20 * 1024 * KB)  # multipart: 8 MiB parts
    tree(tmp_path / "src", {"big.bin": data})
    dst = f"s3://{s3_bucket}/big/"
    r = vf("copy", str(tmp_path / "src"), dst, "--bwlimit", "4M", "--max-transfer", "10M", "--json")
    assert r.code == 8, r.err
    assert json.loads(r.out)["cutoff"]["aborted"] == 1
    client = seaweed.boto3_client()
    assert stored(client, s3_bucket, "big/") == {}
    r = vf("copy", str(tmp_path / "src"), dst, "--json")
    assert r.code == 0, r.err
    assert stored(client, s3_bucket, "big/") == {"big.bin": sha(data)}
    assert incomplete_uploads(client, s3_bucket) == []  # the rerun finished (or aborted) what the cut left


def test_files_from_an_s3_source(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str,
                                 seaweed: SeaweedFS) -> None:
    client = seaweed.boto3_client()
    for key in ("p/a/1.txt", "p/a/2.txt", "p/b/3.txt", "p/c/4.txt"):
        client.put_object(Bucket=s3_bucket, Key=key, Body=key.encode())
    (tmp_path / "list").write_text("a/2.txt\nc/4.txt\n")
    r = vf("copy", f"s3://{s3_bucket}/p", str(tmp_path / "dst"), "--files-from", str(tmp_path / "list"))
    assert r.code == 0, r.err
    assert sorted(str(p.relative_to(tmp_path / "dst")) for p in (tmp_path / "dst").rglob("*") if p.is_file()) \
        == ["a/2.txt", "c/4.txt"]


def test_ignore_existing_update_immutable_to_s3(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str,
                                                seaweed: SeaweedFS) -> None:
    client = seaweed.boto3_client()
    src = tree(tmp_path / "src", {"changed.txt": b"new bytes", "new.txt": b"new"})
    old = time.time() - 3600
    os.utime(src / "changed.txt", (old, old))  # the object stored just now is newer than its source
    client.put_object(Bucket=s3_bucket, Key="d/changed.txt", Body=b"stored before")
    dst = f"s3://{s3_bucket}/d/"

    r = vf("copy", str(src), dst, "--immutable", "--json")
    assert r.code == 1 and json.loads(r.out)["failed"] == 1 and "FAILED changed.txt" in r.err
    assert stored(client, s3_bucket, "d/") == {"changed.txt": sha(b"stored before"), "new.txt": sha(b"new")}

    client.delete_object(Bucket=s3_bucket, Key="d/new.txt")
    r = vf("copy", str(src), dst, "--ignore-existing", "--json")
    assert r.code == 0 and json.loads(r.out)["objects"] == 1
    r = vf("copy", str(src), dst, "--update", "--checksum", "--json")
    assert r.code == 0 and json.loads(r.out)["objects"] == 0  # newer at the destination: kept
    assert stored(client, s3_bucket, "d/")["changed.txt"] == sha(b"stored before")
    r = vf("copy", str(src), dst, "--checksum", "--json")
    assert r.code == 0 and stored(client, s3_bucket, "d/")["changed.txt"] == sha(b"new bytes")


def test_backup_dir_on_s3(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str, seaweed: SeaweedFS) -> None:
    client = seaweed.boto3_client()
    src = tree(tmp_path / "src", {"edit.txt": b"version 2!", "same.txt": b"same"})
    client.put_object(Bucket=s3_bucket, Key="live/edit.txt", Body=b"version 1")
    client.put_object(Bucket=s3_bucket, Key="live/gone.txt", Body=b"deleted by the sync")
    live, backup = f"s3://{s3_bucket}/live/", f"s3://{s3_bucket}/backup/2024-05-01/"

    inside = vf("sync", str(src), live, "--delete", "--backup-dir", f"s3://{s3_bucket}/live/old")
    assert inside.code == 2 and "overlaps the destination" in inside.err
    assert stored(client, s3_bucket, "") == {"live/edit.txt": sha(b"version 1"),
                                             "live/gone.txt": sha(b"deleted by the sync")}

    r = vf("sync", str(src), live, "--delete", "--backup-dir", backup, "--json")
    assert r.code == 0, r.err
    assert stored(client, s3_bucket, "live/") == {"edit.txt": sha(b"version 2!"), "same.txt": sha(b"same")}
    assert stored(client, s3_bucket, "backup/2024-05-01/") == {"edit.txt": sha(b"version 1"),
                                                               "gone.txt": sha(b"deleted by the sync")}


def test_links_stored_on_s3(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str, seaweed: SeaweedFS) -> None:
    src = tree(tmp_path / "src", {"real.txt": b"real"})
    (src / "alias").symlink_to("real.txt")
    r = vf("copy", str(src), f"s3://{s3_bucket}/l/", "--links")
    assert r.code == 0, r.err
    client = seaweed.boto3_client()
    assert client.get_object(Bucket=s3_bucket, Key="l/alias.rclonelink")["Body"].read() == b"real.txt"
    r = vf("copy", str(src), f"s3://{s3_bucket}/f/", "--copy-links")
    assert r.code == 0, r.err
    assert client.get_object(Bucket=s3_bucket, Key="f/alias")["Body"].read() == b"real"


def test_s3_remote_from_the_environment(tmp_path: Path, seaweed: SeaweedFS, s3_bucket: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    tree(tmp_path / "src", {"a.txt": b"from the environment"})
    env = {"VERTEXFLOW_REMOTE_MYS3_TYPE": "s3", "VERTEXFLOW_REMOTE_MYS3_ENDPOINT": seaweed.endpoint,
           "VERTEXFLOW_REMOTE_MYS3_REGION": seaweed.region, "VERTEXFLOW_REMOTE_MYS3_ADDRESSING_STYLE": "path",
           "VERTEXFLOW_REMOTE_MYS3_ACCESS_KEY_ID": seaweed.access_key,
           "VERTEXFLOW_REMOTE_MYS3_SECRET_ACCESS_KEY": seaweed.secret_key}
    r = vf("copy", str(tmp_path / "src"), f"mys3:{s3_bucket}/env/", env=env)
    assert r.code == 0, r.err
    client = seaweed.boto3_client()
    assert stored(client, s3_bucket, "env/") == {"a.txt": sha(b"from the environment")}
    assert seaweed.secret_key not in r.out + r.err
    # the environment's key wins over the config file's
    config = tmp_path / "vf.toml"
    config.write_text(f'[remotes.mys3]\ntype = "s3"\nendpoint = "{seaweed.endpoint}"\nregion = "{seaweed.region}"\n'
                      f'addressing_style = "path"\naccess_key_id = "{seaweed.access_key}"\n'
                      'secret_access_key = "not-the-secret"\n')
    wrong = vf("--config", str(config), "ls", f"mys3:{s3_bucket}/env/")
    assert wrong.code == 2
    right = vf("--config", str(config), "ls", f"mys3:{s3_bucket}/env/",
               env={"VERTEXFLOW_REMOTE_MYS3_SECRET_ACCESS_KEY": seaweed.secret_key})
    assert right.code == 0 and right.out.split() == ["a.txt"]


def test_max_duration_to_s3(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str, seaweed: SeaweedFS) -> None:
    files = {f"f{i}.bin": os.urandom(512 * KB) for i in range(6)}
    tree(tmp_path / "src", files)
    args = ["copy", str(tmp_path / "src"), f"s3://{s3_bucket}/timed/", "--transfers", "1", "--json"]
    r = vf(*args, "--bwlimit", "1M", "--max-duration", "1s", "--cutoff-mode", "hard")
    assert r.code == 10, r.err
    s = json.loads(r.out)
    client = seaweed.boto3_client()
    assert s["cutoff"]["reached"] == "max-duration" and len(stored(client, s3_bucket, "timed/")) == s["objects"] < 6
    assert incomplete_uploads(client, s3_bucket) == []
    r = vf(*args)
    assert r.code == 0, r.err
    assert stored(client, s3_bucket, "timed/") == {k: sha(v) for k, v in files.items()}


def test_empty_folders_are_not_made_in_a_bucket(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str,
                                                seaweed: SeaweedFS) -> None:
    tree(tmp_path / "src", {"full/a.txt": b"a"})
    (tmp_path / "src" / "empty").mkdir()
    r = vf("copy", str(tmp_path / "src"), f"s3://{s3_bucket}/e/", "--create-empty-src-dirs")
    assert r.code == 0, r.err
    assert "no folders made" in r.err
    assert list(stored(seaweed.boto3_client(), s3_bucket, "e/")) == ["full/a.txt"]
