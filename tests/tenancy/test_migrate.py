"""Company migration end to end: the migration guide's scenarios, live migration, rollbacks."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import anyio
import pytest

from vertexflow.backends.base import Backend
from vertexflow.errors import ConfigError, InsufficientStorage, MigrationFailed
from vertexflow.middleware.base import BackendWrapper
from vertexflow.model import BodyFactory, ObjectInfo
from vertexflow.ops.migrate import migrate_company, rollback_company
from vertexflow.tenancy import StorageManager
from vertexflow.testing.seaweedfs import SeaweedFS
from vertexflow.testing.yandex_disk import YandexDiskEmulator

from .conftest import TOKEN, make_manager, minio_conn

pytestmark = pytest.mark.s3

FILES = {f"cat{c}/{sub}/f{i}.bin": f"{c}-{sub}-{i}".encode() * 50
         for c in range(2) for sub in ("Image", "QR") for i in range(4)}


async def _fill(m: StorageManager, company_id: int, content_types: tuple[str, ...] = ("portraits", "videos")) -> None:
    for ct in content_types:
        for key, data in FILES.items():
            await m.save_file(ct, key, data, company_id=company_id)


async def _contents(m: StorageManager, company_id: int, ct: str) -> dict[str, bytes]:
    adapter = await m.get_company_adapter(company_id, ct)
    return {i.key: await adapter.get_file(i.key) async for i in adapter.list_files()
            if not i.key.endswith("/.keep")}


async def test_local_to_yandex_one_company_moves_the_others_stay(tmp_path: Path,
                                                                emulator: YandexDiskEmulator) -> None:
    raw = {"portraits": {"storage_type": "local"}, "videos": {"storage_type": "local"},
           "local": {"base_path": str(tmp_path / "files")},
           "yandex_disk": {"enabled": True, "token": TOKEN, "base_url": emulator.base_url,
                           "base_paths": {"portraits": "/ar/portraits", "videos": "/ar/videos"}}}
    async with make_manager(tmp_path, raw) as m:
        acme, beta = m.registry.add_company("acme"), m.registry.add_company("beta")
        await _fill(m, acme.id)
        await _fill(m, beta.id, ("portraits",))
        events: list[str] = []
        result = await migrate_company(m, "acme", "yandex_disk", categories=("empty-cat",),
                                       on_event=lambda state, _: events.append(state))
        assert events == ["copying", "verifying", "switched"]
        assert result.state == "switched" and result.copied == 2 * len(FILES)
        assert result.verified == 2 * len(FILES)
        assert m.registry.company(acme.id).storage_type == "yandex_disk"
        adapter = await m.get_company_adapter(acme.id, "portraits")
        assert adapter.describe() == "yandex_disk:ar/portraits/acme"
        assert await _contents(m, acme.id, "portraits") == FILES  # read back from Yandex.Disk
        assert await _contents(m, acme.id, "videos") == FILES
        assert await adapter.folder_exists("empty-cat/nft_markers")  # provisioned on the target
        # the other company did not move and still reads its files from local disk
        assert m.registry.company(beta.id).storage_type == "default"
        assert (await m.get_company_adapter(beta.id, "portraits")).describe().startswith("local:")
        assert await _contents(m, beta.id, "portraits") == FILES
        record = m.registry.migration(result.migration_id)
        assert record.state == "switched" and record.finished_at and record.report["copied"] == 2 * len(FILES)
        # the old files stay where they were (for a rollback)
        assert (tmp_path / "files/portraits/acme/cat0/Image/f0.bin").exists()
        with pytest.raises(ConfigError, match="already on yandex_disk"):
            await migrate_company(m, "acme", "yandex_disk")


async def test_minio_to_minio_different_endpoints_and_credentials(
        tmp_path: Path, seaweed: SeaweedFS, s3_bucket: str, seaweed2: SeaweedFS, bucket2: str) -> None:
    minio_a = minio_conn(seaweed, s3_bucket)
    del minio_a["type"]
    raw = {"portraits": {"storage_type": "minio"}, "videos": {"storage_type": "minio"}, "minio": minio_a,
           "connections": {"minio-b": minio_conn(seaweed2, bucket2)}}
    async with make_manager(tmp_path, raw) as m:
        acme = m.registry.add_company("acme")
        await _fill(m, acme.id)
        dry = await migrate_company(m, acme.id, "minio-b", dry_run=True)
        assert dry.state == "dry_run" and sum(p.objects for p in dry.plan) == 2 * len(FILES)
        assert m.registry.migrations() == [] and m.registry.company(acme.id).storage_connection_id is None
        result = await migrate_company(m, acme.id, "minio-b", filt=_filter(exclude=("*/QR/*",)))
        assert result.copied == len(FILES)  # the filter left the QR files out
        keys = {o["Key"] for o in seaweed2.boto3_client().list_objects_v2(Bucket=bucket2)["Contents"]}
        assert "portraits/acme/cat1/Image/f3.bin" in keys and "videos/acme/cat0/QR/f0.bin" not in keys
        # a staged copy: the company stays on the old store, where the files left out are
        assert result.state == "staged" and m.registry.company(acme.id).storage_connection_id is None
        assert await m.file_exists("videos", "cat0/QR/f0.bin", company_id=acme.id)
        result = await migrate_company(m, acme.id, "minio-b")  # the rest, then the switch
        assert result.state == "switched" and result.copied == len(FILES)
        company = m.registry.company(acme.id)
        assert company.storage_connection_id == m.registry.connection("minio-b").id
        assert await m.get_file("videos", "cat0/QR/f0.bin", company_id=acme.id) == FILES["cat0/QR/f0.bin"]
        # the old server's credentials do not open the new one: they really are two stores
        with pytest.raises(Exception, match="InvalidAccessKeyId|AccessDenied|SignatureDoesNotMatch"):
            seaweed2.boto3_client(access_key=seaweed.access_key,
                                  secret_key=seaweed.secret_key).list_objects_v2(Bucket=bucket2)


def _filter(**kw: Any) -> Any:
    from vertexflow.filters import Filter
    return Filter(**kw)


class DropOne(BackendWrapper):
    """Says it stored ``key`` but does not: a silently lossy store."""

    def __init__(self, inner: Backend, key: str) -> None:
        super().__init__(inner)
        self.key = key

    async def put(self, info: ObjectInfo, body: BodyFactory, **kw: Any) -> ObjectInfo:
        if info.key == self.key:
            return info
        return await super().put(info, body, **kw)


async def test_failed_verification_rolls_back_by_itself(tmp_path: Path) -> None:
    raw = {"portraits": {"storage_type": "local"}, "local": {"base_path": str(tmp_path / "a")},
           "connections": {"nas": {"type": "local", "path": str(tmp_path / "nas")}}}
    async with make_manager(tmp_path, raw) as m:
        acme = m.registry.add_company("acme")
        await _fill(m, acme.id, ("portraits",))
        with pytest.raises(MigrationFailed, match=r"verification .* failed: 1 differences: missing cat1/QR/f2.bin"):
            await migrate_company(m, acme.id, "nas", wrap_target=lambda b: DropOne(b, "cat1/QR/f2.bin"))
        company = m.registry.company(acme.id)
        assert company.storage_connection_id is None and company.storage_type == "default"
        [record] = m.registry.migrations(acme.id)
        assert record.state == "rolled_back" and "missing cat1/QR/f2.bin" in record.message
        assert (await m.get_company_adapter(acme.id, "portraits")).describe().startswith("local:")
        # the record no longer blocks a new attempt, which succeeds
        assert (await migrate_company(m, acme.id, "nas")).state == "switched"


async def test_rollback_returns_the_company_with_changes_made_since(tmp_path: Path,
                                                                   emulator: YandexDiskEmulator) -> None:
    raw = {"portraits": {"storage_type": "local"}, "local": {"base_path": str(tmp_path / "files")},
           "yandex_disk": {"enabled": True, "token": TOKEN, "base_url": emulator.base_url}}
    async with make_manager(tmp_path, raw) as m:
        acme = m.registry.add_company("acme")
        await _fill(m, acme.id, ("portraits",))
        await migrate_company(m, acme.id, "yandex_disk")
        # the platform works on Yandex.Disk for a while
        await m.save_file("portraits", "cat0/Image/new.bin", b"new", company_id=acme.id)
        await m.save_file("portraits", "cat0/Image/f0.bin", b"changed", company_id=acme.id)
        await m.delete_file("portraits", "cat1/QR/f1.bin", company_id=acme.id)
        result = await rollback_company(m, acme.id)
        assert result.state == "rolled_back"
        assert m.registry.company(acme.id).storage_type == "default"
        assert (await m.get_company_adapter(acme.id, "portraits")).describe().startswith("local:")
        expected = {**FILES, "cat0/Image/new.bin": b"new", "cat0/Image/f0.bin": b"changed"}
        del expected["cat1/QR/f1.bin"]
        assert await _contents(m, acme.id, "portraits") == expected
        assert m.registry.migrations(acme.id)[0].state == "rolled_back"
        with pytest.raises(ConfigError, match="no switched migration"):
            await rollback_company(m, acme.id)


async def test_quota_check_stops_before_copying(tmp_path: Path) -> None:
    from vertexflow.testing.yandex_disk import running_emulator

    async with running_emulator(token=TOKEN, total_space=2000) as emu:
        raw = {"portraits": {"storage_type": "local"}, "local": {"base_path": str(tmp_path / "files")},
               "yandex_disk": {"enabled": True, "token": TOKEN, "base_url": emu.base_url}}
        async with make_manager(tmp_path, raw) as m:
            acme = m.registry.add_company("acme")
            await _fill(m, acme.id, ("portraits",))
            with pytest.raises(InsufficientStorage, match="needs .* bytes .* but only .* are free; nothing was copied"):
                await migrate_company(m, acme.id, "yandex_disk")
            assert m.registry.company(acme.id).storage_type == "default"
            assert m.registry.migrations(acme.id)[0].state == "failed"


class Slow(BackendWrapper):
    """Puts take a little while, so that the platform's writes overlap the bulk copy."""

    async def put(self, info: ObjectInfo, body: BodyFactory, **kw: Any) -> ObjectInfo:
        await anyio.sleep(0.01)
        return await super().put(info, body, **kw)


