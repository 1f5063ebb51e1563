"""S3 backend: the conformance suite plus what only S3 has, against a real SeaweedFS."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import botocore.exceptions as bce
import pytest

from vertexflow.backends.s3 import S3Backend, translate_error
from vertexflow.errors import (
    AuthError,
    BackendError,
    ConnectionFailed,
    IntegrityError,
    InvalidKey,
    NotFound,
    ObjectTooLarge,
    SourceChanged,
    Throttled,
    TransientError,
)
from vertexflow.model import MD5, SHA256, ObjectInfo, body_from_bytes
from vertexflow.testing.s3_proxy import Answer, RewritingProxy
from vertexflow.testing.seaweedfs import SeaweedFS

from .conformance import (
    BackendConformance,
    chunked_body,
    failing_body,
    get_bytes,
    keys,
    put_bytes,
)

pytestmark = pytest.mark.s3

MiB = 1024 * 1024
PART = 5 * MiB  # S3's smallest part: keeps multipart tests small


def make_backend(seaweed: SeaweedFS, bucket: str, prefix: str = "", **kw: Any) -> S3Backend:
    # these tests pin the composite CRC32 parts (the path taken where no full-object checksum is sent);
    # tests/backends/test_s3_checksums.py covers the full-object CRC64NVME
    options: dict[str, Any] = {
        "endpoint_url": seaweed.endpoint,
        "region": seaweed.region,
        "access_key_id": seaweed.access_key,
        "secret_access_key": seaweed.secret_key,
        "full_checksums": False,
    }
    options.update(kw)
    return S3Backend(bucket, prefix, **options)


@pytest.fixture
async def backend(seaweed: SeaweedFS, s3_bucket: str) -> AsyncIterator[S3Backend]:
    b = make_backend(seaweed, s3_bucket, "root/dir")
    async with b:
        await b.check(write=True)
        yield b


@pytest.fixture
async def small_parts(seaweed: SeaweedFS, s3_bucket: str) -> AsyncIterator[S3Backend]:
    """Multipart from 5 MiB on, 5 MiB parts, 3 in flight either way (downloads always in ranges)."""
    b = make_backend(seaweed, s3_bucket, "mp", part_size=PART, multipart_threshold=PART,
                     download_concurrency=3, upload_concurrency=3, stream_limit=0)
    async with b:
        yield b


@pytest.fixture
def raw(seaweed: SeaweedFS) -> Any:
    """An independent boto3 client, for looking behind the backend's back."""
    return seaweed.boto3_client()


def uploads(raw: Any, bucket: str) -> list[dict[str, Any]]:
    return raw.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


class TestS3Conformance(BackendConformance):
    pass


# -- multipart upload ---------------------------------------------------------------


async def test_multipart_round_trip(small_parts: S3Backend, raw: Any, s3_bucket: str) -> None:
    data = os.urandom(3 * PART + 12345)
    stored = await small_parts.put(ObjectInfo(key="big.bin", size=len(data)), chunked_body(data, 333 * 1024))
    assert stored.size == len(data)
    assert stored.hashes[SHA256] == hashlib.sha256(data).hexdigest()
    assert stored.etag is not None and stored.etag.endswith("-4")
    assert stored.version == stored.etag
    body = raw.get_object(Bucket=s3_bucket, Key="mp/big.bin")["Body"].read()
    assert body == data
    assert await get_bytes(small_parts, "big.bin") == data
    assert uploads(raw, s3_bucket) == []


async def test_multipart_of_unknown_size(small_parts: S3Backend) -> None:
    data = os.urandom(2 * PART + 1)
    stored = await small_parts.put(ObjectInfo(key="stream", size=None), chunked_body(data, 1 << 20))
    assert stored.size == len(data)
    assert await get_bytes(small_parts, "stream") == data


async def test_multipart_with_expected_hash_keeps_it_as_metadata(small_parts: S3Backend) -> None:
    data = os.urandom(PART + 10)
    sha = hashlib.sha256(data).hexdigest()
    await small_parts.put(ObjectInfo(key="h", size=len(data), hashes={SHA256: sha}), body_from_bytes(data))
    assert (await small_parts.stat("h")).hashes[SHA256] == sha


async def test_single_put_records_sha256_and_md5(backend: S3Backend, raw: Any, s3_bucket: str) -> None:
    data = b"small object"
    await put_bytes(backend, "s", data)
    head = raw.head_object(Bucket=s3_bucket, Key="root/dir/s")
    assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    info = await backend.stat("s")
    assert info.hashes == {SHA256: hashlib.sha256(data).hexdigest(), MD5: hashlib.md5(data).hexdigest()}
    assert info.mtime is not None and info.mtime.utcoffset() is not None


async def test_failing_body_aborts_the_multipart_upload(small_parts: S3Backend, raw: Any,
                                                        s3_bucket: str) -> None:
    data = os.urandom(3 * PART)
    with pytest.raises(RuntimeError, match="source broke"):
        await small_parts.put(ObjectInfo(key="broken", size=len(data)), failing_body(data, 2 * PART + 7))
    with pytest.raises(NotFound):
        await small_parts.stat("broken")
    assert uploads(raw, s3_bucket) == []


async def test_cancelled_multipart_upload_is_aborted(small_parts: S3Backend, raw: Any, s3_bucket: str) -> None:
    sent = anyio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield os.urandom(2 * PART + 1)
        sent.set()
        await anyio.sleep(60)
        yield b"never"

    async with anyio.create_task_group() as tg:
        tg.start_soon(small_parts.put, ObjectInfo(key="cancelled", size=None), stalls)
        with anyio.fail_after(10):
            await sent.wait()
        await anyio.sleep(0.3)  # let the first parts reach the server
        tg.cancel_scope.cancel()
    assert uploads(raw, s3_bucket) == []
    with pytest.raises(NotFound):
        await small_parts.stat("cancelled")


