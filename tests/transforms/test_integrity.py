"""Corrupt, missing and torn pieces: clear errors naming the object (and part), never wrong data."""

from __future__ import annotations

from typing import Any

import os
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path

import pytest

from vertexflow.backends.base import UploadCheckpoint
from vertexflow.backends.local import TMP_PREFIX, LocalBackend
from vertexflow.errors import CorruptData, IntegrityError, NotFound, TransientError
from vertexflow.middleware.base import BackendWrapper
from vertexflow.middleware.stages import TransformedBackend
from vertexflow.model import BodyFactory, ObjectInfo, body_from_bytes
from vertexflow.ops.copy import CopyJob, CopyOptions
from vertexflow.transforms.chunking import Manifest

from .helpers import CHUNK, FAST_RETRY, copy_all, info, make_stage_tree, reader_for, stages_for, stored_keys


async def store_tree(tmp_path: Path, order: str) -> tuple[dict[str, bytes], Path]:
    files = make_stage_tree(tmp_path / "src")
    stored = tmp_path / "stored"
    await copy_all(LocalBackend(tmp_path / "src"), TransformedBackend(LocalBackend(stored), stages_for(order)))
    return files, stored


async def copy_back(tmp_path: Path, order: str) -> CopyJob:
    job = CopyJob(reader_for(LocalBackend(tmp_path / "stored"), stages_for(order)), LocalBackend(tmp_path / "back"),
                  CopyOptions(retry=FAST_RETRY))
    await job.run()
    return job


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x40
    path.write_bytes(bytes(data))


def failure(job: CopyJob, key: str) -> tuple[str, str]:
    found = [(f.reason, f.message) for f in job.stats.failures if f.key == key]
    assert found, job.stats.failures
    return found[0]


def assert_not_written(tmp_path: Path, key: str) -> None:
    assert not (tmp_path / "back" / key).exists()
    assert not list((tmp_path / "back").rglob(f"{TMP_PREFIX}*"))


def part_file(stored: Path, folder: str, index: int) -> Path:
    manifest = Manifest.from_json((stored / folder / "manifest.json").read_bytes())
    return stored / folder / manifest.parts[index].key


async def test_corrupt_part_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    files, stored = await store_tree(tmp_path, "chunk")
    path = part_file(stored, "rand.bin.vfchunk", 2)
    flip_byte(path)
    job = await copy_back(tmp_path, "chunk")
    reason, message = failure(job, "rand.bin")
    assert reason == "corrupt"
    assert "part 3 of 4" in message and path.name in message and "rand.bin" in message
    assert_not_written(tmp_path, "rand.bin")
    assert job.stats.done_objects == len(files) - 1  # every other object came back
    assert job.stats.retries == 0  # corrupt stored bytes are not worth another read


async def test_missing_part_is_named(tmp_path: Path) -> None:
    _, stored = await store_tree(tmp_path, "chunk")
    path = part_file(stored, "text/notes.txt.vfchunk", 0)
    path.unlink()
    job = await copy_back(tmp_path, "chunk")
    reason, message = failure(job, "text/notes.txt")
    assert reason == "not_found" and "part 1 of 7" in message and "is missing" in message and path.name in message
    assert_not_written(tmp_path, "text/notes.txt")


@pytest.mark.parametrize("codec,suffix", [("zstd:3", ".zst"), ("gzip:6", ".gz")])
async def test_one_corrupt_byte_of_a_compressed_object(tmp_path: Path, codec: str, suffix: str) -> None:
    files = make_stage_tree(tmp_path / "src")
    stored = tmp_path / "stored"
    stages = stages_for("compress", codec=codec)
    await copy_all(LocalBackend(tmp_path / "src"), TransformedBackend(LocalBackend(stored), stages))
    flip_byte(stored / f"text/notes.txt{suffix}")
    job = CopyJob(reader_for(LocalBackend(stored), stages), LocalBackend(tmp_path / "back"), CopyOptions())
    await job.run()
    reason, message = failure(job, "text/notes.txt")
    assert reason == "corrupt" and f"notes.txt{suffix}" in message
    assert_not_written(tmp_path, "text/notes.txt")
    assert job.stats.done_objects == len(files) - 1


async def test_truncated_compressed_object(tmp_path: Path) -> None:
    _, stored = await store_tree(tmp_path, "compress")
    path = stored / "text/repetitive.log.zst"
    path.write_bytes(path.read_bytes()[:-3])
    reason, message = failure(await copy_back(tmp_path, "compress"), "text/repetitive.log")
    assert reason == "corrupt" and "truncated" in message


async def test_corrupt_compressed_part(tmp_path: Path) -> None:
    _, stored = await store_tree(tmp_path, "chunk,compress")
    flip_byte(part_file(stored, "text/notes.txt.vfchunk", 1))
    reason, message = failure(await copy_back(tmp_path, "chunk,compress"), "text/notes.txt")
    assert reason == "corrupt" and "part 2 of 7" in message