async def test_live_migration_under_writes_overwrites_and_deletes(tmp_path: Path, seaweed: SeaweedFS,
                                                                 s3_bucket: str) -> None:
    raw = {"portraits": {"storage_type": "local"}, "local": {"base_path": str(tmp_path / "files")},
           "connections": {"s3-new": {"type": "s3", "endpoint": seaweed.endpoint, "bucket": s3_bucket,
                                      "access_key_id": seaweed.access_key,
                                      "secret_access_key": seaweed.secret_key, "region": seaweed.region,
                                      "addressing_style": "path"}}}
    initial = {f"c{i % 3}/Image/p{i}.bin": f"v0-{i}".encode() * 20 for i in range(120)}
    async with make_manager(tmp_path, raw) as m:
        acme = m.registry.add_company("acme")
        for k, v in initial.items():
            await m.save_file("portraits", k, v, company_id=acme.id)
        expected = dict(initial)
        phase = {"now": "before"}
        ops_during_copy = {"write": 0, "delete": 0}
        done = anyio.Event()
        rng = random.Random(7)

        async def platform() -> None:
            """Writes, overwrites, deletes and reads through the manager, as the platform would."""
            n = 0
            while not done.is_set() or n < 20:
                n += 1
                key = rng.choice(sorted(expected)) if expected and rng.random() < 0.6 else f"c9/QR/n{n}.bin"
                if rng.random() < 0.25 and key in expected:
                    await m.delete_file("portraits", key, company_id=acme.id)
                    del expected[key]
                    kind = "delete"
                else:
                    data = f"v{n}-{key}".encode()
                    await m.save_file("portraits", key, data, company_id=acme.id)
                    expected[key] = data
                    kind = "write"
                if phase["now"] == "copying":
                    ops_during_copy[kind] += 1
                probe = rng.choice(sorted(expected))
                assert await m.get_file("portraits", probe, company_id=acme.id) == expected[probe]
                await anyio.sleep(0.005)

        async def migration() -> None:
            try:
                result = await migrate_company(m, acme.id, "s3-new", live=True, wrap_target=Slow,
                                               on_event=lambda state, _: phase.update(now=state))
                assert result.state == "switched"
            finally:
                done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(platform)
            tg.start_soon(migration)
        assert ops_during_copy["write"] > 5 and ops_during_copy["delete"] > 2, ops_during_copy
        assert m.registry.company(acme.id).storage_connection_id is not None
        # every file present and current on the new backend, nothing deleted came back
        stored = {o["Key"].removeprefix("portraits/acme/"): seaweed.boto3_client().get_object(
                      Bucket=s3_bucket, Key=o["Key"])["Body"].read()
                  for page in seaweed.boto3_client().get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
                  for o in page.get("Contents", ()) if not o["Key"].endswith("/.keep")}
        assert stored == expected
        assert await _contents(m, acme.id, "portraits") == expected
