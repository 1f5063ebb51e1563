"""An object that changes or vanishes between its listing and its read: left out and named, or the backup fails.

A platform backup archives each company's files while the platform writes.
``archive_source`` with a ``changed`` callback leaves such an object out
(nothing of its member is in the archive: its header is written only once
the read of the listed version has begun) and names it; without one, as in
``backup create --type storage``, the backup fails. The change is made with
an independent client (boto3, plain file writes) at a fixed point: right
after the listing gave the object, before the archive reads it.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from vertexflow.backends.base import Backend
from vertexflow.backends.local import LocalBackend
from vertexflow.errors import SourceChanged
from vertexflow.middleware.base import BackendWrapper
from vertexflow.model import ObjectInfo
from vertexflow.ops.backup.archive import archive_source, finish
from vertexflow.ops.backup.create import store_archive
from vertexflow.transforms.compression import parse_codec

from .conftest import Stores, fill

FILES = {"a.txt": b"a" * 100, "b.txt": b"b" * 200, "c.txt": b"c" * 300, "d.txt": b"d" * 400}
#: larger than what is read whole: streamed into the archive, its header written once the read has begun
LARGE = {"e.bin": random.Random(5).randbytes(1024 * 1024 + 4321)}


class ChangeAfterListing(BackendWrapper):
    """The real store; ``act(key)`` runs after the listing gave ``key`` and before the reader sees it."""

    def __init__(self, inner: Backend, act: Callable[[str], None]) -> None:
        super().__init__(inner)
        self.act = act

    async def _listing(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        async for info in self.inner.list(prefix):
            self.act(info.key)
            yield info

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        return self._listing(prefix)


async def _archive(source: Backend, dest: Path, *, tolerant: bool) -> tuple[list[tuple[str, str]], Path, int]:
    changed: list[tuple[str, str]] = []

    async def producer(builder, send):  # type: ignore[no-untyped-def]
        async with send:
            await archive_source(source, builder, send, prefix="ct/acme/",
                                 changed=(lambda k, why: changed.append((k, why))) if tolerant else None)
            await finish(builder, send)

    async with LocalBackend(dest) as out:
        section, _ = await store_archive(out, "b", producer, codec=parse_codec("gzip"), chunk_size=1 << 20,
                                         source=source.describe())
    return changed, dest / "b", section.files


def _unpacked(folder: Path, into: Path) -> dict[str, bytes]:
    into.mkdir()
    subprocess.run(f"cat {folder}/storage.tar.gz.part* | gzip -dc | tar -x -C {into}", shell=True, check=True)
    check = subprocess.run(["sha256sum", "-c", str(folder / "MEMBERS.sha256")], cwd=into, capture_output=True)
    assert check.returncode == 0, check.stdout
    return {p.relative_to(into).as_posix(): p.read_bytes() for p in into.rglob("*") if p.is_file()}


@pytest.mark.s3
async def test_s3_object_replaced_or_deleted_after_listing_is_left_out_and_named(stores: Stores,
                                                                                tmp_path: Path) -> None:
    inner = await stores.get("s3", "data")
    await fill(inner, {**FILES, **LARGE})
    seaweed = stores.request.getfixturevalue("seaweed")
    client = seaweed.boto3_client()

    def act(key: str) -> None:
        if key in ("b.txt", "e.bin"):  # same size, other bytes
            client.put_object(Bucket=stores.bucket, Key=f"data/{key}", Body=bytes(len({**FILES, **LARGE}[key])))
        elif key == "c.txt":
            client.delete_object(Bucket=stores.bucket, Key=f"data/{key}")

    changed, folder, archived = await _archive(ChangeAfterListing(inner, act), tmp_path / "out", tolerant=True)
    assert changed == [("b.txt", "changed while it was read"), ("c.txt", "vanished while it was read"),
                       ("e.bin", "changed while it was read")]
    assert archived == 2
    files = _unpacked(folder, tmp_path / "x")
    assert files == {"ct/acme/a.txt": FILES["a.txt"], "ct/acme/d.txt": FILES["d.txt"]}


@pytest.mark.s3
async def test_without_the_callback_a_change_after_listing_fails_the_backup(stores: Stores, tmp_path: Path) -> None:
    inner = await stores.get("s3", "data")
    await fill(inner, FILES)
    client = stores.request.getfixturevalue("seaweed").boto3_client()

    def act(key: str) -> None:
        if key == "b.txt":
            client.put_object(Bucket=stores.bucket, Key=f"data/{key}", Body=b"B" * 200)

    with pytest.raises(SourceChanged):
        await _archive(ChangeAfterListing(inner, act), tmp_path / "out", tolerant=False)


async def test_local_file_replaced_after_listing_is_archived_whole(stores: Stores, tmp_path: Path) -> None:
    """A small local file is read whole in a batch: the version read is archived, one whole version."""
    inner = await stores.get("local", "data")
    await fill(inner, FILES)
    root = tmp_path / "data"

    def act(key: str) -> None:
        if key == "b.txt":
            (root / "b.tmp").write_bytes(b"B" * 250)
            (root / "b.tmp").replace(root / "b.txt")  # as the platform writes: whole, renamed into place
        elif key == "c.txt":
            (root / "c.txt").unlink()

    changed, folder, archived = await _archive(ChangeAfterListing(inner, act), tmp_path / "out", tolerant=True)
    assert changed == [("c.txt", "vanished while it was read")] and archived == 3
    files = _unpacked(folder, tmp_path / "x")
    assert files["ct/acme/b.txt"] == b"B" * 250
    assert hashlib.sha256(files["ct/acme/b.txt"]).hexdigest() in (folder / "MEMBERS.sha256").read_text()