async def test_corrupt_manifest(tmp_path: Path) -> None:
    _, stored = await store_tree(tmp_path, "compress,chunk")
    (stored / "text/notes.txt.zst.vfchunk/manifest.json").write_bytes(b'{"format": "something else"}')
    reason, message = failure(await copy_back(tmp_path, "compress,chunk"), "text/notes.txt")
    assert reason == "corrupt" and "not a vertexflow chunk manifest" in message


class BreaksMidUpload(BackendWrapper):
    """The first put of each key that ``match`` picks reads half its body, then fails with a 503."""

    def __init__(self, inner: LocalBackend, match: Callable[[str], bool]) -> None:
        super().__init__(inner)
        self.match = match
        self.calls: dict[str, int] = {}

    async def put(self, info: ObjectInfo, body: BodyFactory, *,
                  checkpoint: UploadCheckpoint | None = None, pace: Any = None) -> ObjectInfo:
        n = self.calls[info.key] = self.calls.get(info.key, 0) + 1
        if n == 1 and self.match(info.key):
            read = 0
            async with aclosing(body()) as chunks:  # type: ignore[type-var]
                async for chunk in chunks:
                    read += len(chunk)
                    if read >= CHUNK // 2:
                        break
            raise TransientError("injected 503 halfway through the body", backend="test", key=info.key)
        return await self.inner.put(info, body)


@pytest.mark.parametrize("order", ["chunk", "compress,chunk", "chunk,compress"])
async def test_a_part_that_fails_halfway_is_sent_again(tmp_path: Path, order: str) -> None:
    data = os.urandom(5 * CHUNK + 11)
    store = BreaksMidUpload(LocalBackend(tmp_path / "stored"), lambda k: "-0000" in k and not k.endswith("0"))
    spill = tmp_path / "spill"
    spill.mkdir()
    view = TransformedBackend(store, stages_for(order, spill_dir=str(spill)))
    await view.put(info("obj", len(data)), body_from_bytes(data))
    retried = [k for k, n in store.calls.items() if n == 2]
    assert len(retried) >= 4 and all(".vfchunk/" in k for k in retried)  # each part but the first, once more
    async with TransformedBackend(LocalBackend(tmp_path / "stored"), stages_for(order)).open("obj") as chunks:
        assert b"".join([c async for c in chunks]) == data
    assert list(spill.iterdir()) == []  # spilled parts are removed


async def test_a_failed_upload_leaves_the_old_object_whole(tmp_path: Path) -> None:
    stored = LocalBackend(tmp_path / "stored")
    old = os.urandom(3 * CHUNK)
    await TransformedBackend(stored, stages_for("chunk")).put(info("obj", len(old)), body_from_bytes(old))

    class AlwaysFailsPart2(BreaksMidUpload):
        async def put(self, info: ObjectInfo, body: BodyFactory, *,
                      checkpoint: UploadCheckpoint | None = None, pace: Any = None) -> ObjectInfo:
            if info.key.endswith("-00001"):
                raise TransientError("injected 503", backend="test", key=info.key)
            return await self.inner.put(info, body)

    new = os.urandom(4 * CHUNK)
    broken = TransformedBackend(AlwaysFailsPart2(stored, lambda k: False), stages_for("chunk"))
    with pytest.raises(TransientError):
        await broken.put(info("obj", len(new)), body_from_bytes(new))
    async with TransformedBackend(stored, stages_for("chunk")).open("obj") as chunks:
        assert b"".join([c async for c in chunks]) == old
    # the next good upload clears what the failed one left
    await TransformedBackend(stored, stages_for("chunk")).put(info("obj", len(new)), body_from_bytes(new))
    assert len(await stored_keys(stored)) == 4 + 1


@pytest.mark.parametrize("order", ["compress", "chunk", "compress,chunk"])
async def test_content_differing_from_the_sources_sha256_commits_nothing(tmp_path: Path, order: str) -> None:
    (tmp_path / "stored").mkdir()
    stored = LocalBackend(tmp_path / "stored")
    data = os.urandom(300_000)
    bad = ObjectInfo(key="obj", size=len(data), hashes={"sha256": "0" * 64})
    with pytest.raises(IntegrityError):
        await TransformedBackend(stored, stages_for(order)).put(bad, body_from_bytes(data))
    assert not any(k.endswith(("obj.zst", "manifest.json")) for k in await stored_keys(stored))


async def test_missing_object_in_every_form(tmp_path: Path) -> None:
    (tmp_path / "stored").mkdir()
    view = TransformedBackend(LocalBackend(tmp_path / "stored"), stages_for("compress,chunk"))
    with pytest.raises(NotFound, match="no such object in any stored form"):
        await view.stat("nothing")


async def test_corrupt_data_is_not_retryable() -> None:
    assert not CorruptData("x").retryable and CorruptData("x").reason == "corrupt"
