"""Stages as a decorator: a backend seen through its stages, objects in transformed and out restored.

:class:`TransformedBackend` decorates a backend. ``put`` runs the stages a
user turned on (the codecs of :mod:`vertexflow.transforms`); ``list``,
``stat``, ``open`` and ``delete`` speak of the objects' own keys and
contents, whatever form they are stored in. The engine copies to and from it
like any backend, and never learns about stages.

The stored form of an object is recorded in the ``version`` this view hands
out (``<suffix>|<the store's version>``), so reading an object found by a
listing needs no probing; a key given without one is looked up in every form.

What describes an object (its Content-Type, headers, user metadata, mtime:
``docs/fidelity.md``) goes with it as with any backend: the stored entry
(the object itself, its compressed form, a chunked object's manifest) is
stored with the description of the object it stands for, beside the
stages' own records (``codec``, ``content-*``); a chunk's parts carry none.
Read back, the entry's description is the object's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from dataclasses import dataclass, replace

from ..backends.base import Backend, UploadCheckpoint
from ..errors import ConfigError, NotFound
from ..model import SHA256, BodyFactory, ObjectInfo, Pace, own_metadata
from ..transforms.chunking import MANIFEST_NAME, MANIFEST_SUFFIX
from ..transforms.config import Stages
from ..transforms.reading import Reader, candidate_suffixes, logical
from ..transforms.stages import (
    ChunkStage,
    CompressStage,
    Content,
    HashStage,
    Item,
    Sink,
    Stage,
    Stored,
    StoredMetadata,
    TransformCounters,
)
from ..transforms.work import CpuLane
from .base import BackendWrapper

_SEP = "|"


def tag(suffix: str, version: str | None) -> str:
    return f"{suffix}{_SEP}{version or ''}"


def untag(version: str | None, suffixes: list[str]) -> tuple[str, str | None] | None:
    if version is None or _SEP not in version:
        return None
    suffix, _, inner = version.partition(_SEP)
    if suffix not in suffixes:
        return None
    return suffix, inner or None


@dataclass(slots=True)
class DescribedContent(Content):
    """The content of one put, and what describes the object (the ``ObjectInfo`` given to ``put``)."""

    description: ObjectInfo | None = None


def user_metadata(info: ObjectInfo) -> dict[str, str]:
    """``info``'s user metadata but the records vertexflow and its stages keep (digests, ``codec``, ``content-*``).

    Those describe one stored form of the bytes, not the object: they are
    taken anew wherever it is stored again.
    """
    return {k: v for k, v in info.metadata.items() if not own_metadata(k)}


class DescribedMetadata(Mapping[str, str]):
    """The object's user metadata under the stages' records, read (as those are) when the store sends it."""

    def __init__(self, user: Mapping[str, str], records: StoredMetadata) -> None:
        self.user, self.records = user, records

    def _entries(self) -> dict[str, str]:
        return {**self.user, **self.records}

    def __getitem__(self, name: str) -> str:
        return self._entries()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries())

    def __len__(self) -> int:
        return len(self._entries())


class DescribingSink(Sink):
    """The end of the chain, storing an entry that stands for the whole object with the object's description."""

    async def put(self, item: Item, body: BodyFactory) -> Stored:
        described = item.content.description if isinstance(item.content, DescribedContent) else None
        if described is None or not item.whole:  # a chunk's part: the manifest describes the object
            return await super().put(item, body)
        hashes = {SHA256: item.expected_sha256} if item.expected_sha256 else {}
        r = await self.store.put(ObjectInfo(key=item.key, size=item.size, mtime=item.mtime, hashes=hashes,
                                            content_type=described.content_type, headers=described.headers,
                                            metadata=DescribedMetadata(user_metadata(described),
                                                                       StoredMetadata(item))), body)
        size = r.size if r.size is not None else 0
        return Stored(key=item.key, size=size, stored_bytes=size, sha256=r.hashes.get(SHA256),
                      reported=dict(r.hashes), version=r.version or r.etag, mtime=r.mtime)