async def test_multipart_wrong_expected_hash(small_parts: S3Backend, raw: Any, s3_bucket: str) -> None:
    data = os.urandom(2 * PART)
    info = ObjectInfo(key="h", size=len(data), hashes={SHA256: hashlib.sha256(b"other").hexdigest()})
    with pytest.raises(IntegrityError):
        await small_parts.put(info, body_from_bytes(data))
    assert await keys(small_parts) == []
    assert uploads(raw, s3_bucket) == []


# -- what the server says it received: CRC32 per part, else MD5 --------------------------------


def _parts_sent(proxy: RewritingProxy) -> list[Answer]:
    """The UploadPart exchanges through ``proxy``, in part-number order."""
    parts = [a for a in proxy.seen if a.method == "PUT" and "partNumber=" in a.path_qs]
    return sorted(parts, key=lambda a: int(a.path_qs.split("partNumber=")[1].split("&")[0]))


def _no_checksums(answer: Answer) -> None:
    """A server that ignores checksum headers: its answers carry none."""
    for name in [k for k in answer.headers if k.lower().startswith("x-amz-checksum")]:
        del answer.headers[name]
    answer.body = re.sub(rb"<Checksum\w*>[^<]*</Checksum\w*>", b"", answer.body)


@asynccontextmanager
async def through_proxy(seaweed: SeaweedFS, bucket: str, rewrite: Any,
                        **kw: Any) -> AsyncIterator[tuple[S3Backend, RewritingProxy]]:
    """A backend with 5 MiB parts, one in flight, talking to SeaweedFS through a rewriting proxy."""
    async with RewritingProxy(seaweed.endpoint, rewrite) as proxy, \
            make_backend(seaweed, bucket, "mp", endpoint_url=proxy.endpoint, part_size=PART,
                         multipart_threshold=PART, upload_concurrency=1, **kw) as b:
        yield b, proxy


async def test_parts_skip_md5_once_the_server_answers_with_their_crc32(
        seaweed: SeaweedFS, raw: Any, s3_bucket: str) -> None:
    data = os.urandom(4 * PART + 10)
    async with through_proxy(seaweed, s3_bucket, lambda answer: None) as (b, proxy):
        assert b.part_checksums is None
        await b.put(ObjectInfo(key="p", size=len(data)), body_from_bytes(data))
        assert b.part_checksums is True
    assert raw.get_object(Bucket=s3_bucket, Key="mp/p")["Body"].read() == data
    sent = _parts_sent(proxy)
    assert len(sent) == 5
    assert [a.request_headers.get("x-amz-checksum-crc32") for a in sent] == [
        base64.b64encode(zlib.crc32(data[i:i + PART]).to_bytes(4, "big")).decode()
        for i in range(0, len(data), PART)]
    assert all(a.headers.get("x-amz-checksum-crc32") == a.request_headers["x-amz-checksum-crc32"] for a in sent)
    # the first part goes before any answer, with its MD5; once answers carry
    # the CRC32 the server took, the parts hashed after them go without
    assert "content-md5" in sent[0].request_headers
    assert [("content-md5" in a.request_headers) for a in sent[2:]] == [False, False, False]


async def test_a_server_that_ignores_checksums_gets_md5s_again(seaweed: SeaweedFS, raw: Any, s3_bucket: str) -> None:
    data = os.urandom(3 * PART + 10)
    async with through_proxy(seaweed, s3_bucket, _no_checksums) as (b, proxy):
        b.part_checksums = True  # as learnt from an earlier server at this address
        stored = await b.put(ObjectInfo(key="q", size=len(data)), body_from_bytes(data))
        assert b.part_checksums is False
    assert raw.get_object(Bucket=s3_bucket, Key="mp/q")["Body"].read() == data
    # the multipart ETag was checked, so every part's MD5 was taken, some after their answer
    parts = [hashlib.md5(data[i:i + PART]).digest() for i in range(0, len(data), PART)]
    assert stored.etag == f"{hashlib.md5(b''.join(parts)).hexdigest()}-4"
    sent = _parts_sent(proxy)
    assert "content-md5" not in sent[0].request_headers
    assert all("content-md5" in a.request_headers for a in sent[2:])


def _no_composite_on_completion(answer: Answer) -> None:
    if answer.method == "POST" and b"<CompleteMultipartUploadResult" in answer.body:
        _no_checksums(answer)


async def test_without_a_composite_on_completion_the_stored_object_is_asked(
        seaweed: SeaweedFS, raw: Any, s3_bucket: str) -> None:
    data = os.urandom(3 * PART + 10)
    async with through_proxy(seaweed, s3_bucket, _no_composite_on_completion) as (b, proxy):
        await b.put(ObjectInfo(key="h", size=len(data)), body_from_bytes(data))
    assert raw.get_object(Bucket=s3_bucket, Key="mp/h")["Body"].read() == data
    heads = [a for a in proxy.seen if a.method == "HEAD" and "mp/h" in a.path_qs]
    assert [a.request_headers.get("x-amz-checksum-mode") for a in heads] == ["ENABLED"]
    assert heads[0].headers["x-amz-checksum-crc32"].endswith("-4")


