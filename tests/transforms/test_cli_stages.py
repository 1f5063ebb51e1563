"""The stage, bandwidth and adaptive options of ``copy`` and ``sync``, run as the real command."""

from __future__ import annotations

from pathlib import Path

import pytest

from vertexflow.testing.sample_tree import trees_equal
from vertexflow.transforms.chunking import Manifest

from ..cli.helpers import vf
from .helpers import make_stage_tree

STAGES = ["--compress", "zstd:3", "--chunk-size", "64K", "--hash", "sha256,md5"]


def test_copy_with_stages_and_back(tmp_path: Path) -> None:
    files = make_stage_tree(tmp_path / "src")
    up = vf("copy", str(tmp_path / "src"), str(tmp_path / "stored"), *STAGES, "--json")
    assert up.code == 0, up.err
    summary = up.json()
    assert summary["objects"] == len(files) and summary["failed"] == 0
    t = summary["transforms"]
    assert t["bytes_saved"] > 0 and t["chunked_objects"] >= 1 and t["skipped_by_format"] == {"jpeg": 1, "mp4": 1}
    assert (tmp_path / "stored" / "text/notes.txt.zst.vfchunk/manifest.json").is_file()
    down = vf("copy", str(tmp_path / "stored"), str(tmp_path / "back"), "--decompress", "--reassemble", "--json")
    assert down.code == 0, down.err
    assert down.json()["objects"] == len(files)
    assert trees_equal(tmp_path / "src", tmp_path / "back") == []


def test_human_summary_says_what_was_saved(tmp_path: Path) -> None:
    make_stage_tree(tmp_path / "src")
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "stored"), "--compress", "gzip:6", env={"COLUMNS": "200"})
    assert r.code == 0, r.err
    assert "transforms" in r.out and "saved" in r.out and "already compressed" in r.out


def test_a_repeated_sync_through_stages_skips_everything(tmp_path: Path) -> None:
    files = make_stage_tree(tmp_path / "src")
    args = ["sync", str(tmp_path / "src"), str(tmp_path / "stored"), *STAGES, "--json"]
    assert vf(*args).code == 0
    again = vf(*args)
    assert again.code == 0, again.err
    assert again.json()["objects"] == 0 and again.json()["skipped"] == len(files)


def test_the_stage_order_is_the_users(tmp_path: Path) -> None:
    make_stage_tree(tmp_path / "src")
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "stored"), "--stages", "chunk,compress",
           "--chunk-size", "64K", "--json")
    assert r.code == 0, r.err
    manifest = Manifest.from_json((tmp_path / "stored" / "rand.bin.vfchunk/manifest.json").read_bytes())
    assert manifest.encoding == () and all(p.codecs == ("zstd",) for p in manifest.parts)


def test_a_corrupt_part_fails_that_object_by_name(tmp_path: Path) -> None:
    make_stage_tree(tmp_path / "src")
    assert vf("copy", str(tmp_path / "src"), str(tmp_path / "stored"), "--chunk-size", "64K").code == 0
    folder = tmp_path / "stored" / "rand.bin.vfchunk"
    part = folder / Manifest.from_json((folder / "manifest.json").read_bytes()).parts[1].key
    part.write_bytes(b"X" + part.read_bytes()[1:])
    r = vf("copy", str(tmp_path / "stored"), str(tmp_path / "back"), "--reassemble")
    assert r.code == 1
    assert "FAILED rand.bin: [corrupt]" in r.err and "part 2 of 4" in r.err
    assert not (tmp_path / "back" / "rand.bin").exists()


@pytest.mark.parametrize("args,message", [
    (["--compress", "lz4"], "use zstd[:1-19] or gzip[:1-9]"),
    (["--compress", "zstd:25"], "zstd levels are 1-19"),
    (["--stages", "hash,zip"], "--stages 'hash,zip'"),
    (["--stages", "chunk", "--compress", "zstd"], "leaves out compress"),
    (["--chunk-size", "10"], "--chunk-size must be at least"),
    (["--hash", "sha256,crc"], "unknown algorithm 'crc'"),
    (["--bwlimit", "25:00,1M"], "no such time of day"),
    (["--bwlimit-up", "1M:2M"], "not UP:DOWN"),
])
def test_bad_options_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "src").mkdir()
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "dst"), *args)
    assert r.code == 2 and message in r.err, r.err


def test_bwlimit_slows_the_copy_to_the_rate(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.bin").write_bytes(b"\x01" * (3 * 1024 * 1024))
    (tmp_path / "src" / "b.bin").write_bytes(b"\x02" * (1024 * 1024))
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--bwlimit", "2M", "--json")
    assert r.code == 0, r.err
    assert 1.9 <= r.json()["seconds"] < 3.0  # 4 MiB at 2 MiB/s
    assert r.json()["bwlimit"] == {"up": "2M", "down": "2M", "up_bytes": 4 * 1024 * 1024,
                                   "down_bytes": 4 * 1024 * 1024}
    assert trees_equal(tmp_path / "src", tmp_path / "dst") == []


def test_a_remotes_bwlimit_from_the_config(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.bin").write_bytes(b"\x01" * (3 * 1024 * 1024))
    config = tmp_path / "config.toml"
    config.write_text(f'[remotes.slow]\ntype = "local"\npath = "{tmp_path / "nas"}"\nbwlimit = "2M"\n')
    r = vf("--config", str(config), "copy", str(tmp_path / "src"), "slow:backup", "--json")
    assert r.code == 0, r.err
    assert 1.4 <= r.json()["seconds"] < 2.5  # 3 MiB at 2 MiB/s
    assert (tmp_path / "nas" / "backup" / "a.bin").stat().st_size == 3 * 1024 * 1024


@pytest.mark.s3
def test_stages_to_s3_and_back(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str) -> None:
    files = make_stage_tree(tmp_path / "src")
    up = vf("copy", str(tmp_path / "src"), f"s3://{s3_bucket}/stored", *STAGES, "--json")
    assert up.code == 0, up.err
    summary = up.json()
    assert summary["objects"] == len(files)
    (report,) = summary["concurrency"].values()  # adaptive is on for the remote store, off for local disk
    assert report["max"] == 16 and report["peak_in_flight"] >= 1
    down = vf("copy", f"s3://{s3_bucket}/stored", str(tmp_path / "back"), "--decompress", "--reassemble", "--json")
    assert down.code == 0, down.err
    assert trees_equal(tmp_path / "src", tmp_path / "back") == []
