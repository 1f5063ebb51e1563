"""The database a restore replaces is kept beside it under a name no other file has, never over one.

Two restores in the same second used to keep their previous databases under
the same ``<db>.before-restore-<UTC time>``: the second copy overwrote the
first. Results are read with the ``sqlite3`` command.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

from vertexflow.ops.backup.database import restore_into

from .conftest import make_db

NOW = datetime(2026, 11, 24, 13, 15, 0, tzinfo=UTC)


def count(db: Path) -> str:
    return subprocess.run(["sqlite3", str(db), "select count(*) from items"], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_two_restores_in_the_same_second_keep_both_previous_databases(tmp_path: Path) -> None:
    db = tmp_path / "platform.db"
    make_db(db, rows=1)
    copies = []
    for rows in (2, 3):
        copy = tmp_path / f"copy{rows}.db"
        make_db(copy, rows=rows)
        copies.append(copy)

    first = restore_into(copies[0], db, now=NOW)
    second = restore_into(copies[1], db, now=NOW)

    assert first == f"{db}.before-restore-20261124T131500Z"
    assert second is not None and second != first
    assert Path(second).name.startswith("platform.db.before-restore-20261124T131500Z")
    assert count(Path(first)) == "1"  # the database as it was before the first restore
    assert count(Path(second)) == "2"  # before the second
    assert count(db) == "3"


def test_an_existing_file_of_that_name_is_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "platform.db"
    make_db(db, rows=1)
    copy = tmp_path / "copy.db"
    make_db(copy, rows=5)
    taken = tmp_path / "platform.db.before-restore-20261124T131500Z"
    taken.write_bytes(b"someone else's file\n")

    kept = restore_into(copy, db, now=NOW)

    assert taken.read_bytes() == b"someone else's file\n"
    assert kept is not None and Path(kept) != taken and count(Path(kept)) == "1"
    assert count(db) == "5"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["platform.db", "copy.db", taken.name, Path(kept).name])


def test_the_kept_copy_is_no_more_readable_than_the_database(tmp_path: Path) -> None:
    db = tmp_path / "platform.db"
    make_db(db, rows=1)
    db.chmod(0o600)
    copy = tmp_path / "copy.db"
    make_db(copy, rows=2)
    kept = restore_into(copy, db, now=NOW)
    assert kept is not None and Path(kept).stat().st_mode & 0o777 == 0o600