@pytest.mark.parametrize("where", ["part checksum", "composite checksum", "multipart etag", "stored checksum"])
async def test_digests_that_do_not_match_fail_and_leave_nothing(seaweed: SeaweedFS, raw: Any, s3_bucket: str,
                                                               where: str) -> None:
    wrong = base64.b64encode(zlib.crc32(b"other bytes").to_bytes(4, "big"))

    def rewrite(answer: Answer) -> None:
        if where == "part checksum" and "partNumber=" in answer.path_qs:
            answer.headers["x-amz-checksum-crc32"] = wrong.decode()
        if where == "multipart etag":  # a server without checksums: the ETag is all there is
            _no_checksums(answer)
        if where == "stored checksum":  # nothing to check on completion: the HEAD that follows says it
            _no_composite_on_completion(answer)
            if answer.method == "HEAD" and "x-amz-checksum-crc32" in answer.headers:
                answer.headers["x-amz-checksum-crc32"] = wrong.decode() + "-3"
        if answer.method == "POST" and b"<CompleteMultipartUploadResult" in answer.body:
            if where == "composite checksum":
                answer.body = re.sub(rb"<ChecksumCRC32>[^<-]*", b"<ChecksumCRC32>" + wrong, answer.body)
            if where == "multipart etag":
                answer.body = re.sub(rb"<ETag>[^<]*</ETag>", b"<ETag>&quot;" + b"0" * 32 + b"-3&quot;</ETag>",
                                     answer.body)

    data = os.urandom(2 * PART + 10)
    async with through_proxy(seaweed, s3_bucket, rewrite) as (b, _):
        with pytest.raises(IntegrityError, match="CRC32|ETag"):
            await b.put(ObjectInfo(key="bad", size=len(data)), body_from_bytes(data))
    assert raw.list_objects_v2(Bucket=s3_bucket, Prefix="mp/bad").get("KeyCount") == 0
    assert uploads(raw, s3_bucket) == []


@pytest.mark.parametrize(("body", "error", "message"), [
    # S3 may answer 200 and then an error, when assembling the parts fails after the answer began
    (b"<?xml version='1.0'?>\n<Error><Code>InternalError</Code><Message>try again</Message></Error>",
     TransientError, "CompleteMultipartUpload failed: InternalError: try again"),
    (b"<html>gateway page</html", BackendError, "CompleteMultipartUpload failed: InvalidAnswer"),
    # spaces sent to keep the connection open while the parts were assembled
    (b"  \n  <?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>SlowDown</Code></Error>", Throttled,
     "CompleteMultipartUpload failed: SlowDown"),
])
async def test_a_completion_answered_200_with_an_error_fails(seaweed: SeaweedFS, raw: Any, s3_bucket: str,
                                                             body: bytes, error: type, message: str) -> None:
    def rewrite(answer: Answer) -> None:
        if answer.method == "POST" and b"<CompleteMultipartUploadResult" in answer.body:
            answer.body = body

    data = os.urandom(2 * PART + 10)
    async with through_proxy(seaweed, s3_bucket, rewrite) as (b, _):
        with pytest.raises(error, match=message):
            await b.put(ObjectInfo(key="c", size=len(data)), body_from_bytes(data))
    assert uploads(raw, s3_bucket) == []


@pytest.mark.parametrize("stream_limit", [0, 256 * MiB])
async def test_a_ranged_part_answered_from_byte_0_is_refused(seaweed: SeaweedFS, s3_bucket: str,
                                                             stream_limit: int) -> None:
    data = os.urandom(3 * PART)

    def ignore_later_ranges(answer: Answer) -> None:
        # what a server that ignores Range would label its answer (the bytes stay the range's)
        if answer.method == "GET" and not answer.request_headers.get("range", "bytes=0-").startswith("bytes=0-"):
            answer.status = 200
            del answer.headers["Content-Range"]

    async with through_proxy(seaweed, s3_bucket, ignore_later_ranges, stream_limit=stream_limit) as (b, _):
        await b.put(ObjectInfo(key="r", size=len(data)), body_from_bytes(data))
        # the second of three ranges, or the rest in one
        last = 2 * PART - 1 if stream_limit == 0 else 3 * PART - 1
        with pytest.raises(BackendError, match=f"RangeNotHonoured.*bytes {PART}-{last}"):
            await get_bytes(b, "r")


@pytest.mark.parametrize("stream_limit", [0, 256 * MiB])
async def test_downloads_read_bodies_sent_in_http_chunks(seaweed: SeaweedFS, s3_bucket: str,
                                                         stream_limit: int) -> None:
    data = os.urandom(2 * PART + 12345)
    async with RewritingProxy(seaweed.endpoint, lambda answer: None, chunked=100_000) as proxy, \
            make_backend(seaweed, s3_bucket, "mp", endpoint_url=proxy.endpoint, part_size=PART,
                         multipart_threshold=PART, stream_limit=stream_limit) as b:
        await b.put(ObjectInfo(key="c", size=len(data)), body_from_bytes(data))
        assert await get_bytes(b, "c") == data  # the first answer streamed, the rest as ranged parts
        assert await get_bytes(b, "c", offset=PART + 3, length=PART) == data[PART + 3:2 * PART + 3]
    assert any("range" in a.request_headers and a.request_headers["range"] != "bytes=0-5242879"
               for a in proxy.seen if a.method == "GET")


@pytest.mark.parametrize("announced", [2 * PART + 100, PART + 100, 3 * PART])
async def test_multipart_size_mismatch(small_parts: S3Backend, raw: Any, s3_bucket: str,
                                       announced: int) -> None:
    data = os.urandom(2 * PART + 50)
    with pytest.raises(SourceChanged):
        await small_parts.put(ObjectInfo(key="m", size=announced), chunked_body(data, MiB))
    assert await keys(small_parts) == []
    assert uploads(raw, s3_bucket) == []


async def test_object_over_5_tib_is_refused(backend: S3Backend) -> None:
    with pytest.raises(ObjectTooLarge):
        await backend.put(ObjectInfo(key="huge", size=6 * 1024 ** 4), body_from_bytes(b""))


# -- what a download is checked with ------------------------------------------------------


