"""delete, purge, rmdir, mkdir, cat, lsd, lsjson, size, about and cleanup, run as users run them, against local
disk, SeaweedFS and the Yandex.Disk emulator; what they did is read back with os, boto3 and yadisk."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yadisk

from vertexflow.backends.local import TMP_PREFIX
from vertexflow.backends.yandex import YandexDiskBackend
from vertexflow.testing.seaweedfs import SeaweedFS
from vertexflow.testing.yandex_disk.process import emulator_process

from .helpers import vf

TOKEN = "files-token-3f9a"


def tree(root: Path, files: dict[str, bytes]) -> None:
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)


def keys_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


FILES = {"a.jpg": b"jpeg" * 100, "b.txt": b"text", "d/c.jpg": b"c" * 5000, "d/e/f.txt": b"f" * 10,
         "d/e/g.jpg": b"g" * 20}


# -- local disk ----------------------------------------------------------------------------------------

def test_delete_with_filters_dry_run_max_delete_and_rmdirs(tmp_path: Path) -> None:
    root = tmp_path / "t"
    tree(root, FILES)
    (root / "empty" / "deeper").mkdir(parents=True)
    dry = vf("delete", str(root), "--include", "*.jpg", "--include", "**/*.jpg", "--dry-run")
    assert dry.code == 0, dry.err
    assert sorted(line.split()[1] for line in dry.out.splitlines()) == ["a.jpg", "d/c.jpg", "d/e/g.jpg"]
    assert keys_under(root) == sorted(FILES)  # nothing touched
    refused = vf("delete", str(root), "--include", "**.jpg", "--max-delete", "2")
    assert refused.code == 2 and "more than --max-delete 2" in refused.err and "nothing was deleted" in refused.err
    assert keys_under(root) == sorted(FILES)
    done = vf("delete", str(root), "--include", "**.jpg", "--max-delete", "3", "--json")
    assert done.code == 0, done.err
    assert done.json()["deleted"] == 3 and done.json()["bytes"] == 400 + 5000 + 20
    assert keys_under(root) == ["b.txt", "d/e/f.txt"]
    assert (root / "empty" / "deeper").is_dir()  # folders stay without --rmdirs
    assert vf("delete", str(root), "--include", "nothing-matches", "--rmdirs").code == 0
    assert not (root / "empty").exists() and (root / "d" / "e").is_dir()
    one = vf("delete", str(root / "d" / "e" / "f.txt"))
    assert one.code == 0, one.err
    assert keys_under(root) == ["b.txt"]


def test_delete_refuses_a_root_without_force_root(tmp_path: Path) -> None:
    root = tmp_path / "remote-root"
    tree(root, FILES)
    cfg = tmp_path / "vf.toml"
    cfg.write_text(f'[remotes.disk]\ntype = "local"\npath = "{root}"\n')
    for spec in ("disk:", "disk:/"):
        r = vf("--config", str(cfg), "delete", spec)
        assert r.code == 2 and "root of the store" in r.err and "--force-root" in r.err, r.err
        r = vf("--config", str(cfg), "purge", spec)
        assert r.code == 2 and "root of the store" in r.err
    assert keys_under(root) == sorted(FILES)
    r = vf("delete", "/", "--dry-run")
    assert r.code == 2 and "root of the store" in r.err
    sub = vf("--config", str(cfg), "delete", "disk:d", "--dry-run")  # under the root: allowed
    assert sub.code == 0, sub.err
    forced = vf("--config", str(cfg), "delete", "disk:", "--force-root", "--include", "/*.txt")
    assert forced.code == 0, forced.err
    assert keys_under(root) == ["a.jpg", "d/c.jpg", "d/e/f.txt", "d/e/g.jpg"]


def test_purge_rmdir_and_mkdir_on_local_disk(tmp_path: Path) -> None:
    root = tmp_path / "t"
    tree(root, FILES)
    (root / "d" / "hollow" / "inner").mkdir(parents=True)
    dry = vf("purge", str(root / "d"), "--dry-run")
    assert dry.code == 0 and "remove folder" in dry.out
    assert len(keys_under(root)) == len(FILES)
    assert vf("purge", str(root / "d"), "--max-delete", "2").code == 2
    assert (root / "d" / "c.jpg").exists()
    purged = vf("purge", str(root / "d"), "--json")
    assert purged.code == 0, purged.err
    assert purged.json()["deleted"] == 3
    assert not (root / "d").exists() and keys_under(root) == ["a.jpg", "b.txt"]
    file_purge = vf("purge", str(root / "a.jpg"))
    assert file_purge.code == 2 and "one object" in file_purge.err and (root / "a.jpg").exists()

    made = vf("mkdir", str(root / "x" / "y"))
    assert made.code == 0 and (root / "x" / "y").is_dir()
    assert vf("mkdir", str(root / "x" / "y")).code == 0  # one that exists is fine
    blocked = vf("mkdir", str(root / "a.jpg" / "sub"))
    assert blocked.code == 2
    not_empty = vf("rmdir", str(root / "x"))
    assert not_empty.code == 2 and "not empty" in not_empty.err and (root / "x" / "y").is_dir()
    assert vf("rmdir", str(root / "x" / "y"), "--dry-run").code == 0 and (root / "x" / "y").is_dir()
    assert vf("rmdir", str(root / "x" / "y")).code == 0 and not (root / "x" / "y").exists()
    assert vf("rmdir", str(root / "x")).code == 0 and not (root / "x").exists()
    holding = vf("rmdir", str(root))
    assert holding.code == 2 and "holds objects" in holding.err
    missing = vf("rmdir", str(root / "never"))
    assert missing.code == 2 and "never" in missing.err


def test_cat_lsd_lsjson_size_about_on_local_disk(tmp_path: Path) -> None:
    root = tmp_path / "t"
    tree(root, {**FILES, "odd/new\nline.txt": b"n"})
    assert vf("cat", str(root / "d" / "c.jpg")).out == "c" * 5000
    part = vf("cat", str(root / "a.jpg"), "--offset", "4", "--count", "6")
    assert part.code == 0 and part.out == "jpegjp"
    missing = vf("cat", str(root / "nope.txt"))
    assert missing.code == 2 and "no such object" in missing.err and "nope.txt" in missing.err
    folder = vf("cat", str(root / "d"))
    assert folder.code == 2 and "folder" in folder.err

    lsd = vf("lsd", str(root))
    assert lsd.code == 0 and lsd.out.splitlines() == ["d/", "odd/"]

    listed = vf("lsjson", str(root), "--exclude", "odd/*")
    assert listed.code == 0, listed.err
    items = json.loads(listed.out)
    assert sorted(i["key"] for i in items) == sorted(FILES)
    assert {i["key"]: i["size"] for i in items} == {k: len(v) for k, v in FILES.items()}
    odd = json.loads(vf("lsjson", str(root / "odd")).out)
    assert [i["key"] for i in odd] == ["new\nline.txt"]
    assert json.loads(vf("lsjson", str(root), "--include", "nothing").out) == []

    size = vf("size", str(root), "--include", "**.jpg", "--json")
    assert size.json() == {"objects": 3, "bytes": 400 + 5000 + 20, "objects_of_unknown_size": 0}
    text = vf("size", str(root))
    assert "objects: 6" in text.out

    about = vf("about", str(root), "--json").json()
    st = os.statvfs(root)
    assert about["total"] == st.f_blocks * st.f_frsize
    assert about["free"] is not None and abs(about["free"] - st.f_bavail * st.f_frsize) < 64 * 1024 * 1024


def test_cleanup_removes_stale_temporary_files_only(tmp_path: Path) -> None:
    root = tmp_path / "t"
    tree(root, FILES)
    stale = root / "d" / f"{TMP_PREFIX}otherhost-123-000000000001"
    fresh = root / f"{TMP_PREFIX}otherhost-456-000000000002"
    stale.write_bytes(b"x" * 100)
    fresh.write_bytes(b"y")
    two_days_ago = time.time() - 2 * 86400
    os.utime(stale, (two_days_ago, two_days_ago))
    dry = vf("cleanup", str(root), "--dry-run")
    assert dry.code == 0 and "would remove temporary file d/" in dry.out and stale.exists()
    done = vf("cleanup", str(root), "--json")
    assert done.code == 0, done.err
    assert done.json()["temp_files"] == 1 and done.json()["temp_bytes"] == 100
    assert not stale.exists() and fresh.exists()  # a day old at least, by default
    assert vf("cleanup", str(root), "--older-than", "0s").code == 0 and not fresh.exists()
    assert keys_under(root) == sorted(FILES)
    bad = vf("cleanup", str(root), "--older-than", "soon")
    assert bad.code == 2 and "invalid age" in bad.err


# -- S3 ----------------------------------------------------------------------------------------------

def put_all(client: object, bucket: str, prefix: str, files: dict[str, bytes]) -> None:
    for key, data in files.items():
        client.put_object(Bucket=bucket, Key=f"{prefix}{key}", Body=data)  # type: ignore[attr-defined]


def s3_keys(client: object, bucket: str, prefix: str = "") -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)  # type: ignore[attr-defined]
    return sorted(o["Key"] for page in pages for o in page.get("Contents", ()))


@pytest.mark.s3
def test_delete_purge_rmdir_mkdir_on_s3(s3_env: dict[str, str], s3_bucket: str, seaweed: SeaweedFS) -> None:
    client = seaweed.boto3_client()
    put_all(client, s3_bucket, "p/", FILES)
    put_all(client, s3_bucket, "q/", {"keep.txt": b"keep"})
    refused = vf("delete", f"s3://{s3_bucket}")
    assert refused.code == 2 and s3_bucket in refused.err and "--force-root" in refused.err
    from_env = vf("delete", f"s3://{s3_bucket}", env={"VERTEXFLOW_FORCE_ROOT": "true"})
    assert from_env.code == 2 and "command line" in from_env.err  # lifted by the person typing it only
    assert vf("purge", f"s3://{s3_bucket}/").code == 2
    assert len(s3_keys(client, s3_bucket)) == len(FILES) + 1  # nothing touched

    done = vf("delete", f"s3://{s3_bucket}/p", "--include", "**.jpg", "--json")
    assert done.code == 0, done.err
    assert done.json()["deleted"] == 3
    assert s3_keys(client, s3_bucket, "p/") == ["p/b.txt", "p/d/e/f.txt"]
    one = vf("delete", f"s3://{s3_bucket}/p/b.txt")
    assert one.code == 0 and s3_keys(client, s3_bucket, "p/") == ["p/d/e/f.txt"]

    not_empty = vf("rmdir", f"s3://{s3_bucket}/p")
    assert not_empty.code == 2 and "not empty" in not_empty.err
    purged = vf("purge", f"s3://{s3_bucket}/p")
    assert purged.code == 0, purged.err
    assert s3_keys(client, s3_bucket) == ["q/keep.txt"]
    empty = vf("rmdir", f"s3://{s3_bucket}/p")
    assert empty.code == 0 and "keeps no folders" in empty.err
    assert vf("rmdir", f"s3://{s3_bucket}").code == 2  # a bucket: rmdir removes folders only
    made = vf("mkdir", f"s3://{s3_bucket}/new/folder")
    assert made.code == 0 and "keeps no folders" in made.err
    assert s3_keys(client, s3_bucket) == ["q/keep.txt"]
    no_bucket = vf("mkdir", f"s3://{s3_bucket}-absent/x")
    assert no_bucket.code == 2 and "does not exist" in no_bucket.err

    forced = vf("delete", f"s3://{s3_bucket}", "--force-root")
    assert forced.code == 0 and s3_keys(client, s3_bucket) == []


@pytest.mark.s3
def test_cat_lsd_lsjson_size_about_on_s3(s3_env: dict[str, str], s3_bucket: str, seaweed: SeaweedFS) -> None:
    client = seaweed.boto3_client()
    big = os.urandom(9 * 1024 * 1024)  # several answers' worth
    put_all(client, s3_bucket, "p/", {**FILES, "big.bin": big})
    cat = subprocess.run([sys.executable, "-m", "vertexflow", "cat", f"s3://{s3_bucket}/p/big.bin"],
                         capture_output=True, timeout=120)
    assert cat.returncode == 0 and hashlib.sha256(cat.stdout).digest() == hashlib.sha256(big).digest()
    head = subprocess.run(f"{sys.executable} -m vertexflow cat s3://{s3_bucket}/p/big.bin | head -c 5",
                          shell=True, capture_output=True, timeout=120)
    assert head.stdout == big[:5] and b"Error" not in head.stderr  # a reader that stops early is no error
    missing = vf("cat", f"s3://{s3_bucket}/p/missing.txt")
    assert missing.code == 2 and "no such object" in missing.err and "missing.txt" in missing.err

    assert vf("lsd", f"s3://{s3_bucket}/p").out.splitlines() == ["d/"]
    assert vf("lsd", f"s3://{s3_bucket}").out.splitlines() == ["p/"]
    buckets = vf("lsd", "s3://", "--json")
    assert buckets.code == 0, buckets.err
    assert s3_bucket in [b["name"] for b in buckets.json()]

    items = json.loads(vf("lsjson", f"s3://{s3_bucket}/p", "--include", "d/**").out)
    assert sorted(i["key"] for i in items) == ["d/c.jpg", "d/e/f.txt", "d/e/g.jpg"]
    assert all(i["hashes"].get("md5") for i in items)
    size = vf("size", f"s3://{s3_bucket}/p", "--json").json()
    assert size["objects"] == len(FILES) + 1 and size["bytes"] == sum(map(len, FILES.values())) + len(big)
    about = vf("about", f"s3://{s3_bucket}", "--json").json()
    assert about["total"] is None and about["free"] is None
    assert "not reported" in vf("about", f"s3://{s3_bucket}").out


@pytest.mark.s3
def test_cleanup_aborts_incomplete_uploads_under_the_location(s3_env: dict[str, str], s3_bucket: str,
                                                              seaweed: SeaweedFS) -> None:
    client = seaweed.boto3_client()
    inside = client.create_multipart_upload(Bucket=s3_bucket, Key="p/big.bin")["UploadId"]
    client.upload_part(Bucket=s3_bucket, Key="p/big.bin", UploadId=inside, PartNumber=1, Body=b"x" * 1024)
    outside = client.create_multipart_upload(Bucket=s3_bucket, Key="other/big.bin")["UploadId"]

    def uploads() -> set[str]:
        return {u["UploadId"] for u in client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", ())}

    young = vf("cleanup", f"s3://{s3_bucket}/p", "--json")  # begun just now: younger than the default day
    assert young.code == 0, young.err
    assert young.json()["incomplete_uploads"] == 0 and uploads() == {inside, outside}
    dry = vf("cleanup", f"s3://{s3_bucket}/p", "--older-than", "0s", "--dry-run")
    assert dry.code == 0 and "would abort upload big.bin" in dry.out and inside in dry.out
    assert uploads() == {inside, outside}
    done = vf("cleanup", f"s3://{s3_bucket}/p", "--older-than", "0s")
    assert done.code == 0, done.err
    assert uploads() == {outside}
    client.abort_multipart_upload(Bucket=s3_bucket, Key="other/big.bin", UploadId=outside)


# -- Yandex.Disk ---------------------------------------------------------------------------------------

@pytest.fixture
def yandex(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[dict[str, str], yadisk.Client]]:
    with emulator_process("--token", TOKEN, "--data-dir", str(tmp_path / "yd-state")) as url:
        monkeypatch.setattr(yadisk.settings, "BASE_API_URL", url.removesuffix("/v1/disk"))
        with yadisk.Client(token=TOKEN, session="requests") as disk:
            yield {"YANDEX_DISK_TOKEN": TOKEN, "YANDEX_DISK_API_URL": url}, disk


def test_commands_on_yandex_disk(tmp_path: Path, yandex: tuple[dict[str, str], yadisk.Client]) -> None:
    env, disk = yandex
    tree(tmp_path / "src", FILES)
    assert vf("copy", str(tmp_path / "src"), "yadisk:/t", env=env).code == 0
    made = vf("mkdir", "yadisk:/t/hollow/inner", env=env)
    assert made.code == 0 and disk.is_dir("/t/hollow/inner")

    assert vf("lsd", "yadisk:/t", env=env).out.splitlines() == ["d/", "hollow/"]
    assert vf("cat", "yadisk:/t/d/c.jpg", env=env).out == "c" * 5000
    missing = vf("cat", "yadisk:/t/nope.txt", env=env)
    assert missing.code == 2 and "no such object" in missing.err
    items = json.loads(vf("lsjson", "yadisk:/t", env=env).out)
    assert sorted(i["key"] for i in items) == sorted(FILES)
    assert vf("size", "yadisk:/t", "--json", env=env).json()["bytes"] == sum(map(len, FILES.values()))
    about = vf("about", "yadisk:/", "--json", env=env).json()
    info = disk.get_disk_info()
    assert about["free"] == info.total_space - info.used_space
    assert vf("delete", "yadisk:/", env=env).code == 2  # the disk's root

    deleted = vf("delete", "yadisk:/t", "--include", "**.jpg", env=env)
    assert deleted.code == 0, deleted.err
    assert sorted(f.path for f in disk.listdir("/t/d/e")) == ["disk:/t/d/e/f.txt"]
    assert not disk.exists("/t/a.jpg") and disk.exists("/t/b.txt")

    removes = YandexDiskBackend.features.folder_removal
    rmdir = vf("rmdir", "yadisk:/t/hollow/inner", env=env)
    assert rmdir.code == (0 if removes else 2)
    assert disk.exists("/t/hollow/inner") != removes
    purge = vf("purge", "yadisk:/t/d", env=env)
    assert purge.code == (0 if removes else 1), purge.err
    assert not disk.exists("/t/d/e/f.txt") and not disk.exists("/t/d/c.jpg")  # the objects go either way
    assert disk.exists("/t/d") != removes
    if not removes:
        assert "cannot remove folders" in purge.err
    nothing = vf("cleanup", "yadisk:/t", env=env)
    assert nothing.code == 0 and "nothing to clean up" in nothing.err
