"""What a multipart upload holds at once: its parts in flight, not its whole head or an extra part.

docs/memory.md counts ``upload_concurrency`` parts per large upload (the one being read among
them) and the stream chunks one part is joined from. Python's own allocation tracer measures it here,
against the real server: exact for bytes objects, blind to the allocator's free lists (which the
benchmark's RSS rows include).
"""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import AsyncIterator

import pytest

from vertexflow.backends.s3 import S3Backend
from vertexflow.model import ObjectInfo
from vertexflow.testing.seaweedfs import SeaweedFS

pytestmark = pytest.mark.s3

MiB = 1024 * 1024
CHUNK = 4 * MiB  # what a local read hands on (vertexflow.backends.local.STREAM_BUFFER)
PART = 8 * MiB
CONCURRENCY = 4
SIZE = 96 * MiB


def _chunk(i: int) -> bytes:
    return hashlib.shake_256(i.to_bytes(4, "big")).digest(CHUNK)


async def test_a_large_upload_holds_its_parts_in_flight_and_no_more(seaweed: SeaweedFS, s3_bucket: str) -> None:
    async def body() -> AsyncIterator[bytes]:
        for i in range(SIZE // CHUNK):
            yield _chunk(i)  # made as it is read: the source holds nothing

    whole = hashlib.sha256()
    for i in range(SIZE // CHUNK):
        whole.update(_chunk(i))
    async with S3Backend(s3_bucket, "mem", endpoint_url=seaweed.endpoint, region=seaweed.region,
                         access_key_id=seaweed.access_key, secret_access_key=seaweed.secret_key,
                         part_size=PART, multipart_threshold=PART, upload_concurrency=CONCURRENCY) as b:
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            await b.put(ObjectInfo(key="big.bin", size=SIZE), body)
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    # the parts in flight (the one being read among them), the two chunks a part is joined from, and
    # 2 MiB for the rest (requests, answers, the event loop)
    bound = CONCURRENCY * PART + 2 * CHUNK + 2 * MiB
    assert peak <= bound, f"peak {peak / MiB:.1f} MiB traced, bound {bound / MiB:.0f} MiB"
    got = seaweed.boto3_client().get_object(Bucket=s3_bucket, Key="mem/big.bin")["Body"].read()
    assert hashlib.sha256(got).hexdigest() == whole.hexdigest()
