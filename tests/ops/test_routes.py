"""Each object takes a named route, and a route that cannot serve falls back to streaming.

Against the suite's SeaweedFS, read back with boto3. The refusing server-side
copy is a wrapping backend (fault injection around the real one), never a
patched client.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from vertexflow.backends.base import Backend
from vertexflow.backends.local import LocalBackend
from vertexflow.backends.s3 import S3Backend
from vertexflow.errors import CantCopy
from vertexflow.middleware.base import BackendWrapper
from vertexflow.model import ObjectInfo
from vertexflow.ops.copy import CopyJob
from vertexflow.testing.seaweedfs import SeaweedFS

MiB = 1024 * 1024


class RefusesServerCopy(BackendWrapper):
    """A store whose server declines to copy: the engine must stream instead."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.refused = 0

    async def server_copy(self, source: Backend, src: ObjectInfo, dst_key: str) -> ObjectInfo:
        self.refused += 1
        raise CantCopy("server-side copy not implemented here", backend=self.describe(), key=dst_key)


def s3(seaweed: SeaweedFS, bucket: str, prefix: str) -> S3Backend:
    return S3Backend(bucket, prefix, endpoint_url=seaweed.endpoint, region=seaweed.region,
                     access_key_id=seaweed.access_key, secret_access_key=seaweed.secret_key)


async def test_local_copies_take_the_local_routes(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "small.txt").write_bytes(b"small")
    (tmp_path / "src" / "big.bin").write_bytes(os.urandom(9 * MiB))  # over the small-file size: one by one
    async with LocalBackend(tmp_path / "src") as src, LocalBackend(tmp_path / "dst") as dst:
        stats = await CopyJob(src, dst).run()
    assert dict(stats.routes) == {"local_batch": 1, "local_file": 1}
    assert stats.summary()["routes"] == {"local_batch": 1, "local_file": 1}


@pytest.mark.s3
async def test_server_side_copy_and_its_fallback_to_streaming(seaweed: SeaweedFS, s3_bucket: str) -> None:
    raw = seaweed.boto3_client()
    blobs = {f"a/{i}.bin": os.urandom(100_000 + i) for i in range(3)}
    for key, data in blobs.items():
        raw.put_object(Bucket=s3_bucket, Key=f"src/{key}", Body=data)

    async with s3(seaweed, s3_bucket, "src") as src, s3(seaweed, s3_bucket, "one") as dst:
        stats = await CopyJob(src, dst).run()
    assert dict(stats.routes) == {"server_side": 3} and stats.server_side_copies == 3

    async with s3(seaweed, s3_bucket, "src") as src, s3(seaweed, s3_bucket, "two") as inner:
        dst = RefusesServerCopy(inner)
        assert dst.features.server_side_copy and dst.same_store(src)  # the route is chosen...
        stats = await CopyJob(src, dst).run()
    assert dst.refused == 3  # ...refused for each object, which then streams
    assert dict(stats.routes) == {"streamed": 3} and stats.failed_objects == 0
    for key, data in blobs.items():
        got = raw.get_object(Bucket=s3_bucket, Key=f"two/{key}")["Body"].read()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


@pytest.mark.s3
async def test_downloads_read_small_objects_whole_and_stream_large_ones(tmp_path: Path, seaweed: SeaweedFS,
                                                                       s3_bucket: str) -> None:
    raw = seaweed.boto3_client()
    small, large = os.urandom(10_000), os.urandom(9 * MiB)
    raw.put_object(Bucket=s3_bucket, Key="d/small.bin", Body=small)
    raw.put_object(Bucket=s3_bucket, Key="d/large.bin", Body=large)
    async with s3(seaweed, s3_bucket, "d") as src, LocalBackend(tmp_path / "out") as dst:
        stats = await CopyJob(src, dst).run()
    assert dict(stats.routes) == {"whole_read": 1, "streamed": 1}
    assert (tmp_path / "out" / "small.bin").read_bytes() == small
    assert (tmp_path / "out" / "large.bin").read_bytes() == large


def test_a_server_that_will_not_copy_means_cant_copy_only_for_copies() -> None:
    import botocore.exceptions as bce

    from vertexflow.backends.s3.errors import translate_error

    answer = {"Error": {"Code": "NotImplemented", "Message": "A header you provided implies functionality "
                                                               "that is not implemented"},
              "ResponseMetadata": {"HTTPStatusCode": 501}}
    for op, expected in (("CopyObject", "CantCopy"), ("UploadPartCopy", "CantCopy"), ("PutObject", "TransientError")):
        exc = translate_error(bce.ClientError(answer, op), backend="s3://b", endpoint="http://127.0.0.1:1",
                              key="k", op=op)
        assert type(exc).__name__ == expected, op
