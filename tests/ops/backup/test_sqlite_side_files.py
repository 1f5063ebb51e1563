"""SQLite side files: a backup or restore of a WAL-mode database leaves no ``-wal``/``-shm`` it created.

A read-only connection to a WAL-mode database creates ``-wal`` and ``-shm``
beside it and cannot remove them when it closes; a read-write one removes
them as the last connection closes. Each test lists the database's folder
(and the temporary folder the command uses, through ``TMPDIR``) before and
after the real ``vertexflow`` command, and reads the results with the
``sqlite3`` command.
"""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

from tests.cli.helpers import vf

from .conftest import make_db


def wal_db(path: Path, rows: int = 300) -> None:
    """A closed database in WAL mode, as the platform keeps it: no side files."""
    make_db(path, rows)
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=wal")
    con.close()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def sqlite_cli(db: Path, sql: str) -> str:
    return subprocess.run(["sqlite3", str(db), sql], capture_output=True, text=True, check=True).stdout.strip()


def test_backup_of_a_wal_database_leaves_nothing_beside_it(tmp_path: Path) -> None:
    db = tmp_path / "db" / "platform.db"
    db.parent.mkdir()
    wal_db(db)
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_bytes(b"a")

    for kind in ("database", "full"):
        r = vf("backup", "create", "--type", kind, "--db", str(db), "--storage", str(tmp_path / "data"),
               "--to", str(tmp_path / "backups"), env={"TMPDIR": str(tmp)})
        assert r.code == 0, r.err
        assert names(db.parent) == ["platform.db"], kind  # no platform.db-wal / -shm left by the copy
        assert names(tmp) == [], kind  # nor the copy's folder, nor anything beside the copy
    assert sqlite_cli(db, "PRAGMA journal_mode") == "wal"  # the database is left as it was
    assert names(db.parent) == ["platform.db"]


def test_backup_while_another_connection_holds_the_database_open(tmp_path: Path) -> None:
    """The side files then are the other connection's: it keeps using them, and they go when it closes."""
    db = tmp_path / "db" / "platform.db"
    db.parent.mkdir()
    wal_db(db)
    holder = sqlite3.connect(db)
    try:
        holder.execute("insert into items(name, blob) values ('written before', x'00')")
        holder.commit()  # in the -wal only: no checkpoint yet
        before = names(db.parent)
        assert before == ["platform.db", "platform.db-shm", "platform.db-wal"]

        r = vf("backup", "create", "--type", "database", "--db", str(db), "--to", str(tmp_path / "backups"))
        assert r.code == 0, r.err
        assert names(db.parent) == before
        holder.execute("insert into items(name, blob) values ('written after', x'00')")
        holder.commit()
    finally:
        holder.close()
    assert names(db.parent) == ["platform.db"]  # the last connection (the holder) folded and removed them
    assert sqlite_cli(db, "select count(*) from items") == "302"

    (folder,) = (tmp_path / "backups").iterdir()
    restored = tmp_path / "restored" / "platform.db"
    r = vf("backup", "restore", str(folder), "--db-path", str(restored))
    assert r.code == 0, r.err
    assert sqlite_cli(restored, "select name from items order by id desc limit 1") == "written before"
    assert names(restored.parent) == ["platform.db"]


def test_restore_onto_a_database_another_connection_holds_open(tmp_path: Path) -> None:
    """No ``.restore-`` temporary, no side files of the kept copy; the holder sees the restored rows."""
    source = tmp_path / "source.db"
    wal_db(source, rows=40)
    r = vf("backup", "create", "--type", "database", "--db", str(source), "--to", str(tmp_path / "backups"))
    assert r.code == 0, r.err
    (folder,) = (tmp_path / "backups").iterdir()
    db = tmp_path / "live" / "platform.db"
    db.parent.mkdir()
    wal_db(db, rows=3)
    holder = sqlite3.connect(db)
    try:
        assert holder.execute("select count(*) from items").fetchone() == (3,)
        r = vf("backup", "restore", str(folder), "--db-path", str(db), "--json")
        assert r.code == 0, r.err
        kept = Path(r.json()["kept_database"])
        assert names(db.parent) == sorted(["platform.db", "platform.db-shm", "platform.db-wal", kept.name])
        assert holder.execute("select count(*) from items").fetchone() == (40,)
    finally:
        holder.close()
    assert names(db.parent) == sorted(["platform.db", kept.name])
    assert sqlite_cli(kept, "select count(*) from items") == "3"
    assert sqlite_cli(db, "PRAGMA integrity_check") == "ok"
    assert names(db.parent) == sorted(["platform.db", kept.name])
