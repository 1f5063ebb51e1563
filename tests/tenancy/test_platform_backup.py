"""Platform backup and restore: every company's files from wherever it is routed, and back onto its route.

The platform (:mod:`.platform_stores`): ``acme`` on local disk, ``beta`` on the
first SeaweedFS server, ``gamma`` on the second (other credentials), ``delta``
on the Yandex.Disk emulator under ``base_paths``. Backups are checked with
``sha256sum -c`` and ``tar``, files with independent clients (file reads,
boto3, yadisk), the database with Python's sqlite3 on the copy ``gzip -d``
unpacked.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from vertexflow.backends.local import LocalBackend
from vertexflow.middleware.throttled import ThrottledBackend
from vertexflow.ops.backup.platform import PlatformOptions, create_platform_backup
from vertexflow.tenancy import StorageManager
from vertexflow.tenancy.registry import Registry
from vertexflow.testing.seaweedfs import SeaweedFS
from vertexflow.testing.yandex_disk.process import emulator_process
from vertexflow.throttle import TokenBucket
from vertexflow.transforms.compression import parse_codec

from ..cli.helpers import vf
from .platform_stores import CONTENT_TYPES, ROUTES, TOKEN, Stores, build_platform
from .writer import Writer

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def disk_url() -> Iterator[str]:
    """The Yandex.Disk emulator, a process of its own (CLI subprocesses and the writer reach it too)."""
    with emulator_process("--token", TOKEN) as url:
        yield url


@dataclass
class Env:
    tmp: Path
    seaweed: SeaweedFS
    seaweed2: SeaweedFS
    disk_url: str
    stack: ExitStack

    def stores(self, name: str) -> Stores:
        return Stores.make(self.tmp / name, self.seaweed, self.seaweed2, self.disk_url, self.stack)


@pytest.fixture
def env(tmp_path: Path, seaweed: SeaweedFS, seaweed2: SeaweedFS, disk_url: str) -> Iterator[Env]:
    with ExitStack() as stack:
        yield Env(tmp_path, seaweed, seaweed2, disk_url, stack)


@dataclass
class Unpacked:
    """A backup folder checked and unpacked with standard tools only."""

    folder: Path
    meta: dict[str, Any]
    files: dict[str, bytes]  # archive path -> bytes, from `tar -x`
    dirs: set[str]
    db: Path  # the database copy, `gzip -d`-ed

    def company(self, ct: str, folder: str) -> tuple[dict[str, bytes], set[str]]:
        prefix = f"{ct}/{folder}/"
        return ({k.removeprefix(prefix): v for k, v in self.files.items() if k.startswith(prefix)},
                {d.removeprefix(prefix) for d in self.dirs if d.startswith(prefix)})

    def entry(self, folder: str, ct: str) -> dict[str, Any]:
        company = next(c for c in self.meta["platform"]["companies"] if c["folder"] == folder)
        return company["content"][ct]


def unpack(folder: Path, into: Path) -> Unpacked:
    """``sha256sum -c SHA256SUMS``, parts joined and ``gzip -d | tar -x``, ``sha256sum -c MEMBERS.sha256``."""
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=folder, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    into.mkdir()
    parts = sorted(str(p) for p in folder.glob("storage.tar.gz.part*"))
    subprocess.run(f"cat {' '.join(parts)} | gzip -dc | tar -x -C {into}", shell=True, check=True)
    members = subprocess.run(["sha256sum", "-c", "--quiet", str(folder / "MEMBERS.sha256")], cwd=into,
                             capture_output=True, text=True)
    assert members.returncode == 0, members.stdout + members.stderr
    files = {p.relative_to(into).as_posix(): p.read_bytes() for p in into.rglob("*") if p.is_file()}
    dirs = {p.relative_to(into).as_posix() for p in into.rglob("*") if p.is_dir()}
    db = folder.parent / f"{folder.name}.sqlite3"
    subprocess.run(f"gzip -dc {folder / 'database.sqlite3.gz'} > {db}", shell=True, check=True)
    return Unpacked(folder, json.loads((folder / "metadata.json").read_text()), files, dirs, db)


def dump(db: Path, tables: tuple[str, ...] = ("companies", "storage_connections", "vertexflow_company_folders",
                                               "vertexflow_migrations")) -> dict[str, list[tuple[Any, ...]]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in tables}
    finally:
        con.close()


async def backup(stores: Stores, db: Path, to: Path, **kw: Any) -> Path:
    async with StorageManager.open(stores.cfg, db) as m, LocalBackend(to) as dest:
        result = await create_platform_backup(dest, m, PlatformOptions(codec=parse_codec("gzip"), **kw))
    return to / result.metadata.id


async def assert_company_is(stores: Stores, unpacked: Unpacked, folder: str, route: str) -> None:
    """The company's files (and folders, where the store has them) on ``stores`` are the backup's, file by file."""
    for ct in CONTENT_TYPES:
        files, dirs = await stores.read(route, ct, folder)
        want_files, want_dirs = unpacked.company(ct, folder)
        assert files.keys() == want_files.keys(), (folder, ct, route)
        assert {k: len(v) for k, v in files.items()} == {k: len(v) for k, v in want_files.items()}
        assert files == want_files, (folder, ct)
        if route in ("local", "yandex_disk", "disk"):
            assert dirs == want_dirs - {""}, (folder, ct, route)


# -- the round trip --------------------------------------------------------------------------------
async def test_platform_backup_restores_every_company_onto_its_route_in_empty_stores(env: Env) -> None:
    source = env.stores("a")
    db = source.root / "platform.db"
    ids = await build_platform(source, db)
    folder = await backup(source, db, env.tmp / "backups")
    unpacked = unpack(folder, env.tmp / "unpacked")

    meta = unpacked.meta
    assert meta["type"] == "platform" and meta["platform"]["complete"] is True
    for name, route in ROUTES.items():
        for ct in CONTENT_TYPES:
            entry = unpacked.entry(name, ct)
            assert entry["route"] == route and entry["complete"] and entry["changed_count"] == 0
            files, _ = await source.read(route, ct, name)
            assert unpacked.company(ct, name)[0] == files  # what the store held, file by file
            assert entry["files"] == len(files) and entry["bytes"] == sum(map(len, files.values()))
    delta = unpacked.entry("delta", "portraits")["location"]
    assert delta == f"yandex_disk:{source.yandex_base('portraits')[1:]}/delta"  # base_paths
    # the database copy is the platform's, as a consistent snapshot
    assert dump(unpacked.db) == dump(db)

    # onto empty stores, named by the same connections, with other base_paths and roots
    target = env.stores("b")
    target.write_config()
    restored_db = target.root / "platform.db"
    r = await anyio.to_thread.run_sync(lambda: vf("backup", "restore", str(folder), "--platform", str(target.cfg),
                                                  "--db-path", str(restored_db), "--json"))
    assert r.code == 0, r.err
    out = r.json()
    assert out["files"] == meta["storage"]["files"] and out["database"] == str(restored_db)
    for name, route in ROUTES.items():
        await assert_company_is(target, unpacked, name, route)
    assert dump(restored_db) == dump(unpacked.db)
    # and the platform reads every company's files on its route through a fresh manager
    async with StorageManager.open(target.cfg, restored_db) as m:
        for name, cid in ids.items():
            data = await m.get_file("videos", "c1/QR/note.txt", company_id=cid)
            assert data == f"{name} videos note\n".encode() * 20


# -- under a writer ----------------------------------------------------------------------------------
#: bytes per second the backup's destination takes: the archive (~600 KB) lasts several seconds
RATE = 100_000
KiB = 1024


def reported(entry: dict[str, Any]) -> dict[str, str]:
    """``{key: how}`` from a section's ``changed`` lines (``modified K``, ``not archived K (why)``...)."""
    out = {}
    for line in entry["changed"]:
        m = re.fullmatch(r"(modified|added|deleted) (.+)", line) or re.fullmatch(r"(not archived) (.+) \(.*\)", line)
        assert m, line
        out[m.group(2)] = m.group(1)
    return out


