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
features instead of probing for methods or classes, and a method whose
feature is off raises :class:`NotImplementedError`. Each ability that brings
methods is a small protocol below (:class:`LocalFiles`, :class:`DirectFiles`,
:class:`PublicLinks`, :class:`Folders`, :class:`DescriptionInPlace`,
:class:`IncompleteUploads`, :class:`CommonPrefixes`, :class:`FolderRemoval`,
:class:`BatchDeletes`, :class:`Buckets`, server-side
copy, whole reads);
:data:`ABILITIES` maps each feature flag to its methods, and
``tests/backends/test_features.py`` checks, for every backend and every
decorator stack the engine builds, that what is declared is what works.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from ..errors import BackendError, InvalidKey, SourceChanged
from ..model import (
    MTIME_METADATA,
    BodyFactory,
    Features,
    IncompleteUpload,
    ObjectInfo,
    Pace,
    mtime_text,
    own_metadata,
)


#: in an upload's saved state with no ``upload_id`` yet: when its creation was asked (:class:`UploadCheckpoint`)
UPLOAD_CREATING = "creating"
#: seconds of clock difference allowed between this machine and a store when an upload is found by the time
#: it was begun: a store's clock may run this far behind ours
CLOCK_SKEW = 300.0


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

    Before the request that creates the upload, the backend saves a state
    with an empty ``upload_id`` and :data:`UPLOAD_CREATING` (when it was
    asked, seconds since the epoch): a process killed before the answer came
    leaves the upload on the store with no id anywhere, and a later run finds
    it by its key and that time, and aborts it.
    """

    async def load(self) -> Mapping[str, Any] | None: ...

    async def save(self, state: Mapping[str, Any]) -> None: ...

    async def clear(self) -> None: ...


@runtime_checkable
class LocalFiles(Protocol):
    """``features.local_path``: every object is a file on this machine, at a path its key gives."""

    def local_path(self, key: str) -> Path:
        """The file that holds ``key`` (it may not exist yet)."""

    async def file_sha256(self, key: str) -> str:
        """The SHA-256 of the file that holds ``key``, read off the event loop. Raises NotFound."""


@runtime_checkable
class DirectFiles(Protocol):
    """``features.direct_files``: the engine moves bytes between local files itself (zero-copy, batches).

    Only a bare local backend declares it: anything wrapped around a backend
    (a bandwidth limit, stages) stands in the path of the bytes, and these
    methods would bypass it. ``verify`` says whether written bytes are hashed.
    """

    root: Path
    #: take the SHA-256 of every byte written (off for a job that does not verify)
    hash_files: bool

    def run_blocking(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    def copy_from_file(self, src: str, src_info: ObjectInfo, info: ObjectInfo) -> ObjectInfo: ...

    def copy_files(self, src: Any, jobs: list[Any]) -> list[Any]: ...

    def read_file(self, key: str, version: str | None, limit: int | None = None) -> bytes: ...

    def path_of(self, key: str) -> str: ...

    def remove_temp_files(self, directories: set[str], pids: frozenset[int]) -> None: ...


@runtime_checkable
class PublicLinks(Protocol):
    """``features.public_links``: a URL that serves an object without credentials."""

    async def public_link(self, key: str, *, expires: int) -> str:
        """Publish ``key`` (Yandex.Disk) or sign a URL valid ``expires`` seconds (S3)."""


@runtime_checkable
class Folders(Protocol):
    """``features.folders``: the store has real folders (not key prefixes)."""

    async def make_folder(self, path: str) -> None:
        """Create folder ``path`` and its parents; existing is fine."""

    async def is_folder(self, path: str) -> bool: ...

    async def list_folders(self, path: str) -> list[str]:
        """The names of the folders directly inside folder ``path`` (``""``: the root); [] if it is not a folder."""


#: the parts of what describes an object (``docs/fidelity.md``) a store may keep:
#: Content-Type, the standard headers, user metadata, the source mtime
DESCRIPTION_PARTS = ("content-type", "headers", "metadata", "mtime")


@runtime_checkable
class DescriptionInPlace(Protocol):
    """``features.description_in_place``: what describes an object is changed without sending its bytes again.

    The flag names the parts of :data:`DESCRIPTION_PARTS` the store keeps and
    this sets (S3: all of them, by a CopyObject onto itself with directive
    REPLACE; Yandex.Disk: user metadata and the mtime, its custom properties).
    """

    async def set_description(self, key: str, info: ObjectInfo, *, if_version: str | None = None) -> bool:
        """Give ``key`` the description ``info`` carries (see :meth:`Backend.set_description`)."""


@runtime_checkable
class IncompleteUploads(Protocol):
    """``features.incomplete_uploads``: uploads begun and never completed stay (and are billed) until aborted."""

    def list_incomplete_uploads(self, prefix: str = "") -> AsyncIterator[IncompleteUpload]:
        """Every incomplete upload of a key under the root that starts with ``prefix``."""

    async def abort_incomplete_upload(self, upload: IncompleteUpload) -> None:
        """Abort ``upload`` (its parts are freed); one already gone is fine."""


@runtime_checkable
class CommonPrefixes(Protocol):
    """``features.common_prefixes``: a store without folders lists the prefixes directly under one."""

    def list_prefixes(self, path: str) -> AsyncIterator[str]:
        """The names ``n`` for which keys ``path/n/...`` exist (``""``: the root), each once, in key order."""


@runtime_checkable
class FolderRemoval(Protocol):
    """``features.folder_removal``: an empty folder of a store with folders is removed."""

    async def remove_folder(self, path: str) -> bool:
        """Remove folder ``path`` if it holds nothing; False when it holds something. Absent: True."""


@runtime_checkable
class BatchDeletes(Protocol):
    """``features.batch_deletes``: many objects deleted in few requests (S3 DeleteObjects, a thousand a request)."""

    async def delete_many(self, keys: Sequence[str]) -> dict[str, BackendError]:
        """Delete ``keys``; the keys not deleted, each with its error (absent keys count as deleted).

        An error of the whole request (the store unreachable, the credentials refused) raises, and
        NotImplementedError says the store takes no batched deletes: delete one by one instead.
        """


@runtime_checkable
class Buckets(Protocol):
    """``features.buckets``: the store makes and removes the bucket the backend's root is in."""

    async def make_bucket(self) -> bool:
        """Make the bucket: True made, False it exists and is ours (Conflict: another account's name)."""

    async def remove_bucket(self) -> bool:
        """Remove the bucket if it holds nothing: True removed, False not empty (NotFound: no such bucket)."""


