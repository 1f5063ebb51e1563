#!/usr/bin/env python3
"""``backup create --platform`` against ``backup create --type storage`` of the same files as one tree.

    python benchmarks/platform_backup.py                 # 600 files of 1-64 KiB, 8 companies, 3 rounds
    python benchmarks/platform_backup.py --files 20000   # dataset B's size (not run on the shared VM)

The platform: ``--companies`` companies, two content types, the files spread
evenly over them; half the companies on local disk, half on one S3
connection (a SeaweedFS server this script starts on 127.0.0.1). Rows:

* ``platform``: :func:`create_platform_backup` of that platform (database
  snapshot, every route checked, each company's files read on its route,
  every route listed again for changes);
* ``tree local``, ``tree S3``: :func:`create_backup` ``--type storage`` of
  the same files as one tree, all on local disk or all in one S3 prefix;
* ``split estimate``: the time the two trees would take for the platform's
  split (local share of ``tree local`` + S3 share of ``tree S3``); the
  platform row over it is the overhead of following routes.

Timed in-process (the CLI's start-up would dominate at this size), the
median of ``--repeat`` rounds, the rows taking turns; each backup goes to a
fresh local folder. Files are random bytes (nothing compresses). Output:
a markdown table (printed, and ``results/platform-backup-latest.md`` with the
raw numbers in ``.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform as host
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `vertexflow` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vertexflow.backends.local import LocalBackend  # noqa: E402
from vertexflow.backends.s3 import S3Backend  # noqa: E402
from vertexflow.model import ObjectInfo, body_from_bytes  # noqa: E402
from vertexflow.ops.backup.create import CreateOptions, create_backup  # noqa: E402
from vertexflow.ops.backup.platform import PlatformOptions, create_platform_backup  # noqa: E402
from vertexflow.tenancy import StorageManager  # noqa: E402
from vertexflow.tenancy.registry import Registry  # noqa: E402
from vertexflow.testing.seaweedfs import SeaweedFS  # noqa: E402
from vertexflow.transforms.compression import parse_codec  # noqa: E402

HERE = Path(__file__).resolve().parent
KiB = 1024
CONTENT_TYPES = ("portraits", "videos")


def dataset(files: int, companies: int, seed: int) -> dict[tuple[str, str], dict[str, bytes]]:
    """``{(content type, company): {key: bytes}}``: ``files`` files of 1-64 KiB spread evenly."""
    rng = random.Random(seed)
    out: dict[tuple[str, str], dict[str, bytes]] = {}
    for i in range(files):
        ct, company = CONTENT_TYPES[i % 2], f"company{(i // 2) % companies:02d}"
        key = f"cat{i % 5}/{('Image', 'QR', 'nft_markers')[i % 3]}/f{i:06d}.bin"
        out.setdefault((ct, company), {})[key] = rng.randbytes(rng.randint(1 * KiB, 64 * KiB))
    return out


async def fill(backend: Any, files: dict[str, bytes]) -> None:
    for key, data in files.items():
        await backend.put(ObjectInfo(key=key, size=len(data)), body_from_bytes(data))


def s3(server: SeaweedFS, bucket: str, prefix: str) -> S3Backend:
    return S3Backend(bucket, prefix, endpoint_url=server.endpoint, region=server.region,
                     access_key_id=server.access_key, secret_access_key=server.secret_key)


async def setup(work: Path, server: SeaweedFS, bucket: str, data: dict[tuple[str, str], dict[str, bytes]],
                companies: int) -> tuple[Path, Path, dict[str, float]]:
    """The platform (storage config, database, files on its routes) and the two trees; the S3 share of bytes."""
    cfg, db = work / "storage_config.json", work / "platform.db"
    cfg.write_text(json.dumps({
        **{ct: {"storage_type": "local"} for ct in CONTENT_TYPES}, "local": {"base_path": "storage"},
        "connections": {"s3": {"type": "minio", "endpoint": server.endpoint.removeprefix("http://"),
                               "access_key": server.access_key, "secret_key": server.secret_key,
                               "bucket": bucket, "secure": False}}}))
    on_s3 = {f"company{i:02d}" for i in range(companies) if i % 2}
    with Registry.open(db) as reg:
        conn = reg.add_connection("s3", "minio")
        for i in range(companies):
            name = f"company{i:02d}"
            if name in on_s3:
                reg.add_company(name, storage_type="minio", storage_connection_id=conn.id)
            else:
                reg.add_company(name)
    s3_bytes = total = 0
    for (ct, company), files in data.items():
        size = sum(map(len, files.values()))
        total += size
        if company in on_s3:
            s3_bytes += size
            async with s3(server, bucket, f"{ct}/{company}") as b:
                await fill(b, files)
        else:
            async with LocalBackend(work / "storage" / ct / company) as b:
                await fill(b, files)
        tree = {f"{ct}/{company}/{k}": v for k, v in files.items()}
        async with LocalBackend(work / "tree") as b:
            await fill(b, tree)
        async with s3(server, bucket, "tree") as b:
            await fill(b, tree)
    return cfg, db, {"s3": s3_bytes / total}


async def one(row: str, work: Path, server: SeaweedFS, bucket: str, cfg: Path, db: Path, codec: Any) -> dict[str, Any]:
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    async with LocalBackend(out) as dest:
        if row == "platform":
            async with StorageManager.open(cfg, db) as m:
                result = await create_platform_backup(dest, m, PlatformOptions(codec=codec))
        else:
            source = LocalBackend(work / "tree") if row == "tree local" else s3(server, bucket, "tree")
            async with source:
                result = await create_backup(dest, CreateOptions(kind="storage", codec=codec, storage=source))
    seconds = time.perf_counter() - started
    s = result.metadata.storage
    assert s is not None
    return {"row": row, "seconds": seconds, "files": s.files, "bytes": s.bytes}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # small by default: the reference VM is shared, and the ratio is what is compared
    p.add_argument("--files", type=int, default=600, help="files in all (1-64 KiB each)")
    p.add_argument("--companies", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--compress", default="zstd:3")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args()
    codec = parse_codec(args.compress)
    data = dataset(args.files, args.companies, seed=21)
    rows = ("platform", "tree local", "tree S3")
    runs: dict[str, list[dict[str, Any]]] = {r: [] for r in rows}
    with tempfile.TemporaryDirectory(prefix="vf-platform-bench-") as tmp:
        work = Path(tmp)
        with SeaweedFS(work / "seaweedfs") as server, server.temporary_bucket("platform-bench") as bucket:
            cfg, db, share = asyncio.run(setup(work, server, bucket, data, args.companies))
            for i in range(args.repeat):
                order = rows[i % 3:] + rows[:i % 3]  # take turns
                for row in order:
                    run = asyncio.run(one(row, work, server, bucket, cfg, db, codec))
                    runs[row].append(run)
                    print(f"round {i + 1} {row}: {run['seconds']:.3f} s", file=sys.stderr)
    med = {r: statistics.median(x["seconds"] for x in runs[r]) for r in rows}
    files, size = runs["platform"][0]["files"], runs["platform"][0]["bytes"]
    estimate = share["s3"] * med["tree S3"] + (1 - share["s3"]) * med["tree local"]
    lines = [f"# backup create --platform against one tree ({args.files} files of 1-64 KiB, "
             f"{size / 1e6:.1f} MB, {args.companies} companies x {len(CONTENT_TYPES)} content types, "
             f"{share['s3']:.0%} of the bytes on S3; {args.compress}; median of {args.repeat})", "",
             "| row | seconds | MB/s | objects/s |", "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r} | {med[r]:.3f} | {size / 1e6 / med[r]:.1f} | {files / med[r]:.0f} |")
    lines.append(f"| split estimate | {estimate:.3f} | {size / 1e6 / estimate:.1f} | {files / estimate:.0f} |")
    lines += ["", f"platform / split estimate: {med['platform'] / estimate:.2f}x the time",
              f"host: {host.node()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "platform-backup-latest.md").write_text(text)
    (args.out / "platform-backup-latest.json").write_text(json.dumps(
        {"args": vars(args) | {"out": str(args.out)}, "share_s3": share["s3"], "median": med,
         "estimate": estimate, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