@pytest.mark.slow
async def test_backup_under_a_writer_holds_each_file_whole_or_names_it_changed(env: Env) -> None:
    source = env.stores("a")
    db = source.root / "platform.db"
    ids = await build_platform(source, db)
    writer = Writer(env.tmp / "writer", config=source.cfg, db=db, company_id=ids["beta"],
                    content_types=list(CONTENT_TYPES), categories=["c0", "c1"], seed=7, interval=0.003)
    to = env.tmp / "backups"
    to.mkdir()
    finished: list[float] = []
    try:
        await anyio.to_thread.run_sync(writer.wait_ready)
        before = writer.ops()

        async def run_backup() -> None:
            dest = ThrottledBackend(LocalBackend(to), writes=[TokenBucket(lambda: RATE)])
            async with StorageManager.open(source.cfg, db) as m, dest:
                await create_platform_backup(dest, m, PlatformOptions(codec=parse_codec("gzip"),
                                                                      chunk_size=64 * KiB))
            finished.append(time.monotonic())

        async with anyio.create_task_group() as tg:
            tg.start_soon(run_backup)
            with anyio.fail_after(120):  # the archive is being written: its third part is stored
                while not list(to.glob("*/storage.tar.gz.part0002")):
                    await anyio.sleep(0.02)
            during = writer.ops() - before
            result = await anyio.to_thread.run_sync(writer.stop)
            stopped = time.monotonic()
    except BaseException:
        writer.kill()
        raise
    # the writer stopped before the backup's last listing: what the stores hold now is what that listing saw
    assert finished and stopped < finished[0], "the backup ended before the writer stopped: slow it down more"
    assert during > 0 and not result.errors and not result.read_errors
    (folder,) = to.iterdir()
    unpacked = unpack(folder, env.tmp / "unpacked")
    changed = 0
    for ct in CONTENT_TYPES:
        final, _ = await source.read("s3a", ct, "beta")
        archived, _ = unpacked.company(ct, "beta")
        entry = unpacked.entry("beta", ct)
        assert entry["complete"] and entry["changed_count"] == len(entry["changed"])  # every one named (< 100)
        how = reported(entry)
        differ = {k for k in final.keys() | archived.keys() if final.get(k) != archived.get(k)}
        # a file is in the backup as the store holds it, or its change is named
        assert differ <= how.keys(), sorted(differ - how.keys())
        assert {k for k, h in how.items() if h != "not archived"} <= differ
        # nothing half-read: every file of the writer in the archive is one whole version it wrote
        for key, data in archived.items():
            if "-n" in key:
                assert re.fullmatch(rf"{ct}\|{re.escape(key)}\|seed 7\|op \d+\|x+", data.decode()), key
        changed += len(how)
    assert changed > 0, "the writer changed nothing of beta after the backup listed it"
    assert any("-n" in k for k in unpacked.files), "nothing the writer wrote is in the backup"
    for name, route in ROUTES.items():
        if name != "beta":
            for ct in CONTENT_TYPES:
                assert unpacked.entry(name, ct)["changed_count"] == 0
                assert unpacked.company(ct, name)[0] == (await source.read(route, ct, name))[0]


