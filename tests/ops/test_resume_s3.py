"""A large upload to S3 survives the death of its run: the next run continues the multipart upload.

Against the real SeaweedFS the suite starts: once through the command line
killed with SIGKILL (nothing can clean up), once in-process with the
endpoint vanishing mid-upload behind a TCP proxy (the abort cannot reach the
server either, so the checkpoint must stay).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from vertexflow.backends.local import LocalBackend
from vertexflow.backends.s3 import S3Backend
from vertexflow.ops.copy import CopyOptions
from vertexflow.ops.sync import SyncJob, SyncOptions
from vertexflow.retry import RetryPolicy
from vertexflow.state.journal import Journal
from vertexflow.testing.seaweedfs import SeaweedFS

from ..cli.helpers import vf

pytestmark = [pytest.mark.s3, pytest.mark.slow]

MiB = 1024 * 1024


def file_of(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; their SHA-256."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(0, size, 8 * MiB):
            chunk = os.urandom(min(8 * MiB, size - f.tell()))
            h.update(chunk)
            f.write(chunk)
    return h.hexdigest()


def saved_parts(journal: Path) -> int:
    """Completed parts in the journal's ``uploads`` table (read-only, while another process writes it)."""
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1)
        try:
            rows = db.execute("SELECT parts FROM uploads").fetchall()
        finally:
            db.close()
    except sqlite3.Error:  # not created yet, or the schema not yet written
        return 0
    return sum(len(json.loads(parts)) for (parts,) in rows)


def s3_sha256(raw: Any, bucket: str, key: str) -> str:
    h = hashlib.sha256()
    for chunk in raw.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(8 * MiB):
        h.update(chunk)
    return h.hexdigest()


def test_killed_copy_resumes_its_multipart_upload(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str,
                                                   seaweed: SeaweedFS) -> None:
    size = 200 * MiB
    parts = size // (8 * MiB)  # the default part size
    src = tmp_path / "big.bin"
    digest = file_of(src, size)
    journal = tmp_path / "journal.db"
    args = ["copy", str(src), f"s3://{s3_bucket}/x", "--journal", str(journal), "--json"]
    proc = subprocess.Popen([sys.executable, "-m", "vertexflow", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while saved_parts(journal) < 5:
            assert proc.poll() is None, f"the copy ended before it could be killed: {proc.communicate()}"
            assert time.monotonic() < deadline, "no parts saved in the journal"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    done_before = saved_parts(journal)
    raw = seaweed.boto3_client()
    left = raw.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert [u["Key"] for u in left] == ["x/big.bin"]  # killed: nothing could abort it

    again = vf(*args, timeout=300)
    assert again.code == 0, again.err
    summary = again.json()
    assert summary["objects"] == 1 and summary["resumed"]
    assert s3_sha256(raw, s3_bucket, "x/big.bin") == digest
    # HeadObject (is it there?), HeadBucket, ListParts, CompleteMultipartUpload, and the parts sent
    sent = summary["requests"] - 4
    assert sent <= parts - done_before < parts
    assert raw.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert saved_parts(journal) == 0


class VanishingProxy:
    """A TCP proxy to ``port`` on 127.0.0.1 that can vanish (every connection cut, none accepted) and come back."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.port = 0
        self.forwarded = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def vanish(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            try:
                while data := await src.read(256 * 1024):
                    if count:
                        self.forwarded += len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        self._writers -= {writer, up_writer}


@pytest.fixture
async def proxy(seaweed: SeaweedFS) -> AsyncIterator[VanishingProxy]:
    p = VanishingProxy(int(seaweed.endpoint.rsplit(":", 1)[1]))
    await p.start()
    try:
        yield p
    finally:
        await p.vanish()


async def test_upload_cut_off_by_an_outage_resumes(tmp_path: Path, seaweed: SeaweedFS, s3_bucket: str,
                                                   proxy: VanishingProxy) -> None:
    src = tmp_path / "src"
    src.mkdir()
    size, part = 64 * MiB, 5 * MiB
    digest = file_of(src / "big.bin", size)
    options = SyncOptions(copy=CopyOptions(retry=RetryPolicy(attempts=1)))

    def backend() -> S3Backend:
        return S3Backend(s3_bucket, "o", endpoint_url=f"http://127.0.0.1:{proxy.port}", region=seaweed.region,
                         access_key_id=seaweed.access_key, secret_access_key=seaweed.secret_key,
                         part_size=part, multipart_threshold=part)

    async def run(journal: Journal, dst: S3Backend) -> Any:
        async with LocalBackend(src) as s:
            return await SyncJob(s, dst, journal, src_spec=str(src), dst_spec=f"s3://{s3_bucket}/o",
                                 options=options).run()

    async def cut_off_midway() -> None:
        while proxy.forwarded < size // 2:
            await asyncio.sleep(0.005)
        await proxy.vanish()

    async with await Journal.open(tmp_path / "journal.db") as journal:
        first_dst = backend()
        async with first_dst, asyncio.TaskGroup() as tg:
            cutter = tg.create_task(cut_off_midway())
            first = await run(journal, first_dst)
            cutter.cancel()  # if the run ended some other way, the test fails below
        assert first.failed_objects == 1 and first.failures[0].reason in ("connection", "transient")
        dest = first_dst.describe()
        saved = await journal.get_upload(dest, "big.bin")
        assert saved is not None and len(saved["parts"]) >= 2  # the abort could not reach the server

        await proxy.start()  # the endpoint is back, on the same port
        async with backend() as dst:
            second = await run(journal, dst)
            assert second.done_objects == 1 and second.failed_objects == 0
            total_parts = -(-size // part)
            # HeadBucket, the listing, ListParts, Complete, and the parts not done before
            assert second.requests - 4 <= total_parts - len(saved["parts"])
        assert await journal.get_upload(dest, "big.bin") is None
    raw = seaweed.boto3_client()
    assert s3_sha256(raw, s3_bucket, "o/big.bin") == digest
    assert raw.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
