"""A thin aiohttp client for the Yandex.Disk REST API.

One ``ClientSession`` per backend. ``Authorization: OAuth <token>`` goes on
API calls only, never on the upload/download links the API hands out (those
may live on other hosts), and API calls never follow redirects. Every
failure becomes a :mod:`vertexflow.errors` class through :data:`ERRORS`,
raised ``from`` the original; the raised error carries the service's error
name in ``api_error``. Messages are built from the status, the service's
error name and description and the host, so the token never appears in them.

The client does not retry: the backend wraps idempotent calls in
:func:`vertexflow.retry.retry_call`, honouring ``retry_after``.
"""

from __future__ import annotations

import asyncio
import email.utils
import hmac
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import anyio
from yarl import URL

from ...errors import (
    AuthError,
    BackendError,
    Conflict,
    ConnectionFailed,
    InsufficientStorage,
    NotFound,
    ObjectTooLarge,
    ReadOnly,
    Throttled,
    TransientError,
)
from . import api

# The one table from the service's answers to our exceptions. An error name
# (the body's "error") wins over the status; anything else 5xx is transient,
# anything else 4xx permanent.
ERRORS: dict[int | str, type[BackendError]] = {
    "UnauthorizedError": AuthError,
    "DiskNotFoundError": NotFound,
    "DiskResourceLockedError": TransientError,
    "TooManyRequestsError": Throttled,
    "DiskStorageQuotaExhaustedError": InsufficientStorage,
    "DiskOwnerStorageQuotaExhaustedError": InsufficientStorage,
    # the monthly upload traffic limit: retrying soon will not help
    "DiskUploadTrafficLimitExceeded": ReadOnly,
    401: AuthError,
    403: AuthError,
    404: NotFound,
    409: Conflict,
    410: NotFound,
    413: ObjectTooLarge,
    423: TransientError,
    429: Throttled,
    500: TransientError,
    502: TransientError,
    503: TransientError,
    504: TransientError,
    507: InsufficientStorage,
}


#: what an error class means for the operator, said before the service's own words
MEANINGS: dict[type[BackendError], str] = {
    AuthError: "the credentials (OAuth token) were refused",
    InsufficientStorage: "the disk is full (insufficient storage)",
}


