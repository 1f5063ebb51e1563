"""What the destination keeps besides the description: storage class, encryption, ACL, tags, types.

The S3 backend is given the job's write settings (``--storage-class``,
``--sse``, ``--acl``, ``--tag``, ``--content-type``, ``--metadata-exclude``)
and writes every object with them: PutObject, a multipart upload, a
server-side copy. What SeaweedFS stored is read back with boto3; where
SeaweedFS keeps nothing to read back (it ignores ``x-amz-acl`` on writes and
has no KMS here), the requests are read as they went on the wire, through a
proxy in front of it.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from vertexflow.backends.s3 import S3Backend
from vertexflow.errors import SettingRefused, TransientError
from vertexflow.model import ObjectInfo, body_from_bytes
from vertexflow.ops.assembly import sync_options
from vertexflow.ops.spec import WRITE_SETTINGS, TransferSettings, TransferSpec
from vertexflow.testing.s3_proxy import Answer, RewritingProxy
from vertexflow.testing.seaweedfs import SeaweedFS

from ..cli.helpers import vf

pytestmark = pytest.mark.s3

MiB = 1024 * 1024
BIG = os.urandom(6 * MiB)  # over the 5 MiB part size below: a multipart upload
TAGGING = "team=render&stage=final%20cut"
TAGS = {"team": "render", "stage": "final cut"}


def creds(server: SeaweedFS, endpoint: str | None = None) -> dict[str, Any]:
    return {"endpoint_url": endpoint or server.endpoint, "region": server.region,
            "access_key_id": server.access_key, "secret_access_key": server.secret_key,
            "part_size": 5 * MiB, "multipart_threshold": 5 * MiB}


def head(server: SeaweedFS, bucket: str, key: str) -> dict[str, Any]:
    return server.boto3_client().head_object(Bucket=bucket, Key=key)  # type: ignore[no-any-return]


def tags_of(server: SeaweedFS, bucket: str, key: str) -> dict[str, str]:
    answer = server.boto3_client().get_object_tagging(Bucket=bucket, Key=key)
    return {t["Key"]: t["Value"] for t in answer["TagSet"]}


def keys(server: SeaweedFS, bucket: str, prefix: str = "") -> list[str]:
    listed = server.boto3_client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


def source_object(server: SeaweedFS, bucket: str, key: str, body: bytes = b"source bytes") -> None:
    server.boto3_client().put_object(Bucket=bucket, Key=key, Body=body, ContentType="video/mp4",
                                     CacheControl="max-age=60", Metadata={"owner": "company-7", "team": "t"},
                                     Tagging=TAGGING)


# -- what is stored ------------------------------------------------------------------------------
@pytest.mark.parametrize("size", ["small", "multipart"])
async def test_put_sets_storage_class_encryption_and_tags(seaweed: SeaweedFS, s3_bucket: str, size: str) -> None:
    data = b"small object" if size == "small" else BIG
    async with S3Backend(s3_bucket, "w", storage_class="STANDARD_IA", sse="AES256", tags={"env": "prod"},
                         **creds(seaweed)) as backend:
        await backend.put(ObjectInfo(key="o.bin", size=len(data), tags={"team": "render"}), body_from_bytes(data))
    got = head(seaweed, s3_bucket, "w/o.bin")
    assert got["StorageClass"] == "STANDARD_IA"
    assert got["ServerSideEncryption"] == "AES256"
    assert tags_of(seaweed, s3_bucket, "w/o.bin") == {"team": "render", "env": "prod"}
    body = seaweed.boto3_client().get_object(Bucket=s3_bucket, Key="w/o.bin")["Body"].read()
    assert body == data


async def test_server_side_copy_gives_the_settings_and_keeps_the_rest(seaweed: SeaweedFS, s3_bucket: str) -> None:
    source_object(seaweed, s3_bucket, "src/clip.mp4")
    c = creds(seaweed)
    async with S3Backend(s3_bucket, "src", **c) as src, \
            S3Backend(s3_bucket, "dst", storage_class="ONEZONE_IA", sse="AES256", **c) as dst:
        copied = await dst.server_copy(src, await src.stat("clip.mp4"), "clip.mp4")
    got = head(seaweed, s3_bucket, "dst/clip.mp4")
    assert copied.size == len(b"source bytes")
    assert (got["StorageClass"], got["ServerSideEncryption"]) == ("ONEZONE_IA", "AES256")
    # directives COPY: the description and the tags are the source's, on the server, at no request
    assert got["ContentType"] == "video/mp4" and got["Metadata"]["owner"] == "company-7"
    assert tags_of(seaweed, s3_bucket, "dst/clip.mp4") == TAGS


@pytest.mark.parametrize("metadata", [True, False])
async def test_tags_set_go_over_the_carried_ones_in_a_server_side_copy(seaweed: SeaweedFS, s3_bucket: str,
                                                                        metadata: bool) -> None:
    source_object(seaweed, s3_bucket, "src/clip.mp4")
    c = creds(seaweed)
    async with S3Backend(s3_bucket, "src", **c) as src, \
            S3Backend(s3_bucket, "dst", tags={"env": "prod", "team": "ops"}, metadata=metadata, **c) as dst:
        await dst.server_copy(src, await src.stat("clip.mp4"), "clip.mp4")
    carried = {"stage": "final cut"} if metadata else {}
    assert tags_of(seaweed, s3_bucket, "dst/clip.mp4") == {**carried, "env": "prod", "team": "ops"}


async def test_server_side_multipart_copy_gives_settings_and_tags(seaweed: SeaweedFS, s3_bucket: str) -> None:
    source_object(seaweed, s3_bucket, "src/big.bin", BIG)
    c = creds(seaweed)
    async with S3Backend(s3_bucket, "src", **c) as src, \
            S3Backend(s3_bucket, "dst", storage_class="STANDARD_IA", sse="AES256", **c) as dst:
        dst.single_copy_limit = dst.copy_part_size = 5 * MiB
        await dst.server_copy(src, await src.stat("big.bin"), "big.bin")
    got = head(seaweed, s3_bucket, "dst/big.bin")
    assert (got["StorageClass"], got["ServerSideEncryption"]) == ("STANDARD_IA", "AES256")
    assert got["ContentType"] == "video/mp4" and got["Metadata"]["owner"] == "company-7"
    assert tags_of(seaweed, s3_bucket, "dst/big.bin") == TAGS


async def test_content_type_patterns_and_metadata_exclude(seaweed: SeaweedFS, s3_bucket: str) -> None:
    c = creds(seaweed)
    rules = (("*.fset3", "application/x-fset3"), ("models/**", "model/gltf-binary"))
    async with S3Backend(s3_bucket, "w", content_types=rules, metadata_exclude=("cache-control", "own*"),
                         **c) as backend:
        for key in ("a/marker.fset3", "models/x.bin", "a/clip.mp4"):
            await backend.put(ObjectInfo(key=key, size=4, content_type="video/mp4",
                                         headers={"cache-control": "no-cache", "content-language": "en"},
                                         metadata={"owner": "company-7", "team": "t"}), body_from_bytes(b"abcd"))
    types = {k: head(seaweed, s3_bucket, f"w/{k}")["ContentType"] for k in ("a/marker.fset3", "models/x.bin",
                                                                           "a/clip.mp4")}
    assert types == {"a/marker.fset3": "application/x-fset3", "models/x.bin": "model/gltf-binary",
                     "a/clip.mp4": "video/mp4"}
    got = head(seaweed, s3_bucket, "w/a/clip.mp4")
    assert "CacheControl" not in got and got["ContentLanguage"] == "en"
    assert "owner" not in got["Metadata"] and got["Metadata"]["team"] == "t"
    assert "sha256" in got["Metadata"]  # vertexflow's own is never excluded


async def test_a_server_side_copy_of_a_matching_key_replaces_the_type_only(seaweed: SeaweedFS,
                                                                           s3_bucket: str) -> None:
    source_object(seaweed, s3_bucket, "src/m.fset3")
    c = creds(seaweed)
    async with S3Backend(s3_bucket, "src", **c) as src, \
            S3Backend(s3_bucket, "dst", content_types=(("*.fset3", "application/x-fset3"),), **c) as dst:
        await dst.server_copy(src, await src.stat("m.fset3"), "m.fset3")
    got = head(seaweed, s3_bucket, "dst/m.fset3")
    assert got["ContentType"] == "application/x-fset3"
    assert got["CacheControl"] == "max-age=60" and got["Metadata"]["owner"] == "company-7"
    assert tags_of(seaweed, s3_bucket, "dst/m.fset3") == TAGS


async def test_excluded_metadata_is_not_read_either(seaweed: SeaweedFS, s3_bucket: str) -> None:
    source_object(seaweed, s3_bucket, "src/clip.mp4")
    async with S3Backend(s3_bucket, "src", metadata_exclude=("owner", "content-type"), **creds(seaweed)) as src:
        info = await src.stat("clip.mp4")
    assert "owner" not in info.metadata and info.metadata["team"] == "t"
    assert info.content_type is None and info.headers == {"cache-control": "max-age=60"}


# -- on the wire: what SeaweedFS keeps nothing of --------------------------------------------------
@pytest.fixture
async def proxy(seaweed: SeaweedFS) -> AsyncIterator[RewritingProxy]:
    async with RewritingProxy(seaweed.endpoint, lambda answer: None) as p:
        yield p


def writes(proxy: RewritingProxy) -> list[Answer]:
    """The requests that created objects: PutObject (not a part), CreateMultipartUpload, CopyObject."""
    return [a for a in proxy.seen if (a.method == "PUT" and "partNumber=" not in a.path_qs)
            or (a.method == "POST" and a.path_qs.endswith("?uploads="))]


async def test_the_acl_goes_with_every_write(seaweed: SeaweedFS, s3_bucket: str, proxy: RewritingProxy) -> None:
    """SeaweedFS 4.48 takes x-amz-acl on writes and keeps nothing of it (its GetObjectAcl answers the
    owner's grant only; PutObjectAcl alone sets grants): the requests are what can be checked."""
    source_object(seaweed, s3_bucket, "src/clip.mp4")
    async with S3Backend(s3_bucket, "src", **creds(seaweed, proxy.endpoint)) as src, \
            S3Backend(s3_bucket, "dst", acl="public-read", **creds(seaweed, proxy.endpoint)) as dst:
        await dst.put(ObjectInfo(key="small.bin", size=5), body_from_bytes(b"small"))
        await dst.put(ObjectInfo(key="big.bin", size=len(BIG)), body_from_bytes(BIG))
        await dst.server_copy(src, await src.stat("clip.mp4"), "clip.mp4")
    sent = writes(proxy)
    assert len(sent) == 3 and all(a.status == 200 for a in sent)
    assert [a.request_headers.get("x-amz-acl") for a in sent] == ["public-read"] * 3
    assert keys(seaweed, s3_bucket, "dst/") == ["dst/big.bin", "dst/clip.mp4", "dst/small.bin"]


async def test_an_sse_kms_key_goes_with_the_write(seaweed: SeaweedFS, s3_bucket: str, proxy: RewritingProxy) -> None:
    """SeaweedFS without a KMS answers SSE-KMS with 500 InternalError (measured), which is retried as any
    500 and then fails the object: nothing is stored, and the request carried the key."""
    async with S3Backend(s3_bucket, "w", sse="aws:kms", sse_kms_key_id="alias/media",
                         **creds(seaweed, proxy.endpoint)) as backend:
        with pytest.raises(TransientError, match="InternalError"):
            await backend.put(ObjectInfo(key="k.bin", size=3), body_from_bytes(b"kms"))
    sent = writes(proxy)
    assert sent and all(a.request_headers.get("x-amz-server-side-encryption") == "aws:kms" for a in sent)
    assert all(a.request_headers.get("x-amz-server-side-encryption-aws-kms-key-id") == "alias/media" for a in sent)
    assert keys(seaweed, s3_bucket, "w/") == []


# -- refused ---------------------------------------------------------------------------------------
async def test_a_storage_class_the_server_refuses_stops_the_job(seaweed: SeaweedFS, s3_bucket: str) -> None:
    """EXPRESS_ONEZONE is an S3 class SeaweedFS refuses (InvalidStorageClass): every object would be."""
    async with S3Backend(s3_bucket, "w", storage_class="EXPRESS_ONEZONE", **creds(seaweed)) as backend:
        with pytest.raises(SettingRefused, match="storage class EXPRESS_ONEZONE") as refused:
            await backend.put(ObjectInfo(key="o.bin", size=2), body_from_bytes(b"no"))
    assert refused.value.fatal
    assert keys(seaweed, s3_bucket) == []


def test_bad_write_settings_exit_2_and_write_nothing(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str,
                                                     seaweed: SeaweedFS) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    cases = {
        ("--storage-class", "standard_ia"): "--storage-class 'standard_ia': not a storage class S3 documents",
        ("--storage-class", "COLD"): "not a storage class S3 documents",
        ("--tag", "k"): "--tag 'k': expected KEY=VALUE",
        ("--tag", "k" * 129 + "=v"): "has 129 characters, S3 takes 1 to 128",
        ("--tag", "k=" + "v" * 257): "has 257 characters, S3 takes at most 256",
        ("--sse-kms-key-id", "alias/x"): "--sse-kms-key-id: a KMS key is for --sse aws:kms",
        ("--metadata-set", "x-amz-storage-class=GLACIER"): "x-amz-storage-class is not a header",
        ("--metadata-set", "content-length=4"): "content-length is not a header",
        ("--metadata-set", "x-amz-meta-owner=a"): "without its x-amz-meta- prefix (owner=a)",
        ("--metadata-set", "sha256=00"): "sha256 is vertexflow's own metadata",
        ("--metadata-set", "expires=soon"): "Expires is an HTTP date",
        ("--metadata-exclude", "tier=GLACIER"): "rclone's option of this name skips objects",
        ("--content-type", "*.fset3"): "expected PATTERN=TYPE",
        ("--content-type", "*.fset3=binary"): "'binary' is not a media type",
    }
    eleven = [arg for i in range(11) for arg in ("--tag", f"k{i}=v")]
    runs = [(list(args), expected) for args, expected in cases.items()]
    runs.append((eleven, "--tag: 11 tags, S3 keeps at most 10"))
    for args, expected in runs:
        r = vf("copy", str(tmp_path / "src"), f"s3://{s3_bucket}/dst", *args)
        assert r.code == 2, (args, r.err)
        assert expected in r.err, (args, r.err)
    assert keys(seaweed, s3_bucket) == []


# -- the job's identity ------------------------------------------------------------------------------
def test_write_settings_make_another_job_and_come_back_with_it() -> None:
    given = {"storage_class": "GLACIER_IR", "sse": "aws:kms", "sse_kms_key_id": "alias/k", "acl": "private",
             "tags": ("env=prod",), "content_types": ("*.glb=model/gltf-binary",), "metadata_exclude": ("owner",)}
    base = sync_options(TransferSpec(source="/a", dest="/b"), local_only=True).fingerprint()
    prints = {json.dumps(base, sort_keys=True)}
    for name, value in given.items():
        extra = {"sse": "aws:kms"} if name == "sse_kms_key_id" else {}
        spec = TransferSpec(source="/a", dest="/b", settings=TransferSettings(**{name: value, **extra}))
        prints.add(json.dumps(sync_options(spec, local_only=True).fingerprint(), sort_keys=True))
        assert TransferSpec.from_dict(spec.to_dict()).settings == spec.settings
    assert len(prints) == len(given) + 1
    assert "storage_class" not in json.dumps(base)  # jobs that ask for none keep their identity
    # the first --content-type that matches decides: their order is part of the job
    one = TransferSettings(content_types=("*.x=a/b", "**=c/d")).metadata_identity()
    other = TransferSettings(content_types=("**=c/d", "*.x=a/b")).metadata_identity()
    assert one != other


def test_the_s3_backend_takes_every_write_setting(seaweed: SeaweedFS) -> None:
    assert S3Backend.features.write_settings == WRITE_SETTINGS
    settings = TransferSettings(storage_class="STANDARD_IA", sse="aws:kms", sse_kms_key_id="alias/k",
                                acl="public-read", tags=("env=prod",), content_types=("*.glb=model/gltf-binary",),
                                metadata_exclude=("owner",), metadata=False)
    options = settings.backend_options(S3Backend.features)
    assert set(options) == {*WRITE_SETTINGS, "metadata", "metadata_set"}
    S3Backend("bucket", **options, **creds(seaweed))  # takes them all


# -- end to end: the command line ---------------------------------------------------------------------
def test_copy_writes_with_the_options(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str,
                                      seaweed: SeaweedFS) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "marker.fset3").write_bytes(b"marker")
    r = vf("copy", str(tmp_path / "src"), f"s3://{s3_bucket}/dst", "--storage-class", "STANDARD_IA",
           "--sse", "AES256", "--tag", "env=prod", "--content-type", "*.fset3=application/x-fset3",
           "--metadata-exclude", "mtime")
    assert r.code == 0, r.err
    got = head(seaweed, s3_bucket, "dst/marker.fset3")
    assert (got["StorageClass"], got["ServerSideEncryption"]) == ("STANDARD_IA", "AES256")
    assert got["ContentType"] == "application/x-fset3" and "mtime" not in got["Metadata"]
    assert tags_of(seaweed, s3_bucket, "dst/marker.fset3") == {"env": "prod"}


def test_copy_with_a_refused_storage_class_exits_2_and_writes_nothing(tmp_path: Path, s3_env: dict[str, str],
                                                                      s3_bucket: str, seaweed: SeaweedFS) -> None:
    (tmp_path / "src").mkdir()
    for i in range(5):
        (tmp_path / "src" / f"f{i}.txt").write_text(f"file {i}")
    r = vf("copy", str(tmp_path / "src"), f"s3://{s3_bucket}/dst", "--storage-class", "EXPRESS_ONEZONE")
    assert r.code == 2, r.err
    assert "refuses the storage class EXPRESS_ONEZONE" in r.err
    assert keys(seaweed, s3_bucket) == []
