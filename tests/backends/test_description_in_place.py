"""``set_description``: what describes an object changes without its bytes being sent again.

S3 (the suite's SeaweedFS) and the Yandex.Disk emulator, read back with boto3
and yadisk: the object's bytes stay, its own metadata (the SHA-256
vertexflow keeps) stays, the description given replaces the one it had.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import yadisk

from vertexflow.backends.s3 import S3Backend
from vertexflow.backends.yandex import YandexDiskBackend
from vertexflow.errors import NotFound, SourceChanged
from vertexflow.model import ObjectInfo, body_from_bytes, mtime_text, parse_mtime_text
from vertexflow.testing.s3_proxy import Answer, RewritingProxy
from vertexflow.testing.seaweedfs import SeaweedFS
from vertexflow.testing.yandex_disk import YandexDiskEmulator, running_emulator

pytestmark = pytest.mark.s3

MiB = 1024 * 1024
TOKEN = "describe-in-place-token"
WHEN = datetime(2021, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
WANTED = ObjectInfo(key="clip.mp4", size=None, content_type="video/mp4",
                    headers={"cache-control": "max-age=3600", "content-disposition": "inline"},
                    metadata={"owner": "company-7"}, mtime=WHEN)


def s3(seaweed: SeaweedFS, bucket: str, endpoint: str | None = None) -> S3Backend:
    return S3Backend(bucket, "p", endpoint_url=endpoint or seaweed.endpoint, region=seaweed.region,
                     access_key_id=seaweed.access_key, secret_access_key=seaweed.secret_key,
                     part_size=5 * MiB, multipart_threshold=5 * MiB)


@pytest.mark.parametrize("size", [1000, 6 * MiB], ids=["single-part", "multipart"])
async def test_s3_describes_an_object_anew_with_one_copy_onto_itself(seaweed: SeaweedFS, s3_bucket: str,
                                                                     size: int) -> None:
    data = b"plain text\n" * (size // 11)
    seen: list[Answer] = []
    async with RewritingProxy(seaweed.endpoint, seen.append) as proxy, s3(seaweed, s3_bucket, proxy.endpoint) as b:
        await b.put(ObjectInfo(key="clip.mp4", size=len(data), metadata={"stale": "x"}), body_from_bytes(data))
        version = (await b.stat("clip.mp4")).version
        before = seaweed.boto3_client().head_object(Bucket=s3_bucket, Key="p/clip.mp4")["Metadata"]
        own = {k: v for k, v in before.items() if k == "sha256"}  # a multipart upload of unknown digest keeps none
        seen.clear()
        assert await b.set_description("clip.mp4", WANTED, if_version=version)
    # a HeadObject and one CopyObject: no byte of the object sent again
    assert [(a.method, "x-amz-copy-source" in a.request_headers) for a in seen] == [("HEAD", False), ("PUT", True)]
    client = seaweed.boto3_client()
    head = client.head_object(Bucket=s3_bucket, Key="p/clip.mp4")
    assert head["ContentType"] == "video/mp4"
    assert head["CacheControl"] == "max-age=3600" and head["ContentDisposition"] == "inline"
    assert head["Metadata"] == {"owner": "company-7", "mtime": mtime_text(WHEN), **own}  # "stale" gone, its own kept
    assert size > 5 * MiB or own == {"sha256": hashlib.sha256(data).hexdigest()}
    assert client.get_object(Bucket=s3_bucket, Key="p/clip.mp4")["Body"].read() == data


async def test_s3_refuses_a_changed_object_and_declines_one_beyond_a_copy(seaweed: SeaweedFS, s3_bucket: str) -> None:
    client = seaweed.boto3_client()
    client.put_object(Bucket=s3_bucket, Key="p/clip.mp4", Body=b"old", ContentType="text/plain")
    async with s3(seaweed, s3_bucket) as b:
        version = (await b.stat("clip.mp4")).version
        client.put_object(Bucket=s3_bucket, Key="p/clip.mp4", Body=b"new", ContentType="text/plain")
        with pytest.raises(SourceChanged):
            await b.set_description("clip.mp4", WANTED, if_version=version)
        b.single_copy_limit = 2  # an object over what one CopyObject copies: sent again by the caller
        assert not await b.set_description("clip.mp4", WANTED)
        with pytest.raises(NotFound):
            await b.set_description("absent.mp4", WANTED)
    assert client.head_object(Bucket=s3_bucket, Key="p/clip.mp4")["ContentType"] == "text/plain"


async def test_s3_gives_the_storage_class_again(seaweed: SeaweedFS, s3_bucket: str) -> None:
    """A CopyObject takes the bucket's default class unless given one (AWS; SeaweedFS keeps it): it is given."""
    client = seaweed.boto3_client()
    client.put_object(Bucket=s3_bucket, Key="p/clip.mp4", Body=b"data", StorageClass="STANDARD_IA")
    seen: list[Answer] = []
    async with RewritingProxy(seaweed.endpoint, seen.append) as proxy, s3(seaweed, s3_bucket, proxy.endpoint) as b:
        assert await b.set_description("clip.mp4", WANTED)
    copy = [a for a in seen if a.method == "PUT"]
    assert [a.request_headers.get("x-amz-storage-class") for a in copy] == ["STANDARD_IA"]
    head = client.head_object(Bucket=s3_bucket, Key="p/clip.mp4")
    assert head["StorageClass"] == "STANDARD_IA" and head["ContentType"] == "video/mp4"


@pytest.fixture
async def emulator(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[YandexDiskEmulator]:
    async with running_emulator(token=TOKEN) as emu:
        monkeypatch.setattr(yadisk.settings, "BASE_API_URL", emu.origin)
        yield emu


async def test_yandex_disk_sets_the_custom_properties_and_removes_the_others(emulator: YandexDiskEmulator) -> None:
    async with yadisk.AsyncClient(token=TOKEN, session="aiohttp") as disk:
        async with YandexDiskBackend("/d", token=TOKEN, base_url=emulator.base_url) as b:
            await b.check(write=True)
            await b.put(ObjectInfo(key="clip.mp4", size=4, metadata={"stale": "x", "owner": "someone"}),
                        body_from_bytes(b"data"))
            before = await b.stat("clip.mp4")
            assert await b.set_description("clip.mp4", WANTED, if_version=before.version)
            with pytest.raises(SourceChanged):
                await b.set_description("clip.mp4", WANTED, if_version="rev:0")
        meta = await disk.get_meta("/d/clip.mp4")
        props = dict(meta.custom_properties or {})
        assert props.pop("sha256", None) in (None, hashlib.sha256(b"data").hexdigest())  # its own, if kept, stays
        assert parse_mtime_text(props.pop("mtime")) == WHEN
        assert props == {"owner": "company-7"}
        assert meta.mime_type == "video/mp4"  # named from the file name, as ever: it cannot be given
        assert meta.sha256 == hashlib.sha256(b"data").hexdigest()
