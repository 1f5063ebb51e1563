"""Directories are archived: empty provisioned folders survive a backup, `tar -x` and a restore.

The archive gets a tar directory member per directory of a local tree, and
MEMBERS.sha256 a ``# directory <path>/`` line that ``sha256sum -c`` passes
over. A restore creates the folders with nothing under them: real folders
where the target has them (local disk, Yandex.Disk), the ``<folder>/.keep``
marker on S3. Results are checked with ``tar``, ``zstd``/``gzip``,
``sha256sum`` and boto3, not through vertexflow.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from tests.cli.helpers import vf
from vertexflow.backends.local import LocalBackend
from vertexflow.ops.backup.create import CreateOptions, create_backup
from vertexflow.ops.backup.metadata import MEMBERS, member_line
from vertexflow.ops.backup.reading import Opened, load_metadata
from vertexflow.ops.backup.restore import restore_backup
from vertexflow.ops.backup.verify import verify_backup
from vertexflow.tenancy.adapters import FOLDER_MARKER
from vertexflow.transforms.compression import parse_codec

from .conftest import Stores, digests, fill
from .forge import _store_stream, folder_of, forge_backup, read_meta, stored

FILES = {
    "portraits/acme/cats/Image/a.jpg": b"photo " * 400,
    "portraits/acme/cats/QR/a.png": b"qr",
    "videos/acme/cats/Image/b.mp4": os.urandom(20_000),
    "readme.txt": b"top\n",
}
#: empty folders: a freshly provisioned category, and awkward names
EMPTY = ["portraits/acme/newcat/Image", "portraits/acme/newcat/QR", "portraits/acme/newcat/nft_markers",
         "portraits/acme/cats/nft_markers", "odd/ünï code #1", "odd/back\\slash"]


def directory_line(name: str) -> bytes:
    """The documented form of a directory in MEMBERS.sha256, written here independently of vertexflow."""
    escaped = name.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return f"# directory {escaped}/\n".encode()


def all_dirs(keys: list[str]) -> set[str]:
    out = set()
    for key in keys:
        parts = key.split("/")
        out.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return out


DIRS = all_dirs(list(FILES)) | all_dirs([d + "/x" for d in EMPTY])


async def make_source(root: Path, empty: list[str]) -> LocalBackend:
    source = LocalBackend(root)
    await fill(source, FILES)
    for d in empty:
        (root / d).mkdir(parents=True)
    return source


async def storage_backup(tmp_path: Path, codec: str = "zstd", chunk: int = 4 * 1024,
                         empty: list[str] = EMPTY) -> Path:
    async with await make_source(tmp_path / "data", empty) as source, LocalBackend(tmp_path / "backups") as dest:
        await create_backup(dest, CreateOptions(kind="storage", codec=parse_codec(codec), chunk_size=chunk,
                                                storage=source))
    return folder_of(tmp_path / "backups")


def sh(cmd: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True)


def dirs_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir()}


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("codec,unpack", [("zstd", "zstd -d"), ("gzip", "gzip -dc")])
async def test_tar_recreates_every_folder_and_sha256sum_still_passes(tmp_path: Path, codec: str,
                                                                    unpack: str) -> None:
    folder = await storage_backup(tmp_path, codec)
    meta = json.loads((folder / "metadata.json").read_bytes())
    assert len(meta["storage"]["parts"]) >= 2
    assert meta["storage"]["directories"] == len(DIRS) and meta["storage"]["files"] == len(FILES)

    out = tmp_path / "unpacked"
    out.mkdir()
    suffix = "zst" if codec == "zstd" else "gz"
    r = sh(f"cat storage.tar.{suffix}.part* | {unpack} | tar -x -C {out}", folder)
    assert r.returncode == 0, r.stderr
    assert dirs_under(out) == DIRS
    for d in EMPTY:
        assert not any((out / d).iterdir()), d
    assert digests(files_under(out)) == digests(FILES)
    listing = sh(f"cat storage.tar.{suffix}.part* | {unpack} | tar -tv", folder).stdout.splitlines()
    assert sum(line.startswith("d") for line in listing) == len(DIRS)

    for strict in ("", "--strict"):
        check = sh(f"sha256sum -c {strict} {folder / MEMBERS}", out)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "WARNING" not in check.stderr and "improperly" not in check.stderr
        assert check.stdout.count(": OK") == len(FILES)
    assert sh("sha256sum -c --strict SHA256SUMS", folder).returncode == 0
    text = (folder / MEMBERS).read_bytes()
    assert b"# directory portraits/acme/newcat/QR/\n" in text
    assert b"# directory odd/back\\\\slash/\n" in text  # escaped as sha256sum escapes names


async def test_restore_into_a_local_folder_recreates_the_empty_folders(tmp_path: Path) -> None:
    folder = await storage_backup(tmp_path)
    r = vf("backup", "verify", str(folder), "--json")
    assert r.code == 0, r.out + r.err
    assert r.json()["directories"] == len(DIRS)

    target = tmp_path / "restored"
    r = vf("backup", "restore", str(folder), "--target-storage", str(target), "--json")
    assert r.code == 0, r.err
    assert r.json()["directories"] == len(EMPTY)
    assert dirs_under(target) == DIRS
    assert digests(files_under(target)) == digests(FILES)  # no marker files on a store with folders


async def test_only_restores_the_folders_under_the_prefix(tmp_path: Path) -> None:
    folder = await storage_backup(tmp_path)
    async with LocalBackend(tmp_path / "backups") as store, LocalBackend(tmp_path / "t") as target:
        opened = Opened(store, folder.name, await load_metadata(store, folder.name))
        result = await restore_backup(opened, target=target, db_path=None, only="portraits/acme/newcat")
    assert result.directories == 3 and result.files == 0
    assert dirs_under(tmp_path / "t") == {"portraits", "portraits/acme", "portraits/acme/newcat",
                                          *(d for d in EMPTY if d.startswith("portraits/acme/newcat"))}


@pytest.mark.s3
async def test_restore_into_s3_writes_folder_markers_for_the_empty_folders(stores: Stores, tmp_path: Path,
                                                                           seaweed: object) -> None:
    empty = [d for d in EMPTY if "\\" not in d]  # SeaweedFS turns "\" in a key into "/"
    folder = await storage_backup(tmp_path, empty=empty)
    async with LocalBackend(tmp_path / "backups") as store:
        opened = Opened(store, folder.name, await load_metadata(store, folder.name))
        target = await stores.get("s3", "restored")
        result = await restore_backup(opened, target=target, db_path=None)
    assert result.directories == len(empty) and result.files == len(FILES)
    client = seaweed.boto3_client()  # type: ignore[attr-defined]
    objects = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=stores.bucket, Prefix="restored/"):
        for o in page.get("Contents", []):
            body = client.get_object(Bucket=stores.bucket, Key=o["Key"])["Body"].read()
            objects[o["Key"][len("restored/"):]] = hashlib.sha256(body).hexdigest()
    want = digests(FILES) | {f"{d}/{FOLDER_MARKER}": hashlib.sha256(b"").hexdigest() for d in empty}
    assert objects == want  # a marker for each empty folder only


async def test_restore_into_yandex_disk_makes_the_empty_folders(stores: Stores, tmp_path: Path) -> None:
    folder = await storage_backup(tmp_path)
    async with LocalBackend(tmp_path / "backups") as store:
        opened = Opened(store, folder.name, await load_metadata(store, folder.name))
        target = await stores.get("yandex", "restored")
        result = await restore_backup(opened, target=target, db_path=None)
        assert result.directories == len(EMPTY)
        for d in sorted(DIRS):
            assert await target.is_folder(d), d
        keys = [info.key async for info in target.list()]
    assert sorted(keys) == sorted(FILES)


def _retar(folder: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], listed_dirs: list[str]) -> None:
    """Swap the archive for ``members``; MEMBERS.sha256 lists their files and ``listed_dirs``; all hashes agree."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    files = [(i, d or b"") for i, d in members if i.isfile()]
    (folder / MEMBERS).write_bytes(b"".join(directory_line(d) for d in listed_dirs)
                                   + b"".join(member_line(hashlib.sha256(d).hexdigest(), i.name) for i, d in files))
    meta = read_meta(folder)
    for p in meta.storage.parts:  # type: ignore[union-attr]
        (folder / p.name).unlink()
    _store_stream(folder, meta, zstandard.ZstdCompressor().compress(buf.getvalue()), files=len(files),
                  bytes=sum(len(d) for _, d in files), members=stored(folder / MEMBERS),
                  directories=len(listed_dirs), descriptions=None)  # the old MEMBERS.jsonl describes other files


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info, None


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


