"""One namespace: storage_config.json's connections named as remotes by the transfer commands."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from vertexflow.testing.seaweedfs import SeaweedFS

from ..cli.helpers import vf
from .conftest import minio_conn

pytestmark = pytest.mark.s3


def _platform(tmp_path: Path, seaweed2: SeaweedFS, bucket2: str) -> Path:
    (tmp_path / "platform/storage/portraits/acme").mkdir(parents=True)
    (tmp_path / "platform/storage/portraits/acme/a.jpg").write_bytes(b"jpeg" * 1000)
    cfg = tmp_path / "platform/storage_config.json"
    cfg.write_text(json.dumps({"portraits": {"storage_type": "local"},
                               "local": {"base_path": "storage"},  # relative to the storage config, as the platform reads it
                               "connections": {"minio-b": minio_conn(seaweed2, bucket2),
                                               "nas": {"type": "local", "path": str(tmp_path / "nas")}}}))
    return cfg


def test_connections_are_remotes_for_copy_ls_and_verify(tmp_path: Path, seaweed2: SeaweedFS, bucket2: str) -> None:
    cfg = _platform(tmp_path, seaweed2, bucket2)
    env = {"VERTEXFLOW_STORAGE_CONFIG": str(cfg)}
    r = vf("copy", "local:portraits", "minio-b:backup/portraits", "--no-progress", env=env)
    assert r.code == 0, r.err
    s3 = boto3.client("s3", endpoint_url=seaweed2.endpoint, aws_access_key_id=seaweed2.access_key,
                      aws_secret_access_key=seaweed2.secret_key, region_name=seaweed2.region)
    assert s3.get_object(Bucket=bucket2, Key="backup/portraits/acme/a.jpg")["Body"].read() == b"jpeg" * 1000
    r = vf("ls", "minio-b:backup/portraits/acme", env=env)
    assert r.code == 0 and "a.jpg" in r.out, r.err
    assert vf("copy", "minio-b:backup", "nas:", "--no-progress", env=env).code == 0
    assert (tmp_path / "nas/portraits/acme/a.jpg").read_bytes() == b"jpeg" * 1000
    assert vf("verify", "local:portraits", "nas:portraits", env=env).code == 0
    # without the storage config in view the name is unknown, and the message says where it looked
    r = vf("ls", "minio-b:backup")
    assert r.code == 2 and "unknown remote 'minio-b'" in r.err


def test_the_config_file_names_the_storage_config_and_a_clash_names_both(tmp_path: Path, seaweed2: SeaweedFS,
                                                                        bucket2: str) -> None:
    cfg = _platform(tmp_path, seaweed2, bucket2)
    conf = tmp_path / "platform/vertexflow.toml"
    conf.write_text('storage_config = "storage_config.json"\n'  # relative to the config file
                    '[remotes.archive]\ntype = "local"\npath = "' + str(tmp_path / "archive") + '"\n')
    r = vf("--config", str(conf), "copy", "local:portraits", "archive:p", "--no-progress")
    assert r.code == 0, r.err
    assert (tmp_path / "archive/p/acme/a.jpg").exists()
    r = vf("--config", str(conf), "jobs", "list", "--json")
    assert r.code == 0, r.err
    conf.write_text(conf.read_text() + '[remotes.nas]\ntype = "local"\npath = "/tmp/elsewhere"\n')
    r = vf("--config", str(conf), "ls", "nas:")
    assert r.code == 2, r.out
    assert "remote 'nas' is defined twice" in r.err and str(conf) in r.err and "connections.nas" in r.err
    assert not Path("/tmp/elsewhere").exists()
