"""The rclone options on the job spec: JSON both ways, which are part of a job's identity, and a resumed job
running with them (``jobs resume`` reads the spec the journal kept)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vertexflow.errors import ConfigError
from vertexflow.filters import Filter
from vertexflow.ops.spec import TransferSettings, TransferSpec
from vertexflow.ops.sync import SyncOptions

from ..cli.helpers import vf


def full_spec() -> TransferSpec:
    return TransferSpec(mode="sync", source="/a", dest="s3://b/p", delete=True, ignore_existing=False, update=True,
                        immutable=True, backup_dir="s3://b/old", create_empty_src_dirs=True, links="store",
                        filter=Filter(include=("*.jpg",), files=frozenset({"x/1.jpg", "y/2.jpg"})),
                        settings=TransferSettings(max_transfer="10G", max_duration="1h30m", cutoff_mode="cautious"))


def test_spec_json_both_ways() -> None:
    spec = full_spec()
    text = json.dumps(spec.to_dict())
    back = TransferSpec.from_dict(json.loads(text))
    assert back.to_dict() == spec.to_dict()
    assert back.filter.files == frozenset({"x/1.jpg", "y/2.jpg"}) and back.settings.limits() == (10 * 1024 ** 3, 5400)
    assert Filter.from_dict(spec.filter.describe()).files == spec.filter.files  # what a cluster shard is sent


def test_a_spec_recorded_before_the_options_reads_with_their_defaults() -> None:
    old = {"mode": "copy", "source": "/a", "dest": "/b", "settings": {"transfers": 4, "stages": {}},
           "filter": {"include": [], "exclude": []}}
    spec = TransferSpec.from_dict(old)
    assert (spec.links, spec.backup_dir, spec.settings.max_transfer, spec.filter.files) == ("skip", None, None, None)
    assert SyncOptions(spec=spec).fingerprint() == SyncOptions().fingerprint()


def test_what_changes_what_is_stored_is_in_the_identity_and_limits_are_not() -> None:
    base = TransferSpec(source="/a", dest="/b")

    def fp(spec: TransferSpec) -> dict:
        return SyncOptions(mode=spec.mode, filter=spec.filter, spec=spec).fingerprint()

    assert fp(base) == fp(TransferSpec(source="/a", dest="/b",
                                       settings=TransferSettings(max_transfer="1G", cutoff_mode="soft")))
    for changed in ({"links": "follow"}, {"ignore_existing": True}, {"immutable": True}, {"update": True},
                    {"create_empty_src_dirs": True}):
        assert fp(base) != fp(TransferSpec(source="/a", dest="/b", **changed)), changed
    files = TransferSpec(source="/a", dest="/b", filter=Filter(files=frozenset(f"k{i}" for i in range(10_000))))
    described = json.dumps(fp(files))
    assert "files_sha256" in described and len(described) < 2000  # the keys by their digest


@pytest.mark.parametrize(("kw", "words"), [
    ({"settings": {"max_transfer": "lots"}}, "--max-transfer"),
    ({"settings": {"cutoff_mode": "gentle"}}, "--cutoff-mode 'gentle'"),
    ({"links": "sometimes"}, "links"),
    ({"backup_dir": "/x"}, "only a sync"),
])
def test_a_bad_spec_names_the_option(kw: dict, words: str) -> None:
    data = {"mode": "copy", "source": "/a", "dest": "/b", **kw}
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        TransferSpec.from_dict(data)


def test_jobs_resume_runs_with_the_options_the_job_was_given(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}.bin").write_bytes(os.urandom(300 * 1024))
    (src / "alias").symlink_to("f0.bin")
    r = vf("copy", str(src), str(tmp_path / "dst"), "--links", "--max-transfer", "700k", "--transfers", "1",
           "--cutoff-mode", "cautious", "--json")
    assert r.code == 8, r.err
    assert json.loads(r.out)["objects"] == 3  # the link and two files: the third would pass 700k
    job = json.loads(r.out)["job_id"]
    resumed = vf("jobs", "resume", str(job), "--json")
    assert resumed.code == 0, resumed.err
    assert json.loads(resumed.out)["resumed"] is True
    assert os.readlink(tmp_path / "dst" / "alias") == "f0.bin"  # local to local: the link as a link
    assert sorted(os.listdir(tmp_path / "dst")) == ["alias", "f0.bin", "f1.bin", "f2.bin"]


def test_limits_are_refused_on_a_cluster(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--cluster", "local:1", "--max-duration", "1h")
    assert r.code == 2 and "--cluster" in r.err and not (tmp_path / "dst").exists()
