"""Damaged, tampered and malicious backups: a clear error naming the part, exit 1, nothing written."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from tests.cli.helpers import vf
from vertexflow.backends.local import LocalBackend
from vertexflow.errors import BadMetadata, UnsafeArchive
from vertexflow.ops.backup.create import CreateOptions, create_backup
from vertexflow.ops.backup.reading import Opened, load_metadata
from vertexflow.ops.backup.restore import restore_backup
from vertexflow.transforms.compression import parse_codec

from .conftest import digests, fill, make_db, tree_files
from .forge import (
    edit_json,
    file_member,
    folder_of,
    forge_backup,
    read_meta,
    special_member,
    truncate_archive,
)


@pytest.fixture
async def backup_dir(tmp_path: Path) -> Path:
    """A full zstd backup of the test tree in parts of 16 KiB under tmp_path/backups."""
    async with LocalBackend(tmp_path / "data") as source, LocalBackend(tmp_path / "backups") as dest:
        await fill(source, tree_files())
        make_db(tmp_path / "app.db")
        await create_backup(dest, CreateOptions(kind="full", codec=parse_codec("zstd"), chunk_size=16 * 1024,
                                                db_path=str(tmp_path / "app.db"), storage=source))
    return folder_of(tmp_path / "backups")


def restore_cli(folder: Path, tmp_path: Path) -> tuple[int, str, Path]:
    target = tmp_path / "target"
    r = vf("backup", "restore", str(folder / "metadata.json"), "--target-storage", str(target),
           "--db-path", str(tmp_path / "restored.db"))
    return r.code, r.err, target


def nothing_written(tmp_path: Path, target: Path) -> bool:
    files = [p for p in target.rglob("*") if p.is_file()] if target.exists() else []
    return not files and not (tmp_path / "restored.db").exists()


def test_intact_backup_verifies_and_restores_by_cli(backup_dir: Path, tmp_path: Path) -> None:
    r = vf("backup", "verify", str(backup_dir / "metadata.json"))
    assert r.code == 0, r.err
    assert "OK" in r.out
    code, err, target = restore_cli(backup_dir, tmp_path)
    assert code == 0, err
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == sorted(tree_files())


def test_corrupted_part_is_named_and_nothing_is_restored(backup_dir: Path, tmp_path: Path) -> None:
    part = backup_dir / "storage.tar.zst.part0001"
    data = bytearray(part.read_bytes())
    data[100] ^= 0xFF
    part.write_bytes(bytes(data))
    r = vf("backup", "verify", str(backup_dir))
    assert r.code == 1
    assert "storage.tar.zst.part0001" in r.out and "SHA-256" in r.out
    # the later parts were still checked: only the damaged one is reported as a part problem
    assert "part0002" not in r.out
    code, err, target = restore_cli(backup_dir, tmp_path)
    assert code == 1 and "storage.tar.zst.part0001" in err
    assert nothing_written(tmp_path, target)


def test_missing_part_is_named(backup_dir: Path, tmp_path: Path) -> None:
    (backup_dir / "storage.tar.zst.part0002").unlink()
    r = vf("backup", "verify", str(backup_dir / "metadata.json"), "--json")
    assert r.code == 1
    problems = r.json()["problems"]
    assert {"where": "storage.tar.zst.part0002", "what": "part is missing"} in problems
    code, err, target = restore_cli(backup_dir, tmp_path)
    assert code == 1 and "part0002" in err and "missing" in err
    assert nothing_written(tmp_path, target)


def test_truncated_archive_with_consistent_checksums_is_caught(backup_dir: Path, tmp_path: Path) -> None:
    meta = read_meta(backup_dir)
    assert meta.storage is not None
    truncate_archive(backup_dir, meta.storage.stream_size - 5000)
    r = vf("backup", "verify", str(backup_dir))
    assert r.code == 1 and "truncated" in r.out
    code, err, target = restore_cli(backup_dir, tmp_path)
    assert code == 1 and "truncated" in err
    assert nothing_written(tmp_path, target)


def test_metadata_hash_changed_alone_disagrees_with_sha256sums(backup_dir: Path, tmp_path: Path) -> None:
    def change(doc: dict) -> None:
        doc["storage"]["parts"][0]["sha256"] = "0" * 64

    edit_json(backup_dir, change)
    r = vf("backup", "verify", str(backup_dir))
    assert r.code == 1
    assert "disagree" in r.err and "storage.tar.zst.part0000" in r.err
    code, _, target = restore_cli(backup_dir, tmp_path)
    assert code == 1 and nothing_written(tmp_path, target)


@pytest.mark.parametrize("path,value,needle", [
    (("storage", "parts", 0, "size"), "12", "'size' must be int"),
    (("storage", "parts", 1, "name"), "../../outside", "'name' '../../outside' is not a name vertexflow writes"),
    (("database", "sha256"), "xyz", "'sha256' is not a lower-case hex SHA-256"),
    (("type",), "database", "field 'id'"),
    (("version",), 99, "version"),
])
async def test_malformed_metadata_field_is_named(backup_dir: Path, tmp_path: Path, path: tuple, value: object,
                                                 needle: str) -> None:
    def change(doc: dict) -> None:
        node = doc
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value

    edit_json(backup_dir, change)
    async with LocalBackend(tmp_path / "backups") as dest:
        with pytest.raises(BadMetadata) as err:
            await load_metadata(dest, backup_dir.name)
    assert needle in str(err.value) and backup_dir.name in str(err.value)


def test_database_copy_corrupted(backup_dir: Path, tmp_path: Path) -> None:
    db = backup_dir / "database.sqlite3.zst"
    data = bytearray(db.read_bytes())
    data[len(data) // 2] ^= 0x55
    db.write_bytes(bytes(data))
    r = vf("backup", "verify", str(backup_dir))
    assert r.code == 1 and "database.sqlite3.zst" in r.out


MALICIOUS = {
    "traversal": [special_member("../escaped.txt", tarfile.REGTYPE)],
    "absolute": [special_member("/tmp/vertexflow-absolute.txt", tarfile.REGTYPE)],
    "symlink-escape": [special_member("link", tarfile.SYMTYPE, "../../../etc"),
                       file_member("link/passwd", b"pwned")],
    "hardlink-escape": [special_member("hard", tarfile.LNKTYPE, "../outside.txt")],
    "device": [special_member("dev/null", tarfile.CHRTYPE)],
    "fifo": [special_member("pipe", tarfile.FIFOTYPE)],
}
EXPECT = {"traversal": "'..'", "absolute": "absolute path", "symlink-escape": "points outside the target",
          "hardlink-escape": "points outside the target", "device": "character device", "fifo": "fifo"}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
async def test_malicious_archive_is_refused_before_writing_anything(tmp_path: Path, case: str) -> None:
    # a good file first: refusing "before writing anything" means it is not written either
    members = [file_member("good.txt", b"fine"), *MALICIOUS[case], file_member("after.txt", b"also fine")]
    folder = forge_backup(tmp_path / "backups", members)
    code, err, target = restore_cli(folder, tmp_path)
    assert code == 1, err
    assert EXPECT[case] in err and "unsafe" not in err.lower() or EXPECT[case] in err
    assert nothing_written(tmp_path, target)
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/vertexflow-absolute.txt").exists()
    assert not (tmp_path / "outside.txt").exists()
    async with LocalBackend(tmp_path / "backups") as store:
        opened = Opened(store, folder.name, await load_metadata(store, folder.name))
        async with LocalBackend(target) as tgt:
            with pytest.raises(UnsafeArchive):
                await restore_backup(opened, target=tgt, db_path=None)
    r = vf("backup", "verify", str(folder))
    assert r.code == 1 and EXPECT[case] in r.out


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
@pytest.mark.parametrize("codec", ["gzip", "zstd"])
async def test_archives_written_by_other_tools_restore(tmp_path: Path, fmt: int, codec: str) -> None:
    long = "x" * 40 + "/" + "y" * 50 + "/name.txt"  # > 100 chars: GNU long name or pax path (ustar splits it)
    files = {"a.txt": b"alpha", long: b"long " * 100, "dir/b.bin": bytes(range(256)) * 10}
    if fmt != tarfile.USTAR_FORMAT:
        files["ünï/cödé.txt"] = b"unicode"
    dir_info = tarfile.TarInfo("dir")
    dir_info.type = tarfile.DIRTYPE
    folder = forge_backup(tmp_path / "backups", [(dir_info, None), *(file_member(k, v) for k, v in files.items())],
                          codec=codec, fmt=fmt)
    async with LocalBackend(tmp_path / "backups") as store, LocalBackend(tmp_path / "t") as target:
        opened = Opened(store, folder.name, await load_metadata(store, folder.name))
        result = await restore_backup(opened, target=target, db_path=None)
    assert result.files == len(files)
    got = {p.relative_to(tmp_path / "t").as_posix(): p.read_bytes() for p in (tmp_path / "t").rglob("*") if p.is_file()}
    assert digests(got) == digests(files)
