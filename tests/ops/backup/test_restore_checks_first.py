"""Restore checks every part, every member and the database copy before its first write, and leaves no side files.

A damaged database copy, a damaged part or member list, and an unsafe member
each stop ``backup restore`` with exit 1, a message naming what is damaged
and where, what was checked and that nothing was written: the target keeps
exactly what it held and the database at ``--db-path`` keeps its bytes, with
nothing new beside it (no ``.before-restore-`` copy, no ``.restore-``
temporary, no ``-wal``/``-shm``). Results are read back from disk with
``sha256sum``/``hashlib``, the ``sqlite3`` command and ``zstd``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import sqlite3
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from tests.cli.helpers import vf
from vertexflow.backends.local import LocalBackend
from vertexflow.ops.backup.create import CreateOptions, create_backup
from vertexflow.ops.backup.metadata import MEMBERS, StoredFile, member_line
from vertexflow.transforms.compression import parse_codec

from .conftest import fill, make_db, tree_files
from .forge import _store_stream, file_member, folder_of, read_meta, special_member, stored, write_meta

SIDE = ("-wal", "-shm", "-journal")


def wal_db(path: Path, rows: int = 500) -> None:
    """A database in WAL mode, as the platform keeps it; closed (no side files of its own left)."""
    make_db(path, rows)
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=wal")
    con.close()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(path.name + "-")]


async def full_backup(tmp_path: Path, *, db: Path) -> Path:
    async with LocalBackend(tmp_path / "data") as source, LocalBackend(tmp_path / "backups") as dest:
        await fill(source, tree_files())
        await create_backup(dest, CreateOptions(kind="full", codec=parse_codec("zstd"), chunk_size=16 * 1024,
                                                db_path=str(db), storage=source))
    return folder_of(tmp_path / "backups")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its SHA-256; {} when ``root`` does not exist."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def db_dir_names(db: Path) -> list[str]:
    """The database file and whatever lies beside it that was made from its name."""
    return sorted(p.name for p in db.parent.iterdir() if p.name.startswith(db.name))


def sqlite_cli(db: Path, sql: str) -> str:
    return subprocess.run(["sqlite3", str(db), sql], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
async def prepared(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A full backup of a WAL database and the test tree; a target that holds one file; a database in place."""
    wal_db(tmp_path / "app.db")
    folder = await full_backup(tmp_path, db=tmp_path / "app.db")
    target = tmp_path / "target"
    target.mkdir()
    (target / "already-here.txt").write_bytes(b"the target's own file\n")
    live = tmp_path / "live" / "platform.db"
    live.parent.mkdir()
    make_db(live, rows=3)  # other content than the backup's 500 rows
    return folder, target, live


def restore(folder: Path, target: Path, db: Path, *extra: str):  # type: ignore[no-untyped-def]
    return vf("backup", "restore", str(folder), "--target-storage", str(target), "--db-path", str(db), *extra)


def flip(path: Path, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if at is None else at] ^= 0x55
    path.write_bytes(bytes(data))


def assert_untouched(target: Path, target_before: dict[str, str], live: Path, live_sha: str) -> None:
    assert tree(target) == target_before, "restore wrote to the target"
    assert not [p for p in target.rglob("*") if p.is_dir()], "restore made folders in the target"
    assert sha(live) == live_sha, "the database was replaced"
    assert db_dir_names(live) == [live.name], "files were left beside the database"
    assert sqlite_cli(live, "select count(*) from items") == "3"


@pytest.mark.parametrize("damage", ["database copy", "part", "member list"])
def test_damage_anywhere_stops_restore_before_the_first_write(prepared: tuple[Path, Path, Path],
                                                             damage: str) -> None:
    folder, target, live = prepared
    name = {"database copy": "database.sqlite3.zst", "part": "storage.tar.zst.part0002",
            "member list": MEMBERS}[damage]
    flip(folder / name)
    before, live_sha = tree(target), sha(live)
    assert vf("backup", "verify", str(folder)).code == 1

    r = restore(folder, target, live)

    assert r.code == 1, r.err
    assert_untouched(target, before, live, live_sha)
    assert name in r.err and folder.name in r.err  # what is damaged, and in which backup
    assert "nothing was written to" in r.err and f"the database {live} was not replaced" in r.err
    assert "checked and sound:" in r.err and "backup verify" in r.err  # what was checked, and the next step


async def test_damaged_database_copy_does_not_create_the_target(tmp_path: Path) -> None:
    make_db(tmp_path / "app.db")
    folder = await full_backup(tmp_path, db=tmp_path / "app.db")
    flip(folder / "database.sqlite3.zst")
    target, db = tmp_path / "new-target", tmp_path / "new-db" / "platform.db"

    r = restore(folder, target, db)

    assert r.code == 1 and "database.sqlite3.zst" in r.err and "SHA-256" in r.err
    assert not target.exists() and not db.parent.exists()


