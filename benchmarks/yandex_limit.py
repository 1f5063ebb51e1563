#!/usr/bin/env python3
"""The emulator's own limit: a trivial aiohttp client making only the calls the protocol needs per file.

    python benchmarks/yandex_limit.py --files 300          # calls per file, vertexflow vs this client

Upload, per file: ``GET /v1/disk/resources/upload?path=..&overwrite=true``, then
``PUT`` the bytes to the returned href. Download, per file: ``GET
/v1/disk/resources/download?path=..``, then ``GET`` the href, written to a
local file (no fsync, no hashing, no listing: the client is told the paths).
The folders a tree needs are created once (``PUT /v1/disk/resources``, one
level at a time, a level's folders at once) inside the timed run, as any
client must before it uploads into them. ``concurrency`` workers each run one
file at a time, so at most ``concurrency`` requests are in flight: the
requests per second the emulator answers at that latency and concurrency.

``count_calls`` runs an in-process emulator and copies a tree with
``vertexflow copy`` and with this client, returning the emulator's request
counts per route for each: the calls per file each makes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote, urlencode

import aiohttp
from yarl import URL

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vertexflow.testing.sample_tree import make_tree  # noqa: E402
from vertexflow.testing.yandex_disk import running_emulator  # noqa: E402

TOKEN = "bench"
#: bytes per read when streaming a file up, and per write when one comes down
CHUNK = 1 << 20


def files_below(src: Path) -> list[str]:
    return sorted(str(p.relative_to(src)).replace(os.sep, "/") for p in src.rglob("*") if p.is_file())


def _api(api_url: str, endpoint: str, **params: str) -> URL:
    # every character quoted, as vertexflow's client does, so paths with "+" or "%" survive
    return URL(f"{api_url}{endpoint}?{urlencode(params, quote_via=quote, safe='')}", encoded=True)


async def _checked_json(resp: aiohttp.ClientResponse, what: str) -> dict[str, object]:
    if resp.status >= 300:
        raise RuntimeError(f"{what}: HTTP {resp.status} {await resp.text()}")
    return await resp.json(content_type=None)  # type: ignore[no-any-return]


async def _pool(items: list[str], concurrency: int, work) -> None:  # type: ignore[no-untyped-def]
    queue = iter(items)

    async def worker() -> None:
        for item in queue:  # one shared iterator: each item taken once
            await work(item)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def _session(concurrency: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=0),
                                 timeout=aiohttp.ClientTimeout(total=None, sock_read=600))


async def upload(api_url: str, src: Path, remote: str, concurrency: int) -> dict[str, float]:
    """Upload every file below ``src`` into ``remote`` (``/a/b``, created here); the row's numbers."""
    keys = files_below(src)
    total = sum((src / k).stat().st_size for k in keys)
    auth = {"Authorization": f"OAuth {TOKEN}"}
    root = tuple(p for p in remote.split("/") if p)
    folders: set[tuple[str, ...]] = {root[:i] for i in range(1, len(root) + 1)}
    for k in keys:
        parts = root + tuple(k.split("/")[:-1])
        folders.update(parts[:i] for i in range(1, len(parts) + 1))
    async with _session(concurrency) as http:
        start = time.perf_counter()

        async def mkdir(path: str) -> None:
            async with http.put(_api(api_url, "/resources", path=path), headers=auth) as resp:
                if resp.status not in (201, 409):  # 409: it is there already
                    raise RuntimeError(f"mkdir {path}: HTTP {resp.status} {await resp.text()}")

        for depth in range(1, max(map(len, folders), default=0) + 1):
            await _pool(sorted("disk:/" + "/".join(f) for f in folders if len(f) == depth), concurrency, mkdir)

        async def put(key: str) -> None:
            path = f"disk:{remote.rstrip('/')}/{key}"
            async with http.get(_api(api_url, "/resources/upload", path=path, overwrite="true"),
                                headers=auth) as resp:
                href = (await _checked_json(resp, f"upload link {path}"))["href"]

            async def body():  # type: ignore[no-untyped-def]
                with open(src / key, "rb") as f:
                    while chunk := f.read(CHUNK):
                        yield chunk

            async with http.put(URL(str(href), encoded=True), data=body()) as resp:
                if resp.status not in (201, 202):
                    raise RuntimeError(f"upload {path}: HTTP {resp.status}")

        await _pool(keys, concurrency, put)
        wall = time.perf_counter() - start
    return _row(len(keys), total, wall)


