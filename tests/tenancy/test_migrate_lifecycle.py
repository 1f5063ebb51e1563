"""Company migration: filtered runs are staged copies, empty content types, leases, end marks after an abandon."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from vertexflow.filters import Filter
from vertexflow.ops.migrate import migrate_company
from vertexflow.tenancy import StorageManager
from vertexflow.tenancy.live_state import LiveState
from vertexflow.tenancy.registry import Placement, Registry

from .conftest import make_manager

FILES = {f"cat{c}/{sub}/f{i}.bin": f"{c}-{sub}-{i}".encode() * 50
         for c in range(2) for sub in ("Image", "QR") for i in range(3)}
QR = {k for k in FILES if "/QR/" in k}


def _local_raw(tmp_path: Path, *content_types: str) -> dict[str, Any]:
    return {**{ct: {"storage_type": "local"} for ct in content_types},
            "local": {"base_path": str(tmp_path / "files")},
            "connections": {"nas": {"type": "local", "path": str(tmp_path / "nas")}}}


async def _fill(m: StorageManager, company_id: int, ct: str = "portraits") -> None:
    for key, data in FILES.items():
        await m.save_file(ct, key, data, company_id=company_id)


async def test_a_filtered_migration_is_a_staged_copy_and_the_platform_keeps_every_file(tmp_path: Path) -> None:
    async with make_manager(tmp_path, _local_raw(tmp_path, "portraits")) as m:
        acme = m.registry.add_company("acme")
        await _fill(m, acme.id)
        events: list[str] = []
        result = await migrate_company(m, "acme", "nas", filt=Filter(exclude=("*/QR/*",)),
                                       on_event=lambda state, _: events.append(state))
        assert result.state == "staged", result.message
        assert events == ["copying", "verifying", "staged"]
        assert result.copied == len(FILES) - len(QR) and result.left_out == len(QR)
        assert "company acme stays on default" in result.message
        assert "To complete the move: vertexflow migrate company acme --to nas" in result.message
        # the company did not move, and every file, those left out included, is there for the platform
        assert m.registry.company(acme.id).placement == Placement("default", None, None)
        for key, data in FILES.items():
            assert await m.file_exists("portraits", key, company_id=acme.id), key
            assert await m.get_file("portraits", key, company_id=acme.id) == data
        [record] = m.registry.migrations(acme.id)
        assert record.state == "staged" and record.finished_at and record.report["left_out"] == len(QR)
        # the files outside the filter follow with the next run, which switches; the first run's files are skipped
        second = await migrate_company(m, "acme", "nas", filt=Filter(include=("*/QR/*",)))
        assert second.state == "switched", second.message  # every file of the company is now on the target
        assert second.copied == len(QR)
        assert m.registry.company(acme.id).storage_connection_id == m.registry.connection("nas").id
        for key, data in FILES.items():
            assert await m.get_file("portraits", key, company_id=acme.id) == data


async def test_a_filter_that_leaves_nothing_out_switches(tmp_path: Path) -> None:
    async with make_manager(tmp_path, _local_raw(tmp_path, "portraits")) as m:
        acme = m.registry.add_company("acme")
        await _fill(m, acme.id)
        result = await migrate_company(m, "acme", "nas", filt=Filter(include=("cat*/**",)))
        assert result.state == "switched" and result.left_out == 0 and result.copied == len(FILES)


@pytest.mark.parametrize("live", [False, True])
async def test_a_company_with_no_files_of_one_content_type_migrates(tmp_path: Path, live: bool) -> None:
    async with make_manager(tmp_path, _local_raw(tmp_path, "portraits", "videos")) as m:
        beta = m.registry.add_company("beta")
        await _fill(m, beta.id, "portraits")  # portraits, and no videos at all (no folder either)
        assert not (tmp_path / "files/videos/beta").exists()
        result = await migrate_company(m, "beta", "nas", live=live)
        assert result.state == "switched", result.message
        assert result.verified == len(FILES)
        for key, data in FILES.items():
            assert await m.get_file("portraits", key, company_id=beta.id) == data
        await m.save_file("videos", "cat0/Image/v.mp4", b"clip", company_id=beta.id)  # lands on the target
        assert (tmp_path / "nas/videos/beta/cat0/Image/v.mp4").read_bytes() == b"clip"


def test_a_write_that_ends_after_an_abandon_leaves_no_dirty_row(tmp_path: Path) -> None:
    with Registry.open(tmp_path / "platform.db") as reg:
        acme = reg.add_company("acme")
        rec = reg.start_migration(acme.id, {}, {}, live=True)
        live = LiveState(reg)
        live.set_state(acme.id, rec.id, "copying", Placement("local", None))
        route, inflight = live.begin_write(acme.id, "portraits", "cat0/Image/a.jpg")  # a dual write begins
        assert inflight is not None and live.dirty_count(rec.id) == 1
        # the operator abandons the migration while the write is in flight (what `migrate abandon` does)
        reg.update_migration(rec.id, state="failed", message="abandoned by the operator", final=True)
        live.clear(acme.id, rec.id)
        live.end_write(inflight, route, "portraits", "cat0/Image/a.jpg")  # ...and then it ends
        assert live.dirty_count(rec.id) == 0
        assert reg.db.execute("SELECT COUNT(*) FROM vertexflow_migration_dirty").fetchone()[0] == 0


def test_a_migration_whose_process_is_gone_is_stale_and_taken_over(tmp_path: Path) -> None:
    from vertexflow.tenancy.registry import LEASE_TTL

    with Registry.open(tmp_path / "platform.db") as reg:
        acme = reg.add_company("acme")
        first = reg.start_migration(acme.id, {}, {}, live=True)
        assert not reg.migration(first.id).is_stale()  # this process holds it
        LiveState(reg).set_state(acme.id, first.id, "copying", Placement("local", None))
        LiveState(reg).begin_write(acme.id, "portraits", "k")
        # its lease was last renewed long ago by a process on another host
        reg.db.execute("UPDATE vertexflow_migrations SET owner_host = 'elsewhere', heartbeat_at = ? WHERE id = ?",
                       (time.time() - LEASE_TTL - 1, first.id))
        assert reg.migration(first.id).is_stale() and reg.migration(first.id).as_dict()["state"] == "stale"
        second = reg.start_migration(acme.id, {}, {}, live=False)
        assert reg.taken_over == [first.id]
        old = reg.migration(first.id)
        assert old.state == "failed" and f"taken over by migration {second.id}" in (old.message or "")
        route = LiveState(reg).route(acme.id)
        assert route.state is None and route.migration_id is None  # its dual writes are rolled back
        assert LiveState(reg).dirty_count(first.id) == 0
        # a live process of this host keeps its migration: the next run is refused
        reg.db.execute("UPDATE vertexflow_migrations SET heartbeat_at = ? WHERE id = ?",
                       (time.time() - LEASE_TTL - 1, second.id))
        assert reg.migration(second.id).is_stale()  # an expired lease is stale even with a live pid
        reg.db.execute("UPDATE vertexflow_migrations SET heartbeat_at = ? WHERE id = ?", (time.time(), second.id))
        with pytest.raises(Exception, match=f"already has migration {second.id} in progress .*pid {os.getpid()}"):
            reg.start_migration(acme.id, {}, {}, live=False)


async def test_a_migration_renews_its_lease_while_it_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vertexflow.ops.migrate as mig
    from vertexflow.middleware.base import BackendWrapper

    monkeypatch.setattr(mig, "LEASE_HEARTBEAT", 0.1)
    beats: list[float] = []

    class Slow(BackendWrapper):
        async def put(self, info: Any, body: Any, **kw: Any) -> Any:
            await anyio.sleep(0.05)
            return await super().put(info, body, **kw)

    async with make_manager(tmp_path, _local_raw(tmp_path, "portraits")) as m:
        acme = m.registry.add_company("acme")
        await _fill(m, acme.id)

        def seen(state: str, _: Any) -> None:
            if state == "verifying":
                [rec] = m.registry.migrations(acme.id)
                beats.append(rec.heartbeat_at or 0)

        t0 = time.time()
        result = await migrate_company(m, "acme", "nas", wrap_target=Slow, on_event=seen,
                                       settings=mig.TransferSettings(transfers=1))
        assert result.state == "switched"
        [rec] = m.registry.migrations(acme.id)
        assert rec.owner_pid == os.getpid() and beats and beats[0] > t0 + 0.2  # renewed during the copy


async def test_a_write_fence_left_by_a_dead_migrator_is_lifted_by_the_waiting_writer(tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid of this host that is gone
    async with make_manager(tmp_path, _local_raw(tmp_path, "portraits")) as m:
        m.fence_wait = 5.0
        acme = m.registry.add_company("acme")
        await _fill(m, acme.id)
        rec = m.registry.start_migration(acme.id, {}, {"storage_type": "local"}, live=True)
        nas = m.registry.add_connection("nas2", "local", {"type": "local", "path": str(tmp_path / "nas2")})
        LiveState(m.registry).set_state(acme.id, rec.id, "closing", Placement("local", nas.id))
        # the migrator dies with its fence up
        m.registry.db.execute("UPDATE vertexflow_migrations SET owner_pid = ? WHERE id = ?", (dead.pid, rec.id))
        t0 = time.monotonic()
        await m.save_file("portraits", "cat0/Image/after.bin", b"after", company_id=acme.id)
        assert time.monotonic() - t0 < 3.0  # well before fence_wait
        assert (tmp_path / "files/portraits/acme/cat0/Image/after.bin").read_bytes() == b"after"  # the old placement
        record = m.registry.migration(rec.id)
        assert record.state == "failed" and "write fence was lifted by a waiting writer" in (record.message or "")
        assert LiveState(m.registry).route(acme.id).state is None
