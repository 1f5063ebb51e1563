"""Stages carry what describes an object: a copy with ``--hash``, ``--compress`` or ``--chunk-size`` keeps it.

The stored entry (the object, its ``.zst``, a chunked object's manifest)
holds the source's Content-Type, headers, user metadata and mtime beside the
stages' own records, and a copy that reads it back through the stages
(``--decompress``, ``--reassemble``) gives them to the object it restores.
Copies run as jobs between the suite's SeaweedFS and a second server with
other credentials (streamed, never server-side); what arrived is read with
boto3 and yadisk.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yadisk

from vertexflow.model import mtime_text, parse_mtime_text
from vertexflow.ops.assembly import Transfer
from vertexflow.ops.spec import StageSpec, TransferSettings, TransferSpec
from vertexflow.pipeline.runner import StopSignal
from vertexflow.pipeline.stats import JobStats
from vertexflow.testing.seaweedfs import SeaweedFS
from vertexflow.testing.yandex_disk import YandexDiskEmulator, running_emulator

from ..tenancy.conftest import bucket2, seaweed2  # noqa: F401  (the second server, other credentials)

pytestmark = pytest.mark.s3

MiB = 1024 * 1024
TOKEN = "stages-describe-token"
#: text (SeaweedFS would store text/plain were no Content-Type sent) that zstd halves: still two 32K parts
BODY = os.urandom(48_000).hex().encode()
MTIME = datetime(2021, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
DESCRIBED: dict[str, Any] = {"ContentType": "video/mp4", "CacheControl": "max-age=3600",
                             "ContentDisposition": "inline", "ContentLanguage": "en"}
OWNER = {"owner": "company-7"}

#: each stage option of ``copy --help``, and the stored entry that stands for ``clip.mp4``
STAGES: dict[str, tuple[StageSpec, str]] = {
    "hash": (StageSpec(hash_algorithms="sha256,md5"), "clip.mp4"),
    "stages=hash": (StageSpec(stages="hash"), "clip.mp4"),
    "compress": (StageSpec(compress="zstd:1"), "clip.mp4.zst"),
    "compress-force": (StageSpec(compress="gzip:1", compress_force=True), "clip.mp4.gz"),
    "chunk": (StageSpec(chunk_size="32K"), "clip.mp4.vfchunk/manifest.json"),
    "hash,compress,chunk": (StageSpec(hash_algorithms="md5", compress="zstd:1", chunk_size="32K"),
                            "clip.mp4.zst.vfchunk/manifest.json"),
}


@pytest.fixture
def config(tmp_path: Path, seaweed: SeaweedFS, seaweed2: SeaweedFS) -> Path:  # noqa: F811
    path = tmp_path / "remotes.toml"
    path.write_text("".join(f"""
[remotes.{name}]
type = "s3"
endpoint = "{server.endpoint}"
region = "{server.region}"
access_key_id = "{server.access_key}"
secret_access_key = "{server.secret_key}"
addressing_style = "path"
""" for name, server in (("a", seaweed), ("b", seaweed2))))
    return path


@pytest.fixture
async def emulator() -> AsyncIterator[YandexDiskEmulator]:
    async with running_emulator(token=TOKEN) as emu:
        yield emu


def put_source(seaweed: SeaweedFS, bucket: str, key: str = "src/clip.mp4", body: bytes = BODY) -> None:
    seaweed.boto3_client().put_object(Bucket=bucket, Key=key, Body=body, Metadata={**OWNER, "mtime": mtime_text(MTIME)},
                                      **DESCRIBED)


async def copy(config: Path, src: str, dst: str, stages: StageSpec) -> JobStats:
    spec = TransferSpec(source=src, dest=dst, config_path=str(config), no_journal=True,
                        settings=TransferSettings(stages=stages))
    stats = await Transfer.prepare(spec).run(JobStats(), StopSignal())
    assert not stats.failed_objects and stats.done_objects == 1, stats.summary()
    return stats


def assert_described(head: dict[str, Any]) -> None:
    """A boto3 HeadObject answer holds the source's description."""
    for field, value in DESCRIBED.items():
        assert head.get(field) == value, (field, head.get(field))
    assert head["Metadata"]["owner"] == "company-7"
    assert parse_mtime_text(head["Metadata"].get("mtime")) == MTIME


