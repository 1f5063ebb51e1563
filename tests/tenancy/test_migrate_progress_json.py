"""``migrate company --progress-json FILE``: the copy's bytes as they move, the migration's steps as phases."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from vertexflow.tenancy import StorageManager

from ..cli.helpers import vf

KiB = 1024
FILES = {f"cat0/Image/f{i}.bin": hashlib.shake_256(str(i).encode()).digest(100 * KiB) for i in range(8)}


async def test_a_throttled_migration_writes_its_progress_and_steps(tmp_path: Path) -> None:
    cfg = tmp_path / "storage_config.json"
    cfg.write_text(json.dumps({"portraits": {"storage_type": "local"}, "local": {"base_path": str(tmp_path / "files")},
                               "connections": {"nas": {"type": "local", "path": str(tmp_path / "nas")}}}))
    env = {"VERTEXFLOW_DB": str(tmp_path / "platform.db"), "VERTEXFLOW_STORAGE_CONFIG": str(cfg)}
    async with StorageManager.open(str(cfg), env["VERTEXFLOW_DB"]) as m:
        acme = m.registry.add_company("acme")
        for key, data in FILES.items():
            await m.save_file("portraits", key, data, company_id=acme.id)
    total = sum(len(v) for v in FILES.values())
    out = tmp_path / "progress.jsonl"
    r = vf("migrate", "company", "acme", "--to", "nas", "--bwlimit", "300K", "--json", "--progress-json", str(out),
           env=env)
    assert r.code == 0, r.err
    assert r.json()["state"] == "switched"
    moved = {p.relative_to(tmp_path / "nas").as_posix(): p.read_bytes() for p in (tmp_path / "nas").rglob("*.bin")}
    assert {k.rpartition("/")[2]: hashlib.sha256(v).hexdigest() for k, v in moved.items()} == {
        k.rpartition("/")[2]: hashlib.sha256(v).hexdigest() for k, v in FILES.items()}

    lines = [json.loads(line) for line in out.read_text().splitlines()]
    *running, final = lines
    assert len(running) >= 2
    copying = [line for line in running if line["phase"] == "copying"]
    assert copying, running
    done = [line["bytes_done"] for line in lines]
    assert done == sorted(done)
    assert any(0 < line["bytes_done"] < total for line in copying), copying
    assert final["final"] and final["exit_status"] == 0 and final["phase"] == "done"
    assert final["bytes_done"] == total and final["objects_done"] == len(FILES)


async def test_the_final_progress_object_carries_the_commands_exit_status_when_the_smoke_check_fails(
        tmp_path: Path) -> None:
    # the switch is clean, but the new route's public URLs answer nothing: the command exits 1, and so says
    # the last --progress-json object, written after the migration judged its result
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    cfg = tmp_path / "storage_config.json"
    cfg.write_text(json.dumps({"portraits": {"storage_type": "local"}, "local": {"base_path": str(tmp_path / "files")},
                               "connections": {"nas": {"type": "local", "path": str(tmp_path / "nas"),
                                                       "public_base_url": f"http://127.0.0.1:{closed_port}/x"}}}))
    env = {"VERTEXFLOW_DB": str(tmp_path / "platform.db"), "VERTEXFLOW_STORAGE_CONFIG": str(cfg)}
    async with StorageManager.open(str(cfg), env["VERTEXFLOW_DB"]) as m:
        acme = m.registry.add_company("acme")
        await m.save_file("portraits", "cat0/Image/a.bin", b"a" * 1000, company_id=acme.id)
    out = tmp_path / "progress.jsonl"
    r = vf("migrate", "company", "acme", "--to", "nas", "--json", "--progress-json", str(out), env=env)
    assert r.json()["state"] == "switched" and not r.json()["smoke"]["ok"], r.out
    assert r.code == 1, r.err
    final = json.loads(out.read_text().splitlines()[-1])
    assert final["final"] and final["exit_status"] == 1, final
