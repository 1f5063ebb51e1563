"""Multipart uploads: parts in flight, verified completion, and resuming after a killed run.

A checkpoint (:class:`~vertexflow.backends.base.UploadCheckpoint`) holds::

    {"upload_id": str, "part_size": int, "sha256": str | None,   # the metadata given at creation
     "metadata": {str: str}, "described": {str: str},            # ... all of it, and the headers
     "checksum": "CRC64NVME/FULL_OBJECT",                        # the parts' checksum algorithm (and type)
     "parts": [{"number": int, "etag": str, "sha256": hex, "size": int}, ...]}

It is saved right after CreateMultipartUpload (so a run killed at any later
moment leaves a record of its upload) and after every completed part, and
cleared once the upload is completed or aborted. An upload that cannot be
aborted (the server is unreachable) keeps its checkpoint, to be resumed or
aborted by the next run.

On resume the saved upload is kept only if the server still has it
(ListParts), its part size is the one saved, it was created with the
SHA-256 metadata this put would give and with the part checksum this put
sends (:meth:`Uploads.checksum_kind`). Parts count as done only where the
server lists them with the saved ETag and size; the body is replayed from
byte 0 and every byte hashed, and a done part is skipped only when its bytes
hash to the saved SHA-256. A part that does not (the source changed) aborts
the upload, clears the checkpoint, and the put starts again from byte 0 with
a fresh upload. A saved upload that is not kept is aborted.
"""

from __future__ import annotations

import base64
import hashlib
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import botocore.exceptions as bce

from ...errors import BackendError, IntegrityError, ObjectTooLarge, SourceDiffers, TransientError
from ...logs import get_logger
from ...model import SHA256, ObjectInfo, Pace
from ..base import CLOCK_SKEW, UPLOAD_CREATING, UploadCheckpoint
from . import checksums
from .common import (
    ABORT_TIMEOUT,
    MAX_PARTS,
    MIN_PART_SIZE,
    b64,
    boto_description,
    etag_is_content_md5,
    first_error,
    off_loop,
    quote_etag,
    strip_etag,
    user_metadata,
)
from .errors import S3HTTPError, error_code

if TYPE_CHECKING:
    from .backend import S3Backend

log = get_logger(__name__)

#: The checksum every part carries where no full-object checksum is sent (``x-amz-checksum-crc32``,
#: composite), which the server checks against the body and answers with. CRC32 rather than SHA-256:
#: the server hashes every part with the algorithm the upload names, and for SHA-256 that was ~1.5 s
#: of SeaweedFS's CPU per 2 GiB uploaded, where zlib's CRC32 costs us ~0.5 s. Bytes changed in
#: transit still fail the part; the SHA-256 that signs each part and the whole object's SHA-256 are
#: taken as before. Where a full-object checksum is sent (:data:`.checksums.WRITTEN`, CRC64NVME) the
#: parts carry that algorithm instead, as S3 requires, and the whole object's goes in the completion.
PART_CHECKSUM = "CRC32"
#: what a checkpoint records of an upload made with the full-object checksum
FULL_OBJECT = "FULL_OBJECT"


def _strings(saved: Any) -> dict[str, str]:
    """A mapping of strings a checkpoint saved, or {} for anything else."""
    if not isinstance(saved, Mapping):
        return {}
    return {str(k): str(v) for k, v in saved.items() if isinstance(v, str)}


