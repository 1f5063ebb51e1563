"""Empty folders of a remote storage tree survive a backup: checked with ``tar -t`` and after a restore.

A company's provisioned content type folder ``portraits/acme/newcat/{Image,QR,nft_markers}``
holds no file yet. On Yandex.Disk it is a real folder; on S3 the platform marks it with
``<folder>/.keep`` (an ordinary, empty object).
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from vertexflow.backends.local import LocalBackend
from vertexflow.ops.backup.create import CreateOptions, create_backup
from vertexflow.ops.backup.reading import Opened, load_metadata
from vertexflow.ops.backup.restore import restore_backup
from vertexflow.tenancy.adapters import FOLDER_MARKER
from vertexflow.transforms.compression import parse_codec

from .conftest import Stores, digests, fill
from .forge import folder_of

FILES = {
    "portraits/acme/cats/Image/a.jpg": b"photo " * 300,
    "portraits/acme/cats/QR/a.png": b"qr",
    "videos/acme/cats/Image/b.mp4": b"\x00\x01" * 5000,
}
EMPTY = ["portraits/acme/newcat/Image", "portraits/acme/newcat/QR", "portraits/acme/newcat/nft_markers",
         "portraits/acme/cats/nft_markers"]


def tar_listing(folder: Path) -> list[str]:
    """The archive's member names, as GNU tar lists them."""
    r = subprocess.run(["bash", "-c", "cat storage.tar.zst.part* | zstd -dc | tar -t"], cwd=folder,
                       capture_output=True, text=True, check=True)
    return r.stdout.splitlines()


def dirs_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir()}


async def backup_of(stores: Stores, source: object, tmp_path: Path) -> Path:
    async with LocalBackend(tmp_path / "backups") as dest:
        await create_backup(dest, CreateOptions(kind="storage", codec=parse_codec("zstd"), chunk_size=4096,
                                                storage=source))  # type: ignore[arg-type]
    return folder_of(tmp_path / "backups")


async def restore_to_local(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "restored"
    async with LocalBackend(tmp_path / "backups") as store, LocalBackend(target) as backend:
        opened = Opened(store, folder.name, await load_metadata(store, folder.name))
        await restore_backup(opened, target=backend, db_path=None)
    return target


async def test_yandex_disk_source_keeps_its_empty_folders(stores: Stores, tmp_path: Path) -> None:
    source = await stores.get("yandex", "data")
    await fill(source, FILES)
    for d in EMPTY:
        await source.make_folder(d)  # type: ignore[attr-defined]

    folder = await backup_of(stores, source, tmp_path)

    listed = tar_listing(folder)
    for d in EMPTY:
        assert d + "/" in listed, (d, listed)
    target = await restore_to_local(folder, tmp_path)
    for d in EMPTY:
        assert (target / d).is_dir() and not any((target / d).iterdir()), d


@pytest.mark.s3
async def test_s3_source_keeps_its_folder_markers(stores: Stores, tmp_path: Path, seaweed: object) -> None:
    source = await stores.get("s3", "data")
    markers = {f"{d}/{FOLDER_MARKER}": b"" for d in EMPTY}
    await fill(source, FILES | markers)

    folder = await backup_of(stores, source, tmp_path)

    listed = tar_listing(folder)
    assert set(markers) <= set(listed)
    target = await restore_to_local(folder, tmp_path)
    for d in EMPTY:
        assert [p.name for p in (target / d).iterdir()] == [FOLDER_MARKER], d
    # and back onto S3 (another prefix): the markers are there again, read with boto3
    s3_target = await stores.get("s3", "again")
    async with LocalBackend(tmp_path / "backups") as store:
        opened = Opened(store, folder.name, await load_metadata(store, folder.name))
        await restore_backup(opened, target=s3_target, db_path=None)
    client = seaweed.boto3_client()  # type: ignore[attr-defined]
    got = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=stores.bucket, Prefix="again/"):
        for o in page.get("Contents", []):
            body = client.get_object(Bucket=stores.bucket, Key=o["Key"])["Body"].read()
            got[o["Key"][len("again/"):]] = hashlib.sha256(body).hexdigest()
    assert got == digests(FILES | markers)
