"""``company refs``: the platform database's file references against each company's files.

A platform database with companies and two tables of its own (``portraits`` with relative keys and
a SHA-256 column, ``videos`` with the platform's full URLs) referencing files seeded with independent
clients (the file system, boto3, yadisk) on local disk, SeaweedFS (sorted listings, and a server
said to list out of order: spilled through SQLite) and the Yandex.Disk emulator. Dangling
references and orphans are seeded in known numbers and found exactly.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yadisk
from click.testing import CliRunner

from vertexflow.cli.tenancy import company
from vertexflow.errors import ConfigError
from vertexflow.ops.refs import RefsReport, check_references
from vertexflow.tenancy.registry import Registry
from vertexflow.testing.seaweedfs import SeaweedFS
from vertexflow.testing.yandex_disk import YandexDiskEmulator

from ..cli.helpers import Result, vf
from .conftest import TOKEN, make_manager, minio_conn

CDN = "https://cdn.example.com/videos"
REFERENCES = {
    "portraits.image_path": {"content_type": "portraits", "company_column": "company_id",
                             "digest_column": "image_sha256"},
    "videos.url": {"content_type": "videos", "company_column": "company_id", "id_column": "id",
                   "url_pattern": r"^https://cdn\.example\.com/videos/[^/]+/"},
}
TABLES = """
CREATE TABLE portraits (id INTEGER PRIMARY KEY, company_id INTEGER, image_path TEXT, image_sha256 TEXT);
CREATE TABLE videos (id INTEGER PRIMARY KEY, company_id INTEGER, url TEXT);
"""

Put = Callable[[str, bytes], Awaitable[None]]


def _db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)  # autocommit: the manager writes the same file
    db.executescript(TABLES)
    return db


@dataclass
class Seeded:
    """What a company was given: the row ids that must dangle, the keys that must be orphans."""

    dangling: dict[str, set[int]] = field(default_factory=lambda: {"portraits": set(), "videos": set()})
    orphans: dict[str, set[str]] = field(default_factory=lambda: {"portraits": set(), "videos": set()})
    mismatched: set[int] = field(default_factory=set)
    rows: dict[str, int] = field(default_factory=lambda: {"portraits": 0, "videos": 0})
    files: dict[str, int] = field(default_factory=lambda: {"portraits": 0, "videos": 0})


async def seed(db: sqlite3.Connection, company_id: int, slug: str, put: Put, *, portraits: int = 12,
               videos: int = 5) -> Seeded:
    """Files and rows of one company; ``put(path below the content type's folder, bytes)`` stores a file."""
    s = Seeded()

    def row(table: str, *values: Any) -> int:
        cols = "company_id, image_path, image_sha256" if table == "portraits" else "company_id, url"
        cur = db.execute(f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' for _ in values)})", values)
        s.rows[table] += 1
        return int(cur.lastrowid or 0)

    for i in range(portraits):
        key = f"cat{i % 3}/Image/p{i}.jpg"
        data = f"{slug} portrait {i}".encode() * (i + 1)
        await put(f"portraits/{slug}/{key}", data)
        s.files["portraits"] += 1
        digest = hashlib.sha256(data).hexdigest()
        rid = row("portraits", company_id, key, digest if i != 5 else "0" * 64)
        if i == 5:
            s.mismatched.add(rid)
        if i < 2:  # two rows naming the same file
            row("portraits", company_id, key, digest)
    for i in range(3):  # rows whose file was never stored
        s.dangling["portraits"].add(row("portraits", company_id, f"cat1/QR/gone{i}.png", None))
    for i in range(2):  # files no row names
        await put(f"portraits/{slug}/cat2/QR/orphan{i}.png", b"orphan" * (i + 1))
        s.orphans["portraits"].add(f"cat2/QR/orphan{i}.png")
        s.files["portraits"] += 1
    await put(f"portraits/{slug}/cat0/.keep", b"")  # a folder marker: neither a file nor an orphan
    for i in range(videos):
        key = f"clips/Image/clip {i}.mp4"
        await put(f"videos/{slug}/{key}", f"video {i}".encode())
        s.files["videos"] += 1
        row("videos", company_id, f"{CDN}/{slug}/{quote(key)}")
    s.dangling["videos"].add(row("videos", company_id, f"{CDN}/{slug}/clips/Image/lost.mp4"))
    s.dangling["videos"].add(row("videos", company_id, "https://elsewhere.example.org/clip.mp4"))
    await put(f"videos/{slug}/clips/QR/unused.mp4", b"unused")
    s.orphans["videos"].add("clips/QR/unused.mp4")
    s.files["videos"] += 1
    return s


def content(report: RefsReport, slug: str, ct: str) -> Any:
    co = next(c for c in report.companies if c.slug == slug)
    return next(c for c in co.content if c.content_type == ct)


def assert_found_exactly(report: RefsReport, slug: str, s: Seeded, *, checksum: bool) -> None:
    for ct in ("portraits", "videos"):
        c = content(report, slug, ct)
        assert c.rows == s.rows[ct] and c.files == s.files[ct], (ct, c)
        mismatched = s.mismatched if checksum and ct == "portraits" else set()
        assert c.dangling == len(s.dangling[ct]) and c.mismatched == len(mismatched)
        assert {d.row_id for d in c.first_dangling} == s.dangling[ct] | mismatched
        assert c.orphans == len(s.orphans[ct]) and set(c.first_orphans) == s.orphans[ct]
        assert c.referenced == s.files[ct] - len(s.orphans[ct])
    if checksum and s.mismatched:
        digest = next(d for d in content(report, slug, "portraits").first_dangling if d.row_id in s.mismatched)
        assert digest.why.startswith("sha256 differs: the row says 0000")
    lost = {d.key: d for d in content(report, slug, "videos").first_dangling}
    assert lost["clips/Image/lost.mp4"].why == "missing"  # the URL's prefix stripped
    assert lost["https://elsewhere.example.org/clip.mp4"].why.startswith("not a key of the company's files")


def local_put(root: Path) -> Put:
    async def put(path: str, data: bytes) -> None:
        file = root / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(data)

    return put


def s3_put(server: SeaweedFS, bucket: str) -> Put:
    client = server.boto3_client()

    async def put(path: str, data: bytes) -> None:
        # a client of its own for an empty body: the next request on a connection that sent one waits for
        # SeaweedFS's answer until the read timeout (60 s)
        (client if data else server.boto3_client(read_timeout=30)).put_object(Bucket=bucket, Key=path, Body=data)

    return put


def raw_config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {"portraits": {"storage_type": "local"}, "videos": {"storage_type": "local"},
            "local": {"base_path": str(tmp_path / "files")}, "references": REFERENCES, **extra}


async def test_local_disk_every_company_found_exactly(tmp_path: Path) -> None:
    async with make_manager(tmp_path, raw_config(tmp_path)) as m:
        acme, beta, gamma = (m.registry.add_company(s) for s in ("acme", "beta", "gamma"))
        db = _db(tmp_path / "platform.db")
        put = local_put(tmp_path / "files")
        seeded = {"acme": await seed(db, acme.id, "acme", put),
                  "beta": await seed(db, beta.id, "beta", put, portraits=4, videos=2)}
        await put("portraits/gamma/cat0/Image/stray.jpg", b"stray")  # gamma: no rows at all
        db.execute("INSERT INTO portraits (company_id, image_path) VALUES (999, 'cat0/Image/p0.jpg')")
        db.execute("INSERT INTO portraits (company_id, image_path) VALUES (NULL, 'cat0/Image/p1.jpg')")

        report = await check_references(m, None, checksum=True)
        for slug, s in seeded.items():
            assert_found_exactly(report, slug, s, checksum=True)
        assert content(report, "gamma", "portraits").orphans == 1
        assert any("company gamma" in n for n in report.notes)
        assert report.unknown_company == 1 and report.first_unknown[0].why == "no company 999 in the companies table"
        assert report.unowned == 1
        assert report.dangling == 2 * (3 + 2) + 1 and report.mismatched == 1 and not report.ok
        assert report.totals()["portraits"]["orphans"] == 2 + 2 + 1

        one = await check_references(m, "acme")  # one company: the others are not read
        assert [co.slug for co in one.companies] == ["acme"] and one.unknown_company == 0
        assert_found_exactly(one, "acme", seeded["acme"], checksum=False)


@pytest.mark.s3
async def test_seaweedfs_sorted_and_spilled_listings(tmp_path: Path, seaweed: SeaweedFS, s3_bucket: str,
                                                     seaweed2: SeaweedFS, bucket2: str) -> None:
    unsorted = {"type": "s3", "endpoint": seaweed2.endpoint, "region": seaweed2.region, "bucket": bucket2,
                "access_key_id": seaweed2.access_key, "secret_access_key": seaweed2.secret_key,
                "addressing_style": "path", "sorted_listing": False}
    raw = raw_config(tmp_path, connections={"minio-a": minio_conn(seaweed, s3_bucket), "s3-b": unsorted})
    async with make_manager(tmp_path, raw) as m:
        a = m.registry.add_connection("minio-a", "minio")
        b = m.registry.add_connection("s3-b", "minio")
        acme = m.registry.add_company("acme", storage_type="minio", storage_connection_id=a.id)
        beta = m.registry.add_company("beta", storage_type="minio", storage_connection_id=b.id)
        db = _db(tmp_path / "platform.db")
        s_acme = await seed(db, acme.id, "acme", s3_put(seaweed, s3_bucket))
        s_beta = await seed(db, beta.id, "beta", s3_put(seaweed2, bucket2))
        report = await check_references(m, None, checksum=True)
    assert content(report, "acme", "portraits").where == "minio-a:portraits/acme"
    assert content(report, "beta", "videos").where == "s3-b:videos/beta"
    assert_found_exactly(report, "acme", s_acme, checksum=True)
    assert_found_exactly(report, "beta", s_beta, checksum=True)


async def test_yandex_disk_emulator(tmp_path: Path, emulator: YandexDiskEmulator,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    raw = raw_config(tmp_path, yandex_disk={"enabled": True, "token": TOKEN, "base_url": emulator.base_url})
    monkeypatch.setattr(yadisk.settings, "BASE_API_URL", emulator.origin)
    async with yadisk.AsyncClient(token=TOKEN, session="aiohttp") as disk:
        made: set[str] = set()

        async def put(path: str, data: bytes) -> None:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                folder = "/" + "/".join(parts[:i])
                if folder not in made:
                    if not await disk.exists(folder):
                        await disk.mkdir(folder)
                    made.add(folder)
            await disk.upload(io.BytesIO(data), "/" + path)

        async with make_manager(tmp_path, raw) as m:
            acme = m.registry.add_company("acme", storage_type="yandex_disk")
            db = _db(tmp_path / "platform.db")
            s = await seed(db, acme.id, "acme", put)
            report = await check_references(m, "acme", checksum=True)
    assert content(report, "acme", "portraits").where == "yandex_disk:portraits/acme"
    assert_found_exactly(report, "acme", s, checksum=True)


def _local_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


async def test_delete_orphans_dry_run_max_delete_age_and_where_references_dangle(tmp_path: Path) -> None:
    files = tmp_path / "files"
    async with make_manager(tmp_path, raw_config(tmp_path)) as m:
        acme = m.registry.add_company("acme")
        db = _db(tmp_path / "platform.db")
        s = await seed(db, acme.id, "acme", local_put(files))
        db.execute("DELETE FROM portraits WHERE image_path LIKE 'cat1/QR/gone%'")  # portraits: nothing dangles now
        before = _local_files(files)
        orphans = {f"portraits/acme/{k}" for k in s.orphans["portraits"]}

        young = await check_references(m, "acme", delete_orphans=True)  # the orphans were written just now
        assert content(young, "acme", "portraits").young == 2 and young.deleted == 0
        assert _local_files(files) == before

        dry = await check_references(m, "acme", delete_orphans=True, dry_run=True, orphan_min_age=0)
        assert dry.state == "dry_run" and content(dry, "acme", "portraits").deleted == 2
        assert content(dry, "acme", "videos").deleted == 0
        assert "dangle" in (content(dry, "acme", "videos").kept or "")
        assert _local_files(files) == before

        with pytest.raises(ConfigError, match=r"2 orphans to delete \(first: company acme portraits cat2/QR/orphan0"
                                              r"\.png\), more than --max-delete 1; nothing was deleted"):
            await check_references(m, "acme", delete_orphans=True, max_delete=1, orphan_min_age=0)
        assert _local_files(files) == before

        old = time.time() - 7200
        os.utime(files / "portraits/acme/cat2/QR/orphan0.png", (old, old))
        done = await check_references(m, "acme", delete_orphans=True, max_delete=2, orphan_min_age=3600)
        assert done.state == "deleted" and content(done, "acme", "portraits").deleted == 1
        assert _local_files(files) == before - {"portraits/acme/cat2/QR/orphan0.png"}
        done = await check_references(m, "acme", delete_orphans=True, orphan_min_age=0)
        assert content(done, "acme", "portraits").deleted == 1
    # the orphans went; every referenced file, the marker and the videos (a reference dangles there) stayed
    assert _local_files(files) == before - orphans
    assert "portraits/acme/cat0/.keep" in _local_files(files)


# -- the command line -----------------------------------------------------------------------------
#: the command-line platform's videos.url holds keys (no url_pattern)
CLI_REFERENCES = REFERENCES | {"videos.url": {"content_type": "videos", "company_column": "company_id"}}


def refs_cli(env: dict[str, str], *args: str) -> Result:
    """``vertexflow company refs ARGS`` run in this process (the same code as the command, without an
    interpreter's start-up, which the subprocess tests above pay)."""
    runner = CliRunner()
    r = runner.invoke(company, ["--db", env["VERTEXFLOW_DB"], "--storage-config", env["VERTEXFLOW_STORAGE_CONFIG"],
                                "refs", *args])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return Result(r.exit_code, r.stdout, r.stderr)


def _cli_platform(tmp_path: Path, references: dict[str, Any]) -> dict[str, str]:
    cfg = tmp_path / "storage_config.json"
    cfg.write_text(json.dumps({**raw_config(tmp_path), "references": references}))
    env = {"VERTEXFLOW_DB": str(tmp_path / "platform.db"), "VERTEXFLOW_STORAGE_CONFIG": str(cfg)}
    with Registry.open(tmp_path / "platform.db") as registry:  # the subprocesses below are the test
        registry.add_company("acme")
        registry.add_company("empty")
    db = _db(tmp_path / "platform.db")
    (tmp_path / "files/portraits/acme/cats").mkdir(parents=True)
    (tmp_path / "files/portraits/acme/cats/a.jpg").write_bytes(b"a")
    (tmp_path / "files/portraits/acme/cats/stray.jpg").write_bytes(b"stray")
    db.execute("INSERT INTO portraits (company_id, image_path) VALUES (1, 'cats/a.jpg')")
    db.execute("INSERT INTO portraits (company_id, image_path) VALUES (1, 'cats/b.jpg')")
    db.execute("INSERT INTO videos (company_id, url) VALUES (1, 'clips/v.mp4')")
    db.close()
    return env


def test_cli_reports_and_exit_status(tmp_path: Path) -> None:
    env = _cli_platform(tmp_path, CLI_REFERENCES)
    r = vf("company", "refs", "acme", env=env)
    assert r.code == 1, r.err
    assert "acme portraits (local:portraits/acme): 2 rows, 2 files; 1 dangling, 1 orphans (5 bytes)" in r.out
    assert "  dangling portraits.image_path row 2: cats/b.jpg: missing" in r.out
    assert "  orphan cats/stray.jpg" in r.out
    assert "acme videos (local:videos/acme): 1 rows, 0 files; 1 dangling" in r.out
    data = vf("company", "refs", "--all", "--json", env=env).json()
    assert data["dangling"] == 2 and data["totals"]["portraits"]["orphans"] == 1
    assert [co["slug"] for co in data["companies"]] == ["acme", "empty"]
    r = refs_cli(env, "empty")  # no rows: said plainly, nothing dangles
    assert r.code == 0, r.err
    assert "note: no row of portraits.image_path, videos.url belongs to company empty" in r.out
    r = refs_cli(env, "acme", "--delete-orphans", "--min-age", "0", "--json")
    assert r.code == 1 and r.json()["deleted"] == 0  # a reference dangles there: nothing deleted
    assert (tmp_path / "files/portraits/acme/cats/stray.jpg").exists()


@pytest.mark.parametrize("references, message", [
    ({"portraits.image_pth": {"content_type": "portraits", "company_column": "company_id"}},
     "references.portraits.image_pth: table portraits of {db} has no column image_pth; its columns: id, "
     "company_id, image_path, image_sha256"),
    ({"portraits.image_path": {"content_type": "portraits", "company_column": "company"}},
     "references.portraits.image_path: table portraits of {db} has no column company (company_column)"),
    ({"photos.image_path": {"content_type": "portraits", "company_column": "company_id"}},
     "references.photos.image_path: the platform database {db} has no table photos"),
    ({"videos.url": {"content_type": "videos", "company_column": "company_id", "url_pattern": "^https://cdn/"}},
     "references.videos.url.url_pattern '^https://cdn/' matches none of the paths in videos.url (row 1: "
     "'clips/v.mp4')"),
    ({"videos.url": {"content_type": "films", "company_column": "company_id"}},
     "storage config {cfg}: references.videos.url.content_type: unknown content type 'films'"),
    ({"videos": {"content_type": "videos", "company_column": "company_id"}},
     "storage config {cfg}: references: 'videos' must be <table>.<column>"),
    ({"videos.url": {"content_type": "videos", "company_column": "company_id", "url_pattern": "(unclosed"}},
     "storage config {cfg}: references.videos.url.url_pattern: not a regular expression"),
    ({"videos.url": {"content_type": "videos", "company_column": "company_id", "digest_algorithm": "md5"}},
     "digest_algorithm needs digest_column"),
    ({"videos.url": {"content_type": "videos", "company_column": "company_id", "colour": "red"}},
     "storage config {cfg}: references.videos.url.colour: unknown key"),
])
def test_cli_bad_declarations_exit_2_naming_table_and_column(tmp_path: Path, references: dict[str, Any],
                                                             message: str) -> None:
    good = _cli_platform(tmp_path, CLI_REFERENCES)
    (tmp_path / "storage_config.json").write_text(json.dumps({**raw_config(tmp_path), "references": references}))
    r = refs_cli(good, "--all")
    assert r.code == 2, (r.out, r.err)
    assert message.format(db=tmp_path / "platform.db", cfg=tmp_path / "storage_config.json") in r.err
    assert r.out == ""


def test_cli_bad_usage_exits_2(tmp_path: Path) -> None:
    env = _cli_platform(tmp_path, CLI_REFERENCES)
    for args, message in [((), "name a COMPANY or give --all"), (("acme", "--all"), "name a COMPANY or give --all"),
                          (("acme", "--dry-run"), "go with --delete-orphans"),
                          (("acme", "--delete-orphans", "--min-age", "soon"), "invalid age 'soon'"),
                          (("zeta",), "no company 'zeta'")]:
        r = refs_cli(env, *args)
        assert r.code == 2 and message in r.err, (args, r.err)
    r = refs_cli(env, "acme", "--delete-orphans", "--max-delete", "0", "--min-age", "0")
    assert r.code == 1  # the reference that dangles keeps the orphan: nothing over the limit
    (tmp_path / "storage_config.json").write_text(json.dumps(raw_config(tmp_path) | {"references": {}}))
    r = refs_cli(env, "acme")
    assert r.code == 2 and "declares no references" in r.err


def test_cli_max_delete_refuses_before_deleting(tmp_path: Path) -> None:
    env = _cli_platform(tmp_path, CLI_REFERENCES)
    sqlite3.connect(tmp_path / "platform.db", isolation_level=None).execute(
        "DELETE FROM portraits WHERE image_path = 'cats/b.jpg'")
    r = refs_cli(env, "acme", "--delete-orphans", "--max-delete", "0", "--min-age", "0")
    assert r.code == 2 and "1 orphans to delete (first: company acme portraits cats/stray.jpg), more than " \
                           "--max-delete 0; nothing was deleted" in r.err
    assert (tmp_path / "files/portraits/acme/cats/stray.jpg").exists()
    r = refs_cli(env, "acme", "--delete-orphans", "--dry-run", "--min-age", "0")
    assert r.code == 1 and "would delete 1" in r.out  # videos.url still dangles (exit 1)
    assert (tmp_path / "files/portraits/acme/cats/stray.jpg").exists()
    r = refs_cli(env, "acme", "--delete-orphans", "--max-delete", "1", "--min-age", "0")
    assert "deleted 1" in r.out
    assert not (tmp_path / "files/portraits/acme/cats/stray.jpg").exists()
    assert (tmp_path / "files/portraits/acme/cats/a.jpg").exists()