class BodyReader:
    """Reads a put body, counting bytes and refusing more than the announced size.

    With ``pace`` (a bandwidth limit) each chunk is paced as it is read, as a
    limited body would be, except the bytes of :attr:`unsent` parts: the
    parts a resumed upload already has are read to be hashed, not sent.
    """

    def __init__(self, it: AsyncIterator[bytes], expected: int | None, fail: Callable[[str], BackendError],
                 pace: Pace | None = None):
        self._it = it
        self._expected = expected
        self._fail = fail
        self._pace = pace
        self.count = 0
        #: part numbers (of ``part_size`` bytes, from 1) whose bytes are not sent
        self.unsent: frozenset[int] = frozenset()
        self.part_size = 0

    def resuming(self, state: Mapping[str, Any] | None) -> None:
        """The parts a saved upload holds will not be sent (until :meth:`Uploads.put` says otherwise)."""
        try:
            self.part_size = int(state["part_size"]) if state else 0
            self.unsent = frozenset(int(p["number"]) for p in state["parts"]) if state else frozenset()
        except (KeyError, TypeError, ValueError):
            self.part_size, self.unsent = 0, frozenset()

    def _sent(self, start: int, n: int) -> int:
        """How many of the ``n`` bytes from offset ``start`` belong to parts that are sent."""
        if not self.unsent or self.part_size <= 0:
            return n
        sent, offset, end = 0, start, start + n
        while offset < end:
            number = offset // self.part_size + 1
            stop = min(end, number * self.part_size)
            if number not in self.unsent:
                sent += stop - offset
            offset = stop
        return sent

    async def chunk(self) -> bytes | None:
        """The next non-empty chunk, or None at the end."""
        async for chunk in self._it:
            if not chunk:
                continue
            start = self.count
            self.count += len(chunk)
            if self._expected is not None and self.count > self._expected:
                raise self._fail(f"body is longer than the announced {self._expected} bytes")
            if self._pace is not None and (n := self._sent(start, len(chunk))):
                await self._pace(n)
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
        """Re-chunk ``head`` and then the rest of the body into parts of exactly ``size`` (the last shorter).

        Each part is joined once from the chunks it spans (views of them where
        a chunk straddles two parts); a chunk that is a whole part is not copied.
        ``head`` is emptied: its chunks are let go as they are joined, not kept
        by the caller's list for the whole upload.
        """
        pieces: list[bytes | memoryview] = []
        have = 0
        pending = deque(head)
        head.clear()
        while True:
            chunk = pending.popleft() if pending else await self.chunk()
            if chunk is None:
                break
            pieces.append(chunk)
            have += len(chunk)
            while have >= size:
                over = have - size
                if over:
                    last = memoryview(pieces[-1])
                    cut = len(last) - over
                    pieces[-1] = last[:cut]
                    rest: list[bytes | memoryview] = [last[cut:]]
                    del last
                else:
                    rest = []
                only = pieces[0] if len(pieces) == 1 else None
                part = only if type(only) is bytes else b"".join(pieces)
                # while the part waits its turn, it alone is held: not also the chunks it was joined from
                pieces, have, chunk, only = rest, over, None, None
                yield part
                del part
        if pieces:
            yield b"".join(pieces)


@dataclass(frozen=True, slots=True)
class PartRecord:
    """A completed part as the checkpoint keeps it."""

    number: int
    etag: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class PartDigests:
    """What one part hashes to: SHA-256 (signs the request; the checkpoint keeps it), the upload's
    part checksum in base64 (CRC32 or CRC64NVME: the checksum header), MD5 (Content-MD5; None once
    the server is known to check checksums)."""

    sha256: bytes
    crc: str
    md5: bytes | None