@pytest.mark.parametrize("case", ["unlisted directory", "listed directory missing"])
async def test_directories_must_match_the_member_list(tmp_path: Path, case: str) -> None:
    folder = await storage_backup(tmp_path)
    members = [_dir("a"), _dir("a/empty"), _file("a/f.txt", b"data")]
    listed = ["a"] if case == "unlisted directory" else ["a", "a/empty", "a/ghost"]
    _retar(folder, members, listed)
    assert sh("sha256sum -c --quiet SHA256SUMS", folder).returncode == 0  # self-consistent

    target = tmp_path / "target"
    r = vf("backup", "restore", str(folder), "--target-storage", str(target))
    assert r.code == 1, r.err
    assert ("a/empty" if case == "unlisted directory" else "a/ghost") in r.err
    assert "nothing was written" in r.err
    assert not target.exists()
    v = vf("backup", "verify", str(folder))
    assert v.code == 1 and ("a/empty" if case == "unlisted directory" else "a/ghost") in v.out


async def test_directory_members_of_archives_without_a_directory_list_are_restored(tmp_path: Path) -> None:
    """Backups written before directories were archived (and archives of other tools) have no list: taken as they come."""
    folder = forge_backup(tmp_path / "backups", [_dir("keep/empty"), _file("keep/f.txt", b"x"), _dir("solo")])
    assert "directories" not in json.loads((folder / "metadata.json").read_bytes())["storage"]
    async with LocalBackend(tmp_path / "backups") as store, LocalBackend(tmp_path / "t") as target:
        opened = Opened(store, folder.name, await load_metadata(store, folder.name))
        assert (await verify_backup(opened)).ok
        result = await restore_backup(opened, target=target, db_path=None)
    assert result.files == 1 and result.directories == 2
    assert dirs_under(tmp_path / "t") == {"keep", "keep/empty", "solo"}
