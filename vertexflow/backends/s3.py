"""S3 and S3-compatible stores (AWS, SeaweedFS, MinIO, Ceph RGW), on aioboto3.

A backend is a bucket and an optional prefix, treated as a folder: keys are
relative to ``prefix/``. Credentials, region and endpoint left as None come
from botocore's usual chain (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``, ``AWS_PROFILE``,
config files).

Uploads up to ``multipart_threshold`` are one PutObject carrying Content-MD5
and a SHA-256 checksum, with the SHA-256 also kept as user metadata
(``x-amz-meta-sha256``) so that later listings/stats know it. Larger uploads
are multipart with a bounded number of parts in flight; any failure or
cancellation aborts the upload. Downloads larger than the threshold fetch
ranges in parallel, pinned to one ETag.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import os
import re
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, aclosing, asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar

import aioboto3
import aiohttp
import anyio
import botocore.exceptions as bce
import structlog
from aiobotocore.config import AioConfig

from ..errors import (AccessDenied, AuthError, BackendError, ConfigError, ConnectionFailed,
                      InsufficientStorage, IntegrityError, InvalidKey, NotFound, ObjectTooLarge,
                      SourceChanged, Throttled, TransientError)
from ..model import MD5, SHA256, BodyFactory, Features, ObjectInfo
from ..retry import RetryPolicy, retry_call
from .base import Backend, check_key

log = structlog.get_logger(__name__)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

# S3's own limits.
MAX_OBJECT_SIZE = 5 * TiB
MAX_PARTS = 10_000
MIN_PART_SIZE = 5 * MiB
MAX_SINGLE_COPY = 5 * GiB
MAX_KEY_BYTES = 1024

#: Chunk size for streamed GET bodies: big enough that per-chunk overhead is
#: small, small enough not to matter for memory.
READ_CHUNK = 1 * MiB
#: Below this, hashing on the event loop is cheaper than a thread hop (~100-250 µs).
INLINE_HASH_LIMIT = 256 * KiB
#: Part size for server-side multipart copies: few requests, each well under 5 GiB.
COPY_PART_SIZE = 512 * MiB
#: Seconds a shielded multipart abort may take after an error or cancellation.
ABORT_TIMEOUT = 30.0
#: Seconds check() waits in all before calling the endpoint unreachable.
CHECK_TIMEOUT = 15.0
#: botocore's connect timeout: a dead endpoint fails fast, the engine retries.
CONNECT_TIMEOUT = 5.0
#: botocore's read timeout per socket read, not per request.
READ_TIMEOUT = 60.0
#: botocore attempts per request (1 try + 2 retries): the engine retries whole objects.
BOTOCORE_ATTEMPTS = 3

#: Idempotent single requests (a listing page, a stat, a ranged part) are
#: retried here on top of botocore, which does not retry a body cut mid-read.
REQUEST_RETRY = RetryPolicy(attempts=4, base_delay=0.2, max_delay=5.0, deadline=60.0)

_PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART_ETAG = re.compile(r"^[0-9a-f]{32}-\d+$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


# -- error mapping -------------------------------------------------------------

#: S3 error codes (and bare HTTP statuses, which HEAD answers carry instead of
#: a code) to our exceptions. The only place that decides what an S3 error means.
ERROR_TABLE: dict[str, type[BackendError]] = {
    "NoSuchKey": NotFound,
    "NoSuchBucket": NotFound,
    "NotFound": NotFound,
    "404": NotFound,
    "InvalidAccessKeyId": AuthError,
    "SignatureDoesNotMatch": AuthError,
    "ExpiredToken": AuthError,
    "InvalidToken": AuthError,
    "TokenRefreshRequired": AuthError,
    "AuthorizationHeaderMalformed": AuthError,
    "RequestTimeTooSkewed": AuthError,
    "AccessDenied": AccessDenied,
    "AllAccessDisabled": AccessDenied,
    "403": AccessDenied,
    "SlowDown": Throttled,
    "Throttling": Throttled,
    "ThrottlingException": Throttled,
    "RequestLimitExceeded": Throttled,
    "TooManyRequests": Throttled,
    "ServiceUnavailable": Throttled,
    "429": Throttled,
    "503": Throttled,
    "InternalError": TransientError,
    "RequestTimeout": TransientError,
    "OperationAborted": TransientError,
    "NoSuchUpload": TransientError,  # the upload vanished under us: start the object again
    "EntityTooLarge": ObjectTooLarge,
    "KeyTooLongError": InvalidKey,
    "PreconditionFailed": SourceChanged,
    "412": SourceChanged,
    "BadDigest": IntegrityError,
    "InvalidDigest": IntegrityError,
    "XAmzContentSHA256Mismatch": IntegrityError,
    "QuotaExceeded": InsufficientStorage,
}

# Transport failures: could not connect at all, or the connection broke.
_CONNECT_ERRORS = (bce.EndpointConnectionError, bce.ConnectTimeoutError,
                   aiohttp.ClientConnectorError)
_TRANSPORT_ERRORS = (bce.ReadTimeoutError, bce.ConnectionClosedError, bce.ResponseStreamingError,
                     bce.IncompleteReadError, bce.HTTPClientError, aiohttp.ClientError, TimeoutError)


def _error_code(exc: bce.ClientError) -> str | None:
    return exc.response.get("Error", {}).get("Code")


def _status(exc: bce.ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _retry_after(exc: bce.ClientError) -> float | None:
    headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    try:
        return float(headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _class_for(code: str, status: int) -> type[BackendError]:
    if code in ERROR_TABLE:
        return ERROR_TABLE[code]
    if str(status) in ERROR_TABLE:
        return ERROR_TABLE[str(status)]
    if status >= 500:
        return TransientError
    return BackendError


def translate_error(exc: BaseException, *, backend: str, endpoint: str,
                    key: str | None = None, op: str = "request") -> BackendError | None:
    """Our exception for an SDK/transport error, or None if ``exc`` is not one."""
    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or _status(exc) or "unknown")
        cls = _class_for(code, _status(exc))
        message = f"{op} failed: {code}"
        if error.get("Message"):
            message += f": {error['Message']}"
        if issubclass(cls, TransientError):
            return cls(message, backend=backend, key=key, retry_after=_retry_after(exc))
        return cls(message, backend=backend, key=key)
    if isinstance(exc, bce.NoCredentialsError):
        return AuthError("no credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                         "a profile, or the remote's keys)", backend=backend, key=key)
    if isinstance(exc, _CONNECT_ERRORS):
        return ConnectionFailed(f"{op} failed: cannot connect to {endpoint}", backend=backend, key=key)
    if isinstance(exc, _TRANSPORT_ERRORS):
        return TransientError(f"{op} failed: {type(exc).__name__} talking to {endpoint}",
                              backend=backend, key=key)
    if isinstance(exc, bce.BotoCoreError):
        return BackendError(f"{op} failed: {type(exc).__name__}", backend=backend, key=key)
    return None


# -- small helpers -----------------------------------------------------------------


def _strip_etag(etag: str | None) -> str | None:
    return etag.strip('"') if etag else None


def _quote_etag(version: str) -> str:
    return version if version.startswith('"') else f'"{version}"'


def _md5_hashes(etag: str | None) -> dict[str, str]:
    """{"md5": etag} when the ETag is a plain MD5 of the content (single-part upload)."""
    return {MD5: etag} if etag and _PLAIN_MD5.match(etag) else {}


def _etag_is_content_md5(etag: str | None, response: dict[str, Any], *, multipart: bool = False) -> bool:
    """True when ``etag`` should be the MD5 of the bytes sent (``md5-N`` of the part MD5s if ``multipart``).

    With SSE-KMS or SSE-C AWS answers ETags that look like MD5s but are not,
    so only unencrypted or SSE-S3 objects are compared.
    """
    if response.get("SSECustomerAlgorithm") or response.get("ServerSideEncryption") == "aws:kms":
        return False
    pattern = _MULTIPART_ETAG if multipart else _PLAIN_MD5
    return bool(etag and pattern.match(etag))


def _utc(when: datetime | None) -> datetime | None:
    # botocore gives listings in local time and HEAD answers in UTC
    return when.astimezone(UTC) if when is not None else None


def _lists_by_directory(response: dict[str, Any]) -> bool:
    """True for servers whose flat listing is not in key order but directory by directory.

    SeaweedFS keeps a filer tree and lists "a/" and its subtree before "a.txt".
    """
    server = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("server", "")
    return server.startswith("SeaweedFS")


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _md5_sha256(data: bytes) -> tuple[bytes, bytes]:
    return hashlib.md5(data, usedforsecurity=False).digest(), hashlib.sha256(data).digest()


async def _off_loop(fn: Callable[[], Any], size: int) -> Any:
    """Run a hashing call in a worker thread when the data is big (hashlib releases the GIL)."""
    if size >= INLINE_HASH_LIMIT:
        return await anyio.to_thread.run_sync(fn)
    return fn()


@contextmanager
def _first_error() -> Iterator[None]:
    """Re-raise the first real error out of an anyio task group's ExceptionGroup.

    Callers expect our exception classes, not groups; the cancellations of
    sibling tasks are only consequences of that first error.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        cancelled = anyio.get_cancelled_exc_class()
        real = [e for e in leaves if not isinstance(e, cancelled)]
        if not real:
            raise
        # the error keeps its own cause (the SDK error); the group adds nothing
        raise real[0] from real[0].__cause__