@dataclass(slots=True)
class Upload:
    """A multipart upload in progress: running hashes, the parts for Complete, and what a checkpoint saves."""

    upload_id: str
    part_size: int
    metadata_sha256: str | None = None
    #: the user metadata and the headers (Content-Type...) given at creation; a resumed
    #: upload has them from its checkpoint (empty if saved by a version that did not save them)
    metadata: dict[str, str] = field(default_factory=dict)
    described: dict[str, str] = field(default_factory=dict)
    whole_sha256: Any = field(default_factory=hashlib.sha256)
    #: the parts' checksum algorithm (``x-amz-checksum-algorithm``: CRC32, or CRC64NVME for a full-object one)
    algorithm: str = PART_CHECKSUM
    #: the name (``crc64nvme``) of the full-object checksum the upload was created for, else None (composite)
    full: str | None = None
    #: the full-object checksum of the parts so far, in order (their CRCs combined)
    whole_crc: int = 0
    part_md5s: dict[int, bytes] = field(default_factory=dict)
    #: the parts for CompleteMultipartUpload
    parts: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: parts known to be on the server (saved in the checkpoint)
    done: dict[int, PartRecord] = field(default_factory=dict)
    #: parts of a resumed upload still to be matched against the replayed body
    unverified: dict[int, PartRecord] = field(default_factory=dict)
    skipped: int = 0

    @property
    def spec(self) -> checksums.Algorithm:
        """The parts' checksum algorithm."""
        return checksums.algorithm(self.algorithm.lower())

    def snapshot(self) -> dict[str, Any]:
        return {"upload_id": self.upload_id, "part_size": self.part_size, "sha256": self.metadata_sha256,
                "metadata": self.metadata, "described": self.described,
                "checksum": checksum_kind(self.full), "parts": [asdict(self.done[n]) for n in sorted(self.done)]}


def checksum_kind(full: str | None) -> str:
    """What a checkpoint records of the checksums an upload was created with (``CRC32``: composite,
    as versions before full-object checksums saved; ``CRC64NVME/FULL_OBJECT``)."""
    return f"{full.upper()}/{FULL_OBJECT}" if full else PART_CHECKSUM


class _Saver:
    """Saves an upload's snapshot to its checkpoint, one save at a time, shielded from cancellation."""

    def __init__(self, checkpoint: UploadCheckpoint | None, upload: Upload) -> None:
        self.checkpoint = checkpoint
        self.upload = upload
        self._lock = anyio.Lock()

    async def save(self) -> None:
        if self.checkpoint is None:
            return
        # the snapshot is taken under the lock, so a later save never holds fewer parts
        async with self._lock:
            with anyio.CancelScope(shield=True), anyio.move_on_after(ABORT_TIMEOUT):
                await self.checkpoint.save(self.upload.snapshot())


async def clear(checkpoint: UploadCheckpoint | None) -> None:
    if checkpoint is not None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(ABORT_TIMEOUT):
            await checkpoint.clear()


