"""``vertexflow migrate company`` as an operator runs it: staged copies, --json on failure, --bwlimit,
a killed migrator taken over, Ctrl-C, and ``migrate abandon``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from vertexflow.tenancy import StorageManager
from vertexflow.tenancy.live_state import LiveState
from vertexflow.tenancy.registry import Placement, Registry
from vertexflow.testing.yandex_disk.process import emulator_process

from ..cli.helpers import vf

#: the platform: one process writing one company's files at a steady rate through its own StorageManager;
#: it records the last content of every write that was acknowledged
WRITER = r'''
import json, sys, time, traceback
from pathlib import Path
import anyio
from vertexflow.tenancy import StorageManager

cfg, db, company_id, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])

async def main():
    acked, errors, n = {}, [], 0
    async with StorageManager.open(cfg, db) as m:
        while not (work / "stop").exists() and n < 100000:
            n += 1
            key = f"w/QR/k{n % 40}.bin"
            try:
                await m.save_file("portraits", key, f"v{n}".encode(), company_id=company_id)
                acked[key] = f"v{n}"
            except Exception:
                errors.append(traceback.format_exc())
            if n == 10:
                (work / "writer-ready").write_text("1")
            await anyio.sleep(0.01)
    (work / "writer.json").write_text(json.dumps({"acked": acked, "errors": errors, "writes": n}))

anyio.run(main)
'''


def _setup(tmp_path: Path, files: dict[str, bytes], extra: dict[str, Any] | None = None) -> tuple[dict[str, str], int]:
    cfg, db = tmp_path / "storage_config.json", tmp_path / "platform.db"
    cfg.write_text(json.dumps({"portraits": {"storage_type": "local"}, "local": {"base_path": str(tmp_path / "files")},
                               "connections": {"nas": {"type": "local", "path": str(tmp_path / "nas")}},
                               **(extra or {})}))

    async def fill() -> int:
        async with StorageManager.open(cfg, db) as m:
            acme = m.require_registry().add_company("acme")
            for key, data in files.items():
                await m.save_file("portraits", key, data, company_id=acme.id)
            return acme.id

    company_id = anyio.run(fill)
    return {"VERTEXFLOW_DB": str(db), "VERTEXFLOW_STORAGE_CONFIG": str(cfg),
            "VERTEXFLOW_JOURNAL": str(tmp_path / "journal.db")}, company_id


def _migrate(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "vertexflow", "migrate", "company", "acme", "--to", "nas", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})


def _wait_copying(tmp_path: Path, proc: subprocess.Popen[str], files: int, timeout: float = 30) -> None:
    """Until the migration is copying and ``files`` whole files are on the target."""
    deadline = time.monotonic() + timeout
    while len(list((tmp_path / "nas").rglob("big*.bin"))) < files:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the migration copied nothing"
        time.sleep(0.05)


def _inodes(tmp_path: Path) -> dict[str, int]:
    """The big files on the target, by inode (a file sent again is a new inode: writes are renamed into place)."""
    return {str(p): p.stat().st_ino for p in (tmp_path / "nas").rglob("big*.bin")}


BIG = {f"cat0/Image/big{i}.bin": os.urandom(100 * 1024) for i in range(10)}


def test_a_filtered_migration_does_not_switch_and_says_how_to_finish(tmp_path: Path) -> None:
    files = {f"cats/{sub}/f{i}.bin": f"{sub}{i}".encode() * 40 for sub in ("Image", "QR") for i in range(3)}
    env, _ = _setup(tmp_path, files)
    r = vf("migrate", "company", "acme", "--to", "nas", "--exclude", "*/QR/*", env=env)
    assert r.code == 0, r.err
    assert "staged" in r.out and "copied 3 files" in r.out and "company acme stays on default" in r.out
    assert "To complete the move: vertexflow migrate company acme --to nas" in r.out
    assert vf("company", "show", "acme", "--json", env=env).json()["storage_type"] == "default"
    assert vf("migrate", "status", "acme", "--json", env=env).json()["migration"]["state"] == "staged"
    r = vf("migrate", "company", "acme", "--to", "nas", "--json", env=env)  # the command it named
    assert r.code == 0, r.err
    assert r.json()["state"] == "switched" and r.json()["copied"] == 3  # the QR files; the others were there


def test_json_is_printed_when_a_migration_fails(tmp_path: Path) -> None:
    with emulator_process("--token", "t", "--total-space", "2000") as url:
        env, _ = _setup(tmp_path, {f"cats/Image/f{i}.bin": b"x" * 1000 for i in range(4)},
                        {"yandex_disk": {"enabled": True, "token": "t", "base_url": url}})
        r = vf("migrate", "company", "acme", "--to", "yandex_disk", "--json", env=env)
    assert r.code == 2, (r.out, r.err)  # InsufficientStorage: the target cannot hold the company, nothing copied
    data = r.json()
    assert data["state"] == "failed" and "only" in data["message"] and "are free" in data["message"]
    assert data["migration_id"] == 1 and data["plan"][0]["objects"] == 4
    r = vf("migrate", "company", "acme", "--to", "nowhere", "--json", env=env)
    assert r.code == 2
    assert r.json()["state"] == "error" and "unknown storage connection 'nowhere'" in r.json()["message"]
    r = vf("migrate", "rollback", "acme", "--json", env=env)
    assert r.code == 2 and "no switched migration" in r.json()["message"] and "no switched migration" in r.err


def test_migrate_abandon_leaves_no_dirty_rows(tmp_path: Path) -> None:
    env, company_id = _setup(tmp_path, {"cats/Image/a.bin": b"a"})
    with Registry.open(tmp_path / "platform.db") as reg:
        rec = reg.start_migration(company_id, {}, {}, live=True)
        live = LiveState(reg)
        live.set_state(company_id, rec.id, "copying", Placement("local", None))
        route, inflight = live.begin_write(company_id, "portraits", "cats/Image/b.bin")
        assert inflight is not None
        r = vf("migrate", "abandon", str(rec.id), env=env)
        assert r.code == 0 and "marked failed (was copying)" in r.out
        live.end_write(inflight, route, "portraits", "cats/Image/b.bin")  # a write in flight ends afterwards
        assert reg.db.execute("SELECT COUNT(*) FROM vertexflow_migration_dirty").fetchone()[0] == 0
        assert live.route(company_id).state is None


def test_bwlimit_and_transfers_pace_a_migration_and_json_counts_the_copy(tmp_path: Path) -> None:
    files = {f"cat{i}/Image/big{i}.bin": os.urandom(100 * 1024) for i in range(6)}
    env, _ = _setup(tmp_path, files)
    t0 = time.monotonic()
    r = vf("migrate", "company", "acme", "--to", "nas", "--bwlimit", "200k", "--transfers", "2", "--json", env=env)
    elapsed = time.monotonic() - t0
    assert r.code == 0, r.err
    data = r.json()
    assert data["state"] == "switched" and data["copied"] == 6 and data["verified"] == 6
    assert data["transfer"]["objects"] == 6 and data["transfer"]["bytes"] == 600 * 1024
    assert elapsed >= 2.0, f"600 KiB in {elapsed:.2f} s under a 200k limit"
    r = vf("migrate", "company", "acme", "--to", "local", "--bwlimit", "fast", env=env)
    assert r.code == 2 and "fast" in r.err


@pytest.mark.parametrize("live", [False, True])
def test_a_killed_migrator_shows_stale_and_a_rerun_takes_it_over(tmp_path: Path, live: bool) -> None:
    env, company_id = _setup(tmp_path, BIG)
    writer = None
    if live:  # the platform writes all along: before, during and after the kill, through the takeover
        (tmp_path / "writer.py").write_text(WRITER)
        writer = subprocess.Popen([sys.executable, str(tmp_path / "writer.py"), env["VERTEXFLOW_STORAGE_CONFIG"],
                                   env["VERTEXFLOW_DB"], str(company_id), str(tmp_path)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not (tmp_path / "writer-ready").exists():
            assert writer.poll() is None and time.monotonic() < deadline, writer.communicate()
            time.sleep(0.05)
    try:
        first = _migrate(env, "--bwlimit", "100k", "--transfers", "1", *(["--live"] if live else []))
        _wait_copying(tmp_path, first, 2)
        first.send_signal(signal.SIGKILL)
        first.wait()
        status = vf("migrate", "status", "acme", "--json", env=env)
        assert status.code == 0, status.err
        mig = status.json()["migration"]
        assert mig["state"] == "stale" and mig["recorded_state"] == "copying", mig
        assert mig["lease"]["pid"] == first.pid
        assert "stale" in vf("migrate", "status", "acme", env=env).out
        assert [m["state"] for m in vf("migrate", "list", "acme", "--json", env=env).json()] == ["stale"]
        copied_before = _inodes(tmp_path)
        r = vf("migrate", "company", "acme", "--to", "nas", "--json", *(["--live"] if live else []), env=env)
        assert r.code == 0, (r.out, r.err)
        data = r.json()
        assert data["state"] == "switched" and data["taken_over"] == [mig["id"]]
        # the copy resumed: what the killed run finished was not sent again
        assert copied_before and all(_inodes(tmp_path)[k] == v for k, v in copied_before.items())
        time.sleep(0.3)  # writes after the switch
    finally:
        (tmp_path / "stop").write_text("1")
        if writer is not None:
            out, _ = writer.communicate(timeout=60)
            assert writer.returncode == 0, out.decode()[-3000:]
    with Registry.open(tmp_path / "platform.db") as reg:
        old, new = reg.migrations(company_id)
        assert old.state == "failed" and f"taken over by migration {new.id}" in (old.message or "")
        assert new.state == "switched" and reg.company(company_id).storage_connection_id is not None
        assert reg.db.execute("SELECT COUNT(*) FROM vertexflow_migration_dirty").fetchone()[0] == 0

    async def check() -> None:
        async with StorageManager.open(env["VERTEXFLOW_STORAGE_CONFIG"], env["VERTEXFLOW_DB"]) as m:
            for key, data in BIG.items():
                assert await m.get_file("portraits", key, company_id=company_id) == data
            if live:
                res = json.loads((tmp_path / "writer.json").read_text())
                assert res["errors"] == [] and res["writes"] > 50, res["errors"][:3]
                for key, content in res["acked"].items():  # every acknowledged write, with its last content
                    assert (await m.get_file("portraits", key, company_id=company_id)).decode() == content, key

    anyio.run(check)


def test_ctrl_c_says_what_happened_and_where_the_company_is(tmp_path: Path) -> None:
    env, company_id = _setup(tmp_path, BIG)
    proc = _migrate(env, "--bwlimit", "100k", "--transfers", "1")
    _wait_copying(tmp_path, proc, 1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "interrupted by the operator while copying: company acme stays on default" in out, (out, err)
    assert "CancelledError" not in out + err
    with Registry.open(tmp_path / "platform.db") as reg:
        [rec] = reg.migrations(company_id)
        assert rec.state == "failed" and "interrupted by the operator" in (rec.message or "")
        assert reg.company(company_id).storage_connection_id is None
    copied_before = _inodes(tmp_path)
    r = vf("migrate", "company", "acme", "--to", "nas", "--json", env=env)
    assert r.code == 0 and r.json()["state"] == "switched"
    assert r.json()["copied"] == len(BIG) - len(copied_before)  # the copy resumed
    assert copied_before and all(_inodes(tmp_path)[k] == v for k, v in copied_before.items())
