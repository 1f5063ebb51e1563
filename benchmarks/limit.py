#!/usr/bin/env python3
"""The limit rows: the S3 server delivering or accepting a dataset to and from a trivial client.

    python benchmarks/limit.py get --bucket B --prefix P --report counts.json
    python benchmarks/limit.py put --bucket B --prefix P --src DIR --report counts.json

Credentials and the endpoint come from ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION`` and ``AWS_ENDPOINT_URL`` (as
vertexflow gets them in the benchmark). The client does nothing but move the
bytes: ``get`` lists the prefix and reads every object into nothing (a
byte count); ``put`` walks a folder and writes every file, with the payload
left unsigned (``UNSIGNED-PAYLOAD``: no hash of the body on this side). Its
request pattern is vertexflow's by default, given on the command line by the
harness (benchmarks/tools.py reads them from vertexflow's own defaults):

- objects in flight: ``--transfers`` (vertexflow's 16 to or from a remote);
- connections: ``--connections`` (vertexflow's pool: 16 requests + 4 parts);
- get: an object of up to ``--stream-limit`` bytes in one streamed GET, a
  larger one in ranged GETs of ``--part-size``, ``--part-concurrency`` at a
  time (the harness gives vertexflow's ``multipart_threshold``, 8 MiB, as the
  stream limit: vertexflow itself reads an object of up to 256 MiB in two
  streamed GETs, but parallel ranges were as fast or faster, so the limit
  takes them);
- put: a file of up to ``--multipart-threshold`` bytes in one PutObject, a
  larger one as a multipart upload of ``--part-size`` parts,
  ``--part-concurrency`` in flight.

Every answer's body is counted against the size the listing (get) or the
file (put) says; a short or long body, an error status or a timeout fails the
run (exit 1). ``--report`` receives ``{"objects", "bytes", "requests"}`` once
all is done, for the harness to check against the dataset.

SigV4 is vertexflow's own signer (vertexflow/backends/s3/sigv4.py), loaded by
file path: importing it through the package would import the whole S3
backend (botocore among it, ~0.35 s), which a trivial client has no use for.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import aiohttp
from yarl import URL

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.datasets import walk_files  # noqa: E402 - the standard library only

MiB = 1024 * 1024
#: a read of an answer's body asks for at most this much at once
READ_CHUNK = 1 * MiB
#: seconds without a byte before a request is given up (vertexflow's read timeout is of this order)
SOCK_READ_TIMEOUT = 120
UNSIGNED = "UNSIGNED-PAYLOAD"
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class LimitError(Exception):
    """A request failed or moved another number of bytes than expected."""


def _load_sigv4() -> Any:
    spec = importlib.util.find_spec("vertexflow")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("limit.py: the vertexflow package is not importable (its SigV4 signer is used)")
    path = Path(next(iter(spec.submodule_search_locations))) / "backends" / "s3" / "sigv4.py"
    mod_spec = importlib.util.spec_from_file_location("_vf_bench_sigv4", path)
    assert mod_spec is not None and mod_spec.loader is not None
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


sigv4 = _load_sigv4()


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key: str
    secret_key: str
    token: str | None = None


class Client:
    """Signed requests on one aiohttp session; counts requests."""

    def __init__(self, endpoint: str, region: str, creds: Credentials, connections: int) -> None:
        url = URL(endpoint)
        self.origin = f"{url.scheme}://{url.raw_authority}"
        self.host = url.raw_authority
        self.signer = sigv4.Signer(region)
        self.creds = creds
        self.requests = 0
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=SOCK_READ_TIMEOUT),
            auto_decompress=False, skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"))

    async def request(self, method: str, bucket: str, key: str = "", *, query: dict[str, str] | None = None,
                      headers: dict[str, str] | None = None, data: bytes | None = None,
                      payload: str = sigv4.EMPTY_SHA256) -> aiohttp.ClientResponse:
        path = f"/{bucket}/{sigv4.quote_path(key)}" if key else f"/{bucket}"
        q = sigv4.canonical_query(query) if query else ""
        headers = dict(headers or {})
        self.signer.sign(method, self.host, path, q, headers, payload, self.creds)
        url = URL(f"{self.origin}{path}?{q}" if q else f"{self.origin}{path}", encoded=True)
        self.requests += 1
        response = await self.session.request(method, url, headers=headers, data=data)
        if response.status >= 300:
            body = await response.read()
            response.release()
            raise LimitError(f"{method} {path}?{q}: HTTP {response.status}: {body[:300]!r}")
        return response

    async def drain(self, response: aiohttp.ClientResponse, expected: int, what: str) -> int:
        """Read the body into nothing; it must be ``expected`` bytes long."""
        got = 0
        try:
            while chunk := await response.content.read(READ_CHUNK):
                got += len(chunk)
        finally:
            response.release()
        if got != expected:
            raise LimitError(f"{what}: {got:,} bytes in the answer, expected {expected:,}")
        return got


# -- get ---------------------------------------------------------------------------------

async def list_objects(client: Client, bucket: str, prefix: str) -> list[tuple[str, int]]:
    """(key, size) of every object under ``prefix``, ListObjectsV2 page by page."""
    out: list[tuple[str, int]] = []
    query = {"list-type": "2", "prefix": prefix}  # keys come as XML text (servers differ on url encoding)
    while True:
        response = await client.request("GET", bucket, query=query)
        try:
            root = ElementTree.fromstring(await response.read())
        finally:
            response.release()
        for item in root.iter(f"{_NS}Contents"):
            out.append((item.findtext(f"{_NS}Key") or "", int(item.findtext(f"{_NS}Size") or 0)))
        token = root.findtext(f"{_NS}NextContinuationToken")
        if root.findtext(f"{_NS}IsTruncated") != "true" or not token:
            return out
        query = {**query, "continuation-token": token}


async def get_object(client: Client, bucket: str, key: str, size: int, args: argparse.Namespace) -> int:
    if size <= args.stream_limit:
        response = await client.request("GET", bucket, key)
        return await client.drain(response, size, key)
    parts = asyncio.Semaphore(args.part_concurrency)

    async def one(first: int, last: int) -> int:
        async with parts:
            response = await client.request("GET", bucket, key, headers={"range": f"bytes={first}-{last}"})
            return await client.drain(response, last - first + 1, f"{key} bytes {first}-{last}")

    got = await asyncio.gather(*(one(first, min(size, first + args.part_size) - 1)
                                 for first in range(0, size, args.part_size)))
    return sum(got)


async def run_get(client: Client, args: argparse.Namespace) -> tuple[int, int]:
    prefix = args.prefix.rstrip("/") + "/" if args.prefix else ""
    objects = await list_objects(client, args.bucket, prefix)
    return len(objects), await _bounded(args.transfers, (get_object(client, args.bucket, key, size, args)
                                                         for key, size in objects))


# -- put ---------------------------------------------------------------------------------

def walk(root: Path) -> Iterator[tuple[str, Path, int]]:
    """(key below the prefix, path, size) of every regular file under ``root``."""
    for rel, size in walk_files(root):
        yield rel.replace(os.sep, "/"), root / rel, size


def _read(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb", buffering=0) as f:
        data = os.pread(f.fileno(), length, offset)
    if len(data) != length:
        raise LimitError(f"{path}: read {len(data):,} bytes at {offset:,}, expected {length:,}")
    return data


async def put_object(client: Client, bucket: str, key: str, path: Path, size: int,
                     args: argparse.Namespace) -> int:
    if size <= args.multipart_threshold:
        response = await client.request("PUT", bucket, key, data=_read(path, 0, size), payload=UNSIGNED)
        response.release()
        return size
    response = await client.request("POST", bucket, key, query={"uploads": ""})
    try:
        upload_id = ElementTree.fromstring(await response.read()).findtext(f"{_NS}UploadId")
    finally:
        response.release()
    if not upload_id:
        raise LimitError(f"{key}: CreateMultipartUpload answered no UploadId")
    parts = asyncio.Semaphore(args.part_concurrency)

    async def one(number: int, first: int) -> tuple[int, str, int]:
        async with parts:  # a part is read only once its slot is free: memory stays at the parts in flight
            length = min(size, first + args.part_size) - first
            data = await asyncio.to_thread(_read, path, first, length)
            answer = await client.request("PUT", bucket, key, query={"partNumber": str(number), "uploadId": upload_id},
                                          data=data, payload=UNSIGNED)
            answer.release()
            return number, answer.headers.get("ETag", ""), length

    done = await asyncio.gather(*(one(n, first) for n, first in enumerate(range(0, size, args.part_size), 1)))
    body = ("<CompleteMultipartUpload>" + "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"
                                                  for n, etag, _ in done) + "</CompleteMultipartUpload>").encode()
    response = await client.request("POST", bucket, key, query={"uploadId": upload_id}, data=body, payload=UNSIGNED)
    try:
        answer = await response.read()  # S3 may answer 200 with an <Error> inside
    finally:
        response.release()
    if b"<Error>" in answer:
        raise LimitError(f"{key}: CompleteMultipartUpload failed: {answer[:300]!r}")
    return sum(length for _, _, length in done)


async def run_put(client: Client, args: argparse.Namespace) -> tuple[int, int]:
    prefix = args.prefix.strip("/") + "/" if args.prefix else ""
    files = list(walk(Path(args.src)))
    return len(files), await _bounded(args.transfers, (put_object(client, args.bucket, prefix + rel, path, size, args)
                                                       for rel, path, size in files))


# -- both --------------------------------------------------------------------------------

async def _bounded(limit: int, jobs: Iterator[Any]) -> int:
    """Run the coroutines ``limit`` at a time (no more created than run); the sum of their results."""
    total = 0
    jobs = iter(jobs)

    async def worker() -> None:
        nonlocal total
        for job in jobs:
            moved = await job  # not `total += await job`: that reads total before the await
            total += moved

    await asyncio.gather(*(worker() for _ in range(limit)))
    return total


async def main_async(args: argparse.Namespace) -> dict[str, int]:
    env = os.environ
    try:
        creds = Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN"))
        endpoint = env["AWS_ENDPOINT_URL"]
    except KeyError as exc:
        raise SystemExit(f"limit.py: {exc.args[0]} is not set") from None
    client = Client(endpoint, env.get("AWS_REGION", "us-east-1"), creds, args.connections)
    try:
        objects, nbytes = await (run_get(client, args) if args.command == "get" else run_put(client, args))
    finally:
        await client.session.close()
    return {"objects": objects, "bytes": nbytes, "requests": client.requests}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=("get", "put"))
    p.add_argument("--bucket", required=True)
    p.add_argument("--prefix", default="", help="key prefix read (get) or written under (put)")
    p.add_argument("--src", help="put: the folder to upload")
    p.add_argument("--report", help="write the counts (objects, bytes, requests) as JSON here")
    p.add_argument("--transfers", type=int, default=16, help="objects in flight [16]")
    p.add_argument("--connections", type=int, default=20, help="connection pool size [20]")
    p.add_argument("--part-size", type=int, default=8 * MiB, help="ranged GET / multipart part size [8 MiB]")
    p.add_argument("--part-concurrency", type=int, default=4, help="parts in flight per object [4]")
    p.add_argument("--stream-limit", type=int, default=256 * MiB,
                   help="get: objects up to this size in one streamed GET [256 MiB]")
    p.add_argument("--multipart-threshold", type=int, default=8 * MiB,
                   help="put: files up to this size in one PutObject [8 MiB]")
    args = p.parse_args(argv)
    if args.command == "put" and not args.src:
        p.error("put needs --src")
    if min(args.transfers, args.connections, args.part_size, args.part_concurrency) < 1:
        p.error("--transfers, --connections, --part-size and --part-concurrency must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        counts = asyncio.run(main_async(args))
    except (LimitError, aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        print(f"limit.py: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.report:
        Path(args.report).write_text(json.dumps(counts) + "\n")
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
