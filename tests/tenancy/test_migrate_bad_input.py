"""Bad input to a company migration, as an operator meets it on the command line.

An unknown company or connection, a target that fills up during the copy, a
connection whose credentials are refused, a second migrator started while one
runs: each gives a message naming what and where, exit status 2, and leaves
the company routed where it was (its ``companies`` row and ``company show``),
its migration record (if one was made) ended, and no live state or dirty keys
behind. ``migrate company`` with and without ``--live`` and ``--json``, and
``migrate rollback`` where it applies.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest
import yadisk

from vertexflow.tenancy import StorageManager
from vertexflow.tenancy.registry import ACTIVE_STATES, this_host
from vertexflow.testing.seaweedfs import SeaweedFS
from vertexflow.testing.yandex_disk.process import emulator_process

from ..cli.helpers import Result, vf
from .conftest import minio_conn

#: seconds any wait of these tests gives the other process before failing
WAIT = 60.0
BIG = {f"cat0/Image/big{i}.bin": os.urandom(100 * 1024) for i in range(10)}
SMALL = {f"cats/{sub}/f{i}.bin": f"{sub}{i}".encode() * 50 for sub in ("Image", "QR") for i in range(3)}
#: ``migrate company`` with and without ``--live``, and with ``--json`` (which prints the state and message)
MODES = pytest.mark.parametrize(("live", "as_json"), [(False, False), (True, True)], ids=["offline-text", "live-json"])


def _setup(tmp_path: Path, files: dict[str, bytes], extra: dict[str, Any] | None = None) -> tuple[dict[str, str], int]:
    """A platform on local disk with company acme holding ``files``, and a connection ``nas`` (local)."""
    cfg, db = tmp_path / "storage_config.json", tmp_path / "platform.db"
    raw: dict[str, Any] = {"portraits": {"storage_type": "local"}, "local": {"base_path": str(tmp_path / "files")},
                           "connections": {"nas": {"type": "local", "path": str(tmp_path / "nas")}}}
    for key, value in (extra or {}).items():
        raw[key] = {**raw[key], **value} if key == "connections" else value
    cfg.write_text(json.dumps(raw))

    async def fill() -> int:
        async with StorageManager.open(cfg, db) as m:
            acme = m.require_registry().add_company("acme")
            for key, data in files.items():
                await m.save_file("portraits", key, data, company_id=acme.id)
            return acme.id

    company_id = anyio.run(fill)
    return {"VERTEXFLOW_DB": str(db), "VERTEXFLOW_STORAGE_CONFIG": str(cfg),
            "VERTEXFLOW_JOURNAL": str(tmp_path / "journal.db")}, company_id


def _db(env: dict[str, str]) -> closing[sqlite3.Connection]:
    """The platform database, read with sqlite3 (an independent client), closed after the block."""
    return closing(sqlite3.connect(env["VERTEXFLOW_DB"]))


def _placement(env: dict[str, str], company_id: int) -> tuple[Any, ...]:
    with _db(env) as db:
        row = db.execute("SELECT storage_type, storage_connection_id, yandex_disk_folder_id FROM companies "
                         "WHERE id = ?", (company_id,)).fetchone()
    return tuple(row)


def _assert_routed_as_before(env: dict[str, str], company_id: int, before: tuple[Any, ...],
                             location: str = "local:portraits/acme") -> list[tuple[Any, ...]]:
    """The company's row and ``company show`` as before, every record ended, no live state; the records."""
    assert _placement(env, company_id) == before
    shown = vf("company", "show", "acme", "--json", env=env)
    assert shown.code == 0, shown.err
    assert shown.json()["locations"] == {"portraits": location}
    assert (shown.json()["storage_type"], shown.json()["storage_connection_id"]) == before[:2]
    with _db(env) as db:
        records = db.execute("SELECT id, state, finished_at, message FROM vertexflow_migrations "
                             "WHERE company_id = ? ORDER BY id", (company_id,)).fetchall()
        assert db.execute("SELECT COUNT(*) FROM vertexflow_routing WHERE migration_id IS NOT NULL "
                          "OR state IS NOT NULL").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM vertexflow_migration_dirty").fetchone()[0] == 0
    assert not [r for r in records if r[1] in ACTIVE_STATES], records
    return records


def _migrate(env: dict[str, str], to: str, *args: str) -> Result:
    return vf("migrate", "company", "acme", "--to", to, *args, env=env)


