"""``move``, ``moveto`` and ``copyto``: the copy engine, then each source object deleted once its copy is verified.

A move runs in two passes over one journal:

1. the copy: the same job ``copy SRC DST`` runs (:class:`~vertexflow.ops.assembly.Transfer`:
   plan, routes, in-stream SHA-256 checks, journal, resume), or, for one
   object to a new name (``moveto``/``copyto``), the same
   :class:`~vertexflow.ops.sync.SyncJob` with the destination seen through
   :class:`RenamedDestination`;
2. the source's objects are paired with the destination's (a sorted merge of
   both listings, through the same filter) and each source object is deleted
   only once its copy is proven to hold the same bytes (:func:`copy_proof`):
   the journal says the engine wrote this destination version from this
   source version and checked it by SHA-256, or a hash both stores report
   matches, or both are read and their SHA-256 compared. Anything else (a
   copy that failed, a source changed since, a destination missing or
   different) leaves the source object where it is, named in the result.

So an object is always at the source, at the destination, or both: a run
killed outright (kill -9) at any moment loses none, and running the command
again continues the copy from the journal and deletes what is proven. A copy
stopped at ``--max-transfer`` deletes what it proves (the rest waits for the
next run); one stopped at ``--max-duration`` or interrupted deletes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..backends.base import Backend
from ..errors import NotFound, VertexflowError
from ..filters import NO_FILTER, Filter
from ..logs import get_logger
from ..middleware.base import BackendWrapper
from ..model import BodyFactory, IncompleteUpload, ObjectInfo, Pace
from ..pipeline.runner import StopSignal, run_pipeline
from .cutoff import MAX_DURATION
from .deletes import Deleter, batch_size
from .plan import DECIDE_BATCH, empty_if_missing, merge, object_sha256, ordered_listing
from .verify import native_comparison

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from ..backends.base import UploadCheckpoint
    from ..pipeline.stats import JobStats
    from ..state.journal import DestRecord, Journal
    from .assembly import Transfer
    from .plan import Decision

log = get_logger(__name__)

#: source objects checked and deleted at once
DELETE_WORKERS = 8
#: source objects left (not proven) kept with their key and reason; the rest are counted
MAX_KEPT_SHOWN = 1000
#: the options of copy that change the names or bytes stored (stages): a move, or a copy to a new name,
#: compares what it stored with its source by name and content, so it takes none of them
RENAMING_STAGE_OPTIONS = ("compress", "chunk_size", "stages", "decompress", "reassemble")


class RenamedDestination(BackendWrapper):
    """``inner`` with the object ``original`` of a source stored as ``name`` (``copyto``/``moveto``).

    Every call about ``original`` goes to ``name``; what comes back carries
    ``original`` again, so the engine (plan, routes, journal) sees one key.
    A server-side copy stays one (the store copies to the new name); the
    engine's own file routes, which write by key, are not offered.
    """

    def __init__(self, inner: Backend, original: str, name: str) -> None:
        super().__init__(inner)
        self.original, self.name = original, name
        self.features = replace(self.features, folders=False, public_links=False,
                                common_prefixes=False, folder_removal=False, batch_deletes=False, buckets=False)

    def _key(self, key: str) -> str:
        return self.name if key == self.original else key

    def _back(self, info: ObjectInfo) -> ObjectInfo:
        return info.with_key(self.original) if info.key == self.name else info

    def describe(self) -> str:
        # the journal keeps what it wrote here under this name: the record of ``original`` is the renamed object's
        if self.original == self.name:
            return self.inner.describe()
        return f"{self.inner.describe()} ({self.original} as {self.name})"

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        return self._list(prefix)

    async def _list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        if self.original.startswith(prefix):
            try:
                yield await self.stat(self.original)
            except NotFound:
                return

    async def stat(self, key: str) -> ObjectInfo:
        return self._back(await self.inner.stat(self._key(key)))

    def open(self, key: str, *, offset: int = 0, length: int | None = None,
             if_version: str | None = None) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        return self.inner.open(self._key(key), offset=offset, length=length, if_version=if_version)

    async def read_whole(self, key: str, *, limit: int, if_version: str | None = None,
                         on_bytes: Callable[[int], None] | None = None) -> bytes:
        return await super().read_whole(self._key(key), limit=limit, if_version=if_version, on_bytes=on_bytes)

    async def read_whole_described(self, key: str, *, limit: int, if_version: str | None = None,
                                   on_bytes: Callable[[int], None] | None = None) -> tuple[bytes, ObjectInfo | None]:
        data, info = await super().read_whole_described(self._key(key), limit=limit, if_version=if_version,
                                                        on_bytes=on_bytes)
        return data, self._back(info) if info is not None else None

    async def put(self, info: ObjectInfo, body: BodyFactory, *, checkpoint: UploadCheckpoint | None = None,
                  pace: Pace | None = None) -> ObjectInfo:
        stored = await self.inner.put(info.with_key(self._key(info.key)), body, checkpoint=checkpoint, pace=pace)
        return self._back(stored)

    async def delete(self, key: str) -> None:
        await self.inner.delete(self._key(key))

    def list_incomplete_uploads(self, prefix: str = "") -> AsyncIterator[IncompleteUpload]:
        return self._incomplete_uploads(prefix)

    async def _incomplete_uploads(self, prefix: str) -> AsyncIterator[IncompleteUpload]:
        # only the renamed object's: a killed run's upload to the new name is this destination's to abort
        if not self.original.startswith(prefix):
            return
        async with aclosing(self.inner.list_incomplete_uploads(self.name)) as uploads:
            async for upload in uploads:
                if upload.key == self.name:
                    yield replace(upload, key=self.original)

    async def abort_incomplete_upload(self, upload: IncompleteUpload) -> None:
        await self.inner.abort_incomplete_upload(replace(upload, key=self._key(upload.key)))

    async def server_copy(self, source: Backend, src: ObjectInfo, dst_key: str) -> ObjectInfo:
        return self._back(await super().server_copy(source, src, self._key(dst_key)))

    async def set_description(self, key: str, info: ObjectInfo, *, if_version: str | None = None) -> bool:
        return await super().set_description(self._key(key), info.with_key(self._key(key)), if_version=if_version)

    def local_path(self, key: str) -> Any:
        return super().local_path(self._key(key))

    async def file_sha256(self, key: str) -> str:
        return await super().file_sha256(self._key(key))


# -- the second pass: delete what is proven ------------------------------------------------------------

@dataclass(slots=True)
class MoveReport:
    """What the second pass of a move did: source objects deleted, and those left with why."""

    dry_run: bool = False
    deleted: int = 0
    bytes: int = 0
    #: proven by the journal's record of the copy (no read), by a hash both stores report, by reading both
    proven_by: dict[str, int] = field(default_factory=lambda: {"journal": 0, "native_hash": 0, "read": 0})
    kept: int = 0
    kept_shown: list[tuple[str, str]] = field(default_factory=list)
    #: source objects not at the destination because the copy stopped at ``--max-transfer`` before them
    not_copied: int = 0
    folders_removed: int = 0

    def keep(self, key: str, why: str) -> None:
        self.kept += 1
        if len(self.kept_shown) < MAX_KEPT_SHOWN:
            self.kept_shown.append((key, why))
        log.warning("source object kept", key=key, why=why)

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "source_deleted": self.deleted, "source_deleted_bytes": self.bytes,
                "proven_by": dict(self.proven_by), "source_kept": self.kept,
                "kept": [{"key": k, "why": w} for k, w in self.kept_shown],
                "kept_not_shown": max(0, self.kept - len(self.kept_shown)), "not_copied": self.not_copied,
                "source_folders_removed": self.folders_removed}


async def copy_proof(src: Backend, dst: Backend, s: ObjectInfo, d: ObjectInfo,
                     record: DestRecord | None) -> tuple[str | None, str]:
    """How the destination's ``d`` is proven to hold the bytes of the source's ``s``: (``journal``,
    ``native_hash`` or ``read``, "") when it is, else (None, what differs)."""
    if s.size is not None and d.size is not None and s.size != d.size:
        return None, f"size {s.size} at the source, {d.size} at the destination"
    if (record is not None and record.sha256 and record.dst_version is not None and record.dst_version == d.version
            and record.src_version is not None and record.src_version == s.version
            and (record.size is None or s.size is None or record.size == s.size)):
        return "journal", ""  # the engine wrote this very version from this one, checked by SHA-256
    native = native_comparison(s, d)
    if native is not None:
        algo, same = native
        return ("native_hash", "") if same else (None, f"{algo} differs")
    source_sum = await object_sha256(src, s)
    dest_sum = await object_sha256(dst, d)
    if source_sum == dest_sum:
        return "read", ""
    return None, f"SHA-256 {source_sum[:12]}… at the source, {dest_sum[:12]}… at the destination"


async def delete_proven_sources(src: Backend, dst: Backend, journal: Journal, *, filt: Filter = NO_FILTER,
                                pairs: Sequence[tuple[str, str]] | None = None, dry_run: bool = False,
                                stop: StopSignal | None = None, copy_cut_off: bool = False,
                                on_delete: Callable[[ObjectInfo], None] | None = None) -> MoveReport:
    """Delete from ``src`` each object whose copy at ``dst`` is proven (:func:`copy_proof`).

    ``pairs``: (source key, destination key) of single objects; None: every
    object of ``src`` passing ``filt``, paired with ``dst``'s under the same
    key (a merge of both listings). ``dry_run``: prove nothing, delete
    nothing; every source object is announced as one the move would delete.
    ``copy_cut_off``: the copy stopped at a limit, so a source object absent
    at the destination is counted as not copied yet rather than named.
    """
    report = MoveReport(dry_run=dry_run)
    where = dst.describe()

    async def batches() -> AsyncIterator[list[tuple[ObjectInfo, ObjectInfo | None, DestRecord | None]]]:
        batch: list[tuple[ObjectInfo, ObjectInfo | None]] = []
        async with aclosing(_paired(src, dst, filt, pairs)) as found:  # type: ignore[type-var]
            async for s, d in found:
                batch.append((s, d))
                if len(batch) >= DECIDE_BATCH:
                    yield await _with_records(journal, where, batch, dry_run)
                    batch = []
        if batch:
            yield await _with_records(journal, where, batch, dry_run)

    async def items() -> AsyncIterator[tuple[ObjectInfo, ObjectInfo | None, DestRecord | None]]:
        async with aclosing(batches()) as found:  # type: ignore[type-var]
            async for batch in found:
                for item in batch:
                    yield item

    async def settle(item: tuple[ObjectInfo, ObjectInfo | None, DestRecord | None]) -> None:
        s, d, record = item
        if dry_run:
            report.deleted += 1
            report.bytes += s.size or 0
            if on_delete is not None:
                on_delete(s)
            return
        if d is None:
            if copy_cut_off:
                report.not_copied += 1
            else:
                report.keep(s.key, "not at the destination (its copy failed or was not made)")
            return
        try:
            proof, why = await copy_proof(src, dst, s, d, record)
        except NotFound:
            report.keep(s.key, "gone from one side while it was being checked")
            return
        except VertexflowError as exc:
            if getattr(exc, "fatal", False):
                raise
            report.keep(s.key, f"could not be checked: {exc}")
            return
        if proof is None:
            report.keep(s.key, f"its copy differs: {why}")
            return
        proven.append((s, proof))
        if len(proven) >= size:
            await delete_proven()

    # proven objects are deleted a batch at a time where the source takes batches (S3 DeleteObjects)
    deleter = Deleter(src)
    size = batch_size(src)
    proven: list[tuple[ObjectInfo, str]] = []

    async def delete_proven() -> None:
        batch, proven[:] = proven[:size], proven[size:]
        failed = await deleter.delete([s.key for s, _ in batch])
        for s, proof in batch:
            if s.key in failed:
                continue
            report.proven_by[proof] += 1
            report.deleted += 1
            report.bytes += s.size or 0
            log.info("source object deleted", key=s.key, proven_by=proof)
            if on_delete is not None:
                on_delete(s)
        if failed:  # as a single delete's failure: the move stops, the next one deletes what is left
            raise next(iter(failed.values()))

    await run_pipeline(items(), settle, workers=1 if dry_run else DELETE_WORKERS, queue_size=256, stop=stop,
                       name="to_delete_moved")
    while proven:  # the last batch, and what was proven when a stop came
        await delete_proven()
    return report


async def _paired(src: Backend, dst: Backend, filt: Filter,
                  pairs: Sequence[tuple[str, str]] | None) -> AsyncIterator[tuple[ObjectInfo, ObjectInfo | None]]:
    if pairs is not None:
        for src_key, dst_key in pairs:
            try:
                s = await src.stat(src_key)
            except NotFound:
                continue  # nothing (left) to move
            try:
                d: ObjectInfo | None = await dst.stat(dst_key)
            except NotFound:
                d = None
            yield s, d
        return
    source = ordered_listing(src, filt)
    dest = empty_if_missing(ordered_listing(dst, filt))
    async with aclosing(source), aclosing(dest):  # type: ignore[type-var]
        async for s, d in merge(source, dest):
            if s is not None:
                yield s, d


async def _with_records(journal: Journal, where: str, batch: list[tuple[ObjectInfo, ObjectInfo | None]],
                        dry_run: bool) -> list[tuple[ObjectInfo, ObjectInfo | None, DestRecord | None]]:
    keys = [s.key for s, d in batch if d is not None]
    records = await journal.dest_records(where, keys) if keys and not dry_run else {}
    return [(s, d, records.get(s.key)) for s, d in batch]


# -- the whole move ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class MoveJob:
    """A prepared ``move``/``moveto``/``copyto``: ``transfer`` is the copy (a checked spec), ``rename``
    whether a single source object takes the last segment of the destination as its name (``*to``),
    ``delete_source`` whether it is a move."""

    transfer: Transfer
    rename: bool
    delete_source: bool
    delete_empty_src_dirs: bool = False

    async def run(self, stats: JobStats, stop: StopSignal, *,
                  on_plan: Callable[[Decision], None] | None = None,
                  on_delete: Callable[[ObjectInfo], None] | None = None) -> MoveReport | None:
        """Copy, then (a move) delete what is proven. None: nothing was deleted from the source because the
        copy was interrupted."""
        from .assembly import open_journal
        from .files import open_location

        spec = self.transfer.spec
        async with open_journal(spec.journal, spec.no_journal) as journal:
            source, single = await open_location(self.transfer.src)
            if single is not None:  # one object: DST/<its name>, or (``*to``) DST itself
                split = self.transfer.dst.split_last() if self.rename else (self.transfer.dst, single)
                assert split is not None  # a destination to name the object after
                parent, name = split
                await self._copy_renamed(source, single, parent, name, journal, stats, stop, on_plan)
                pairs: list[tuple[str, str]] | None = [(single, name)]
                dst_location = parent
            else:
                await source.aclose()
                await self.transfer.run(stats, stop, journal=journal, on_plan=on_plan)
                pairs = None
                dst_location = self.transfer.dst
            cutoff = stats.reporters.get("cutoff")
            reached = getattr(cutoff, "reached", None)
            if not self.delete_source or stats.interrupted or stop.stopping or reached == MAX_DURATION:
                return None  # interrupted, or out of time: the next run deletes what is proven
            return await self._delete_sources(journal, pairs, dst_location, stats, stop, on_delete,
                                              cut_off=reached is not None)

    async def _copy_renamed(self, source: Backend, key: str, parent: Any, name: str, journal: Journal,
                            stats: JobStats, stop: StopSignal, on_plan: Callable[[Decision], None] | None) -> None:
        from .sync import SyncJob

        transfer, spec = self.transfer, self.transfer.spec
        report = None
        if spec.report is not None and not spec.dry_run:
            from .report import TransferReport

            report = TransferReport.open(spec.report)
        try:
            async with source, parent.backend() as target:
                dest = RenamedDestination(target, key, name)
                await SyncJob(transfer.layers.source(source, stats), transfer.layers.destination(dest, stats),
                              journal, src_spec=transfer.src.canonical, dst_spec=transfer.dst.canonical,
                              options=transfer.options, single_key=key, stats=stats, stop=stop, on_plan=on_plan,
                              report=report).run()
        finally:
            if report is not None:
                report.close(stats.summary())

    async def _delete_sources(self, journal: Journal, pairs: list[tuple[str, str]] | None, dst_location: Any,
                              stats: JobStats, stop: StopSignal, on_delete: Callable[[ObjectInfo], None] | None,
                              *, cut_off: bool) -> MoveReport:
        from .files import open_location, remove_empty_folders

        transfer, spec = self.transfer, self.transfer.spec
        source, _ = await open_location(transfer.src)
        async with source, dst_location.backend() as target:
            dest: Backend = target
            if pairs is not None:
                dest = RenamedDestination(target, pairs[0][0], pairs[0][1])
                pairs = [(pairs[0][0], pairs[0][0])]  # the renamed view answers under the source's key
            report = await delete_proven_sources(
                transfer.layers.source(source, stats), transfer.layers.destination(dest, stats), journal,
                filt=spec.filter, pairs=pairs, dry_run=spec.dry_run, stop=stop, copy_cut_off=cut_off,
                on_delete=on_delete)
            if self.delete_empty_src_dirs and pairs is None and not stop.stopping:
                report.folders_removed, _ = await remove_empty_folders(
                    source, spec.filter.prefix.rpartition("/")[0], dry_run=spec.dry_run)
            stats.requests += source.requests + target.requests  # the listings, reads and deletes of this pass
        return report


def stage_options_given(kw: dict[str, Any]) -> list[str]:
    """The options of :data:`RENAMING_STAGE_OPTIONS` given in ``kw`` (command-line names)."""
    return [f"--{name.replace('_', '-')}" for name in RENAMING_STAGE_OPTIONS if kw.get(name)]


__all__ = ["MoveJob", "MoveReport", "RenamedDestination", "copy_proof", "delete_proven_sources",
           "stage_options_given"]