def _flip_first_byte_of_gets(answer: Answer) -> None:
    if answer.method == "GET" and "list-type=" not in answer.path_qs and answer.status < 300 and answer.body:
        answer.body = bytes([answer.body[0] ^ 1]) + answer.body[1:]


@pytest.mark.parametrize("checked_by", ["md5 etag", "sha256 metadata"])
@pytest.mark.parametrize("read", ["read_whole", "open"])
async def test_a_body_changed_on_the_way_fails_the_read(seaweed: SeaweedFS, raw: Any, s3_bucket: str,
                                                        checked_by: str, read: str) -> None:
    data = os.urandom(1000)
    meta = {"Metadata": {"sha256": hashlib.sha256(data).hexdigest()}} if checked_by == "sha256 metadata" else {}
    raw.put_object(Bucket=s3_bucket, Key="mp/x", Body=data, **meta)
    expected = "sha256" if checked_by == "sha256 metadata" else "md5"
    async with through_proxy(seaweed, s3_bucket, _flip_first_byte_of_gets) as (b, _):
        with pytest.raises(IntegrityError, match=f"downloaded bytes have {expected} "):
            if read == "read_whole":
                await b.read_whole("x", limit=MiB)
            else:
                await get_bytes(b, "x")


async def test_read_whole_is_one_request(backend: S3Backend) -> None:
    data = os.urandom(5000)
    await put_bytes(backend, "w", data)
    before = backend.requests
    assert await backend.read_whole("w", limit=MiB) == data
    assert backend.requests - before == 1
    with pytest.raises(SourceChanged, match="now 5000 bytes"):
        await backend.read_whole("w", limit=4999)


# -- ranged and parallel download ------------------------------------------------------


async def test_parallel_ranged_download(small_parts: S3Backend) -> None:
    data = os.urandom(4 * PART + 777)
    await small_parts.put(ObjectInfo(key="r", size=len(data)), body_from_bytes(data))
    assert await get_bytes(small_parts, "r") == data
    for offset, length in [(1, None), (PART - 1, 2), (PART - 1, 2 * PART + 3), (3 * PART + 5, None),
                           (0, 4 * PART), (len(data) - 1, 10), (len(data), None), (12345, 0)]:
        got = await get_bytes(small_parts, "r", offset=offset, length=length)
        end = None if length is None else offset + length
        assert got == data[offset:end], (offset, length)


async def test_a_read_up_to_the_stream_limit_is_two_streamed_gets(seaweed: SeaweedFS, s3_bucket: str) -> None:
    data = os.urandom(3 * PART + 10)
    async with through_proxy(seaweed, s3_bucket, lambda answer: None, stream_limit=3 * PART + 10) as (b, proxy):
        await b.put(ObjectInfo(key="s", size=len(data)), body_from_bytes(data))
        for offset, length in [(0, None), (7, None), (PART - 1, 2), (PART + 1, 2 * PART), (0, 3 * PART + 10)]:
            proxy.seen.clear()
            got = await get_bytes(b, "s", offset=offset, length=length)
            end = len(data) if length is None else offset + length
            assert got == data[offset:end], (offset, length)
            gets = [a.request_headers["range"] for a in proxy.seen if a.method == "GET"]
            first = f"bytes={offset}-{offset + min(PART, end - offset) - 1}"
            assert gets == ([first] if end - offset <= PART else [first, f"bytes={offset + PART}-{end - 1}"])
        # one byte more than the limit: ranges of a part each, after the first answer
        proxy.seen.clear()
        big = os.urandom(3 * PART + 11)
        await b.put(ObjectInfo(key="s", size=len(big)), body_from_bytes(big))
        assert await get_bytes(b, "s") == big
        gets = sorted((a.request_headers["range"] for a in proxy.seen if a.method == "GET"),
                      key=lambda r: int(r[6:].split("-")[0]))  # fetched in parallel: in any order
        assert gets == [f"bytes=0-{PART - 1}", f"bytes={PART}-{2 * PART - 1}", f"bytes={2 * PART}-{3 * PART - 1}",
                        f"bytes={3 * PART}-{3 * PART + 10}"]


async def test_parallel_download_parts_come_in_order_and_bounded(small_parts: S3Backend) -> None:
    data = os.urandom(6 * PART)
    await small_parts.put(ObjectInfo(key="r", size=len(data)), body_from_bytes(data))
    async with small_parts.open("r") as body:
        sizes = []
        joined = bytearray()
        async for chunk in body:
            sizes.append(len(chunk))
            joined += chunk
    assert bytes(joined) == data
    assert max(sizes) <= PART


@pytest.mark.parametrize("stream_limit", [0, 256 * MiB])
async def test_object_changed_during_parallel_download(seaweed: SeaweedFS, s3_bucket: str, raw: Any,
                                                       stream_limit: int) -> None:
    b = make_backend(seaweed, s3_bucket, part_size=PART, multipart_threshold=PART, download_concurrency=1,
                     stream_limit=stream_limit)
    async with b:
        data = os.urandom(4 * PART)
        await put_bytes(b, "changing", data)
        overwritten = False
        with pytest.raises(SourceChanged):
            async with b.open("changing") as body:
                async for _ in body:
                    # parts after the next one (or the rest in one) are asked for only once
                    # this one is read, pinned to the ETag the first answer had
                    if not overwritten:
                        raw.put_object(Bucket=s3_bucket, Key="changing", Body=os.urandom(4 * PART))
                        overwritten = True


async def test_stale_version_of_large_object(small_parts: S3Backend, raw: Any, s3_bucket: str) -> None:
    data = os.urandom(2 * PART)
    old = await small_parts.put(ObjectInfo(key="v", size=len(data)), body_from_bytes(data))
    raw.put_object(Bucket=s3_bucket, Key="mp/v", Body=b"new")
    with pytest.raises(SourceChanged):
        await get_bytes(small_parts, "v", if_version=old.version)


