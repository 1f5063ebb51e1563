"""The command line against the bundled Yandex.Disk emulator, run as users run it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vertexflow.testing.sample_tree import make_tree, trees_equal
from vertexflow.testing.yandex_disk.process import emulator_process

from .helpers import vf

TOKEN = "cli-token-7c1e"


@pytest.fixture
def emulator_url(tmp_path: Path) -> Iterator[str]:
    with emulator_process("--token", TOKEN, "--data-dir", str(tmp_path / "yd-state")) as url:
        yield url


def test_copy_to_yandex_and_back(tmp_path: Path, emulator_url: str) -> None:
    make_tree(tmp_path / "src", files=40)
    (tmp_path / "src" / "имя с пробелом.txt").write_text("unicode")
    env = {"YANDEX_DISK_TOKEN": TOKEN, "YANDEX_DISK_API_URL": emulator_url}
    up = vf("copy", str(tmp_path / "src"), "yadisk:/Backups/media", "--json", env=env)
    assert up.code == 0, up.err
    assert up.json()["objects"] == 41
    listing = vf("ls", "yadisk:/Backups/media", env=env)
    assert "имя с пробелом.txt" in listing.out
    down = vf("copy", "yadisk:/Backups/media", str(tmp_path / "back"), env=env)
    assert down.code == 0, down.err
    assert trees_equal(tmp_path / "src", tmp_path / "back") == []
    again = vf("sync", str(tmp_path / "src"), "yadisk:/Backups/media", "--json", env=env).json()
    assert again["objects"] == 0 and again["skipped"] == 41


def test_wrong_token_exit_2_without_leaking(tmp_path: Path, emulator_url: str) -> None:
    make_tree(tmp_path / "src", files=2)
    r = vf("copy", str(tmp_path / "src"), "yadisk:/x",
           env={"YANDEX_DISK_TOKEN": "wrong-token-abcdef", "YANDEX_DISK_API_URL": emulator_url})
    assert r.code == 2
    assert "wrong-token-abcdef" not in r.out + r.err
    assert "auth" in r.err.lower() or "unauthorized" in r.err.lower() or "token" in r.err.lower()


def test_missing_token_is_a_config_error(tmp_path: Path) -> None:
    r = vf("ls", "yadisk:/x", env={"YANDEX_DISK_TOKEN": ""})
    assert r.code == 2 and "YANDEX_DISK_TOKEN" in r.err


def test_one_file_of_yandex_disk_is_a_source(tmp_path: Path, emulator_url: str) -> None:
    """``copy yadisk:/dir/file.txt DST`` copies that file (the disk says "no such folder" of a file)."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "file.txt").write_text("one file")
    env = {"YANDEX_DISK_TOKEN": TOKEN, "YANDEX_DISK_API_URL": emulator_url}
    assert vf("copy", str(tmp_path / "src"), "yadisk:/dir", env=env).code == 0
    r = vf("copy", "yadisk:/dir/file.txt", str(tmp_path / "dst"), env=env)
    assert r.code == 0, r.err
    assert (tmp_path / "dst" / "file.txt").read_text() == "one file"
    r = vf("copy", "yadisk:/dir/none.txt", str(tmp_path / "dst2"), env=env)
    assert r.code == 2 and "no such folder" in r.err, r.err
