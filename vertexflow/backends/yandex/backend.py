"""Yandex.Disk as a vertexflow backend, over the REST API.

A backend is a folder of one account (``yadisk:/photos``); keys are paths
below it. How each operation maps onto the service:

* ``list``: ``GET /resources`` per folder, in pages of 1000 (pages of one
  folder and a few folders at a time fetched together), each folder sorted
  here, so keys come in code-point order (``listing.py``).
* ``put``: parent folders are created one level at a time (there is no
  ``mkdir -p``; a ``409 DiskPathPointsToExistentDirectoryError`` from a
  racing creator counts as success) and remembered in an LRU with a TTL;
  then ``GET /resources/upload`` for a link and one streamed, chunked PUT
  of the body to it, hashed on the way. A 202 (or a slow server) is
  followed up on the upload's operation. The service only creates the file after a complete
  PUT, and a wrong size or expected hash aborts the PUT before its last
  chunk, so a failed put leaves nothing. The server's SHA-256 comes from
  the answer of the ``PATCH`` that sets the file's properties (a stat when
  there are none) and is compared with ours. Every attempt asks for a fresh
  link (a link is good for one PUT); the engine retries whole puts.
* ``open``: a stat (for the version and the size) whose ``file`` field is
  the download link (``GET /resources/download`` only when it has none),
  then a streamed GET with Range.
* ``delete``: the file alone (never a folder), permanently unless
  ``trash=True``; ``server_copy``: ``POST /resources/copy``.

Idempotent single requests (pages, stats, links, mkdir, delete) are retried
here with :func:`~vertexflow.retry.retry_call`, honouring Retry-After;
429, 423 and 5xx answers and connection errors are retryable, 401/403,
404, 409, 413 and 507 are not (see ``client.ERRORS``).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing, asynccontextmanager, suppress
from dataclasses import replace
from typing import Any, TypeVar

import aiohttp
import anyio

from ...errors import (
    BackendError,
    ConfigError,
    Conflict,
    ConnectionFailed,
    IntegrityError,
    InvalidKey,
    NotFound,
    ObjectTooLarge,
    SourceChanged,
    TransientError,
)
from ...logs import get_logger
from ...model import (
    MD5,
    MTIME_METADATA,
    SHA256,
    STANDARD_HEADERS,
    BodyFactory,
    Features,
    ObjectInfo,
    Pace,
    mtime_text,
    own_metadata,
    parse_mtime_text,
)
from ...retry import RetryPolicy, retry_call
from ..base import Backend, UploadCheckpoint, check_key, described_metadata
from . import api
from .client import YandexDiskClient, connection_error, poll_operation
from .dircache import DirCache
from .listing import sort_entries, walk

log = get_logger(__name__)
T = TypeVar("T")

KiB = 1024
MiB = 1024 * KiB

DEFAULT_BASE_URL = "https://cloud-api.yandex.net/v1/disk"
#: Items per listing page (the most rclone asks for; the service's default is 20).
LIST_PAGE = 1000
#: Folders listed at once / held listed ahead of the walk.
LIST_LOOKAHEAD = 8
#: Pages of one large folder fetched at once.
PAGE_CONCURRENCY = 4
#: Connections per host: the engine's 16 default transfers and the folders the listing reads
#: ahead (LIST_LOOKAHEAD) at once, so the engine, not the pool, bounds the requests in flight;
#: twice that in all, for the API host and the links' host.
POOL_PER_HOST = 32
#: Chunks smaller than this are hashed on the event loop (a thread hop costs more).
INLINE_HASH = 256 * KiB
#: Idempotent single requests: 5 tries over ~10 s rides out 429 bursts and restarts.
REQUEST_RETRY = RetryPolicy(attempts=5, base_delay=0.2, max_delay=10.0, deadline=120.0)
#: Asynchronous operations (a 202 upload, a copy) are polled at most this often and long.
OPERATION_POLLS = 1000
OPERATION_DEADLINE = 600.0
#: Seconds a shielded clean-up (deleting a bad upload) may take.
CLEANUP_TIMEOUT = 30.0

_ITEM_FIELDS = ("name", "type", "size", "md5", "sha256", "modified", "mime_type", "revision", "custom_properties")
STAT_FIELDS = ",".join(_ITEM_FIELDS)
#: a stat that also brings the file's download link
OPEN_FIELDS = STAT_FIELDS + ",file"
LIST_FIELDS = ",".join(["type", "_embedded.total", "_embedded.limit", "_embedded.offset"]
                       + [f"_embedded.items.{f}" for f in _ITEM_FIELDS])

# Environment variable -> (constructor argument, parser, description of a valid value).
_ENV: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "YANDEX_REQUEST_TIMEOUT": ("request_timeout", float, "seconds > 0"),
    "YANDEX_CHUNK_SIZE_MB": ("chunk_size", lambda v: int(float(v) * MiB), "megabytes > 0"),
    "YANDEX_UPLOAD_CONCURRENCY": ("upload_concurrency", int, "an integer >= 1"),
    "YANDEX_DIRECTORY_CACHE_TTL": ("dir_cache_ttl", float, "seconds >= 0"),
    "YANDEX_DIRECTORY_CACHE_SIZE": ("dir_cache_size", int, "an integer >= 0"),
    "YANDEX_SESSION_POOL_CONNECTIONS": ("pool_connections", int, "an integer >= 1"),
    "YANDEX_SESSION_POOL_MAXSIZE": ("pool_maxsize", int, "an integer >= 1"),
}
# Each setting's lowest value, and whether that value itself is allowed.
_MINIMUM: dict[str, tuple[float, bool]] = {
    "request_timeout": (0, False), "connect_timeout": (0, False), "chunk_size": (0, False),
    "upload_concurrency": (1, True),
    "dir_cache_ttl": (0, True), "dir_cache_size": (0, True), "pool_connections": (1, True),
    "pool_maxsize": (1, True),
}


def _check_setting(name: str, value: float, source: str) -> None:
    low, inclusive = _MINIMUM[name]
    if value < low or (value == low and not inclusive):
        raise ConfigError(f"{source}: {name} must be {'>=' if inclusive else '>'} {low:g}, got {value!r}")


def _root_parts(root: str) -> tuple[str, ...]:
    path = root[len("disk:"):] if root.startswith("disk:") else root
    parts = tuple(p for p in path.split("/") if p)
    if any(p in (".", "..") for p in parts):
        raise ConfigError(f"Yandex.Disk root {root!r} has a '.' or '..' segment")
    return parts


def _version(r: api.Resource) -> str | None:
    # changes whenever the content does; the revision when the server has no hash yet
    if r.sha256:
        return r.sha256
    return f"rev:{r.revision}" if r.revision is not None else None


class YandexDiskBackend(Backend):
    """Objects are the files below ``root`` on one Yandex.Disk account.

    ``token``: the OAuth token (never shown in messages or logs).
    ``base_url``: the API base, the emulator's for tests and rehearsals.
    ``request_timeout`` (30 s): connect and per-read timeout of API calls;
    uploads get minutes more per GiB, since the service answers only after
    hashing. ``chunk_size`` (10 MiB): read size of downloads.
    ``upload_concurrency`` (3): uploads in flight at once; the service
    throttles accounts that push harder. ``dir_cache_ttl``/``dir_cache_size``
    (300 s / 1000): the folder-exists cache. ``pool_connections`` (32): open
    connections per host, a request beyond them waits for one; ``pool_maxsize``
    (64): in all. ``trash``: delete
    into the trash instead of permanently. ``retry_policy``: for the
    idempotent single requests (default :data:`REQUEST_RETRY`).

    What describes a file (``docs/fidelity.md``): its ``mime_type`` is read
    as the Content-Type (the service sets it from the name and content; it
    cannot be given); user metadata is kept as custom properties, the source
    mtime among them as ``mtime`` (rclone keeps ``rclone_modified``), read
    back as the mtime (else ``modified``, the upload time). Setting them is
    one ``PATCH`` after the upload; ``set_description`` changes them in
    place (``verify --fix --metadata``). ``metadata`` False (``--no-metadata``)
    carries only vertexflow's own properties and no mtime; ``metadata_set``
    adds properties to every file written (header names other than user
    metadata are ignored: the service has no place for them).
    """

    scheme = "yadisk"
    features = Features(server_side_copy=True, native_hashes=(MD5, SHA256), sorted_listing=True,
                        public_links=True, folders=True, object_metadata=True,
                        description_in_place=("metadata", "mtime"), folder_removal=True,
                        timeouts=("request_timeout", "connect_timeout"))

    def __init__(self, root: str = "/", *, token: str, base_url: str = DEFAULT_BASE_URL,
                 request_timeout: float = 30.0, chunk_size: int = 10 * MiB, upload_concurrency: int = 3,
                 dir_cache_ttl: float = 300.0, dir_cache_size: int = 1000,
                 pool_connections: int = POOL_PER_HOST, pool_maxsize: int = 2 * POOL_PER_HOST,
                 name: str | None = None, trash: bool = False,
                 retry_policy: RetryPolicy | None = None, metadata: bool = True,
                 metadata_set: Mapping[str, str] | None = None, connect_timeout: float | None = None) -> None:
        if not token:
            raise ConfigError("no Yandex.Disk OAuth token: set YANDEX_DISK_TOKEN or the remote's token")
        for setting, value in (("request_timeout", request_timeout), ("chunk_size", chunk_size),
                               ("upload_concurrency", upload_concurrency), ("dir_cache_ttl", dir_cache_ttl),
                               ("dir_cache_size", dir_cache_size), ("pool_connections", pool_connections),
                               ("pool_maxsize", pool_maxsize)):
            _check_setting(setting, value, "Yandex.Disk backend")
        if connect_timeout is not None:  # None: request_timeout for both, the remote's one setting
            _check_setting("connect_timeout", connect_timeout, "Yandex.Disk backend")
        self._root = _root_parts(root)
        self._name = name
        self.chunk_size = chunk_size
        self.upload_concurrency = upload_concurrency
        self.trash = trash
        self._metadata = metadata
        self._metadata_set = {k: v for k, v in (metadata_set or {}).items()
                              if k != "content-type" and k not in STANDARD_HEADERS}
        self._retry_policy = retry_policy or REQUEST_RETRY
        self._client = YandexDiskClient(base_url, token, backend=self.describe(),
                                        request_timeout=request_timeout, connect_timeout=connect_timeout,
                                        pool_connections=pool_connections, pool_maxsize=pool_maxsize)
        self._dirs = DirCache(dir_cache_size, dir_cache_ttl)
        self._mkdirs: dict[str, anyio.Event] = {}
        self._upload_slots: anyio.Semaphore | None = None
        self._disk: api.Disk | None = None
        #: idempotent requests retried so far (each retry of each request)
        self.retries = 0

    @classmethod
    def settings_from_env(cls, environ: Mapping[str, str]) -> dict[str, Any]:
        """Constructor arguments from the ``YANDEX_*`` variables that are set.

        Raises :class:`~vertexflow.errors.ConfigError` naming the variable
        for a value that is not a number or out of range.
        """
        out: dict[str, Any] = {}
        for var, (arg, parse, valid) in _ENV.items():
            raw = environ.get(var)
            if raw is None or raw.strip() == "":
                continue
            try:
                value = parse(raw.strip())
                _check_setting(arg, value, var)
            except (ValueError, ConfigError):
                raise ConfigError(f"{var}={raw!r} is not valid: expected {valid}") from None
            out[arg] = value
        return out

    # -- naming ---------------------------------------------------------------
    def describe(self) -> str:
        where = "/" + "/".join(self._root)
        return f"{self._name}:{where}" if self._name else f"yadisk:{where}"

    @property
    def requests(self) -> int:  # type: ignore[override]
        return self._client.requests

    @property
    def base_url(self) -> str:
        return self._client.base_url

    def _path(self, key: str = "") -> str:
        parts = self._root + (tuple(key.split("/")) if key else ())
        return "disk:/" + "/".join(parts)

    def same_store(self, other: Backend) -> bool:
        return isinstance(other, YandexDiskBackend) and self._client.same_account(other._client)

    # -- plumbing -------------------------------------------------------------
    def _on_retry(self, exc: BaseException, attempt: int, delay: float) -> None:
        self.retries += 1
        log.info("yandex request retried", backend=self.describe(), key=getattr(exc, "key", None),
                 reason=getattr(exc, "reason", type(exc).__name__), attempt=attempt, delay=round(delay, 3))

    async def _retry(self, fn: Callable[[], Awaitable[T]]) -> T:
        return await retry_call(fn, self._retry_policy, on_retry=self._on_retry)

    async def _resource(self, path: str, *, fields: str, key: str | None, what: str,
                        limit: int | None = None, offset: int | None = None) -> api.Resource:
        params = {"path": path, "fields": fields, "limit": limit, "offset": offset}
        _, body = await self._retry(lambda: self._client.call("GET", "/resources", params, what=what, key=key))
        return api.Resource.from_json(body)

    async def _wait(self, operation: str, key: str | None) -> None:
        await poll_operation(self._client, operation, key=key, max_polls=OPERATION_POLLS,
                             deadline=OPERATION_DEADLINE, retry=self._retry)

    async def _disk_info(self) -> api.Disk:
        _, body = await self._retry(lambda: self._client.call("GET", "", what="reading the disk's info"))
        self._disk = api.Disk.from_json(body)
        return self._disk

    def _info(self, key: str, r: api.Resource) -> ObjectInfo:
        hashes = {}
        if r.sha256:
            hashes[SHA256] = r.sha256
        if r.md5:
            hashes[MD5] = r.md5
        props = dict(r.custom_properties or {})
        if not self._metadata:
            props = {k: v for k, v in props.items() if own_metadata(k)}
        mtime = parse_mtime_text(props.get(MTIME_METADATA)) or r.modified
        return ObjectInfo(key=key, size=r.size, mtime=mtime, hashes=hashes, etag=r.md5,
                          version=_version(r), metadata=props,
                          content_type=r.mime_type if self._metadata else None)

    # -- contract ---------------------------------------------------------------
    async def check(self, *, write: bool = False) -> None:
        try:
            disk = await self._disk_info()
        except ConnectionFailed as exc:
            raise ConnectionFailed(f"cannot reach the Yandex.Disk API at {self.base_url} ({exc.message})",
                                   backend=self.describe()) from exc
        if disk.max_file_size:
            self.features = replace(type(self).features, max_object_size=disk.max_file_size)
        if not self._root:
            return
        try:
            root = await self._resource(self._path(), fields="type", key=None, what="checking the root folder",
                                        limit=0)
        except NotFound:
            if not write:
                raise NotFound("no such folder", backend=self.describe()) from None
            await self._ensure_folders(self._root)
            return
        if not root.is_dir and write:
            raise Conflict("the root is a file, not a folder", backend=self.describe())
        if root.is_dir:
            self._dirs.add(self._path())

    async def _list_dir(self, rel: str) -> list[api.Resource] | None:
        """A folder's entries, all pages, sorted; None if it is not a folder (or gone)."""
        path = self._path(rel)
        what = "listing a folder"
        try:
            first = await self._resource(path, fields=LIST_FIELDS, key=rel or None, what=what,
                                         limit=LIST_PAGE, offset=0)
        except NotFound:
            return None
        if not first.is_dir or first.embedded is None:
            return None
        by_name = {r.name: r for r in first.embedded.items}
        total = first.embedded.total or 0
        if total > len(first.embedded.items):
            limiter = anyio.CapacityLimiter(PAGE_CONCURRENCY)

            async def page(offset: int) -> None:
                async with limiter:
                    try:
                        r = await self._resource(path, fields=LIST_FIELDS, key=rel or None, what=what,
                                                 limit=LIST_PAGE, offset=offset)
                    except NotFound:
                        return
                    for item in r.embedded.items if r.embedded else ():
                        by_name.setdefault(item.name, item)  # pages may overlap if the folder changed

            async with anyio.create_task_group() as tg:
                for offset in range(len(first.embedded.items), total, LIST_PAGE):
                    tg.start_soon(page, offset)
        return sort_entries(list(by_name.values()))

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:  # type: ignore[override]
        if "\x00" in prefix or prefix.startswith("/") or ".." in prefix.split("/"):
            raise InvalidKey("invalid listing prefix", backend=self.describe(), key=prefix)
        start = prefix.rpartition("/")[0]
        if start and any(p in ("", ".") for p in start.split("/")):
            return  # "a//b", "./a": no key has such a folder
        first = await self._list_dir(start)
        if first is None:
            if start and await self._root_exists():
                return  # the prefix's folder does not exist: nothing matches
            raise NotFound("no such folder", backend=self.describe())
        async with aclosing(walk(self._list_dir, prefix, first, start, lookahead=LIST_LOOKAHEAD)) as items:
            async for key, resource in items:
                yield self._info(key, resource)

    async def _root_exists(self) -> bool:
        try:
            root = await self._resource(self._path(), fields="type", key=None, what="checking the root folder",
                                        limit=0)
        except NotFound:
            return False
        return root.is_dir

    async def stat(self, key: str) -> ObjectInfo:
        check_key(key, backend=self.describe())
        r = await self._resource(self._path(key), fields=STAT_FIELDS, key=key, what="reading file info", limit=0)
        if r.is_dir:
            raise NotFound("a folder, not a file", backend=self.describe(), key=key)
        return self._info(key, r)

    @asynccontextmanager
    async def open(self, key: str, *, offset: int = 0, length: int | None = None,
                   if_version: str | None = None) -> AsyncIterator[AsyncIterator[bytes]]:
        check_key(key, backend=self.describe())
        # the stat's "file" is the download link: no GET /resources/download unless it is missing
        r = await self._resource(self._path(key), fields=OPEN_FIELDS, key=key, what="reading file info", limit=0)
        if r.is_dir:
            raise NotFound("a folder, not a file", backend=self.describe(), key=key)
        info = self._info(key, r)
        if if_version is not None and info.version != if_version:
            raise SourceChanged("file changed since it was listed", backend=self.describe(), key=key)
        size = info.size or 0
        end = size if length is None else min(size, offset + length)
        if offset >= end:
            it = _empty()
            try:
                yield it
            finally:
                await it.aclose()
            return
        href = r.file
        if href is None:
            _, body = await self._retry(lambda: self._client.call(
                "GET", "/resources/download", {"path": self._path(key), "fields": "href"},
                what="asking for a download link", key=key))
            href = api.Link.from_json(body).href
        ranged = offset > 0 or end < size
        headers = {"Range": f"bytes={offset}-{end - 1}"} if ranged else {}
        async with self._client.get_link(href, headers=headers, key=key) as resp:
            # a server that ignores Range answers 200 with everything: skip to offset here
            skip = offset if resp.status == 200 else 0
            it = self._read_body(resp, key, skip=skip, want=end - offset)
            try:
                yield it
            finally:
                await it.aclose()

    async def _read_body(self, resp: aiohttp.ClientResponse, key: str, *, skip: int,
                         want: int) -> AsyncGenerator[bytes, None]:
        got = 0
        try:
            async for chunk in resp.content.iter_chunked(self.chunk_size):
                if skip:
                    cut = min(skip, len(chunk))
                    chunk, skip = chunk[cut:], skip - cut
                if got + len(chunk) > want:
                    chunk = chunk[:want - got]
                if chunk:
                    got += len(chunk)
                    yield chunk
                if got >= want:
                    return
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise connection_error(exc, str(resp.url), what="downloading", backend=self.describe(),
                                   key=key) from exc
        if got < want:
            raise TransientError(f"download ended after {got} of {want} bytes", backend=self.describe(), key=key)

    async def put(self, info: ObjectInfo, body: BodyFactory, *, checkpoint: UploadCheckpoint | None = None,
                  pace: Pace | None = None) -> ObjectInfo:
        key = check_key(info.key, backend=self.describe())
        limit = self._disk.max_file_size if self._disk is not None else None
        if info.size is not None and limit is not None and info.size > limit:
            raise ObjectTooLarge(f"{info.size} bytes is over the account's file size limit of {limit}",
                                 backend=self.describe(), key=key)
        parent = tuple(key.split("/")[:-1])
        await self._ensure_folders(self._root + parent)
        sent = await self._upload(info, body, parent)
        metadata = self._properties(info)  # read now: digests taken while the body streamed are in
        # the PATCH answers with the stored file as a stat would: one call fewer per file
        stored = await self._set_properties(key, metadata) if metadata else await self.stat(key)
        server_sha = stored.hashes.get(SHA256)
        if server_sha is not None and server_sha != sent.sha256:
            await self._discard(key)
            raise IntegrityError("the server's SHA-256 of the upload differs from the bytes sent",
                                 backend=self.describe(), key=key)
        hashes = {SHA256: sent.sha256, **({MD5: stored.hashes[MD5]} if MD5 in stored.hashes else {})}
        return ObjectInfo(key=key, size=sent.size, mtime=stored.mtime, hashes=hashes, etag=stored.etag,
                          version=stored.version or sent.sha256, metadata=stored.metadata)

    def _properties(self, info: ObjectInfo) -> dict[str, str]:
        """The custom properties to keep with ``info``: its metadata, its mtime, ``metadata_set`` on top.

        With ``metadata`` off only vertexflow's own metadata (digests, codec), and no mtime.
        """
        props = dict(info.metadata) if self._metadata else {k: v for k, v in info.metadata.items()
                                                            if own_metadata(k)}
        if self._metadata and info.mtime is not None and MTIME_METADATA not in props:
            text = mtime_text(info.mtime)
            if text is not None:
                props[MTIME_METADATA] = text
        props.update(self._metadata_set)
        return props

    async def set_description(self, key: str, info: ObjectInfo, *, if_version: str | None = None) -> bool:
        """The file's custom properties become ``info``'s user metadata and mtime (Backend's contract).

        A stat, then one ``PATCH``: the service merges what it is given, so a
        property the file has and ``info`` has not is sent as null (removed).
        The service has no conditional PATCH: ``if_version`` is checked by the stat.
        """
        current = await self.stat(key)
        if if_version is not None and current.version != if_version:
            raise SourceChanged("file changed since it was compared", backend=self.describe(), key=key)
        wanted, _ = described_metadata(info, current.metadata)
        patch: dict[str, str | None] = {k: None for k in current.metadata if not own_metadata(k) and k not in wanted}
        patch.update({k: v for k, v in wanted.items() if current.metadata.get(k) != v})
        if patch:
            await self._set_properties(key, patch)
        return True

    async def _set_properties(self, key: str, metadata: Mapping[str, str | None]) -> ObjectInfo:
        """Keep ``metadata`` as the file's custom properties; the answer is the file's new info.

        A second request after the upload (the upload link takes none): a file
        whose properties failed to be set is still whole, only undescribed.
        """
        _, body = await self._retry(lambda: self._client.call(
            "PATCH", "/resources", {"path": self._path(key), "fields": STAT_FIELDS},
            json_body={"custom_properties": metadata}, what="setting the file's properties", key=key))
        return self._info(key, api.Resource.from_json(body))

    async def _upload(self, info: ObjectInfo, body: BodyFactory, parent: tuple[str, ...]) -> _Sent:
        key = info.key
        path = self._path(key)
        if self._upload_slots is None:
            self._upload_slots = anyio.Semaphore(self.upload_concurrency)
        async with self._upload_slots:
            link = await self._upload_link(path, key, parent)
            sent = _Sent()
            stream = self._stream(info, body, sent)
            try:
                status = await self._client.put_link(link.href, stream, size=info.size, key=key)
            except BaseException as exc:
                if sent.error is not None:
                    raise sent.error from None  # the body's own failure, not the broken connection it caused
                if isinstance(exc, BackendError) and getattr(exc, "status", None) == 409:
                    self._forget_folders(parent)  # e.g. the parent vanished: the next attempt re-creates it
                raise
            finally:
                # aiohttp may still be cancelling its writer, which owns the generator then
                with suppress(RuntimeError):
                    await stream.aclose()
            if status == 202 and link.operation_id:
                await self._wait(link.operation_id, key)
        return sent

    async def _upload_link(self, path: str, key: str, parent: tuple[str, ...]) -> api.UploadLink:
        params = {"path": path, "overwrite": "true"}
        for attempt in (1, 2):
            try:
                _, body = await self._retry(lambda: self._client.call(
                    "GET", "/resources/upload", params, what="asking for an upload link", key=key))
                return api.UploadLink.from_json(body)
            except Conflict as exc:
                name = getattr(exc, "api_error", None)
                if name == api.DIR_EXISTS:
                    raise Conflict("a folder stands where the object should go",
                                   backend=self.describe(), key=key) from exc
                if name != api.PARENT_MISSING or attempt == 2:
                    raise
                # a cached folder was deleted behind our back: forget and create it again
                self._forget_folders(parent)
                await self._ensure_folders(self._root + parent)
        raise AssertionError("unreachable")

    async def _stream(self, info: ObjectInfo, body: BodyFactory, sent: _Sent) -> AsyncGenerator[bytes, None]:
        """The body as sent: counted and hashed; raising (which aborts the PUT) on a wrong size or hash."""
        h = hashlib.sha256()
        size = 0
        try:
            async with aclosing(body()) as chunks:  # type: ignore[type-var]
                async for chunk in chunks:
                    size += len(chunk)
                    if info.size is not None and size > info.size:
                        raise SourceChanged(f"more than the expected {info.size} bytes",
                                            backend=self.describe(), key=info.key)
                    if len(chunk) >= INLINE_HASH:
                        await anyio.to_thread.run_sync(h.update, chunk)
                    else:
                        h.update(chunk)
                    yield chunk
            # checked before the last chunk goes out, so the server never completes a bad upload
            if info.size is not None and size != info.size:
                raise SourceChanged(f"expected {info.size} bytes, got {size}", backend=self.describe(),
                                    key=info.key)
            digest = h.hexdigest()
            expected = info.hashes.get(SHA256)
            if expected is not None and expected != digest:
                raise IntegrityError("SHA-256 of the bytes read differs from the expected one",
                                     backend=self.describe(), key=info.key)
            sent.size, sent.sha256 = size, digest
        except Exception as exc:
            sent.error = exc
            raise

    async def _discard(self, key: str) -> None:
        """Delete a bad upload, even while being cancelled."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT):
            try:
                await self._delete_path(key, permanently=True)
            except BackendError as exc:
                log.warning("could not delete a bad upload", backend=self.describe(), key=key, error=str(exc))

    def _forget_folders(self, parent: tuple[str, ...]) -> None:
        chain = self._root + parent
        if chain:
            self._dirs.forget("disk:/" + chain[0])

    async def _ensure_folders(self, parts: tuple[str, ...]) -> None:
        """Create the folders ``disk:/p1``, ``disk:/p1/p2``... that are not known to exist, top down."""
        if not parts or self._dirs.fresh("disk:/" + "/".join(parts)):
            return
        for attempt in (1, 2):
            try:
                for i in range(1, len(parts) + 1):
                    await self._mkdir("disk:/" + "/".join(parts[:i]))
                return
            except Conflict as exc:
                if getattr(exc, "api_error", None) != api.PARENT_MISSING or attempt == 2:
                    raise
                # a folder we remembered is gone: forget the chain and walk it again
                self._dirs.forget("disk:/" + parts[0])

    async def _mkdir(self, path: str) -> None:
        while not self._dirs.fresh(path):
            pending = self._mkdirs.get(path)
            if pending is not None:  # another task is creating it: wait, then look again
                await pending.wait()
                if self._dirs.size <= 0 or self._dirs.ttl <= 0:
                    return
                continue
            done = self._mkdirs[path] = anyio.Event()
            try:
                await self._create_folder(path)
                self._dirs.add(path)
                return
            finally:
                del self._mkdirs[path]
                done.set()

    async def _create_folder(self, path: str) -> None:
        try:
            await self._retry(lambda: self._client.call("PUT", "/resources", {"path": path},
                                                        what="creating a folder", expect=(201,)))
        except Conflict as exc:
            name = getattr(exc, "api_error", None)
            if name == api.DIR_EXISTS:
                return  # it exists (a racing creator won): what we wanted
            if name == api.ALREADY_EXISTS:
                raise Conflict(f"a file stands where the folder {path!r} should be",
                               backend=self.describe()) from exc
            raise

    async def delete(self, key: str) -> None:
        check_key(key, backend=self.describe())
        try:
            r = await self._resource(self._path(key), fields="type", key=key, what="reading file info", limit=0)
        except NotFound:
            return
        if r.is_dir:
            return  # a folder is not an object: never delete one (and its contents) by key
        await self._delete_path(key, permanently=not self.trash)

    async def remove_folder(self, path: str) -> bool:
        """Remove the folder ``path`` if it is empty (True; also when there is none); False if it holds anything."""
        check_key(path, backend=self.describe())
        entries = await self._list_dir(path)
        if entries is None:
            return True
        if entries:
            return False
        await self._delete_path(path, permanently=not self.trash)
        self._dirs.forget(self._path(path))  # a put below it must create it again
        return True

    async def _delete_path(self, key: str, *, permanently: bool) -> None:
        params = {"path": self._path(key), "permanently": "true" if permanently else "false"}
        try:
            status, body = await self._retry(lambda: self._client.call(
                "DELETE", "/resources", params, what="deleting", key=key, expect=(202, 204)))
        except NotFound:
            return
        if status == 202 and isinstance(body, dict):
            await self._wait(api.Link.from_json(body).href, key)

    async def server_copy(self, source: Backend, src: ObjectInfo, dst_key: str) -> ObjectInfo:
        if not isinstance(source, YandexDiskBackend) or not self.same_store(source):
            raise NotImplementedError(f"{self.describe()} cannot copy from {source.describe()} on the server")
        check_key(dst_key, backend=self.describe())
        parent = tuple(dst_key.split("/")[:-1])
        await self._ensure_folders(self._root + parent)
        params = {"from": source._path(src.key), "path": self._path(dst_key), "overwrite": "true"}
        status, body = await self._retry(lambda: self._client.call(
            "POST", "/resources/copy", params, what="copying on the server", key=dst_key, expect=(201, 202)))
        if status == 202 and isinstance(body, dict):
            await self._wait(api.Link.from_json(body).href, dst_key)
        stored = await self.stat(dst_key)
        if src.version is not None and stored.version is not None and src.version != stored.version:
            await self._discard(dst_key)
            raise SourceChanged("the source changed since it was listed", backend=source.describe(), key=src.key)
        return stored

    async def public_link(self, key: str, *, expires: int = 0) -> str:
        """Publish ``key`` and return its public URL (it does not expire: ``expires`` is not used)."""
        return await self.publish(key)

    async def publish(self, key: str) -> str:
        """Publish ``key`` and return its public URL."""
        check_key(key, backend=self.describe())
        await self._retry(lambda: self._client.call("PUT", "/resources/publish", {"path": self._path(key)},
                                                    what="publishing", key=key))
        r = await self._resource(self._path(key), fields="public_url", key=key, what="reading the public URL")
        if not r.public_url:
            raise TransientError("published, but the server gave no public URL yet", backend=self.describe(),
                                 key=key)
        return r.public_url

    async def make_folder(self, path: str) -> None:
        """Create the folder ``path`` (and its parents) under the root; one that exists is fine."""
        check_key(path, backend=self.describe())
        await self._ensure_folders(self._root + tuple(path.split("/")))

    async def is_folder(self, path: str) -> bool:
        """True when ``path`` under the root is a folder."""
        check_key(path, backend=self.describe())
        try:
            r = await self._resource(self._path(path), fields="type", key=path, what="reading folder info", limit=0)
        except NotFound:
            return False
        return bool(r.is_dir)

    async def list_folders(self, path: str) -> list[str]:
        """The folders inside ``path``: one listing of it (all its pages)."""
        if path:
            check_key(path, backend=self.describe())
        entries = await self._list_dir(path)
        return sorted(r.name for r in entries or () if r.is_dir)

    async def free_space(self) -> int | None:
        return (await self._disk_info()).free_space

    async def aclose(self) -> None:
        await self._client.aclose()


class _Sent:
    """What the upload stream counted, hashed, or failed with."""

    __slots__ = ("size", "sha256", "error")

    def __init__(self) -> None:
        self.size = 0
        self.sha256 = ""
        self.error: Exception | None = None


async def _empty() -> AsyncGenerator[bytes, None]:
    return
    yield b""  # pragma: no cover - makes this an async generator

