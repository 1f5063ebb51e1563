"""What describes each file (Content-Type, headers, user metadata, mtime) goes into the backup and comes back.

The backup keeps it in ``MEMBERS.jsonl`` (one JSON object per archived file,
docs/backup.md), read here with ``jq``; ``tar`` still reads the archive as
before. A restore gives it back to the target: S3 headers and
``x-amz-meta-*`` (read with boto3), Yandex.Disk custom properties (read with
yadisk), a local file's mtime (``os.stat``). A backup without the file (one
written before it existed) still restores, its mtimes from the tar headers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.cli.helpers import vf
from vertexflow.model import mtime_text
from vertexflow.testing.seaweedfs import SeaweedFS

from .forge import folder_of, read_meta, write_meta

pytestmark = pytest.mark.s3

MTIME = datetime(2025, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
SMALL = os.urandom(3000)
LARGE = os.urandom(1024 * 1024 + 5000)  # over the 1 MiB read whole: streamed, described by a HeadObject
CLIP = {"ContentType": "video/mp4", "CacheControl": "max-age=3600", "ContentLanguage": "en",
        "Metadata": {"owner": "company-7", "mtime": mtime_text(MTIME)}}
OBJECTS = {
    "videos/acme/cats/clip.mp4": (SMALL, CLIP),
    "videos/acme/cats/long.mp4": (LARGE, CLIP),
    "portraits/acme/cats/Image/a.jpg": (b"jpeg" * 100, {"ContentType": "image/jpeg", "Metadata": {}}),
}


@pytest.fixture
def second_bucket(seaweed: SeaweedFS, s3_bucket: str) -> Iterator[str]:
    with seaweed.temporary_bucket(f"{s3_bucket}-restored") as name:
        yield name


def sh(cmd: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True)


def jq(folder: Path, program: str) -> list[object]:
    r = sh(f"jq -c '{program}' MEMBERS.jsonl", folder)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def s3_backup(tmp_path: Path, seaweed: SeaweedFS, bucket: str) -> Path:
    client = seaweed.boto3_client()
    for key, (body, extra) in OBJECTS.items():
        client.put_object(Bucket=bucket, Key=f"src/{key}", Body=body, **extra)  # type: ignore[arg-type]
    r = vf("backup", "create", "--type", "storage", "--storage", f"s3://{bucket}/src", "--to",
           str(tmp_path / "backups"), "--compress", "zstd", "--chunk-size", "256K")
    assert r.code == 0, r.err
    return folder_of(tmp_path / "backups")


def head(seaweed: SeaweedFS, bucket: str, key: str) -> dict[str, object]:
    return seaweed.boto3_client().head_object(Bucket=bucket, Key=key)  # type: ignore[no-any-return]


def test_s3_description_survives_backup_and_restore_to_another_bucket(
        tmp_path: Path, seaweed: SeaweedFS, s3_bucket: str, second_bucket: str, s3_env: dict[str, str]) -> None:
    folder = s3_backup(tmp_path, seaweed, s3_bucket)

    # plain tools: the archive lists and unpacks as before, the descriptions read with jq
    listing = sh("cat storage.tar.zst.part* | zstd -dc | tar -t", folder)
    assert listing.returncode == 0 and sorted(listing.stdout.split()) == sorted(OBJECTS)
    assert sh("sha256sum -c --strict --quiet SHA256SUMS", folder).returncode == 0
    assert "MEMBERS.jsonl" in (folder / "SHA256SUMS").read_text()
    clip = jq(folder, 'select(.path == "videos/acme/cats/clip.mp4")')
    assert clip == [{"path": "videos/acme/cats/clip.mp4", "mtime": mtime_text(MTIME), "content_type": "video/mp4",
                     "headers": {"cache-control": "max-age=3600", "content-language": "en"},
                     "metadata": {"owner": "company-7", "mtime": mtime_text(MTIME)}}]
    assert jq(folder, '[.path, .content_type]') == sorted(
        ([k, extra["ContentType"]] for k, (_, extra) in OBJECTS.items()), key=lambda pair: pair[0])

    r = vf("backup", "restore", str(folder), "--target-storage", f"s3://{second_bucket}/again", "--json")
    assert r.code == 0, r.err
    assert r.json()["files"] == len(OBJECTS)
    for key, (body, extra) in OBJECTS.items():
        got = head(seaweed, second_bucket, f"again/{key}")
        assert got["ContentType"] == extra["ContentType"], key
        assert got.get("CacheControl") == extra.get("CacheControl"), key
        assert got.get("ContentLanguage") == extra.get("ContentLanguage"), key
        meta = dict(got["Metadata"])  # type: ignore[call-overload]
        assert meta.pop("sha256") == hashlib.sha256(body).hexdigest(), key
        assert meta.get("owner") == extra["Metadata"].get("owner"), key  # type: ignore[union-attr]
        if key.endswith(".mp4"):
            assert meta == {"owner": "company-7", "mtime": mtime_text(MTIME)}, key


def test_restore_to_local_disk_sets_the_mtime_and_to_yandex_disk_the_properties(
        tmp_path: Path, seaweed: SeaweedFS, s3_bucket: str, s3_env: dict[str, str]) -> None:
    import anyio
    import yadisk

    from vertexflow.testing.yandex_disk import running_emulator

    folder = s3_backup(tmp_path, seaweed, s3_bucket)
    r = vf("backup", "restore", str(folder), "--target-storage", str(tmp_path / "local"))
    assert r.code == 0, r.err
    for key, (body, _) in OBJECTS.items():
        path = tmp_path / "local" / key
        assert path.read_bytes() == body
        if key.endswith(".mp4"):
            assert os.stat(path).st_mtime_ns == int(MTIME.timestamp()) * 10**9 + MTIME.microsecond * 1000

    async def to_yandex() -> dict[str, object]:
        async with running_emulator(token="t") as emu:
            env = {"YANDEX_DISK_TOKEN": "t", "YANDEX_DISK_API_URL": emu.base_url}
            res = await anyio.to_thread.run_sync(lambda: vf(
                "backup", "restore", str(folder), "--target-storage", "yadisk:/restored", env=env))
            assert res.code == 0, res.err
            yadisk.settings.BASE_API_URL = emu.origin  # type: ignore[attr-defined]
            async with yadisk.AsyncClient(token="t", session="aiohttp") as disk:
                meta = await disk.get_meta("/restored/videos/acme/cats/clip.mp4")
                return dict(meta.custom_properties or {})

    old = yadisk.settings.BASE_API_URL  # type: ignore[attr-defined]
    try:
        props = anyio.run(to_yandex)
    finally:
        yadisk.settings.BASE_API_URL = old  # type: ignore[attr-defined]
    assert props.get("owner") == "company-7" and props.get("mtime") == mtime_text(MTIME)


def test_a_backup_without_descriptions_still_restores(tmp_path: Path, seaweed: SeaweedFS, s3_bucket: str,
                                                     second_bucket: str, s3_env: dict[str, str]) -> None:
    """As written before MEMBERS.jsonl existed: no such file, no field for it in metadata.json."""
    folder = s3_backup(tmp_path, seaweed, s3_bucket)
    meta = read_meta(folder)
    assert meta.storage is not None
    (folder / "MEMBERS.jsonl").unlink()
    write_meta(folder, dataclasses.replace(meta, storage=dataclasses.replace(meta.storage, descriptions=None)))
    doc = json.loads((folder / "metadata.json").read_bytes())
    assert "descriptions" not in doc["storage"] and "MEMBERS.jsonl" not in (folder / "SHA256SUMS").read_text()
    assert vf("backup", "verify", str(folder)).code == 0

    r = vf("backup", "restore", str(folder), "--target-storage", str(tmp_path / "local"))
    assert r.code == 0, r.err
    clip = tmp_path / "local" / "videos/acme/cats/clip.mp4"
    assert clip.read_bytes() == SMALL
    assert os.stat(clip).st_mtime == int(MTIME.timestamp())  # the tar header's whole seconds
    r = vf("backup", "restore", str(folder), "--target-storage", f"s3://{second_bucket}/old")
    assert r.code == 0, r.err
    got = head(seaweed, second_bucket, "old/videos/acme/cats/clip.mp4")
    assert got["Metadata"]["sha256"] == hashlib.sha256(SMALL).hexdigest()  # type: ignore[index]


def test_a_damaged_description_list_stops_restore_before_the_first_write(
        tmp_path: Path, seaweed: SeaweedFS, s3_bucket: str, s3_env: dict[str, str]) -> None:
    folder = s3_backup(tmp_path, seaweed, s3_bucket)
    path = folder / "MEMBERS.jsonl"
    path.write_bytes(path.read_bytes().replace(b"company-7", b"company-8"))

    v = vf("backup", "verify", str(folder))
    assert v.code == 1 and "MEMBERS.jsonl" in v.out
    r = vf("backup", "restore", str(folder), "--target-storage", str(tmp_path / "local"))
    assert r.code == 1 and "MEMBERS.jsonl" in r.err and "nothing was written" in r.err
    assert not (tmp_path / "local").exists()
