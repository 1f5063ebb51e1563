"""A bandwidth limit around real backends keeps what the engine does without one.

Against the SeaweedFS the suite starts, read back with boto3: a local source
behind a limit is still a local source (its large files are hashed before a
multipart upload, so the object carries its SHA-256), and a resumed upload is
charged only for the parts it sends.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from vertexflow.backends.local import LocalBackend
from vertexflow.backends.s3 import S3Backend
from vertexflow.middleware.wrap import wrap
from vertexflow.ops.copy import CopyJob, CopyOptions
from vertexflow.ops.sync import SyncJob, SyncOptions
from vertexflow.retry import RetryPolicy
from vertexflow.state.journal import Journal
from vertexflow.testing.seaweedfs import SeaweedFS
from vertexflow.throttle import Bandwidth

from ..ops.test_resume_s3 import VanishingProxy, file_of

pytestmark = pytest.mark.s3

MiB = 1024 * 1024
PART = 5 * MiB


def s3(seaweed: SeaweedFS, bucket: str, prefix: str, *, port: int | None = None) -> S3Backend:
    endpoint = f"http://127.0.0.1:{port}" if port else seaweed.endpoint
    return S3Backend(bucket, prefix, endpoint_url=endpoint, region=seaweed.region,
                     access_key_id=seaweed.access_key, secret_access_key=seaweed.secret_key,
                     part_size=PART, multipart_threshold=PART)


@pytest.mark.parametrize("limit", [{"both": "200M"}, {"both": "off"}, {"down": "200M"}, {"up": "200M"}])
async def test_a_throttled_multipart_upload_keeps_its_whole_object_sha256(
        tmp_path: Path, seaweed: SeaweedFS, s3_bucket: str, limit: dict[str, str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(12 * MiB)  # over the engine's large-object size and the part size: multipart
    (src / "big.bin").write_bytes(data)
    bandwidth = Bandwidth.from_options(limit.get("both"), limit.get("up"), limit.get("down"))
    async with LocalBackend(src) as local, s3(seaweed, s3_bucket, "p") as remote:
        source = wrap(local, bandwidth=bandwidth)
        assert source.features.local_path  # a limit keeps keys and bytes: still a local source
        stats = await CopyJob(source, wrap(remote, bandwidth=bandwidth)).run()
    assert stats.done_objects == 1 and stats.failed_objects == 0
    head = seaweed.boto3_client().head_object(Bucket=s3_bucket, Key="p/big.bin")
    assert head["Metadata"].get("sha256") == hashlib.sha256(data).hexdigest()


async def test_a_resumed_throttled_upload_is_charged_only_for_the_parts_it_sends(
        tmp_path: Path, seaweed: SeaweedFS, s3_bucket: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    size = 64 * MiB
    digest = file_of(src / "big.bin", size)
    options = SyncOptions(copy=CopyOptions(retry=RetryPolicy(attempts=1)))
    proxy = VanishingProxy(int(seaweed.endpoint.rsplit(":", 1)[1]))
    await proxy.start()

    async def run(journal: Journal, dst: Any) -> Any:
        async with LocalBackend(src) as s:
            return await SyncJob(s, dst, journal, src_spec=str(src), dst_spec=f"s3://{s3_bucket}/o",
                                 options=options).run()

    async def cut_off_midway() -> None:
        while proxy.forwarded < size // 2:
            await asyncio.sleep(0.005)
        await proxy.vanish()

    async with await Journal.open(tmp_path / "journal.db") as journal:
        first_dst = s3(seaweed, s3_bucket, "o", port=proxy.port)
        async with first_dst, asyncio.TaskGroup() as tg:
            cutter = tg.create_task(cut_off_midway())
            first = await run(journal, first_dst)
            cutter.cancel()
        assert first.failed_objects == 1
        saved = await journal.get_upload(first_dst.describe(), "big.bin")
        assert saved is not None and len(saved["parts"]) >= 2
        already = sum(p["size"] for p in saved["parts"])

        await proxy.start()
        bandwidth = Bandwidth.from_options(up="1G")
        assert bandwidth is not None and bandwidth.up is not None
        async with s3(seaweed, s3_bucket, "o", port=proxy.port) as dst:
            second = await run(journal, wrap(dst, bandwidth=bandwidth))
        assert second.done_objects == 1 and second.failed_objects == 0
        # the parts the server already had were read and hashed, not sent: not charged
        assert bandwidth.up.passed == size - already
    await proxy.vanish()
    raw = seaweed.boto3_client()
    h = hashlib.sha256()
    for chunk in raw.get_object(Bucket=s3_bucket, Key="o/big.bin")["Body"].iter_chunks(8 * MiB):
        h.update(chunk)
    assert h.hexdigest() == digest
