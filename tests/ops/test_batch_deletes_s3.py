"""Deletes on S3 go a thousand keys a request (DeleteObjects), each key's failure its own.

Against the real SeaweedFS: the requests are counted on the wire by the
fault proxy in pass-through mode (no fault drawn), what is left is read with
boto3, and a key the store refuses is named with its own error.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from vertexflow.backends.s3 import S3Backend
from vertexflow.errors import AccessDenied
from vertexflow.ops.deletes import Deleter
from vertexflow.ops.files import delete_objects, objects_at
from vertexflow.testing.faults import fault_proxy
from vertexflow.testing.seaweedfs import SeaweedFS

from ..cli.helpers import vf

pytestmark = [pytest.mark.s3]


def put_many(seaweed: SeaweedFS, bucket: str, keys: list[str]) -> None:
    client = seaweed.boto3_client()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=k.encode()), keys))


def keys_left(seaweed: SeaweedFS, bucket: str, prefix: str = "") -> list[str]:
    pages = seaweed.boto3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def deletes_sent(identities: list[str]) -> int:
    """DeleteObjects requests (POST /bucket?delete) among the requests the proxy saw."""
    return sum(1 for i in identities if i.startswith("POST ") and "?delete" in i)


def test_delete_of_2500_objects_takes_three_requests(s3_env: dict[str, str], s3_bucket: str,
                                                     seaweed: SeaweedFS) -> None:
    keys = [f"p/{n:05d}.txt" for n in range(2500)]
    put_many(seaweed, s3_bucket, [*keys, "keep/me.txt"])
    with fault_proxy(int(seaweed.endpoint.rsplit(":", 1)[1]), seed=1, rates={}) as proxy:
        dry = vf("delete", f"s3://{s3_bucket}/p", "--dry-run", env={"AWS_ENDPOINT_URL": proxy.endpoint})
        assert dry.code == 0, dry.err
        assert "would delete 2,500 objects" in dry.err and deletes_sent(proxy.identities) == 0
        refused = vf("delete", f"s3://{s3_bucket}/p", "--max-delete", "2499", env={"AWS_ENDPOINT_URL": proxy.endpoint})
        assert refused.code == 2 and "--max-delete" in refused.err
        assert deletes_sent(proxy.identities) == 0 and len(keys_left(seaweed, s3_bucket, "p/")) == 2500
        done = vf("delete", f"s3://{s3_bucket}/p", "--json", env={"AWS_ENDPOINT_URL": proxy.endpoint})
        assert done.code == 0, done.err
        assert done.json()["deleted"] == 2500 and done.json()["failed"] == 0
        assert deletes_sent(proxy.identities) == 3
        assert not any(i.startswith("DELETE ") for i in proxy.identities)  # no single DeleteObject
    assert keys_left(seaweed, s3_bucket) == ["keep/me.txt"]


def test_sync_delete_batches_its_deletes(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str,
                                         seaweed: SeaweedFS) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "stays.txt").write_text("stays")
    put_many(seaweed, s3_bucket, [f"d/extra-{n:04d}" for n in range(1200)])
    with fault_proxy(int(seaweed.endpoint.rsplit(":", 1)[1]), seed=1, rates={}) as proxy:
        run = vf("sync", str(src), f"s3://{s3_bucket}/d", "--delete", "--json",
                 env={"AWS_ENDPOINT_URL": proxy.endpoint})
        assert run.code == 0, run.err
        assert run.json()["deleted"] == 1200
        assert deletes_sent(proxy.identities) == 2
    assert keys_left(seaweed, s3_bucket) == ["d/stays.txt"]


async def test_a_key_the_store_refuses_is_a_failure_of_its_own(seaweed: SeaweedFS, s3_bucket: str) -> None:
    put_many(seaweed, s3_bucket, ["r/a", "r/b"])
    reader = S3Backend(s3_bucket, "r", endpoint_url=seaweed.endpoint, region=seaweed.region,
                       access_key_id=seaweed.reader_key, secret_access_key=seaweed.reader_secret)
    async with reader:
        failed = await Deleter(reader).delete(["a", "b"])
        assert sorted(failed) == ["a", "b"]
        assert all(isinstance(exc, AccessDenied) and exc.key == key for key, exc in failed.items())
        assert "AccessDenied" in str(failed["a"])
    assert keys_left(seaweed, s3_bucket) == ["r/a", "r/b"]

    admin = S3Backend(s3_bucket, "r", endpoint_url=seaweed.endpoint, region=seaweed.region,
                      access_key_id=seaweed.access_key, secret_access_key=seaweed.secret_key)
    async with admin:
        report = await delete_objects(admin, objects_at(admin, None))
        assert report.deleted == 2 and report.failed == 0
        assert await admin.delete_many(["a", "never-was"]) == {}  # absent keys are deleted as asked
    assert keys_left(seaweed, s3_bucket) == []


def test_move_deletes_its_proven_sources_in_batches(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str,
                                                    seaweed: SeaweedFS) -> None:
    keys = [f"m/{n:04d}.txt" for n in range(1200)]
    put_many(seaweed, s3_bucket, keys)
    with fault_proxy(int(seaweed.endpoint.rsplit(":", 1)[1]), seed=1, rates={}) as proxy:
        run = vf("move", f"s3://{s3_bucket}/m", str(tmp_path / "dst"), "--json",
                 env={"AWS_ENDPOINT_URL": proxy.endpoint}, timeout=300)
        assert run.code == 0, run.err
        assert deletes_sent(proxy.identities) == 2
        assert not any(i.startswith("DELETE ") for i in proxy.identities)
    assert keys_left(seaweed, s3_bucket) == []
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == [k.split("/")[1] for k in keys]
    assert (tmp_path / "dst" / "0007.txt").read_text() == "m/0007.txt"
