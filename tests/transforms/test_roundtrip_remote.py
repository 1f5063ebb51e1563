"""Stages over S3 (SeaweedFS) and Yandex.Disk (the emulator): every order round-trips."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from vertexflow.backends.s3 import S3Backend
from vertexflow.middleware.stages import TransformedBackend
from vertexflow.model import ObjectInfo, body_from_bytes
from vertexflow.testing.seaweedfs import SeaweedFS
from vertexflow.transforms import Stages

from .helpers import ORDERS, round_trip, stages_for, stored_keys


def s3(seaweed: SeaweedFS, bucket: str, prefix: str, **kw: object) -> S3Backend:
    return S3Backend(bucket, prefix, endpoint_url=seaweed.endpoint, region=seaweed.region,
                     access_key_id=seaweed.access_key, secret_access_key=seaweed.secret_key, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def bucket(seaweed: SeaweedFS, s3_bucket: str) -> AsyncIterator[S3Backend]:
    async with s3(seaweed, s3_bucket, "stored") as b:
        yield b


@pytest.mark.s3
@pytest.mark.parametrize("order", ORDERS)
async def test_every_order_round_trips_over_s3(tmp_path: Path, bucket: S3Backend, order: str) -> None:
    await round_trip(bucket, stages_for(order), tmp_path)


@pytest.mark.s3
async def test_s3_multipart_parts_and_etag_md5_check(tmp_path: Path, seaweed: SeaweedFS, s3_bucket: str) -> None:
    # chunks above S3's multipart threshold: every part is itself a multipart upload
    part = 6 * 1024 * 1024
    async with s3(seaweed, s3_bucket, "mp", part_size=5 * 1024 * 1024, multipart_threshold=5 * 1024 * 1024) as store:
        data = bytes(range(256)) * (2 * part // 256 + 1000)
        view = TransformedBackend(store, Stages.from_options(chunk_size=part))
        result = await view.put(ObjectInfo(key="video.mp4", size=len(data)), body_from_bytes(data))
        assert result.hashes["sha256"] == hashlib.sha256(data).hexdigest()
        assert len([k for k in await stored_keys(store) if k.startswith("video.mp4.vfchunk/")]) == 3 + 1
        async with view.open("video.mp4") as chunks:
            assert b"".join([c async for c in chunks]) == data
        # hash after compress, next to the store: the MD5 an S3 single-part ETag reports is compared
        small = TransformedBackend(store, stages_for("compress,hash"))
        text = b"checked against the ETag " * 1000
        stored = await small.put(ObjectInfo(key="t.txt", size=len(text)), body_from_bytes(text))
        assert stored.hashes["sha256"] == hashlib.sha256(text).hexdigest()


@pytest.mark.parametrize("order", ["hash,compress,chunk", "chunk,compress,hash", "compress", "chunk"])
async def test_orders_round_trip_over_yandex_disk(tmp_path: Path, order: str) -> None:
    from vertexflow.backends.yandex import YandexDiskBackend
    from vertexflow.testing.yandex_disk import running_emulator

    async with running_emulator() as emu:
        async with YandexDiskBackend("/stages", token="t", base_url=emu.base_url) as yd:
            await round_trip(yd, stages_for(order), tmp_path)
            keys = await stored_keys(yd)
    if "chunk" in order:  # parts of 64 KiB: many small uploads through the emulator
        assert any(k.endswith(".vfchunk/manifest.json") for k in keys)


@pytest.mark.s3
async def test_codec_and_digests_are_kept_as_s3_user_metadata(seaweed: SeaweedFS, s3_bucket: str) -> None:
    text = b"metadata rides along with the object " * 2000
    digests = {"sha256": hashlib.sha256(text).hexdigest(), "md5": hashlib.md5(text).hexdigest()}
    async with s3(seaweed, s3_bucket, "meta") as store:
        view = TransformedBackend(store, stages_for("hash,compress", hashes="sha256,md5,blake3"))
        await view.put(ObjectInfo(key="notes.txt", size=len(text)), body_from_bytes(text))
        # an independent client sees what a user of any S3 tool would
        head = seaweed.boto3_client().head_object(Bucket=s3_bucket, Key="meta/notes.txt.zst")
        meta = head["Metadata"]
        assert meta["codec"] == "zstd"
        assert meta["content-sha256"] == digests["sha256"] and meta["content-md5"] == digests["md5"]
        assert len(meta["content-blake3"]) == 64 and meta["content-size"] == str(len(text))
        # the stored bytes' own SHA-256 stays where the backend checks downloads against it
        assert meta["sha256"] != digests["sha256"]
        # a stat through the view gives the content's size and digests back without reading it
        info = await view.stat("notes.txt")
        assert info.size == len(text) and info.hashes["md5"] == digests["md5"]
        # chunk parts carry nothing; the manifest carries the whole's digests
        chunked = TransformedBackend(store, Stages.from_options(hashes="sha256,md5", chunk_size=len(text) // 3))
        await chunked.put(ObjectInfo(key="big.bin", size=len(text)), body_from_bytes(text))
        keys = [k for k in await stored_keys(store) if k.startswith("big.bin.vfchunk/")]
        manifest = [k for k in keys if k.endswith("manifest.json")]
        assert len(manifest) == 1 and len(keys) >= 4
        client = seaweed.boto3_client()
        assert client.head_object(Bucket=s3_bucket, Key=f"meta/{manifest[0]}")["Metadata"]["content-md5"] == digests["md5"]
        part = next(k for k in keys if k not in manifest)
        assert "content-md5" not in client.head_object(Bucket=s3_bucket, Key=f"meta/{part}")["Metadata"]


async def test_codec_and_digests_are_kept_as_yandex_disk_custom_properties() -> None:
    import aiohttp

    from vertexflow.backends.yandex import YandexDiskBackend
    from vertexflow.testing.yandex_disk import running_emulator

    text = b"properties ride along with the file " * 2000
    async with running_emulator() as emu:
        async with YandexDiskBackend("/meta", token="t", base_url=emu.base_url) as yd:
            view = TransformedBackend(yd, stages_for("hash,compress", hashes="sha256,md5"))
            await view.put(ObjectInfo(key="notes.txt", size=len(text)), body_from_bytes(text))
            # the listing brings the properties: the content's size is known without reading it
            listed = [info async for info in view.list()]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{emu.base_url}/resources", params={"path": "disk:/meta/notes.txt.zst"},
                                headers={"Authorization": "OAuth t"}) as resp:
                props = (await resp.json())["custom_properties"]
    assert props["codec"] == "zstd" and props["content-md5"] == hashlib.md5(text).hexdigest()
    assert props["content-sha256"] == hashlib.sha256(text).hexdigest()
    assert [(i.key, i.size, i.hashes["md5"]) for i in listed] == [("notes.txt", len(text), props["content-md5"])]


@pytest.mark.s3
async def test_a_multipart_object_gets_its_in_stream_digests_after_completion(seaweed: SeaweedFS,
                                                                              s3_bucket: str) -> None:
    data = bytes(range(256)) * (6 * 1024 * 1024 // 256 + 7)  # above the 5 MiB threshold: sent in parts
    mib5 = 5 * 1024 * 1024
    async with s3(seaweed, s3_bucket, "mpmeta", part_size=mib5, multipart_threshold=mib5) as store:
        view = TransformedBackend(store, Stages.from_options(hashes="sha256,md5,xxh128"))
        result = await view.put(ObjectInfo(key="clip.mov", size=len(data)), body_from_bytes(data))
        head = seaweed.boto3_client().head_object(Bucket=s3_bucket, Key="mpmeta/clip.mov")
        assert head["Metadata"]["content-md5"] == hashlib.md5(data).hexdigest()
        assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert len(head["Metadata"]["content-xxh128"]) == 32
        # the version handed back is the object's after the rewrite: the journal matches it
        assert result.version == head["ETag"].strip('"')
        async with view.open("clip.mov") as chunks:
            assert b"".join([c async for c in chunks]) == data
