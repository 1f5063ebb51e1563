#!/usr/bin/env python3
"""Time and peak RSS of ``vertexflow company refs --all`` on a generated platform (local disk).

    python benchmarks/refs.py                  # 1,000,000 rows and files (and a tenth of that)
    python benchmarks/refs.py --count 100000

Generates, with a fixed seed, a platform database (``companies``, ``portraits``
with relative keys, ``videos`` with the platform's full URLs, stripped by a
``url_pattern``) and the files its rows name on local disk, spread over
``--companies`` companies and folders of at most 1,000 files. One row in a
thousand names a file that is not there and one file in a thousand has no
row, so the run finds exactly that many dangling references and orphans (the
script checks the counts). Each count runs the real command in a child
process; its peak RSS is the child's own (``wait4``). The flat-memory claim
holds when the peak at ``--count`` is about the peak at a tenth of it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

#: files per folder: a real platform spreads its files over categories and subfolders
PER_FOLDER = 1000
#: one row in this many names a missing file, and one file in this many has no row
EVERY = 1000
CDN = "https://cdn.example.com/videos"


def generate(root: Path, count: int, companies: int) -> dict[str, int]:
    """The platform under ``root``: storage_config.json, platform.db, files/. Returns the seeded counts."""
    rng = random.Random(20261207)
    files = root / "files"
    db = sqlite3.connect(root / "platform.db")
    db.executescript("""
        CREATE TABLE companies (id INTEGER PRIMARY KEY AUTOINCREMENT, slug TEXT NOT NULL UNIQUE, name TEXT,
            storage_type TEXT NOT NULL DEFAULT 'default', storage_connection_id INTEGER, yandex_disk_folder_id TEXT);
        CREATE TABLE portraits (id INTEGER PRIMARY KEY, company_id INTEGER, image_path TEXT);
        CREATE TABLE videos (id INTEGER PRIMARY KEY, company_id INTEGER, url TEXT);
        CREATE INDEX portraits_company ON portraits (company_id);
        CREATE INDEX videos_company ON videos (company_id);
    """)
    db.executemany("INSERT INTO companies (id, slug) VALUES (?, ?)",
                   [(c + 1, f"company{c:03d}") for c in range(companies)])
    seeded = {"rows": 0, "files": 0, "dangling": 0, "orphans": 0}
    rows: dict[str, list[tuple[int, str]]] = {"portraits": [], "videos": []}
    made: set[Path] = set()
    for i in range(count):
        cid = i % companies + 1
        slug = f"company{cid - 1:03d}"
        ct = "videos" if i % 10 < 3 else "portraits"
        n = i // companies
        key = f"cat{n // (PER_FOLDER * 3)}/{('Image', 'QR', 'nft_markers')[n % 3]}/f{n:07d}-{rng.randrange(10**6)}" \
              + (".mp4" if ct == "videos" else ".jpg")
        kind = rng.randrange(EVERY)
        if kind != 0:  # a file (with a row, unless it is an orphan)
            path = files / ct / slug / key
            if path.parent not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                made.add(path.parent)
            path.write_bytes(b"x")
            seeded["files"] += 1
        if kind == 1:
            seeded["orphans"] += 1
            continue
        if kind == 0:
            seeded["dangling"] += 1
        value = key if ct == "portraits" else f"{CDN}/{slug}/{quote(key)}"
        rows[ct].append((cid, value))
        seeded["rows"] += 1
        if len(rows[ct]) >= 10_000:
            _flush(db, rows)
    _flush(db, rows)
    db.commit()
    db.close()
    (root / "storage_config.json").write_text(json.dumps({
        "portraits": {"storage_type": "local"}, "videos": {"storage_type": "local"},
        "local": {"base_path": str(files)},
        "references": {
            "portraits.image_path": {"content_type": "portraits", "company_column": "company_id", "id_column": "id"},
            "videos.url": {"content_type": "videos", "company_column": "company_id", "id_column": "id",
                           "url_pattern": r"^https://cdn\.example\.com/videos/[^/]+/"},
        },
    }))
    return seeded


def _flush(db: sqlite3.Connection, rows: dict[str, list[tuple[int, str]]]) -> None:
    for ct, batch in rows.items():
        column = "image_path" if ct == "portraits" else "url"
        db.executemany(f"INSERT INTO {ct} (company_id, {column}) VALUES (?, ?)", batch)
        batch.clear()


def measure(count: int, companies: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="vf-refs-bench-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        seeded = generate(root, count, companies)
        generated = time.perf_counter() - started
        env = {**os.environ, "VERTEXFLOW_DB": str(root / "platform.db"),
               "VERTEXFLOW_STORAGE_CONFIG": str(root / "storage_config.json")}
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "vertexflow", "company", "refs", "--all", "--json",
                                  "--limit", "5"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = child.communicate(timeout=7200)  # the child is reaped here; its rusage comes from wait4 below
        seconds = time.perf_counter() - started
        rss_mb = resource_peak_mb()
        if child.returncode not in (0, 1):
            raise SystemExit(f"company refs exited {child.returncode}: {err.decode()[-2000:]}")
        report = json.loads(out)
    found = {"rows": sum(t["rows"] for t in report["totals"].values()),
             "files": sum(t["files"] for t in report["totals"].values()),
             "dangling": report["dangling"], "orphans": report["orphans"]}
    if found != seeded:
        raise SystemExit(f"the check found {found}, the generator seeded {seeded}")
    return {"count": count, "companies": companies, "generate_s": round(generated, 1), "seconds": round(seconds, 2),
            "rows_per_s": round(seeded["rows"] / seconds), "peak_rss_mb": round(rss_mb, 1), **found}


def resource_peak_mb() -> float:
    """The largest peak RSS of the children waited for so far (one command per interpreter: its own)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def run(count: int, companies: int) -> dict[str, object]:
    """Measure in a fresh interpreter, so that RUSAGE_CHILDREN holds the one command alone."""
    out = subprocess.run([sys.executable, __file__, "--child", "--count", str(count), "--companies", str(companies)],
                         capture_output=True, text=True, timeout=14400, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=1_000_000, help="rows and files (about one each)")
    p.add_argument("--companies", type=int, default=20)
    p.add_argument("--out", type=Path, help="also write the results (JSON) here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.count, args.companies)))
        return
    load_before = os.getloadavg()
    small = run(max(args.companies, args.count // 10), args.companies)
    big = run(args.count, args.companies)
    results = {"small": small, "big": big, "cpus": os.cpu_count(), "load_average_before": load_before,
               "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"company refs --all on {big['rows']:,} rows and {big['files']:,} files ({args.companies} companies, "
          f"local disk): {big['seconds']} s, {big['rows_per_s']:,} rows/s, peak RSS {big['peak_rss_mb']} MB "
          f"({small['rows']:,} rows: {small['seconds']} s, {small['peak_rss_mb']} MB)")


if __name__ == "__main__":
    main()
