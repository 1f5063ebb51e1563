"""The S3 backend: a bucket and an optional prefix of an S3-compatible store."""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    aclosing,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import replace
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

import aiohttp
import anyio
import botocore.exceptions as bce

from ...errors import (
    AccessDenied,
    BackendError,
    ConfigError,
    ConnectionFailed,
    IntegrityError,
    InvalidKey,
    NotFound,
    ObjectTooLarge,
    SourceChanged,
    SourceDiffers,
    TransientError,
)
from ...logs import get_logger
from ...model import (
    CRC32,
    CRC32C,
    CRC64NVME,
    MD5,
    MTIME_METADATA,
    SHA256,
    BodyFactory,
    Features,
    IncompleteUpload,
    ObjectInfo,
    Pace,
    parse_mtime_text,
)
from ...retry import RetryPolicy, retry_call
from ..base import DESCRIPTION_PARTS, Backend, UploadCheckpoint, check_key, described_metadata
from . import buckets, checksums, deletes, listing, prefixes, uploads_cleanup
from .common import (
    ABORT_TIMEOUT,
    CHECK_TIMEOUT,
    CONNECT_TIMEOUT,
    COPY_PART_SIZE,
    MAX_KEY_BYTES,
    MAX_OBJECT_SIZE,
    MAX_PARTS,
    MAX_SINGLE_COPY,
    MIN_PART_SIZE,
    READ_TIMEOUT,
    REQUEST_ATTEMPTS,
    MiB,
    b64,
    boto_description,
    close_iterator,
    description_of,
    description_to_send,
    empty,
    etag_is_content_md5,
    first_error,
    goog_without_md5,
    md5_hashes,
    md5_sha256,
    metadata_of,
    off_loop,
    quote_etag,
    strip_etag,
    user_metadata,
    utc,
)
from .direct import StaticCredentials, check_region, plain_settings
from .download import Download, check_digest, span, whole_object_check
from .errors import S3HTTPError, translate_error
from .fastpath import FastS3, Target, check_range, read_piece
from .upload import BodyReader, Upload, Uploads
from .writing import SETTINGS, WriteSettings, tag_reader

log = get_logger(__name__)

#: what ``provider`` may name: any S3-compatible store, or Google Cloud Storage's XML API
PROVIDERS = ("s3", "gcs")

#: Idempotent single requests (a listing page, a stat, a small PutObject, a
#: ranged part) are retried here: the fast path has no retries of its own,
#: and botocore does not retry a body cut mid-read. Six tries: a listing page
#: that fails ends the whole job, and four in a row did on a flaky link.
REQUEST_RETRY = RetryPolicy(attempts=6, base_delay=0.2, max_delay=5.0, deadline=60.0)


class _Final(Exception):
    """Carries an error past retry_call, which would retry anything marked retryable."""

    def __init__(self, error: BackendError) -> None:
        super().__init__(str(error))
        self.error = error


