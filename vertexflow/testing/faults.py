"""Fault injection: by wrapping a backend, or on the wire (never by patching a client).

:class:`FaultyBackend` is a backend decorator that fails chosen calls of a
real backend, so engine tests can see retries, per-object failures and aborts
against real storage. Like every decorator it hides the ``local_path``
feature, so the engine goes through ``put``/``open`` where the faults are.

:class:`FaultProxy` is a TCP proxy on 127.0.0.1 that speaks just enough
HTTP/1.1 (request line, headers, Content-Length or chunked bodies, 100-continue)
to break requests the way networks and servers do: connections reset in the
middle of a request or response body, stalls, 5xx/429 answers with
``Retry-After``, a 200 whose body stops short, a slow first byte, a trickle,
one flipped byte. What happens to a request is drawn from ``seed`` and the
request itself (method, path, query without upload ids, and how many times
the same request came before), not from the order of connections, so a run
with many requests in flight replays its faults as long as it makes the
same requests; ``counts`` says how many of each kind were injected.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Self

from ..backends.base import Backend, UploadCheckpoint
from ..errors import TransientError
from ..middleware.base import BackendWrapper
from ..model import BodyFactory, ObjectInfo


def _transient(key: str) -> Exception:
    return TransientError("injected 503 Service Unavailable", backend="faulty", key=key)


class FaultyBackend(BackendWrapper):
    """Wraps ``inner``; the first ``put_failures`` puts of each key raise ``error(key)``.

    ``put_calls`` records every put per key, in call order.
    """

    def __init__(self, inner: Backend, *, put_failures: int = 0,
                 error: Callable[[str], Exception] = _transient) -> None:
        super().__init__(inner)
        self.put_failures = put_failures
        self.error = error
        self.put_calls: dict[str, int] = {}

    def describe(self) -> str:
        return f"faulty({self.inner.describe()})"

    async def put(self, info: ObjectInfo, body: BodyFactory, *,
                  checkpoint: UploadCheckpoint | None = None) -> ObjectInfo:
        n = self.put_calls[info.key] = self.put_calls.get(info.key, 0) + 1
        if n <= self.put_failures:
            raise self.error(info.key)
        return await super().put(info, body, checkpoint=checkpoint)


# -- the fault-injecting HTTP/1.1 proxy --------------------------------------


#: every kind of fault the proxy injects
KINDS = ("reset_request", "reset_response", "stall", "error", "truncate", "delay", "throttle", "flip")

#: the chance that a request meets each kind of fault (about one request in three meets one)
DEFAULT_RATES: dict[str, float] = {
    "reset_request": 0.04,
    "reset_response": 0.05,
    "stall": 0.02,
    "error": 0.08,
    "truncate": 0.04,
    "delay": 0.04,
    "throttle": 0.03,
    "flip": 0.03,
}

_REASONS = {200: "OK", 429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable"}
_S3_CODES = {429: "SlowDown", 500: "InternalError", 502: "BadGateway", 503: "SlowDown"}
_PIECE = 64 * 1024
#: query parameters that differ between two runs of the same work (left out of a request's identity)
_UNSTABLE = ("uploadid=", "x-amz-", "signature=", "expires=", "awsaccesskeyid=")
#: a backup's folder name holds the time it was made (vertexflow-<type>-<UTC time>[-n]): the same backup made
#: again has the same identity
_BACKUP_ID = re.compile(r"vertexflow-(full|database|storage|platform)-\d{8}T\d{6}Z(?:-\d+)?")
#: the longest request or response head read (S3 heads are a few KiB)
_HEAD_LIMIT = 1024 * 1024


@dataclass(slots=True)
class Fault:
    """One fault injected: on which connection and request, of what kind, on what request."""

    kind: str
    connection: int
    request: int
    method: str
    target: str
    detail: str = ""


@dataclass(slots=True)
class _Message:
    first_line: str
    headers: list[tuple[str, str]]
    raw: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v.strip()
        return None

    @property
    def chunked(self) -> bool:
        return "chunked" in (self.header("transfer-encoding") or "").lower()

    @property
    def length(self) -> int | None:
        value = self.header("content-length")
        return int(value) if value is not None else None


def _parse(raw: bytes) -> _Message:
    lines = raw.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers.append((k.strip(), v.strip()))
    return _Message(lines[0], headers, raw)


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The next message head (through the blank line), or None at a clean end of the connection."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise


async def _body(reader: asyncio.StreamReader, length: int | None, chunked: bool) -> AsyncIterator[bytes]:
    """The raw bytes of a body as they arrive (chunked framing included); ``length`` None: until EOF."""
    if chunked:
        for _ in range(10_000_000):
            line = await reader.readuntil(b"\r\n")
            yield line
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                for _ in range(1000):  # trailers, then the blank line
                    trailer = await reader.readuntil(b"\r\n")
                    yield trailer
                    if trailer == b"\r\n":
                        return
                raise ConnectionError("too many trailers")
            async for data in _exactly(reader, size + 2):  # the chunk and its CRLF
                yield data
        raise ConnectionError("too many chunks")
    if length is None:
        while data := await reader.read(_PIECE):
            yield data
        return
    async for data in _exactly(reader, length):
        yield data


async def _exactly(reader: asyncio.StreamReader, n: int) -> AsyncIterator[bytes]:
    """The next ``n`` bytes of ``reader``, in pieces as they arrive; raises if it ends first."""
    left = n
    while left:
        data = await reader.read(min(left, _PIECE))
        if not data:
            raise asyncio.IncompleteReadError(b"", left)
        left -= len(data)
        yield data


def _reset(*writers: asyncio.StreamWriter | None) -> None:
    """Close with a TCP RST (SO_LINGER 0), not a FIN."""
    for w in writers:
        if w is None:
            continue
        sock = w.get_extra_info("socket")
        try:
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        w.transport.abort()


class _Cut(Exception):
    """The body was cut as planned: end the connection."""


@dataclass(slots=True)
class _Plan:
    """What to do to one body on its way: offsets are in bytes of the raw body."""

    cut_at: int | None = None      # stop after this many bytes
    cut_reset: bool = True         # ... with a RST (else a clean FIN)
    flip_at: int | None = None     # XOR one byte with 0xFF
    stall_at: int | None = None    # pause this long before the byte at stall_at
    stall_seconds: float = 0.0
    trickle_rate: float = 0.0      # bytes per second while trickling (0: full speed)
    trickle_seconds: float = 0.0
    done: list[str] = field(default_factory=list)  # the faults that really happened
    sent: int = 0                  # bytes forwarded


async def _pump(source: AsyncIterator[bytes], dst: asyncio.StreamWriter, plan: _Plan,
                others: tuple[asyncio.StreamWriter | None, ...]) -> int:
    """Forward a body through ``plan``; raises _Cut if it was cut. Returns the bytes sent."""
    sent = 0
    start = time.monotonic()
    async for data in source:
        end = sent + len(data)
        if plan.stall_at is not None and "stall" not in plan.done and sent <= plan.stall_at < end:
            head, data = data[:plan.stall_at - sent], data[plan.stall_at - sent:]
            if head:
                dst.write(head)
                await dst.drain()
                sent += len(head)
            await asyncio.sleep(plan.stall_seconds)
            plan.done.append("stall")
            end = sent + len(data)
        if plan.flip_at is not None and "flip" not in plan.done and sent <= plan.flip_at < end:
            i = plan.flip_at - sent
            data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
            plan.done.append("flip")
        if plan.cut_at is not None and end > plan.cut_at:
            data = data[:plan.cut_at - sent]
            if data:
                dst.write(data)
                await dst.drain()
            plan.sent = sent + len(data)
            if plan.cut_reset:
                _reset(dst, *others)
            else:
                dst.close()
            plan.done.append("cut")
            raise _Cut
        # the first piece always trickles: a throttle planned happens (and is counted) however loaded the machine
        if plan.trickle_rate and (sent == 0 or time.monotonic() - start < plan.trickle_seconds):
            for i in range(0, len(data), 4096):
                dst.write(data[i:i + 4096])
                await dst.drain()
                await asyncio.sleep(min(len(data[i:i + 4096]), 4096) / plan.trickle_rate)
            if "throttle" not in plan.done:
                plan.done.append("throttle")
        else:
            dst.write(data)
            await dst.drain()
        sent = plan.sent = end
    return sent


class FaultProxy:
    """``async with FaultProxy(upstream_port, seed=1) as proxy``: ``proxy.endpoint`` is its URL.

    ``rates`` maps a kind of :data:`KINDS` to the chance a request meets it
    (kinds left out never happen; their sum at most 1). Each request draws
    one number: a kind whose rate it falls in is injected if the request can
    take it (a reset mid-request-body needs a request body; a flipped byte or
    a truncated 200 need a response body), else nothing happens to it.

    * ``reset_request``: part of the request body reaches the server, then
      both connections are reset (RST);
    * ``reset_response``: part of the answer's body (none if it has none)
      reaches the client, then a RST;
    * ``stall``: no byte for ``stall_seconds`` in the middle of the answer;
    * ``error``: the proxy answers itself one of ``statuses`` with
      ``Retry-After: retry_after`` (S3's XML error body, or JSON with
      ``error_body="json"``) and closes; the server never sees the request;
    * ``truncate``: a 200 whose body stops short: the header's Content-Length
      is the whole, the connection ends cleanly (FIN) part way;
    * ``delay``: ``delay_seconds`` before the first byte of the answer;
    * ``throttle``: both bodies at ``trickle_rate`` bytes/s for ``trickle_seconds``;
    * ``flip``: one byte of a GET's 200/206 body (not XML or JSON) is inverted.

    ``force`` names requests that meet a kind whatever the draw says, by
    their identity: ``"HEAD /bucket?#0"`` is the first HEAD of ``/bucket``
    (method, path, ``?``, the query's stable parameters sorted and joined by
    ``&``, ``#``, how many times the same was asked before); ``identities``
    lists those of the requests seen, in order. A kind may say where in the
    body it strikes, as a fraction of it: ``"reset_response@0.5"`` resets the
    connection half way through the answer's body.

    ``chunk_reset_rate``, besides: the chance that the connection is reset
    in each 64 KiB piece of an answer's body (a long body meets it about
    every ``64 KiB / rate``: 1/250 is about every 16 MiB), drawn from the
    seed like the rest; counted as ``reset_response``.

    ``counts`` counts the faults injected by kind, ``faults`` lists them,
    ``requests`` counts the requests seen.
    """

    def __init__(self, upstream_port: int, *, seed: int = 0, rates: dict[str, float] | None = None,
                 upstream_host: str = "127.0.0.1", port: int = 0, stall_seconds: float = 3.0,
                 delay_seconds: float = 1.0, trickle_rate: float = 256 * 1024, trickle_seconds: float = 2.0,
                 statuses: tuple[int, ...] = (500, 502, 503, 429), retry_after: int = 1,
                 error_body: str = "s3", force: dict[str, str] | None = None,
                 chunk_reset_rate: float = 0.0) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.seed = seed
        self.rates = dict(DEFAULT_RATES if rates is None else rates)
        unknown = set(self.rates) - set(KINDS)
        if unknown or sum(self.rates.values()) > 1.0 + 1e-9:
            raise ValueError(f"bad fault rates {self.rates}")
        self.port = port
        self.stall_seconds = stall_seconds
        self.delay_seconds = delay_seconds
        self.trickle_rate = trickle_rate
        self.trickle_seconds = trickle_seconds
        self.statuses = statuses
        self.retry_after = retry_after
        self.error_body = error_body
        #: request identity (see the class) -> the kind it meets, whatever the draw says
        self.force = dict(force or {})
        if {v.partition("@")[0] for v in self.force.values()} - set(KINDS):
            raise ValueError(f"bad forced faults {self.force}")
        if not 0.0 <= chunk_reset_rate < 1.0:
            raise ValueError(f"bad chunk reset rate {chunk_reset_rate}")
        self.chunk_reset_rate = chunk_reset_rate
        self.counts: Counter[str] = Counter()
        self.faults: list[Fault] = []
        self.requests = 0
        #: bytes of answers' bodies forwarded to the client (what a download cost, resends included)
        self.answer_bytes = 0
        self.identities: list[str] = []
        self.enabled = True
        self._connections = itertools.count()
        self._seen: Counter[str] = Counter()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, limit=_HEAD_LIMIT)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def reset_counts(self) -> None:
        self.counts.clear()
        self.faults.clear()
        self.identities.clear()
        self.requests = 0
        self.answer_bytes = 0

    def rearm(self, seed: int, rates: dict[str, float] | None = None) -> None:
        """Start afresh for another run: this seed and rates, counts zeroed, connections numbered from 0
        (call it while no connection is open, so the next run replays as the seed says)."""
        self.seed = seed
        if rates is not None:
            self.rates = dict(rates)
        self.reset_counts()
        self._connections = itertools.count()
        self._seen.clear()

    # -- deciding -------------------------------------------------------

    def _draw(self, rng: random.Random) -> str | None:
        x = rng.random()
        if not self.enabled:
            return None
        for kind in KINDS:
            rate = self.rates.get(kind, 0.0)
            if x < rate:
                return kind
            x -= rate
        return None

    def _occurrence(self, request: _Message) -> str:
        """What a request is, independent of timing: method, path, query without what changes from run to
        run (upload ids, presigned signatures, the time in a backup's name), and how many times the same was
        asked before."""
        method, target = (request.first_line.split(" ") + ["", ""])[:2]
        path, _, query = target.partition("?")
        params = sorted(p for p in query.split("&") if p and not p.lower().startswith(_UNSTABLE))
        what = _BACKUP_ID.sub(r"vertexflow-\1-ID", f"{method} {path}?{'&'.join(params)}")
        n = self._seen[what]
        self._seen[what] += 1
        self.identities.append(f"{what}#{n}")
        return f"{what}#{n}"

    def _record(self, kind: str, conn: int, req: int, request: _Message, detail: str = "") -> None:
        method, target = (request.first_line.split(" ") + ["", ""])[:2]
        self.counts[kind] += 1
        self.faults.append(Fault(kind, conn, req, method, target, detail))

    # -- serving --------------------------------------------------------

    async def _serve(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = next(self._connections)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            for req_no in range(1_000_000):
                raw = await _read_head(creader)
                if raw is None:
                    break
                self.requests += 1
                request = _parse(raw)
                identity = self._occurrence(request)
                rng = random.Random(f"{self.seed}:{identity}")
                kind = self._draw(rng)
                at: float | None = None
                if self.enabled and identity in self.force:
                    kind, _, where = self.force[identity].partition("@")
                    at = float(where) if where else None
                if kind == "error":
                    await self._answer_error(request, creader, cwriter, rng)
                    self._record("error", conn, req_no, request)
                    break
                if upstream is None:
                    upstream = await asyncio.open_connection(self.upstream_host, self.upstream_port,
                                                             limit=_HEAD_LIMIT)
                keep = await self._exchange(conn, req_no, request, kind, rng, creader, cwriter, *upstream, at=at)
                if not keep:
                    break
        except (_Cut, asyncio.CancelledError):  # cut as planned, or the proxy is stopping
            pass
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self._tasks.discard(task)
            for w in (cwriter, upstream[1] if upstream else None):
                if w is not None and not w.is_closing():
                    w.close()

    async def _answer_error(self, request: _Message, creader: asyncio.StreamReader,
                            cwriter: asyncio.StreamWriter, rng: random.Random) -> None:
        status = rng.choice(self.statuses)
        if "100-continue" not in (request.header("expect") or "").lower():
            async for _ in _body(creader, request.length or 0, request.chunked):
                pass  # read and drop the body, as a server answering after it would
        if self.error_body == "json":
            body = (f'{{"error":"{_S3_CODES[status]}","message":"injected {status}",'
                    f'"description":"injected by FaultProxy"}}').encode()
            ctype = "application/json"
        else:
            body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{_S3_CODES[status]}</Code>'
                    f"<Message>injected {status}</Message><RequestId>faultproxy</RequestId></Error>").encode()
            ctype = "application/xml"
        head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nRetry-After: {self.retry_after}\r\nConnection: close\r\n\r\n")
        if request.first_line.split(" ")[0].upper() == "HEAD":
            body = b""  # the answer to a HEAD has no body (its Content-Length is the GET's)
        cwriter.write(head.encode() + body)
        await cwriter.drain()

    async def _exchange(self, conn: int, req_no: int, request: _Message, kind: str | None, rng: random.Random,
                        creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter,
                        ureader: asyncio.StreamReader, uwriter: asyncio.StreamWriter, *,
                        at: float | None = None) -> bool:
        """One request and its answer; whether the connection may carry another. ``at``: where in a body
        the fault strikes (a fraction of it), else drawn."""

        def where(n: int) -> int:
            return min(n - 1, int(n * at)) if at is not None else rng.randrange(0, n)

        method = request.first_line.split(" ")[0].upper()
        uwriter.write(request.raw)
        await uwriter.drain()
        request_length = request.length or 0
        has_body = request.chunked or request_length > 0
        expect = "100-continue" in (request.header("expect") or "").lower()

        # the request body
        answer: _Message | None = None
        if has_body:
            if expect:  # the server may refuse before the body: relay its interim (or final) answer
                answer = _parse(await ureader.readuntil(b"\r\n\r\n"))
                if answer.first_line.split(" ")[1] == "100":
                    cwriter.write(answer.raw)
                    await cwriter.drain()
                    answer = None
            if answer is None:
                plan = _Plan()
                if kind == "reset_request":
                    plan.cut_at = where(request_length) if request_length else rng.randrange(1, 8192)
                elif kind == "throttle":
                    plan.trickle_rate, plan.trickle_seconds = self.trickle_rate, self.trickle_seconds
                try:
                    await _pump(_body(creader, request_length, request.chunked), uwriter, plan, (cwriter,))
                finally:
                    if "cut" in plan.done:
                        self._record("reset_request", conn, req_no, request, f"after {plan.cut_at} bytes")
                if "throttle" in plan.done:
                    self._record("throttle", conn, req_no, request, "request body")
                    kind = None  # counted once

        # the answer's head (skipping interim 1xx answers)
        for _ in range(10):
            if answer is None:
                answer = _parse(await ureader.readuntil(b"\r\n\r\n"))
            status = int(answer.first_line.split(" ")[1])
            if 100 <= status < 200 and status != 101:
                cwriter.write(answer.raw)
                await cwriter.drain()
                answer = None
                continue
            break
        assert answer is not None
        no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
        length = 0 if no_body else answer.length
        chunked = not no_body and answer.chunked
        until_close = not no_body and not chunked and length is None
        closing = until_close or "close" in (answer.header("connection") or "").lower() \
            or "close" in (request.header("connection") or "").lower()
        body_bytes = length if length is not None else None  # None: not known in advance
        ctype = (answer.header("content-type") or "").lower()

        plan = _Plan()
        if kind == "reset_response":
            if body_bytes == 0:
                self._record("reset_response", conn, req_no, request, "before the answer's head")
                _reset(cwriter, uwriter)
                raise _Cut
            plan.cut_at = where(body_bytes) if body_bytes else rng.randrange(1, 256 * 1024)
        elif kind == "truncate" and status == 200 and body_bytes:
            plan.cut_at, plan.cut_reset = where(body_bytes), False
        elif kind == "stall":
            if body_bytes == 0:
                await asyncio.sleep(self.stall_seconds)
                self._record("stall", conn, req_no, request, f"{self.stall_seconds} s before the head")
            else:
                plan.stall_at = where(body_bytes) if body_bytes else rng.randrange(0, 64 * 1024)
                plan.stall_seconds = self.stall_seconds
        elif kind == "delay":
            await asyncio.sleep(self.delay_seconds)
            self._record("delay", conn, req_no, request, f"{self.delay_seconds} s")
        elif kind == "throttle":
            plan.trickle_rate, plan.trickle_seconds = self.trickle_rate, self.trickle_seconds
        elif (kind == "flip" and method == "GET" and status in (200, 206) and body_bytes
              and "xml" not in ctype and "json" not in ctype):
            plan.flip_at = where(body_bytes)

        if self.chunk_reset_rate and self.enabled and plan.cut_at is None and body_bytes != 0 and not no_body:
            # the number of whole pieces before the one the reset strikes in: geometric
            pieces = int(math.log(1.0 - rng.random()) / math.log(1.0 - self.chunk_reset_rate))
            cut = pieces * _PIECE + rng.randrange(_PIECE)
            if body_bytes is None or cut < body_bytes:
                plan.cut_at = cut

        cwriter.write(answer.raw)
        await cwriter.drain()
        if no_body:
            return not closing
        try:
            await _pump(_body(ureader, length, chunked), cwriter, plan, (uwriter,))
        finally:
            self.answer_bytes += plan.sent
            if "cut" in plan.done:
                what = "reset_response" if plan.cut_reset else "truncate"
                self._record(what, conn, req_no, request, f"after {plan.cut_at} of {body_bytes} bytes")
            if "stall" in plan.done:
                self._record("stall", conn, req_no, request, f"{plan.stall_seconds} s at byte {plan.stall_at}")
            if "flip" in plan.done:
                self._record("flip", conn, req_no, request, f"byte {plan.flip_at} of {body_bytes}")
            if "throttle" in plan.done:
                self._record("throttle", conn, req_no, request, "answer body")
        return not closing


class ThreadedFaultProxy:
    """A :class:`FaultProxy` on its own event loop in a thread, for synchronous callers (subprocess tests).

    ``with ThreadedFaultProxy(port, seed=1) as tp: tp.proxy.endpoint``.
    """

    def __init__(self, upstream_port: int, **kwargs: object) -> None:
        self.proxy = FaultProxy(upstream_port, **kwargs)  # type: ignore[arg-type]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.proxy.stop(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def call(self, fn: object) -> None:
        """Run ``fn()`` on the proxy's loop (e.g. to change its rates between rounds)."""
        self._loop.call_soon_threadsafe(fn)  # type: ignore[arg-type]


@contextmanager
def fault_proxy(upstream_port: int, **kwargs: object) -> Iterator[FaultProxy]:
    """``with fault_proxy(port, seed=...) as proxy``: a threaded proxy, for synchronous code."""
    with ThreadedFaultProxy(upstream_port, **kwargs) as tp:
        yield tp.proxy
