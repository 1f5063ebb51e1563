#!/usr/bin/env python3
"""Time and peak RSS of ``vertexflow company refs --all`` on a generated platform (local disk or S3).

    python benchmarks/refs.py                           # 1,000,000 rows and files (and a tenth), local disk
    python benchmarks/refs.py --count 100000 --backend s3
    python benchmarks/refs.py --backend local --backend s3 --out benchmarks/results/refs-1000000.json

Generates, with a fixed seed, a platform database (``companies``, ``portraits``
with relative keys, ``videos`` with the platform's full URLs, stripped by a
``url_pattern``) and the files its rows name on local disk, spread over
``--companies`` companies and folders of at most 1,000 files. With
``--backend s3`` the files are zero-byte objects in a bucket of a SeaweedFS
server started on 127.0.0.1 (every company routed to it through a storage
connection), put with a signed PUT each, many in flight, before the clock
starts. One row in a
thousand names a file that is not there and one file in a thousand has no
row, so the run finds exactly that many dangling references and orphans (the
script checks the counts). Each count runs the real command in a child
process; its time is the wall time of that process and its peak RSS is the
process's own (GNU ``time``; neither the server's nor the generator's). The flat-memory claim
holds when the peak at ``--count`` is about the peak at a tenth of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote, urlsplit

if __package__ in (None, ""):  # run as a script: make `vertexflow` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vertexflow.backends.s3.sigv4 import EMPTY_SHA256, Signer, quote_path  # noqa: E402
from vertexflow.testing.seaweedfs import SeaweedFS  # noqa: E402

#: files per folder: a real platform spreads its files over categories and subfolders
PER_FOLDER = 1000
#: one row in this many names a missing file, and one file in this many has no row
EVERY = 1000
CDN = "https://cdn.example.com/videos"
BUCKET = "refs-bench"
#: GNU time: the command's own peak RSS (see refs_command)
TIME = "/usr/bin/time"
#: PUTs in flight while filling the bucket: enough to keep the server busy, the client is the bottleneck
PUT_CONCURRENCY = 64


def generate(root: Path, count: int, companies: int, backend: str) -> dict[str, int]:
    """The platform under ``root``: platform.db and its files (under files/, or their keys in keys.txt for S3).

    Returns the seeded counts.
    """
    rng = random.Random(20261207)
    files = root / "files"
    keys = open(root / "keys.txt", "w") if backend == "s3" else None  # noqa: SIM115 - closed below
    db = sqlite3.connect(root / "platform.db")
    db.executescript("""
        CREATE TABLE storage_connections (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
            storage_type TEXT NOT NULL, config TEXT);
        CREATE TABLE companies (id INTEGER PRIMARY KEY AUTOINCREMENT, slug TEXT NOT NULL UNIQUE, name TEXT,
            storage_type TEXT NOT NULL DEFAULT 'default', storage_connection_id INTEGER, yandex_disk_folder_id TEXT);
        CREATE TABLE portraits (id INTEGER PRIMARY KEY, company_id INTEGER, image_path TEXT);
        CREATE TABLE videos (id INTEGER PRIMARY KEY, company_id INTEGER, url TEXT);
        CREATE INDEX portraits_company ON portraits (company_id);
        CREATE INDEX videos_company ON videos (company_id);
    """)
    if backend == "s3":
        db.execute("INSERT INTO storage_connections (id, name, storage_type) VALUES (1, 's3', 'minio')")
        db.executemany("INSERT INTO companies (id, slug, storage_type, storage_connection_id) VALUES (?, ?, ?, ?)",
                       [(c + 1, f"company{c:03d}", "minio", 1) for c in range(companies)])
    else:
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
            if keys is not None:
                keys.write(f"{ct}/{slug}/{key}\n")
            else:
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
    if keys is not None:
        keys.close()
    return seeded


def storage_config(root: Path, server: SeaweedFS | None) -> Path:
    config: dict[str, object] = {
        "portraits": {"storage_type": "local"}, "videos": {"storage_type": "local"},
        "local": {"base_path": str(root / "files")},
        "references": {
            "portraits.image_path": {"content_type": "portraits", "company_column": "company_id", "id_column": "id"},
            "videos.url": {"content_type": "videos", "company_column": "company_id", "id_column": "id",
                           "url_pattern": r"^https://cdn\.example\.com/videos/[^/]+/"},
        },
    }
    if server is not None:  # the companies' rows name this connection (storage_type minio)
        config["connections"] = {"s3": {"type": "minio", "endpoint": server.endpoint.removeprefix("http://"),
                                        "access_key": server.access_key, "secret_key": server.secret_key,
                                        "bucket": BUCKET, "secure": False}}
    path = root / "storage_config.json"
    path.write_text(json.dumps(config))
    return path


def _flush(db: sqlite3.Connection, rows: dict[str, list[tuple[int, str]]]) -> None:
    for ct, batch in rows.items():
        column = "image_path" if ct == "portraits" else "url"
        db.executemany(f"INSERT INTO {ct} (company_id, {column}) VALUES (?, ?)", batch)
        batch.clear()


async def fill_bucket(server: SeaweedFS, keys_file: Path) -> int:
    """PUT a zero-byte object for every line of ``keys_file``, ``PUT_CONCURRENCY`` at once; returns how many.

    A bare signed PUT on aiohttp: a full client (boto3, the S3 backend) spends several times the CPU per object.
    """
    import aiohttp
    from yarl import URL

    signer = Signer(server.region)
    credentials = SimpleNamespace(access_key=server.access_key, secret_key=server.secret_key, token=None)
    host = urlsplit(server.endpoint).netloc
    done = 0

    async def worker(keys: Iterator[str], session: aiohttp.ClientSession) -> None:
        nonlocal done
        for key in keys:  # one iterator shared by every worker: each line is taken once
            path = f"/{BUCKET}/{quote_path(key)}"
            headers = {"content-length": "0"}
            for attempt in range(5):  # a loaded server may drop a connection now and then
                signer.sign("PUT", host, path, "", headers, EMPTY_SHA256, credentials)
                try:
                    async with session.put(URL(server.endpoint + path, encoded=True), data=b"",
                                           headers=headers) as r:
                        await r.read()
                        if r.status == 200:
                            break
                        error = f"HTTP {r.status}"
                except aiohttp.ClientError as exc:
                    error = repr(exc)
                await asyncio.sleep(0.5 * (attempt + 1))
            else:
                raise SystemExit(f"PUT {key}: {error}")
            done += 1

    connector = aiohttp.TCPConnector(limit=PUT_CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        with open(keys_file) as f:
            keys = (line.rstrip("\n") for line in f)
            await asyncio.gather(*(worker(keys, session) for _ in range(PUT_CONCURRENCY)))
    return done


def refs_command(root: Path, cfg: Path) -> tuple[float, float, dict[str, object]]:
    """Run ``company refs --all`` in a child process: its wall seconds, its own peak RSS (MB) and its report.

    The peak comes from GNU time, which forks the command from its own small process: a child
    forked from this one would report at least this process's peak (exec keeps the high-water
    mark of the memory it replaces, and the generator's is larger than the command's).
    """
    env = {**os.environ, "VERTEXFLOW_DB": str(root / "platform.db"), "VERTEXFLOW_STORAGE_CONFIG": str(cfg),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent),
                                                       os.environ.get("PYTHONPATH")]))}
    peak = root / "peak.txt"
    with open(root / "out.json", "wb+") as out, open(root / "err.txt", "wb+") as err:
        started = time.perf_counter()
        child = subprocess.run([TIME, "-f", "%M", "-o", str(peak), sys.executable, "-m", "vertexflow", "company",
                                "refs", "--all", "--json", "--limit", "5"], env=env, stdout=out, stderr=err)
        seconds = time.perf_counter() - started
        if child.returncode not in (0, 1):
            err.seek(0)
            raise SystemExit(f"company refs exited {child.returncode}: {err.read().decode()[-2000:]}")
        out.seek(0)
        report = json.loads(out.read())
    return seconds, int(peak.read_text().split()[-1]) / 1024, report


def measure(count: int, companies: int, backend: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="vf-refs-bench-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        seeded = generate(root, count, companies, backend)
        if backend == "s3":
            with SeaweedFS(root / "seaweedfs") as server:
                server.create_bucket(BUCKET)
                put = asyncio.run(fill_bucket(server, root / "keys.txt"))
                assert put == seeded["files"], (put, seeded)
                generated = time.perf_counter() - started
                seconds, rss_mb, report = refs_command(root, storage_config(root, server))
        else:
            os.sync()  # the generated files' writeback is the generator's cost, not the command's
            generated = time.perf_counter() - started
            seconds, rss_mb, report = refs_command(root, storage_config(root, None))
    totals = report["totals"]
    assert isinstance(totals, dict)
    found = {"rows": sum(t["rows"] for t in totals.values()),
             "files": sum(t["files"] for t in totals.values()),
             "dangling": report["dangling"], "orphans": report["orphans"]}
    if found != seeded:
        raise SystemExit(f"the check found {found}, the generator seeded {seeded}")
    return {"count": count, "companies": companies, "backend": backend, "generate_s": round(generated, 1),
            "seconds": round(seconds, 2), "rows_per_s": round(seeded["rows"] / seconds),
            "peak_rss_mb": round(rss_mb, 1), **found}


def markdown(results: dict[str, object]) -> str:
    runs = results["runs"]
    assert isinstance(runs, list)
    lines = [f"# company refs --all ({results['when']}, {results['cpus']} cores, load before "
             f"{results['load_average_before'][0]:.2f})", "",  # type: ignore[index]
             "| rows | files | backend | seconds | rows/s | peak RSS (MB) | dangling | orphans | generate (s) |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        lines.append(f"| {r['rows']:,} | {r['files']:,} | {r['backend']} | {r['seconds']} | {r['rows_per_s']:,} | "
                     f"{r['peak_rss_mb']} | {r['dangling']} | {r['orphans']} | {r['generate_s']} |")
    lines += ["", f"`{results['command']}`; dangling references and orphans are the seeded counts, found exactly."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=1_000_000, help="rows and files (about one each)")
    p.add_argument("--companies", type=int, default=20)
    p.add_argument("--backend", action="append", choices=("local", "s3"),
                   help="where the files live (repeat for both; default local)")
    p.add_argument("--out", type=Path, help="also write the results here (JSON, and Markdown beside it)")
    args = p.parse_args()
    backends = args.backend or ["local"]
    load_before = os.getloadavg()
    runs = []
    for backend in backends:
        for count in (max(args.companies, args.count // 10), args.count):
            run = measure(count, args.companies, backend)
            print(json.dumps(run), file=sys.stderr, flush=True)
            runs.append(run)
    results = {"runs": runs, "cpus": os.cpu_count(), "load_average_before": load_before,
               "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
               "command": "python benchmarks/refs.py " + " ".join(sys.argv[1:])}
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(markdown(results))
    for r in runs:
        print(f"company refs --all on {r['rows']:,} rows and {r['files']:,} files ({args.companies} companies, "
              f"{r['backend']}): {r['seconds']} s, {r['rows_per_s']:,} rows/s, peak RSS {r['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