@pytest.mark.parametrize("stage", list(STAGES))
async def test_a_staged_copy_keeps_the_description_and_gives_it_back(stage: str, config: Path, seaweed: SeaweedFS,
                                                                     s3_bucket: str, seaweed2: SeaweedFS,  # noqa: F811
                                                                     bucket2: str) -> None:  # noqa: F811
    spec, entry = STAGES[stage]
    put_source(seaweed, s3_bucket)
    await copy(config, f"a:{s3_bucket}/src", f"b:{bucket2}/staged", spec)
    other = seaweed2.boto3_client()
    assert_described(other.head_object(Bucket=bucket2, Key=f"staged/{entry}"))
    if entry == "clip.mp4":
        return
    if "vfchunk" in entry:  # a part is a piece of the bytes: the manifest describes the object
        parts = [o["Key"] for o in other.list_objects_v2(Bucket=bucket2, Prefix="staged/")["Contents"]
                 if not o["Key"].endswith("manifest.json")]
        assert len(parts) > 1
        assert "owner" not in other.head_object(Bucket=bucket2, Key=parts[0])["Metadata"]
    # read back through the stages, the restored object is described as the source was
    back = StageSpec(decompress=spec.compress is not None, reassemble=spec.chunk_size is not None)
    await copy(config, f"b:{bucket2}/staged", f"a:{s3_bucket}/restored", back)
    client = seaweed.boto3_client()
    head = client.head_object(Bucket=s3_bucket, Key="restored/clip.mp4")
    assert_described(head)
    assert not {"codec", "content-sha256", "content-size"} & set(head["Metadata"])  # the stages' records stay behind
    assert client.get_object(Bucket=s3_bucket, Key="restored/clip.mp4")["Body"].read() == BODY


async def test_a_multipart_object_through_a_hash_stage_keeps_it(config: Path, seaweed: SeaweedFS, s3_bucket: str,
                                                                seaweed2: SeaweedFS, bucket2: str) -> None:  # noqa: F811
    big = b"plain text in a multipart object\n" * (9 * MiB // 33)  # over the 8 MiB multipart threshold
    put_source(seaweed, s3_bucket, body=big)
    await copy(config, f"a:{s3_bucket}/src", f"b:{bucket2}/staged", StageSpec(hash_algorithms="sha256,md5"))
    head = seaweed2.boto3_client().head_object(Bucket=bucket2, Key="staged/clip.mp4")
    assert_described(head)
    assert head["Metadata"]["content-md5"]  # and the digest the stage took in-stream


async def test_a_staged_copy_to_yandex_disk_keeps_the_user_metadata(config: Path, seaweed: SeaweedFS,
                                                                    s3_bucket: str,
                                                                    emulator: YandexDiskEmulator,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    put_source(seaweed, s3_bucket)
    with config.open("a") as f:
        f.write(f'\n[remotes.yd]\ntype = "yandex_disk"\ntoken = "{TOKEN}"\nbase_url = "{emulator.base_url}"\n'
                f'root = "/"\n')
    await copy(config, f"a:{s3_bucket}/src", "yd:staged", StageSpec(compress="zstd:1"))
    monkeypatch.setattr(yadisk.settings, "BASE_API_URL", emulator.origin)
    async with yadisk.AsyncClient(token=TOKEN, session="aiohttp") as client:
        meta = await client.get_meta("/staged/clip.mp4.zst")
    props = dict(meta.custom_properties or {})
    assert props["owner"] == "company-7" and props["codec"] == "zstd"
    assert parse_mtime_text(props["mtime"]) == MTIME
