"""Value types shared by backends, the pipeline and the jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

#: A body that can be replayed: each call returns a fresh iterator that starts
#: again at byte 0, so a retry can send the same bytes again.
BodyFactory = Callable[[], AsyncIterator[bytes]]

SHA256 = "sha256"
MD5 = "md5"


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectInfo:
    """What a backend knows about one object.

    ``key`` is "/"-separated and relative to the backend's root; it never
    starts with "/" and never contains "." or ".." segments.
    ``hashes`` maps an algorithm name (``"sha256"``, ``"md5"``) to lower-case
    hex, holding only hashes the backend knows without reading the content.
    ``version`` is an opaque token that changes when the content changes
    (an ETag, a revision, or ``mtime_ns:size`` on local disk); the engine uses
    it to detect a source that changes while it is copied.
    """

    key: str
    size: int | None
    mtime: datetime | None = None
    hashes: Mapping[str, str] = field(default_factory=dict)
    etag: str | None = None
    version: str | None = None
    #: user metadata kept with the object where the backend stores free-form
    #: metadata (S3 ``x-amz-meta-*``); names are lower-case ASCII tokens
    #: (``codec``, ``content-md5``...). ``put`` reads it when it sends the
    #: object, so a mapping that fills while the body streams (the digests a
    #: hash stage takes) is complete for an object sent in one request.
    metadata: Mapping[str, str] = field(default_factory=dict)

    def with_key(self, key: str) -> ObjectInfo:
        return replace(self, key=key)


@dataclass(frozen=True, slots=True, kw_only=True)
class Features:
    """Optional abilities of a backend, asked for instead of probing methods.

    server_side_copy: ``server_copy`` copies from another location of the same
        store (``same_store``) without the bytes passing through vertexflow.
    native_hashes: hashes the backend reports in listings/stat without reading
        the content (for example ``("md5",)`` for Yandex.Disk, ``("sha256",)``
        for S3 objects written by vertexflow).
    local_path: objects are files on this machine, and ``local_path(key)``
        gives the path; the engine then takes its zero-copy/one-hop fast paths.
    max_object_size: the largest object ``put`` accepts, if limited.
    preserves_mtime: ``put`` stores ``info.mtime`` and reports it back.
    sorted_listing: ``list`` yields keys in ascending code-point order.
    resumable_uploads: ``put`` accepts a ``checkpoint`` and continues a large
        upload that an earlier, interrupted run started.
    stat_hashes: hashes ``stat`` may report that listings do not (S3: the
        SHA-256 vertexflow keeps as metadata, which only a HeadObject shows).
    """

    server_side_copy: bool = False
    native_hashes: tuple[str, ...] = ()
    local_path: bool = False
    max_object_size: int | None = None
    preserves_mtime: bool = False
    sorted_listing: bool = False
    resumable_uploads: bool = False
    stat_hashes: tuple[str, ...] = ()


def body_from_bytes(data: bytes) -> BodyFactory:
    """A replayable body over bytes already in memory."""

    async def body() -> AsyncIterator[bytes]:
        yield data

    return body


async def read_all(body: AsyncIterator[bytes]) -> bytes:
    """Join an async byte stream (for small objects and tests)."""
    parts = [chunk async for chunk in body]
    return b"".join(parts)
