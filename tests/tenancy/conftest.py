"""Fixtures for the storage layer: a platform database, storage configs, a second S3 server."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from vertexflow.tenancy import StorageManager
from vertexflow.tenancy.registry import Registry
from vertexflow.tenancy.storage_config import parse_storage_config
from vertexflow.testing.seaweedfs import SeaweedFS
from vertexflow.testing.yandex_disk import YandexDiskEmulator, running_emulator

TOKEN = "tenancy-token"
_ids = itertools.count()


@pytest.fixture(scope="session")
def seaweed2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A second S3 server with other credentials (the "other MinIO" of a migration)."""
    with SeaweedFS(tmp_path_factory.mktemp("seaweedfs2"), access_key="second-key",
                   secret_key="second-secret-key") as server:
        yield server


@pytest.fixture
def bucket2(seaweed2: SeaweedFS) -> Iterator[str]:
    with seaweed2.temporary_bucket(f"vf-tenancy-{os.getpid()}-{next(_ids)}") as name:
        yield name


@pytest.fixture
async def emulator() -> AsyncIterator[YandexDiskEmulator]:
    async with running_emulator(token=TOKEN) as emu:
        yield emu


def minio_conn(server: SeaweedFS, bucket: str) -> dict[str, Any]:
    """A connection in the platform's MinIO shape (host:port, access_key, secret_key)."""
    return {"type": "minio", "endpoint": server.endpoint.removeprefix("http://"), "access_key": server.access_key,
            "secret_key": server.secret_key, "bucket": bucket, "secure": False}


def make_manager(tmp_path: Path, raw: dict[str, Any]) -> StorageManager:
    """A manager over ``raw`` (storage config, written to a file) and a fresh platform database."""
    import json

    cfg = tmp_path / "storage_config.json"
    cfg.write_text(json.dumps(raw))
    return StorageManager(parse_storage_config(raw, source=str(cfg)), Registry.open(tmp_path / "platform.db"))