class S3Backend(Backend):
    """A bucket (and prefix) of an S3-compatible store.

    Defaults and why:

    * ``max_concurrency`` (16): how many requests the engine runs at once; it
      sizes the connection pools.
    * ``part_size`` (8 MiB) and ``multipart_threshold`` (8 MiB): the AWS CLI's
      defaults; at least 5 MiB, S3's minimum part. The part size grows for
      objects of known size that would need more than 10,000 parts.
    * ``download_concurrency`` / ``upload_concurrency`` (4): ranged parts in
      flight per object; memory per large transfer is about this times ``part_size``.
    * ``stream_limit`` (256 MiB, rclone's multi-thread cutoff): a read of up
      to this many bytes takes two streamed GETs (the first ``multipart_threshold``
      bytes, then the rest); a longer one, parallel ranged GETs of ``part_size``.
      Ranges cost the server a request each: for 128 MiB objects SeaweedFS
      spent ~25 % more CPU serving 16 ranges than one stream, and the
      download was no faster.
    * ``sorted_listing`` (True): S3 lists keys in UTF-8 byte order, which the
      sync planner merges without sorting. Servers that list directory by
      directory (SeaweedFS, recognised by its Server header) are walked level
      by level to keep that order; any other server caught out of order stops
      the listing with a ConfigError. False makes the planner sort instead.
    * ``verify_tls`` (None): None or True verify as botocore does (honouring
      ``AWS_CA_BUNDLE``); False turns verification off; a string is a CA bundle path.
    * ``metadata`` (True): what describes an object's bytes travels with them
      (``--metadata``/``--no-metadata``). Written: an object's Content-Type,
      standard headers and source mtime (user metadata ``mtime``, as rclone
      writes it). Read: listings say they do not know them
      (``ObjectInfo.headers`` None), so that a copy asks ``stat`` (one
      HeadObject); off, listings say there is nothing to carry and puts send
      only vertexflow's own metadata (digests, codec).
    * ``metadata_set`` ({}): set on every object written, over what it
      carries (``--metadata-set KEY=VALUE``): ``content-type`` and the
      standard header names go as headers, other names as user metadata. A
      server-side copy then replaces the metadata (directive REPLACE, after a
      HeadObject of the source) instead of copying it.
    * ``metadata_exclude`` (()): names (globs) of headers and user metadata
      not carried, read or written (``--metadata-exclude``).
    * ``content_types`` (()): (glob on the key, Content-Type) pairs; the first
      that matches an object written gives its type (``--content-type``).
    * ``storage_class``, ``sse`` with ``sse_kms_key_id``, ``acl`` (None): set on
      every object written; None leaves each to the store, as none is copied
      from a source of another account (:mod:`.writing`).
    * ``tags`` ({}): set on every object written, over the tags it carries
      (which a source's answers only count: read with GetObjectTagging when
      a tagged object is written here, :class:`~vertexflow.model.PendingTags`).
    * ``full_checksums`` (True): every object written carries a CRC64NVME of
      all its bytes, which the store checks and keeps (:mod:`.checksums`; a
      server that refuses it is written to without it). False: parts carry
      composite CRC32s, as before full-object checksums.
    * ``provider`` ("s3"): "gcs" for Google Cloud Storage's XML API
      (:data:`PROVIDERS`, docs/gcs.md): no ``x-amz-checksum-*`` header (parts
      and single puts carry Content-MD5, checked by the store), no object tags
      (no tagging header, no GetObjectTagging; ``tags`` is a ConfigError), no
      MD5 taken from a listed ETag (a multipart or composite object's is not
      one), copies by CopyObject alone (the XML API has no UploadPartCopy).

    ``requests`` counts every HTTP request sent (botocore's retries included),
    ``retries`` every request sent again after a failure.
    """

    scheme: ClassVar[str] = "s3"
    features = Features(
        server_side_copy=True,
        native_hashes=(MD5,),
        sorted_listing=True,
        max_object_size=MAX_OBJECT_SIZE,
        preserves_mtime=False,
        resumable_uploads=True,
        paced_writes=True,
        whole_reads=True,
        public_links=True,
        object_metadata=True,
        # the SHA-256 vertexflow keeps as metadata, and the full-object checksums the store keeps
        stat_hashes=(SHA256, CRC64NVME, CRC32C, CRC32),
        object_tags=True,
        write_settings=SETTINGS,
        timeouts=("request_timeout", "connect_timeout"),
        description_in_place=DESCRIPTION_PARTS,
        incomplete_uploads=True,
        common_prefixes=True,
        batch_deletes=True,
        buckets=True,
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
        stream_limit: int = 256 * MiB,
        verify_tls: bool | str | None = None,
        sorted_listing: bool = True,
        name: str | None = None,
        metadata: bool = True,
        metadata_set: Mapping[str, str] | None = None,
        metadata_exclude: tuple[str, ...] = (),
        content_types: tuple[tuple[str, str], ...] = (),
        storage_class: str | None = None,
        sse: str | None = None,
        sse_kms_key_id: str | None = None,
        acl: str | None = None,
        tags: Mapping[str, str] | None = None,
        full_checksums: bool = True,
        provider: str = "s3",
        request_timeout: float = READ_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        if provider not in PROVIDERS:
            raise ConfigError(f"S3 provider must be one of {', '.join(PROVIDERS)}, not {provider!r}")
        if provider == "gcs" and tags:
            raise ConfigError("Google Cloud Storage keeps no object tags: --tag/tags cannot be used with a gcs remote")
        if not bucket:
            raise ConfigError("S3 bucket name is empty")
        if part_size < MIN_PART_SIZE:
            raise ConfigError(f"S3 part_size must be at least {MIN_PART_SIZE} bytes (5 MiB)")
        if addressing_style not in ("auto", "path", "virtual"):
            raise ConfigError(f"S3 addressing_style must be auto, path or virtual, not {addressing_style!r}")
        if min(max_concurrency, download_concurrency, upload_concurrency, multipart_threshold) < 1:
            raise ConfigError("S3 concurrency and multipart_threshold must be positive")
        if not (request_timeout > 0 and connect_timeout > 0):
            raise ConfigError("S3 request_timeout and connect_timeout must be above 0 seconds")
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
        self.upload_concurrency = upload_concurrency
        self._stream_limit = stream_limit
        self._verify_tls = verify_tls
        self._name = name
        #: seconds without a byte of an answer (``--timeout``), and to connect (``--contimeout``)
        self.request_timeout, self.connect_timeout = float(request_timeout), float(connect_timeout)
        self._metadata = metadata
        self._metadata_set = dict(metadata_set or {})
        #: what every object written is given besides its bytes (:mod:`.upload` writes with it too)
        self.writes = WriteSettings.of(metadata=metadata, metadata_set=metadata_set,
                                        metadata_exclude=metadata_exclude, content_types=content_types,
                                        storage_class=storage_class, sse=sse, sse_kms_key_id=sse_kms_key_id,
                                        acl=acl, tags=tags)
        self.requests = 0
        self.retries = 0
        self._session: Any = None
        self._s3: Any = None
        self._fast: FastS3 | None = None
        #: learnt from the first answer: see listing.lists_by_directory
        self._lists_by_directory: bool | None = None
        #: learnt from UploadPart answers: True once the server answers with each
        #: part's CRC32 (it checks the x-amz-checksum-crc32 we send), so the
        #: parts' MD5s are no longer needed; False or None: take and send them
        self.part_checksums: bool | None = None
        #: the full-object checksum sent with what is written (:mod:`.checksums`), until the server refuses it
        self.provider = provider
        #: the store takes x-amz-checksum-* headers (GCS's XML API knows only x-goog-hash)
        self.checksum_headers = provider != "gcs"
        self.checksums = checksums.Sending(full_checksums and self.checksum_headers)
        if not sorted_listing:
            self.features = replace(self.features, sorted_listing=False)
        if provider == "gcs":
            self.writes = replace(self.writes, tagging=False)
            # a multipart or composite object's ETag is no MD5 and a listing cannot tell which it is
            # the XML API has no multi-object delete (DeleteObjects): one DeleteObject per object
            self.features = replace(self.features, object_tags=False, native_hashes=(),
                                    stat_hashes=(SHA256,), batch_deletes=False)
            # the XML API copies any size with one request and has no UploadPartCopy
            self.single_copy_limit = MAX_OBJECT_SIZE
        self._uploads = Uploads(self)
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

    # -- clients ---------------------------------------------------------------
    # client, fast_client, call, part_size_for, check_expected_sha, delete_corrupt and
    # upload_concurrency serve this package's modules too (:mod:`.upload`): not the Backend contract

    async def client(self) -> Any:
        """The aioboto3 client (multipart, copy, delete, bucket checks)."""
        if self._s3 is None:
            async with self._client_lock:
                if self._s3 is None:
                    self._s3 = await self._make_client()
        return self._s3

    async def fast_client(self) -> FastS3:
        """The fast path (:mod:`.fastpath`), addressed and signed as the boto client would.

        Plain settings (:mod:`.direct`) need no boto client; others are read from it.
        """
        if self._fast is None:
            plain = self._plain_settings()
            client = await self.client() if plain is None else None
            async with self._client_lock:
                if self._fast is None:
                    with self._errors("connect"):
                        target, credentials = plain or await self._resolve(client)
                        self._fast = self._make_fast(target, credentials)
        return self._fast

    def _plain_settings(self) -> tuple[Target, StaticCredentials] | None:
        return plain_settings(self.bucket, endpoint_url=self._endpoint_url, region=self._region,
                              access_key_id=self._access_key_id, secret_access_key=self._secret_access_key,
                              session_token=self._session_token, profile=self._profile,
                              addressing_style=self._addressing_style)

    async def _make_client(self) -> Any:
        # imported here: a job the fast path serves alone starts ~0.2 s sooner without them
        import aioboto3
        from aiobotocore.config import AioConfig

        try:
            self._session = aioboto3.Session(
                aws_access_key_id=self._access_key_id,
                aws_secret_access_key=self._secret_access_key,
                aws_session_token=self._session_token,
                profile_name=self._profile,
                # botocore itself reads only AWS_DEFAULT_REGION (as :mod:`.direct` does after AWS_REGION)
                region_name=self._region or os.environ.get("AWS_REGION") or None,
            )
        except bce.ProfileNotFound as exc:  # the profile may come from AWS_PROFILE, not from us
            raise ConfigError(f"AWS profile {exc.kwargs.get('profile', self._profile)!r} not found") from exc
        config = AioConfig(
            connect_timeout=self.connect_timeout,
            read_timeout=self.request_timeout,
            retries={"mode": "standard", "total_max_attempts": REQUEST_ATTEMPTS},
            max_pool_connections=self._connections(),
            s3={"addressing_style": self._addressing_style},
        )
        kwargs: dict[str, Any] = {"config": config}
        if self._endpoint_url:
            kwargs["endpoint_url"] = self._endpoint_url
        # True means "verify as botocore does by default", which honours AWS_CA_BUNDLE
        if self._verify_tls is False or isinstance(self._verify_tls, str):
            kwargs["verify"] = self._verify_tls
        try:
            client = await self._stack.enter_async_context(self._session.client("s3", **kwargs))
        except bce.InvalidRegionError as exc:  # from AWS_REGION, a setting or the AWS config file
            check_region(str(exc.kwargs.get("region_name")), "the AWS configuration")
            raise
        # once per HTTP request botocore sends, and once per retry it makes
        client.meta.events.register("before-send.s3", self._count_boto_request)
        client.meta.events.register("request-created.s3", self._count_boto_retry)
        return client

    def _count_boto_request(self, **_: Any) -> None:
        self.requests += 1

    def _count_boto_retry(self, request: Any, **_: Any) -> None:
        if request.context.get("retries", {}).get("attempt", 1) > 1:
            self.retries += 1

    def _count_request(self) -> None:
        self.requests += 1

    def _connections(self) -> int:
        # one connection per concurrent request plus the ranged parts of one
        # large object: the engine's limit is the real bound
        return self._max_concurrency + max(self._download_concurrency, self.upload_concurrency)

    async def _resolve(self, client: Any) -> tuple[Target, Any]:
        """The bucket's address and the session's credentials, as the boto client has them."""
        credentials = await self._session.get_credentials()
        if credentials is None:
            raise bce.NoCredentialsError()
        return await Target.resolve(client, self.bucket), credentials

    def _make_fast(self, target: Target, credentials: Any) -> FastS3:
        fast = FastS3(target, credentials, connections=self._connections(),
                      ssl_context=self._ssl_context(target.origin), on_request=self._count_request,
                      checksum_mode=self.checksum_headers, connect_timeout=self.connect_timeout,
                      read_timeout=self.request_timeout)
        self._stack.push_async_callback(fast.aclose)
        return fast

    def _ssl_context(self, origin: str) -> ssl.SSLContext | bool:
        """TLS verification as botocore does it: ``verify_tls``, else AWS_CA_BUNDLE, else its bundle."""
        if not origin.startswith("https:") or self._verify_tls is False:
            return False
        import botocore.httpsession  # only for TLS: see _make_client
        cafile = (self._verify_tls if isinstance(self._verify_tls, str)
                  else os.environ.get("AWS_CA_BUNDLE") or botocore.httpsession.get_cert_path(True))
        return ssl.create_default_context(cafile=cafile)

    async def aclose(self) -> None:
        async with self._client_lock:
            stack, self._stack = self._stack, AsyncExitStack()
            self._s3 = self._fast = None
            await stack.aclose()

    # -- keys and errors ---------------------------------------------------------

    async def public_link(self, key: str, *, expires: int) -> str:
        """A GET link for ``key`` valid for ``expires`` seconds (signed locally, no request)."""
        client = await self.client()
        return str(await client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._full_key(key)}, ExpiresIn=expires))

    def _full_key(self, key: str) -> str:
        check_key(key, backend=self.describe())
        full = self._root + key
        if len(full.encode("utf-8")) > MAX_KEY_BYTES:
            raise InvalidKey(f"key is longer than S3's {MAX_KEY_BYTES} bytes", backend=self.describe(),
                             key=key)
        return full

    @contextmanager
    def _errors(self, op: str, key: str | None = None) -> Iterator[None]:
        """Translate SDK, fast-path and transport errors raised inside into our exceptions."""
        try:
            yield
        except BackendError:
            raise
        except Exception as exc:
            if timed_out := self._timed_out(exc):
                cls, what = timed_out
                raise cls(f"{op} failed: {what}", backend=self.describe(), key=key) from exc
            mapped = translate_error(exc, backend=self.describe(), endpoint=self.endpoint, key=key, op=op)
            if mapped is None:
                raise
            raise mapped from exc

    def _timed_out(self, exc: BaseException) -> tuple[type[TransientError], str] | None:
        """(the error, what it waited for) when ``exc`` is a timeout of this backend's own (``--timeout``,
        ``--contimeout``), else None."""
        if isinstance(exc, (bce.ConnectTimeoutError, aiohttp.ConnectionTimeoutError)):
            return ConnectionFailed, (f"could not connect to {self.endpoint} within {self.connect_timeout:g} s "
                                      "(--contimeout)")
        if isinstance(exc, (bce.ReadTimeoutError, aiohttp.SocketTimeoutError)):
            return TransientError, (f"no answer from {self.endpoint} for {self.request_timeout:g} s "
                                    "(the idle timeout, --timeout)")
        return None

    def _fail(self, cls: type[BackendError], key: str) -> Callable[[str], BackendError]:
        return lambda message: cls(message, backend=self.describe(), key=key)

    async def call(self, op: str, key: str | None, fn: Callable[[], Awaitable[Any]],
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

        def retrying(*_: Any) -> None:
            self.retries += 1

        try:
            return await retry_call(attempt, REQUEST_RETRY, on_retry=retrying)
        except _Final as final:
            raise final.error from final.error.__cause__

    # -- check -------------------------------------------------------------------

    async def check(self, *, write: bool = False) -> None:
        """HeadBucket (and a one-key listing to name a 403), bounded by CHECK_TIMEOUT."""
        with anyio.move_on_after(CHECK_TIMEOUT):
            await self._check_bucket()
            return
        raise ConnectionFailed(f"no answer from {self.endpoint} within {CHECK_TIMEOUT:.0f} s",
                               backend=self.describe())

    async def _check_bucket(self) -> None:
        # on the fast path when it needs no boto client, else on the client it is made from
        if self._fast is None and self._plain_settings() is None:
            client = await self.client()
            head_bucket = partial(self._boto_head_bucket, client)
            list_one = partial(client.list_objects_v2, Bucket=self.bucket, MaxKeys=1, Prefix=self._root)
        else:
            fast = await self.fast_client()
            head_bucket = fast.head_bucket
            list_one = partial(fast.list_page, self._root, None, None, max_keys=1)
        try:  # a 503, 429 or reset is retried here as on any other request (bounded, and by CHECK_TIMEOUT)
            headers = await self.call("HeadBucket", None, head_bucket, retry=True)
        except NotFound as exc:
            raise NotFound(f"bucket {self.bucket!r} does not exist", backend=self.describe()) from exc
        except AccessDenied:
            # HEAD answers carry no error code: a listing tells bad credentials
            # (AuthError) from a bucket we may not list (AccessDenied)
            await self.call("ListObjectsV2", None, list_one, retry=True)
            return
        if self._lists_by_directory is None:
            self._lists_by_directory = listing.lists_by_directory(headers)

    async def _boto_head_bucket(self, client: Any) -> Mapping[str, str]:
        head = await client.head_bucket(Bucket=self.bucket)
        return head.get("ResponseMetadata", {}).get("HTTPHeaders", {})  # type: ignore[no-any-return]

    # -- list / stat -----------------------------------------------------------------

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """ListObjectsV2 page by page, each page retried on its own.

        With ``sorted_listing`` the order is checked as it streams: a server
        that breaks it stops the listing (a merge of unsorted listings would
        plan wrong copies and deletions) instead of being trusted silently.
        """
        fast = await self.fast_client()
        previous: str | None = None
        async with aclosing(self._raw_listing(fast, self._root + prefix)) as items:
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

    async def _raw_listing(self, fast: FastS3, prefix: str) -> AsyncIterator[dict[str, Any]]:
        """ListObjectsV2 items (dicts) under ``prefix``: flat pages, or a walk where the server needs it."""
        page = partial(self._list_page, fast)
        if self.features.sorted_listing and self._lists_by_directory is None:
            # no answer seen yet: one page to see the Server header, used if it is a flat lister's
            first = await page(prefix, None, None)
            self._lists_by_directory = listing.lists_by_directory({"server": fast.server or ""})
            if not self._lists_by_directory:
                async with aclosing(listing.flat(page, prefix, first)) as items:
                    async for item in items:
                        yield item
                return
        if self.features.sorted_listing and self._lists_by_directory:
            items = listing.walk(page, prefix)
        else:
            items = listing.flat(page, prefix)
        async with aclosing(items):
            async for item in items:
                yield item

    async def _list_page(self, fast: FastS3, prefix: str, token: str | None,
                         delimiter: str | None) -> dict[str, Any]:
        return await self.call("ListObjectsV2", None, lambda: fast.list_page(prefix, token, delimiter),
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
        etag = strip_etag(item.get("ETag"))
        # a listing shows neither Content-Type, headers nor user metadata: None says "ask stat"
        return ObjectInfo(key=key, size=int(item["Size"]), mtime=utc(item.get("LastModified")),
                          etag=etag, version=etag, hashes=md5_hashes(etag) if self.features.native_hashes else {},
                          headers=None if self._metadata else {})

    async def stat(self, key: str) -> ObjectInfo:
        full = self._full_key(key)
        fast = await self.fast_client()
        headers = await self.call("HeadObject", key, lambda: fast.head_object(full, checksums=True), retry=True)
        return self.writes.described(self._info_from_head(key, headers), headers, tag_reader(self, key, full))

    @staticmethod
    def _info_from_head(key: str, headers: Mapping[str, str]) -> ObjectInfo:
        """The info a HeadObject answer gives: the source mtime kept as ``mtime`` metadata, else LastModified."""
        etag = strip_etag(headers.get("ETag"))
        hashes = {} if goog_without_md5(headers) else md5_hashes(etag)
        sha256 = headers.get(f"x-amz-meta-{SHA256}")
        if sha256:
            hashes[SHA256] = sha256.lower()
        # the store's own checksums (with checksum mode), which it checked against the bytes: over our metadata
        hashes.update(checksums.stored(headers))
        modified = headers.get("Last-Modified")
        metadata = metadata_of(headers)
        content_type, standard = description_of(headers)
        mtime = parse_mtime_text(metadata.get(MTIME_METADATA))
        if mtime is None and modified:
            mtime = utc(parsedate_to_datetime(modified))
        return ObjectInfo(key=key, size=int(headers["Content-Length"]), mtime=mtime,
                          etag=etag, version=etag, hashes=hashes, metadata=metadata,
                          content_type=content_type, headers=standard)

    # -- open --------------------------------------------------------------------------

    def open(self, key: str, *, offset: int = 0, length: int | None = None,
             if_version: str | None = None) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """GetObject with Range and If-Match; beyond ``multipart_threshold`` the rest comes as
        parallel ranged GETs (``download_concurrency`` in flight), pinned to the first answer's ETag.
        A whole object read in one answer is checked against a plain-MD5 ETag."""
        full = self._full_key(key)
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        return self._open(key, full, offset, length, if_version)

    @asynccontextmanager
    async def _open(self, key: str, full: str, offset: int, length: int | None,
                    if_version: str | None) -> AsyncIterator[AsyncIterator[bytes]]:
        fast = await self.fast_client()
        if length == 0:
            await self._check_version(key, if_version)
            yield empty()
            return
        first = min(length, self._threshold) if length is not None else self._threshold
        async with AsyncExitStack() as stack:
            response = await self._get_first(fast, stack, key, full, offset, offset + first - 1, if_version)
            if response is None:  # offset at or past the end
                yield empty()
                return

            pin = if_version or strip_etag(response.headers.get("ETag"))
            download = Download(describe=self.describe, key=key, headers=response.headers, offset=offset,
                                end=None if length is None else offset + length,
                                read=self._body_reader(response, key),
                                fetch=partial(self._get_range, fast, key, full, pin=pin),
                                open_rest=partial(self._get_rest, fast, key, full, pin=pin),
                                stream_limit=self._stream_limit,
                                part_size=self._part_size, concurrency=self._download_concurrency)
            if not download.has_ranges:  # a small object: no task group to set up
                async with aclosing(download.stream(None)) as stream:
                    yield stream
                return
            with first_error():
                async with anyio.create_task_group() as tg:
                    stream = download.stream(tg)
                    try:
                        yield stream
                    finally:
                        await stream.aclose()
                        tg.cancel_scope.cancel()

    async def read_whole(self, key: str, *, limit: int, if_version: str | None = None,
                         on_bytes: Callable[[int], None] | None = None) -> bytes:
        data, _ = await self._read_whole(key, limit=limit, if_version=if_version, on_bytes=on_bytes)
        return data

    async def read_whole_described(self, key: str, *, limit: int, if_version: str | None = None,
                                   on_bytes: Callable[[int], None] | None = None) -> tuple[bytes, ObjectInfo | None]:
        """:meth:`read_whole`, with the info its GetObject answer carries (no HeadObject for the description)."""
        data, headers = await self._read_whole(key, limit=limit, if_version=if_version, on_bytes=on_bytes)
        if headers is None:
            return data, None
        info = self._info_from_head(key, headers)
        return data, self.writes.described(info, headers, tag_reader(self, key, self._full_key(key)))

    async def _read_whole(self, key: str, *, limit: int, if_version: str | None,
                          on_bytes: Callable[[int], None] | None) -> tuple[bytes, Mapping[str, str] | None]:
        """One GetObject of bytes 0 to ``limit``, its body read and checked inside the one retried request.

        For the many small objects of a job this skips the stream :meth:`open`
        sets up (a context manager and a generator per layer, an exit stack, a
        Download: ~60 µs of the event loop's time per object here, ~12 % of a
        small download's CPU). The checks are the same: If-Match on
        ``if_version``, the body's length against the answer's, and its SHA-256
        or MD5 against the metadata or ETag (:func:`.download.whole_object_check`).
        """
        full = self._full_key(key)
        fast = await self.fast_client()
        if_match = quote_etag(if_version) if if_version else None

        async def get() -> tuple[bytes, Any] | None:
            try:
                async with fast.get_object(full, first=0, last=limit, if_match=if_match) as response:
                    try:
                        first, stop, total = span(response.headers)
                    except ValueError as exc:
                        raise BackendError(f"GetObject: {exc}", backend=self.describe(), key=key) from None
                    if total > limit:
                        raise SourceChanged(f"listed as small, now {total} bytes", backend=self.describe(), key=key)
                    data = await response.read()
                    if first != 0 or len(data) != stop:
                        raise TransientError(f"GetObject: {len(data)} bytes of {stop}",
                                             backend=self.describe(), key=key)
                    return data, response.headers
            except S3HTTPError as exc:
                if exc.code != "InvalidRange":
                    raise
                return None  # 416: the object is empty

        answer = await self.call("GetObject", key, get, retry=True)
        if answer is None:
            await self._check_version(key, if_version)
            return b"", None
        data, headers = answer
        if on_bytes is not None:
            on_bytes(len(data))
        check = whole_object_check(headers)
        if check is not None:
            running, expected = check
            await off_loop(lambda: running.update(data), len(data))
            check_digest(running, expected, self.describe, key)
        return data, headers

    async def _check_version(self, key: str, if_version: str | None) -> None:
        info = await self.stat(key)
        if if_version is not None and info.version != if_version.strip('"'):
            raise SourceChanged("object changed since it was listed", backend=self.describe(), key=key)

    async def _get_first(self, fast: FastS3, stack: AsyncExitStack, key: str, full: str, first: int,
                         last: int, if_version: str | None) -> Any:
        """The first answer, kept open in ``stack``; None when the object ends before ``first``."""
        if_match = quote_etag(if_version) if if_version else None

        async def get() -> Any:
            try:
                return await stack.enter_async_context(
                    fast.get_object(full, first=first, last=last, if_match=if_match))
            except S3HTTPError as exc:
                if exc.code != "InvalidRange":
                    raise
                return None

        response = await self.call("GetObject", key, get, retry=True)
        if response is None:  # 416: the object is empty or shorter than the offset
            await self._check_version(key, if_version)
        return response

    @asynccontextmanager
    async def _get_rest(self, fast: FastS3, key: str, full: str, first: int, last: int, *,
                        pin: str | None) -> AsyncIterator[Callable[[int], Awaitable[bytes]]]:
        """A GET of bytes ``first``-``last`` pinned to ``pin``; yields a reader of its body's pieces."""
        if_match = quote_etag(pin) if pin else None
        async with AsyncExitStack() as stack:
            async def get() -> Any:
                response = await stack.enter_async_context(
                    fast.get_object(full, first=first, last=last, if_match=if_match))
                check_range(response, first, last)
                return response

            response = await self.call("GetObject", key, get, retry=True)
            yield self._body_reader(response, key)

    def _body_reader(self, response: Any, key: str) -> Callable[[int], Awaitable[bytes]]:
        """Reads the next piece of a GetObject answer's body, its errors translated."""
        async def read(n: int) -> bytes:
            with self._errors("GetObject", key):
                return await read_piece(response.content, n)

        return read

    async def _get_range(self, fast: FastS3, key: str, full: str, first: int, last: int, *,
                         pin: str | None) -> list[bytes]:
        if_match = quote_etag(pin) if pin else None
        return await self.call("GetObject", key, lambda: fast.get_range(full, first, last, if_match),
                                retry=True)

    # -- put -----------------------------------------------------------------------

    async def put(self, info: ObjectInfo, body: BodyFactory, *, checkpoint: UploadCheckpoint | None = None,
                  pace: Pace | None = None) -> ObjectInfo:
        """PutObject up to ``multipart_threshold``, multipart above (resumed from ``checkpoint``, see :mod:`.upload`).

        ``pace`` is told the body's bytes as they are read, but for the parts a
        resumed upload already has (read to be hashed, never sent).
        """
        if info.size is not None and info.size > MAX_OBJECT_SIZE:
            raise ObjectTooLarge(f"{info.size} bytes is over S3's 5 TiB limit",
                                 backend=self.describe(), key=info.key)
        full = self._full_key(info.key)
        info = await self.writes.with_tags(info)  # before the first byte: the request that creates it sends them
        try:
            return await self._put(info, full, body, checkpoint, pace)
        except SourceDiffers as exc:
            # the upload the checkpoint saved is aborted and the checkpoint cleared: start afresh
            log.info("s3.resume_discarded", backend=self.describe(), key=info.key, reason=str(exc))
            return await self._put(info, full, body, checkpoint, pace)

    async def _put(self, info: ObjectInfo, full: str, body: BodyFactory,
                   checkpoint: UploadCheckpoint | None, pace: Pace | None) -> ObjectInfo:
        state = await checkpoint.load() if checkpoint is not None else None
        it = body()
        try:
            reader = BodyReader(it, info.size, self._fail(SourceChanged, info.key), pace)
            reader.resuming(state)
            head, ended = await reader.read_head(self._threshold)
            if ended:
                reader.check_end()
                return await self._put_single(info, full, b"".join(head))
            return await self._uploads.put(info, full, reader, head, checkpoint, state)
        finally:
            await close_iterator(it)

    async def _put_single(self, info: ObjectInfo, full: str, data: bytes) -> ObjectInfo:
        key = info.key
        md5, sha, checksum = await off_loop(lambda: (*md5_sha256(data), self.checksums.header(data)), len(data))
        sha_hex = sha.hex()
        self.check_expected_sha(info, sha_hex)
        fast = await self.fast_client()
        described, metadata = self.description(info)
        meta = user_metadata(metadata, **{SHA256: sha_hex})
        # the server checks Content-MD5 (and the full-object checksum, where it keeps one) before
        # storing; the ETag and the checksum it answers are compared too, for servers that do not
        headers = await self.call("PutObject", key, lambda: self.writes.guarded(self.checksums.send(
            checksum, lambda sent: fast.put_object(full, data, sha_hex, b64(md5), meta, described, sent),
            backend=self.describe()), backend=self.describe(), key=key), retry=True)
        etag = strip_etag(headers.get("ETag"))
        problem = checksums.echo_problem(checksum, headers)
        if problem is None and etag_is_content_md5(etag, headers) and etag != md5.hex():
            problem = f"server reports MD5 {etag}, sent {md5.hex()}"
        if problem is not None:
            await self.delete_corrupt(key, full)
            raise IntegrityError(problem, backend=self.describe(), key=key)
        hashes = {SHA256: sha_hex, **md5_hashes(etag), **checksums.hashes_of(checksum)}
        return ObjectInfo(key=key, size=len(data), etag=etag, version=etag, hashes=hashes)

    def description(self, info: ObjectInfo) -> tuple[dict[str, str], dict[str, str]]:
        """(headers, user metadata but the SHA-256) to store ``info`` with (:meth:`.writing.WriteSettings.headers`:
        its description, tags, and the storage class, encryption and ACL asked for)."""
        return self.writes.headers(info, self.describe())

    def check_expected_sha(self, info: ObjectInfo, actual: str) -> None:
        """Raise IntegrityError when ``info`` names a SHA-256 and the bytes stored have another."""
        expected = info.hashes.get(SHA256)
        if expected is not None and expected.lower() != actual:
            raise IntegrityError(f"content SHA-256 {actual} differs from the expected {expected}",
                                 backend=self.describe(), key=info.key)

    def part_size_for(self, size: int | None) -> int:
        """``part_size``, grown (in whole MiB) when a known size would need more than 10,000 parts."""
        if size is None:
            return self._part_size
        needed = -(-size // MAX_PARTS)
        return max(self._part_size, -(-needed // MiB) * MiB)

    async def delete_corrupt(self, key: str, full: str) -> None:
        """Delete an object the server stored other than sent, shielded and time-boxed."""
        client = await self.client()
        with anyio.CancelScope(shield=True), anyio.move_on_after(ABORT_TIMEOUT):
            await self.call("DeleteObject", key, lambda: client.delete_object(Bucket=self.bucket, Key=full))

    # -- delete / copy ---------------------------------------------------------------

    async def delete(self, key: str) -> None:
        full = self._full_key(key)
        client = await self.client()
        try:
            await self.call("DeleteObject", key, lambda: client.delete_object(Bucket=self.bucket, Key=full))
        except NotFound:
            # S3 answers 204 for an absent key; some servers say NoSuchKey.
            # A missing bucket is still an error.
            if not await self._bucket_exists(client):
                raise

    async def _bucket_exists(self, client: Any) -> bool:
        try:
            await self.call("HeadBucket", None, lambda: client.head_bucket(Bucket=self.bucket))
        except NotFound:
            return False
        return True

    async def server_copy(self, source: Backend, src: ObjectInfo, dst_key: str) -> ObjectInfo:
        """CopyObject (UploadPartCopy above 5 GiB) from any bucket of the same store.

        The copy keeps everything the source has (Content-Type, headers, user
        metadata: directive COPY). With ``metadata_set`` or ``metadata`` off
        it is given them anew (directive REPLACE) from a HeadObject of the
        source, as a put would give them. When ``src.version`` is set the copy
        fails with SourceChanged if the source is no longer that version.
        """
        if not isinstance(source, S3Backend) or not self.same_store(source):
            raise NotImplementedError(f"{self.describe()} cannot copy from {source.describe()}")
        dst_full = self._full_key(dst_key)
        src_full = source._full_key(src.key)
        client = await self.client()
        copy_source = {"Bucket": source.bucket, "Key": src_full}
        size = src.size if src.size is not None else (await source.stat(src.key)).size
        if size is not None and size > self.single_copy_limit:
            await self._copy_multipart(client, source, src, copy_source, dst_key, dst_full)
        else:
            # the storage class, encryption and ACL asked for; without them the store decides (SeaweedFS
            # keeps the source's class, AWS gives STANDARD and the bucket's default encryption)
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": dst_full, "CopySource": copy_source,
                                      "MetadataDirective": "COPY",
                                      **boto_description(self.writes.target_headers())}
            if self.writes.replaces_description(src.key) or self.writes.replaces_tags:
                head = await source.stat(src.key)
                if self.writes.replaces_description(src.key):
                    described, metadata = self._described_copy(head, tags=False)
                    kwargs.update(MetadataDirective="REPLACE", Metadata=metadata, **boto_description(described))
                if self.writes.replaces_tags:  # else TaggingDirective COPY: the server keeps the source's
                    head = await self.writes.with_tags(head)
                    kwargs.update(Tagging=urlencode(self.writes.tags_to_write(head, self.describe()),
                                                    quote_via=quote), TaggingDirective="REPLACE")
            if src.version:
                kwargs["CopySourceIfMatch"] = quote_etag(src.version)
            await self.call("CopyObject", dst_key, lambda: self.writes.guarded(
                client.copy_object(**kwargs), backend=self.describe(), key=dst_key))
        copied = await self.stat(dst_key)
        if SHA256 not in copied.hashes and SHA256 in src.hashes:
            copied = replace(copied, hashes={**copied.hashes, SHA256: src.hashes[SHA256]})
        return copied

    async def set_description(self, key: str, info: ObjectInfo, *, if_version: str | None = None) -> bool:
        """A CopyObject of ``key`` onto itself, directive REPLACE, with ``info``'s description (Backend's contract).

        After a HeadObject (the object's own metadata stays, and its storage
        class and encryption are given again: a copy would take the bucket's
        defaults); the copy is pinned to the version it saw. Over
        ``single_copy_limit`` (5 GiB, one CopyObject's most) nothing is done: False.
        """
        full = self._full_key(key)
        fast = await self.fast_client()
        answer = await self.call("HeadObject", key, lambda: fast.head_object(full), retry=True)
        head = self._info_from_head(key, answer)
        if if_version is not None and head.version != if_version.strip('"'):
            raise SourceChanged("object changed since it was compared", backend=self.describe(), key=key)
        if head.size is not None and head.size > self.single_copy_limit:
            return False
        wanted, own = described_metadata(info, head.metadata)
        described, _ = description_to_send(replace(info, metadata={}, mtime=None), keep=True, overrides={})
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full, "MetadataDirective": "REPLACE",
                                  "CopySource": {"Bucket": self.bucket, "Key": full},
                                  "Metadata": user_metadata(wanted, **own), **boto_description(described)}
        for name, header in (("StorageClass", "x-amz-storage-class"),
                             ("ServerSideEncryption", "x-amz-server-side-encryption"),
                             ("SSEKMSKeyId", "x-amz-server-side-encryption-aws-kms-key-id")):
            if answer.get(header):
                kwargs[name] = answer[header]
        if head.version:
            kwargs["CopySourceIfMatch"] = quote_etag(head.version)
        client = await self.client()
        await self.call("CopyObject", key, lambda: client.copy_object(**kwargs))
        return True

    # -- incomplete uploads, prefixes (:mod:`.uploads_cleanup`, :mod:`.prefixes`) -----------

    def list_incomplete_uploads(self, prefix: str = "") -> AsyncIterator[IncompleteUpload]:
        return uploads_cleanup.list_incomplete_uploads(self, prefix)

    async def abort_incomplete_upload(self, upload: IncompleteUpload) -> None:
        await uploads_cleanup.abort_incomplete_upload(self, upload)

    def list_prefixes(self, path: str) -> AsyncIterator[str]:
        return prefixes.list_prefixes(self, path)

    # -- batched deletes, the bucket (:mod:`.deletes`, :mod:`.buckets`) ------------------

    async def delete_many(self, keys: Sequence[str]) -> dict[str, BackendError]:
        return await deletes.delete_many(self, keys)

    async def make_bucket(self) -> bool:
        return await buckets.make_bucket(self)

    async def remove_bucket(self) -> bool:
        return await buckets.remove_bucket(self)

    async def _copy_multipart(self, client: Any, source: S3Backend, src: ObjectInfo,
                              copy_source: dict[str, str], dst_key: str, dst_full: str) -> None:
        head = await source.stat(src.key)
        if src.version and head.version != src.version.strip('"'):
            raise SourceChanged("source changed before the copy", backend=source.describe(), key=src.key)
        assert head.size is not None
        part_size = max(self.copy_part_size, self.part_size_for(head.size))
        # the metadata and tags are given again: a multipart upload does not copy them
        described, metadata = self._described_copy(await self.writes.with_tags(head), tags=True)
        upload = await self._uploads.create(dst_key, dst_full, sha256=head.hashes.get(SHA256),
                                            metadata=metadata, described=described, part_size=part_size,
                                            checksums=False)
        try:
            await self._copy_parts(client, dst_key, dst_full, upload, copy_source, head)
            await self._uploads.complete(dst_key, dst_full, upload)
        except BaseException:
            await self._uploads.abort(dst_key, dst_full, upload.upload_id)
            raise

    def _described_copy(self, head: ObjectInfo, *, tags: bool) -> tuple[dict[str, str], dict[str, str]]:
        """What a server-side copy of the object ``head`` is stored with: as a put of it would be
        (its tags only with ``tags``, read by then).

        With ``metadata`` off only vertexflow's own metadata stays (digests,
        codec). Its ``mtime`` metadata, if any, is copied as it is; no other
        time is made one (LastModified is the source's upload time).
        """
        return self.writes.headers(replace(head, mtime=None), self.describe(), tags=tags)

    async def _copy_parts(self, client: Any, key: str, full: str, upload: Upload,
                          copy_source: dict[str, str], head: ObjectInfo) -> None:
        assert head.size is not None and head.version is not None
        in_flight = anyio.Semaphore(self.upload_concurrency)

        async def copy_part(number: int, first: int, last: int) -> None:
            async with in_flight:
                response = await self.call("UploadPartCopy", key, lambda: client.upload_part_copy(
                    Bucket=self.bucket, Key=full, UploadId=upload.upload_id, PartNumber=number,
                    CopySource=copy_source, CopySourceRange=f"bytes={first}-{last}",
                    CopySourceIfMatch=quote_etag(head.version)))
            result = response["CopyPartResult"]
            part = {"PartNumber": number, "ETag": result["ETag"]}
            if result.get("ChecksumSHA256"):
                part["ChecksumSHA256"] = result["ChecksumSHA256"]
            upload.parts[number] = part

        with first_error():
            async with anyio.create_task_group() as tg:
                for number, first in enumerate(range(0, head.size, upload.part_size), start=1):
                    tg.start_soon(copy_part, number, first, min(head.size, first + upload.part_size) - 1)
