"""The rclone options where Yandex.Disk differs (real folders, listed digests), against the bundled emulator;
what was written is read back with the yadisk client."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yadisk

from vertexflow.testing.yandex_disk.process import emulator_process

from .helpers import vf

TOKEN = "options-token-4d2a"


@pytest.fixture
def yandex(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[dict[str, str], yadisk.Client]]:
    with emulator_process("--token", TOKEN, "--data-dir", str(tmp_path / "yd-state")) as url:
        monkeypatch.setattr(yadisk.settings, "BASE_API_URL", url.removesuffix("/v1/disk"))
        with yadisk.Client(token=TOKEN, session="requests") as disk:
            yield {"YANDEX_DISK_TOKEN": TOKEN, "YANDEX_DISK_API_URL": url}, disk


def test_create_empty_src_dirs_both_ways(tmp_path: Path, yandex: tuple[dict[str, str], yadisk.Client]) -> None:
    env, disk = yandex
    src = tmp_path / "src"
    (src / "full").mkdir(parents=True)
    (src / "full" / "a.txt").write_bytes(b"a")
    (src / "empty" / "nested").mkdir(parents=True)
    r = vf("copy", str(src), "yadisk:/up", "--create-empty-src-dirs", env=env)
    assert r.code == 0, r.err
    assert disk.is_dir("/up/empty/nested") and disk.is_file("/up/full/a.txt")
    disk.mkdir("/up/made-there")
    r = vf("copy", "yadisk:/up", str(tmp_path / "down"), "--create-empty-src-dirs", env=env)
    assert r.code == 0, r.err
    assert (tmp_path / "down" / "made-there").is_dir() and (tmp_path / "down" / "empty" / "nested").is_dir()
    assert (tmp_path / "down" / "full" / "a.txt").read_bytes() == b"a"


def test_ls_long_shows_the_digests_yandex_lists(tmp_path: Path, yandex: tuple[dict[str, str], yadisk.Client]) -> None:
    env, disk = yandex
    data = os.urandom(5000)
    (tmp_path / "f.bin").write_bytes(data)
    disk.upload(str(tmp_path / "f.bin"), "/f.bin")
    r = vf("ls", "--long", "yadisk:/", env=env)
    assert r.code == 0, r.err
    line = next(line for line in r.out.splitlines() if line.endswith("  f.bin"))
    assert f"md5:{hashlib.md5(data).hexdigest()}" in line and f"sha256:{hashlib.sha256(data).hexdigest()}" in line


def test_max_transfer_to_yandex_and_a_rerun_finishes(tmp_path: Path,
                                                     yandex: tuple[dict[str, str], yadisk.Client]) -> None:
    env, disk = yandex
    files = {f"f{i}.bin": os.urandom(200 * 1024) for i in range(4)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    args = ["copy", str(tmp_path), "yadisk:/limited", "--transfers", "1", "--json", "--exclude", "yd-state/**"]
    r = vf(*args, "--max-transfer", "300k", "--cutoff-mode", "soft", env=env)
    assert r.code == 8, r.err
    assert json.loads(r.out)["objects"] == 2
    r = vf(*args, env=env)
    assert r.code == 0, r.err
    assert {name: disk.get_meta(f"/limited/{name}").sha256 for name in files} == \
        {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