#: the feature flags that stand for methods, and those methods (what "implemented" means)
ABILITIES: Mapping[str, tuple[str, ...]] = {
    "server_side_copy": ("server_copy", "same_store"),
    "local_path": ("local_path", "file_sha256"),
    "direct_files": ("copy_from_file", "copy_files", "read_file", "run_blocking", "remove_temp_files"),
    "whole_reads": ("read_whole",),
    "public_links": ("public_link",),
    "folders": ("make_folder", "is_folder", "list_folders"),
    "description_in_place": ("set_description",),
    "incomplete_uploads": ("list_incomplete_uploads", "abort_incomplete_upload"),
    "common_prefixes": ("list_prefixes",),
    "folder_removal": ("remove_folder",),
    "batch_deletes": ("delete_many",),
    "buckets": ("make_bucket", "remove_bucket"),
}


def described_metadata(info: ObjectInfo, current: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """For :meth:`Backend.set_description`: (the user metadata ``info`` describes, the entries that stay).

    The first is ``info.metadata`` but vertexflow's own entries, with
    ``info.mtime`` (if set) as the ``mtime`` entry; the second, the own
    entries (digests, codec) of ``current``, the object's metadata now.
    """
    wanted = {k: v for k, v in info.metadata.items() if not own_metadata(k)}
    text = mtime_text(info.mtime) if info.mtime is not None else None
    if text is not None:
        wanted[MTIME_METADATA] = text
    return wanted, {k: v for k, v in current.items() if own_metadata(k)}


def direct_files(backend: Backend) -> DirectFiles:
    """``backend`` as :class:`DirectFiles`; only where ``backend.features.direct_files``."""
    if not backend.features.direct_files:
        raise NotImplementedError(f"{backend.describe()} does not let the engine move its files directly")
    return backend  # type: ignore[return-value]  # declared: the conformance test checks it is so


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

    async def read_whole_described(self, key: str, *, limit: int, if_version: str | None = None,
                                   on_bytes: Callable[[int], None] | None = None) -> tuple[bytes, ObjectInfo | None]:
        """:meth:`read_whole`, and the object's info where the answer that brought the bytes tells it.

        An S3 GetObject answer carries the Content-Type, headers, user
        metadata and kept mtime, so a small object's description costs no
        HeadObject. None: this backend does not know it that way (ask :meth:`stat`).
        """
        return await self.read_whole(key, limit=limit, if_version=if_version, on_bytes=on_bytes), None

    @abc.abstractmethod
    async def put(self, info: ObjectInfo, body: BodyFactory, *, checkpoint: UploadCheckpoint | None = None,
                  pace: Pace | None = None) -> ObjectInfo:
        """Store a whole object at ``info.key``: all of it or nothing.

        ``checkpoint`` is honoured where ``features.resumable_uploads`` (an
        interrupted large upload continues), ``pace`` where
        ``features.paced_writes`` (see :data:`~vertexflow.model.Pace`);
        elsewhere they are ignored, and a decorator that needs to limit the
        bytes paces the body instead.

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

    async def set_description(self, key: str, info: ObjectInfo, *, if_version: str | None = None) -> bool:
        """Give the object ``key`` the description ``info`` carries, in place of its own, sending no bytes.

        Only where ``features.description_in_place``, and only the parts it
        names: ``info.content_type``, ``info.headers`` (None: none),
        ``info.metadata`` as the whole user metadata (but vertexflow's own
        entries, :func:`~vertexflow.model.own_metadata`: the object keeps its
        own, which describe its stored form) and ``info.mtime`` as the kept
        source mtime (None: the ``mtime`` entry of ``info.metadata``, if any).
        ``if_version``: the version the caller looked at; raises
        :class:`~vertexflow.errors.SourceChanged` when the object is no longer
        it, :class:`~vertexflow.errors.NotFound` when it is gone. False: this
        object cannot be changed in place (S3: over 5 GiB, beyond one
        CopyObject); send it again instead.
        """
        raise NotImplementedError(f"{self.describe()} cannot change what describes an object in place")

    def local_path(self, key: str) -> Path:
        """The file that holds ``key`` (``features.local_path``, :class:`LocalFiles`)."""
        raise NotImplementedError(f"{self.describe()} is not on local disk")

    async def file_sha256(self, key: str) -> str:
        """The SHA-256 of the file that holds ``key`` (``features.local_path``, :class:`LocalFiles`)."""
        raise NotImplementedError(f"{self.describe()} is not on local disk")

    async def public_link(self, key: str, *, expires: int) -> str:
        """A URL that serves ``key`` without credentials (``features.public_links``)."""
        raise NotImplementedError(f"{self.describe()} has no public links")

    async def make_folder(self, path: str) -> None:
        """Create folder ``path`` and its parents (``features.folders``)."""
        raise NotImplementedError(f"{self.describe()} has no folders")

    async def is_folder(self, path: str) -> bool:
        """Whether folder ``path`` exists (``features.folders``)."""
        raise NotImplementedError(f"{self.describe()} has no folders")

    async def list_folders(self, path: str) -> list[str]:
        """The folders directly inside folder ``path`` (``features.folders``): an empty one is a place too."""
        raise NotImplementedError(f"{self.describe()} has no folders")

    def list_incomplete_uploads(self, prefix: str = "") -> AsyncIterator[IncompleteUpload]:
        """Uploads begun and never completed (``features.incomplete_uploads``, :class:`IncompleteUploads`)."""
        raise NotImplementedError(f"{self.describe()} keeps no incomplete uploads")

    async def abort_incomplete_upload(self, upload: IncompleteUpload) -> None:
        """Abort an incomplete upload (``features.incomplete_uploads``, :class:`IncompleteUploads`)."""
        raise NotImplementedError(f"{self.describe()} keeps no incomplete uploads")

    def list_prefixes(self, path: str) -> AsyncIterator[str]:
        """The key prefixes directly under ``path`` (``features.common_prefixes``, :class:`CommonPrefixes`)."""
        raise NotImplementedError(f"{self.describe()} lists no common prefixes")

    async def remove_folder(self, path: str) -> bool:
        """Remove an empty folder (``features.folder_removal``, :class:`FolderRemoval`)."""
        raise NotImplementedError(f"{self.describe()} cannot remove folders")

    async def delete_many(self, keys: Sequence[str]) -> dict[str, BackendError]:
        """Delete many objects in few requests (``features.batch_deletes``, :class:`BatchDeletes`)."""
        raise NotImplementedError(f"{self.describe()} has no batched deletes")

    async def make_bucket(self) -> bool:
        """Make the bucket of the root (``features.buckets``, :class:`Buckets`)."""
        raise NotImplementedError(f"{self.describe()} has no buckets to make")

    async def remove_bucket(self) -> bool:
        """Remove the bucket of the root if empty (``features.buckets``, :class:`Buckets`)."""
        raise NotImplementedError(f"{self.describe()} has no buckets to remove")

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
