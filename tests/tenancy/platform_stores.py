"""A platform of four companies spread over local disk, two SeaweedFS servers and the Yandex.Disk emulator.

Used by the platform backup tests. :class:`Stores` is one set of places (a
local folder, a bucket on each server, folders of the emulator) and the
storage config pointing at them; a second, empty :class:`Stores` is where a
restore goes. Each company's files are read back with an independent client
of its store (plain file reads, boto3, yadisk), never through vertexflow.

Routes: ``acme`` on local disk (the content types' own ``storage_type``),
``beta`` on connection ``s3a`` (the first server), ``gamma`` on ``s3b`` (the
second server, other credentials), ``delta`` on the platform's Yandex.Disk
(``yandex_disk.base_paths``); connection ``disk`` is a folder of the same
emulator with a root of its own (where a restore onto one connection goes).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import random
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vertexflow.tenancy import StorageManager
from vertexflow.tenancy.registry import Registry
from vertexflow.testing.seaweedfs import SeaweedFS

from .conftest import minio_conn

TOKEN = "platform-backup-token"
CONTENT_TYPES = ("portraits", "videos")
CATEGORIES = ("c0", "c1", "archive")
#: company -> the route it has (the name a backup records)
ROUTES = {"acme": "local", "beta": "s3a", "gamma": "s3b", "delta": "yandex_disk"}
KiB = 1024
_ids = itertools.count()


@dataclass
class Stores:
    """Empty places on every kind of store, and the storage config naming them."""

    root: Path
    seaweed: SeaweedFS
    seaweed2: SeaweedFS
    disk_url: str
    bucket_a: str
    bucket_b: str
    #: the emulator folder everything of this set lies under (a set of its own on the shared emulator)
    disk_prefix: str
    stack: ExitStack = field(default_factory=ExitStack)

    @classmethod
    def make(cls, root: Path, seaweed: SeaweedFS, seaweed2: SeaweedFS, disk_url: str, stack: ExitStack) -> Stores:
        n = next(_ids)
        a = stack.enter_context(seaweed.temporary_bucket(f"vf-pb-{os.getpid()}-{n}-a"))
        b = stack.enter_context(seaweed2.temporary_bucket(f"vf-pb-{os.getpid()}-{n}-b"))
        root.mkdir(parents=True, exist_ok=True)
        return cls(root, seaweed, seaweed2, disk_url, a, b, f"/pb-{os.getpid()}-{n}")

    @property
    def cfg(self) -> Path:
        return self.root / "storage_config.json"

    @property
    def local_base(self) -> Path:
        return self.root / "storage"

    def yandex_base(self, ct: str) -> str:
        return f"{self.disk_prefix}/ar/{ct}"

    @property
    def disk_root(self) -> str:
        return f"{self.disk_prefix}/platform"

    def config(self, content_types: tuple[str, ...] = CONTENT_TYPES) -> dict[str, Any]:
        return {
            **{ct: {"storage_type": "local"} for ct in content_types},
            "local": {"base_path": "storage"},
            "yandex_disk": {"enabled": True, "token": TOKEN, "base_url": self.disk_url,
                            "base_paths": {ct: self.yandex_base(ct) for ct in content_types}},
            "backup": {"schedule": "0 3 * * *", "keep": 2},
            "connections": {
                "s3a": minio_conn(self.seaweed, self.bucket_a),
                "s3b": minio_conn(self.seaweed2, self.bucket_b),
                "disk": {"type": "yandex_disk", "token": TOKEN, "base_url": self.disk_url, "root": self.disk_root},
            },
        }

    def write_config(self, content_types: tuple[str, ...] = CONTENT_TYPES) -> Path:
        self.cfg.write_text(json.dumps(self.config(content_types)))
        return self.cfg

    # -- independent reads: {key: bytes} of the files, and the folders, of one company's content type
    async def read(self, route: str, ct: str, folder: str) -> tuple[dict[str, bytes], set[str]]:
        if route == "local":
            return local_tree(self.local_base / ct / folder)
        if route in ("s3a", "s3b"):
            server, bucket = (self.seaweed, self.bucket_a) if route == "s3a" else (self.seaweed2, self.bucket_b)
            return s3_tree(server.boto3_client(), bucket, f"{ct}/{folder}/"), set()
        base = self.yandex_base(ct) if route == "yandex_disk" else f"{self.disk_root}/{ct}"
        return await yandex_tree(self.disk_url, f"{base}/{folder}")


def local_tree(base: Path) -> tuple[dict[str, bytes], set[str]]:
    if not base.exists():
        return {}, set()
    files = {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}
    dirs = {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_dir()}
    return files, dirs


def s3_tree(client: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", ()):
            out[o["Key"].removeprefix(prefix)] = client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return out


async def yandex_tree(url: str, path: str) -> tuple[dict[str, bytes], set[str]]:
    """Files and folders under ``path`` of the emulator at ``url``, read with the yadisk client."""
    import yadisk

    saved, yadisk.settings.BASE_API_URL = yadisk.settings.BASE_API_URL, url.removesuffix("/v1/disk")
    files: dict[str, bytes] = {}
    dirs: set[str] = set()
    try:
        async with yadisk.AsyncClient(token=TOKEN, session="aiohttp") as client:
            if not await client.exists(path):
                return {}, set()
            todo = [""]
            while todo:  # bounded: one listing per folder of a small tree
                rel = todo.pop()
                async for item in client.listdir(f"{path}/{rel}".rstrip("/"), limit=1000):
                    name = f"{rel}/{item.name}" if rel else str(item.name)
                    if item.type == "dir":
                        dirs.add(name)
                        todo.append(name)
                    else:
                        buf = io.BytesIO()
                        await client.download(f"{path}/{name}", buf)
                        files[name] = buf.getvalue()
    finally:
        yadisk.settings.BASE_API_URL = saved
    return files, dirs


def initial_files(folder: str, ct: str, seed: int, big: int = 3) -> dict[str, bytes]:
    """A company's files of one content type: a few incompressible ones and small text ones."""
    rng = random.Random(f"{folder}-{ct}-{seed}")
    files = {f"c0/Image/big{i}.bin": rng.randbytes(24 * KiB + i) for i in range(big)}
    files["c1/QR/note.txt"] = f"{folder} {ct} note\n".encode() * 20
    files["archive/nft_markers/m.dat"] = rng.randbytes(700)
    files["c0/Image/ünïcode name.txt"] = "привет".encode()
    return files


async def build_platform(stores: Stores, db: Path, *, big: int = 3) -> dict[str, int]:
    """The four companies, provisioned and holding :func:`initial_files`; returns their ids."""
    stores.write_config()
    with Registry.open(db) as reg:
        s3a = reg.add_connection("s3a", "minio")
        s3b = reg.add_connection("s3b", "minio")
        ids = {"acme": reg.add_company("acme").id,
               "beta": reg.add_company("beta", storage_type="minio", storage_connection_id=s3a.id).id,
               "gamma": reg.add_company("gamma", storage_type="minio", storage_connection_id=s3b.id).id,
               "delta": reg.add_company("delta", storage_type="yandex_disk").id}
    async with StorageManager.open(stores.cfg, db) as m:
        for folder, cid in ids.items():
            await m.provision_company_storage(cid, list(CATEGORIES))
            for ct in CONTENT_TYPES:
                for key, data in initial_files(folder, ct, 1, big).items():
                    await m.save_file(ct, key, data, company_id=cid)
    return ids


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

