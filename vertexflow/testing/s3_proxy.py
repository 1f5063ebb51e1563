"""An HTTP proxy on 127.0.0.1 in front of a real S3 server, rewriting its answers.

Tests use it to meet servers that behave otherwise than SeaweedFS: one that
ignores checksum headers (answers no ``x-amz-checksum-*``), or one whose
answers report digests that do not match what was sent. Requests go through
unchanged, Host header included, so the server checks our signatures as it
would without the proxy; only answers are rewritten, by ``rewrite``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Self

import aiohttp
from aiohttp import web
from multidict import CIMultiDict


@dataclass(slots=True)
class Answer:
    """An answer on its way back: change ``headers`` and ``body`` in place."""

    method: str
    path_qs: str
    #: the request's headers, as the client sent them
    request_headers: CIMultiDict[str]
    status: int
    headers: CIMultiDict[str]
    body: bytes


#: rewrites an answer in place
Rewrite = Callable[[Answer], None]

#: the largest request body passed on (parts in tests are a few MiB)
_MAX_BODY = 64 * 1024 * 1024
#: hop-by-hop headers and those the proxy sets again for the body it sends
_DROPPED = {"transfer-encoding", "connection", "keep-alive", "content-length", "content-encoding"}


@dataclass(slots=True)
class RewritingProxy:
    """``async with RewritingProxy(upstream, rewrite) as proxy``: ``proxy.endpoint`` is its URL."""

    upstream: str
    rewrite: Rewrite
    #: send answer bodies with chunked transfer encoding, in pieces of this many bytes (0: whole, with Content-Length)
    chunked: int = 0
    endpoint: str = ""
    #: every answer as the server sent it (before ``rewrite``), in order
    seen: list[Answer] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.endpoint = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _DROPPED)
        async with self._session.request(request.method, f"{self.upstream}{request.path_qs}", headers=headers,
                                         data=body, skip_auto_headers={"User-Agent", "Content-Type"},
                                         allow_redirects=False) as upstream:
            answer = Answer(request.method, request.path_qs, CIMultiDict(request.headers), upstream.status,
                            CIMultiDict(upstream.headers), await upstream.read())
        self.seen.append(replace(answer, headers=CIMultiDict(answer.headers)))  # as sent, before rewrite
        self.rewrite(answer)
        headers = CIMultiDict((k, v) for k, v in answer.headers.items() if k.lower() not in _DROPPED)
        if self.chunked and request.method != "HEAD":
            stream = web.StreamResponse(status=answer.status, headers=headers)
            stream.enable_chunked_encoding()
            await stream.prepare(request)
            for i in range(0, len(answer.body), self.chunked):
                await stream.write(answer.body[i:i + self.chunked])
            await stream.write_eof()
            return stream
        length = answer.headers.get("Content-Length")
        out = web.Response(status=answer.status, body=answer.body if request.method != "HEAD" else None,
                           headers=headers)
        if request.method == "HEAD" and length is not None:
            out.headers["Content-Length"] = length
        return out