async def test_abandoned_download_closes_cleanly(small_parts: S3Backend) -> None:
    data = os.urandom(5 * PART)
    await small_parts.put(ObjectInfo(key="r", size=len(data)), body_from_bytes(data))
    for _ in range(3):
        async with small_parts.open("r") as body:
            async for chunk in body:
                assert chunk == data[:len(chunk)]
                break
    assert await get_bytes(small_parts, "r", offset=PART, length=10) == data[PART:PART + 10]


# -- check and errors ---------------------------------------------------------------------


async def test_check_wrong_credentials_is_auth_error(seaweed: SeaweedFS, s3_bucket: str) -> None:
    for key, secret in [("nobody", "nothing"), (seaweed.access_key, "wrong-secret")]:
        async with make_backend(seaweed, s3_bucket, access_key_id=key, secret_access_key=secret) as b:
            with pytest.raises(AuthError) as caught:
                await b.check()
            assert secret not in str(caught.value)
            with pytest.raises(AuthError):
                await keys(b)


async def test_check_missing_bucket_is_not_found(seaweed: SeaweedFS) -> None:
    async with make_backend(seaweed, "no-such-bucket-here") as b:
        with pytest.raises(NotFound, match="bucket 'no-such-bucket-here' does not exist"):
            await b.check()
        with pytest.raises(NotFound):
            await keys(b)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_unreachable_endpoint_fails_fast(seaweed: SeaweedFS) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    async with make_backend(seaweed, "bucket", endpoint_url=endpoint) as b:
        started = time.monotonic()
        with pytest.raises(ConnectionFailed) as caught:
            await b.check()
        assert time.monotonic() - started < 10
        assert endpoint in str(caught.value)
        assert seaweed.secret_key not in str(caught.value)


async def test_describe_names_bucket_prefix_and_endpoint(seaweed: SeaweedFS) -> None:
    b = make_backend(seaweed, "media", "/photos/")
    assert b.describe() == f"s3://media/photos at {seaweed.endpoint}"
    assert make_backend(seaweed, "media", name="old").describe() == f"old:media at {seaweed.endpoint}"


@pytest.mark.parametrize(("code", "status", "cls"), [
    ("NoSuchKey", 404, NotFound),
    ("404", 404, NotFound),
    ("SignatureDoesNotMatch", 403, AuthError),
    ("SlowDown", 503, Throttled),
    ("InternalError", 500, TransientError),
    ("SomethingNew", 502, TransientError),
    ("EntityTooLarge", 400, ObjectTooLarge),
    ("PreconditionFailed", 412, SourceChanged),
    ("BadDigest", 400, IntegrityError),
])
def test_error_table(code: str, status: int, cls: type) -> None:
    exc = bce.ClientError({"Error": {"Code": code, "Message": "m"},
                           "ResponseMetadata": {"HTTPStatusCode": status,
                                                "HTTPHeaders": {"retry-after": "3"}}}, "PutObject")
    mapped = translate_error(exc, backend="s3://b", endpoint="http://e", key="k", op="PutObject")
    assert type(mapped) is cls
    if isinstance(mapped, TransientError):
        assert mapped.retry_after == 3.0
    assert code in str(mapped) and "s3://b" in str(mapped)


# -- server-side copy -----------------------------------------------------------------------


@pytest.fixture
def other_bucket(seaweed: SeaweedFS, s3_bucket: str) -> Iterator[str]:
    name = f"{s3_bucket}-other"
    seaweed.create_bucket(name)
    try:
        yield name
    finally:
        seaweed.delete_bucket_recursive(name)


async def test_server_copy_between_buckets(seaweed: SeaweedFS, s3_bucket: str, other_bucket: str) -> None:
    async with make_backend(seaweed, s3_bucket, "a") as src, make_backend(seaweed, other_bucket, "b") as dst:
        assert dst.same_store(src)
        data = os.urandom(10_000)
        info = await put_bytes(src, "x/obj", data)
        copied = await dst.server_copy(src, info, "y/obj")
        assert copied.key == "y/obj"
        assert copied.size == len(data)
        assert copied.hashes[SHA256] == hashlib.sha256(data).hexdigest()
        assert (await dst.stat("y/obj")).hashes[SHA256] == copied.hashes[SHA256]
        assert await get_bytes(dst, "y/obj") == data


async def test_server_copy_of_changed_source(seaweed: SeaweedFS, s3_bucket: str, other_bucket: str) -> None:
    async with make_backend(seaweed, s3_bucket) as src, make_backend(seaweed, other_bucket) as dst:
        old = await put_bytes(src, "obj", b"one")
        await put_bytes(src, "obj", b"two!")
        with pytest.raises(SourceChanged):
            await dst.server_copy(src, old, "obj")
        assert await keys(dst) == []


async def test_server_copy_in_parts(seaweed: SeaweedFS, s3_bucket: str, other_bucket: str, raw: Any) -> None:
    async with make_backend(seaweed, s3_bucket) as src, make_backend(seaweed, other_bucket) as dst:
        # pretend the 5 GiB CopyObject limit is small, to take the UploadPartCopy path
        dst.single_copy_limit = PART
        dst.copy_part_size = PART
        data = os.urandom(2 * PART + 99)
        sha = hashlib.sha256(data).hexdigest()
        info = await src.put(ObjectInfo(key="big", size=len(data), hashes={SHA256: sha}), body_from_bytes(data))
        copied = await dst.server_copy(src, info, "big-copy")
        assert copied.size == len(data)
        assert copied.hashes[SHA256] == sha
        assert await get_bytes(dst, "big-copy") == data
        assert uploads(raw, other_bucket) == []