class Uploads:
    """The multipart requests of one backend: create, parts, complete, abort, resume."""

    def __init__(self, backend: S3Backend) -> None:
        self.b = backend

    # -- one put -----------------------------------------------------------------------

    async def put(self, info: ObjectInfo, full: str, reader: BodyReader, head: list[bytes],
                  checkpoint: UploadCheckpoint | None, state: Mapping[str, Any] | None) -> ObjectInfo:
        """Upload the rest of ``reader`` (``head`` already read) in parts; see the module docstring.

        ``state``: what ``checkpoint`` held when the put started.
        """
        key = info.key
        sha256 = info.hashes.get(SHA256)
        sha256 = sha256.lower() if sha256 else None
        upload = await self._resumed(key, full, state, sha256) if state else None
        # the bytes still to read are sent, but for the parts the server confirmed it has
        reader.part_size = upload.part_size if upload is not None else 0
        reader.unsent = frozenset(upload.unverified) if upload is not None else frozenset()
        described, metadata = self.b.description(info)
        if upload is None:
            # metadata known before the first byte is sent: a multipart upload
            # fixes it at creation, so digests taken in-stream are not among it
            upload = await self.create(key, full, sha256=sha256, metadata=metadata, described=described,
                                       part_size=self.b.part_size_for(info.size), checkpoint=checkpoint)
        else:
            log.info("s3.upload_resumed", backend=self.b.describe(), key=key, upload_id=upload.upload_id,
                     parts_done=len(upload.unverified))
        saver = _Saver(checkpoint, upload)
        try:
            async with aclosing(reader.parts(head, upload.part_size)) as parts:
                await self._send_parts(info, full, upload, parts, saver)
            reader.check_end()
            sha = upload.whole_sha256.hexdigest()
            self.b.check_expected_sha(info, sha)
            etag, response = await self.complete(key, full, upload)
        except SourceDiffers:
            await self.abort(key, full, upload.upload_id)
            await clear(checkpoint)
            raise
        except BaseException:
            # a checkpoint whose upload could not be aborted stays, for the next run to finish or abort
            if await self.abort(key, full, upload.upload_id):
                await clear(checkpoint)
            raise
        await clear(checkpoint)
        await self._verify_completed(key, full, upload, etag, response, reader.count)
        late = user_metadata(self.b.description(info)[1], **{SHA256: sha})
        if (any(upload.metadata.get(k) != v for k, v in late.items() if k != SHA256)
                or upload.described != described) and reader.count <= self.b.single_copy_limit:
            etag = await self._replace_metadata(key, full, etag, late, described)
        hashes = {SHA256: sha}
        if upload.full is not None:
            hashes[upload.full] = upload.spec.to_hex(upload.whole_crc)
        return ObjectInfo(key=key, size=reader.count, etag=etag, version=etag, hashes=hashes)

    async def _replace_metadata(self, key: str, full: str, etag: str | None,
                                metadata: dict[str, str], described: Mapping[str, str]) -> str | None:
        """Give the object just completed the metadata that was only known at its end; its new ETag.

        A multipart upload fixes its metadata at creation, before the digests a
        hash stage takes in-stream exist: a server-side copy onto itself, pinned
        to the ETag just completed, rewrites it (objects up to 5 GiB, the limit
        of one CopyObject). Only puts that carry such metadata pay for it.
        REPLACE replaces the Content-Type and headers too: they are given again,
        and so are the storage class, encryption and ACL, which a copy does not
        keep on AWS (the tags it would keep are given again all the same).
        """
        kwargs: dict[str, Any] = {"Bucket": self.b.bucket, "Key": full, "Metadata": metadata,
                                  "CopySource": {"Bucket": self.b.bucket, "Key": full},
                                  "MetadataDirective": "REPLACE", **boto_description(described)}
        if etag:
            kwargs["CopySourceIfMatch"] = quote_etag(etag)
        client = await self.b.client()
        response = await self.b.call("CopyObject", key, lambda: self.b.writes.guarded(
            client.copy_object(**kwargs), backend=self.b.describe(), key=key))
        return strip_etag(response.get("CopyObjectResult", {}).get("ETag")) or etag

    async def _resumed(self, key: str, full: str, state: Mapping[str, Any],
                       sha256: str | None) -> Upload | None:
        """The saved upload if it can be continued, its server-confirmed parts in ``unverified``; else None.

        A saved upload that is not continued is aborted.
        """
        upload_id = state.get("upload_id")
        creating = state.get(UPLOAD_CREATING)
        if not upload_id and isinstance(creating, (int, float)):
            # a run killed while its upload was being created: the server may hold it, its id never learnt
            await self._abort_lost_creates(key, full, since=float(creating))
            return None
        if not isinstance(upload_id, str):
            return None
        try:
            part_size = int(state["part_size"])
            saved = [PartRecord(int(p["number"]), str(p["etag"]), str(p["sha256"]), int(p["size"]))
                     for p in state["parts"]]
        except (KeyError, TypeError, ValueError):
            saved, part_size = [], 0
        # an upload created with another part checksum refuses parts that carry ours
        whole = self.b.checksums.algorithm
        usable = (part_size >= MIN_PART_SIZE and state.get("sha256") == sha256
                  and state.get("checksum") == checksum_kind(whole))
        on_server = await self._list_parts(key, full, upload_id) if usable else None
        if on_server is None:
            if not usable:
                await self.abort(key, full, upload_id)
            return None  # else the server no longer has it: nothing to abort
        upload = Upload(upload_id=upload_id, part_size=part_size, metadata_sha256=sha256,
                        metadata=_strings(state.get("metadata")), described=_strings(state.get("described")),
                        algorithm=whole.upper() if whole else PART_CHECKSUM, full=whole)
        for part in saved:
            if on_server.get(part.number) == (part.etag, part.size):
                upload.unverified[part.number] = part
                upload.done[part.number] = part
        return upload

    async def _list_parts(self, key: str, full: str, upload_id: str) -> dict[int, tuple[str, int]] | None:
        """{part number: (ETag, size)} the server holds for the upload, or None if it has no such upload."""
        client = await self.b.client()
        parts: dict[int, tuple[str, int]] = {}
        marker = 0
        while True:
            async def page(marker: int = marker) -> dict[str, Any] | None:
                try:
                    return await client.list_parts(Bucket=self.b.bucket, Key=full, UploadId=upload_id,
                                                   PartNumberMarker=marker)
                except bce.ClientError as exc:
                    if error_code(exc) in ("NoSuchUpload", "NoSuchKey", "404"):
                        return None
                    raise

            response = await self.b.call("ListParts", key, page, retry=True)
            if response is None:
                return None
            for p in response.get("Parts", ()):
                parts[int(p["PartNumber"])] = (strip_etag(p["ETag"]) or "", int(p["Size"]))
            if not response.get("IsTruncated"):
                return parts
            marker = int(response["NextPartNumberMarker"])

    # -- parts -------------------------------------------------------------------------

    async def _send_parts(self, info: ObjectInfo, full: str, upload: Upload,
                          parts: AsyncIterator[bytes], saver: _Saver) -> None:
        """Hash each part in-stream; skip the verified parts of a resumed upload, upload the others."""
        in_flight = anyio.Semaphore(self.b.upload_concurrency)
        with first_error():
            async with anyio.create_task_group() as tg:
                number = 0
                # a part is read only once one of upload_concurrency slots is free: at most that many parts
                # are held per upload, counting the one being read (docs/memory.md)
                await in_flight.acquire()
                async for part in parts:
                    number += 1
                    if number > MAX_PARTS:
                        raise ObjectTooLarge(f"more than {MAX_PARTS} parts of {len(part)} bytes",
                                             backend=self.b.describe(), key=info.key)
                    digests = await off_loop(lambda p=part: self._hash_part(upload, p), len(part))
                    saved = upload.unverified.pop(number, None)
                    if saved is not None:
                        if (saved.sha256, saved.size) != (digests.sha256.hex(), len(part)):
                            raise SourceDiffers(f"part {number} differs from the interrupted upload's")
                        if digests.md5 is not None:  # a part that is sent records its own, in _upload_part
                            upload.part_md5s[number] = digests.md5
                        upload.parts[number] = {"PartNumber": number, "ETag": f'"{saved.etag}"',
                                                upload.spec.field: digests.crc}
                        upload.skipped += 1
                        continue
                    tg.start_soon(self._upload_part, info.key, full, upload, number, part,
                                  digests, in_flight, saver)
                    del part  # the task holds it now; keep memory to the parts in flight
                    await in_flight.acquire()
                in_flight.release()

    def _hash_part(self, upload: Upload, part: bytes) -> PartDigests:
        """A part's digests, and the whole object's SHA-256 and full-object checksum taken on; one
        thread hop for all of them (the parts come in order).

        The MD5 only while the server has not shown it checks part checksums:
        MD5 runs at ~730 MB/s here against ~1.7 GB/s for SHA-256 (the CPU's SHA
        instructions), ~3.9 GB/s for CRC32 and ~6 GB/s for CRC64NVME. The whole
        object's CRC is the parts' combined (no second pass over the bytes).
        """
        upload.whole_sha256.update(part)
        md5 = None if self.b.part_checksums else hashlib.md5(part, usedforsecurity=False).digest()
        spec = upload.spec
        if upload.full is None:
            crc = zlib.crc32(part)
        else:
            assert spec.crc is not None
            crc = spec.crc(part, 0)
            upload.whole_crc = (spec.combine(upload.whole_crc, crc, len(part)) if spec.combine is not None
                                else spec.crc(part, upload.whole_crc))
        return PartDigests(hashlib.sha256(part).digest(), spec.to_b64(crc), md5)

    async def _upload_part(self, key: str, full: str, upload: Upload, number: int,
                           part: bytes, digests: PartDigests, in_flight: anyio.Semaphore,
                           saver: _Saver) -> None:
        """Send one part and check what the server says it received.

        A server that takes checksum headers answers with the part's checksum
        (CRC32 or CRC64NVME: SeaweedFS and AWS check it, and refuse a body that
        does not match): it must be ours. A server that ignores them answers none: the part's
        MD5 (taken now if it was not sent) is compared with a plain-MD5 ETag,
        and the next parts are sent with Content-MD5 again.
        """
        md5, crc, spec = digests.md5, digests.crc, upload.spec
        try:
            fast = await self.b.fast_client()
            # idempotent (a part sent again replaces itself), so retried here like a GET
            sent = (spec.header, crc) if self.b.checksum_headers else None
            headers = await self.b.call("UploadPart", key, lambda: fast.upload_part(
                full, upload.upload_id, number, part, digests.sha256, sent, md5), retry=True)
            echoed = headers.get(spec.header)
            self.b.part_checksums = bool(echoed)
            if echoed and echoed != crc:
                raise IntegrityError(f"part {number}: server reports {upload.algorithm} {echoed}, sent {crc}",
                                     backend=self.b.describe(), key=key)
            if not echoed and md5 is None:
                md5 = await off_loop(lambda: hashlib.md5(part, usedforsecurity=False).digest(), len(part))
        finally:
            in_flight.release()
        etag = strip_etag(headers.get("ETag"))
        if md5 is not None:
            upload.part_md5s[number] = md5
            if etag_is_content_md5(etag, headers) and etag != md5.hex():
                raise IntegrityError(f"part {number}: server reports MD5 {etag}, sent {md5.hex()}",
                                     backend=self.b.describe(), key=key)
        upload.parts[number] = {"PartNumber": number, "ETag": headers.get("ETag") or f'"{etag}"',
                                **({spec.field: crc} if self.b.checksum_headers else {})}
        upload.done[number] = PartRecord(number, etag or "", digests.sha256.hex(), len(part))
        await saver.save()

    # -- create / complete / abort ------------------------------------------------------

    async def create(self, key: str, full: str, *, sha256: str | None, part_size: int,
                     metadata: Mapping[str, str] | None = None, described: Mapping[str, str] | None = None,
                     checksums: bool = True, checkpoint: UploadCheckpoint | None = None) -> Upload:
        """CreateMultipartUpload, shielded, and saved to ``checkpoint`` before anything else can happen.

        ``described``: Content-Type and standard headers, tags, storage class,
        encryption and ACL (:meth:`.S3Backend.description`). With ``checksums``
        the parts carry the backend's full-object checksum algorithm and the
        upload is created for a full-object checksum (:mod:`.checksums`), or
        CRC32 (composite) where none is sent; a server that refuses the
        full-object checksum is asked again without it, and not asked with it again.
        """
        meta = user_metadata(metadata or {}, **({SHA256: sha256} if sha256 else {}))
        fast = await self.b.fast_client()
        checksums = checksums and self.b.checksum_headers
        whole: list[str | None] = [self.b.checksums.algorithm if checksums else None]

        async def create() -> str:
            try:
                return await fast.create_multipart_upload(
                    full, meta, (whole[0] or PART_CHECKSUM).upper() if checksums else None, described,
                    FULL_OBJECT if whole[0] else None)
            except S3HTTPError as exc:
                if whole[0] is None or not self.b.checksums.refused(exc.status, exc.code, exc.message,
                                                                      backend=self.b.describe()):
                    raise
            whole[0] = None
            return await fast.create_multipart_upload(full, meta, PART_CHECKSUM, described)

        # Shielded: cancelled mid-request, the server may hold an upload whose
        # id we never learnt and so could never abort.
        upload_id = None
        asked = time.time()
        if checkpoint is not None:  # killed before the answer: the next run finds the upload by key and time
            await checkpoint.save({"upload_id": "", "part_size": part_size, "parts": [], UPLOAD_CREATING: asked})
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(ABORT_TIMEOUT):
                upload_id = await self.b.call("CreateMultipartUpload", key, lambda: self.b.writes.guarded(
                    create(), backend=self.b.describe(), key=key))
            if upload_id is None:
                raise TransientError(f"CreateMultipartUpload: no answer within {ABORT_TIMEOUT:.0f} s",
                                     backend=self.b.describe(), key=key)
        except TransientError:
            # the answer was lost, not necessarily the request: the server may hold an upload we
            # never learnt the id of, which the retry's new upload would leave behind
            await self._abort_lost_creates(key, full, since=asked)
            raise
        upload = Upload(upload_id=upload_id, part_size=part_size, metadata_sha256=sha256, metadata=meta,
                        described=dict(described or {}), algorithm=(whole[0] or PART_CHECKSUM).upper(),
                        full=whole[0])
        try:
            # cancelled here (its save may wait its turn, unshielded), the upload is ours to abort
            await _Saver(checkpoint, upload).save()
            await anyio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            if await self.abort(key, full, upload.upload_id):
                await clear(checkpoint)
            raise
        return upload

    async def complete(self, key: str, full: str, upload: Upload) -> tuple[str | None, dict[str, Any]]:
        parts = [upload.parts[n] for n in sorted(upload.parts)]
        fast = await self.b.fast_client()
        # the whole object's checksum, which the server checks against what it assembled
        whole = ({upload.spec.header: upload.spec.to_b64(upload.whole_crc), "x-amz-checksum-type": FULL_OBJECT}
                 if upload.full is not None and all(upload.spec.field in p for p in parts) else None)
        response = await self.b.call("CompleteMultipartUpload", key, lambda: fast.complete_multipart_upload(
            full, upload.upload_id, parts, whole))
        etag = strip_etag(response.get("ETag"))
        if not etag:  # Ceph RGW answers an empty ETag here; HeadObject has it
            etag = (await self.b.stat(key)).etag
        return etag, response

    async def _verify_completed(self, key: str, full: str, upload: Upload, etag: str | None,
                                response: Mapping[str, Any], size: int) -> None:
        """Check the object the server assembled from its parts, with what the server gives to check.

        An upload made for a full-object checksum: the checksum the completion
        answers (``ChecksumCRC64NVME``, of the whole object) is compared with
        ours. Otherwise a composite ``ChecksumCRC32`` (``base64(crc32(part
        CRC32s))-N``, the S3 scheme for uploads created with ChecksumAlgorithm
        CRC32) is. Either way an ``md5-N`` ETag is compared with the MD5 of our
        part MD5s, when every part's MD5 was taken (not when the server checked
        each part's checksum and the MD5s were skipped). When the completion
        answer allows none of these, a HeadObject asking for checksums gives the
        stored checksum, or at least the size. A mismatch deletes the object.
        """
        numbers = sorted(upload.parts)
        problems = []
        checked = False
        spec = upload.spec
        if upload.full is not None:
            ours = spec.to_b64(upload.whole_crc)
            what = f"full-object {upload.algorithm}"
        elif not all(spec.field in upload.parts[n] for n in numbers):
            ours, what = "", "no part checksum"  # sent without (checksum_headers False): nothing answered matches
        else:
            digests = b"".join(base64.b64decode(upload.parts[n]["ChecksumCRC32"]) for n in numbers)
            ours = f"{b64(zlib.crc32(digests).to_bytes(4, 'big'))}-{len(numbers)}"
            what = "composite CRC32"

        def answered(value: str | None) -> bool:
            """Whether ``value`` is the kind of checksum the upload was made for (full, or of N parts)."""
            if not value or not ours:
                return False
            return "-" not in value if upload.full is not None else value.endswith(f"-{len(numbers)}")

        given = response.get(spec.field)
        if answered(given):
            checked = True
            if given != ours:
                problems.append(f"server reports {what} {given}, expected {ours}")
        if etag_is_content_md5(etag, response, multipart=True) and set(upload.part_md5s) == set(numbers):
            checked = True
            md5s = b"".join(upload.part_md5s[n] for n in numbers)
            expected = f"{hashlib.md5(md5s, usedforsecurity=False).hexdigest()}-{len(numbers)}"
            if etag != expected:
                problems.append(f"server reports multipart ETag {etag}, expected {expected}")
        if not checked:
            fast = await self.b.fast_client()
            head = await self.b.call("HeadObject", key, lambda: fast.head_object(full, checksums=True),
                                      retry=True)
            stored = head.get(spec.header)
            if answered(stored) and stored != ours:
                problems.append(f"server stored {what} {stored}, expected {ours}")
            if int(head.get("Content-Length", -1)) != size:
                problems.append(f"server stored {head.get('Content-Length')} bytes, sent {size}")
        if problems:
            await self.b.delete_corrupt(key, full)
            raise IntegrityError("; ".join(problems), backend=self.b.describe(), key=key)

    async def _abort_lost_creates(self, key: str, full: str, *, since: float) -> None:
        """Abort the uploads of ``full`` begun since ``since`` (less the clock skew we allow), shielded, time-boxed.

        Older ones are left: a checkpoint may name one, to be resumed.
        """
        with anyio.CancelScope(shield=True), anyio.move_on_after(ABORT_TIMEOUT):
            try:
                client = await self.b.client()
                answer = await self.b.call("ListMultipartUploads", key, lambda: client.list_multipart_uploads(
                    Bucket=self.b.bucket, Prefix=full), retry=True)
            except BackendError as exc:
                log.warning("s3.lost_upload_not_listed", backend=self.b.describe(), key=key, error=str(exc))
                return
            for upload in answer.get("Uploads", ()):
                initiated = upload.get("Initiated")
                if upload.get("Key") == full and initiated is not None and initiated.timestamp() >= since - CLOCK_SKEW:
                    log.info("s3.lost_upload_aborted", backend=self.b.describe(), key=key,
                             upload_id=upload["UploadId"])
                    await self.abort(key, full, upload["UploadId"])

    async def abort(self, key: str, full: str, upload_id: str) -> bool:
        """Abort a multipart upload, even while being cancelled, within ABORT_TIMEOUT; True if it is gone."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(ABORT_TIMEOUT):
            async def abort() -> None:
                fast = await self.b.fast_client()
                try:
                    await fast.abort_multipart_upload(full, upload_id)
                except S3HTTPError as exc:
                    if exc.code != "NoSuchUpload":  # already gone is what we want
                        raise

            try:
                # idempotent (an upload already gone is what we want): asked again on a passing failure, since
                # an upload left here is often one that nothing else records (a lost create's)
                await self.b.call("AbortMultipartUpload", key, abort, retry=True)
            except BackendError as exc:
                log.warning("s3.abort_failed", backend=self.b.describe(), key=key,
                            upload_id=upload_id, error=str(exc))
                return False
            return True
        log.warning("s3.abort_failed", backend=self.b.describe(), key=key, upload_id=upload_id,
                    error=f"no answer within {ABORT_TIMEOUT:.0f} s")
        return False
