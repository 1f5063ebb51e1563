"""A platform backup of the platform's own schema (a companies table without slug), on local disk only.

Companies are named by ``company_folder`` (``company_{id}``); one lives on the
built-in local section, one on a local connection, one has never stored a
file (its folders do not exist). The backup and the restore onto other
folders are checked with ``tar``, ``sha256sum`` and plain file reads; the
database with Python's sqlite3.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

from vertexflow.backends.local import LocalBackend
from vertexflow.ops.backup.platform import PlatformOptions, create_platform_backup
from vertexflow.ops.backup.platform_restore import PlatformRestoreOptions, restore_platform
from vertexflow.ops.backup.reading import Opened, load_metadata
from vertexflow.tenancy import StorageManager
from vertexflow.tenancy.storage_config import load_storage_config
from vertexflow.transforms.compression import parse_codec

SEED_SCHEMA = """
CREATE TABLE storage_connections (id INTEGER PRIMARY KEY, name TEXT UNIQUE, storage_type TEXT);
CREATE TABLE companies (id INTEGER PRIMARY KEY, name TEXT, storage_type TEXT, storage_connection_id INTEGER,
                        yandex_disk_folder_id TEXT);
"""


def _platform(root: Path) -> Path:
    """The storage config of a platform under ``root`` (its local base and a ``nas`` connection there)."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "storage_config.json"
    cfg.write_text(json.dumps({"portraits": {"storage_type": "local"}, "videos": {"storage_type": "local",
                                                                                    "path": "media/videos"},
                               "local": {"base_path": "storage"}, "company_folder": "company_{id}",
                               "connections": {"nas": {"type": "local", "path": str(root / "nas")}}}))
    return cfg


def _tree(base: Path) -> dict[str, bytes]:
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()} \
        if base.exists() else {}


def _rows(db: Path) -> list[tuple[object, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT * FROM companies ORDER BY id").fetchall()
    finally:
        con.close()


async def test_a_platform_without_slugs_backs_up_and_restores_onto_other_folders(tmp_path: Path) -> None:
    cfg = _platform(tmp_path / "a")
    db = tmp_path / "a" / "platform.db"
    con = sqlite3.connect(db)
    con.executescript(SEED_SCHEMA)
    con.execute("INSERT INTO storage_connections (id, name, storage_type) VALUES (7, 'nas', 'local')")
    con.executemany("INSERT INTO companies (id, name, storage_type, storage_connection_id) VALUES (?, ?, ?, ?)",
                    [(1, "Acme", "default", None), (2, "Beta", "local", 7), (3, "Gamma", "default", None)])
    con.commit()
    con.close()
    async with StorageManager.open(cfg, db) as m:
        await m.provision_company_storage(1, ["cats"])
        for cid in (1, 2):
            for ct in ("portraits", "videos"):
                await m.save_file(ct, f"cats/Image/{ct}-{cid}.jpg", f"{ct} of {cid}".encode() * 50, company_id=cid)
    assert (tmp_path / "a/storage/media/videos/company_1/cats/Image/videos-1.jpg").exists()
    assert (tmp_path / "a/nas/portraits/company_2/cats/Image/portraits-2.jpg").exists()

    async with StorageManager.open(cfg, db) as m, LocalBackend(tmp_path / "backups") as dest:
        result = await create_platform_backup(dest, m, PlatformOptions(codec=parse_codec("zstd")))
    meta = result.metadata
    assert meta.platform is not None and [c.folder for c in meta.platform.companies] == \
        ["company_1", "company_2", "company_3"]
    gamma = meta.platform.companies[2]
    assert gamma.complete and all(e.files == 0 and e.error is None for e in gamma.content)  # no folder: no files
    assert [e.location for e in meta.platform.companies[1].content] == ["nas:portraits/company_2",
                                                                       "nas:videos/company_2"]
    folder = tmp_path / "backups" / meta.id
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(f"cat {folder}/storage.tar.zst.part* | zstd -dc | tar -x -C {unpacked}", shell=True, check=True)
    assert subprocess.run(["sha256sum", "-c", "--quiet", str(folder / "MEMBERS.sha256")], cwd=unpacked).returncode == 0
    assert _tree(unpacked / "videos" / "company_1") == _tree(tmp_path / "a/storage/media/videos/company_1")
    assert (unpacked / "portraits/company_1/cats/QR").is_dir()  # an empty provisioned folder

    # onto other folders: the same connection name, another path; the content type's own path kept
    cfg_b = _platform(tmp_path / "b")
    db_b = tmp_path / "b" / "platform.db"
    async with LocalBackend(tmp_path / "backups") as store:
        opened = Opened(store, meta.id, await load_metadata(store, meta.id))
        restored = await restore_platform(opened, load_storage_config(cfg_b),
                                          PlatformRestoreOptions(db_path=str(db_b)))
    assert restored.files == meta.storage.files and restored.database == str(db_b)  # type: ignore[union-attr]
    for ct, path in (("portraits", "portraits"), ("videos", "media/videos")):
        assert _tree(tmp_path / "b/storage" / path / "company_1") == _tree(tmp_path / "a/storage" / path / "company_1")
        assert _tree(tmp_path / "b/nas" / ct / "company_2") == _tree(tmp_path / "a/nas" / ct / "company_2")
    assert (tmp_path / "b/storage/portraits/company_1/cats/QR").is_dir()
    assert not (tmp_path / "b/storage/portraits/company_3").exists()
    assert _rows(db_b) == _rows(db)


async def test_a_platform_restore_reports_the_reference_check_of_what_it_restored(tmp_path: Path) -> None:
    cfg = _platform(tmp_path / "a")
    raw = json.loads(cfg.read_text())
    raw["references"] = {"photos.image_path": {"content_type": "portraits", "company_column": "company_id"}}
    cfg.write_text(json.dumps(raw))
    db = tmp_path / "a" / "platform.db"
    con = sqlite3.connect(db)
    con.executescript(SEED_SCHEMA + "CREATE TABLE photos (id INTEGER PRIMARY KEY, company_id INTEGER, image_path TEXT);")
    con.execute("INSERT INTO companies (id, name, storage_type) VALUES (1, 'Acme', 'default')")
    con.executemany("INSERT INTO photos (company_id, image_path) VALUES (1, ?)",
                    [("cats/Image/a.jpg",), ("cats/Image/lost.jpg",)])  # the second file was never stored
    con.commit()
    con.close()
    async with StorageManager.open(cfg, db) as m:
        await m.save_file("portraits", "cats/Image/a.jpg", b"jpeg" * 10, company_id=1)
    async with StorageManager.open(cfg, db) as m, LocalBackend(tmp_path / "backups") as dest:
        meta = (await create_platform_backup(dest, m, PlatformOptions(codec=parse_codec("zstd")))).metadata
    cfg_b = _platform(tmp_path / "b")
    cfg_b.write_text(json.dumps({**json.loads(cfg_b.read_text()), "references": raw["references"]}))
    async with LocalBackend(tmp_path / "backups") as store:
        opened = Opened(store, meta.id, await load_metadata(store, meta.id))
        restored = await restore_platform(opened, load_storage_config(cfg_b),
                                          PlatformRestoreOptions(db_path=str(tmp_path / "b" / "platform.db")))
    assert restored.references is not None and restored.references["dangling"] == 1, restored.references
    assert "cats/Image/lost.jpg" in restored.references["first_dangling"][0]
    assert any("1 database references name files the restore did not bring back" in w for w in restored.warnings)
    assert (tmp_path / "b/storage/portraits/company_1/cats/Image/a.jpg").read_bytes() == b"jpeg" * 10
