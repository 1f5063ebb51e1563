"""``migrate plan``: counts, the quota check, the throughput probe and its estimate, against real stores;
the probe leaves nothing on the target, records nothing and does not move the company."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yadisk

from vertexflow.filters import Filter
from vertexflow.ops.migrate_plan import PROBE_FILES, plan_migration
from vertexflow.tenancy import StorageManager
from vertexflow.tenancy.registry import Placement
from vertexflow.testing.seaweedfs import SeaweedFS
from vertexflow.testing.yandex_disk import YandexDiskEmulator, running_emulator
from vertexflow.testing.yandex_disk.process import emulator_process

from ..cli.helpers import vf
from .conftest import TOKEN, make_manager, minio_conn

#: what a probe may take beyond its budget (listing, the cleanup, a loaded machine), in seconds
SLACK = 10.0

SMALL = {f"cat{c}/{sub}/f{i}.bin": os.urandom(500 + 37 * i) for c in range(3) for sub in ("Image", "QR")
         for i in range(25)}
#: one file far larger than the rest: the probe must read it, whatever the draw
BIG = {"cat0/Image/video.bin": os.urandom(2 * 1024 * 1024 + 5)}


async def _fill(m: StorageManager, company_id: int, files: dict[str, bytes], content_type: str) -> None:
    for key, data in files.items():
        await m.save_file(content_type, key, data, company_id=company_id)


def _bucket_keys(server: SeaweedFS, bucket: str) -> list[str]:
    client = server.boto3_client()
    return [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", ())]


def _migration_rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM vertexflow_migrations").fetchone()[0])


def _company_row(db: Path, slug: str) -> tuple[Any, ...]:
    with sqlite3.connect(db) as conn:
        return tuple(conn.execute("SELECT storage_type, storage_connection_id, yandex_disk_folder_id FROM companies "
                                  "WHERE slug = ?", (slug,)).fetchone())


async def _disk_tree(client: yadisk.AsyncClient, path: str = "/") -> list[str]:
    """Every file and folder on the disk, by path (an independent client)."""
    out: list[str] = []
    async for item in client.listdir(path):
        sub = f"{path.rstrip('/')}/{item.name}"
        out.append(sub + ("/" if item.type == "dir" else ""))
        if item.type == "dir":
            out += await _disk_tree(client, sub)
    return out


def _check_estimate(plan: dict[str, Any]) -> dict[str, Any]:
    est = plan["estimate"]
    assert est is not None, plan["no_estimate"]
    assert 0 < est["low_seconds"] <= est["seconds"] <= est["high_seconds"]
    assert est["seconds"] == max(est["read_seconds"], est["write_seconds"])
    assert est["serial_seconds"] == pytest.approx(est["read_seconds"] + est["write_seconds"], abs=0.002)
    for side in ("read", "write"):
        s = plan["probe"][side]
        assert s["low_seconds"] <= s["estimate_seconds"] <= s["high_seconds"]
        assert s["completed"] > 0 and s["errors"] == 0
    return est


@pytest.mark.s3
async def test_local_to_a_second_s3_server(tmp_path: Path, seaweed2: SeaweedFS, bucket2: str) -> None:
    raw = {"portraits": {"storage_type": "local"}, "videos": {"storage_type": "local"},
           "local": {"base_path": str(tmp_path / "files")},
           "connections": {"minio-b": minio_conn(seaweed2, bucket2)}}
    async with make_manager(tmp_path, raw) as m:
        acme = m.registry.add_company("acme")
        await _fill(m, acme.id, SMALL, "portraits")
        await _fill(m, acme.id, {**SMALL, **BIG}, "videos")
        before = _company_row(tmp_path / "platform.db", "acme")
        started = time.monotonic()
        plan = (await plan_migration(m, "acme", "minio-b", probe_seconds=2)).as_dict()
        took = time.monotonic() - started
    assert took < 2 + SLACK
    assert [(p["content_type"], p["objects"], p["bytes"], p["left_out"]) for p in plan["plan"]] == [
        ("portraits", len(SMALL), sum(map(len, SMALL.values())), 0),
        ("videos", len(SMALL) + 1, sum(map(len, SMALL.values())) + len(BIG["cat0/Image/video.bin"]), 0)]
    assert plan["files"] == 2 * len(SMALL) + 1
    # S3 reports no free space: unknown, not a failure
    assert plan["quota"] == [{"store": "minio-b", "content_types": ["portraits", "videos"],
                              "needed": plan["bytes"], "free": None, "how": "unknown", "fits": None}]
    assert plan["fits"] is True
    probe = plan["probe"]
    assert probe["population"] == plan["files"] and probe["sampled"] == PROBE_FILES
    assert probe["transfers"] == 16  # the migration's own default between local disk and S3
    # the large file has a size class of its own, and is always probed
    [big_class] = [c for c in probe["classes"] if c["min_size"] > 0]
    assert big_class["files"] == 1 and big_class["sampled"] == 1
    assert probe["read"]["bytes"] >= len(BIG["cat0/Image/video.bin"])
    _check_estimate(plan)
    # nothing left on the target (it was empty), nothing recorded, the company did not move
    # the sampled files' copies and a one-byte warm-up object per file in flight, all deleted
    assert probe["left"] == [] and probe["deleted"] == probe["write"]["files"] + 16
    assert _bucket_keys(seaweed2, bucket2) == []
    assert _migration_rows(tmp_path / "platform.db") == 0
    assert _company_row(tmp_path / "platform.db", "acme") == before == ("default", None, None)
    assert sorted(p.relative_to(tmp_path / "files/portraits/acme").as_posix()
                  for p in (tmp_path / "files/portraits/acme").rglob("*") if p.is_file()) == sorted(SMALL)


@pytest.fixture
async def slow_disk() -> AsyncIterator[YandexDiskEmulator]:
    """A Yandex.Disk emulator that answers every request 30 ms late."""
    async with running_emulator(token=TOKEN, latency=0.03) as emu:
        yield emu


async def test_local_to_yandex_with_latency(tmp_path: Path, slow_disk: YandexDiskEmulator,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    raw = {"portraits": {"storage_type": "local"}, "local": {"base_path": str(tmp_path / "files")},
           "yandex_disk": {"enabled": True, "token": TOKEN, "base_url": slow_disk.base_url,
                           "base_paths": {"portraits": "/ar/portraits"}}}
    files = {f"c{i % 4}/Image/p{i}.jpg": os.urandom(200 + i) for i in range(300)}
    async with make_manager(tmp_path, raw) as m:
        acme = m.registry.add_company("acme")
        await _fill(m, acme.id, files, "portraits")
        started = time.monotonic()
        plan = (await plan_migration(m, "acme", "yandex_disk", probe_seconds=3, max_files=16)).as_dict()
        took = time.monotonic() - started
        assert m.registry.migrations() == [] and m.registry.company(acme.id).storage_type == "default"
    assert took < 3 + SLACK
    assert plan["plan"][0]["objects"] == 300 and plan["plan"][0]["bytes"] == sum(map(len, files.values()))
    [quota] = plan["quota"]
    assert quota["store"] == "yandex_disk" and quota["how"] == "store" and quota["fits"] is True
    assert 0 < quota["free"] <= 10 * 1024 ** 3
    est = _check_estimate(plan)
    # a write to Yandex.Disk is at least two requests in turn (the upload link, then the bytes), each 30 ms
    # late, 16 at once: the 300 files cannot take less, and a probe of 16 that did not scale to 300 would say so
    assert est["write_seconds"] >= 300 * 2 * 0.03 / 16
    probe = plan["probe"]
    assert probe["sampled"] == 16 and probe["population"] == 300
    assert probe["left"] == [] and probe["write"]["files"] > 0
    # the company has no folder on the disk yet: the probe wrote in the nearest folder there is, and made none
    assert probe["where"] == ["yandex_disk:/"]
    monkeypatch.setattr(yadisk.settings, "BASE_API_URL", slow_disk.origin)
    async with yadisk.AsyncClient(token=TOKEN, session="aiohttp") as client:
        assert await _disk_tree(client) == []
    assert slow_disk.request_counts["PUT /upload-target/{token}"] == probe["write"]["files"] + 16  # and warm-ups


async def test_the_probe_writes_in_the_company_folder_when_there_is_one(
        tmp_path: Path, emulator: YandexDiskEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = {"portraits": {"storage_type": "local"}, "local": {"base_path": str(tmp_path / "files")},
           "yandex_disk": {"enabled": True, "token": TOKEN, "base_url": emulator.base_url}}
    async with make_manager(tmp_path, raw) as m:
        acme = m.registry.add_company("acme")
        await _fill(m, acme.id, dict(list(SMALL.items())[:20]), "portraits")
        await m.provision_company_storage(acme.id, ["cat0"], placement=Placement("yandex_disk", None))
        plan = (await plan_migration(m, "acme", "yandex_disk", probe_seconds=1)).as_dict()
    assert plan["probe"]["where"] == ["yandex_disk:/portraits/acme"] and plan["probe"]["left"] == []
    _check_estimate(plan)
    monkeypatch.setattr(yadisk.settings, "BASE_API_URL", emulator.origin)
    async with yadisk.AsyncClient(token=TOKEN, session="aiohttp") as client:
        assert await _disk_tree(client) == ["/portraits/", "/portraits/acme/", "/portraits/acme/cat0/",
                                            "/portraits/acme/cat0/Image/", "/portraits/acme/cat0/QR/",
                                            "/portraits/acme/cat0/nft_markers/"]


async def test_local_target_keeps_no_directory_and_a_filter_counts_what_it_selects(tmp_path: Path) -> None:
    raw = {"portraits": {"storage_type": "local"}, "local": {"base_path": str(tmp_path / "files")},
           "connections": {"nas": {"type": "local", "path": str(tmp_path / "nas")}}}
    async with make_manager(tmp_path, raw) as m:
        acme = m.registry.add_company("acme")
        await _fill(m, acme.id, SMALL, "portraits")
        plan = (await plan_migration(m, "acme", "nas", filt=Filter(exclude=("*/QR/*",)), probe_seconds=1,
                                     seed=7)).as_dict()
    [p] = plan["plan"]
    qr = [k for k in SMALL if "/QR/" in k]
    assert p["objects"] == len(SMALL) - len(qr) and p["left_out"] == len(qr)
    assert p["bytes"] == sum(len(v) for k, v in SMALL.items() if k not in qr)
    assert plan["probe"]["population"] == p["objects"] and plan["probe"]["seed"] == 7
    assert plan["probe"]["transfers"] == 8  # local to local
    [quota] = plan["quota"]
    assert quota["how"] == "file system" and quota["fits"] is True and str(tmp_path) in quota["store"]
    _check_estimate(plan)
    assert plan["probe"]["left"] == [] and plan["probe"]["write"]["completed"] > 0
    assert not (tmp_path / "nas").exists()  # the directories the probe made are gone with its files


async def test_an_interrupted_probe_deletes_what_it_wrote(tmp_path: Path, slow_disk: YandexDiskEmulator,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    raw = {"portraits": {"storage_type": "local"}, "local": {"base_path": str(tmp_path / "files")},
           "yandex_disk": {"enabled": True, "token": TOKEN, "base_url": slow_disk.base_url}}
    async with make_manager(tmp_path, raw) as m:
        acme = m.registry.add_company("acme")
        await _fill(m, acme.id, SMALL, "portraits")
        started = time.monotonic()
        with anyio.move_on_after(1.5) as scope:
            await plan_migration(m, "acme", "yandex_disk", probe_seconds=30)
        took = time.monotonic() - started
    assert scope.cancelled_caught and took < 1.5 + SLACK
    uploads = slow_disk.request_counts["PUT /upload-target/{token}"]
    # it had written when it was cancelled (an upload cut short stores nothing, and needs no delete)
    assert uploads > 0 and slow_disk.request_counts["DELETE /v1/disk/resources"] > 0
    monkeypatch.setattr(yadisk.settings, "BASE_API_URL", slow_disk.origin)
    async with yadisk.AsyncClient(token=TOKEN, session="aiohttp") as client:
        assert await _disk_tree(client) == []


async def test_no_estimate_for_an_empty_company_or_without_the_probe(tmp_path: Path) -> None:
    raw = {"portraits": {"storage_type": "local"}, "local": {"base_path": str(tmp_path / "files")},
           "connections": {"nas": {"type": "local", "path": str(tmp_path / "nas")}}}
    async with make_manager(tmp_path, raw) as m:
        m.registry.add_company("empty")
        acme = m.registry.add_company("acme")
        await _fill(m, acme.id, dict(list(SMALL.items())[:3]), "portraits")
        empty = (await plan_migration(m, "empty", "nas")).as_dict()
        unprobed = (await plan_migration(m, "acme", "nas", probe=False)).as_dict()
        none_selected = (await plan_migration(m, "acme", "nas", filt=Filter(include=("*.none",)))).as_dict()
    assert empty["files"] == 0 and empty["probe"] is None and empty["estimate"] is None
    assert empty["no_estimate"] == "the company has no files: nothing to copy"
    assert unprobed["files"] == 3 and unprobed["probe"] is None and unprobed["estimate"] is None
    assert "not run" in unprobed["no_estimate"]
    assert none_selected["left_out"] == 3 and "filter selects no file" in none_selected["no_estimate"]
    assert not (tmp_path / "nas").exists()


async def test_no_probe_while_a_migration_of_the_company_runs(tmp_path: Path) -> None:
    """Its verification would see probe objects on the target as files the company has not."""
    raw = {"portraits": {"storage_type": "local"}, "local": {"base_path": str(tmp_path / "files")},
           "connections": {"nas": {"type": "local", "path": str(tmp_path / "nas")}}}
    async with make_manager(tmp_path, raw) as m:
        acme = m.registry.add_company("acme")
        await _fill(m, acme.id, dict(list(SMALL.items())[:3]), "portraits")
        record = m.registry.start_migration(acme.id, {"name": "default"}, {"name": "nas"}, live=False)  # ours
        plan = (await plan_migration(m, "acme", "nas")).as_dict()
    assert plan["files"] == 3 and plan["probe"] is None and plan["estimate"] is None
    assert f"migration {record.id} of the company is in progress" in plan["no_estimate"]
    assert not (tmp_path / "nas").exists()


# -- the command line --------------------------------------------------------------------------------
def _setup(tmp_path: Path, files: dict[str, bytes], extra: dict[str, Any]) -> dict[str, str]:
    cfg, db = tmp_path / "storage_config.json", tmp_path / "platform.db"
    cfg.write_text(json.dumps({"portraits": {"storage_type": "local"}, "local": {"base_path": str(tmp_path / "files")},
                               **extra}))

    async def fill() -> None:
        async with StorageManager.open(cfg, db) as m:
            acme = m.require_registry().add_company("acme")
            await _fill(m, acme.id, files, "portraits")

    anyio.run(fill)
    return {"VERTEXFLOW_DB": str(db), "VERTEXFLOW_STORAGE_CONFIG": str(cfg)}


def test_cli_quota_that_does_not_fit_exits_1(tmp_path: Path) -> None:
    files = {f"cats/Image/f{i}.bin": os.urandom(1000) for i in range(4)}
    with emulator_process("--token", "t", "--total-space", "2000", "--latency", "0.01") as url:
        env = _setup(tmp_path, files, {"yandex_disk": {"enabled": True, "token": "t", "base_url": url}})
        started = time.monotonic()
        r = vf("migrate", "plan", "acme", "--to", "yandex_disk", "--probe-seconds", "1", env=env)
        took = time.monotonic() - started
        j = vf("migrate", "plan", "acme", "--to", "yandex_disk", "--no-probe", "--json", env=env)
        yadisk.settings.BASE_API_URL = url.removesuffix("/v1/disk")
        tree = anyio.run(_tree_of, "t")
    assert r.code == 1, (r.out, r.err)
    assert "quota: yandex_disk: needs 4,000 bytes; 2,000 bytes free" in r.out and "DOES NOT FIT" in r.out
    assert "would not fit: yandex_disk needs 4,000 bytes, 2,000 free" in r.err
    assert "to migrate: vertexflow migrate company acme --to yandex_disk" in r.out
    assert took < 1 + SLACK + 5  # a fresh interpreter's start-up besides
    assert j.code == 1 and j.json()["fits"] is False and j.json()["quota"][0]["free"] == 2000
    assert tree == []  # no probe object, no folder
    assert _migration_rows(tmp_path / "platform.db") == 0
    assert _company_row(tmp_path / "platform.db", "acme") == ("default", None, None)


async def _tree_of(token: str) -> list[str]:
    async with yadisk.AsyncClient(token=token, session="aiohttp") as client:
        return await _disk_tree(client)


def test_cli_text_and_json(tmp_path: Path) -> None:
    env = _setup(tmp_path, SMALL, {"connections": {"nas": {"type": "local", "path": str(tmp_path / "nas")}}})
    r = vf("migrate", "plan", "acme", "--to", "nas", "--probe-seconds", "1", "--exclude", "*/QR/*",
           "--transfers", "4", env=env)
    assert r.code == 0, (r.out, r.err)
    half = len(SMALL) // 2
    assert f"portraits: {half} files" in r.out and f"({half} left out by the filter)" in r.out
    assert "estimated duration: " in r.out and "(range " in r.out and "probe objects: " in r.out
    assert "none left" in r.out
    assert "to migrate: vertexflow migrate company acme --to nas --exclude '*/QR/*' --transfers 4" in r.out
    j = vf("migrate", "plan", "acme", "--to", "nas", "--probe-seconds", "0.5", "--json", env=env)
    assert j.code == 0, j.err
    data = j.json()
    assert data["files"] == len(SMALL) and data["fits"] is True and data["probe"]["left"] == []
    _check_estimate(data)
    assert not (tmp_path / "nas").exists()
    assert _migration_rows(tmp_path / "platform.db") == 0


def test_cli_bad_input_exits_2_naming_it(tmp_path: Path) -> None:
    env = _setup(tmp_path, dict(list(SMALL.items())[:2]),
                 {"connections": {"nas": {"type": "local", "path": str(tmp_path / "nas")}}})
    r = vf("migrate", "plan", "acme", "--to", "nowhere", env=env)
    assert r.code == 2 and "nowhere" in r.err and "unknown storage connection" in r.err
    r = vf("migrate", "plan", "nobody", "--to", "nas", env=env)
    assert r.code == 2 and "nobody" in r.err
    r = vf("migrate", "plan", "acme", "--to", "nas", "--probe-seconds", "0.1", env=env)
    assert r.code == 2 and "--probe-seconds" in r.err
    r = vf("migrate", "plan", "acme", env=env)
    assert r.code == 2 and "--to" in r.err
    assert r.out == "" and _migration_rows(tmp_path / "platform.db") == 0
    assert not (tmp_path / "nas").exists()


def test_cli_ctrl_c_during_the_probe_deletes_what_it_wrote(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    files = {f"cats/Image/f{i}.bin": os.urandom(3000) for i in range(200)}
    with emulator_process("--token", "t", "--latency", "0.05") as url:
        env = _setup(tmp_path, files, {"yandex_disk": {"enabled": True, "token": "t", "base_url": url}})
        yadisk.settings.BASE_API_URL = url.removesuffix("/v1/disk")
        proc = subprocess.Popen([sys.executable, "-m", "vertexflow", "migrate", "plan", "acme", "--to", "yandex_disk",
                                 "--probe-seconds", "30"], env={**os.environ, **env}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            seen: list[str] = []
            while not seen and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.1)
                seen = anyio.run(_tree_of, "t")
            assert seen and all(p.startswith("/.vertexflow-probe-") for p in seen), seen  # probe objects, written
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=SLACK + 20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 130
        assert anyio.run(_tree_of, "t") == []
    assert _migration_rows(tmp_path / "platform.db") == 0