# -- one company, one connection -----------------------------------------------------------------------
async def test_one_company_restore_leaves_the_others_and_the_database_untouched(env: Env) -> None:
    source = env.stores("a")
    db = source.root / "platform.db"
    await build_platform(source, db)
    r = await anyio.to_thread.run_sync(lambda: vf("backup", "create", "--platform", str(source.cfg), "--db", str(db),
                                                  "--to", str(env.tmp / "backups"), "--json"))
    assert r.code == 0, r.err
    folder = Path(r.json()["location"])
    unpacked = unpack(folder, env.tmp / "unpacked")
    # after the backup: beta and gamma lose files, acme's are overwritten
    a, b = source.seaweed.boto3_client(), source.seaweed2.boto3_client()
    a.delete_object(Bucket=source.bucket_a, Key="portraits/beta/c0/Image/big0.bin")
    a.put_object(Bucket=source.bucket_a, Key="videos/beta/c1/QR/note.txt", Body=b"changed since")
    b.delete_object(Bucket=source.bucket_b, Key="portraits/gamma/c0/Image/big1.bin")
    (source.local_base / "videos/acme/c1/QR/note.txt").write_bytes(b"acme changed since")
    before_db = dump(db)
    before = {name: {ct: await source.read(route, ct, name) for ct in CONTENT_TYPES}
              for name, route in ROUTES.items() if name != "beta"}

    r = await anyio.to_thread.run_sync(lambda: vf("backup", "restore", str(folder), "--platform", str(source.cfg),
                                                  "--db-path", str(db), "--company", "beta", "--json"))
    assert r.code == 0, r.err
    out = r.json()
    assert out["database"] is None and [c["company"] for c in out["companies"]] == ["beta"]
    await assert_company_is(source, unpacked, "beta", "s3a")
    for name, route in ROUTES.items():
        if name != "beta":
            assert {ct: await source.read(route, ct, name) for ct in CONTENT_TYPES} == before[name], name
    assert dump(db) == before_db
    assert not list(db.parent.glob("platform.db.before-restore-*"))

    # --only: a prefix of the archive's paths; the rest of the company is left as it is
    a.delete_object(Bucket=source.bucket_a, Key="portraits/beta/c0/Image/big0.bin")
    a.delete_object(Bucket=source.bucket_a, Key="portraits/beta/c1/QR/note.txt")
    r = await anyio.to_thread.run_sync(lambda: vf("backup", "restore", str(folder), "--platform", str(source.cfg),
                                                  "--db-path", str(db), "--company", "2",
                                                  "--only", "portraits/beta/c0"))
    assert r.code == 0, r.err
    files = (await source.read("s3a", "portraits", "beta"))[0]
    assert "c0/Image/big0.bin" in files and "c1/QR/note.txt" not in files

    # one company onto another connection: its files go there and the platform database routes it there
    r = await anyio.to_thread.run_sync(lambda: vf("backup", "restore", str(folder), "--platform", str(source.cfg),
                                                  "--db-path", str(db), "--company", "gamma", "--connection", "s3a",
                                                  "--json"))
    assert r.code == 0, r.err
    assert [(x["company"], x["to"]) for x in r.json()["rerouted"]] == [("gamma", "s3a")]
    await assert_company_is(source, unpacked, "gamma", "s3a")
    with Registry.open(db) as reg:
        gamma = reg.company("gamma")
        assert gamma.placement == reg.company("beta").placement  # on s3a, as beta
        (record,) = reg.migrations(gamma.id)
        assert record.state == "switched" and record.target["name"] == "s3a" and record.source["name"] == "s3b"
        assert f"restored from backup {folder.name} onto s3a" in (record.message or "")
    assert (await source.read("s3b", "portraits", "gamma"))[0]  # the old copy is left where it was
    assert {t: rows for t, rows in dump(db).items() if t != "vertexflow_migrations" and t != "companies"} == \
        {t: rows for t, rows in before_db.items() if t != "vertexflow_migrations" and t != "companies"}