async def download(api_url: str, remote: str, keys: list[str], dst: Path, concurrency: int) -> dict[str, float]:
    """Download ``keys`` below ``remote`` into ``dst``; the row's numbers."""
    auth = {"Authorization": f"OAuth {TOKEN}"}
    total = 0
    async with _session(concurrency) as http:
        start = time.perf_counter()

        async def get(key: str) -> None:
            nonlocal total
            path = f"disk:{remote.rstrip('/')}/{key}"
            async with http.get(_api(api_url, "/resources/download", path=path), headers=auth) as resp:
                href = (await _checked_json(resp, f"download link {path}"))["href"]
            out = dst / key
            out.parent.mkdir(parents=True, exist_ok=True)
            async with http.get(URL(str(href), encoded=True)) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"download {path}: HTTP {resp.status}")
                with open(out, "wb") as f:
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        f.write(chunk)
                        total += len(chunk)

        await _pool(keys, concurrency, get)
        wall = time.perf_counter() - start
    return _row(len(keys), total, wall)


def _row(objects: int, size: int, wall: float) -> dict[str, float]:
    return {"objects": objects, "bytes": size, "wall_s": round(wall, 2),
            "objects_per_s": round(objects / wall, 1), "mb_per_s": round(size / 1e6 / wall, 1), "retries": 0}


async def _vertexflow(src: str, dst: str, api_url: str, transfers: int) -> None:
    env = {**os.environ, "YANDEX_DISK_TOKEN": TOKEN, "YANDEX_DISK_API_URL": api_url,
           "YANDEX_UPLOAD_CONCURRENCY": str(transfers)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vertexflow", "copy", src, dst, "--json", "--no-progress", "--no-journal",
        "--transfers", str(transfers), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"vertexflow copy {src} {dst} failed: {err.decode()[-2000:]}")


def _per_file(before: Counter[str], after: Counter[str], files: int) -> dict[str, float]:
    diff = after - before
    out = {route: round(n / files, 3) for route, n in sorted(diff.items())}
    out["total"] = round(sum(diff.values()) / files, 3)
    return out


async def count_calls(files: int, concurrency: int = 16) -> dict[str, dict[str, float]]:
    """Requests per file by route: vertexflow's copy and this client's, each way, on one tree of ``files``."""
    with tempfile.TemporaryDirectory(prefix="vf-yandex-count-") as tmp:
        src = Path(tmp) / "src"
        make_tree(src, files=files, min_size=1024, max_size=64 * 1024)
        keys = files_below(src)
        out: dict[str, dict[str, float]] = {}
        async with running_emulator(total_space=1 << 40) as emu:
            counts = emu.request_counts
            before = Counter(counts)
            await _vertexflow(str(src), "yadisk:/count-vf", emu.base_url, concurrency)
            out["vertexflow up"] = _per_file(before, counts, len(keys))
            before = Counter(counts)
            await _vertexflow("yadisk:/count-vf", str(Path(tmp) / "back-vf"), emu.base_url, concurrency)
            out["vertexflow down"] = _per_file(before, counts, len(keys))
            before = Counter(counts)
            await upload(emu.base_url, src, "/count-limit", concurrency)
            out["limit up"] = _per_file(before, counts, len(keys))
            before = Counter(counts)
            await download(emu.base_url, "/count-limit", keys, Path(tmp) / "back-limit", concurrency)
            out["limit down"] = _per_file(before, counts, len(keys))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=300, help="files in the counted tree (default 300)")
    args = p.parse_args()
    print(json.dumps(asyncio.run(count_calls(args.files)), indent=2))


if __name__ == "__main__":
    main()
