"""Whole copies through Yandex.Disk (the emulator): local, S3 and back, under faults."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from vertexflow.backends.local import LocalBackend
from vertexflow.backends.s3 import S3Backend
from vertexflow.backends.yandex import YandexDiskBackend
from vertexflow.errors import JobAborted
from vertexflow.ops.copy import CopyOptions
from vertexflow.ops.sync import SyncJob, SyncOptions
from vertexflow.ops.verify import VerifyJob
from vertexflow.retry import RetryPolicy
from vertexflow.state.journal import Journal
from vertexflow.testing.sample_tree import trees_equal
from vertexflow.testing.seaweedfs import SeaweedFS
from vertexflow.testing.yandex_disk import running_emulator

TOKEN = "scenario-token"
MiB = 1024 * 1024


def mixed_tree(root: Path, *, small: int = 1000, big: int = 2, big_size: int = 50 * MiB + 17) -> None:
    rng = random.Random(3)
    for i in range(small):
        d = root / f"компания {i % 5}" / f"cat {i % 3}" / ("Image" if i % 2 else "QR")
        d.mkdir(parents=True, exist_ok=True)
        (d / f"файл {i:04d} + #{i % 7}.bin").write_bytes(rng.randbytes(rng.randint(1, 4096)))
    (root / "videos").mkdir(parents=True, exist_ok=True)
    for i in range(big):
        (root / "videos" / f"clip {i}.mp4").write_bytes(os.urandom(big_size))


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    async with await Journal.open(tmp_path / "journal.db") as j:
        yield j


async def run_copy(journal: Journal, src, dst, **copy_kw: object):  # type: ignore[no-untyped-def]
    options = SyncOptions(copy=CopyOptions(**{"transfers": 8, **copy_kw}))  # type: ignore[arg-type]
    return await SyncJob(src, dst, journal, src_spec=src.describe(), dst_spec=dst.describe(), options=options).run()


def s3(seaweed: SeaweedFS, bucket: str, prefix: str) -> S3Backend:
    return S3Backend(bucket, prefix, endpoint_url=seaweed.endpoint, region=seaweed.region,
                     access_key_id=seaweed.access_key, secret_access_key=seaweed.secret_key)


@pytest.mark.slow
async def test_local_yandex_s3_yandex_local(tmp_path: Path, journal: Journal, seaweed: SeaweedFS,
                                           s3_bucket: str) -> None:
    mixed_tree(tmp_path / "src")
    async with running_emulator(max_file_size=2 * 1024 * MiB) as emu:
        async with YandexDiskBackend("/migr", token=TOKEN, base_url=emu.base_url) as yd, \
                LocalBackend(tmp_path / "src") as src:
            up = await run_copy(journal, src, yd)
            assert up.failed_objects == 0 and up.done_objects == 1002
            assert (await VerifyJob(src, yd).run()).ok
            async with s3(seaweed, s3_bucket, "from-yandex") as bucket:
                to_s3 = await run_copy(journal, yd, bucket)
                assert to_s3.failed_objects == 0 and to_s3.done_objects == 1002
                async with YandexDiskBackend("/from-s3", token=TOKEN, base_url=emu.base_url) as yd2:
                    back = await run_copy(journal, bucket, yd2)
                    assert back.failed_objects == 0
                    async with LocalBackend(tmp_path / "back") as local_back:
                        down = await run_copy(journal, yd2, local_back)
                        assert down.failed_objects == 0
    assert trees_equal(tmp_path / "src", tmp_path / "back") == []


@pytest.mark.slow
async def test_copy_completes_under_429_and_5xx(tmp_path: Path, journal: Journal) -> None:
    mixed_tree(tmp_path / "src", small=300, big=1, big_size=12 * MiB)
    async with running_emulator(rate_limit=0.2, error_rate=0.05, retry_after=0.05, seed=11) as emu:
        async with YandexDiskBackend("/flaky", token=TOKEN, base_url=emu.base_url) as yd, \
                LocalBackend(tmp_path / "src") as src:
            stats = await run_copy(journal, src, yd,
                                   retry=RetryPolicy(attempts=12, base_delay=0.02, max_delay=0.5, deadline=120))
            assert stats.failed_objects == 0, stats.failures[:3]
            assert stats.done_objects == 301
            assert stats.retries > 20  # about a quarter of requests failed once or more
            async with LocalBackend(tmp_path / "back") as back:
                down = await run_copy(journal, yd, back,
                                      retry=RetryPolicy(attempts=12, base_delay=0.02, max_delay=0.5, deadline=120))
                assert down.failed_objects == 0
    assert trees_equal(tmp_path / "src", tmp_path / "back") == []


async def test_copy_over_quota_fails_up_front(tmp_path: Path, journal: Journal) -> None:
    (tmp_path / "src").mkdir()
    for i in range(4):
        (tmp_path / "src" / f"f{i}").write_bytes(os.urandom(300 * 1024))
    async with running_emulator(total_space=1024 * 1024) as emu:
        async with YandexDiskBackend("/q", token=TOKEN, base_url=emu.base_url) as yd, \
                LocalBackend(tmp_path / "src") as src:
            with pytest.raises(JobAborted, match="needs 1,228,800 bytes but only"):
                await run_copy(journal, src, yd)
            assert [i async for i in yd.list()] == []  # nothing was sent
