"""The storage contract every backend implements.

A backend is rooted somewhere (a directory, a bucket and prefix, a Yandex.Disk
folder); every key it takes or yields is relative to that root, "/"-separated,
never empty, never starting with "/", never holding "." or ".." segments.
The empty key "" means the root itself and is only valid as a list prefix.

Errors are those of :mod:`vertexflow.errors`; each method says which it uses
for the expected failures. Backends never retry whole operations themselves
except idempotent single requests (a listing page, a stat); the engine owns
the per-object retry loop, which replays bodies through their factory.

Optional abilities are declared in :attr:`Backend.features`; callers ask the
features instead of probing for methods, and a method whose feature is off
raises :class:`NotImplementedError`.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

from ..errors import InvalidKey, SourceChanged
from ..model import BodyFactory, Features, ObjectInfo


class UploadCheckpoint(Protocol):
    """Durable state of one large upload, so that a later run can continue it.

    Given to :meth:`Backend.put` by the engine (backed by the journal) where
    ``features.resumable_uploads``. The backend saves its state (for S3: the
    upload id, part size and completed parts with their checksums) after each
    part, loads it at the start of a put, and clears it when the upload is
    completed or aborted. On resume the body is still replayed from byte 0:
    the backend hashes every byte, checks that the bytes of each recorded
    part still give that part's checksum (so a changed source is caught) and
    sends only the parts that are missing.
    """

    async def load(self) -> Mapping[str, Any] | None: ...

    async def save(self, state: Mapping[str, Any]) -> None: ...

    async def clear(self) -> None: ...


class Backend(abc.ABC):
    """One storage location. Use as ``async with backend: ...`` or call :meth:`aclose`."""

    #: URL scheme or remote type this class serves ("file", "s3", "yadisk").
    scheme: ClassVar[str]
    features: Features = Features()
    #: network requests sent so far (listing pages, HEADs, PUTs...); backends
    #: that talk to a server count them, for summaries and benchmarks
    requests: int = 0
    #: single requests the backend retried by itself (a listing page, a stat)
    retries: int = 0

    @abc.abstractmethod
    def describe(self) -> str:
        """A short human description for messages, e.g. ``s3://media/photos``. Never holds secrets."""

    async def check(self, *, write: bool = False) -> None:
        """Fail fast before a job starts.

        Raises :class:`~vertexflow.errors.NotFound` when the root (bucket,
        directory) does not exist, :class:`~vertexflow.errors.AuthError` for
        rejected credentials, :class:`~vertexflow.errors.ConnectionFailed` for
        an unreachable endpoint. With ``write=True`` it also prepares the root
        for writing (a local directory is created) and raises
        :class:`~vertexflow.errors.ReadOnly` when writes will be refused.
        """

    @abc.abstractmethod
    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Stream every object whose key starts with ``prefix`` (a plain string prefix).

        Recursive; yields objects only (no directory entries); never builds the
        whole listing in memory. With ``features.sorted_listing`` keys come in
        ascending code-point order. A root that does not exist raises
        :class:`~vertexflow.errors.NotFound`; an existing but empty root yields nothing.
        """

    @abc.abstractmethod
    async def stat(self, key: str) -> ObjectInfo:
        """Info for one object. Raises :class:`~vertexflow.errors.NotFound` if absent (a directory is absent)."""

    @abc.abstractmethod
    def open(self, key: str, *, offset: int = 0, length: int | None = None,
             if_version: str | None = None) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Stream an object's bytes from ``offset`` for ``length`` bytes (to the end if None).

        ``if_version`` (an :attr:`ObjectInfo.version` from a listing) makes the
        read fail with :class:`~vertexflow.errors.SourceChanged` if the object
        is no longer that version. Raises :class:`~vertexflow.errors.NotFound`.
        The iterator is closed when the context exits.
        """

    async def read_whole(self, key: str, *, limit: int, if_version: str | None = None,
                         on_bytes: Callable[[int], None] | None = None) -> bytes:
        """All of a small object's bytes in one piece: how the engine reads objects listed as small.

        Raises :class:`~vertexflow.errors.SourceChanged` when the object holds
        more than ``limit`` bytes, and what :meth:`open` raises. ``on_bytes(n)``
        is told of the bytes as they arrive (progress). This default joins what
        :meth:`open` streams (so decorators that change reads, such as a
        bandwidth limit, keep working and progress stays live); a backend for
        which one whole request costs less overrides it with the same checks.
        """
        pieces: list[bytes] = []
        size = 0
        async with self.open(key, if_version=if_version) as chunks:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise SourceChanged(f"listed as small, now more than {limit} bytes",
                                        backend=self.describe(), key=key)
                if on_bytes is not None:
                    on_bytes(len(chunk))
                pieces.append(chunk)
        return b"".join(pieces)

    @abc.abstractmethod
    async def put(self, info: ObjectInfo, body: BodyFactory) -> ObjectInfo:
        """Store a whole object at ``info.key``: all of it or nothing.

        ``body()`` yields the content; it may be called again to start over.
        If ``info.size`` is set and the body yields another number of bytes,
        raises :class:`~vertexflow.errors.SourceChanged`. If
        ``info.hashes["sha256"]`` is set and the stored bytes differ, raises
        :class:`~vertexflow.errors.IntegrityError`. On any error or
        cancellation no partial object is visible and an earlier object at the
        key is left as it was. ``info.mtime`` is kept where
        ``features.preserves_mtime``.

        Returns the stored object's info, with ``hashes["sha256"]`` of the
        bytes actually stored (computed in-stream) where the backend can.
        """

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove an object. Idempotent: deleting an absent key succeeds."""

    async def server_copy(self, source: Backend, src: ObjectInfo, dst_key: str) -> ObjectInfo:
        """Copy ``src`` (an object of ``source``) to ``dst_key`` without the bytes passing through us.

        Only valid when ``features.server_side_copy`` and ``self.same_store(source)``.
        Same guarantees as :meth:`put`: whole object or nothing; the returned
        info carries ``hashes["sha256"]`` where the backend knows it.
        """
        raise NotImplementedError(f"{self.describe()} has no server-side copy")

    async def free_space(self) -> int | None:
        """Bytes that may still be written here, or None if unknown or unlimited."""
        return None

    def local_path(self, key: str) -> Path:
        """The file that holds ``key`` (``features.local_path``)."""
        raise NotImplementedError(f"{self.describe()} is not on local disk")

    def same_store(self, other: Backend) -> bool:
        """True when ``self.server_copy`` can read objects of ``other``.

        For example two S3 locations on the same endpoint and credentials.
        """
        return False

    async def aclose(self) -> None:
        """Release connections and other resources. Idempotent."""

    async def __aenter__(self) -> Backend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def check_key(key: str, *, backend: str | None = None) -> str:
    """Validate a relative key against the contract; returns it unchanged.

    Rejects empty keys, absolute keys, NUL bytes, and empty, "." or ".."
    segments, so no key can escape a backend's root.
    """
    if not key:
        raise InvalidKey("empty key", backend=backend, key=key)
    if "\x00" in key:
        raise InvalidKey("key contains a NUL byte", backend=backend, key=key)
    if key.startswith("/"):
        raise InvalidKey("key is absolute (starts with '/')", backend=backend, key=key)
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise InvalidKey("key has an empty, '.' or '..' segment", backend=backend, key=key)
    return key


def join_key(*parts: str) -> str:
    """Join key fragments with single slashes, dropping empty ones."""
    return "/".join(p.strip("/") for p in parts if p.strip("/"))
