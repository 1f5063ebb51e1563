"""``verify --metadata``: objects whose bytes match but whose description differs, and ``--fix`` of them.

The source is the suite's SeaweedFS, the destination a second server with
other credentials (or the Yandex.Disk emulator); both are set up and read
back with boto3 and yadisk.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yadisk

from vertexflow.backends.s3 import S3Backend
from vertexflow.backends.yandex import YandexDiskBackend
from vertexflow.model import mtime_text, parse_mtime_text
from vertexflow.ops.verify import VerifyJob, same_description, verify_and_fix
from vertexflow.testing.s3_proxy import Answer, RewritingProxy
from vertexflow.testing.seaweedfs import SeaweedFS
from vertexflow.testing.yandex_disk import YandexDiskEmulator, running_emulator

from ..cli.helpers import vf
from ..tenancy.conftest import bucket2, seaweed2  # noqa: F401  (the second server, other credentials)

pytestmark = pytest.mark.s3

TOKEN = "verify-metadata-token"
WHEN = datetime(2021, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
DESCRIBED: dict[str, Any] = {"ContentType": "video/mp4", "CacheControl": "max-age=3600",
                             "ContentDisposition": "inline",
                             "Metadata": {"owner": "company-7", "mtime": mtime_text(WHEN)}}


def body(name: str) -> bytes:
    return f"plain text of {name}\n".encode() * 50


def changed(**what: Any) -> dict[str, Any]:
    """DESCRIBED with ``what`` over it (a None value: left out); ``meta`` is merged into the user metadata."""
    out = {**DESCRIBED, "Metadata": {**DESCRIBED["Metadata"], **what.pop("meta", {})}, **what}
    out["Metadata"] = {k: v for k, v in out["Metadata"].items() if v is not None}
    return {k: v for k, v in out.items() if v is not None}


#: key -> (the destination's description, the parts verify --metadata finds differing)
CASES: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "same.mp4": (DESCRIBED, ()),
    "own-records.mp4": (changed(meta={"sha256": "0" * 64, "codec": "zstd"}), ()),  # vertexflow's own: not compared
    "mtime-within.mp4": (changed(meta={"mtime": mtime_text(WHEN + timedelta(seconds=0.5))}), ()),
    "type.mp4": (changed(ContentType="text/plain"), ("content-type",)),
    "headers.mp4": (changed(CacheControl=None, ContentLanguage="en"), ("headers",)),
    "meta.mp4": (changed(meta={"owner": "company-8", "stale": "x"}), ("metadata",)),
    "mtime.mp4": (changed(meta={"mtime": mtime_text(WHEN + timedelta(hours=1))}), ("mtime",)),
    "no-mtime.mp4": (changed(meta={"mtime": None}), ("mtime",)),
    "all.mp4": ({}, ("content-type", "headers", "metadata", "mtime")),
}

DIFFERING = [key for key, (_, parts) in CASES.items() if parts]


def populate(src: SeaweedFS, src_bucket: str, dst: SeaweedFS, dst_bucket: str) -> None:
    a, b = src.boto3_client(), dst.boto3_client()
    for key, (described, _) in CASES.items():
        a.put_object(Bucket=src_bucket, Key=f"src/{key}", Body=body(key), **DESCRIBED)
        b.put_object(Bucket=dst_bucket, Key=f"dst/{key}", Body=body(key), **described)
    a.put_object(Bucket=src_bucket, Key="src/bytes.mp4", Body=body("bytes"), **DESCRIBED)
    b.put_object(Bucket=dst_bucket, Key="dst/bytes.mp4", Body=body("other"), ContentType="text/plain")


def backend(server: SeaweedFS, bucket: str, prefix: str, endpoint: str | None = None) -> S3Backend:
    return S3Backend(bucket, prefix, endpoint_url=endpoint or server.endpoint, region=server.region,
                     access_key_id=server.access_key, secret_access_key=server.secret_key)


async def test_descriptions_are_compared_only_when_asked(seaweed: SeaweedFS, s3_bucket: str,
                                                         seaweed2: SeaweedFS, bucket2: str) -> None:  # noqa: F811
    populate(seaweed, s3_bucket, seaweed2, bucket2)
    async with backend(seaweed, s3_bucket, "src") as src, backend(seaweed2, bucket2, "dst") as dst:
        plain = await VerifyJob(src, dst).run()
        described = await VerifyJob(src, dst, metadata=True).run()
        assert await same_description(src, dst, "same.mp4") and not await same_description(src, dst, "mtime.mp4")
    assert (plain.matched, plain.different, plain.metadata) == (len(CASES), 1, 0)
    assert "metadata_different" not in plain.as_dict()
    found = {p.key: p.parts for p in described.problems if p.kind == "metadata"}
    assert found == {key: parts for key, (_, parts) in CASES.items() if parts}
    assert described.metadata == len(found) and described.different == 1 and not described.ok
    assert described.matched == len(CASES) - len(found)
    detail = {p.key: p.detail for p in described.problems}
    assert detail["type.mp4"] == "Content-Type 'video/mp4' at source, 'text/plain' at destination"
    assert "cache-control 'max-age=3600' at source, none at destination" in detail["headers.mp4"]
    assert "content-language none at source, 'en' at destination" in detail["headers.mp4"]
    assert "user metadata stale none at source, 'x' at destination" in detail["meta.mp4"]
    assert detail["no-mtime.mp4"] == "mtime 2021-05-06T07:08:09.123456Z at source, none at destination"


async def test_fix_describes_anew_in_place_and_sends_only_different_bytes(seaweed: SeaweedFS, s3_bucket: str,
                                                                          seaweed2: SeaweedFS,  # noqa: F811
                                                                          bucket2: str) -> None:  # noqa: F811
    populate(seaweed, s3_bucket, seaweed2, bucket2)
    seen: list[Answer] = []
    async with RewritingProxy(seaweed2.endpoint, seen.append) as proxy, \
            backend(seaweed, s3_bucket, "src") as src, backend(seaweed2, bucket2, "dst", proxy.endpoint) as dst:
        result = await verify_and_fix(src, dst, fix=True, metadata=True)
    assert result["before_fix"]["metadata_different"] == len(DIFFERING)
    assert (result["fixed_in_place"], result["fixed"]) == (len(DIFFERING), len(DIFFERING) + 1)
    assert result["ok"] and result["metadata_different"] == 0
    # one object's bytes sent (the one whose bytes differed); every other write a CopyObject onto itself
    writes = [a for a in seen if a.method == "PUT"]
    assert sum("x-amz-copy-source" not in a.request_headers for a in writes) == 1
    assert sum("x-amz-copy-source" in a.request_headers for a in writes) == len(DIFFERING)
    client = seaweed2.boto3_client()
    for key in [*CASES, "bytes.mp4"]:
        head = client.head_object(Bucket=bucket2, Key=f"dst/{key}")
        assert head["ContentType"] == "video/mp4" and head["CacheControl"] == "max-age=3600", key
        assert "ContentLanguage" not in head, key
        assert head["Metadata"]["owner"] == "company-7" and "stale" not in head["Metadata"], key
        mtime = parse_mtime_text(head["Metadata"]["mtime"])
        assert mtime is not None and abs(mtime - WHEN) <= timedelta(seconds=1), key
        data = client.get_object(Bucket=bucket2, Key=f"dst/{key}")["Body"].read()
        assert data == body(key if key != "bytes.mp4" else "bytes"), key


def write_config(path: Path, servers: dict[str, SeaweedFS]) -> Path:
    path.write_text("".join(f"""
