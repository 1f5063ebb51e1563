"""Live migration across processes: the platform writes in one process, ``vertexflow migrate --live`` runs in another."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from vertexflow.tenancy import StorageManager
from vertexflow.tenancy.live_state import LiveState
from vertexflow.tenancy.registry import Registry
from vertexflow.tenancy.storage_config import load_storage_config
from vertexflow.testing.seaweedfs import SeaweedFS

from ..cli.helpers import vf

pytestmark = pytest.mark.s3

#: the platform: writes, overwrites, deletes and reads one company's files through its own StorageManager
WRITER = r'''
import json, random, sys, time, traceback
from pathlib import Path
import anyio
from vertexflow.tenancy import StorageManager

cfg, db, company_id, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])

async def main():
    expected = json.loads((work / "initial.json").read_text())
    rng = random.Random(11)
    errors, dual_ops, ops, max_pause = [], 0, 0, 0.0
    started = time.monotonic()
    async with StorageManager.open(cfg, db) as m:
        adapter = await m.get_company_adapter(company_id, "portraits")
        # bounded by count and time; the test asks it to stop with a file
        while ops < 20000 and time.monotonic() - started < 50 and not (work / "stop").exists():
            ops += 1
            key = rng.choice(sorted(expected)) if expected and rng.random() < 0.6 else f"c9/QR/n{ops}.bin"
            t0 = time.monotonic()
            try:
                if rng.random() < 0.25 and key in expected:
                    await adapter.delete_file(key)
                    del expected[key]
                else:
                    data = f"v{ops}-{key}"
                    await adapter.save_file(key, data.encode())
                    expected[key] = data
                probe = rng.choice(sorted(expected))
                got = (await adapter.get_file(probe)).decode()
                if got != expected[probe]:
                    errors.append(f"read {probe}: {got!r} != {expected[probe]!r}")
            except Exception:
                errors.append(traceback.format_exc())
            max_pause = max(max_pause, time.monotonic() - t0)
            if adapter.describe().startswith("dual("):
                dual_ops += 1
            if ops == 20:
                (work / "ready").write_text("1")
            await anyio.sleep(0.003)
        # after the switch: this process's adapter must now write to the new backend
        await adapter.save_file("after/switch.bin", b"after")
        expected["after/switch.bin"] = "after"
        where = adapter.describe()
    (work / "result.json").write_text(json.dumps({"expected": expected, "errors": errors, "ops": ops,
        "dual_ops": dual_ops, "max_pause": max_pause, "where": where}))

anyio.run(main)
'''


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no {path.name} after {timeout} s"
        time.sleep(0.05)


async def _fill(cfg: Path, db: Path, initial: dict[str, str]) -> int:
    async with StorageManager(load_storage_config(cfg), Registry.open(db)) as m:
        acme = m.require_registry().add_company("acme")
        for k, v in initial.items():
            await m.save_file("portraits", k, v.encode(), company_id=acme.id)
        return acme.id


def test_cli_live_migration_while_another_process_writes(tmp_path: Path, seaweed: SeaweedFS,
                                                         s3_bucket: str) -> None:
    cfg, db = tmp_path / "storage_config.json", tmp_path / "platform.db"
    cfg.write_text(json.dumps({
        "portraits": {"storage_type": "local"}, "local": {"base_path": str(tmp_path / "files")},
        "connections": {"s3-new": {"type": "s3", "endpoint": seaweed.endpoint, "bucket": s3_bucket,
                                   "access_key_id": seaweed.access_key, "secret_access_key": seaweed.secret_key,
                                   "region": seaweed.region, "addressing_style": "path"}}}))
    initial = {f"c{i % 3}/Image/p{i}.bin": f"v0-{i}" * 20 for i in range(300)}
    company_id = anyio.run(_fill, cfg, db, initial)
    (tmp_path / "initial.json").write_text(json.dumps(initial))
    (tmp_path / "writer.py").write_text(WRITER)

    writer = subprocess.Popen([sys.executable, str(tmp_path / "writer.py"), str(cfg), str(db), str(company_id),
                               str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env={**os.environ})
    try:
        _wait_for(tmp_path / "ready", writer, 30)
        env = {"VERTEXFLOW_DB": str(db), "VERTEXFLOW_STORAGE_CONFIG": str(cfg)}
        r = vf("migrate", "company", "acme", "--to", "s3-new", "--live", "--json", env=env, timeout=90)
        assert r.code == 0, r.err
        assert r.json()["state"] == "switched"
        time.sleep(0.3)  # a few writes after the switch
    finally:
        (tmp_path / "stop").write_text("1")
        out, _ = writer.communicate(timeout=60)
    assert writer.returncode == 0, out.decode()[-3000:]
    res = json.loads((tmp_path / "result.json").read_text())
    assert res["errors"] == [], res["errors"][:3]
    assert res["dual_ops"] > 5, res  # the writer really wrote during the copy, through dual writes
    assert res["max_pause"] < 25, res  # the fence paused writes, boundedly
    assert res["where"].startswith("s3-new:"), res["where"]  # its adapter follows the switch

    client = seaweed.boto3_client()
    stored = {o["Key"].removeprefix("portraits/acme/"): client.get_object(Bucket=s3_bucket, Key=o["Key"])[
                  "Body"].read().decode()
              for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
              for o in page.get("Contents", ()) if not o["Key"].endswith("/.keep")}
    # every file present and current, nothing deleted came back, the last write landed on new
    assert stored == res["expected"]
    with Registry.open(db) as reg:
        assert reg.company(company_id).storage_connection_id == reg.connection("s3-new").id
        [record] = reg.migrations(company_id)
        assert record.state == "switched" and record.live
        route = LiveState(reg).route(company_id)
        assert route.state is None and route.migration_id is None  # fence lifted
        assert reg.db.execute("SELECT COUNT(*) FROM vertexflow_inflight").fetchone()[0] == 0
        assert reg.db.execute("SELECT COUNT(*) FROM vertexflow_migration_dirty").fetchone()[0] == 0
