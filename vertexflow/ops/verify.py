"""``verify SRC DST``: compare two trees and report missing, extra and different objects.

Both listings are merged in key order (:func:`vertexflow.ops.plan.merge`),
so memory does not grow with the number of objects; only the first
``MAX_REPORTED`` problems of each kind are kept with their keys (all are counted).

Modes:

* ``checksum`` (the default): sizes, then content hashes. A hash both
  backends report natively (SHA-256, or MD5 such as an S3 single-part ETag and
  Yandex.Disk's ``md5``) is compared without reading; otherwise both sides
  are read and hashed with SHA-256.
* ``size``: sizes only (fast, catches truncation but not corruption).

``metadata`` (off by default; ``verify --metadata``) also compares what
describes the bytes of each object whose content matched: its Content-Type,
standard headers and user metadata where both stores have a place for them
(``features.description_in_place``), and the source's mtime where it keeps
one and the destination has a place for it (within ``MTIME_TOLERANCE``).
Local disk has a place for the mtime only; Yandex.Disk for user metadata and
the mtime (it names its own Content-Type); S3 for all. vertexflow's own
records (digests, ``codec``, ``content-*``) are not compared: they describe
one stored form. An S3 listing shows none of it: one HeadObject per compared
object on each S3 side. An object that differs so is a ``metadata``
difference; ``--fix`` changes it in place where the destination can
(:meth:`~vertexflow.backends.base.Backend.set_description`), else sends it again.

``sample`` checks a deterministic fraction of the common keys (chosen by a
hash of the key, so reruns check the same ones).

``stats`` (a :class:`~vertexflow.pipeline.stats.JobStats`, optional) counts
the check as it goes, for a progress display: the source's objects and bytes
as the listing brings them (the totals), an object done once checked (one
left out by ``sample`` as skipped), and its bytes as both sides are read
(half of each byte read on either side) or at once when no read is needed.
A fix counts as phases of their own (``fixing``, then ``verifying again``).

``one_way`` (``verify --one-way``) does not count objects only the
destination has as differences: the check is that every source object is
there, and equal. ``fix`` with ``delete`` (``verify --fix --delete``) also
removes those extras, under the guards of ``sync --delete``: never when the
source listing is empty, nor when there are more than ``max_delete``
(checked before anything is copied or deleted: nothing is done), nor when a
copy of the fix failed (the extras are then left and counted).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

from ..backends.base import DESCRIPTION_PARTS, Backend
from ..errors import BackendError, ConfigError, JobAborted, NotFound
from ..filters import NO_FILTER, Filter
from ..logs import get_logger
from ..model import MD5, MTIME_METADATA, SHA256, STANDARD_HEADERS, ObjectInfo, own_metadata, parse_mtime_text
from ..pipeline.runner import StopSignal, run_pipeline
from ..pipeline.stats import JobStats
from ..retry import RetryPolicy, retry_call
from .plan import MTIME_TOLERANCE, cheap_comparison, empty_if_missing, merge, object_sha256, ordered_listing

log = get_logger(__name__)

MAX_REPORTED = 1000
HASH_WORKERS = 8
#: deletes in flight at once (as ``sync --delete`` runs them)
DELETE_WORKERS = 8


@dataclass(slots=True)
class Difference:
    key: str
    kind: Literal["missing", "extra", "different", "metadata"]
    detail: str
    #: for a ``metadata`` difference, the parts of the description that differ (of ``DESCRIPTION_PARTS``)
    parts: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "kind": self.kind, "detail": self.detail}
        if self.parts:
            out["parts"] = list(self.parts)
        return out


@dataclass(slots=True)
class VerifyReport:
    src_objects: int = 0
    dst_objects: int = 0
    compared: int = 0
    hashed: int = 0
    matched: int = 0
    missing: int = 0
    extra: int = 0
    different: int = 0
    #: objects whose content matched but whose description differs (``metadata`` mode)
    metadata: int = 0
    #: whether descriptions were compared (``metadata`` mode)
    metadata_checked: bool = False
    problems: list[Difference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.different or self.metadata)

    def add(self, diff: Difference) -> None:
        setattr(self, diff.kind, getattr(self, diff.kind) + 1)
        if len(self.problems) < 3 * MAX_REPORTED:
            self.problems.append(diff)

    def as_dict(self) -> dict[str, Any]:
        out = {"ok": self.ok, "src_objects": self.src_objects, "dst_objects": self.dst_objects,
               "compared": self.compared, "hashed_both_sides": self.hashed, "matched": self.matched,
               "missing": self.missing, "extra": self.extra, "different": self.different}
        if self.metadata_checked:
            out["metadata_different"] = self.metadata
        return {**out, "problems": [p.as_dict() for p in self.problems]}


def native_comparison(s: ObjectInfo, d: ObjectInfo) -> tuple[str, bool] | None:
    """(algorithm, whether equal) by the first hash both objects carry without a read (SHA-256, else MD5);
    None when they carry none in common."""
    for algo in (SHA256, MD5):
        if s.hashes.get(algo) and d.hashes.get(algo):
            return algo, s.hashes[algo] == d.hashes[algo]
    return None


def sampled(key: str, fraction: float) -> bool:
    """Deterministic: the same keys are picked on every run."""
    if fraction >= 1.0:
        return True
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2 ** 64 < fraction


def description_places(backend: Backend) -> frozenset[str]:
    """The parts of what describes an object (``DESCRIPTION_PARTS``) that ``backend`` has a place for."""
    f = backend.features
    return frozenset(f.description_in_place) | ({"mtime"} if f.preserves_mtime else set())


def kept_mtime(backend: Backend, info: ObjectInfo) -> datetime | None:
    """The source mtime ``info`` keeps: a local file's own; elsewhere the ``mtime`` metadata, if any
    (an S3 LastModified or a Yandex.Disk ``modified`` is the upload's time, not one kept)."""
    if backend.features.preserves_mtime:
        return info.mtime
    return parse_mtime_text(info.metadata.get(MTIME_METADATA))


def _user(info: ObjectInfo) -> dict[str, str]:
    return {k: v for k, v in info.metadata.items() if not own_metadata(k) and k != MTIME_METADATA}


def _headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    out = {}
    for name, value in (headers or {}).items():
        name, value = name.lower(), value.strip()
        if name not in STANDARD_HEADERS:
            continue
        if name == "expires":  # the same date written another way is the same header
            try:
                value = parsedate_to_datetime(value).astimezone(UTC).isoformat()
            except (TypeError, ValueError):
                pass
        out[name] = value
    return out


def _shown(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return repr(value)


class Descriptions:
    """Compares what describes objects of ``src`` and ``dst``, and what ``--fix`` gives the destination."""

    def __init__(self, src: Backend, dst: Backend) -> None:
        self.src, self.dst = src, dst
        here, there = description_places(src), description_places(dst)
        # both have a place for it; a source mtime where the source keeps one
        self.parts = tuple(p for p in DESCRIPTION_PARTS if p in here and p in there)

    def differences(self, s: ObjectInfo, d: ObjectInfo) -> list[tuple[str, str]]:
        """(part, what differs) for each difference between the source's ``s`` and the destination's ``d``."""
        out: list[tuple[str, str]] = []

        def differ(part: str, name: str, a: object, b: object) -> None:
            if a != b:
                out.append((part, f"{name} {_shown(a)} at source, {_shown(b)} at destination"))

        if "content-type" in self.parts:
            differ("content-type", "Content-Type", s.content_type, d.content_type)
        if "headers" in self.parts:
            a, b = _headers(s.headers), _headers(d.headers)
            for name in sorted(a.keys() | b.keys()):
                differ("headers", name, a.get(name), b.get(name))
        if "metadata" in self.parts:
            a, b = _user(s), _user(d)
            for name in sorted(a.keys() | b.keys()):
                differ("metadata", f"user metadata {name}", a.get(name), b.get(name))
        if "mtime" in self.parts:
            ms, md = kept_mtime(self.src, s), kept_mtime(self.dst, d)
            if ms is not None and (md is None or abs((ms - md).total_seconds()) > MTIME_TOLERANCE):
                differ("mtime", "mtime", ms, md)
        return out

    def wanted(self, s: ObjectInfo, d: ObjectInfo) -> ObjectInfo:
        """The description the destination's ``d`` should have: the source's where compared, else its own."""
        compared = self.parts
        ms = kept_mtime(self.src, s) if "mtime" in compared else None
        return ObjectInfo(key=d.key, size=d.size,
                          content_type=s.content_type if "content-type" in compared else d.content_type,
                          headers=dict(s.headers or {}) if "headers" in compared else d.headers,
                          metadata=_user(s) if "metadata" in compared else _user(d),
                          mtime=ms if ms is not None else kept_mtime(self.dst, d))


#: a file's read for its comparison is asked again on a passing failure (a byte corrupted in transit, a reset
#: or 5xx its request's own tries did not ride out), as the copy's engine asks again for a whole object
READ_RETRY = RetryPolicy(attempts=4, base_delay=0.2, max_delay=5.0, deadline=60.0)


class VerifyJob:
    """Compare ``dst`` with ``src``; ``metadata``: their descriptions too (see the module's text)."""

    def __init__(self, src: Backend, dst: Backend, *, mode: Literal["checksum", "size"] = "checksum",
                 filt: Filter = NO_FILTER, sample: float = 1.0, workers: int = HASH_WORKERS,
                 stop: StopSignal | None = None, metadata: bool = False, one_way: bool = False,
                 stats: JobStats | None = None) -> None:
        self.src, self.dst = src, dst
        self.stats = stats
        self.one_way = one_way
        self.mode = mode
        self.filter = filt
        self.sample = sample
        self.workers = workers
        self.stop = stop or StopSignal()
        self.report = VerifyReport(metadata_checked=metadata)
        self.descriptions = Descriptions(src, dst) if metadata else None

    async def run(self) -> VerifyReport:
        await self.src.check()
        await run_pipeline(self._pairs(), self._compare, workers=self.workers, queue_size=256, stop=self.stop,
                           name="to_compare")
        return self.report

    async def _pairs(self) -> AsyncIterator[tuple[ObjectInfo, ObjectInfo]]:
        report = self.report
        src = ordered_listing(self.src, self.filter)
        dst = empty_if_missing(ordered_listing(self.dst, self.filter))
        stats = self.stats
        async for s, d in merge(src, dst):
            if s is not None:
                report.src_objects += 1
                if stats is not None:
                    stats.listed_objects += 1
                    stats.listed_bytes += s.size or 0
            if d is not None:
                report.dst_objects += 1
            if d is None:
                assert s is not None
                report.add(Difference(s.key, "missing", f"{s.size} bytes at source, absent at destination"))
                self._settle(s)
            elif s is None:
                if not self.one_way:
                    report.add(Difference(d.key, "extra", f"{d.size} bytes at destination, absent at source"))
            elif sampled(s.key, self.sample):
                yield s, d
            else:
                self._settle(s, skipped=True)
        if stats is not None:
            stats.listing_done = True

    def _settle(self, s: ObjectInfo, *, counted: int = 0, skipped: bool = False) -> None:
        """Source object ``s`` is checked (``counted`` of its bytes were counted as they were read)."""
        if self.stats is not None:
            self.stats.moved_bytes += max(0, (s.size or 0) - counted)
            if skipped:
                self.stats.skipped_objects += 1
            else:
                self.stats.done_objects += 1
                self.stats.done_bytes += s.size or 0

    async def _compare(self, pair: tuple[ObjectInfo, ObjectInfo]) -> None:
        s, d = pair
        self.report.compared += 1
        reads = _HalfCount(self.stats)
        if await self._same_content(s, d, reads) and (self.descriptions is None
                                                      or await self._same_description(s, d)):
            self.report.matched += 1
        self._settle(s, counted=reads.counted)

    async def _same_content(self, s: ObjectInfo, d: ObjectInfo, reads: _HalfCount) -> bool:
        """True when ``s`` and ``d`` hold the same bytes (as the mode tells); else the difference is reported."""
        if s.size is not None and d.size is not None and s.size != d.size:
            self.report.add(Difference(s.key, "different", f"size {s.size} at source, {d.size} at destination"))
            return False
        if self.mode == "size":
            return True
        native = await cheap_comparison(self.src, s, self.dst, d)
        if native is not None:  # a hash both sides give without reading (listings, a stat, a local file)
            algo, same = native
            if not same:
                self.report.add(Difference(s.key, "different", f"{algo} differs"))
            return same
        self.report.hashed += 1
        for confirming in (False, True):
            try:
                src_sum = await retry_call(lambda: _counted_sha256(self.src, s, reads), READ_RETRY)
            except NotFound:  # deleted since it was listed: the source no longer has it
                self.report.add(Difference(s.key, "extra", "deleted at source while verifying"))
                return False
            try:
                dst_sum = await retry_call(lambda: _counted_sha256(self.dst, d, reads), READ_RETRY)
            except NotFound:
                self.report.add(Difference(s.key, "missing", "deleted at destination while verifying"))
                return False
            if src_sum == dst_sum:
                return True
            if confirming or not _streamed(self.src, s) and not _streamed(self.dst, d):
                break
            # a read no digest of the store could check (a multipart object without a checksum) may have
            # been corrupted in transit: a difference is read once more before it is reported
        self.report.add(Difference(s.key, "different", f"sha256 {src_sum[:12]}… at source, "
                                                        f"{dst_sum[:12]}… at destination"))
        return False

    async def _same_description(self, s: ObjectInfo, d: ObjectInfo) -> bool:
        """True when ``s`` and ``d`` are described alike (where both have a place); else a ``metadata`` difference."""
        assert self.descriptions is not None
        try:  # a listing that does not know it (headers None, an S3 listing): the stat does
            s = s if s.headers is not None else await self.src.stat(s.key)
        except NotFound:
            self.report.add(Difference(s.key, "extra", "deleted at source while verifying"))
            return False
        try:
            d = d if d.headers is not None else await self.dst.stat(d.key)
        except NotFound:
            self.report.add(Difference(s.key, "missing", "deleted at destination while verifying"))
            return False
        found = self.descriptions.differences(s, d)
        if not found:
            return True
        parts = tuple(p for p in DESCRIPTION_PARTS if any(part == p for part, _ in found))
        self.report.add(Difference(s.key, "metadata", "; ".join(what for _, what in found), parts))
        return False

    def keys_to_fix(self) -> list[str]:
        """The keys to send again: missing or different content (a description that differs: :meth:`fix_described`)."""
        return [p.key for p in self.report.problems if p.kind in ("missing", "different")]

    async def fix_described(self) -> tuple[int, list[str]]:
        """Give the destination's objects of ``metadata`` differences the source's description.

        In place where the destination can change every part that differs
        (``features.description_in_place``); returns how many were, and the
        keys to send again instead (the others, and any the store could not
        change in place). An object changed or gone since it was compared is
        left to the verification that follows.
        """
        assert self.descriptions is not None
        descriptions = self.descriptions
        can = set(self.dst.features.description_in_place)
        in_place = [p.key for p in self.report.problems if p.kind == "metadata" and set(p.parts) <= can]
        resend = [p.key for p in self.report.problems if p.kind == "metadata" and not set(p.parts) <= can]
        done = [0]

        async def fix(key: str) -> None:
            try:
                s, d = await self.src.stat(key), await self.dst.stat(key)
                if await self.dst.set_description(key, descriptions.wanted(s, d), if_version=d.version):
                    done[0] += 1
                else:
                    resend.append(key)
            except BackendError as exc:
                log.warning("verify.fix_metadata_failed", key=key, error=str(exc))

        async def keys() -> AsyncIterator[str]:
            for key in in_place:
                yield key

        await run_pipeline(keys(), fix, workers=self.workers, queue_size=256, stop=self.stop, name="to_describe")
        return done[0], sorted(resend)


class _HalfCount:
    """Bytes one comparison has read on both sides, counted into ``stats`` as half a checked byte each."""

    def __init__(self, stats: JobStats | None) -> None:
        self.stats, self.read, self.counted = stats, 0, 0

    def __call__(self, n: int) -> None:
        if self.stats is not None:
            self.read += n
            half = self.read // 2
            self.stats.moved_bytes += half - self.counted
            self.counted = half


def _streamed(backend: Backend, info: ObjectInfo) -> bool:
    """Whether :func:`_counted_sha256` reads ``info`` over the network (not a stored digest, not a local file)."""
    return not info.hashes.get(SHA256) and not backend.features.local_path


async def _counted_sha256(backend: Backend, info: ObjectInfo, reads: _HalfCount) -> str:
    """:func:`object_sha256`, with the bytes of a streamed read counted as they come."""
    if info.hashes.get(SHA256) or backend.features.local_path:
        return await object_sha256(backend, info)  # no read, or one in a thread: counted once checked
    h = hashlib.sha256()
    async with backend.open(info.key) as chunks:
        async for chunk in chunks:
            h.update(chunk)
            reads(len(chunk))
    return h.hexdigest()


async def same_description(src: Backend, dst: Backend, key: str) -> bool:
    """Whether ``key`` is described alike on both sides now, as ``metadata`` mode compares (two stats).

    For a caller that confirms a ``metadata`` difference before acting on it
    (a content check would call it the same). Raises NotFound when either side has no ``key``.
    """
    return not Descriptions(src, dst).differences(await src.stat(key), await dst.stat(key))


async def verify_and_fix(src: Backend, dst: Backend, *, mode: Literal["checksum", "size"] = "checksum",
                         filt: Filter = NO_FILTER, sample: float = 1.0, workers: int = HASH_WORKERS,
                         fix: bool = False, stop: StopSignal | None = None, metadata: bool = False,
                         one_way: bool = False, delete: bool = False, max_delete: int | None = None,
                         stats: JobStats | None = None) -> dict[str, Any]:
    """Verify ``dst`` against ``src``; with ``fix``, copy what is missing or different and verify again.

    ``metadata``: descriptions are compared too, and ``fix`` gives a
    destination object the source's in place where the store can
    (:meth:`VerifyJob.fix_described`), else sends it again. ``one_way``:
    extras at the destination are no difference. ``delete`` (with ``fix``):
    extras are removed, under the guards of the module's text (JobAborted
    when one refuses). ``stats``: progress, as the module's text says.

    Returns the report as ``verify --json`` prints it: ``before_fix`` (the
    first report, when a fix ran), ``fixed`` (objects copied or described
    anew), with ``metadata``: ``fixed_in_place`` (those described anew
    without sending their bytes), with ``delete``: ``deleted`` and
    ``deletes_skipped``, and the fields of the last report.
    """
    from .copy import CopyJob, CopyOptions

    if delete and (one_way or not fix):
        raise ConfigError("--delete removes extras as part of --fix, and --one-way counts none: "
                          "use --fix --delete without --one-way")
    job = VerifyJob(src, dst, mode=mode, filt=filt, sample=sample, workers=workers, stop=stop, metadata=metadata,
                    one_way=one_way, stats=stats)
    report = await job.run()
    in_place = {"fixed_in_place": 0} if metadata else {}
    deletes = {"deleted": 0, "deletes_skipped": 0} if delete else {}
    if not fix or report.ok:
        return {"before_fix": None, "fixed": 0, **in_place, **deletes, **report.as_dict()}
    if delete and report.extra:
        extras_guard(report, dst, max_delete)
    keys = job.keys_to_fix()
    if metadata:
        done, resend = await job.fix_described()
        in_place["fixed_in_place"] = done
        keys = sorted(keys + resend)

    async def items() -> AsyncIterator[ObjectInfo]:
        for key in keys:
            yield await src.stat(key)

    progress = stats
    if progress is not None:
        progress.new_phase("fixing")
    stats = progress if progress is not None else JobStats()
    if keys:
        await CopyJob(src, dst, CopyOptions(transfers=workers), items=items(), stats=stats, stop=stop).run()
    copied, copies_failed = stats.done_objects, stats.failed_objects
    if delete and report.extra:
        if copies_failed:
            log.warning("verify.deletes_skipped", reason="some copies of the fix failed", extras=report.extra)
            deletes["deletes_skipped"] = report.extra
        elif not (stop is not None and stop.stopping):
            deletes["deleted"] = await delete_extras(src, dst, filt, limit=max_delete, workers=DELETE_WORKERS,
                                                     stop=stop)
    if progress is not None:
        progress.new_phase("verifying again")
    again = await VerifyJob(src, dst, mode=mode, filt=filt, sample=sample, workers=workers, stop=stop,
                            metadata=metadata, one_way=one_way, stats=progress).run()
    return {"before_fix": report.as_dict(), "fixed": copied + in_place.get("fixed_in_place", 0),
            **in_place, **deletes, **again.as_dict()}


def extras_guard(report: VerifyReport, dst: Backend, max_delete: int | None) -> None:
    """The guards of ``sync --delete`` for deleting ``report.extra`` objects: JobAborted when one refuses."""
    if report.src_objects == 0:
        raise JobAborted(f"the source listing came back empty: refusing to delete {report.extra} objects at "
                         f"{dst.describe()}; nothing was copied or deleted")
    if max_delete is not None and report.extra > max_delete:
        raise JobAborted(f"{report.extra} objects would be deleted at {dst.describe()}, more than --max-delete "
                         f"{max_delete}: nothing was copied or deleted")


async def delete_extras(src: Backend, dst: Backend, filt: Filter = NO_FILTER, *, limit: int | None = None,
                        workers: int = DELETE_WORKERS, stop: StopSignal | None = None) -> int:
    """Delete the objects of ``dst`` that ``src`` does not have (both listed through ``filt``, merged in key
    order: memory stays flat); at most ``limit`` of them. Returns how many were deleted."""
    deleted = 0

    async def extras() -> AsyncIterator[ObjectInfo]:
        source = ordered_listing(src, filt)
        dest = empty_if_missing(ordered_listing(dst, filt))
        async with aclosing(source), aclosing(dest):  # type: ignore[type-var]
            async for s, d in merge(source, dest):
                if s is None and d is not None:
                    yield d

    async def delete(info: ObjectInfo) -> None:
        nonlocal deleted
        if limit is not None and deleted >= limit:
            return  # more extras than were counted: they appeared meanwhile, and stay
        deleted += 1
        await dst.delete(info.key)
        log.info("object deleted", key=info.key)

    await run_pipeline(extras(), delete, workers=workers, queue_size=256, stop=stop, name="to_delete")
    return deleted