def _leaves(group: BaseExceptionGroup) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


async def _close_iterator(it: AsyncIterator[bytes]) -> None:
    if isinstance(it, AsyncGenerator):
        await it.aclose()


async def _empty() -> AsyncIterator[bytes]:
    return
    yield  # pragma: no cover - makes this an async generator


class _Final(Exception):
    """Carries an error past retry_call, which would retry anything marked retryable."""

    def __init__(self, error: BackendError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(slots=True)
class _Slot:
    """One ranged part being fetched in the background."""

    done: anyio.Event = field(default_factory=anyio.Event)
    data: bytes | None = None
    error: BaseException | None = None


@dataclass(slots=True)
class _Upload:
    """Running totals of a multipart upload."""

    upload_id: str
    whole_sha256: Any = field(default_factory=hashlib.sha256)
    part_md5s: dict[int, bytes] = field(default_factory=dict)
    parts: dict[int, dict[str, Any]] = field(default_factory=dict)


class _BodyReader:
    """Reads a put body, counting bytes and refusing more than the announced size."""

    def __init__(self, it: AsyncIterator[bytes], expected: int | None, fail: Callable[[str], BackendError]):
        self._it = it
        self._expected = expected
        self._fail = fail
        self.count = 0

    async def chunk(self) -> bytes | None:
        """The next non-empty chunk, or None at the end."""
        async for chunk in self._it:
            if not chunk:
                continue
            self.count += len(chunk)
            if self._expected is not None and self.count > self._expected:
                raise self._fail(f"body is longer than the announced {self._expected} bytes")
            return chunk
        return None

    async def read_head(self, limit: int) -> tuple[list[bytes], bool]:
        """Chunks until more than ``limit`` bytes are read or the body ends; True when it ended."""
        chunks: list[bytes] = []
        while self.count <= limit:
            chunk = await self.chunk()
            if chunk is None:
                return chunks, True
            chunks.append(chunk)
        return chunks, False

    def check_end(self) -> None:
        if self._expected is not None and self.count != self._expected:
            raise self._fail(f"body has {self.count} bytes, {self._expected} announced")

    async def parts(self, head: list[bytes], size: int) -> AsyncIterator[bytes]:
        """Re-chunk ``head`` and then the rest of the body into parts of exactly ``size`` (the last shorter)."""
        buf = bytearray()
        pending = deque(head)
        while True:
            chunk = pending.popleft() if pending else await self.chunk()
            if chunk is None:
                break
            buf += chunk
            while len(buf) >= size:
                with memoryview(buf) as view:
                    part = bytes(view[:size])
                del buf[:size]
                yield part
        if buf:
            yield bytes(buf)


# -- the backend --------------------------------------------------------------------


class S3Backend(Backend):
    """A bucket (and prefix) of an S3-compatible store.

    Defaults and why:

    * ``max_concurrency`` (16): how many requests the engine runs at once; it
      sizes the connection pool.
    * ``part_size`` (8 MiB) and ``multipart_threshold`` (8 MiB): the AWS CLI's
      defaults; at least 5 MiB, S3's minimum part. The part size grows for
      objects of known size that would need more than 10,000 parts.
    * ``download_concurrency`` / ``upload_concurrency`` (4): ranged parts in
      flight per object; memory per large transfer is about this times ``part_size``.
    * ``sorted_listing`` (True): S3 lists keys in UTF-8 byte order, which the
      sync planner merges without sorting. Servers that list directory by
      directory (SeaweedFS, recognised by its Server header) are walked level
      by level to keep that order; any other server caught out of order stops
      the listing with a ConfigError. False makes the planner sort instead.
    * ``verify_tls`` (None): None or True verify as botocore does (honouring
      ``AWS_CA_BUNDLE``); False turns verification off; a string is a CA bundle path.
    """

    scheme: ClassVar[str] = "s3"
    features = Features(
        server_side_copy=True,
        native_hashes=(MD5,),
        sorted_listing=True,
        max_object_size=MAX_OBJECT_SIZE,
        preserves_mtime=False,
    )
    #: Largest object copied with one CopyObject; bigger ones use UploadPartCopy.
    single_copy_limit: int = MAX_SINGLE_COPY
    copy_part_size: int = COPY_PART_SIZE

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        profile: str | None = None,
        addressing_style: str = "auto",
        max_concurrency: int = 16,
        part_size: int = 8 * MiB,
        multipart_threshold: int = 8 * MiB,
        download_concurrency: int = 4,
        upload_concurrency: int = 4,
        verify_tls: bool | str | None = None,
        sorted_listing: bool = True,
        name: str | None = None,
    ) -> None:
        if not bucket:
            raise ConfigError("S3 bucket name is empty")
        if part_size < MIN_PART_SIZE:
            raise ConfigError(f"S3 part_size must be at least {MIN_PART_SIZE} bytes (5 MiB)")
        if addressing_style not in ("auto", "path", "virtual"):
            raise ConfigError(f"S3 addressing_style must be auto, path or virtual, not {addressing_style!r}")
        if min(max_concurrency, download_concurrency, upload_concurrency, multipart_threshold) < 1:
            raise ConfigError("S3 concurrency and multipart_threshold must be positive")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix, backend=f"s3://{bucket}")
        self._root = f"{self.prefix}/" if self.prefix else ""
        self._endpoint_url = endpoint_url
        self._region = region
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._session_token = session_token
        self._profile = profile
        self._addressing_style = addressing_style
        self._max_concurrency = max_concurrency
        self._part_size = part_size
        self._threshold = multipart_threshold
        self._download_concurrency = download_concurrency
        self._upload_concurrency = upload_concurrency
        self._verify_tls = verify_tls
        self._name = name
        self._s3: Any = None
        #: learnt from the first listing: see _lists_by_directory
        self._lists_by_directory: bool | None = None
        if not sorted_listing:
            self.features = replace(type(self).features, sorted_listing=False)
        self._stack = AsyncExitStack()
        self._client_lock = anyio.Lock()

    # -- identity ----------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The endpoint URL in use (explicit, from the environment, or AWS's own)."""
        if self._s3 is not None:
            return str(self._s3.meta.endpoint_url)
        return (self._endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL") or "AWS")

    def describe(self) -> str:
        """``s3://bucket/prefix`` (``name:bucket/prefix`` for a named remote), plus `` at ENDPOINT`` off AWS."""
        path = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        where = f"{self._name}:{path}" if self._name else f"s3://{path}"
        endpoint = self.endpoint
        if endpoint != "AWS" and ".amazonaws.com" not in endpoint:
            where += f" at {endpoint}"
        return where

    def _identity(self) -> tuple[str, str | None, str | None]:
        region = self._region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        key = self._access_key_id or os.environ.get("AWS_ACCESS_KEY_ID")
        if key is None:
            profile = self._profile or os.environ.get("AWS_PROFILE")
            key = f"profile:{profile}" if profile else None
        endpoint = (self._endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
                    or os.environ.get("AWS_ENDPOINT_URL") or "AWS")
        return endpoint.rstrip("/"), region, key

    def same_store(self, other: Backend) -> bool:
        """Same endpoint, region and access key: CopyObject can read ``other``'s buckets."""
        return isinstance(other, S3Backend) and self._identity() == other._identity()

    # -- client ----------------------------------------------------------------

    async def _client(self) -> Any:
        if self._s3 is None:
            async with self._client_lock:
                if self._s3 is None:
                    self._s3 = await self._make_client()
        return self._s3

    async def _make_client(self) -> Any:
        try:
            session = aioboto3.Session(
                aws_access_key_id=self._access_key_id,
                aws_secret_access_key=self._secret_access_key,
                aws_session_token=self._session_token,
                profile_name=self._profile,
                region_name=self._region,
            )
        except bce.ProfileNotFound as exc:
            raise ConfigError(f"AWS profile {self._profile!r} not found") from exc
        config = AioConfig(
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            retries={"mode": "standard", "total_max_attempts": BOTOCORE_ATTEMPTS},
            # one connection per concurrent request plus the ranged parts of
            # one large object: the engine's limit is the real bound
            max_pool_connections=self._max_concurrency + max(self._download_concurrency,
                                                             self._upload_concurrency),
            s3={"addressing_style": self._addressing_style},
        )
        kwargs: dict[str, Any] = {"config": config}
        if self._endpoint_url:
            kwargs["endpoint_url"] = self._endpoint_url
        # True means "verify as botocore does by default", which honours AWS_CA_BUNDLE
        if self._verify_tls is False or isinstance(self._verify_tls, str):
            kwargs["verify"] = self._verify_tls
        return await self._stack.enter_async_context(session.client("s3", **kwargs))

    async def aclose(self) -> None:
        async with self._client_lock:
            stack, self._stack = self._stack, AsyncExitStack()
            self._s3 = None
            await stack.aclose()

    # -- keys and errors ---------------------------------------------------------

    def _full_key(self, key: str) -> str:
        check_key(key, backend=self.describe())
        full = self._root + key
        if len(full.encode("utf-8")) > MAX_KEY_BYTES:
            raise InvalidKey(f"key is longer than S3's {MAX_KEY_BYTES} bytes", backend=self.describe(),
                             key=key)
        return full

    @contextmanager
    def _errors(self, op: str, key: str | None = None) -> Iterator[None]:
        """Translate SDK and transport errors raised inside into our exceptions."""
        try:
            yield
        except BackendError:
            raise
        except Exception as exc:
            mapped = translate_error(exc, backend=self.describe(), endpoint=self.endpoint, key=key, op=op)
            if mapped is None:
                raise
            raise mapped from exc

    def _fail(self, cls: type[BackendError], key: str) -> Callable[[str], BackendError]:
        return lambda message: cls(message, backend=self.describe(), key=key)

    async def _call(self, op: str, key: str | None, fn: Callable[[], Awaitable[Any]],
                    *, retry: bool = False) -> Any:
        """One request with errors translated.

        With ``retry=True`` (idempotent requests only) transient failures are
        tried again here. Other errors, even those the engine retries whole
        objects for (SourceChanged, IntegrityError), are final for the request.
        """
        async def once() -> Any:
            with self._errors(op, key):
                return await fn()

        if not retry:
            return await once()

        async def attempt() -> Any:
            try:
                return await once()
            except TransientError:
                raise
            except BackendError as exc:
                raise _Final(exc) from exc

        try:
            return await retry_call(attempt, REQUEST_RETRY)
        except _Final as final:
            raise final.error from final.error.__cause__

    # -- check -------------------------------------------------------------------

    async def check(self, *, write: bool = False) -> None:
        """HeadBucket (and a one-key listing to name a 403), bounded by CHECK_TIMEOUT."""
        client = await self._client()
        with anyio.move_on_after(CHECK_TIMEOUT):
            await self._check_bucket(client)
            return
        raise ConnectionFailed(f"no answer from {self.endpoint} within {CHECK_TIMEOUT:.0f} s",
                               backend=self.describe())

    async def _check_bucket(self, client: Any) -> None:
        try:
            await self._call("HeadBucket", None, lambda: client.head_bucket(Bucket=self.bucket))
        except NotFound as exc:
            raise NotFound(f"bucket {self.bucket!r} does not exist", backend=self.describe()) from exc
        except AccessDenied:
            # HEAD answers carry no error code: a listing tells bad credentials
            # (AuthError) from a bucket we may not list (AccessDenied)
            await self._call("ListObjectsV2", None, lambda: client.list_objects_v2(
                Bucket=self.bucket, MaxKeys=1, Prefix=self._root))

    # -- list / stat -----------------------------------------------------------------

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """ListObjectsV2 page by page, each page retried on its own.

        With ``sorted_listing`` the order is checked as it streams: a server
        that breaks it stops the listing (a merge of unsorted listings would
        plan wrong copies and deletions) instead of being trusted silently.
        """
        client = await self._client()
        previous: str | None = None
        async with aclosing(self._raw_listing(client, self._root + prefix)) as items:
            async for item in items:
                if self.features.sorted_listing:
                    self._check_order(previous, item["Key"])
                    previous = item["Key"]
                info = self._listed(item)
                if info is not None:
                    yield info

    def _check_order(self, previous: str | None, key: str) -> None:
        if previous is not None and key <= previous:
            raise ConfigError(f"{self.describe()}: the server listed {key!r} after {previous!r}, "
                              "not in key order; set sorted_listing = false for this remote")

    async def _raw_listing(self, client: Any, prefix: str) -> AsyncIterator[dict[str, Any]]:
        """ListObjectsV2 items (dicts) under ``prefix``: flat pages, or a walk where the server needs it."""
        first = await self._list_page(client, prefix, None)
        if self.features.sorted_listing and self._lists_by_directory is None:
            self._lists_by_directory = _lists_by_directory(first)
        if self.features.sorted_listing and self._lists_by_directory:
            async with aclosing(self._walk(client, prefix)) as items:
                async for item in items:
                    yield item
            return
        page = first
        while True:
            for item in page.get("Contents", ()):
                yield item
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            page = await self._list_page(client, prefix, token)

    async def _walk(self, client: Any, prefix: str) -> AsyncIterator[dict[str, Any]]:
        """Items under ``prefix`` in key order, one directory level (Delimiter "/") at a time.

        For servers that list a directory's whole subtree at the place of its
        bare name ("a/" before "a.txt"). A level's files and subdirectories
        are put in a heap by key (a subdirectory by its "name/" prefix, where
        its whole subtree sorts); what no later page can precede, everything
        up to the page's greatest bare name, is emitted, a subdirectory by
        walking it. Memory: about one page per level of depth.
        """
        heap: list[tuple[str, int, dict[str, Any] | None]] = []
        token: str | None = None
        while True:
            page = await self._list_page(client, prefix, token, delimiter="/")
            names = []
            for item in page.get("Contents", ()):
                heapq.heappush(heap, (item["Key"], len(heap), item))
                names.append(item["Key"])
            for common in page.get("CommonPrefixes", ()):
                heapq.heappush(heap, (common["Prefix"], len(heap), None))
                names.append(common["Prefix"][:-1])
            token = page.get("NextContinuationToken")
            done = not page.get("IsTruncated") or not token
            if not done and not names:
                continue
            watermark = max(names) if names else ""
            while heap and (done or heap[0][0] <= watermark):
                key, _, item = heapq.heappop(heap)
                if item is not None:
                    yield item
                    continue
                async with aclosing(self._walk(client, key)) as items:
                    async for sub in items:
                        yield sub
            if done:
                return

    async def _list_page(self, client: Any, prefix: str, token: str | None,
                         delimiter: str | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if token:
            kwargs["ContinuationToken"] = token
        if delimiter:
            kwargs["Delimiter"] = delimiter
        return await self._call("ListObjectsV2", None, lambda: client.list_objects_v2(**kwargs),
                                retry=True)

    def _listed(self, item: dict[str, Any]) -> ObjectInfo | None:
        full: str = item["Key"]
        if full.endswith("/"):
            return None  # a "directory marker" made by consoles and some tools
        key = full[len(self._root):]
        try:
            check_key(key)
        except InvalidKey:
            # "a//b" or "./x" cannot be named on other backends, nor read back
            # through this contract; say so instead of failing the whole listing
            log.warning("s3.key_skipped", backend=self.describe(), key=full,
                        reason="empty, '.' or '..' segment")
            return None
        etag = _strip_etag(item.get("ETag"))
        return ObjectInfo(key=key, size=int(item["Size"]), mtime=_utc(item.get("LastModified")),
                          etag=etag, version=etag, hashes=_md5_hashes(etag))

    async def stat(self, key: str) -> ObjectInfo:
        full = self._full_key(key)
        client = await self._client()
        head = await self._call("HeadObject", key, lambda: client.head_object(Bucket=self.bucket, Key=full),
                                retry=True)
        return self._info_from_head(key, head)

    @staticmethod
    def _info_from_head(key: str, head: dict[str, Any]) -> ObjectInfo:
        etag = _strip_etag(head.get("ETag"))
        hashes = _md5_hashes(etag)
        sha256 = (head.get("Metadata") or {}).get(SHA256)
        if sha256:
            hashes[SHA256] = sha256.lower()
        return ObjectInfo(key=key, size=int(head["ContentLength"]), mtime=_utc(head.get("LastModified")), etag=etag,
                          version=etag, hashes=hashes)

    # -- open --------------------------------------------------------------------------

    def open(self, key: str, *, offset: int = 0, length: int | None = None,
             if_version: str | None = None) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """GetObject with Range and If-Match; beyond ``multipart_threshold`` the rest comes as
        parallel ranged GETs (``download_concurrency`` in flight), pinned to the first answer's ETag."""
        full = self._full_key(key)
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        return self._open(key, full, offset, length, if_version)

    @asynccontextmanager
    async def _open(self, key: str, full: str, offset: int, length: int | None,
                    if_version: str | None) -> AsyncIterator[AsyncIterator[bytes]]:
        client = await self._client()
        if length == 0:
            await self._check_version(key, if_version)
            yield _empty()
            return
        first = min(length, self._threshold) if length is not None else self._threshold
        response = await self._get_first(client, key, full, offset, offset + first - 1, if_version)
        if response is None:  # offset at or past the end
            yield _empty()
            return
        body = response["Body"]
        async with body:
            start, stop, total = self._span(response)
            end = total if length is None else min(total, offset + length)
            pin = if_version or _strip_etag(response.get("ETag"))
            with _first_error():
                async with anyio.create_task_group() as tg:
                    ranges = self._ranges(stop, end)
                    fetch = partial(self._get_range, client, key, full, pin=pin)
                    stream = self._stream(key, body, start, offset, min(stop, end), tg, fetch, ranges)
                    try:
                        yield stream
                    finally:
                        await stream.aclose()
                        tg.cancel_scope.cancel()

    async def _check_version(self, key: str, if_version: str | None) -> None:
        info = await self.stat(key)
        if if_version is not None and info.version != if_version.strip('"'):
            raise SourceChanged("object changed since it was listed", backend=self.describe(), key=key)

    async def _get_first(self, client: Any, key: str, full: str, first: int, last: int,
                         if_version: str | None) -> dict[str, Any] | None:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full, "Range": f"bytes={first}-{last}"}
        if if_version:
            kwargs["IfMatch"] = _quote_etag(if_version)
        with self._errors("GetObject", key):
            try:
                return await client.get_object(**kwargs)
            except bce.ClientError as exc:
                if _error_code(exc) != "InvalidRange":
                    raise
        # 416: the object is empty or shorter than the offset
        await self._check_version(key, if_version)
        return None

    @staticmethod
    def _span(response: dict[str, Any]) -> tuple[int, int, int]:
        """(first byte in the body, byte after its last, object size) of a GET answer."""
        match = _CONTENT_RANGE.match(response.get("ContentRange") or "")
        length = int(response["ContentLength"])
        if match is None:  # 200: the server sent the whole object
            return 0, length, length
        first, last, total = match.groups()
        size = int(total) if total != "*" else int(last) + 1
        return int(first), int(last) + 1, size

    def _ranges(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        for first in range(start, end, self._part_size):
            yield first, min(end, first + self._part_size) - 1

    async def _stream(self, key: str, body: Any, body_start: int, offset: int, body_end: int,
                      tg: anyio.abc.TaskGroup, fetch: Callable[[int, int], Awaitable[bytes]],
                      ranges: Iterator[tuple[int, int]]) -> AsyncIterator[bytes]:
        """The first answer's body, then the prefetched parts in order."""
        window: deque[_Slot] = deque()

        def refill() -> None:
            while len(window) < self._download_concurrency:
                span = next(ranges, None)
                if span is None:
                    return
                slot = _Slot()
                tg.start_soon(self._fill_slot, slot, fetch, *span)
                window.append(slot)

        refill()  # the parts download while the first body streams
        pos = body_start
        while pos < body_end:
            with self._errors("GetObject", key):
                chunk = await body.read(min(READ_CHUNK, body_end - pos))
            if not chunk:
                raise TransientError(f"GetObject body ended at byte {pos} of {body_end}",
                                     backend=self.describe(), key=key)
            piece = chunk[max(0, offset - pos):]  # only when a server ignored Range
            pos += len(chunk)
            if piece:
                yield piece
        while window:
            slot = window.popleft()
            await slot.done.wait()
            if slot.error is not None:
                raise slot.error
            data, slot.data = slot.data, None
            yield data
            del data
            refill()  # after the consumer is done with a part: memory stays bounded

    @staticmethod
    async def _fill_slot(slot: _Slot, fetch: Callable[[int, int], Awaitable[bytes]],
                         first: int, last: int) -> None:
        # errors wait in the slot and surface in order, where the reader is
        try:
            slot.data = await fetch(first, last)
        except Exception as exc:
            slot.error = exc
        finally:
            slot.done.set()

    async def _get_range(self, client: Any, key: str, full: str, first: int, last: int, *,
                         pin: str | None) -> bytes:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full, "Range": f"bytes={first}-{last}"}
        if pin:
            kwargs["IfMatch"] = _quote_etag(pin)

        async def fetch() -> bytes:
            response = await client.get_object(**kwargs)
            async with response["Body"] as _:
                data = await response["Body"].read()
            if len(data) != last - first + 1:
                raise bce.IncompleteReadError(actual_bytes=len(data), expected_bytes=last - first + 1)
            return data

        return await self._call("GetObject", key, fetch, retry=True)

    # -- put -----------------------------------------------------------------------

    async def put(self, info: ObjectInfo, body: BodyFactory) -> ObjectInfo:
        """PutObject up to ``multipart_threshold``, multipart above; see the module docstring."""
        key = info.key
        full = self._full_key(key)
        if info.size is not None and info.size > MAX_OBJECT_SIZE:
            raise ObjectTooLarge(f"{info.size} bytes is over S3's 5 TiB limit",
                                 backend=self.describe(), key=key)
        client = await self._client()
        it = body()
        try:
            reader = _BodyReader(it, info.size, self._fail(SourceChanged, key))
            head, ended = await reader.read_head(self._threshold)
            if ended:
                reader.check_end()
                return await self._put_single(client, info, full, b"".join(head))
            return await self._put_multipart(client, info, full, reader, head)
        finally:
            await _close_iterator(it)

    async def _put_single(self, client: Any, info: ObjectInfo, full: str, data: bytes) -> ObjectInfo:
        key = info.key
        md5, sha = await _off_loop(lambda: _md5_sha256(data), len(data))
        self._check_expected_sha(info, sha.hex())
        response = await self._call("PutObject", key, lambda: client.put_object(
            Bucket=self.bucket, Key=full, Body=data, ContentMD5=_b64(md5),
            ChecksumSHA256=_b64(sha), Metadata={SHA256: sha.hex()}))
        etag = _strip_etag(response.get("ETag"))
        if _etag_is_content_md5(etag, response) and etag != md5.hex():
            await self._delete_corrupt(client, key, full)
            raise IntegrityError(f"server reports MD5 {etag}, sent {md5.hex()}",
                                 backend=self.describe(), key=key)
        hashes = {SHA256: sha.hex(), **_md5_hashes(etag)}
        return ObjectInfo(key=key, size=len(data), etag=etag, version=etag, hashes=hashes)

    def _check_expected_sha(self, info: ObjectInfo, actual: str) -> None:
        expected = info.hashes.get(SHA256)
        if expected is not None and expected.lower() != actual:
            raise IntegrityError(f"content SHA-256 {actual} differs from the expected {expected}",
                                 backend=self.describe(), key=info.key)

    def _part_size_for(self, size: int | None) -> int:
        """``part_size``, grown (in whole MiB) when a known size would need more than 10,000 parts."""
        if size is None:
            return self._part_size
        needed = -(-size // MAX_PARTS)
        return max(self._part_size, -(-needed // MiB) * MiB)

    async def _put_multipart(self, client: Any, info: ObjectInfo, full: str, reader: _BodyReader,
                             head: list[bytes]) -> ObjectInfo:
        key = info.key
        upload = await self._create_upload(client, key, full, sha256=info.hashes.get(SHA256))
        try:
            async with aclosing(reader.parts(head, self._part_size_for(info.size))) as parts:
                await self._send_parts(client, info, full, upload, parts)
            reader.check_end()
            sha = upload.whole_sha256.hexdigest()
            self._check_expected_sha(info, sha)
            etag, response = await self._complete(client, key, full, upload)
        except BaseException:
            await self._abort(client, key, full, upload.upload_id)
            raise
        if _etag_is_content_md5(etag, response, multipart=True):
            await self._verify_multipart_etag(client, key, full, upload, etag)
        hashes = {SHA256: sha}
        return ObjectInfo(key=key, size=reader.count, etag=etag, version=etag, hashes=hashes)

    async def _create_upload(self, client: Any, key: str, full: str, *, sha256: str | None,
                             checksums: bool = True) -> _Upload:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full}
        if checksums:
            kwargs["ChecksumAlgorithm"] = "SHA256"
        if sha256:
            kwargs["Metadata"] = {SHA256: sha256.lower()}
        # Shielded: cancelled mid-request, the server may hold an upload whose
        # id we never learnt and so could never abort.
        response = None
        with anyio.CancelScope(shield=True), anyio.move_on_after(ABORT_TIMEOUT):
            response = await self._call("CreateMultipartUpload", key,
                                        lambda: client.create_multipart_upload(**kwargs))
        if response is None:
            raise TransientError(f"CreateMultipartUpload: no answer within {ABORT_TIMEOUT:.0f} s",
                                 backend=self.describe(), key=key)
        upload = _Upload(upload_id=response["UploadId"])
        try:
            await anyio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            await self._abort(client, key, full, upload.upload_id)
            raise
        return upload

    async def _send_parts(self, client: Any, info: ObjectInfo, full: str, upload: _Upload,
                          parts: AsyncIterator[bytes]) -> None:
        """Hash each part in-stream and upload it, ``upload_concurrency`` parts in flight."""
        in_flight = anyio.Semaphore(self._upload_concurrency)
        with _first_error():
            async with anyio.create_task_group() as tg:
                number = 0
                async for part in parts:
                    number += 1
                    if number > MAX_PARTS:
                        raise ObjectTooLarge(f"more than {MAX_PARTS} parts of {len(part)} bytes",
                                             backend=self.describe(), key=info.key)
                    md5, sha = await _off_loop(lambda p=part: self._hash_part(upload, p), len(part))
                    upload.part_md5s[number] = md5
                    await in_flight.acquire()
                    tg.start_soon(self._upload_part, client, info.key, full, upload, number, part,
                                  md5, sha, in_flight)
                    del part  # the task holds it now; keep memory to the parts in flight

    @staticmethod
    def _hash_part(upload: _Upload, part: bytes) -> tuple[bytes, bytes]:
        upload.whole_sha256.update(part)
        return _md5_sha256(part)

    async def _upload_part(self, client: Any, key: str, full: str, upload: _Upload, number: int,
                           part: bytes, md5: bytes, sha: bytes, in_flight: anyio.Semaphore) -> None:
        try:
            response = await self._call("UploadPart", key, lambda: client.upload_part(
                Bucket=self.bucket, Key=full, UploadId=upload.upload_id, PartNumber=number,
                Body=part, ContentMD5=_b64(md5), ChecksumSHA256=_b64(sha)))
        finally:
            in_flight.release()
        etag = _strip_etag(response.get("ETag"))
        if _etag_is_content_md5(etag, response) and etag != md5.hex():
            raise IntegrityError(f"part {number}: server reports MD5 {etag}, sent {md5.hex()}",
                                 backend=self.describe(), key=key)
        upload.parts[number] = {"PartNumber": number, "ETag": response["ETag"],
                                "ChecksumSHA256": response.get("ChecksumSHA256") or _b64(sha)}

    async def _complete(self, client: Any, key: str, full: str,
                        upload: _Upload) -> tuple[str | None, dict[str, Any]]:
        parts = [upload.parts[n] for n in sorted(upload.parts)]
        response = await self._call("CompleteMultipartUpload", key, lambda: client.complete_multipart_upload(
            Bucket=self.bucket, Key=full, UploadId=upload.upload_id, MultipartUpload={"Parts": parts}))
        etag = _strip_etag(response.get("ETag"))
        if not etag:  # Ceph RGW answers an empty ETag here; HeadObject has it
            etag = (await self.stat(key)).etag
        return etag, response

    async def _verify_multipart_etag(self, client: Any, key: str, full: str, upload: _Upload,
                                     etag: str | None) -> None:
        """Compare an ``md5-N`` ETag with the MD5 of our part MD5s (the usual S3 scheme)."""
        digests = b"".join(upload.part_md5s[n] for n in sorted(upload.part_md5s))
        ours = f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(upload.part_md5s)}"
        if etag != ours:
            await self._delete_corrupt(client, key, full)
            raise IntegrityError(f"server reports multipart ETag {etag}, expected {ours}",
                                 backend=self.describe(), key=key)

    async def _abort(self, client: Any, key: str, full: str, upload_id: str) -> None:
        """Abort a multipart upload, even while being cancelled, within ABORT_TIMEOUT."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(ABORT_TIMEOUT):
            try:
                await self._call("AbortMultipartUpload", key, lambda: client.abort_multipart_upload(
                    Bucket=self.bucket, Key=full, UploadId=upload_id))
            except BackendError as exc:
                log.warning("s3.abort_failed", backend=self.describe(), key=key,
                            upload_id=upload_id, error=str(exc))

    async def _delete_corrupt(self, client: Any, key: str, full: str) -> None:
        # what the server stored is not what we sent: it must not stay visible
        with anyio.CancelScope(shield=True), anyio.move_on_after(ABORT_TIMEOUT):
            await self._call("DeleteObject", key, lambda: client.delete_object(Bucket=self.bucket, Key=full))

    # -- delete / copy ---------------------------------------------------------------

    async def delete(self, key: str) -> None:
        full = self._full_key(key)
        client = await self._client()
        try:
            await self._call("DeleteObject", key, lambda: client.delete_object(Bucket=self.bucket, Key=full))
        except NotFound:
            # S3 answers 204 for an absent key; some servers say NoSuchKey.
            # A missing bucket is still an error.
            if not await self._bucket_exists(client):
                raise

    async def _bucket_exists(self, client: Any) -> bool:
        try:
            await self._call("HeadBucket", None, lambda: client.head_bucket(Bucket=self.bucket))
        except NotFound:
            return False
        return True

    async def server_copy(self, source: Backend, src: ObjectInfo, dst_key: str) -> ObjectInfo:
        """CopyObject (UploadPartCopy above 5 GiB) from any bucket of the same store; keeps the sha256 metadata.

        When ``src.version`` is set the copy fails with SourceChanged if the
        source is no longer that version.
        """
        if not isinstance(source, S3Backend) or not self.same_store(source):
            raise NotImplementedError(f"{self.describe()} cannot copy from {source.describe()}")
        dst_full = self._full_key(dst_key)
        src_full = source._full_key(src.key)
        client = await self._client()
        copy_source = {"Bucket": source.bucket, "Key": src_full}
        size = src.size if src.size is not None else (await source.stat(src.key)).size
        if size is not None and size > self.single_copy_limit:
            await self._copy_multipart(client, source, src, copy_source, dst_key, dst_full)
        else:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": dst_full, "CopySource": copy_source,
                                      "MetadataDirective": "COPY"}
            if src.version:
                kwargs["CopySourceIfMatch"] = _quote_etag(src.version)
            await self._call("CopyObject", dst_key, lambda: client.copy_object(**kwargs))
        copied = await self.stat(dst_key)
        if SHA256 not in copied.hashes and SHA256 in src.hashes:
            copied = ObjectInfo(key=copied.key, size=copied.size, mtime=copied.mtime, etag=copied.etag,
                                version=copied.version, hashes={**copied.hashes, SHA256: src.hashes[SHA256]})
        return copied

    async def _copy_multipart(self, client: Any, source: S3Backend, src: ObjectInfo,
                              copy_source: dict[str, str], dst_key: str, dst_full: str) -> None:
        head = await source.stat(src.key)
        if src.version and head.version != src.version.strip('"'):
            raise SourceChanged("source changed before the copy", backend=source.describe(), key=src.key)
        assert head.size is not None
        # the metadata is given again: a multipart upload does not copy it
        upload = await self._create_upload(client, dst_key, dst_full, sha256=head.hashes.get(SHA256),
                                           checksums=False)
        part_size = max(self.copy_part_size, self._part_size_for(head.size))
        try:
            await self._copy_parts(client, dst_key, dst_full, upload, copy_source, head, part_size)
            await self._complete(client, dst_key, dst_full, upload)
        except BaseException:
            await self._abort(client, dst_key, dst_full, upload.upload_id)
            raise

    async def _copy_parts(self, client: Any, key: str, full: str, upload: _Upload,
                          copy_source: dict[str, str], head: ObjectInfo, part_size: int) -> None:
        assert head.size is not None and head.version is not None
        in_flight = anyio.Semaphore(self._upload_concurrency)

        async def copy_part(number: int, first: int, last: int) -> None:
            async with in_flight:
                response = await self._call("UploadPartCopy", key, lambda: client.upload_part_copy(
                    Bucket=self.bucket, Key=full, UploadId=upload.upload_id, PartNumber=number,
                    CopySource=copy_source, CopySourceRange=f"bytes={first}-{last}",
                    CopySourceIfMatch=_quote_etag(head.version)))
            result = response["CopyPartResult"]
            part = {"PartNumber": number, "ETag": result["ETag"]}
            if result.get("ChecksumSHA256"):
                part["ChecksumSHA256"] = result["ChecksumSHA256"]
            upload.parts[number] = part

        with _first_error():
            async with anyio.create_task_group() as tg:
                for number, first in enumerate(range(0, head.size, part_size), start=1):
                    tg.start_soon(copy_part, number, first, min(head.size, first + part_size) - 1)
