"""Fixtures for backup tests: stores of every kind (local disk, SeaweedFS S3, the Yandex.Disk emulator)."""

from __future__ import annotations

import hashlib
import random
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from vertexflow.backends.base import Backend
from vertexflow.backends.local import LocalBackend
from vertexflow.model import ObjectInfo, body_from_bytes, read_all

KiB = 1024


def tree_files(seed: int = 3) -> dict[str, bytes]:
    """A small tree with the awkward cases: empty, unicode, a >100-char path, nested, incompressible."""
    rng = random.Random(seed)
    long_dir = "d" * 60 + "/" + "e" * 60
    files = {
        "empty.txt": b"",
        "readme.md": b"# backup me\n" * 50,
        "docs/notes.txt": b"some words to compress " * 3000,
        "docs/документ + #1.txt": "привет\n".encode() * 500,
        f"{long_dir}/deep name.bin": rng.randbytes(5 * KiB),
        "media/rand.bin": rng.randbytes(180 * KiB + 3),
        "media/exact.bin": rng.randbytes(64 * KiB),
    }
    for i in range(12):
        files[f"many/f{i:03d}.dat"] = rng.randbytes(rng.randint(0, 3 * KiB))
    return files


async def fill(backend: Backend, files: dict[str, bytes]) -> None:
    for key, data in files.items():
        await backend.put(ObjectInfo(key=key, size=len(data)), body_from_bytes(data))


async def contents(backend: Backend) -> dict[str, str]:
    """``{key: sha256}`` of everything in ``backend``, read back through ``open``."""
    out = {}
    async for info in backend.list():
        async with backend.open(info.key) as chunks:
            out[info.key] = hashlib.sha256(await read_all(chunks)).hexdigest()
    return out


def digests(files: dict[str, bytes]) -> dict[str, str]:
    return {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}


def make_db(path: Path, rows: int = 500) -> None:
    con = sqlite3.connect(path)
    con.execute("create table items(id integer primary key, name text, blob blob)")
    con.executemany("insert into items(name, blob) values(?, ?)",
                    [(f"item {i}", bytes([i % 256]) * 100) for i in range(rows)])
    con.commit()
    con.close()


def db_rows(path: Path | str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute("select * from items order by id").fetchall()
    finally:
        con.close()


class Stores:
    """Backends of each kind, closed at the end of the test; one emulator and one bucket per test."""

    def __init__(self, request: pytest.FixtureRequest, tmp: Path, stack: AsyncExitStack) -> None:
        self.request, self.tmp, self.stack = request, tmp, stack
        self.emulator = None
        self.bucket: str | None = None

    async def get(self, kind: str, root: str) -> Backend:
        backend: Backend
        if kind == "local":
            backend = LocalBackend(self.tmp / root)
        elif kind == "s3":
            from vertexflow.backends.s3 import S3Backend

            seaweed = self.request.getfixturevalue("seaweed")
            self.bucket = self.request.getfixturevalue("s3_bucket")
            backend = S3Backend(self.bucket, root, endpoint_url=seaweed.endpoint, region=seaweed.region,
                                access_key_id=seaweed.access_key, secret_access_key=seaweed.secret_key,
                                part_size=5 * 1024 * 1024, multipart_threshold=5 * 1024 * 1024)
        else:
            from vertexflow.backends.yandex import YandexDiskBackend
            from vertexflow.testing.yandex_disk import running_emulator

            if self.emulator is None:
                self.emulator = await self.stack.enter_async_context(running_emulator())
            backend = YandexDiskBackend("/" + root, token="t", base_url=self.emulator.base_url)
        await self.stack.enter_async_context(backend)
        return backend


@pytest.fixture
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    async with AsyncExitStack() as stack:
        yield Stores(request, tmp_path, stack)
