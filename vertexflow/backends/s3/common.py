"""Limits, defaults and small helpers shared by the S3 modules."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import anyio

from ...model import MD5, MTIME_METADATA, STANDARD_HEADERS, ObjectInfo, mtime_text, own_metadata

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

#: Below this, hashing on the event loop is cheaper than a thread hop (~100-250 µs).
INLINE_HASH_LIMIT = 256 * KiB
#: Part size for server-side multipart copies: few requests, each well under 5 GiB.
COPY_PART_SIZE = 512 * MiB
#: Seconds a shielded multipart abort may take after an error or cancellation.
ABORT_TIMEOUT = 30.0
#: Seconds check() waits in all before calling the endpoint unreachable.
CHECK_TIMEOUT = 15.0
#: Connect timeout (``--contimeout``'s default): a dead endpoint fails fast and the engine retries,
#: where rclone's minute would hold every object; a TCP handshake to a live store takes milliseconds
CONNECT_TIMEOUT = 5.0
#: Idle timeout per socket read, not per request (``--timeout``'s default): a store hashing a large
#: part before it answers stays well inside a minute, and a dead connection is dropped sooner than
#: by rclone's five
READ_TIMEOUT = 60.0
#: Attempts per request (1 try + 2 retries), as botocore's standard mode: the
#: engine retries whole objects on top.
REQUEST_ATTEMPTS = 3

_PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART_ETAG = re.compile(r"^[0-9a-f]{32}-\d+$")


def strip_etag(etag: str | None) -> str | None:
    return etag.strip('"') if etag else None


def quote_etag(version: str) -> str:
    return version if version.startswith('"') else f'"{version}"'


def md5_hashes(etag: str | None) -> dict[str, str]:
    """{"md5": etag} when the ETag is a plain MD5 of the content (single-part upload)."""
    return {MD5: etag} if etag and _PLAIN_MD5.match(etag) else {}


def goog_without_md5(headers: Mapping[str, Any]) -> bool:
    """Google Cloud Storage says (``x-goog-hash`` naming no ``md5=``) that the object has no MD5: a
    multipart or composite object, whose ETag is not one although it may look like one."""
    goog = headers.get("x-goog-hash")
    return goog is not None and "md5=" not in str(goog)


def etag_is_content_md5(etag: str | None, headers: Mapping[str, Any], *, multipart: bool = False) -> bool:
    """True when ``etag`` should be the MD5 of the bytes sent (``md5-N`` of the part MD5s if ``multipart``).

    ``headers`` are the answer's (lower-case names) or botocore's parsed
    response. With SSE-KMS or SSE-C AWS answers ETags that look like MD5s but
    are not, so only unencrypted or SSE-S3 objects are compared; nor are
    Google Cloud Storage's objects that have no MD5 (:func:`goog_without_md5`).
    """
    if goog_without_md5(headers):
        return False
    sse_c = headers.get("SSECustomerAlgorithm") or headers.get("x-amz-server-side-encryption-customer-algorithm")
    sse = headers.get("ServerSideEncryption") or headers.get("x-amz-server-side-encryption")
    if sse_c or sse == "aws:kms":
        return False
    pattern = _MULTIPART_ETAG if multipart else _PLAIN_MD5
    return bool(etag and pattern.match(etag))


_META_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_META_PREFIX = "x-amz-meta-"
#: S3 keeps at most 2 KiB of user metadata per object (names and values)
_META_LIMIT = 2048


def user_metadata(given: Mapping[str, str], **ours: str) -> dict[str, str]:
    """The ``x-amz-meta-*`` entries to send: ``given`` (an ObjectInfo's metadata) and ours on top.

    Entries S3 could not carry (a name that is not a lower-case token, a value
    that is not printable ASCII) are dropped rather than failing the put, as
    are the given entries past S3's 2 KiB limit; ours always fit.
    """
    out: dict[str, str] = {}
    used = sum(len(k) + len(v) for k, v in ours.items())
    for name, value in dict(given).items():
        if name in ours or not _META_NAME.match(name) or not value.isascii() or not value.isprintable():
            continue
        used += len(name) + len(value)
        if used > _META_LIMIT:
            break
        out[name] = value
    out.update(ours)
    return out


def metadata_of(headers: Mapping[str, str]) -> dict[str, str]:
    """The user metadata in a HEAD or GET answer's headers, names without ``x-amz-meta-``."""
    return {k.lower()[len(_META_PREFIX):]: v for k, v in headers.items() if k.lower().startswith(_META_PREFIX)}


#: the headers that give an object written what the destination keeps besides its description
X_STORAGE_CLASS = "x-amz-storage-class"
X_SSE = "x-amz-server-side-encryption"
X_SSE_KMS_KEY = "x-amz-server-side-encryption-aws-kms-key-id"
X_ACL = "x-amz-acl"
#: the object's tags, as a URL query (``k1=v1&k2=v%202``)
X_TAGGING = "x-amz-tagging"
#: botocore's names of the headers that describe an object (CopyObject with directive REPLACE)
_BOTO_NAMES = {"content-type": "ContentType", "cache-control": "CacheControl",
               "content-disposition": "ContentDisposition", "content-encoding": "ContentEncoding",
               "content-language": "ContentLanguage", "expires": "Expires"}
#: ... and of those that set what the destination keeps besides (CopyObject takes them all)
_BOTO_WRITE_NAMES = {X_STORAGE_CLASS: "StorageClass", X_SSE: "ServerSideEncryption", X_SSE_KMS_KEY: "SSEKMSKeyId",
                     X_ACL: "ACL", X_TAGGING: "Tagging"}


def description_of(headers: Mapping[str, str]) -> tuple[str | None, dict[str, str]]:
    """(Content-Type, the other standard headers) of a HEAD or GET answer (case-insensitive headers)."""
    return headers.get("Content-Type") or None, {n: headers[n] for n in STANDARD_HEADERS if headers.get(n)}


def description_to_send(info: ObjectInfo, *, keep: bool, overrides: Mapping[str, str],
                        exclude: Callable[[str], bool] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """(headers, user metadata) to store ``info`` with: what describes its bytes, and ``overrides`` on top.

    ``keep`` False sends neither the source's Content-Type, headers, user
    metadata nor its mtime: of ``info.metadata`` only vertexflow's own
    entries (digests, codec: :func:`~vertexflow.model.own_metadata`). The source mtime becomes the ``mtime`` user metadata unless the
    metadata already holds one (the source's own, kept as written).
    ``exclude`` names what of the source's is not carried (``--metadata-exclude``:
    header names and user metadata names alike; never vertexflow's own).
    A header value that is not printable ASCII cannot travel in an HTTP
    header and is dropped.
    """
    headers: dict[str, str] = {}
    meta = dict(info.metadata) if keep else {k: v for k, v in info.metadata.items() if own_metadata(k)}
    if keep:
        if info.content_type:
            headers["content-type"] = info.content_type
        headers.update({n: v for n, v in (info.headers or {}).items() if n in STANDARD_HEADERS})
        if info.mtime is not None and MTIME_METADATA not in meta:
            text = mtime_text(info.mtime)
            if text is not None:
                meta[MTIME_METADATA] = text
    if exclude is not None:
        headers = {n: v for n, v in headers.items() if not exclude(n)}
        meta = {n: v for n, v in meta.items() if own_metadata(n) or not exclude(n)}
    for name, value in overrides.items():
        if name in _BOTO_NAMES:
            headers[name] = value
        else:
            meta[name] = value
    return {n: v for n, v in headers.items() if v and v.isascii() and v.isprintable()}, meta


def boto_description(headers: Mapping[str, str]) -> dict[str, Any]:
    """``headers`` (:func:`description_to_send`'s, and the ``x-amz-*`` ones a write gives) as botocore's
    CopyObject arguments; tags given replace the source's (TaggingDirective REPLACE)."""
    out: dict[str, Any] = {}
    for name, value in headers.items():
        if name == "expires":
            try:
                out["Expires"] = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                continue  # not an HTTP date: S3 would not serve it as one either
        elif name in _BOTO_NAMES:
            out[_BOTO_NAMES[name]] = value
        elif name in _BOTO_WRITE_NAMES:
            out[_BOTO_WRITE_NAMES[name]] = value
    if X_TAGGING in headers:
        out["TaggingDirective"] = "REPLACE"
    return out


def utc(when: datetime | None) -> datetime | None:
    # botocore gives listings in local time and HEAD answers in UTC
    return when.astimezone(UTC) if when is not None else None


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def md5_sha256(data: bytes) -> tuple[bytes, bytes]:
    return hashlib.md5(data, usedforsecurity=False).digest(), hashlib.sha256(data).digest()


async def off_loop(fn: Callable[[], Any], size: int) -> Any:
    """Run a hashing call in a worker thread when the data is big (hashlib releases the GIL)."""
    if size >= INLINE_HASH_LIMIT:
        return await anyio.to_thread.run_sync(fn)
    return fn()


@contextmanager
def first_error() -> Iterator[None]:
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


async def close_iterator(it: AsyncIterator[bytes]) -> None:
    if isinstance(it, AsyncGenerator):
        await it.aclose()


async def empty() -> AsyncIterator[bytes]:
    return
    yield  # pragma: no cover - makes this an async generator
