"""The routes an object can take from source to destination, each with a name.

The copy engine (:mod:`.copy`) chooses, once per job, which routes the two
ends allow (by their declared :class:`~vertexflow.model.Features`), then for
each object the cheapest of them:

* ``local_file``: both ends are bare local directories: one worker-thread call
  reads, hashes and writes (``copy_file_range`` when hashing is off);
* ``server_side``: both ends are in one store: the server copies;
* ``whole_read``: a small object, from a source that reads one in a single
  request or thread hop: read whole, put from memory;
* ``streamed``: ``src.open`` streamed into ``dst.put``; every object can take it.

A route that cannot serve an object raises :class:`~vertexflow.errors.CantCopy`
and the engine sends the object by the ``streamed`` route instead (rclone's
``ErrorCantCopy``). Every route checks what it did: the byte count must match
the listing and the SHA-256 the destination reports must match the source's
where both are known. What describes the bytes (Content-Type, headers, user
metadata, mtime, tags: :class:`~vertexflow.model.ObjectInfo`) goes with them;
where a listing does not know it (S3) the ``whole_read`` route has it from
the answer that brings the bytes and the ``streamed`` route asks the source's
``stat`` for it (one request), and ``server_side`` copies keep it on the
server. Tags the source only counted (:class:`~vertexflow.model.PendingTags`)
are read by a destination that keeps them, when it writes the object.

Batches of small files of a bare local source (one thread call for many)
are cut while listing, before any route is chosen; the summary counts their
objects as ``local_batch`` (between local directories) and ``batch_read``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import ClassVar

from ..backends.base import Backend, UploadCheckpoint, direct_files
from ..backends.local import SMALL_FILE
from ..backends.s3.checksums import Running, computable
from ..errors import IntegrityError, SourceChanged
from ..model import CRC32, CRC32C, CRC64NVME, SHA256, BodyFactory, ObjectInfo, body_from_bytes

#: the digests of a whole object a stat may give that check a copy of it (a store's full-object checksums,
#: which it checked against the bytes when they were written, and the SHA-256 vertexflow keeps)
WHOLE_DIGESTS = (SHA256, CRC64NVME, CRC32C, CRC32)
from ..pipeline.stats import JobStats


@dataclass(slots=True)
class RouteContext:
    """What every route of one job shares."""

    src: Backend
    dst: Backend
    stats: JobStats
    verify: bool
    checkpoints: Callable[[ObjectInfo], UploadCheckpoint] | None = None
    _prehash: bool = field(init=False, default=False)
    _hash_by_stat: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        # large local files are hashed before their upload (behind a bandwidth limit too): stores that
        # keep the SHA-256 beside the object need it before a multipart upload starts
        self._prehash = self.src.features.local_path and self.verify and not self.dst.features.hashes_in_stream
        # the digest a large object's stat gives (its SHA-256, the store's CRC64NVME) checks its copy end to end
        self._hash_by_stat = (self.verify and any(a in self.src.features.stat_hashes for a in WHOLE_DIGESTS)
                              and not self.dst.features.hashes_in_stream)

    def needs_prehash(self, info: ObjectInfo) -> bool:
        return self._prehash and SHA256 not in info.hashes

    async def prehashed(self, info: ObjectInfo) -> ObjectInfo:
        """``info`` with the SHA-256 of its local file (which also proves the upload matches the file as listed)."""
        digest = await self.src.file_sha256(info.key)
        return replace(info, hashes={**info.hashes, SHA256: digest})

    async def with_stat(self, info: ObjectInfo) -> ObjectInfo:
        """``info`` with what only the source's stat knows, asked at most once.

        * What describes the bytes (Content-Type, headers, user metadata, the
          source mtime), where the listing did not know it (``headers`` None:
          an S3 listing; one HeadObject per object, which ``--no-metadata``
          saves: such a source's listings then say there is nothing to carry).
        * The digests of the whole object, so that the copy is checked against
          them: the SHA-256 vertexflow keeps as metadata and the full-object
          checksums the store keeps (S3: CRC64NVME...), which listings of S3 do
          not carry, and without which a read of a large object cannot check
          its bytes (a multipart ETag is not a digest of them). For every
          object not read whole (over the small-object size): such an object
          may come in more than one answer (S3's first answer is one part,
          and S3 gives no checksum with a ranged answer), and only an answer
          holding the whole object is checked by the backend itself. A stat
          asked for the description gives them too, at no cost.
        """
        describe = info.headers is None
        want_hash = (self._hash_by_stat and not any(a in info.hashes for a in WHOLE_DIGESTS)
                     and (info.size or 0) > SMALL_FILE)
        if not describe and not want_hash:
            return info
        head = await self.src.stat(info.key)
        if describe:
            info = described_by(info, head)
        digests = {a: head.hashes[a] for a in WHOLE_DIGESTS if head.hashes.get(a)}
        if (want_hash or (describe and self._hash_by_stat)) and digests \
                and (info.version is None or head.version == info.version):
            # (none kept, or changed since listed: the read then says so)
            info = replace(info, hashes={**info.hashes, **digests})
        return info

    def moved(self, n: int) -> None:
        self.stats.moved_bytes += n

    def stream(self, info: ObjectInfo) -> BodyFactory:
        """The source object as a replayable body; progress counts its bytes as they pass.

        Where the source gave a full-object checksum of its own (a store's
        CRC64NVME, CRC32C or CRC32: :func:`stream_check`) and no SHA-256 (which
        the destination's ``put`` checks itself), the bytes are checked against
        it as they pass: a body that differs fails at its end, before the
        destination's ``put`` has taken it whole.
        """
        src, stats = self.src, self.stats
        check = stream_check(info) if self.verify else None

        async def body() -> AsyncIterator[bytes]:
            running = Running(check[0]) if check is not None else None
            async with src.open(info.key, if_version=info.version) as chunks:
                async for chunk in chunks:
                    stats.moved_bytes += len(chunk)
                    if running is not None:
                        running.update(chunk)
                    yield chunk
            if check is not None and running is not None and running.hexdigest() != check[1]:
                raise IntegrityError(f"the bytes read have {check[0]} {running.hexdigest()}, the source keeps "
                                     f"{check[1]}", backend=src.describe(), key=info.key)

        return body

    def verified(self, info: ObjectInfo, result: ObjectInfo) -> ObjectInfo:
        if info.size is not None and result.size is not None and info.size != result.size:
            raise SourceChanged(f"listed with {info.size} bytes, copied {result.size}",
                                backend=self.dst.describe(), key=info.key)
        expected, got = info.hashes.get(SHA256), result.hashes.get(SHA256)
        if expected and got and expected != got:
            raise IntegrityError("SHA-256 of the copy differs from the source's",
                                 backend=self.dst.describe(), key=info.key)
        return result


def stream_check(info: ObjectInfo) -> tuple[str, str] | None:
    """(algorithm, expected hex) a streamed copy of ``info`` is checked with as it passes, or None.

    None where ``info`` has a SHA-256 (the destination's ``put`` checks it)
    or no full-object checksum this machine computes.
    """
    if info.hashes.get(SHA256):
        return None
    for algorithm in (CRC64NVME, CRC32C, CRC32):
        if info.hashes.get(algorithm) and computable(algorithm):
            return algorithm, info.hashes[algorithm].lower()
    return None


def described_by(info: ObjectInfo, source: ObjectInfo) -> ObjectInfo:
    """``info`` with what ``source`` (a stat, or the answer that brought the bytes) says describes them."""
    return replace(info, content_type=source.content_type, headers=dict(source.headers or {}),
                   metadata=source.metadata, mtime=source.mtime or info.mtime, tags=source.tags)


class Route:
    """One way to copy an object; ``copy`` raises CantCopy when this route cannot serve it."""

    name: ClassVar[str]

    def __init__(self, ctx: RouteContext) -> None:
        self.ctx = ctx

    def serves(self, info: ObjectInfo) -> bool:
        """Whether this route is the one for ``info`` (the job already knows the ends allow it)."""
        return True

    async def copy(self, info: ObjectInfo) -> ObjectInfo:
        raise NotImplementedError


class LocalFileRoute(Route):
    name = "local_file"

    async def copy(self, info: ObjectInfo) -> ObjectInfo:
        ctx = self.ctx
        files = direct_files(ctx.dst)
        result = await files.run_blocking(files.copy_from_file, direct_files(ctx.src).path_of(info.key), info, info)
        ctx.moved(result.size or 0)
        return ctx.verified(info, result)


class ServerSideRoute(Route):
    name = "server_side"

    async def copy(self, info: ObjectInfo) -> ObjectInfo:
        ctx = self.ctx
        result = await ctx.dst.server_copy(ctx.src, info, info.key)
        ctx.stats.server_side_copies += 1
        ctx.moved(result.size or 0)
        return ctx.verified(info, result)


class WholeReadRoute(Route):
    name = "whole_read"

    def serves(self, info: ObjectInfo) -> bool:
        return info.size is not None and info.size <= SMALL_FILE

    async def copy(self, info: ObjectInfo) -> ObjectInfo:
        ctx = self.ctx
        if info.headers is not None:  # the listing said what describes the bytes
            data = await ctx.src.read_whole(info.key, limit=SMALL_FILE, if_version=info.version, on_bytes=ctx.moved)
            return ctx.verified(info, await ctx.dst.put(await ctx.with_stat(info), body_from_bytes(data)))
        # the answer that brings the bytes says it too (S3 GetObject): no stat for the description
        data, described = await ctx.src.read_whole_described(info.key, limit=SMALL_FILE, if_version=info.version,
                                                              on_bytes=ctx.moved)
        target = described_by(info, described) if described is not None else await ctx.with_stat(info)
        return ctx.verified(info, await ctx.dst.put(target, body_from_bytes(data)))


class StreamedRoute(Route):
    name = "streamed"

    async def copy(self, info: ObjectInfo) -> ObjectInfo:
        ctx = self.ctx
        target = await ctx.with_stat(info)
        if ctx.needs_prehash(target):
            target = await ctx.prehashed(target)
        checkpoint = ctx.checkpoints(info) if ctx.dst.features.resumable_uploads and ctx.checkpoints else None
        result = await ctx.dst.put(target, ctx.stream(target), checkpoint=checkpoint)
        return ctx.verified(target, result)


def choose_routes(ctx: RouteContext) -> tuple[Route, ...]:
    """The routes this job's two ends allow, cheapest first; the last one (streamed) serves every object."""
    src, dst = ctx.src, ctx.dst
    routes: list[Route] = []
    if src.features.direct_files and dst.features.direct_files:
        routes.append(LocalFileRoute(ctx))
    elif dst.features.server_side_copy and dst.same_store(src):
        routes.append(ServerSideRoute(ctx))
    elif src.features.whole_reads:
        routes.append(WholeReadRoute(ctx))
    routes.append(StreamedRoute(ctx))
    return tuple(routes)