async def test_not_same_store_with_other_credentials(seaweed: SeaweedFS, s3_bucket: str) -> None:
    a = make_backend(seaweed, s3_bucket)
    b = make_backend(seaweed, s3_bucket, access_key_id="someone-else")
    c = make_backend(seaweed, s3_bucket, endpoint_url="http://127.0.0.1:1")
    assert a.same_store(make_backend(seaweed, "another-bucket", "p"))
    assert not a.same_store(b)
    assert not a.same_store(c)


# -- keys and listing -----------------------------------------------------------------------


async def test_keys_are_stored_verbatim_under_the_prefix(backend: S3Backend, raw: Any, s3_bucket: str) -> None:
    odd = ["sp ace/ü ñ 漢字.txt", "100%25 %2F.txt", "a+b=c&d.txt", "q?x=1#frag", "~tilde/*star*",
           "/".join(["l" * 200] * 4)]
    for key in odd:
        await put_bytes(backend, key, key.encode())
    stored = sorted(o["Key"] for o in raw.list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert stored == sorted(f"root/dir/{k}" for k in odd)
    assert await keys(backend) == sorted(odd)
    for key in odd:
        assert await get_bytes(backend, key) == key.encode()


async def test_key_over_1024_bytes_is_invalid(backend: S3Backend) -> None:
    with pytest.raises(InvalidKey):
        await put_bytes(backend, "я" * 600, b"x")  # 1200 bytes of UTF-8


async def test_listing_skips_markers_and_other_prefixes(backend: S3Backend, raw: Any, s3_bucket: str) -> None:
    for key in ["root/dir/folder/", "root/dirty", "root/other", "root/dir"]:
        raw.put_object(Bucket=s3_bucket, Key=key, Body=b"")
    await put_bytes(backend, "folder/real", b"r")
    assert await keys(backend) == ["folder/real"]


def test_listing_skips_keys_the_contract_cannot_name(seaweed: SeaweedFS) -> None:
    # SeaweedFS refuses such keys, other servers take them: judge the listed item alone
    b = make_backend(seaweed, "bucket", "p")
    item = {"Key": "p/a//b", "Size": 1, "ETag": '"x"'}
    assert b._listed(item) is None
    assert b._listed({**item, "Key": "p/./c"}) is None
    assert b._listed({**item, "Key": "p/ok"}).key == "ok"  # type: ignore[union-attr]


async def test_listing_order_is_key_order_across_pages_and_levels(seaweed: SeaweedFS, s3_bucket: str) -> None:
    # SeaweedFS lists "a/" and its subtree before "a.txt"; the backend restores byte order
    names = ["a/b", "a/a/z", "a.txt", "a b", "a!/q", "a-b/x", "a-b.txt", "a0", "ab", "b/2", "c",
             "a/b/c/d", "a/b.c", "é", "z/z/z/z"]
    async with make_backend(seaweed, s3_bucket, "o") as b:
        for n in names:
            await put_bytes(b, n, b"x")
        assert await keys(b) == sorted(names)
        assert await keys(b, "a") == sorted(n for n in names if n.startswith("a"))
        assert await keys(b, "a/b") == ["a/b", "a/b.c", "a/b/c/d"]


async def test_unsorted_listing_when_asked(seaweed: SeaweedFS, s3_bucket: str) -> None:
    async with make_backend(seaweed, s3_bucket, sorted_listing=False) as b:
        assert not b.features.sorted_listing
        assert S3Backend.features.sorted_listing
        for n in ["a/b", "a.txt"]:
            await put_bytes(b, n, b"x")
        assert sorted(await keys(b)) == ["a.txt", "a/b"]


async def test_directory_marker_is_not_an_object(backend: S3Backend, raw: Any, s3_bucket: str) -> None:
    raw.put_object(Bucket=s3_bucket, Key="root/dir/folder/", Body=b"")
    with pytest.raises(NotFound):
        await backend.stat("folder")


# -- two servers side by side --------------------------------------------------------------


@pytest.mark.slow
async def test_two_servers_with_different_credentials(seaweed: SeaweedFS, tmp_path: Path) -> None:
    with SeaweedFS(tmp_path / "second", access_key="second", secret_key="second-secret") as other:
        other.create_bucket("second-bucket")
        async with S3Backend("second-bucket", endpoint_url=other.endpoint, access_key_id="second",
                             secret_access_key="second-secret", region=other.region) as b:
            await b.check()
            await put_bytes(b, "k", b"v")
            assert await get_bytes(b, "k") == b"v"
            first = make_backend(seaweed, "second-bucket")
            assert not b.same_store(first)
        # the first server's keys mean nothing to the second one
        async with make_backend(seaweed, "second-bucket", endpoint_url=other.endpoint) as wrong:
            with pytest.raises(AuthError):
                await wrong.check()


# -- the fast path -----------------------------------------------------------------------------


def test_signer_matches_botocore() -> None:
    # same request, same instant: our SigV4 and botocore's must agree byte for byte
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import ReadOnlyCredentials

    from vertexflow.backends.s3.sigv4 import Signer, canonical_query, quote_path

    creds = ReadOnlyCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "token/+=")
    now = 1_700_000_000.0
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    for method, key, params in [("PUT", "sp ace/ü+%25~*?#.txt", {}),
                                ("GET", "", {"list-type": "2", "prefix": "a b/ü+", "delimiter": "/",
                                             "continuation-token": "x+y/z=="})]:
        path = f"/bucket/{quote_path(key)}"
        ours = {"x-amz-meta-sha256": "ab" * 32}
        Signer("eu-west-1").sign(method, "127.0.0.1:9000", path, canonical_query(params), ours, "cd" * 32,
                                 creds, now=now)
        request = AWSRequest(method=method, url=f"http://127.0.0.1:9000{path}", params=params,
                             headers={"host": "127.0.0.1:9000", **{k: v for k, v in ours.items()
                                                                    if k != "authorization"}})
        request.context["timestamp"] = stamp
        auth = S3SigV4Auth(creds, "s3", "eu-west-1")
        signature = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
        assert ours["authorization"].endswith(f"Signature={signature}"), (method, key)