def _malicious_archive(folder: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
    """Swap the archive of a full backup for ``members``, with MEMBERS.sha256 and the metadata to match."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    stream = zstandard.ZstdCompressor().compress(buf.getvalue())
    files = [(i, d or b"") for i, d in members if i.isfile()]
    (folder / MEMBERS).write_bytes(b"".join(member_line(hashlib.sha256(d).hexdigest(), i.name) for i, d in files))
    meta = read_meta(folder)
    for p in meta.storage.parts:  # type: ignore[union-attr]
        (folder / p.name).unlink()
    _store_stream(folder, meta, stream, files=len(files), bytes=sum(len(d) for _, d in files),
                  members=stored(folder / MEMBERS), directories=0,
                  descriptions=None)  # the old MEMBERS.jsonl describes other files


@pytest.mark.parametrize("bad,needle", [
    (special_member("/etc/vertexflow-absolute", tarfile.REGTYPE), "absolute path"),
    (special_member("docs/../../escaped.txt", tarfile.REGTYPE), "'..'"),
    (special_member("docs/link", tarfile.SYMTYPE, "../../../etc"), "symbolic link"),
    (special_member("dev/zero", tarfile.CHRTYPE), "character device"),
], ids=["absolute", "dotdot", "symlink", "device"])
def test_malicious_member_in_a_full_backup_touches_neither_target_nor_database(
        prepared: tuple[Path, Path, Path], bad: tuple[tarfile.TarInfo, None], needle: str) -> None:
    folder, target, live = prepared
    _malicious_archive(folder, [file_member("good.txt", b"fine"), bad, file_member("after.txt", b"fine too")])
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=folder).returncode == 0  # consistent
    before, live_sha = tree(target), sha(live)

    r = restore(folder, target, live)

    assert r.code == 1, r.err
    assert_untouched(target, before, live, live_sha)
    assert needle in r.err and bad[0].name in r.err and folder.name in r.err
    assert "nothing was written to" in r.err and "was not replaced" in r.err
    assert not (target.parent / "escaped.txt").exists() and not Path("/etc/vertexflow-absolute").exists()


async def test_restore_leaves_no_sqlite_side_files(tmp_path: Path) -> None:
    wal_db(tmp_path / "app.db")
    folder = await full_backup(tmp_path, db=tmp_path / "app.db")
    db = tmp_path / "restored" / "platform.db"

    first = restore(folder, tmp_path / "t1", db)
    assert first.code == 0, first.err
    assert db_dir_names(db) == ["platform.db"]
    assert sorted(p.name for p in db.parent.iterdir()) == ["platform.db"]  # no .restore- temporary either

    second = restore(folder, tmp_path / "t2", db)  # onto an existing database: the old one is kept beside it
    assert second.code == 0, second.err
    names = db_dir_names(db)
    assert len(names) == 2 and names[0] == "platform.db" and names[1].startswith("platform.db.before-restore-")
    assert not any(n.endswith(SIDE) for n in names)
    assert sqlite_cli(db, "PRAGMA integrity_check") == "ok"
    assert sqlite_cli(db, "select count(*) from items") == "500"
    assert sqlite_cli(db.parent / names[1], "select count(*) from items") == "500"
    assert db_dir_names(db) == names  # reading it with the sqlite3 command left nothing either


async def test_failed_database_check_leaves_no_side_files(tmp_path: Path) -> None:
    """A database copy whose hashes agree but whose pages are broken: refused by integrity_check, no leftovers."""
    wal_db(tmp_path / "app.db", rows=2000)
    folder = await full_backup(tmp_path, db=tmp_path / "app.db")
    meta = read_meta(folder)
    assert meta.database is not None
    stored_copy = folder / meta.database.stored.name
    plain = bytearray(subprocess.run(["zstd", "-dc", str(stored_copy)], capture_output=True, check=True).stdout)
    assert plain[18:20] == b"\x02\x02"  # the copy is in WAL mode, like its source
    page = 4096
    plain[3 * page:5 * page] = bytes(range(256)) * (2 * page // 256)  # two b-tree pages overwritten
    stored_copy.write_bytes(zstandard.ZstdCompressor().compress(bytes(plain)))
    new_db = dataclasses.replace(meta.database, stored=StoredFile(stored_copy.name, *_size_sha(stored_copy)),
                                 size=len(plain), sha256=hashlib.sha256(plain).hexdigest())
    write_meta(folder, dataclasses.replace(meta, database=new_db))
    live = tmp_path / "live" / "platform.db"
    live.parent.mkdir()
    make_db(live, rows=3)
    live_sha = sha(live)

    r = restore(folder, tmp_path / "target", live)

    assert r.code == 1, r.err
    assert "integrity_check" in r.err and stored_copy.name in r.err
    assert not (tmp_path / "target").exists()
    assert sha(live) == live_sha and db_dir_names(live) == ["platform.db"]
    assert sorted(p.name for p in live.parent.iterdir()) == ["platform.db"]


def _size_sha(path: Path) -> tuple[int, str]:
    data = path.read_bytes()
    return len(data), hashlib.sha256(data).hexdigest()
