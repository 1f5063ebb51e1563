"""A rollback while the platform writes: every acknowledged write is on the old backend when the company gets back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio

from vertexflow.ops.migrate import migrate_company, rollback_company
from vertexflow.ops.spec import TransferSettings
from vertexflow.tenancy import StorageManager
from vertexflow.tenancy.live_state import LiveState
from vertexflow.tenancy.registry import Registry


async def test_rollback_under_writes_loses_no_acknowledged_write(tmp_path: Path) -> None:
    cfg, db = tmp_path / "storage_config.json", tmp_path / "platform.db"
    cfg.write_text(json.dumps({"portraits": {"storage_type": "local"}, "local": {"base_path": str(tmp_path / "files")},
                               "connections": {"nas": {"type": "local", "path": str(tmp_path / "nas")}}}))
    big = {f"cat0/Image/big{i}.bin": os.urandom(100 * 1024) for i in range(6)}
    async with StorageManager.open(cfg, db) as m:
        acme = m.require_registry().add_company("acme")
        for key, data in big.items():
            await m.save_file("portraits", key, data, company_id=acme.id)
        assert (await migrate_company(m, acme.id, "nas")).state == "switched"
        # the platform changes the big files on the new backend, so that the sync back has bytes to move
        changed = {key: os.urandom(100 * 1024) for key in big}
        for key, data in changed.items():
            await m.save_file("portraits", key, data, company_id=acme.id)

    acked: dict[str, bytes] = {}
    reads_wrong: list[str] = []
    done = anyio.Event()

    async def platform() -> None:
        """Another StorageManager on the same database: creates, overwrites and reads keys at a steady rate."""
        async with StorageManager.open(cfg, db) as w:
            n = 0
            while not done.is_set() or n < 20:
                n += 1
                key = f"live/QR/k{n % 60}.bin"
                data = f"v{n}".encode()
                await w.save_file("portraits", key, data, company_id=acme.id)
                acked[key] = data
                probe = next(iter(changed))  # changed since the switch: must never read as before
                if await w.get_file("portraits", probe, company_id=acme.id) != changed[probe]:
                    reads_wrong.append(probe)
                await anyio.sleep(0.01)

    async def rollback() -> None:
        try:
            async with StorageManager.open(cfg, db) as m:
                result = await rollback_company(m, acme.id, settings=TransferSettings(bwlimit="200k"))
                assert result.state == "rolled_back" and result.copied >= len(changed)
        finally:
            done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(platform)
        tg.start_soon(rollback)
    assert len(acked) >= 20 and reads_wrong == []
    async with StorageManager.open(cfg, db) as m:
        assert m.require_registry().company(acme.id).storage_connection_id is None  # back on local disk
        for key, data in {**changed, **acked}.items():  # every acknowledged write, with its last content
            assert await m.get_file("portraits", key, company_id=acme.id) == data, key
    for key, data in acked.items():  # on the old backend itself
        assert (tmp_path / "files/portraits/acme" / key).read_bytes() == data, key
    with Registry.open(db) as reg:
        [record] = reg.migrations(acme.id)
        assert record.state == "rolled_back"
        route = LiveState(reg).route(acme.id)
        assert route.state is None and route.migration_id is None
        assert reg.db.execute("SELECT COUNT(*) FROM vertexflow_migration_dirty").fetchone()[0] == 0
