"""verify counts its progress as it goes: the source's objects and bytes as totals, each object checked,
its bytes as both sides are read (an S3 side streams), and a fix as phases of their own."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import boto3
from botocore.config import Config

from vertexflow.backends.local import LocalBackend
from vertexflow.backends.s3 import S3Backend
from vertexflow.ops.verify import verify_and_fix
from vertexflow.pipeline.stats import JobStats
from vertexflow.testing.seaweedfs import SeaweedFS

KiB = 1024


def tree(root: Path, sizes: dict[str, int], seed: int = 0) -> int:
    for name, size in sizes.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(bytes((seed + i) % 251 for i in range(size)))
    return sum(sizes.values())


async def test_a_check_counts_every_source_object_and_byte(tmp_path: Path) -> None:
    sizes = {f"d/f{i}.bin": 1000 * (i + 1) for i in range(10)}
    total = tree(tmp_path / "src", sizes)
    tree(tmp_path / "dst", {k: v for k, v in sizes.items() if k != "d/f3.bin"})  # one missing
    (tmp_path / "dst" / "d" / "f5.bin").write_bytes(b"x" * sizes["d/f5.bin"])   # one different
    (tmp_path / "dst" / "extra.bin").write_bytes(b"e")                           # one extra: not the source's
    stats = JobStats()
    result = await verify_and_fix(LocalBackend(tmp_path / "src"), LocalBackend(tmp_path / "dst"), stats=stats)
    assert (result["missing"], result["different"], result["extra"]) == (1, 1, 1)
    assert (stats.listed_objects, stats.listed_bytes, stats.listing_done) == (10, total, True)
    assert (stats.done_objects, stats.skipped_objects, stats.moved_bytes, stats.progress_bytes) == (10, 0, total, total)

    # a sample: the objects left out count as skipped, their bytes as checked
    stats = JobStats()
    await verify_and_fix(LocalBackend(tmp_path / "src"), LocalBackend(tmp_path / "dst"), sample=0.5, stats=stats)
    assert stats.skipped_objects > 0 and stats.done_objects + stats.skipped_objects == 10
    assert stats.moved_bytes == total

    # a fix: the copy, then the second look, each counted from zero
    stats = JobStats(phase="comparing")
    result = await verify_and_fix(LocalBackend(tmp_path / "src"), LocalBackend(tmp_path / "dst"), fix=True,
                                  one_way=True, stats=stats)
    assert result["ok"] and result["fixed"] == 2
    assert stats.phase == "verifying again"
    assert (stats.listed_objects, stats.done_objects, stats.moved_bytes) == (10, 10, total)


async def test_an_s3_side_counts_as_it_streams(seaweed: SeaweedFS, s3_bucket: str) -> None:
    """Read whole on both sides (the one digest a single-part upload and a multipart one of the same bytes could
    share is none: an MD5 ETag, a composite one; no checksums sent), the bytes count as they stream."""
    bodies = {f"o{i}.bin": os.urandom(5 * 1024 * KiB + 1000 * i) for i in range(2)}
    client = boto3.client("s3", endpoint_url=seaweed.endpoint, aws_access_key_id=seaweed.access_key,
                          aws_secret_access_key=seaweed.secret_key, region_name=seaweed.region,
                          config=Config(request_checksum_calculation="when_required"))
    for key, body in bodies.items():
        client.put_object(Bucket=s3_bucket, Key=f"single/{key}", Body=body)
        upload = client.create_multipart_upload(Bucket=s3_bucket, Key=f"multi/{key}")["UploadId"]
        parts = [{"PartNumber": n, "ETag": client.upload_part(Bucket=s3_bucket, Key=f"multi/{key}", UploadId=upload,
                                                              PartNumber=n, Body=piece)["ETag"]}
                 for n, piece in ((1, body[:5 * 1024 * KiB]), (2, body[5 * 1024 * KiB:]))]
        client.complete_multipart_upload(Bucket=s3_bucket, Key=f"multi/{key}", UploadId=upload,
                                         MultipartUpload={"Parts": parts})
    total = sum(len(b) for b in bodies.values())
    stats, seen = JobStats(), []

    async def watch() -> None:
        while True:
            seen.append(stats.moved_bytes)
            await anyio.sleep(0)

    def side(prefix: str) -> S3Backend:
        return S3Backend(s3_bucket, prefix, endpoint_url=seaweed.endpoint, region=seaweed.region,
                         access_key_id=seaweed.access_key, secret_access_key=seaweed.secret_key)

    async with side("single") as src, side("multi") as dst, anyio.create_task_group() as tg:
        tg.start_soon(watch)
        result = await verify_and_fix(src, dst, workers=1, stats=stats)
        tg.cancel_scope.cancel()
    assert result["ok"] and result["hashed_both_sides"] == 2, result
    assert seen == sorted(seen), "progress went backwards"
    assert stats.moved_bytes == total and stats.done_objects == 2
    # while an object streamed, its bytes counted: values between whole objects were seen
    whole = {sum(len(bodies[f"o{i}.bin"]) for i in range(n)) for n in range(3)}
    assert any(v not in whole for v in seen), "bytes counted only once each object was checked"
