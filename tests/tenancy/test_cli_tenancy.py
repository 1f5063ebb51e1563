"""``vertexflow company`` and ``vertexflow migrate`` as a user runs them (subprocesses, emulator process)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from vertexflow.testing.yandex_disk.process import emulator_process

from ..cli.helpers import vf


@pytest.fixture
def emulator_url() -> Iterator[str]:
    with emulator_process("--token", "cli-token") as url:
        yield url


def test_company_and_migrate_commands(tmp_path: Path, emulator_url: str) -> None:
    cfg = tmp_path / "storage_config.json"
    cfg.write_text(json.dumps({
        "portraits": {"storage_type": "local"},
        "local": {"base_path": str(tmp_path / "files")},
        "yandex_disk": {"enabled": True, "token": "cli-token", "base_url": emulator_url},
    }))
    env = {"VERTEXFLOW_DB": str(tmp_path / "platform.db"), "VERTEXFLOW_STORAGE_CONFIG": str(cfg)}
    assert vf("company", "add", "acme", env=env).out.strip() == "1"
    assert vf("company", "add", "beta", env=env).code == 0
    r = vf("company", "verify", "acme", "--category", "cats", env=env)
    assert r.code == 1 and "portraits:cats/QR" in r.out
    r = vf("company", "provision", "acme", "--category", "cats", "--json", env=env)
    assert r.code == 0 and len(r.json()["created"]) == 3
    assert vf("company", "verify", "acme", "--category", "cats", env=env).code == 0
    photo = tmp_path / "files/portraits/acme/cats/Image/a.jpg"
    photo.write_bytes(b"jpeg" * 100)

    r = vf("migrate", "company", "acme", "--to", "yandex_disk", "--dry-run", "--json", env=env)
    assert r.code == 0, r.err
    assert r.json()["state"] == "dry_run" and r.json()["plan"][0]["objects"] == 1
    r = vf("migrate", "company", "acme", "--to", "yandex_disk", env=env)
    assert r.code == 0, r.err
    assert "switched" in r.out and "copied 1" in r.out
    show = vf("company", "show", "acme", "--json", env=env).json()
    assert show["storage_type"] == "yandex_disk" and show["locations"]["portraits"] == "yandex_disk:portraits/acme"
    rows = {c["slug"]: c for c in vf("company", "list", "--json", env=env).json()}
    assert rows["beta"]["storage_type"] == "default"  # the other company stayed
    assert vf("company", "verify", "acme", "--category", "cats", env=env).code == 0  # folders exist on Yandex

    r = vf("migrate", "rollback", "acme", env=env)
    assert r.code == 0, r.err
    assert "back on default" in r.out
    assert vf("company", "show", "acme", "--json", env=env).json()["storage_type"] == "default"
    states = [m["state"] for m in vf("migrate", "list", "acme", "--json", env=env).json()]
    assert states == ["rolled_back"]


def test_bad_input_exits_2_and_names_it(tmp_path: Path) -> None:
    cfg = tmp_path / "storage_config.json"
    cfg.write_text(json.dumps({"portraits": {"storage_type": "s4"}}))
    env = {"VERTEXFLOW_DB": str(tmp_path / "platform.db"), "VERTEXFLOW_STORAGE_CONFIG": str(cfg)}
    r = vf("company", "list", env=env)
    assert r.code == 2 and f"storage config {cfg}: portraits.storage_type" in r.err
    cfg.write_text(json.dumps({"portraits": {"storage_type": "local"}}))
    vf("company", "add", "acme", env=env)
    r = vf("migrate", "company", "acme", "--to", "nowhere", env=env)
    assert r.code == 2 and "unknown storage connection 'nowhere'" in r.err
    r = vf("migrate", "company", "zeta", "--to", "local", env=env)
    assert r.code == 2 and "no company 'zeta'" in r.err
    r = vf("company", "list", env={"VERTEXFLOW_DB": ""})
    assert r.code == 2 and "--db" in r.err
