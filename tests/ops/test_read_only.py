"""A destination that refuses every write stops the job at once (exit 2, one message), not one failure per object."""

from __future__ import annotations

from pathlib import Path

import pytest

from vertexflow.testing.sample_tree import make_tree
from vertexflow.testing.seaweedfs import SeaweedFS

from ..cli.helpers import vf

pytestmark = pytest.mark.s3


def test_read_only_credentials_stop_the_copy_with_one_message(tmp_path: Path, seaweed: SeaweedFS, s3_bucket: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(tmp_path / "src", files=300)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.reader_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.reader_secret)
    monkeypatch.setenv("AWS_REGION", seaweed.region)
    monkeypatch.setenv("AWS_ENDPOINT_URL", seaweed.endpoint)
    r = vf("copy", str(tmp_path / "src"), f"s3://{s3_bucket}/ro", "--json")
    assert r.code == 2, r.err
    assert "refuses writes" in r.err and "AccessDenied" in r.err
    summary = r.json()
    assert summary["objects"] == 0 and summary["failed"] < 50  # stopped early, not 300 failures
    assert len(r.err.splitlines()) < 60
    # the same key may read: a copy from the bucket works
    raw = seaweed.boto3_client()
    raw.put_object(Bucket=s3_bucket, Key="in/a.txt", Body=b"readable")
    down = vf("copy", f"s3://{s3_bucket}/in", str(tmp_path / "down"))
    assert down.code == 0, down.err
    assert (tmp_path / "down" / "a.txt").read_bytes() == b"readable"