class TransformedBackend(BackendWrapper):
    """``inner`` with ``stages`` applied on the way in and undone on the way out."""

    def __init__(self, inner: Backend, stages: Stages, counters: TransformCounters | None = None) -> None:
        super().__init__(inner)
        limit = inner.features.max_object_size
        if stages.chunk_size and limit and stages.chunk_size > limit:
            raise ConfigError(f"--chunk-size {stages.chunk_size} is over {inner.describe()}'s limit of "
                              f"{limit} bytes per object")
        self.stages = stages
        self.counters = counters or TransformCounters()
        self._codecs = stages.decodes_codecs
        self._chunks = stages.decodes_chunks
        self._decoding = self._codecs or self._chunks
        self._suffixes = candidate_suffixes(codecs=self._codecs, chunks=self._chunks)
        self._hash_lane = CpuLane(stages.hash_threads)
        self._compress_lane = CpuLane(stages.compress_threads)
        if self._decoding:
            # stored names differ from keys, so neither their order nor the store's hashes hold
            self.features = replace(self.features, sorted_listing=False, native_hashes=(), stat_hashes=())
        # stored keys and bytes differ from the objects': no file, link or folder stands for one, nor
        # can a description be changed in place beside the stages' records; every byte is hashed on its
        # way through. What describes an object is carried as the store carries it (object_metadata).
        self.features = replace(self.features, server_side_copy=False, resumable_uploads=False, paced_writes=False,
                                local_path=False, whole_reads=False, public_links=False, folders=False,
                                hashes_in_stream=True, description_in_place=(), incomplete_uploads=False,
                                common_prefixes=False, folder_removal=False, batch_deletes=False, buckets=False,
                                max_object_size=None if stages.chunk_size else self.features.max_object_size)
        self._chain = self._build_chain()
        self._reader = Reader(inner, self._compress_lane, self._hash_lane, describe=self.describe())

    def describe(self) -> str:
        return f"{self.inner.describe()} [{self.stages.describe()}]"

    def _build_chain(self) -> Stage:
        s, sink = self.stages, DescribingSink(self.inner)
        where = self.describe()
        stage: Stage = sink
        changed = False  # a stage below changes the bytes
        for i, name in reversed(list(enumerate(s.order))):
            if name == "hash":
                stage = HashStage(stage, s.hashes, self._hash_lane, head=i == 0, adjacent=not changed, backend=where)
            elif name == "compress":
                assert s.codec is not None
                stage = CompressStage(stage, s.codec, self._compress_lane, self.counters, force=s.force_compress)
                changed = True
            else:
                assert s.chunk_size is not None
                stage = ChunkStage(stage, sink, s.chunk_size, self.counters, retry=s.retry, spill_dir=s.spill_dir,
                                   backend=where)
                changed = True
        if changed and s.order[0] != "hash":
            # the content's SHA-256 is taken before anything changes it: the engine checks copies with it
            stage = HashStage(stage, (SHA256,), self._hash_lane, head=True, adjacent=False, backend=where)
        return stage

    # -- writing ----------------------------------------------------------
    async def put(self, info: ObjectInfo, body: BodyFactory, *, checkpoint: UploadCheckpoint | None = None,
                  pace: Pace | None = None) -> ObjectInfo:
        content = DescribedContent(description=info)
        item = Item(key=info.key, size=info.size, mtime=info.mtime, origin=info.key, content=content,
                    expected_sha256=info.hashes.get(SHA256), digests=content.digests)
        stored = await self._chain.put(item, body)
        hashes = dict(content.digests)
        if SHA256 not in hashes and SHA256 in stored.reported:
            hashes[SHA256] = stored.reported[SHA256]
        size = content.size if content.size is not None else stored.size
        version = tag(stored.key[len(info.key):], stored.version) if self._decoding else stored.version
        return ObjectInfo(key=info.key, size=size, mtime=stored.mtime, hashes=hashes, version=version)

    # -- reading ------------------------------------------------------------
    def _logical_info(self, key: str, suffix: str, info: ObjectInfo) -> ObjectInfo:
        if not suffix:
            return replace(info, key=key, version=tag("", info.version))
        # the content's size and hashes: from the metadata it was stored with,
        # where the store gives it back (an S3 HEAD), else unknown without reading it
        meta = info.metadata
        hashes = {name[len("content-"):]: value for name, value in meta.items()
                  if name.startswith("content-") and name != "content-size"}
        size = meta.get("content-size", "")
        return ObjectInfo(key=key, size=int(size) if size.isdigit() else None, mtime=info.mtime, hashes=hashes,
                          version=tag(suffix, info.version or info.etag), content_type=info.content_type,
                          headers=info.headers, metadata=user_metadata(info))

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:  # type: ignore[override]
        async with aclosing(self.inner.list(prefix)) as items:  # type: ignore[type-var]
            async for info in items:
                if not self._decoding:
                    yield info
                    continue
                found = logical(info.key, codecs=self._codecs, chunks=self._chunks)
                if found is not None and found[0].startswith(prefix):
                    yield self._logical_info(found[0], found[1], info)

    async def stat(self, key: str) -> ObjectInfo:
        if not self._decoding:
            return await self.inner.stat(key)
        for suffix in self._suffixes:
            try:
                info = await self.inner.stat(key + suffix)
            except NotFound:
                continue
            return self._logical_info(key, suffix, info)
        raise NotFound("no such object in any stored form", backend=self.describe(), key=key)

    def open(self, key: str, *, offset: int = 0, length: int | None = None,
             if_version: str | None = None) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        if not self._decoding:
            return self.inner.open(key, offset=offset, length=length, if_version=if_version)
        return self._open(key, offset, length, if_version)

    @asynccontextmanager
    async def _open(self, key: str, offset: int, length: int | None,
                    if_version: str | None) -> AsyncIterator[AsyncIterator[bytes]]:
        found = untag(if_version, self._suffixes)
        if found is None:
            found = untag((await self.stat(key)).version, self._suffixes)
            assert found is not None
        async with self._reader.open(key, found[0], found[1], offset, length) as chunks:
            yield chunks

    async def delete(self, key: str) -> None:
        if not self._decoding:
            await self.inner.delete(key)
            return
        for suffix in self._suffixes:
            entry = key + suffix
            await self.inner.delete(entry)  # a manifest goes first: the object is gone at once
            if suffix.endswith(MANIFEST_SUFFIX):
                await self._delete_folder(entry[:-len(MANIFEST_NAME)])

    async def _delete_folder(self, folder: str) -> None:
        try:
            async with aclosing(self.inner.list(folder)) as items:  # type: ignore[type-var]
                keys = [info.key async for info in items]
        except NotFound:
            return
        for k in keys:
            await self.inner.delete(k)
