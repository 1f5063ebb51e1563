"""Full-object checksums against SeaweedFS (``vertexflow/backends/s3/checksums.py``, docs/fidelity.md).

What vertexflow records is read back with boto3 (``head_object(ChecksumMode="ENABLED")``) and compared
with a CRC64NVME taken here by awscrt; a body changed on its way is caught by the checksum the store keeps;
``sync --checksum`` decides by it; a server that ignores or refuses the headers is written to as before.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from vertexflow.backends.local import LocalBackend
from vertexflow.backends.s3 import S3Backend
from vertexflow.errors import IntegrityError
from vertexflow.model import CRC32, CRC64NVME, MD5, SHA256, ObjectInfo, body_from_bytes
from vertexflow.ops.copy import CopyJob, CopyOptions
from vertexflow.ops.plan import Planner
from vertexflow.retry import NO_RETRY
from vertexflow.testing.s3_proxy import Answer, RewritingProxy
from vertexflow.testing.seaweedfs import SeaweedFS

from .conformance import BackendConformance, get_bytes

crt = pytest.importorskip("awscrt.checksums")  # a dependency (pyproject); without it no CRC64NVME is sent

pytestmark = pytest.mark.s3

MiB = 1024 * 1024
PART = 5 * MiB


def crc64(data: bytes) -> str:
    """The CRC64NVME of ``data`` as S3 gives it (base64 of the big-endian value), taken by awscrt."""
    return base64.b64encode(crt.crc64nvme(data).to_bytes(8, "big")).decode()


def b64_hex(value: str) -> str:
    return base64.b64decode(value).hex()


def make(seaweed: SeaweedFS, bucket: str, prefix: str = "ck", **kw: Any) -> S3Backend:
    options: dict[str, Any] = {"endpoint_url": seaweed.endpoint, "region": seaweed.region,
                               "access_key_id": seaweed.access_key, "secret_access_key": seaweed.secret_key,
                               "part_size": PART, "multipart_threshold": PART}
    options.update(kw)
    return S3Backend(bucket, prefix, **options)


@pytest.fixture
async def backend(seaweed: SeaweedFS, s3_bucket: str) -> AsyncIterator[S3Backend]:
    async with make(seaweed, s3_bucket) as b:
        await b.check(write=True)
        yield b


@pytest.fixture
def raw(seaweed: SeaweedFS) -> Any:
    return seaweed.boto3_client()


@asynccontextmanager
async def proxied(seaweed: SeaweedFS, bucket: str, rewrite: Any, prefix: str = "ck",
                  **kw: Any) -> AsyncIterator[tuple[S3Backend, RewritingProxy]]:
    async with RewritingProxy(seaweed.endpoint, rewrite) as proxy, \
            make(seaweed, bucket, prefix, endpoint_url=proxy.endpoint, **kw) as b:
        yield b, proxy


def head(raw: Any, bucket: str, key: str) -> dict[str, Any]:
    return raw.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")  # type: ignore[no-any-return]


class TestS3FullChecksumConformance(BackendConformance):
    """The backend contract holds with full-object checksums on (the default), multipart from 5 MiB."""


# -- what is recorded ---------------------------------------------------------------------------


async def test_a_single_put_records_a_crc64nvme_the_store_keeps(backend: S3Backend, raw: Any,
                                                                 s3_bucket: str) -> None:
    data = os.urandom(300_000)
    stored = await backend.put(ObjectInfo(key="one.bin", size=len(data)), body_from_bytes(data))
    answer = head(raw, s3_bucket, "ck/one.bin")
    assert answer["ChecksumCRC64NVME"] == crc64(data)
    assert stored.hashes[CRC64NVME] == b64_hex(crc64(data))
    info = await backend.stat("one.bin")  # one HeadObject asked for the checksums
    assert info.hashes == {SHA256: hashlib.sha256(data).hexdigest(), MD5: hashlib.md5(data).hexdigest(),
                           CRC64NVME: b64_hex(crc64(data))}
    assert raw.get_object(Bucket=s3_bucket, Key="ck/one.bin")["Body"].read() == data


@pytest.mark.parametrize("size", [2 * PART + 12_345, 3 * PART])
async def test_a_multipart_upload_keeps_a_full_object_crc64nvme(seaweed: SeaweedFS, raw: Any, s3_bucket: str,
                                                                size: int) -> None:
    data = os.urandom(size)
    async with proxied(seaweed, s3_bucket, lambda answer: None) as (b, proxy):
        stored = await b.put(ObjectInfo(key="big.bin", size=len(data)), body_from_bytes(data))
        creates = [a for a in proxy.seen if a.method == "POST" and a.path_qs.endswith("?uploads=")]
        parts = [a for a in proxy.seen if a.method == "PUT" and "partNumber=" in a.path_qs]
        completes = [a for a in proxy.seen if a.method == "POST" and "uploadId=" in a.path_qs]
    assert [(a.request_headers["x-amz-checksum-algorithm"], a.request_headers["x-amz-checksum-type"])
            for a in creates] == [("CRC64NVME", "FULL_OBJECT")]
    assert sorted(a.request_headers["x-amz-checksum-crc64nvme"] for a in parts) == sorted(
        crc64(data[i:i + PART]) for i in range(0, size, PART))
    assert [a.request_headers["x-amz-checksum-crc64nvme"] for a in completes] == [crc64(data)]
    answer = head(raw, s3_bucket, "ck/big.bin")
    assert answer["ChecksumCRC64NVME"] == crc64(data)  # of the whole object: no "-N"
    assert answer["ChecksumType"] == "FULL_OBJECT"
    assert answer["ETag"].strip('"').endswith(f"-{-(-size // PART)}")
    assert stored.hashes[CRC64NVME] == b64_hex(crc64(data))
    assert raw.get_object(Bucket=s3_bucket, Key="ck/big.bin")["Body"].read() == data


async def test_a_server_side_copy_keeps_the_checksum(backend: S3Backend, raw: Any, s3_bucket: str) -> None:
    data = os.urandom(PART + 10)
    await backend.put(ObjectInfo(key="a", size=len(data)), body_from_bytes(data))
    copied = await backend.server_copy(backend, await backend.stat("a"), "b")
    assert head(raw, s3_bucket, "ck/b")["ChecksumCRC64NVME"] == crc64(data)
    assert copied.hashes[CRC64NVME] == b64_hex(crc64(data))


# -- what is checked ----------------------------------------------------------------------------


def flip_a_byte_of_gets(answer: Answer) -> None:
    """A body changed on its way, the same size: one byte of every object GET answer."""
    if answer.method == "GET" and "list-type=" not in answer.path_qs and answer.status < 300 and answer.body:
        middle = len(answer.body) // 2
        answer.body = answer.body[:middle] + bytes([answer.body[middle] ^ 0x40]) + answer.body[middle + 1:]


def put_full_object(raw: Any, bucket: str, key: str, data: bytes) -> None:
    """As an AWS SDK writes it by default: multipart, a full-object CRC64NVME, no vertexflow metadata."""
    upload = raw.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="CRC64NVME",
                                         ChecksumType="FULL_OBJECT")["UploadId"]
    parts = []
    for number, first in enumerate(range(0, len(data), PART), start=1):
        piece = data[first:first + PART]
        etag = raw.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=piece,
                               ChecksumCRC64NVME=crc64(piece))["ETag"]
        parts.append({"PartNumber": number, "ETag": etag, "ChecksumCRC64NVME": crc64(piece)})
    raw.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts},
                                  ChecksumType="FULL_OBJECT", ChecksumCRC64NVME=crc64(data))


class Outcomes:
    def __init__(self) -> None:
        self.results: dict[str, Any] = {}
        self.failures: dict[str, BaseException] = {}

    def done(self, src: Any, result: Any) -> None:
        self.results[src.key] = result

    def failed(self, src: Any, exc: BaseException) -> None:
        self.failures[src.key] = exc


async def download_checked(seaweed: SeaweedFS, s3_bucket: str, tmp_path: Path, data: bytes,
                           changed: bool) -> Outcomes:
    """Copy in/clip.mp4 (``data``) to local disk through a proxy that flips a byte of every GET answer
    when ``changed``: that copy fails on the CRC64NVME and leaves nothing; the other is the object."""
    outcomes = Outcomes()
    rewrite = flip_a_byte_of_gets if changed else (lambda answer: None)
    async with proxied(seaweed, s3_bucket, rewrite, prefix="in") as (src, _):
        job = CopyJob(src, LocalBackend(tmp_path / "out"), CopyOptions(retry=NO_RETRY), recorder=outcomes)
        await job.run()
    if changed:
        assert set(outcomes.failures) == {"clip.mp4"}
        assert isinstance(outcomes.failures["clip.mp4"], IntegrityError)
        assert "crc64nvme" in str(outcomes.failures["clip.mp4"])
        assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []  # nothing, no temp file
    else:
        assert outcomes.failures == {}
        assert (tmp_path / "out" / "clip.mp4").read_bytes() == data
    return outcomes


@pytest.mark.parametrize("changed", [False, True])
async def test_a_copy_is_checked_by_the_crc64nvme_the_store_keeps(seaweed: SeaweedFS, raw: Any, s3_bucket: str,
                                                                  tmp_path: Path, changed: bool) -> None:
    # a multipart object without vertexflow's SHA-256: its ETag is no digest of the bytes, and only
    # the store's full-object checksum (from the stat the copy makes) can check them
    data = os.urandom(PART + 300_000)
    put_full_object(raw, s3_bucket, "in/clip.mp4", data)
    await download_checked(seaweed, s3_bucket, tmp_path, data, changed)


async def test_a_read_in_one_answer_is_checked_by_the_crc64nvme_when_the_answer_gives_it(
        seaweed: SeaweedFS, raw: Any, s3_bucket: str) -> None:
    # SeaweedFS gives no checksum with a ranged answer (nor does AWS): a server that does is checked by it
    data = os.urandom(200_000)
    put_full_object(raw, s3_bucket, "in/x", data)

    def with_checksum_and_flipped(answer: Answer) -> None:
        if answer.method == "GET" and "list-type=" not in answer.path_qs and answer.status < 300:
            answer.headers["x-amz-checksum-crc64nvme"] = crc64(data)
            flip_a_byte_of_gets(answer)

    async with proxied(seaweed, s3_bucket, with_checksum_and_flipped, prefix="in") as (src, _):
        with pytest.raises(IntegrityError, match="downloaded bytes have crc64nvme"):
            await src.read_whole("x", limit=MiB)
        with pytest.raises(IntegrityError, match="downloaded bytes have crc64nvme"):
            await get_bytes(src, "x")


# -- sync --checksum ---------------------------------------------------------------------------


async def test_sync_checksum_compares_the_stored_crc64nvme_without_reading(
        seaweed: SeaweedFS, raw: Any, s3_bucket: str, tmp_path: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    same, other = os.urandom(PART + 1000), os.urandom(300_000)
    (root / "same.bin").write_bytes(same)
    (root / "rewritten.bin").write_bytes(other)
    local = LocalBackend(root)
    async with make(seaweed, s3_bucket) as dst:
        for name, data in (("same.bin", same), ("rewritten.bin", other)):
            await dst.put(ObjectInfo(key=name, size=len(data)), body_from_bytes(data))
    # rewritten behind vertexflow's back: other bytes, the same size, the user metadata (its SHA-256) kept
    kept = raw.head_object(Bucket=s3_bucket, Key="ck/rewritten.bin")["Metadata"]
    changed = os.urandom(len(other))
    raw.put_object(Bucket=s3_bucket, Key="ck/rewritten.bin", Body=changed, Metadata=kept,
                   ChecksumCRC64NVME=crc64(changed))
    async with proxied(seaweed, s3_bucket, lambda answer: None) as (dst, proxy):
        planner = Planner(local, dst, journal=None, mode="checksum")
        decisions = {d.key: d async for d in planner.decisions()}
        asked = [(a.method, "list-type=" in a.path_qs) for a in proxy.seen]
    assert (decisions["same.bin"].action, decisions["same.bin"].why) == ("skip", "same CRC64NVME")
    # the SHA-256 metadata still says the old bytes: the store's own checksum tells the change
    assert (decisions["rewritten.bin"].action, decisions["rewritten.bin"].why) == ("copy", "CRC64NVME differs")
    # listing pages and a HEAD per object: not one GET of an object
    assert [a for a in asked if not a[1]] == [("HEAD", False), ("HEAD", False)]


# -- servers that do not keep full-object checksums --------------------------------------------


def strip_checksums(answer: Answer) -> None:
    """A server that ignores the checksum headers: it answers none, and no checksum in a completion."""
    for name in [n for n in answer.headers if n.lower().startswith("x-amz-checksum-")]:
        del answer.headers[name]
    if answer.method == "POST" and b"ChecksumCRC64NVME" in answer.body:
        body = answer.body.decode()
        for element in ("ChecksumCRC64NVME", "ChecksumType"):
            start, end = body.find(f"<{element}>"), body.find(f"</{element}>")
            if start >= 0 and end >= 0:
                body = body[:start] + body[end + len(element) + 3:]
        answer.body = body.encode()


async def test_a_server_that_ignores_the_checksum_headers_is_written_to_as_before(
        seaweed: SeaweedFS, raw: Any, s3_bucket: str) -> None:
    small, big = os.urandom(100_000), os.urandom(2 * PART + 7)
    async with proxied(seaweed, s3_bucket, strip_checksums) as (b, _):
        for key, data in (("s", small), ("m", big)):
            stored = await b.put(ObjectInfo(key=key, size=len(data)), body_from_bytes(data))
            assert stored.hashes[SHA256] == hashlib.sha256(data).hexdigest()
            assert await get_bytes(b, key) == data
            info = await b.stat(key)
            assert CRC64NVME not in info.hashes and info.size == len(data)
        assert b.part_checksums is False  # no part checksum answered: the parts went with Content-MD5
    assert raw.get_object(Bucket=s3_bucket, Key="ck/m")["Body"].read() == big


def refuse_crc64nvme(answer: Answer) -> None:
    """A server that does not take CRC64NVME (OpenStack Swift answers 501 NotImplemented)."""
    asked = answer.request_headers
    if asked.get("x-amz-checksum-crc64nvme") or asked.get("x-amz-checksum-algorithm") == "CRC64NVME":
        answer.status = 501
        answer.headers = type(answer.headers)({"Content-Type": "application/xml"})
        answer.body = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>NotImplemented</Code>"
                       b"<Message>The requested checksum algorithm is not supported</Message></Error>")


@pytest.mark.parametrize("size", [100_000, 2 * PART + 7])
async def test_a_server_that_refuses_crc64nvme_is_written_to_without_it(seaweed: SeaweedFS, raw: Any,
                                                                        s3_bucket: str, size: int) -> None:
    first, second = os.urandom(size), os.urandom(size)
    async with proxied(seaweed, s3_bucket, refuse_crc64nvme) as (b, proxy):
        await b.put(ObjectInfo(key="one", size=size), body_from_bytes(first))
        refused = [a for a in proxy.seen if a.request_headers.get("x-amz-checksum-crc64nvme")
                   or a.request_headers.get("x-amz-checksum-algorithm") == "CRC64NVME"]
        assert len(refused) == 1  # the first write asked, was refused, and was sent again without
        proxy.seen.clear()
        await b.put(ObjectInfo(key="two", size=size), body_from_bytes(second))
        assert not any(a.request_headers.get("x-amz-checksum-crc64nvme") for a in proxy.seen)
        if size > PART:  # parts with composite CRC32s, as before full-object checksums
            assert any(a.request_headers.get("x-amz-checksum-crc32") for a in proxy.seen)
    for key, data in (("ck/one", first), ("ck/two", second)):
        assert raw.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == data
        assert "ChecksumCRC64NVME" not in head(raw, s3_bucket, key)
    for upload in raw.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []):  # the refused create's
        raw.abort_multipart_upload(Bucket=s3_bucket, Key=upload["Key"], UploadId=upload["UploadId"])


async def test_full_checksums_off_writes_composite_crc32_parts(seaweed: SeaweedFS, raw: Any,
                                                                s3_bucket: str) -> None:
    data = os.urandom(2 * PART + 7)
    async with make(seaweed, s3_bucket, full_checksums=False) as b:
        stored = await b.put(ObjectInfo(key="m", size=len(data)), body_from_bytes(data))
    answer = head(raw, s3_bucket, "ck/m")
    assert "ChecksumCRC64NVME" not in answer and answer["ChecksumCRC32"].endswith("-3")
    assert CRC64NVME not in stored.hashes and CRC32 not in stored.hashes


# -- downloads checked by the cheapest trustworthy digest ---------------------------------------------


@pytest.mark.parametrize("changed", [False, True])
async def test_a_download_to_disk_is_checked_by_the_stored_crc64nvme_not_a_sha256(
        seaweed: SeaweedFS, raw: Any, s3_bucket: str, tmp_path: Path, changed: bool) -> None:
    # written by vertexflow: the SHA-256 metadata and the store's CRC64NVME; the download takes the
    # CRC64NVME (memory speed) as the digest of the file it writes, and checks it
    data = os.urandom(PART + 300_000)
    async with make(seaweed, s3_bucket, prefix="in") as dst:
        await dst.put(ObjectInfo(key="clip.mp4", size=len(data), hashes={SHA256: hashlib.sha256(data).hexdigest()}),
                      body_from_bytes(data))
    stored = head(raw, s3_bucket, "in/clip.mp4")
    assert stored["Metadata"].get("sha256") == hashlib.sha256(data).hexdigest()
    outcomes = await download_checked(seaweed, s3_bucket, tmp_path, data, changed)
    if not changed:
        assert outcomes.results["clip.mp4"].hashes == {CRC64NVME: b64_hex(stored["ChecksumCRC64NVME"])}


def test_sync_checksum_after_a_download_checked_by_crc64nvme_copies_nothing(
        seaweed: SeaweedFS, raw: Any, s3_bucket: str, s3_env: dict[str, str], tmp_path: Path) -> None:
    # the journal records no SHA-256 for such a copy: the next sync --checksum compares by content
    data = os.urandom(PART + 300_000)
    put_full_object(raw, s3_bucket, "in/clip.mp4", data)
    report = tmp_path / "report.jsonl"
    journal = tmp_path / "journal.db"
    args = [sys.executable, "-m", "vertexflow", "sync", f"s3://{s3_bucket}/in", str(tmp_path / "out"), "--checksum",
            "--journal", str(journal), "--no-progress"]
    first = subprocess.run([*args, "--report", str(report)], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    line = json.loads(report.read_text().splitlines()[0])
    assert (line["key"], line["sha256"]) == ("clip.mp4", None)
    assert line["crc64nvme"] == b64_hex(head(raw, s3_bucket, "in/clip.mp4")["ChecksumCRC64NVME"])
    again = subprocess.run([*args, "--report", str(report)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    lines = [json.loads(x) for x in report.read_text().splitlines()]
    assert [(x.get("key"), x.get("action")) for x in lines[:-1]] == [("clip.mp4", "skipped")]
    assert (tmp_path / "out" / "clip.mp4").read_bytes() == data