async def test_damaged_small_put_is_refused_by_the_server(backend: S3Backend) -> None:
    # the fast path's Content-MD5 is what SeaweedFS checks (it ignores x-amz-content-sha256)
    import base64

    fast = await backend.fast_client()
    await put_bytes(backend, "k", b"old")
    sent = b"what was sent"
    wrong_md5 = base64.b64encode(hashlib.md5(b"what was meant").digest()).decode()
    with pytest.raises(IntegrityError, match="BadDigest"):
        await backend.call("PutObject", "k", lambda: fast.put_object(
            "root/dir/k", sent, hashlib.sha256(sent).hexdigest(), wrong_md5, {}))
    assert await get_bytes(backend, "k") == b"old"


async def test_fast_path_answers_the_same_as_boto(backend: S3Backend, raw: Any, s3_bucket: str) -> None:
    data = os.urandom(5000)
    stored = await put_bytes(backend, "d/x y+z", data)
    head = raw.head_object(Bucket=s3_bucket, Key="root/dir/d/x y+z")
    info = await backend.stat("d/x y+z")
    assert info.etag == stored.etag == head["ETag"].strip('"')
    assert info.mtime == head["LastModified"]
    assert info.hashes == {SHA256: hashlib.sha256(data).hexdigest(), MD5: hashlib.md5(data).hexdigest()}
    listed = [i async for i in backend.list("d/")]
    assert [(i.key, i.size, i.etag, i.mtime) for i in listed] == [("d/x y+z", 5000, info.etag, info.mtime)]


# -- request counting -------------------------------------------------------------------------


async def test_every_request_is_counted(small_parts: S3Backend) -> None:
    b = small_parts
    start = b.requests
    await put_bytes(b, "small", b"x")                        # PutObject
    await b.stat("small")                                    # HeadObject
    assert await get_bytes(b, "small") == b"x"               # GetObject
    assert b.requests - start == 3
    data = os.urandom(2 * PART + 1)
    before = b.requests
    await put_bytes(b, "big", data)                          # Create, 3 parts, Complete
    assert b.requests - before == 5
    before = b.requests
    assert await get_bytes(b, "big") == data                 # first GET and 2 ranged GETs
    assert b.requests - before == 3
    before = b.requests
    await b.delete("small")                                  # DeleteObject
    assert b.requests - before == 1
    assert b.retries == 0


def walk_pages(raw: Any, bucket: str, prefix: str) -> int:
    """ListObjectsV2 pages a directory-by-directory walk of ``prefix`` takes (SeaweedFS lists that way)."""
    pages = 0
    for page in raw.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        pages += 1
        for common in page.get("CommonPrefixes", ()):
            pages += walk_pages(raw, bucket, common["Prefix"])
    return pages


@pytest.mark.slow
async def test_unchanged_sync_sends_only_listing_requests(seaweed: SeaweedFS, s3_bucket: str, raw: Any,
                                                          tmp_path: Path) -> None:
    from vertexflow.backends.local import LocalBackend
    from vertexflow.ops.sync import SyncJob, SyncOptions
    from vertexflow.state.journal import Journal

    src = tmp_path / "src"
    for d, count in [("a", 1200), ("b", 700), ("b/c", 100)]:  # one directory over a listing page
        (src / d).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            (src / d / f"{i:04d}.txt").write_bytes(os.urandom(i % 700))

    async def run(journal: Journal) -> Any:
        async with LocalBackend(src) as s, make_backend(seaweed, s3_bucket, "sync") as d:
            return await SyncJob(s, d, journal, src_spec=str(src), dst_spec=f"s3://{s3_bucket}/sync",
                                 options=SyncOptions(mode="sync")).run()

    async with await Journal.open(tmp_path / "journal.db") as journal:
        first = await run(journal)
        assert first.done_objects == 2000
        # HeadBucket (the destination check), the listing of the empty prefix, and one PUT each
        assert first.requests == 1 + 1 + 2000
        second = await run(journal)
    assert (second.done_objects, second.skipped_objects) == (0, 2000)
    pages = walk_pages(raw, s3_bucket, "sync/")
    assert pages == 1 + 2 + 1 + 1  # sync/, a/ (two pages), b/, b/c/
    # the destination check and the listing: no request per object
    assert second.requests == 1 + pages


# -- resumable multipart uploads ------------------------------------------------------------


