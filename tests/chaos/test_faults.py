"""The fault-injecting proxy, against a tiny local aiohttp server: every kind of fault happens, and replays."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from vertexflow.testing.faults import KINDS, FaultProxy

BLOB = os.urandom(200 * 1024)


class Origin:
    """GET /blob (200 KiB), GET /chunked (the same, chunked), PUT /put (answers the body's SHA-256)."""

    def __init__(self) -> None:
        self.puts: list[int] = []
        self.requests = 0
        self.port = 0

    async def blob(self, request: web.Request) -> web.Response:
        self.requests += 1
        return web.Response(body=BLOB, content_type="application/octet-stream")

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        out = web.StreamResponse()
        out.enable_chunked_encoding()
        await out.prepare(request)
        for i in range(0, len(BLOB), 30000):
            await out.write(BLOB[i:i + 30000])
        await out.write_eof()
        return out

    async def put(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        self.puts.append(len(body))
        return web.Response(text=hashlib.sha256(body).hexdigest())


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    o = Origin()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/blob", o.blob)
    app.router.add_get("/chunked", o.chunked)
    app.router.add_put("/put", o.put)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    o.port = runner.addresses[0][1]
    try:
        yield o
    finally:
        await runner.cleanup()


async def fetch(proxy: FaultProxy, method: str, path: str, data: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(timeout=timeout) as s, \
            s.request(method, proxy.endpoint + path, data=data, headers=headers) as r:
        return r.status, dict(r.headers), await r.read()


def proxy_for(origin: Origin, kind: str | None, **kw: Any) -> FaultProxy:
    return FaultProxy(origin.port, seed=7, rates={kind: 1.0} if kind else {}, **kw)


async def test_no_fault_passes_everything_through(origin: Origin) -> None:
    async with proxy_for(origin, None) as p:
        async with aiohttp.ClientSession() as s:  # one connection, several requests on it
            for _ in range(3):
                async with s.get(p.endpoint + "/blob") as r:
                    assert await r.read() == BLOB
                async with s.get(p.endpoint + "/chunked") as r:
                    assert await r.read() == BLOB
                async with s.put(p.endpoint + "/put", data=BLOB) as r:
                    assert await r.text() == hashlib.sha256(BLOB).hexdigest()
                async with s.put(p.endpoint + "/put", data=BLOB, expect100=True) as r:
                    assert await r.text() == hashlib.sha256(BLOB).hexdigest()
        assert sum(p.counts.values()) == 0 and p.requests == 12


@pytest.mark.parametrize("expect", [False, True])
async def test_error_answers_with_retry_after_and_the_server_never_sees_it(origin: Origin, expect: bool) -> None:
    async with proxy_for(origin, "error", statuses=(503, 429)) as p:
        status, headers, body = await fetch(p, "PUT", "/put", BLOB, {"Expect": "100-continue"} if expect else None)
        assert status in (503, 429) and headers["Retry-After"] == "1" and b"<Code>SlowDown</Code>" in body
        status, _, _ = await fetch(p, "GET", "/blob")
        assert status in (503, 429)
        assert p.counts == {"error": 2} and origin.requests == 0


async def test_reset_mid_request_body(origin: Origin) -> None:
    async with proxy_for(origin, "reset_request") as p:
        with pytest.raises(aiohttp.ClientError):
            await fetch(p, "PUT", "/put", BLOB)
        assert set(p.counts) == {"reset_request"}  # aiohttp may retry once
    assert origin.puts == []  # the server never got a whole body


@pytest.mark.parametrize("path", ["/blob", "/chunked"])
async def test_reset_mid_response_body(origin: Origin, path: str) -> None:
    async with proxy_for(origin, "reset_response") as p:
        with pytest.raises(aiohttp.ClientError):
            await fetch(p, "GET", path)
        assert set(p.counts) == {"reset_response"}  # aiohttp may retry once


async def test_reset_before_an_empty_answer(origin: Origin) -> None:
    async with proxy_for(origin, "reset_response") as p:
        with pytest.raises(aiohttp.ClientError):
            await fetch(p, "HEAD", "/blob")
        assert set(p.counts) == {"reset_response"}  # aiohttp may retry once


async def test_truncated_200(origin: Origin) -> None:
    async with proxy_for(origin, "truncate") as p:
        with pytest.raises(aiohttp.ClientPayloadError):
            await fetch(p, "GET", "/blob")
        assert set(p.counts) == {"truncate"}  # aiohttp may retry once
        assert p.faults[0].method == "GET" and p.faults[0].target == "/blob"


@pytest.mark.parametrize("kind", ["stall", "delay"])
async def test_stall_and_delay_hold_the_answer(origin: Origin, kind: str) -> None:
    async with proxy_for(origin, kind, stall_seconds=0.6, delay_seconds=0.6) as p:
        t0 = time.monotonic()
        status, _, body = await fetch(p, "GET", "/blob")
        assert status == 200 and body == BLOB and time.monotonic() - t0 >= 0.55
        assert p.counts == {kind: 1}


async def test_throttle_trickles(origin: Origin) -> None:
    async with proxy_for(origin, "throttle", trickle_rate=200 * 1024, trickle_seconds=0.5) as p:
        t0 = time.monotonic()
        status, _, body = await fetch(p, "GET", "/blob")
        assert status == 200 and body == BLOB and time.monotonic() - t0 >= 0.45
        t0 = time.monotonic()
        status, _, body = await fetch(p, "PUT", "/put", BLOB)
        assert body.decode() == hashlib.sha256(BLOB).hexdigest() and time.monotonic() - t0 >= 0.45
        assert p.counts == {"throttle": 2}


async def test_flip_changes_exactly_one_byte(origin: Origin) -> None:
    async with proxy_for(origin, "flip") as p:
        status, _, body = await fetch(p, "GET", "/blob")
        assert status == 200 and len(body) == len(BLOB)
        assert sum(a != b for a, b in zip(body, BLOB, strict=True)) == 1
        assert p.counts == {"flip": 1}


async def test_a_seed_replays_its_faults(origin: Origin) -> None:
    rates = {kind: 0.1 for kind in KINDS}
    runs = []
    for seed in (3, 3, 4):
        async with FaultProxy(origin.port, seed=seed, rates=rates, stall_seconds=0.01, delay_seconds=0.01,
                              trickle_seconds=0.01) as p:
            for i in range(30):  # one connection each: connection numbers are in request order
                try:
                    await fetch(p, "GET" if i % 2 else "PUT", "/blob" if i % 2 else "/put",
                                None if i % 2 else BLOB)
                except aiohttp.ClientError:
                    pass
            runs.append([(f.kind, f.connection, f.request) for f in p.faults])
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert len(runs[0]) >= 5
