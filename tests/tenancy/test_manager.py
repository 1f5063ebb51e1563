"""StorageManager: routing, the per-company cache, file API, public URLs, provisioning on every backend."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from vertexflow.errors import ConfigError, NotFound
from vertexflow.testing.seaweedfs import SeaweedFS
from vertexflow.testing.yandex_disk import YandexDiskEmulator

from .conftest import TOKEN, make_manager, minio_conn

pytestmark = pytest.mark.s3


async def test_local_routing_file_api_and_cache(tmp_path: Path) -> None:
    async with make_manager(tmp_path, {"portraits": {"storage_type": "local"},
                                       "local": {"base_path": "files"}}) as m:
        acme = m.registry.add_company("acme")
        await m.save_file("portraits", "cats/Image/a.jpg", b"A", company_id=acme.id)
        assert (tmp_path / "files/portraits/acme/cats/Image/a.jpg").read_bytes() == b"A"  # relative to the config
        assert await m.get_file("portraits", "cats/Image/a.jpg", company_id=acme.id) == b"A"
        assert await m.file_exists("portraits", "cats/Image/a.jpg", company_id=acme.id)
        url = await m.get_public_url("portraits", "cats/Image/a.jpg", company_id=acme.id)
        assert url == (tmp_path / "files/portraits/acme/cats/Image/a.jpg").as_uri()
        await m.delete_file("portraits", "cats/Image/a.jpg", company_id=acme.id)
        assert not await m.file_exists("portraits", "cats/Image/a.jpg", company_id=acme.id)
        with pytest.raises(NotFound):
            await m.get_file("portraits", "cats/Image/a.jpg", company_id=acme.id)
        first = await m.get_company_adapter(acme.id, "portraits")
        assert await m.get_company_adapter(acme.id, "portraits") is first
        m.clear_company_cache(acme.id)
        assert await m.get_company_adapter(acme.id, "portraits") is not first
        with pytest.raises(ConfigError, match="unknown content type 'videos'"):
            await m.get_company_adapter(acme.id, "videos")
        with pytest.raises(ConfigError, match="no company 42"):
            await m.get_company_adapter(42, "portraits")


async def test_provision_and_verify_on_s3_with_markers(tmp_path: Path, seaweed: SeaweedFS, s3_bucket: str) -> None:
    raw = {"portraits": {"storage_type": "minio"}, "videos": {"storage_type": "minio"},
           "minio": {**minio_conn(seaweed, s3_bucket), "type": None}}
    del raw["minio"]["type"]
    async with make_manager(tmp_path, raw) as m:
        acme = m.registry.add_company("acme")
        report = await m.verify_company_storage(acme.id, ["cats"])
        assert not report.ok and "portraits:cats/Image" in report.missing and len(report.missing) == 6
        report = await m.provision_company_storage(acme.id, ["cats", "dogs"])
        assert len(report.created) == 12 and not report.existing
        keys = {o["Key"] for o in seaweed.boto3_client().list_objects_v2(Bucket=s3_bucket)["Contents"]}
        assert "portraits/acme/dogs/nft_markers/.keep" in keys and len(keys) == 12
        assert (await m.verify_company_storage(acme.id, ["cats", "dogs"])).ok
        again = await m.provision_company_storage(acme.id, ["cats"])
        assert not again.created and len(again.existing) == 6
        # public URL: a presigned GET that a plain HTTP client can fetch
        await m.save_file("videos", "cats/clip.mp4", b"video-bytes", company_id=acme.id)
        url = await m.get_public_url("videos", "cats/clip.mp4", company_id=acme.id)
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            assert resp.status == 200 and await resp.read() == b"video-bytes"


async def test_provision_on_yandex_creates_real_folders(tmp_path: Path, emulator: YandexDiskEmulator) -> None:
    raw = {"portraits": {"storage_type": "yandex_disk"},
           "yandex_disk": {"enabled": True, "token": TOKEN, "base_url": emulator.base_url,
                           "base_paths": {"portraits": "/ar/portraits"}}}
    async with make_manager(tmp_path, raw) as m:
        acme = m.registry.add_company("acme", yandex_disk_folder_id="acme-folder")
        await m.provision_company_storage(acme.id, ["cats"], ["Image", "QR"])
        adapter = await m.get_company_adapter(acme.id, "portraits")
        assert adapter.describe() == "yandex_disk:ar/portraits/acme-folder"
        assert await adapter.folder_exists("cats/QR") and not await adapter.folder_exists("cats/nft_markers")
        async for _ in adapter.list_files():
            pytest.fail("folders on Yandex.Disk need no marker files")
        report = await m.verify_company_storage(acme.id, ["cats"])
        assert report.missing == ["portraits:cats/nft_markers"]
        await m.save_file("portraits", "cats/Image/p.png", b"png", company_id=acme.id)
        url = await m.get_public_url("portraits", "cats/Image/p.png", company_id=acme.id)
        assert url.startswith("http://127.0.0.1")


async def test_company_on_its_own_connection(tmp_path: Path, seaweed2: SeaweedFS, bucket2: str) -> None:
    raw = {"portraits": {"storage_type": "local"}, "connections": {"minio-b": minio_conn(seaweed2, bucket2)}}
    async with make_manager(tmp_path, raw) as m:
        conn = m.registry.add_connection("minio-b", "minio")  # settings from the storage config
        beta = m.registry.add_company("beta", storage_type="minio", storage_connection_id=conn.id)
        await m.save_file("portraits", "c/Image/x", b"x", company_id=beta.id)
        obj = seaweed2.boto3_client().get_object(Bucket=bucket2, Key="portraits/beta/c/Image/x")
        assert obj["Body"].read() == b"x"
        ghost = m.registry.add_connection("ghost", "minio")
        gamma = m.registry.add_company("gamma", storage_connection_id=ghost.id)
        with pytest.raises(ConfigError, match="'ghost' has no settings"):
            await m.get_company_adapter(gamma.id, "portraits")
