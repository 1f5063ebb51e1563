"""The platform's own companies table (no slug column): a configurable company folder that never moves."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from ..cli.helpers import vf

#: the platform's table as it is: no slug
SEED_COMPANIES = """CREATE TABLE companies (id INTEGER PRIMARY KEY, name TEXT NOT NULL, storage_type TEXT,
    storage_connection_id INTEGER, yandex_disk_folder_id TEXT, created_at TEXT)"""


def _platform(tmp_path: Path, **extra: object) -> dict[str, str]:
    tmp_path.mkdir(exist_ok=True)
    db = tmp_path / "platform.db"
    with sqlite3.connect(db) as conn:
        conn.execute(SEED_COMPANIES)
        conn.execute("INSERT INTO companies (id, name, storage_type) VALUES (5, 'Acme Ltd', 'default')")
    cfg = tmp_path / "storage_config.json"
    cfg.write_text(json.dumps({"portraits": {"storage_type": "local"}, "local": {"base_path": str(tmp_path / "files")},
                               "connections": {"nas": {"type": "local", "path": str(tmp_path / "nas")}}, **extra}))
    return {"VERTEXFLOW_DB": str(db), "VERTEXFLOW_STORAGE_CONFIG": str(cfg)}


def test_a_table_without_slug_needs_company_folder_and_says_so(tmp_path: Path) -> None:
    env = _platform(tmp_path)
    r = vf("company", "show", "5", env=env)
    assert r.code == 2 and "table companies has no column slug" in r.err and "company_{id}" in r.err, r.err
    bad = _platform(tmp_path / "b", company_folder="org_{org_id}")
    r = vf("company", "show", "5", env=bad)
    assert r.code == 2 and "has no column org_id" in r.err, r.err


def test_the_seed_schema_end_to_end_and_the_folder_never_moves(tmp_path: Path) -> None:
    env = _platform(tmp_path, company_folder="company_{id}")
    r = vf("company", "show", "5", "--json", env=env)
    assert r.code == 0, r.err
    assert r.json()["slug"] == "company_5" and r.json()["locations"]["portraits"] == "local:portraits/company_5"
    r = vf("company", "add", "beta", env=env)  # the table has no slug: the name given is the name
    assert r.code == 0, r.err
    beta_id = r.out.strip()
    assert vf("company", "show", f"company_{beta_id}", env=env).code == 0
    assert vf("company", "provision", "company_5", "--category", "cats", env=env).code == 0
    photo = tmp_path / "files/portraits/company_5/cats/Image/a.jpg"
    photo.write_bytes(b"jpeg" * 100)
    r = vf("migrate", "company", "company_5", "--to", "nas", env=env)
    assert r.code == 0, r.err
    assert (tmp_path / "nas/portraits/company_5/cats/Image/a.jpg").read_bytes() == b"jpeg" * 100
    assert vf("company", "verify", "5", "--category", "cats", env=env).code == 0
    with sqlite3.connect(env["VERTEXFLOW_DB"]) as conn:  # the platform's row is as it was, plus its new route
        row = conn.execute("SELECT name, storage_type, storage_connection_id FROM companies WHERE id = 5").fetchone()
    assert row[0] == "Acme Ltd" and row[1] == "local" and row[2] is not None

    # the setting changes (or the row does): the company keeps the folder its files are in
    cfg = Path(env["VERTEXFLOW_STORAGE_CONFIG"])
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "company_folder": "column:name"}))
    with sqlite3.connect(env["VERTEXFLOW_DB"]) as conn:
        conn.execute("UPDATE companies SET name = 'Acme Group' WHERE id = 5")
    r = vf("company", "show", "5", "--json", env=env)
    assert r.code == 0 and r.json()["slug"] == "company_5", r.err
    assert r.json()["locations"]["portraits"] == "nas:portraits/company_5"
    assert vf("company", "verify", "5", "--category", "cats", env=env).code == 0


def test_a_renamed_slug_keeps_the_folder_of_its_files(tmp_path: Path) -> None:
    cfg = tmp_path / "storage_config.json"
    cfg.write_text(json.dumps({"portraits": {"storage_type": "local"}, "local": {"base_path": str(tmp_path / "files")}}))
    env = {"VERTEXFLOW_DB": str(tmp_path / "platform.db"), "VERTEXFLOW_STORAGE_CONFIG": str(cfg)}
    assert vf("company", "add", "acme", env=env).code == 0
    assert vf("company", "provision", "acme", "--category", "cats", env=env).code == 0
    with sqlite3.connect(env["VERTEXFLOW_DB"]) as conn:
        conn.execute("UPDATE companies SET slug = 'acme-renamed' WHERE slug = 'acme'")
    r = vf("company", "show", "acme-renamed", "--json", env=env)  # found by its new slug...
    assert r.code == 0 and r.json()["locations"]["portraits"] == "local:portraits/acme", r.err  # ...where its files are
    assert vf("company", "verify", "acme", "--category", "cats", env=env).code == 0