class MemoryCheckpoint:
    """An UploadCheckpoint in memory that remembers every save."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self.state = state
        self.saves: list[dict[str, Any]] = []

    async def load(self) -> dict[str, Any] | None:
        return self.state

    async def save(self, state: Any) -> None:
        self.state = dict(state)
        self.saves.append(self.state)

    async def clear(self) -> None:
        self.state = None


def interrupted_upload(raw: Any, bucket: str, key: str, data: bytes, parts: int, *,
                       part_size: int = PART, sha256: str | None = None,
                       checksum: str = "CRC32") -> dict[str, Any]:
    """Start an upload of ``data`` and send its first ``parts`` parts, as a killed run leaves it; its checkpoint state.

    ``checksum="SHA256"``: as a version that sent SHA-256 part checksums left it (no "checksum" saved).
    """
    import base64

    kwargs: dict[str, Any] = {"Metadata": {"sha256": sha256}} if sha256 else {}
    upload_id = raw.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm=checksum,
                                            **kwargs)["UploadId"]
    saved = []
    for n in range(1, parts + 1):
        part = data[(n - 1) * part_size:n * part_size]
        digest = {"CRC32": zlib.crc32(part).to_bytes(4, "big"), "SHA256": hashlib.sha256(part).digest()}[checksum]
        etag = raw.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=part,
                               **{f"Checksum{checksum}": base64.b64encode(digest).decode()})["ETag"]
        saved.append({"number": n, "etag": etag.strip('"'), "sha256": hashlib.sha256(part).hexdigest(),
                      "size": len(part)})
    state = {"upload_id": upload_id, "part_size": part_size, "sha256": sha256, "parts": saved}
    return state | ({"checksum": checksum} if checksum == "CRC32" else {})


async def test_upload_saves_its_checkpoint_after_each_part(small_parts: S3Backend, raw: Any,
                                                           s3_bucket: str) -> None:
    data = os.urandom(3 * PART + 10)
    checkpoint = MemoryCheckpoint()
    await small_parts.put(ObjectInfo(key="c", size=len(data)), body_from_bytes(data), checkpoint=checkpoint)
    # one save before the upload is asked for (no id yet: when it was asked), one once it exists, then one
    # per part, each holding every part done so far (parts in flight can finish together: a save may
    # already hold the next part too)
    creating, *saves = checkpoint.saves
    assert creating["upload_id"] == "" and abs(creating["creating"] - time.time()) < 60
    counts = [len(s["parts"]) for s in saves]
    assert len(counts) == 5 and counts[0] == 0 and counts[-1] == 4 and saves[0]["upload_id"]
    assert counts == sorted(counts) and all(c >= i for i, c in enumerate(counts))
    last = checkpoint.saves[-1]
    assert last["part_size"] == PART and last["sha256"] is None
    assert [p["sha256"] for p in last["parts"]] == [
        hashlib.sha256(data[i:i + PART]).hexdigest() for i in range(0, len(data), PART)]
    assert checkpoint.state is None  # cleared once completed
    assert uploads(raw, s3_bucket) == []


async def test_resume_sends_only_the_missing_parts(small_parts: S3Backend, raw: Any, s3_bucket: str) -> None:
    data = os.urandom(4 * PART + 7)
    checkpoint = MemoryCheckpoint(interrupted_upload(raw, s3_bucket, "mp/r", data, 2))
    before = small_parts.requests
    stored = await small_parts.put(ObjectInfo(key="r", size=len(data)), chunked_body(data, MiB),
                                   checkpoint=checkpoint)
    # ListParts, parts 3-5, CompleteMultipartUpload
    assert small_parts.requests - before == 1 + 3 + 1
    assert stored.hashes[SHA256] == hashlib.sha256(data).hexdigest()
    assert stored.etag is not None and stored.etag.endswith("-5")
    assert await get_bytes(small_parts, "r") == data
    assert checkpoint.state is None
    assert uploads(raw, s3_bucket) == []


async def test_resume_with_a_changed_source_starts_again(small_parts: S3Backend, raw: Any,
                                                         s3_bucket: str) -> None:
    old = os.urandom(3 * PART)
    checkpoint = MemoryCheckpoint(interrupted_upload(raw, s3_bucket, "mp/r", old, 2))
    new = old[:PART] + os.urandom(2 * PART)  # part 1 the same, part 2 changed
    stored = await small_parts.put(ObjectInfo(key="r", size=len(new)), body_from_bytes(new),
                                   checkpoint=checkpoint)
    assert stored.hashes[SHA256] == hashlib.sha256(new).hexdigest()
    assert await get_bytes(small_parts, "r") == new
    assert checkpoint.state is None
    assert uploads(raw, s3_bucket) == []  # the interrupted upload was aborted


@pytest.mark.parametrize("change", ["part_size", "sha256", "vanished", "sha256 part checksums"])
async def test_unusable_checkpoint_gives_a_fresh_upload(small_parts: S3Backend, raw: Any, s3_bucket: str,
                                                        change: str) -> None:
    data = os.urandom(2 * PART + 3)
    # the upload as this put would resume it, but for the one change
    state = interrupted_upload(raw, s3_bucket, "mp/u", data, 1, sha256=hashlib.sha256(data).hexdigest(),
                               checksum="SHA256" if change == "sha256 part checksums" else "CRC32")
    if change == "part_size":
        state["part_size"] = 1024  # smaller than S3 allows: not a state this backend saved
    elif change == "sha256":
        state["sha256"] = hashlib.sha256(b"an older source").hexdigest()
    elif change == "vanished":
        raw.abort_multipart_upload(Bucket=s3_bucket, Key="mp/u", UploadId=state["upload_id"])
    checkpoint = MemoryCheckpoint(state)
    info = ObjectInfo(key="u", size=len(data), hashes={SHA256: hashlib.sha256(data).hexdigest()})
    await small_parts.put(info, body_from_bytes(data), checkpoint=checkpoint)
    assert await get_bytes(small_parts, "u") == data
    assert checkpoint.saves[0]["upload_id"] != state["upload_id"]
    assert checkpoint.state is None
    assert uploads(raw, s3_bucket) == []  # the old upload, left by a lost run, was aborted


async def test_failed_resumed_upload_is_aborted_and_forgotten(small_parts: S3Backend, raw: Any,
                                                              s3_bucket: str) -> None:
    data = os.urandom(3 * PART)
    checkpoint = MemoryCheckpoint(interrupted_upload(raw, s3_bucket, "mp/f", data, 1))
    with pytest.raises(RuntimeError, match="source broke"):
        await small_parts.put(ObjectInfo(key="f", size=len(data)), failing_body(data, 2 * PART + 1),
                              checkpoint=checkpoint)
    assert checkpoint.state is None
    assert uploads(raw, s3_bucket) == []