async def test_restore_onto_one_connection_routes_every_company_there(env: Env) -> None:
    source = env.stores("a")
    db = source.root / "platform.db"
    ids = await build_platform(source, db, big=1)
    folder = await backup(source, db, env.tmp / "backups")
    unpacked = unpack(folder, env.tmp / "unpacked")
    target = env.stores("b")
    target.write_config()
    restored_db = target.root / "platform.db"
    r = await anyio.to_thread.run_sync(lambda: vf("backup", "restore", str(folder), "--platform", str(target.cfg),
                                                  "--db-path", str(restored_db), "--connection", "disk", "--json"))
    assert r.code == 0, r.err
    out = r.json()
    assert {x["company"]: x["to"] for x in out["rerouted"]} == dict.fromkeys(ROUTES, "disk")
    for name in ROUTES:
        await assert_company_is(target, unpacked, name, "disk")  # under the connection's root
        for route in ("local", "s3a", "s3b", "yandex_disk"):  # and nowhere else
            for ct in CONTENT_TYPES:
                assert not (await target.read(route, ct, name))[0], (name, route, ct)
    # each company is routed there, recorded as a switched migration
    con = sqlite3.connect(restored_db)
    try:
        disk_id = con.execute("SELECT id FROM storage_connections WHERE name = 'disk'").fetchone()[0]
        rows = con.execute("SELECT id, storage_connection_id FROM companies ORDER BY id").fetchall()
        records = con.execute("SELECT company_id, state, message FROM vertexflow_migrations ORDER BY id").fetchall()
    finally:
        con.close()
    assert rows == [(cid, disk_id) for cid in sorted(ids.values())]
    assert [(c, s) for c, s, _ in records] == [(cid, "switched") for cid in ids.values()]
    assert all(f"restored from backup {folder.name} onto disk" in m for _, _, m in records)
    async with StorageManager.open(target.cfg, restored_db) as m:
        for name, cid in ids.items():
            assert m.target(m.company(cid), "portraits").label() == f"disk:portraits/{name}"
            assert await m.get_file("portraits", "c1/QR/note.txt", company_id=cid) == \
                f"{name} portraits note\n".encode() * 20


