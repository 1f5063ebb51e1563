"""Value types shared by backends, the pipeline and the jobs."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

#: A body that can be replayed: each call returns a fresh iterator that starts
#: again at byte 0, so a retry can send the same bytes again.
BodyFactory = Callable[[], AsyncIterator[bytes]]

#: Told the number of body bytes a ``put`` reads to send (``put(..., pace=)``,
#: ``features.paced_writes``); returns when they may go: a bandwidth limit.
Pace = Callable[[int], Awaitable[None]]

SHA256 = "sha256"
MD5 = "md5"
#: the CRCs S3 keeps as full-object checksums (``x-amz-checksum-*``; hex of the big-endian value)
CRC64NVME, CRC32C, CRC32 = "crc64nvme", "crc32c", "crc32"

#: the headers besides Content-Type that describe an object's bytes, which
#: :attr:`ObjectInfo.headers` carries (lower-case, as S3 serves them)
STANDARD_HEADERS = ("cache-control", "content-disposition", "content-encoding", "content-language", "expires")
#: the user metadata name under which a source mtime is kept where the store
#: keeps none of its own: Unix seconds with a nine-digit fraction, as rclone writes it
MTIME_METADATA = "mtime"
#: S3's limits on an object's tags (AWS documents them; other stores may take more, and a copy to
#: AWS would then be refused): at most 10 tags, keys of 1-128 characters, values of up to 256
MAX_TAGS, MAX_TAG_KEY, MAX_TAG_VALUE = 10, 128, 256
#: the characters S3 allows in tag keys and values: letters, digits, spaces and + - = . _ : / @
_TAG_TEXT = re.compile(r"^[\w +\-=.:/@]*$")


def tags_problem(tags: Mapping[str, str]) -> str | None:
    """What makes ``tags`` unfit for S3 (:data:`MAX_TAGS`...), or None when S3 takes them."""
    if len(tags) > MAX_TAGS:
        return f"{len(tags)} tags, S3 keeps at most {MAX_TAGS}"
    for key, value in tags.items():
        if not 1 <= len(key) <= MAX_TAG_KEY:
            shown = key if len(key) <= 40 else key[:40] + "..."
            return f"tag key {shown!r} has {len(key)} characters, S3 takes 1 to {MAX_TAG_KEY}"
        if len(value) > MAX_TAG_VALUE:
            return f"the value of tag {key!r} has {len(value)} characters, S3 takes at most {MAX_TAG_VALUE}"
        if key.startswith("aws:"):
            return f"tag key {key!r}: the prefix aws: is AWS's own"
        if not _TAG_TEXT.match(key) or not _TAG_TEXT.match(value):
            return f"tag {key!r}={value!r}: S3 takes letters, digits, spaces and + - = . _ : / @ only"
    return None


@dataclass(frozen=True, slots=True)
class PendingTags:
    """Tags an object has that were not read with it: the answer that described it gave their
    ``count`` only (S3 ``x-amz-tagging-count``). ``read()`` asks the source for them (one request,
    S3 GetObjectTagging), which a destination that keeps tags does before it writes the object;
    any other destination never pays for it."""

    count: int
    read: Callable[[], Awaitable[Mapping[str, str]]] = field(compare=False, repr=False)


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

    What describes the bytes travels with them (``docs/fidelity.md`` has the
    table of what each pair of backends keeps): ``content_type``, the
    standard ``headers``, the user ``metadata``, ``mtime`` and ``tags``.
    ``mtime`` is the object's modification time: the source's where the
    store keeps it (a local file's; on S3 the ``mtime`` user metadata that
    vertexflow and rclone write, which only ``stat`` shows, a listing giving
    the upload time; on Yandex.Disk the ``mtime`` custom property, else its
    ``modified``).
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
    #: the media type of the bytes (``video/mp4``); None: none known (the
    #: destination then decides: S3 servers store their own guess)
    content_type: str | None = None
    #: the other standard headers served with the object, lower-case names of
    #: :data:`STANDARD_HEADERS` only (``cache-control: max-age=60``).
    #: None: the info comes from where none of the description is known (an
    #: S3 listing shows no headers, Content-Type or user metadata): the
    #: source's ``stat`` tells it, and a copy asks it; ``{}``: known, none
    headers: Mapping[str, str] | None = field(default_factory=dict)
    #: the object's tags (S3 object tagging: a key-value set kept beside the metadata), or
    #: :class:`PendingTags` where the source said it has some without sending them
    tags: Mapping[str, str] | PendingTags = field(default_factory=dict)

    def with_key(self, key: str) -> ObjectInfo:
        return replace(self, key=key)


def own_metadata(name: str) -> bool:
    """True for the user metadata vertexflow writes itself: the SHA-256 and what stages record
    (``codec``, ``content-*``); ``--no-metadata`` carries these and nothing else of a source's."""
    return name in (SHA256, "codec") or name.startswith("content-")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def mtime_text(when: datetime) -> str | None:
    """``when`` as :data:`MTIME_METADATA` holds it: ``1712345678.123456000`` (None before 1970)."""
    delta = when.astimezone(UTC) - _EPOCH
    if delta.days < 0:
        return None
    return f"{delta.days * 86_400 + delta.seconds}.{delta.microseconds * 1000:09d}"


