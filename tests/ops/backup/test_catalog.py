"""Listing, retention, interrupted backups and the online database copy."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from tests.cli.helpers import vf
from vertexflow.backends.local import LocalBackend
from vertexflow.errors import TransientError
from vertexflow.middleware.base import BackendWrapper
from vertexflow.model import BodyFactory, ObjectInfo
from vertexflow.ops.backup.catalog import plan_prune, scan
from vertexflow.ops.backup.create import CreateOptions, create_backup
from vertexflow.ops.backup.database import integrity_problem, snapshot
from vertexflow.transforms.compression import parse_codec

from .conftest import Stores, fill, make_db, tree_files

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class FailingPart(BackendWrapper):
    """Fails the put of the archive's second part, like a connection lost mid-backup."""

    async def put(self, info: ObjectInfo, body: BodyFactory, **kw: object) -> ObjectInfo:
        if info.key.endswith(".part0001"):
            raise TransientError("injected: connection reset", backend="failing", key=info.key)
        return await self.inner.put(info, body, **kw)  # type: ignore[arg-type]


async def _storage_backup(dest: object, source: object, when: datetime) -> str:
    r = await create_backup(dest, CreateOptions(kind="storage", codec=parse_codec("gzip"), storage=source,  # type: ignore[arg-type]
                                                chunk_size=16 * 1024), now=when)
    return r.metadata.id


async def test_interrupted_backup_is_incomplete_and_pruned(tmp_path: Path) -> None:
    async with LocalBackend(tmp_path / "data") as source, LocalBackend(tmp_path / "backups") as dest:
        await fill(source, tree_files())
        with pytest.raises(TransientError):
            await _storage_backup(FailingPart(dest), source, T0)
        good = await _storage_backup(dest, source, T0 + timedelta(hours=1))
        entries = await scan(dest)
    assert [(e.id, e.complete) for e in entries] == [("vertexflow-storage-20260301T120000Z", False), (good, True)]
    assert any(k.endswith(".part0000") for k in entries[0].keys)  # the first part did land
    listed = vf("backup", "list", "--to", str(tmp_path / "backups"))
    assert listed.code == 0 and "INCOMPLETE" in listed.out and f"{good}\tstorage" in listed.out
    # a running backup is left alone for --grace; with 0 the interrupted one goes, the complete one stays
    assert "nothing to prune" in vf("backup", "prune", "--to", str(tmp_path / "backups")).err
    pruned = vf("backup", "prune", "--to", str(tmp_path / "backups"), "--grace", "0", "--json")
    assert pruned.code == 0 and [e["id"] for e in pruned.json()["deleted"]] == ["vertexflow-storage-20260301T120000Z"]
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == [good]


async def test_prune_keeps_newest_n_per_type(tmp_path: Path) -> None:
    make_db(tmp_path / "app.db", rows=10)
    async with LocalBackend(tmp_path / "data") as source, LocalBackend(tmp_path / "backups") as dest:
        await fill(source, {"a.txt": b"a"})
        storage_ids = [await _storage_backup(dest, source, T0 + timedelta(days=d)) for d in range(4)]
        db = await create_backup(dest, CreateOptions(kind="database", codec=parse_codec("zstd"),
                                                     db_path=str(tmp_path / "app.db")), now=T0)
        same_second = await _storage_backup(dest, source, T0 + timedelta(days=3))
        assert same_second == storage_ids[-1] + "-1"
        doomed = plan_prune(await scan(dest), 2, grace=0)
    assert [e.id for e in doomed] == storage_ids[:3]
    r = vf("backup", "prune", "--keep", "2", "--to", str(tmp_path / "backups"))
    assert r.code == 0, r.err
    left = sorted(p.name for p in (tmp_path / "backups").iterdir())
    assert left == sorted([storage_ids[3], same_second, db.metadata.id])


async def test_database_copy_is_consistent_while_a_writer_writes(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    con = sqlite3.connect(db)
    con.execute("pragma journal_mode=wal")
    con.execute("create table items(id integer primary key, payload blob)")
    con.commit()
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        w = sqlite3.connect(db, timeout=30)
        while not stop.is_set():
            w.execute("insert into items(payload) values (randomblob(2000))")
            w.commit()
            written[0] += 1
        w.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while written[0] < 200:
            await anyio.sleep(0.01)
        copies = []
        for i in range(3):
            target = tmp_path / f"copy{i}.db"
            before = written[0]
            await anyio.to_thread.run_sync(snapshot, str(db), str(target))
            copies.append((target, before))
    finally:
        stop.set()
        thread.join()
    for target, before in copies:
        assert integrity_problem(target) is None
        n = sqlite3.connect(target).execute("select count(*), max(id) from items").fetchone()
        assert n[0] >= before and n[0] == n[1]  # a prefix of the writer's rows, no torn transaction
    assert written[0] > copies[-1][1]  # the writer kept writing during the copies


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    r = vf("backup", "create", "--type", "full", "--storage", str(tmp_path), "--to", str(tmp_path / "b"))
    assert r.code == 2 and "--db" in r.err
    r = vf("backup", "create", "--type", "database", "--db", str(tmp_path / "nope.db"), "--to", str(tmp_path / "b"))
    assert r.code == 2 and "nope.db" in r.err
    r = vf("backup", "verify", str(tmp_path / "not-a-backup"))
    assert r.code == 2 and "is not a backup" in r.err
    r = vf("backup", "create", "--type", "storage", "--storage", str(tmp_path), "--compress", "lz4",
           "--to", str(tmp_path / "b"))
    assert r.code == 2 and "lz4" in r.err


async def test_local_backup_restored_onto_yandex_disk_by_cli(stores: Stores, tmp_path: Path) -> None:
    files = tree_files()
    async with LocalBackend(tmp_path / "data") as source:
        await fill(source, files)
    yd = await stores.get("yandex", "restored")
    assert stores.emulator is not None
    env = {"YANDEX_DISK_TOKEN": "t", "YANDEX_DISK_API_URL": stores.emulator.base_url}
    r = await anyio.to_thread.run_sync(lambda: vf(
        "backup", "create", "--type", "storage", "--storage", str(tmp_path / "data"), "--to",
        str(tmp_path / "backups"), "--compress", "zstd", "--chunk-size", "32K", env=env))
    assert r.code == 0, r.err
    (folder,) = (tmp_path / "backups").iterdir()
    r = await anyio.to_thread.run_sync(lambda: vf(
        "backup", "restore", str(folder / "metadata.json"), "--target-storage", "yadisk:/restored", env=env))
    assert r.code == 0, r.err
    from .conftest import contents, digests
    assert await contents(yd) == digests(files)