def error_class(status: int, name: str | None) -> type[BackendError]:
    if name and name in ERRORS:
        return ERRORS[name]
    if status in ERRORS:
        return ERRORS[status]
    return TransientError if status >= 500 else BackendError


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (a number or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _host(url: str | URL) -> str:
    parts = urlsplit(str(url))
    return f"{parts.scheme}://{parts.netloc}"


def make_error(status: int, body: Any, *, what: str, backend: str, key: str | None = None,
               retry_after: float | None = None) -> BackendError:
    """The exception for an error answer; ``api_error``/``status`` keep the service's words."""
    err = api.ErrorBody.from_json(body)
    cls = error_class(status, err.error)
    detail = f"{status} {err.error}" if err.error else f"HTTP {status}"
    if err.description:
        detail += f": {err.description}"
    meaning = next((text for base, text in MEANINGS.items() if issubclass(cls, base)), None)
    message = f"{what} failed: {meaning} ({detail})" if meaning else f"{what} failed ({detail})"
    if issubclass(cls, TransientError):
        exc: BackendError = cls(message, backend=backend, key=key, retry_after=retry_after)
    else:
        exc = cls(message, backend=backend, key=key)
    exc.api_error = err.error  # type: ignore[attr-defined]
    exc.status = status  # type: ignore[attr-defined]
    return exc


def connection_error(exc: BaseException, url: str | URL, *, what: str, backend: str,
                     key: str | None = None, client: YandexDiskClient | None = None) -> BackendError:
    """A network failure as ConnectionFailed (endpoint unreachable) or TransientError; ``client``: the one
    whose timeouts ran out, named with their seconds."""
    host = _host(url)
    if isinstance(exc, aiohttp.ConnectionTimeoutError) and client is not None:
        return ConnectionFailed(f"{what} failed: could not connect to {host} within "
                                f"{client.connect_timeout:g} s (--contimeout)", backend=backend, key=key)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectionFailed(f"{what} failed: cannot reach {host}", backend=backend, key=key)
    if isinstance(exc, aiohttp.SocketTimeoutError) and client is not None:
        return TransientError(f"{what} failed: no answer from {host} for {client.request_timeout:g} s "
                              "(the idle timeout, --timeout)", backend=backend, key=key)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return TransientError(f"{what} failed: {host} did not answer in time", backend=backend, key=key)
    return ConnectionFailed(f"{what} failed: connection to {host} broke ({type(exc).__name__})",
                            backend=backend, key=key)


def query(params: Mapping[str, Any]) -> str:
    # Quote everything ("+" as %2B, "%" as %25): yarl would keep an existing "%25" as is.
    return urlencode({k: v for k, v in params.items() if v is not None}, quote_via=quote, safe="")


class YandexDiskClient:
    """Requests against one API base URL with one token."""

    def __init__(self, base_url: str, token: str, *, backend: str, request_timeout: float,
                 pool_connections: int, pool_maxsize: int, connect_timeout: float | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.backend = backend
        #: seconds without a byte of an answer (``--timeout``), and to connect (``--contimeout``; None:
        #: ``request_timeout`` too, the remote's one setting of both)
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout if connect_timeout is not None else request_timeout
        self._pool = (pool_connections, pool_maxsize)
        self._session: aiohttp.ClientSession | None = None
        #: HTTP requests sent (API calls, upload and download links)
        self.requests = 0

    def same_account(self, other: YandexDiskClient) -> bool:
        return self.base_url == other.base_url and hmac.compare_digest(self._token.encode(), other._token.encode())

    def _timeout(self, read: float | None = None) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=None, connect=self.connect_timeout,
                                     sock_connect=self.connect_timeout,
                                     sock_read=read if read is not None else self.request_timeout)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            per_host, total = self._pool
            # per host: the API host and each upload/download host get their own share
            connector = aiohttp.TCPConnector(limit=total, limit_per_host=per_host)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout())
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    # -- API calls ------------------------------------------------------------
    async def call(self, method: str, endpoint: str, params: Mapping[str, Any] | None = None, *,
                   json_body: Any = None, what: str, key: str | None = None,
                   expect: tuple[int, ...] = (200,)) -> tuple[int, Any]:
        """One API request; returns ``(status, json or None)`` for an expected status, raises otherwise."""
        url = URL(f"{self.base_url}{endpoint}" + (f"?{query(params)}" if params else ""), encoded=True)
        headers = {"Authorization": f"OAuth {self._token}", "Accept": "application/json"}
        self.requests += 1
        try:
            async with self.session.request(method, url, headers=headers, json=json_body,
                                            allow_redirects=False) as resp:
                body = await _json(resp)
                if resp.status in expect:
                    if resp.status == 200 and body is None:
                        raise TransientError(f"{what} failed (HTTP 200 without a JSON body)",
                                             backend=self.backend, key=key)
                    return resp.status, body
                raise make_error(resp.status, body, what=what, backend=self.backend, key=key,
                                 retry_after=parse_retry_after(resp.headers.get("Retry-After")))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise connection_error(exc, self.base_url, what=what, backend=self.backend, key=key,
                                   client=self) from exc

    async def operation(self, operation: str, *, key: str | None = None) -> api.Operation:
        """Status of an operation, from its id or link (only our own API's links are followed)."""
        op_id = operation.rstrip("/").rpartition("/")[2].partition("?")[0]
        _, body = await self.call("GET", f"/operations/{quote(op_id, safe='')}", {"fields": "status"},
                                  what="checking an operation", key=key)
        return api.Operation.from_json(body)

    # -- links ----------------------------------------------------------------
    async def put_link(self, href: str, data: AsyncIterator[bytes], *, size: int | None,
                       key: str | None = None) -> int:
        """PUT a chunked body to an upload link; returns 201 or 202."""
        # the service answers only after hashing what it got: allow two minutes per GiB
        # (an unknown size is taken as 5 GiB)
        read = self.request_timeout + 120.0 * (size if size is not None else 5 << 30) / (1 << 30)
        self.requests += 1
        try:
            async with self.session.put(URL(href, encoded=True), data=data, timeout=self._timeout(read),
                                        headers={"Content-Type": "application/octet-stream"},
                                        allow_redirects=False) as resp:
                if resp.status in (200, 201, 202):
                    return 202 if resp.status == 202 else 201
                body = await _json(resp)
                raise make_error(resp.status, body, what="uploading", backend=self.backend, key=key,
                                 retry_after=parse_retry_after(resp.headers.get("Retry-After")))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise connection_error(exc, href, what="uploading", backend=self.backend, key=key,
                                   client=self) from exc

    @asynccontextmanager
    async def get_link(self, href: str, *, headers: Mapping[str, str],
                       key: str | None = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET a download link (the downloader may redirect to a storage node)."""
        self.requests += 1
        try:
            async with self.session.get(URL(href, encoded=True), headers=dict(headers)) as resp:
                if resp.status not in (200, 206):
                    body = await _json(resp)  # the downloader errs in HTML: no JSON, status only
                    raise make_error(resp.status, body, what="downloading", backend=self.backend, key=key,
                                     retry_after=parse_retry_after(resp.headers.get("Retry-After")))
                yield resp
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise connection_error(exc, href, what="downloading", backend=self.backend, key=key,
                                   client=self) from exc


async def _json(resp: aiohttp.ClientResponse) -> Any:
    try:
        return await resp.json(content_type=None)
    except (ValueError, UnicodeDecodeError):
        return None
    except aiohttp.ClientPayloadError:
        return None


async def poll_operation(client: YandexDiskClient, operation: str, *, key: str | None,
                         max_polls: int, deadline: float, retry: Any) -> None:
    """Wait for an operation to succeed; bounded in polls and seconds.

    Raises TransientError when it failed or did not finish in time: the
    caller's per-object retry starts the whole thing again.
    """
    start = anyio.current_time()
    delay = 0.05
    for _ in range(max_polls):
        op = await retry(lambda: client.operation(operation, key=key))
        if op.status == api.SUCCESS:
            return
        if op.failed:
            raise TransientError(f"the server's asynchronous operation {op.status}",
                                 backend=client.backend, key=key)
        if anyio.current_time() - start + delay > deadline:
            break
        await anyio.sleep(delay)
        delay = min(delay * 1.5, 2.0)
    raise TransientError(f"the server's asynchronous operation did not finish within {deadline:g} s",
                         backend=client.backend, key=key)