def _failed(r: Result, as_json: bool) -> str:
    """The message of a failed ``migrate``: exit 2, on stderr, and in the JSON with the state."""
    assert r.code == 2, (r.code, r.out, r.err)
    assert "Traceback" not in r.err, r.err
    assert r.err.startswith("vertexflow: error: "), r.err
    message = r.err.removeprefix("vertexflow: error: ").strip()
    if as_json:
        data = r.json()
        assert data["state"] in ("failed", "error") and data["message"], data
        assert message in data["message"], (message, data["message"])
    return message


# -- an unknown company, an unknown connection ------------------------------------------


@MODES
def test_an_unknown_company_names_it_and_the_database(tmp_path: Path, live: bool, as_json: bool) -> None:
    env, company_id = _setup(tmp_path, SMALL)
    before = _placement(env, company_id)
    r = vf("migrate", "company", "nobody", "--to", "nas", *(["--live"] if live else []),
           *(["--json"] if as_json else []), env=env)
    message = _failed(r, as_json)
    assert "'nobody'" in message and env["VERTEXFLOW_DB"] in message
    if as_json:
        assert r.json()["state"] == "error" and r.json()["migration_id"] is None
    assert _assert_routed_as_before(env, company_id, before) == []
    r = vf("migrate", "rollback", "nobody", *(["--json"] if as_json else []), env=env)
    message = _failed(r, as_json)
    assert "'nobody'" in message and env["VERTEXFLOW_DB"] in message


@MODES
def test_an_unknown_connection_names_it_and_where_it_was_looked_for(tmp_path: Path, live: bool,
                                                                    as_json: bool) -> None:
    env, company_id = _setup(tmp_path, SMALL)
    before = _placement(env, company_id)
    r = _migrate(env, "nowhere", *(["--live"] if live else []), *(["--json"] if as_json else []))
    message = _failed(r, as_json)
    assert "'nowhere'" in message and "nas" in message  # the ones there are
    assert env["VERTEXFLOW_DB"] in message and env["VERTEXFLOW_STORAGE_CONFIG"] in message
    assert _assert_routed_as_before(env, company_id, before) == []
    with _db(env) as db:  # nothing registered for the name
        assert db.execute("SELECT name FROM storage_connections").fetchall() == []


def test_a_rollback_with_nothing_to_roll_back_names_the_company(tmp_path: Path) -> None:
    env, company_id = _setup(tmp_path, SMALL)
    before = _placement(env, company_id)
    for as_json in (False, True):
        r = vf("migrate", "rollback", "acme", *(["--json"] if as_json else []), env=env)
        message = _failed(r, as_json)
        assert "'acme'" in message and "no switched migration" in message and env["VERTEXFLOW_DB"] in message
    assert _assert_routed_as_before(env, company_id, before) == []


# -- a second migrator while one runs ------------------------------------------------------


def _record(env: dict[str, str], company_id: int) -> tuple[int, int, str, str]:
    """The company's last migration: id, lease pid and host, state."""
    with _db(env) as db:
        return db.execute("SELECT id, owner_pid, owner_host, state FROM vertexflow_migrations WHERE company_id = ? "
                          "ORDER BY id DESC LIMIT 1", (company_id,)).fetchone()