# -- bad input ---------------------------------------------------------------------------------------
def _dead_store(stores: Stores) -> None:
    """Connection ``dead``: an S3 endpoint on a port nothing listens on; company ``omega`` lives there."""
    from vertexflow.testing.yandex_disk.process import free_port

    raw = stores.config()
    raw["connections"]["dead"] = {"type": "minio", "endpoint": f"127.0.0.1:{free_port()}", "access_key": "k",
                                  "secret_key": "s", "bucket": "gone", "secure": False}
    stores.cfg.write_text(json.dumps(raw))


async def test_an_unreachable_store_fails_the_backup_or_marks_its_company_incomplete(env: Env) -> None:
    source = env.stores("a")
    db = source.root / "platform.db"
    await build_platform(source, db, big=1)
    _dead_store(source)
    with Registry.open(db) as reg:
        reg.add_company("omega", storage_type="minio", storage_connection_id=reg.add_connection("dead", "minio").id)
    to = env.tmp / "backups"
    args = ("backup", "create", "--platform", str(source.cfg), "--db", str(db), "--to", str(to))
    r = await anyio.to_thread.run_sync(lambda: vf(*args))
    assert r.code == 2, r.err
    assert "company 'omega'" in r.err and "dead:" in r.err and "--allow-incomplete" in r.err, r.err
    assert "nothing was written" in r.err and not to.exists()

    r = await anyio.to_thread.run_sync(lambda: vf(*args, "--allow-incomplete", "--json"))
    assert r.code == 1, r.err
    assert "company omega, portraits (dead:portraits/omega) is INCOMPLETE" in r.err, r.err
    out = r.json()
    assert out["complete"] is False
    assert {c["company"]: c["complete"] for c in out["companies"]} == {**dict.fromkeys(ROUTES, True), "omega": False}
    unpacked = unpack(Path(out["location"]), env.tmp / "unpacked")
    omega = unpacked.entry("omega", "videos")
    assert omega["complete"] is False and "cannot be reached" in omega["error"] and omega["files"] == 0
    assert unpacked.entry("beta", "videos")["complete"] is True
    v = await anyio.to_thread.run_sync(lambda: vf("backup", "verify", out["location"]))
    assert v.code == 0, v.err


async def test_a_connection_named_nowhere_stops_the_backup_before_anything_is_written(env: Env) -> None:
    source = env.stores("a")
    db = source.root / "platform.db"
    await build_platform(source, db, big=1)
    with Registry.open(db) as reg:  # a row without settings, and no connection of that name in the storage config
        reg.add_company("omega", storage_type="minio", storage_connection_id=reg.add_connection("ghost", "minio").id)
    to = env.tmp / "backups"
    r = await anyio.to_thread.run_sync(lambda: vf("backup", "create", "--platform", str(source.cfg), "--db", str(db),
                                                  "--to", str(to)))
    assert r.code == 2 and "storage connection 'ghost'" in r.err and str(source.cfg) in r.err, r.err
    assert not to.exists()


