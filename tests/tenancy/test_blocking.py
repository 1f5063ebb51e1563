"""The synchronous facade of StorageManager, used from several threads at once."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import boto3
import pytest

from vertexflow.errors import ConfigError, NotFound
from vertexflow.tenancy.blocking import BlockingStorageManager
from vertexflow.testing.seaweedfs import SeaweedFS

from .conftest import minio_conn

pytestmark = pytest.mark.s3


def test_four_threads_at_once_on_local_disk_and_s3(tmp_path: Path, seaweed2: SeaweedFS, bucket2: str) -> None:
    cfg = tmp_path / "storage_config.json"
    cfg.write_text(json.dumps({"portraits": {"storage_type": "local"}, "local": {"base_path": str(tmp_path / "files")},
                               "connections": {"minio-b": minio_conn(seaweed2, bucket2)}}))
    with BlockingStorageManager.open(cfg, tmp_path / "platform.db") as storage:
        reg, beta = storage.call(_companies)
        assert storage.company("beta").id == beta.id
        errors: list[BaseException] = []
        seen: dict[int, dict[str, bytes]] = {}

        def work(n: int) -> None:
            company = reg.id if n % 2 else beta.id
            mine = {f"cats/Image/t{n}-{i}.bin": f"{n}:{i}".encode() * 100 for i in range(25)}
            try:
                for key, data in mine.items():
                    storage.save_file("portraits", key, data, company_id=company)
                    assert storage.get_file("portraits", key, company_id=company) == data
                gone = f"cats/Image/t{n}-0.bin"
                storage.delete_file("portraits", gone, company_id=company)
                assert not storage.file_exists("portraits", gone, company_id=company)
                del mine[gone]
                seen[n] = mine
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        # the same errors as the async API, raised in the calling thread
        with pytest.raises(NotFound):
            storage.get_file("portraits", "cats/Image/none.bin", company_id=reg.id)
        with pytest.raises(ConfigError, match="no-such"):
            storage.company("no-such")
        assert sorted(storage.list_files("portraits", "cats/", company_id=beta.id)) == sorted(
            k for n in (0, 2) for k in seen[n])
        url = storage.get_public_url("portraits", "cats/Image/t1-1.bin", company_id=reg.id)
        assert url.startswith("file://")
    # what the facade wrote, read back independently: local files and boto3 on the second server
    for n in (1, 3):
        for key, data in seen[n].items():
            assert (tmp_path / "files/portraits/acme" / key).read_bytes() == data
    s3 = boto3.client("s3", endpoint_url=seaweed2.endpoint, aws_access_key_id=seaweed2.access_key,
                      aws_secret_access_key=seaweed2.secret_key, region_name=seaweed2.region)
    for n in (0, 2):
        for key, data in seen[n].items():
            assert s3.get_object(Bucket=bucket2, Key=f"portraits/beta/{key}")["Body"].read() == data
    with pytest.raises(RuntimeError, match="closed"):
        storage.file_exists("portraits", "x")


async def _companies(m):  # type: ignore[no-untyped-def]
    """acme on local disk, beta on the minio-b connection (the second S3 server)."""
    registry = m.require_registry()
    conn = registry.add_connection("minio-b", "minio", None)
    return registry.add_company("acme"), registry.add_company("beta", storage_type="minio",
                                                               storage_connection_id=conn.id)


def test_a_bad_storage_config_raises_in_the_caller(tmp_path: Path) -> None:
    cfg = tmp_path / "storage_config.json"
    cfg.write_text(json.dumps({"portraits": {"storage_type": "nowhere"}}))
    with pytest.raises(ConfigError, match="portraits.storage_type"):
        BlockingStorageManager.open(cfg, tmp_path / "platform.db")
    assert not any(t.name == "vertexflow-storage" and t.is_alive() for t in threading.enumerate())