def test_a_second_migrator_is_refused_naming_the_running_one_which_completes(tmp_path: Path) -> None:
    env, company_id = _setup(tmp_path, BIG)
    before = _placement(env, company_id)
    first = subprocess.Popen([sys.executable, "-m", "vertexflow", "migrate", "company", "acme", "--to", "nas", "--live",
                              "--bwlimit", "100k", "--transfers", "1", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    try:
        deadline = time.monotonic() + WAIT
        while not list((tmp_path / "nas").rglob("big*.bin")):  # copying: dual writes are on
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first migration copied nothing"
            time.sleep(0.05)
        migration_id, pid, host, _ = _record(env, company_id)
        assert (pid, host) == (first.pid, this_host())
        refused = [(_migrate(env, "nas"), False), (_migrate(env, "local", "--live", "--json"), True),
                   (vf("migrate", "rollback", "acme", "--json", env=env), True)]
        assert first.poll() is None, "the first migration ended before the second ones were refused"
        for r, as_json in refused:
            message = _failed(r, as_json)
            assert f"migration {migration_id} in progress" in message and f"pid {first.pid} on {host}" in message
            assert "'acme'" in message and env["VERTEXFLOW_DB"] in message
            if as_json:
                assert r.json()["migration_id"] is None, r.json()  # no record of its own
        assert _placement(env, company_id) == before
        assert _record(env, company_id)[:3] == (migration_id, first.pid, host)  # the lease is untouched
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGKILL)
            first.wait()
    assert first.returncode == 0, (out, err)
    assert json.loads(out)["state"] == "switched" and json.loads(out)["copied"] == len(BIG)
    with _db(env) as db:
        assert db.execute("SELECT id, state FROM vertexflow_migrations").fetchall() == [(migration_id, "switched")]
        assert db.execute("SELECT COUNT(*) FROM vertexflow_migration_dirty").fetchone()[0] == 0
    for key, data in BIG.items():
        assert (tmp_path / "nas" / "portraits" / "acme" / key).read_bytes() == data


# -- a connection whose credentials are refused ----------------------------------------------


def _bucket_keys(server: SeaweedFS, bucket: str) -> list[str]:
    client = server.boto3_client()
    return [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]


@MODES
def test_refused_credentials_name_the_connection_and_switch_nothing(tmp_path: Path, seaweed2: SeaweedFS,
                                                                     bucket2: str, live: bool, as_json: bool) -> None:
    far = {**minio_conn(seaweed2, bucket2), "secret_key": "not-the-secret-key"}
    env, company_id = _setup(tmp_path, SMALL, {"connections": {"far": far}})
    before = _placement(env, company_id)
    r = _migrate(env, "far", *(["--live"] if live else []), *(["--json"] if as_json else []))
    message = _failed(r, as_json)
    assert "far" in message and far["endpoint"] in message, message
    assert "credentials" in message and "refused" in message, message
    records = _assert_routed_as_before(env, company_id, before)
    # refused while planning (no record), or once recorded: then the record failed, saying why
    assert len(records) <= 1 and all(state == "failed" and "credentials" in recorded
                                      for _, state, _, recorded in records), records
    if as_json:
        assert r.json()["state"] == ("failed" if records else "error"), r.json()
    assert _bucket_keys(seaweed2, bucket2) == []


def test_a_rollback_to_refused_credentials_leaves_the_company_where_it_is(tmp_path: Path, seaweed2: SeaweedFS,
                                                                          bucket2: str) -> None:
    """Moved to a connection and back: the old backend's secret (the platform's MinIO) was changed meanwhile."""
    minio = {k: v for k, v in minio_conn(seaweed2, bucket2).items() if k != "type"}
    env, company_id = _setup(tmp_path, {}, {"portraits": {"storage_type": "minio"}, "minio": minio})

    async def fill() -> None:
        async with StorageManager.open(env["VERTEXFLOW_STORAGE_CONFIG"], env["VERTEXFLOW_DB"]) as m:
            for key, data in SMALL.items():
                await m.save_file("portraits", key, data, company_id=company_id)

    anyio.run(fill)
    r = _migrate(env, "nas", "--json")
    assert r.code == 0 and r.json()["state"] == "switched", (r.out, r.err)
    (tmp_path / "nas" / "portraits" / "acme" / "cats" / "Image" / "new.bin").write_bytes(b"written after the switch")
    cfg = json.loads(Path(env["VERTEXFLOW_STORAGE_CONFIG"]).read_text())
    cfg["minio"]["secret_key"] = "not-the-secret-key"
    Path(env["VERTEXFLOW_STORAGE_CONFIG"]).write_text(json.dumps(cfg))
    on_nas = _placement(env, company_id)
    for as_json in (False, True):
        r = vf("migrate", "rollback", "acme", *(["--json"] if as_json else []), env=env)
        message = _failed(r, as_json)
        assert seaweed2.endpoint.removeprefix("http://") in message and "credentials" in message, message
        [(_, state, _, _)] = _assert_routed_as_before(env, company_id, on_nas, "nas:portraits/acme")
        assert state == "switched"
    assert sorted(_bucket_keys(seaweed2, bucket2)) == sorted(f"portraits/acme/{k}" for k in SMALL)


# -- a target that fills up during the copy ------------------------------------------------------


@pytest.fixture
def small_disk() -> Iterator[str]:
    """A Yandex.Disk emulator (its own process) of 1.5 MB: the company's 1 MB fits, with little to spare."""
    with emulator_process("--token", "t", "--total-space", str(1_500_000)) as url:
        yield url


async def _disk(url: str) -> yadisk.AsyncClient:
    yadisk.settings.BASE_API_URL = url.removesuffix("/v1/disk")
    return yadisk.AsyncClient(token="t", session="aiohttp")


async def _disk_files(client: yadisk.AsyncClient, path: str) -> dict[str, bytes]:
    """Every file under ``path``, read whole, by its path below it."""
    out: dict[str, bytes] = {}
    try:
        items = [it async for it in client.listdir(path)]
    except yadisk.exceptions.PathNotFoundError:
        return out
    for it in items:
        if it.type == "dir":
            out.update({f"{it.name}/{k}": v for k, v in (await _disk_files(client, f"{path}/{it.name}")).items()})
        else:
            buf = io.BytesIO()
            await client.download(f"{path}/{it.name}", buf)
            out[it.name] = buf.getvalue()
    return out


async def _fill(client: yadisk.AsyncClient) -> None:
    """Upload a file that leaves 1,000 bytes free, less than one of the company's files.

    Another user of the account, say: the space a migration's up-front check saw is gone during its copy.
    """
    for _ in range(5):  # an upload of the migration may take the space first: ask again
        info = await client.get_disk_info()
        try:
            await client.upload(io.BytesIO(b"f" * (info.total_space - info.used_space - 1000)), "/filler.bin",
                                overwrite=True)
            return
        except yadisk.exceptions.InsufficientStorageError:
            continue
    raise AssertionError("could not fill the disk")


@MODES
def test_a_target_that_fills_up_during_the_copy(tmp_path: Path, small_disk: str, live: bool, as_json: bool) -> None:
    env, company_id = _setup(tmp_path, BIG, {"yandex_disk": {"enabled": True, "token": "t", "base_url": small_disk}})
    before = _placement(env, company_id)
    proc = subprocess.Popen([sys.executable, "-m", "vertexflow", "migrate", "company", "acme", "--to", "yandex_disk",
                             "--bwlimit", "100k", "--transfers", "1", *(["--live"] if live else []),
                             *(["--json"] if as_json else [])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})

    async def fill_and_wait() -> tuple[Result, dict[str, bytes]]:
        async with await _disk(small_disk) as client:

            async def copying() -> bool:
                return len(await _disk_files(client, "/portraits/acme/cat0/Image")) >= 2

            deadline = time.monotonic() + WAIT
            while not await copying():
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the migration did not start copying"
                await anyio.sleep(0.05)
            await _fill(client)
            out, err = await anyio.to_thread.run_sync(lambda: proc.communicate(timeout=120))
            return Result(proc.returncode, out, err), await _disk_files(client, "/portraits")

    try:
        r, on_disk = anyio.run(fill_and_wait)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    message = _failed(r, as_json)
    assert "yandex_disk" in message and "full" in message, message
    [(_, state, finished, recorded)] = _assert_routed_as_before(env, company_id, before)
    assert state == "failed" and finished is not None and "full" in recorded
    if not as_json:
        assert "failed: the company stays on default" in r.out, r.out
    # what the copy left on the target: whole files of the company, none torn
    assert 2 <= len(on_disk) < len(BIG), sorted(on_disk)
    for key, data in on_disk.items():
        assert data == BIG[key.removeprefix("acme/")], key


def test_a_rollback_to_a_full_disk_leaves_the_company_where_it_is(tmp_path: Path, small_disk: str) -> None:
    """Moved from Yandex.Disk to a NAS, new files written there; the disk filled meanwhile: the sync back stops."""
    old = {k: v for k, v in list(BIG.items())[:3]}
    new = {k.replace("big", "new"): v for k, v in list(BIG.items())[3:6]}
    env, company_id = _setup(tmp_path, {}, {"portraits": {"storage_type": "yandex_disk"},
                                            "yandex_disk": {"enabled": True, "token": "t", "base_url": small_disk}})

    async def save(files: dict[str, bytes]) -> None:
        async with StorageManager.open(env["VERTEXFLOW_STORAGE_CONFIG"], env["VERTEXFLOW_DB"]) as m:
            for key, data in files.items():
                await m.save_file("portraits", key, data, company_id=company_id)

    anyio.run(save, old)
    r = _migrate(env, "nas", "--json")
    assert r.code == 0 and r.json()["state"] == "switched", (r.out, r.err)
    anyio.run(save, new)  # the platform writes on the NAS after the switch
    on_nas = _placement(env, company_id)

    async def fill() -> None:
        async with await _disk(small_disk) as client:
            await _fill(client)

    anyio.run(fill)
    for as_json in (False, True):
        r = vf("migrate", "rollback", "acme", *(["--json"] if as_json else []), env=env)
        message = _failed(r, as_json)
        # the sync back's own check of the free space refuses it up front
        assert "yandex_disk" in message and "only 1,000 are free" in message, message
        [(_, state, _, recorded)] = _assert_routed_as_before(env, company_id, on_nas, "nas:portraits/acme")
        assert state == "switched" and "only 1,000 are free" in recorded, recorded

    async def on_disk() -> dict[str, bytes]:
        async with await _disk(small_disk) as client:
            return await _disk_files(client, "/portraits/acme")

    files = anyio.run(on_disk)
    assert set(old) <= set(files) and all(files[k] == ({**old, **new})[k] for k in files), sorted(files)