[remotes.{name}]
type = "s3"
endpoint = "{server.endpoint}"
region = "{server.region}"
access_key_id = "{server.access_key}"
secret_access_key = "{server.secret_key}"
addressing_style = "path"
""" for name, server in servers.items()))
    return path


def test_cli_reports_in_text_json_and_exit_status(tmp_path: Path, seaweed: SeaweedFS, s3_bucket: str,
                                                  seaweed2: SeaweedFS, bucket2: str) -> None:  # noqa: F811
    populate(seaweed, s3_bucket, seaweed2, bucket2)
    config = str(write_config(tmp_path / "remotes.toml", {"a": seaweed, "b": seaweed2}))
    src, dst = f"a:{s3_bucket}/src", f"b:{bucket2}/dst"
    seaweed2.boto3_client().put_object(Bucket=bucket2, Key="dst/bytes.mp4", Body=body("bytes"), **DESCRIBED)  # same
    text = vf("--config", config, "verify", src, dst, "--metadata")
    assert text.code == 1 and "described differently" in text.out and "MISMATCH" in text.err
    assert "type.mp4" in text.out
    report = vf("--config", config, "verify", src, dst, "--metadata", "--json")
    assert report.code == 1
    got = report.json()
    assert got["metadata_different"] == len(DIFFERING) and got["different"] == 0
    assert {p["key"]: p["parts"] for p in got["problems"]}["all.mp4"] == ["content-type", "headers", "metadata",
                                                                         "mtime"]
    fixed = vf("--config", config, "verify", src, dst, "--metadata", "--fix")
    assert fixed.code == 0 and f"described anew in place {len(DIFFERING)}" in fixed.out  # and verified again
    refused = vf("--config", config, "verify", src, dst, "--metadata", "--cluster", "local:1")
    assert refused.code == 2 and "--metadata" in refused.err and "--cluster" in refused.err


@pytest.fixture
async def emulator(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[YandexDiskEmulator]:
    async with running_emulator(token=TOKEN) as emu:
        monkeypatch.setattr(yadisk.settings, "BASE_API_URL", emu.origin)
        yield emu


async def test_s3_to_yandex_disk_compares_what_both_keep_and_patches_it(seaweed: SeaweedFS, s3_bucket: str,
                                                                        emulator: YandexDiskEmulator) -> None:
    client = seaweed.boto3_client()
    for key in ("same.mp4", "meta.mp4", "mtime.mp4"):
        client.put_object(Bucket=s3_bucket, Key=f"src/{key}", Body=body(key), **DESCRIBED)
    async with yadisk.AsyncClient(token=TOKEN, session="aiohttp") as disk:
        await disk.makedirs("/dst")
        for key, props in (("same.mp4", {"owner": "company-7", "mtime": mtime_text(WHEN)}),
                           ("meta.mp4", {"owner": "someone", "mtime": mtime_text(WHEN), "stale": "x"}),
                           ("mtime.mp4", {"owner": "company-7"})):
            await disk.upload(io.BytesIO(body(key)), f"/dst/{key}")
            await disk.patch(f"/dst/{key}", props)
        async with backend(seaweed, s3_bucket, "src") as src, \
                YandexDiskBackend("/dst", token=TOKEN, base_url=emulator.base_url) as dst:
            # Content-Type and headers: Yandex.Disk has no place for them (it names its own type)
            first = await VerifyJob(src, dst, metadata=True).run()
            assert {p.key: p.parts for p in first.problems} == {"meta.mp4": ("metadata",), "mtime.mp4": ("mtime",)}
            result = await verify_and_fix(src, dst, fix=True, metadata=True)
        assert result["fixed_in_place"] == 2 and result["ok"]
        for key in ("meta.mp4", "mtime.mp4"):
            meta = await disk.get_meta(f"/dst/{key}")
            props = dict(meta.custom_properties or {})
            assert props["owner"] == "company-7" and "stale" not in props
            assert parse_mtime_text(props["mtime"]) == WHEN
            assert meta.sha256 == hashlib.sha256(body(key)).hexdigest()
