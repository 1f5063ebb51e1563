"""Copies from S3 to local disk: ``verify`` decides whether the written bytes are hashed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from vertexflow.backends.local import LocalBackend
from vertexflow.backends.s3 import S3Backend
from vertexflow.errors import IntegrityError
from vertexflow.ops.copy import CopyJob, CopyOptions
from vertexflow.retry import NO_RETRY
from vertexflow.testing.seaweedfs import SeaweedFS

pytestmark = [pytest.mark.s3]


class Recorded:
    """Keeps what the engine says each copy stored."""

    def __init__(self) -> None:
        self.results: dict[str, object] = {}

    def done(self, src: object, result: object) -> None:
        self.results[src.key] = result  # type: ignore[attr-defined]

    def failed(self, src: object, exc: BaseException) -> None:
        raise AssertionError(f"{src}: {exc}")


def s3_source(seaweed: SeaweedFS, bucket: str) -> S3Backend:
    return S3Backend(bucket, "in", endpoint_url=seaweed.endpoint, region=seaweed.region,
                     access_key_id=seaweed.access_key, secret_access_key=seaweed.secret_key)


@pytest.mark.parametrize("verify", [True, False])
async def test_s3_to_local_hashes_what_it_writes_unless_told_not_to(tmp_path: Path, seaweed: SeaweedFS,
                                                                    s3_bucket: str, verify: bool) -> None:
    client = seaweed.boto3_client()
    bodies = {"small.bin": os.urandom(5000), "large.bin": os.urandom(3 * 1024 * 1024 + 11)}
    for key, body in bodies.items():
        client.put_object(Bucket=s3_bucket, Key=f"in/{key}", Body=body)
    src = s3_source(seaweed, s3_bucket)
    recorded = Recorded()
    async with src:
        # the small object is read whole and goes through put's one-call path, the large one
        # (past SMALL_FILE) streams
        job = CopyJob(src, LocalBackend(tmp_path / "out"), CopyOptions(verify=verify), recorder=recorded)
        await job.run()
    assert job.stats.moved_bytes == sum(len(b) for b in bodies.values())
    for key, body in bodies.items():
        assert (tmp_path / "out" / key).read_bytes() == body
        digests = recorded.results[key].hashes  # type: ignore[attr-defined]
        assert digests == ({"sha256": hashlib.sha256(body).hexdigest()} if verify else {})


class Outcomes(Recorded):
    """Keeps failures too."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: dict[str, BaseException] = {}

    def failed(self, src: object, exc: BaseException) -> None:
        self.failures[src.key] = exc  # type: ignore[attr-defined]


async def test_a_large_object_is_checked_against_the_sha256_its_stat_reports(tmp_path: Path, seaweed: SeaweedFS,
                                                                             s3_bucket: str) -> None:
    # past large_object: read in two answers, with nothing in either to check the bytes by
    client = seaweed.boto3_client()
    good, bad = os.urandom(9 * 1024 * 1024), os.urandom(9 * 1024 * 1024)
    client.put_object(Bucket=s3_bucket, Key="in/good.bin", Body=good,
                      Metadata={"sha256": hashlib.sha256(good).hexdigest()})
    client.put_object(Bucket=s3_bucket, Key="in/bad.bin", Body=bad,  # as if the object had been damaged since
                      Metadata={"sha256": hashlib.sha256(b"other bytes").hexdigest()})
    src = s3_source(seaweed, s3_bucket)
    outcomes = Outcomes()
    async with src:
        job = CopyJob(src, LocalBackend(tmp_path / "out"), CopyOptions(retry=NO_RETRY), recorder=outcomes)
        await job.run()
    assert set(outcomes.failures) == {"bad.bin"}
    assert isinstance(outcomes.failures["bad.bin"], IntegrityError)
    assert outcomes.results["good.bin"].hashes == {"sha256": hashlib.sha256(good).hexdigest()}  # type: ignore[attr-defined]
    assert sorted(os.listdir(tmp_path / "out")) == ["good.bin"]  # nothing of the bad one, not even a temp file