def parse_mtime_text(text: str | None) -> datetime | None:
    """The time :func:`mtime_text` (or rclone) wrote; None when ``text`` is not one."""
    if not text:
        return None
    seconds, _, fraction = text.strip().partition(".")
    if not seconds.isdigit() or (fraction and not fraction.isdigit()) or len(seconds) > 12:
        return None
    micros = int((fraction + "000000")[:6]) if fraction else 0
    return _EPOCH + timedelta(seconds=int(seconds), microseconds=micros)


@dataclass(frozen=True, slots=True, kw_only=True)
class Features:
    """Optional abilities of a backend, asked for instead of probing methods or classes.

    A flag that stands for methods names an ability protocol of
    :mod:`vertexflow.backends.base` (listed in ``ABILITIES`` there): a backend
    declares the flag exactly when it implements those methods, and a
    decorator declares what it forwards (``tests/backends/test_features.py``
    checks both for every backend and every decorator stack the engine builds).

    server_side_copy: ``server_copy`` copies from another location of the same
        store (``same_store``) without the bytes passing through vertexflow.
    native_hashes: hashes the backend reports in listings/stat without reading
        the content (for example ``("md5",)`` for Yandex.Disk, ``("sha256",)``
        for S3 objects written by vertexflow).
    local_path: objects are files on this machine under their keys
        (:class:`~vertexflow.backends.base.LocalFiles`): ``local_path(key)``
        and ``file_sha256(key)``. Decorators that keep keys and bytes (a
        bandwidth limit) forward it: hashing a file is not a transfer.
    direct_files: the engine may move bytes between such files itself,
        bypassing ``open`` and ``put`` (zero-copy, batches of small files:
        :class:`~vertexflow.backends.base.DirectFiles`). Only a bare local
        backend: every decorator stands in the path of the bytes.
    whole_reads: ``read_whole`` is a cheaper way to read a small object than
        streaming ``open`` (one request, one thread hop); the engine uses it
        for objects listed as small.
    max_object_size: the largest object ``put`` accepts, if limited.
    preserves_mtime: ``put`` stores ``info.mtime`` and reports it back.
    sorted_listing: ``list`` yields keys in ascending code-point order.
    resumable_uploads: ``put`` honours a ``checkpoint`` and continues a large
        upload that an earlier, interrupted run started.
    paced_writes: ``put`` honours ``pace``: it tells it the body's bytes as
        it reads them to send, and never bytes it does not send (the parts a
        resumed upload already has, read only to be hashed).
    stat_hashes: hashes ``stat`` may report that listings do not (S3: the
        SHA-256 vertexflow keeps as metadata, which only a HeadObject shows).
    public_links: ``public_link(key)`` gives a URL that serves the object
        without credentials (:class:`~vertexflow.backends.base.PublicLinks`).
    folders: the store has real folders: ``make_folder``/``is_folder``
        (:class:`~vertexflow.backends.base.Folders`); elsewhere a folder is a
        key prefix.
    hashes_in_stream: ``put`` hashes every byte as it streams (stages): the
        engine need not read a file a first time to hash it.
    object_metadata: the store keeps Content-Type, headers and user metadata
        with each object, and the backend class takes the job's metadata
        settings (``docs/fidelity.md``).
    object_tags: the store keeps tags with each object: ``put`` stores
        ``info.tags`` (reading :class:`PendingTags` first), and what a
        ``stat`` describes carries the object's.
    write_settings: the settings of a job (names of
        :class:`~vertexflow.ops.spec.TransferSettings`) the backend class takes
        as keyword arguments, beyond ``metadata``/``metadata_set``, and applies
        to every object it writes (S3: storage class, encryption, ACL, tags...).
    incomplete_uploads: the store keeps uploads begun and never completed
        (S3 multipart uploads, billed until aborted):
        ``list_incomplete_uploads``/``abort_incomplete_upload``
        (:class:`~vertexflow.backends.base.IncompleteUploads`, ``vertexflow cleanup``).
    common_prefixes: a store without folders lists the key prefixes directly
        under one in a request or a few (S3 delimiter listings):
        ``list_prefixes`` (:class:`~vertexflow.backends.base.CommonPrefixes`, ``vertexflow lsd``).
    folder_removal: ``remove_folder`` removes an empty folder of a store with
        folders (:class:`~vertexflow.backends.base.FolderRemoval`); a store of
        local files needs none (its folders are directories at ``local_path``).
    batch_deletes: ``delete_many`` deletes many objects in a request per
        thousand (S3 DeleteObjects), each key's failure its own
        (:class:`~vertexflow.backends.base.BatchDeletes`); the delete commands
        use it where declared, one ``delete`` per object elsewhere. A decorator
        that changes keys (stages, a renamed destination) does not declare it.
    buckets: the backend's root is in a bucket the store makes and removes on
        request: ``make_bucket``/``remove_bucket``
        (:class:`~vertexflow.backends.base.Buckets`, ``vertexflow mkdir``/``rmdir``
        of ``s3://BUCKET``).
    timeouts: the network timeouts the backend class takes as keyword arguments
        (``request_timeout``: seconds without a byte, ``--timeout``;
        ``connect_timeout``: seconds to connect, ``--contimeout``).
    """

    server_side_copy: bool = False
    native_hashes: tuple[str, ...] = ()
    local_path: bool = False
    direct_files: bool = False
    whole_reads: bool = False
    max_object_size: int | None = None
    preserves_mtime: bool = False
    sorted_listing: bool = False
    resumable_uploads: bool = False
    paced_writes: bool = False
    stat_hashes: tuple[str, ...] = ()
    public_links: bool = False
    folders: bool = False
    hashes_in_stream: bool = False
    #: the store keeps what describes an object (Content-Type, headers, user metadata) and the
    #: backend takes ``metadata`` / ``metadata_set`` settings (``--no-metadata``, ``--metadata-set``)
    object_metadata: bool = False
    object_tags: bool = False
    write_settings: tuple[str, ...] = ()
    #: the parts of an object's description (``backends.base.DESCRIPTION_PARTS``) that
    #: ``set_description`` changes without sending the bytes again (``verify --fix --metadata``)
    description_in_place: tuple[str, ...] = ()
    incomplete_uploads: bool = False
    common_prefixes: bool = False
    folder_removal: bool = False
    batch_deletes: bool = False
    buckets: bool = False
    timeouts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IncompleteUpload:
    """An upload begun and neither completed nor aborted (``features.incomplete_uploads``).

    ``key`` is relative to the backend's root; ``initiated`` is when it began
    (None: the store did not say).
    """

    key: str
    upload_id: str
    initiated: datetime | None


def body_from_bytes(data: bytes) -> BodyFactory:
    """A replayable body over bytes already in memory."""

    async def body() -> AsyncIterator[bytes]:
        yield data

    return body


async def read_all(body: AsyncIterator[bytes]) -> bytes:
    """Join an async byte stream (for small objects and tests)."""
    parts = [chunk async for chunk in body]
    return b"".join(parts)
