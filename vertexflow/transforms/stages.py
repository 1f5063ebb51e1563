"""The write side: the stages a user turned on, chained in the order given, ending at the store.

Each stage takes an :class:`Item` (a key, what is known about its stream)
and a replayable body, and passes one or more items on to the next stage;
the last is :class:`Sink`, which puts into the backend. Every ``put`` answers
a :class:`Stored` that says where the result lies and what the store reported.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

import anyio

from ..backends.base import Backend
from ..errors import IntegrityError, InvalidKey, SourceChanged
from ..logs import get_logger
from ..model import SHA256, BodyFactory, ObjectInfo, body_from_bytes
from ..retry import RetryPolicy, retry_call
from .chunking import (MANIFEST_NAME, Cutter, Manifest, Part, folder_of, is_reserved, part_name,
                       replayed_range, spill)
from .compression import CODEC_OF_SUFFIX, FRAME_BYTES, SNIFF_BYTES, Codec, encode_seconds, encoder, sniff
from .hashing import Digester, digesting
from .work import CpuLane

log = get_logger(__name__)


@dataclass(slots=True)
class Content:
    """What the head of the chain learns about the original bytes (set when its pass ends)."""

    digests: dict[str, str] = field(default_factory=dict)
    size: int | None = None


@dataclass(slots=True)
class Item:
    """One stream on its way down the chain."""

    key: str
    size: int | None
    mtime: datetime | None
    origin: str  # the object's own key, for manifests and messages
    content: Content
    #: calling the body again gives the same bytes (true until a compress stage)
    deterministic: bool = True
    #: codecs applied to this stream by stages above, in order
    encoding: tuple[str, ...] = ()
    #: SHA-256 these very bytes must have (the source knew it)
    expected_sha256: str | None = None
    #: digests of this stream, filled by a hash stage just above when its pass ends
    digests: dict[str, str] = field(default_factory=dict)
    #: the stored object stands for the whole content (false for a chunk's parts)
    whole: bool = True


@dataclass(frozen=True, slots=True)
class Stored:
    """Where one item ended up."""

    key: str  # the entry key: reading it back starts there (a manifest for a chunked object)
    size: int  # bytes of the stream this stage was given
    stored_bytes: int  # bytes the store holds for it (all parts; without a manifest)
    sha256: str | None  # of the bytes stored at ``key``, as the store reported
    reported: Mapping[str, str]  # the store's hashes of this stream (empty when a stage below changed it)
    version: str | None
    mtime: datetime | None
    codecs: tuple[str, ...] = ()  # applied to this stream by stages below
    parts: int = 0


class Stage(Protocol):
    async def put(self, item: Item, body: BodyFactory) -> Stored: ...


@dataclass(slots=True)
class TransformCounters:
    """Totals for the job summary."""

    compressed_objects: int = 0
    bytes_before: int = 0  # what the compress stage read
    bytes_after: int = 0  # what it wrote
    skipped: Counter[str] = field(default_factory=Counter)  # stored as they were, by format recognised
    chunked_objects: int = 0
    parts: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"compressed_objects": self.compressed_objects, "bytes_before": self.bytes_before,
                "bytes_after": self.bytes_after, "bytes_saved": self.bytes_before - self.bytes_after,
                "skipped_already_compressed": sum(self.skipped.values()), "skipped_by_format": dict(self.skipped),
                "chunked_objects": self.chunked_objects, "parts": self.parts}

    def describe(self) -> str:
        out = []
        if self.compressed_objects or self.skipped:
            out.append(f"compressed {self.compressed_objects:,} objects, saved "
                       f"{self.bytes_before - self.bytes_after:,} bytes; "
                       f"{sum(self.skipped.values()):,} already compressed, stored as they were")
        if self.chunked_objects:
            out.append(f"chunked {self.chunked_objects:,} objects into {self.parts:,} parts")
        return "; ".join(out) or "nothing to transform"


class Sink:
    """The end of the chain: ``put`` into the store."""

    def __init__(self, store: Backend) -> None:
        self.store = store

    async def put(self, item: Item, body: BodyFactory) -> Stored:
        hashes = {SHA256: item.expected_sha256} if item.expected_sha256 else {}
        r = await self.store.put(ObjectInfo(key=item.key, size=item.size, mtime=item.mtime, hashes=hashes,
                                            metadata=StoredMetadata(item)), body)
        size = r.size if r.size is not None else 0
        return Stored(key=item.key, size=size, stored_bytes=size, sha256=r.hashes.get(SHA256),
                      reported=dict(r.hashes), version=r.version or r.etag, mtime=r.mtime)


class StoredMetadata(Mapping[str, str]):
    """The user metadata an item is stored with, read when the store sends it.

    ``codec``: the codecs applied, in order (``zstd``); ``content-<algo>``
    and ``content-size``: the original content's digests and size, present
    once the head of the chain has seen its last byte, which is before the
    send for any object put in one request. A chunk's parts carry nothing:
    the manifest (which carries the whole's) describes them.
    """

    def __init__(self, item: Item) -> None:
        self.item = item

    def _entries(self) -> dict[str, str]:
        out = {"codec": ",".join(self.item.encoding)} if self.item.encoding else {}
        content = self.item.content
        if self.item.whole:
            out.update({f"content-{algo}": value for algo, value in content.digests.items()})
            if content.size is not None and content.digests:
                out["content-size"] = str(content.size)
        return out

    def __getitem__(self, name: str) -> str:
        return self._entries()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries())

    def __len__(self) -> int:
        return len(self._entries())


class HashStage:
    """Digests the bytes at its place in the chain.

    ``head``: first in the chain, so it digests the original content (and
    checks the SHA-256 the source knew, at the end of the stream, so that a
    mismatch aborts the put before anything is committed). ``adjacent``:
    nothing below changes the bytes, so the store hashes these very bytes:
    SHA-256 is taken from what it reports rather than computed twice, and
    every other digest it reports (an S3 ETag's MD5) is compared.
    """

    def __init__(self, next_stage: Stage, algorithms: tuple[str, ...], lane: CpuLane, *,
                 head: bool, adjacent: bool, backend: str) -> None:
        self.next = next_stage
        self.algorithms = tuple(a for a in algorithms if not (adjacent and a == SHA256))
        self.lane = lane
        self.head = head
        self.adjacent = adjacent
        self.backend = backend

    async def put(self, item: Item, body: BodyFactory) -> Stored:
        def ended(digests: Mapping[str, str], size: int) -> None:
            item.digests.update(digests)
            if self.head:
                item.content.size = size
                expected = item.expected_sha256
                if expected and not self.adjacent and digests[SHA256] != expected.lower():
                    raise IntegrityError("SHA-256 of the bytes read differs from the source's",
                                         backend=self.backend, key=item.origin)

        stream = digesting(body, self.algorithms, self.lane, ended) if self.algorithms else body
        stored = await self.next.put(item, stream)
        if self.adjacent:
            for name, value in stored.reported.items():
                if name in item.digests and item.digests[name] != value.lower():
                    raise IntegrityError(f"{name} the store reports differs from the one computed while sending",
                                         backend=self.backend, key=item.origin)
            if SHA256 in stored.reported:
                item.digests.setdefault(SHA256, stored.reported[SHA256])
        return stored


class _Primed:
    """A body whose first call goes on with a stream already started (its head read to sniff it).

    Later calls start over from the original body.
    """

    def __init__(self, body: BodyFactory, it: AsyncIterator[bytes], head: list[bytes], want: int) -> None:
        self._body = body
        self._it: AsyncIterator[bytes] | None = it
        self._head = head
        self.head_bytes = b"".join(c[:want] for c in head)[:want]

    @classmethod
    async def start(cls, body: BodyFactory, want: int) -> _Primed:
        it = body()
        head: list[bytes] = []
        got = 0
        try:
            while got < want and (chunk := await anext(it, None)) is not None:
                head.append(chunk)
                got += len(chunk)
        except BaseException:
            await it.aclose()  # type: ignore[attr-defined]
            raise
        return cls(body, it, head, want)

    def __call__(self) -> AsyncIterator[bytes]:
        if self._it is None:
            return self._body()
        it, self._it = self._it, None
        head, self._head = self._head, []  # held only until sent: a buffer per stream otherwise
        return self._resume(it, head)

    @staticmethod
    async def _resume(it: AsyncIterator[bytes], head: list[bytes]) -> AsyncIterator[bytes]:
        async with aclosing(it):  # type: ignore[type-var]
            while head:
                yield head.pop(0)
            async for chunk in it:
                yield chunk

    async def aclose(self) -> None:
        if self._it is not None:
            it, self._it = self._it, None
            await it.aclose()  # type: ignore[attr-defined]


def _has_codec_suffix(key: str) -> bool:
    return any(key.endswith(s) for s in CODEC_OF_SUFFIX)


class CompressStage:
    """Compresses each stream to ``key + suffix``, unless its content is already compressed.

    A key that already ends in ``.zst`` or ``.gz`` is always compressed (to
    ``a.gz.zst``), so that every stored name with a codec suffix was written
    by this stage and reads back unambiguously.
    """

    def __init__(self, next_stage: Stage, codec: Codec, lane: CpuLane, counters: TransformCounters, *,
                 force: bool) -> None:
        self.next = next_stage
        self.codec = codec
        self.lane = lane
        self.counters = counters
        self.force = force

    async def put(self, item: Item, body: BodyFactory) -> Stored:
        primed = await _Primed.start(body, SNIFF_BYTES)
        try:
            kind = None if self.force else sniff(primed.head_bytes)
            if kind is not None and not _has_codec_suffix(item.key):
                stored = await self.next.put(item, primed)
                self.counters.skipped[kind] += 1
                return stored
            sub = Item(key=item.key + self.codec.suffix, size=None, mtime=item.mtime, origin=item.origin,
                       content=item.content, deterministic=False, encoding=(*item.encoding, self.codec.name))
            read = [0]  # set by the body when a pass ends: the bytes compressed
            stored = await self.next.put(sub, self._compressed(primed, read))
        finally:
            await primed.aclose()
        self.counters.compressed_objects += 1
        self.counters.bytes_before += read[0]
        self.counters.bytes_after += stored.size
        return replace(stored, size=read[0], reported={}, codecs=(self.codec.name, *stored.codecs))

    def _compressed(self, body: BodyFactory, read: list[int]) -> BodyFactory:
        codec, lane = self.codec, self.lane

        async def compressed() -> AsyncIterator[bytes]:
            enc = encoder(codec)  # one per stream, used by one thread at a time
            n = 0
            async with aclosing(body()) as chunks:  # type: ignore[type-var]
                async for chunk in chunks:
                    n += len(chunk)
                    for piece in await lane.run(enc.feed, chunk, seconds=encode_seconds(codec, len(chunk))):
                        yield piece
            tail = await lane.run(enc.finish, seconds=encode_seconds(codec, FRAME_BYTES))
            read[0] = n
            for piece in tail:
                yield piece

        return compressed


class ChunkStage:
    """Stores a stream longer than ``chunk_size`` as parts plus a manifest (see :mod:`.chunking`).

    Parts go one at a time, each a separate put through the stages below,
    retried on its own. Their bodies replay without holding a part in memory:

    * the stream is the source's own bytes (nothing above changed them) and
      its size is known: a part is first streamed from the live body; a retry
      reads the body again and skips to the part's offset;
    * otherwise (after compress, whose output need not be the same twice):
      each part is first written to a temporary file (``spill_dir``) and sent
      from there; the stream is only split if it outgrows one part.
    """

    def __init__(self, next_stage: Stage, sink: Sink, chunk_size: int, counters: TransformCounters, *,
                 retry: RetryPolicy, spill_dir: str | None, backend: str) -> None:
        self.next = next_stage
        self.sink = sink
        self.chunk_size = chunk_size
        self.counters = counters
        self.retry = retry
        self.spill_dir = spill_dir
        self.backend = backend

    async def put(self, item: Item, body: BodyFactory) -> Stored:
        if is_reserved(item.key):
            raise InvalidKey("keys holding '.vfchunk/' are reserved for chunked objects",
                             backend=self.backend, key=item.origin)
        raw = item.deterministic and item.size is not None
        if raw and item.size <= self.chunk_size:  # type: ignore[operator]
            return await self.next.put(item, body)
        it = body()
        cutter = Cutter(it)
        try:
            if raw:
                parts = await self._raw_parts(item, body, cutter)
            else:
                parts = await self._spilled_parts(item, cutter)
                if isinstance(parts, Stored):
                    return parts  # it fitted in one part
            if not await cutter.at_end():
                raise SourceChanged(f"more than the expected {item.size} bytes", backend=self.backend,
                                    key=item.origin)
        finally:
            with anyio.CancelScope(shield=True):
                await it.aclose()  # type: ignore[attr-defined]
        return await self._commit(item, parts, cutter.pos)

    async def _raw_parts(self, item: Item, body: BodyFactory, cutter: Cutter) -> list[tuple[Part, Stored]]:
        assert item.size is not None
        gen = secrets.token_hex(4)
        parts: list[tuple[Part, Stored]] = []
        for index, start in enumerate(range(0, item.size, self.chunk_size)):
            length = min(self.chunk_size, item.size - start)
            sub = self._part_item(item, gen, index, length)
            stored = await self._send(sub, self._live_then_replayed(cutter, body, start, length))
            await cutter.skip_to(start + length)  # what a failed live attempt left unread
            if cutter.pos != start + length:
                raise SourceChanged(f"fewer than the expected {item.size} bytes", backend=self.backend,
                                    key=item.origin)
            parts.append((await self._part(sub, stored), stored))
        return parts

    async def _spilled_parts(self, item: Item, cutter: Cutter) -> list[tuple[Part, Stored]] | Stored:
        gen = secrets.token_hex(4)
        parts: list[tuple[Part, Stored]] = []
        while True:
            spilled = await spill(cutter, cutter.pos + self.chunk_size, self.spill_dir)
            try:
                if spilled.size == 0 and parts:
                    return parts
                if not parts and await cutter.at_end():
                    return await self.next.put(replace(item, size=spilled.size), spilled.body())
                sub = self._part_item(item, gen, len(parts), spilled.size)
                stored = await self._send(sub, spilled.body())
            finally:
                spilled.remove()
            parts.append((await self._part(sub, stored), stored))

    def _part_item(self, item: Item, gen: str, index: int, size: int) -> Item:
        return Item(key=folder_of(item.key) + part_name(gen, index), size=size, mtime=item.mtime,
                    origin=item.origin, content=item.content, whole=False)

    @staticmethod
    def _live_then_replayed(cutter: Cutter, body: BodyFactory, start: int, length: int) -> BodyFactory:
        fresh = True

        def part() -> AsyncIterator[bytes]:
            nonlocal fresh
            if fresh and cutter.pos == start:
                fresh = False
                return cutter.take(start + length)
            return replayed_range(body, start, length)()

        return part

    async def _send(self, sub: Item, body: BodyFactory) -> Stored:
        def retrying(exc: BaseException, attempt: int, delay: float) -> None:
            log.warning("retrying a part", key=sub.key, attempt=attempt, delay=round(delay, 2),
                        reason=getattr(exc, "reason", "error"), error=str(exc))

        return await retry_call(lambda: self.next.put(sub, body), self.retry, on_retry=retrying)

    async def _part(self, sub: Item, stored: Stored) -> Part:
        sha = stored.sha256 or await self._stored_sha256(stored.key)
        folder = sub.key[:sub.key.rindex("/") + 1]
        return Part(key=stored.key[len(folder):], size=stored.stored_bytes, sha256=sha, codecs=stored.codecs,
                    plain_size=stored.size, hashes=dict(sub.digests))

    async def _stored_sha256(self, key: str) -> str:
        """For a store that does not report what it stored: read the part back."""
        d = Digester((SHA256,))
        async with self.sink.store.open(key) as chunks:
            async for chunk in chunks:
                d.update(chunk)
        return d.hexdigests()[SHA256]

    async def _commit(self, item: Item, parts: list[tuple[Part, Stored]], stream_size: int) -> Stored:
        folder = folder_of(item.key)
        manifest = Manifest(key=item.origin, size=item.content.size or 0, hashes=dict(item.content.digests),
                            encoding=item.encoding, stream_size=stream_size, stream_hashes=dict(item.digests),
                            chunk_size=self.chunk_size, parts=tuple(p for p, _ in parts))
        data = manifest.to_json()
        entry = Item(key=folder + MANIFEST_NAME, size=len(data), mtime=item.mtime, origin=item.origin,
                     content=item.content)  # the manifest stands for the whole: its metadata describes it
        stored = await self._send_manifest(entry, data)
        await self._remove_stale(folder, {MANIFEST_NAME, *(p.key for p, _ in parts)})
        self.counters.chunked_objects += 1
        self.counters.parts += len(parts)
        return Stored(key=stored.key, size=stream_size, stored_bytes=sum(s.stored_bytes for _, s in parts),
                      sha256=stored.sha256, reported={}, version=stored.version, mtime=stored.mtime,
                      parts=len(parts))

    async def _send_manifest(self, entry: Item, data: bytes) -> Stored:
        # straight to the store: a manifest is never compressed or split
        return await retry_call(lambda: self.sink.put(entry, body_from_bytes(data)), self.retry)

    async def _remove_stale(self, folder: str, keep: set[str]) -> None:
        """Remove parts of earlier uploads of this key (replaced, or left by failed attempts)."""
        store = self.sink.store
        async with aclosing(store.list(folder)) as listing:  # type: ignore[type-var]
            stale = [info.key async for info in listing if info.key[len(folder):] not in keep]
        for key in stale:
            await store.delete(key)
