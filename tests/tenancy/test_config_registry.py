"""Storage config (platform shape, round trip, errors) and the company registry."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from vertexflow.errors import ConfigError
from vertexflow.tenancy.registry import Placement, Registry
from vertexflow.tenancy.storage_config import load_storage_config, save_storage_config

PLATFORM = {
    "portraits": {"storage_type": "local"},
    "videos": {"storage_type": "minio", "bucket": "videos"},
    "markers": {"storage_type": "yandex_disk"},
    "yandex_disk": {"enabled": True, "token": "y-secret", "base_paths": {"markers": "/ar/markers"}},
    "minio": {"endpoint": "127.0.0.1:9000", "access_key": "ak", "secret_key": "sk", "bucket": "media",
              "secure": False},
    "backup": {"schedule": "0 3 * * *", "keep": 7},
    "connections": {"minio-b": {"type": "minio", "endpoint": "10.0.0.7:9000", "access_key": "k2",
                                "secret_key": "s2", "bucket": "b"},
                    "aws": {"type": "s3", "endpoint": "https://s3.example.test", "bucket": "m",
                            "access_key_id_env": "K", "secret_access_key_env": "S"}},
}


def test_platform_shape_round_trips(tmp_path: Path) -> None:
    src = tmp_path / "storage_config.json"
    src.write_text(json.dumps(PLATFORM))
    config = load_storage_config(src)
    assert config.content_type("videos").storage_type == "minio"
    assert config.yandex_disk is not None and config.yandex_disk.base_paths["markers"] == "/ar/markers"
    assert "y-secret" not in repr(config)  # secrets never printed
    out = tmp_path / "out.json"
    save_storage_config(config, out)
    assert json.loads(out.read_text()) == PLATFORM  # written back as read, secrets included
    assert out.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("patch", "where"), [
    ({"videos": {"storage_type": "ftp"}}, "videos.storage_type"),
    ({"backup": {"schedule": "daily", "keep": 7}}, "backup.schedule"),
    ({"backup": {"keep": 0}}, "backup.keep"),
    ({"minio": {"endpoint": "h:1", "colour": "red"}}, "minio.colour: unknown key"),
    ({"connections": {"x": {"type": "s3", "endpoint": "ftp://x"}}}, "connections.x.endpoint"),
    ({"connections": {"x": {"type": "webdav"}}}, "connections.x"),
    ({"yandex_disk": {"enabled": False}}, "markers.storage_type"),
    ({"portraits": "local"}, "portraits"),
])
def test_bad_config_names_the_field(tmp_path: Path, patch: dict, where: str) -> None:
    path = tmp_path / "storage_config.json"
    path.write_text(json.dumps({**PLATFORM, **patch}))
    with pytest.raises(ConfigError) as exc:
        load_storage_config(path)
    assert str(path) in str(exc.value) and where in str(exc.value)


def test_save_refuses_a_bad_config_and_keeps_the_file(tmp_path: Path) -> None:
    path = tmp_path / "storage_config.json"
    save_storage_config(PLATFORM, path)
    before = path.read_text()
    with pytest.raises(ConfigError, match="backup.keep"):
        save_storage_config({**PLATFORM, "backup": {"keep": -1}}, path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["storage_config.json"]  # no temp file left


def test_registry_creates_tables_and_switches_in_one_transaction(tmp_path: Path) -> None:
    with Registry.open(tmp_path / "p.db") as reg:
        conn = reg.add_connection("nas", "local", {"type": "local", "path": str(tmp_path / "nas")})
        acme = reg.add_company("acme", name="Acme")
        assert acme.placement == Placement("default", None, None)
        rec = reg.start_migration(acme.id, acme.placement.as_dict(), {"storage_connection_id": conn.id}, live=False)
        with pytest.raises(ConfigError, match="already has migration"):
            reg.start_migration(acme.id, {}, {}, live=False)
        reg.set_placement(acme.id, Placement("local", conn.id, None), migration_id=rec.id, state="switched")
        assert reg.company("acme").storage_connection_id == conn.id
        assert reg.migration(rec.id).state == "switched"
        with pytest.raises(ConfigError, match="no company 99"):
            reg.set_placement(99, Placement("local", None))
        with pytest.raises(ConfigError, match="cannot add company 'acme'"):
            reg.add_company("acme")


def test_registry_uses_an_existing_platform_database(tmp_path: Path) -> None:
    db = tmp_path / "platform.db"
    with sqlite3.connect(db) as raw:  # the platform's own tables: more columns, no config column
        raw.executescript("""
            CREATE TABLE storage_connections (id INTEGER PRIMARY KEY, name TEXT UNIQUE, storage_type TEXT,
                                              created_by TEXT);
            CREATE TABLE companies (id INTEGER PRIMARY KEY, slug TEXT UNIQUE, name TEXT, storage_type TEXT,
                                    storage_connection_id INTEGER, yandex_disk_folder_id TEXT, plan TEXT);
            INSERT INTO storage_connections VALUES (5, 'minio-b', 'minio', 'ops');
            INSERT INTO companies VALUES (7, 'acme', 'Acme', 'minio', 5, NULL, 'gold');
        """)
    with Registry.open(db) as reg:
        company = reg.company(7)
        assert (company.slug, company.storage_type, company.storage_connection_id) == ("acme", "minio", 5)
        assert reg.connection(5).config is None  # settings come from the storage config
        with pytest.raises(ConfigError, match="no config column"):
            reg.add_connection("x", "local", {"type": "local", "path": "/x"})
    with sqlite3.connect(db) as raw:
        assert raw.execute("SELECT plan FROM companies WHERE id = 7").fetchone() == ("gold",)


def test_registry_names_a_missing_column(tmp_path: Path) -> None:
    db = tmp_path / "platform.db"
    with sqlite3.connect(db) as raw:
        raw.execute("CREATE TABLE companies (id INTEGER PRIMARY KEY, slug TEXT)")
    with pytest.raises(ConfigError, match="table companies has no column storage_type"):
        Registry.open(db)
