"""The command line against the bundled Yandex.Disk emulator, run as users run it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vertexflow.testing.sample_tree import make_tree, trees_equal

from .helpers import vf

TOKEN = "cli-token-7c1e"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def emulator_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "vertexflow", "emulate", "yandex-disk", "--port", str(port),
                             "--token", TOKEN, "--data-dir", str(tmp_path / "yd-state")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("the emulator did not start")
        yield f"http://127.0.0.1:{port}/v1/disk"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


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
