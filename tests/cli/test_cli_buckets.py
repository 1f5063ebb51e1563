"""``mkdir s3://B`` makes a bucket (one that exists is fine), ``rmdir s3://B`` removes an empty one and refuses
one with objects, ``lsd s3://`` lists them: the real command against SeaweedFS, checked with boto3."""

from __future__ import annotations

import os

import pytest

from vertexflow.testing.seaweedfs import SeaweedFS

from .helpers import vf

pytestmark = [pytest.mark.s3]


def buckets(seaweed: SeaweedFS) -> list[str]:
    return [b["Name"] for b in seaweed.boto3_client().list_buckets()["Buckets"]]


def test_mkdir_lsd_and_rmdir_of_a_bucket(s3_env: dict[str, str], seaweed: SeaweedFS) -> None:
    name = f"vf-made-{os.getpid()}"
    assert name not in buckets(seaweed)
    dry = vf("mkdir", f"s3://{name}", "--dry-run")
    assert dry.code == 0 and "would make bucket" in dry.err and name not in buckets(seaweed)
    made = vf("mkdir", f"s3://{name}")
    assert made.code == 0, made.err
    assert "made bucket" in made.err and name in buckets(seaweed)
    again = vf("mkdir", f"s3://{name}")
    assert again.code == 0 and "exists" in again.err

    listed = vf("lsd", "s3://", "--json")
    assert listed.code == 0, listed.err
    assert name in [b["name"] for b in listed.json()]

    seaweed.boto3_client().put_object(Bucket=name, Key="a/b.txt", Body=b"x")
    refused = vf("rmdir", f"s3://{name}")
    assert refused.code == 2 and "not empty" in refused.err
    assert name in buckets(seaweed)
    assert seaweed.boto3_client().get_object(Bucket=name, Key="a/b.txt")["Body"].read() == b"x"

    seaweed.boto3_client().delete_object(Bucket=name, Key="a/b.txt")
    assert vf("rmdir", f"s3://{name}", "--dry-run").code == 0 and name in buckets(seaweed)
    removed = vf("rmdir", f"s3://{name}")
    assert removed.code == 0, removed.err
    assert "removed bucket" in removed.err and name not in buckets(seaweed)
    missing = vf("rmdir", f"s3://{name}")
    assert missing.code == 2 and "does not exist" in missing.err