async def test_restore_refuses_bad_input_before_writing_anything(env: Env) -> None:
    source = env.stores("a")
    db = source.root / "platform.db"
    await build_platform(source, db, big=1)
    folder = await backup(source, db, env.tmp / "backups")
    other = env.stores("b")
    other_db = other.root / "platform.db"

    async def refused(*args: str, cfg: Path | None = None, db_path: Path = other_db) -> str:
        r = await anyio.to_thread.run_sync(lambda: vf("backup", "restore", str(folder), "--platform",
                                                      str(cfg or other.cfg), "--db-path", str(db_path), *args))
        assert r.code == 2, (args, r.code, r.err)
        # nothing written: no local storage, no database, empty buckets and emulator folders
        assert not other.local_base.exists() and not other_db.exists()
        for name, route in ROUTES.items():
            for ct in CONTENT_TYPES:
                assert (await other.read(route, ct, name)) == ({}, set()), (args, name, ct)
        return r.err

    # another platform, whose content types differ
    other.write_config(content_types=("portraits", "markers"))
    err = await refused()
    assert "videos has no place there" in err and "portraits, markers" in err and str(other.cfg) in err, err
    other.write_config()
    err = await refused("--connection", "nowhere")
    assert "--connection 'nowhere': no such connection in the backup's database" in err and str(other.cfg) in err
    assert "routes.sqlite3" not in err, err
    err = await refused("--company", "nobody")
    assert "holds no company 'nobody'" in err and "acme, beta, gamma, delta" in err, err
    # one company: the platform's database says where it is; beta moved to s3b since the backup
    with Registry.open(db) as reg:
        reg.set_placement(reg.company("beta").id, reg.company("gamma").placement)
    err = await refused("--company", "beta", cfg=source.cfg, db_path=db)
    assert "files are on s3b now" in err and "--connection s3b" in err and "--connection s3a" in err, err
    # a platform backup restored without --platform, and options that go with it
    r = await anyio.to_thread.run_sync(lambda: vf("backup", "restore", str(folder)))
    assert r.code == 2 and "is a platform backup" in r.err, r.err
    r = await anyio.to_thread.run_sync(lambda: vf("backup", "create", "--platform", str(source.cfg), "--db", str(db),
                                                  "--type", "storage", "--to", str(env.tmp / "x")))
    assert r.code == 2 and "without --type" in r.err and not (env.tmp / "x").exists(), r.err


async def test_verify_and_restore_refuse_a_platform_section_that_disagrees_with_the_members(env: Env) -> None:
    source = env.stores("a")
    db = source.root / "platform.db"
    await build_platform(source, db, big=1)
    folder = await backup(source, db, env.tmp / "backups")
    meta = json.loads((folder / "metadata.json").read_text())
    beta, gamma = (next(c for c in meta["platform"]["companies"] if c["folder"] == f) for f in ("beta", "gamma"))
    n = beta["content"]["videos"]["files"]
    beta["content"]["videos"]["files"] -= 1  # the sums still agree with the storage section
    gamma["content"]["videos"]["files"] += 1
    (folder / "metadata.json").write_text(json.dumps(meta))
    r = await anyio.to_thread.run_sync(lambda: vf("backup", "verify", str(folder)))
    assert r.code == 1, r.out + r.err
    assert f"PROBLEM videos/beta: holds {n} files in MEMBERS.sha256, its platform entry says {n - 1}" in r.out, r.out
    target = env.stores("b")
    target.write_config()
    r = await anyio.to_thread.run_sync(lambda: vf("backup", "restore", str(folder), "--platform", str(target.cfg),
                                                  "--db-path", str(target.root / "p.db")))
    assert r.code == 1 and f"videos/beta holds {n} files" in r.err and not target.local_base.exists(), r.err
