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

``sample`` checks a deterministic fraction of the common keys (chosen by a
hash of the key, so reruns check the same ones).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from ..backends.base import Backend
from ..errors import NotFound
from ..filters import NO_FILTER, Filter
from ..model import MD5, SHA256, ObjectInfo
from ..pipeline.runner import StopSignal, run_pipeline
from .plan import empty_if_missing, merge, object_sha256, ordered_listing

MAX_REPORTED = 1000
HASH_WORKERS = 8


@dataclass(slots=True)
class Difference:
    key: str
    kind: Literal["missing", "extra", "different"]
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"key": self.key, "kind": self.kind, "detail": self.detail}


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
    problems: list[Difference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.different)

    def add(self, diff: Difference) -> None:
        setattr(self, diff.kind, getattr(self, diff.kind) + 1)
        if len(self.problems) < 3 * MAX_REPORTED:
            self.problems.append(diff)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "src_objects": self.src_objects, "dst_objects": self.dst_objects,
                "compared": self.compared, "hashed_both_sides": self.hashed, "matched": self.matched,
                "missing": self.missing, "extra": self.extra, "different": self.different,
                "problems": [p.as_dict() for p in self.problems]}


def sampled(key: str, fraction: float) -> bool:
    """Deterministic: the same keys are picked on every run."""
    if fraction >= 1.0:
        return True
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2 ** 64 < fraction


class VerifyJob:
    def __init__(self, src: Backend, dst: Backend, *, mode: Literal["checksum", "size"] = "checksum",
                 filt: Filter = NO_FILTER, sample: float = 1.0, workers: int = HASH_WORKERS,
                 stop: StopSignal | None = None) -> None:
        self.src, self.dst = src, dst
        self.mode = mode
        self.filter = filt
        self.sample = sample
        self.workers = workers
        self.stop = stop or StopSignal()
        self.report = VerifyReport()

    async def run(self) -> VerifyReport:
        await self.src.check()
        await run_pipeline(self._pairs(), self._compare, workers=self.workers, queue_size=256, stop=self.stop,
                           name="to_compare")
        return self.report

    async def _pairs(self) -> AsyncIterator[tuple[ObjectInfo, ObjectInfo]]:
        report = self.report
        src = ordered_listing(self.src, self.filter)
        dst = empty_if_missing(ordered_listing(self.dst, self.filter))
        async for s, d in merge(src, dst):
            if s is not None:
                report.src_objects += 1
            if d is not None:
                report.dst_objects += 1
            if d is None:
                assert s is not None
                report.add(Difference(s.key, "missing", f"{s.size} bytes at source, absent at destination"))
            elif s is None:
                report.add(Difference(d.key, "extra", f"{d.size} bytes at destination, absent at source"))
            elif sampled(s.key, self.sample):
                yield s, d

    async def _compare(self, pair: tuple[ObjectInfo, ObjectInfo]) -> None:
        s, d = pair
        self.report.compared += 1
        if s.size is not None and d.size is not None and s.size != d.size:
            self.report.add(Difference(s.key, "different", f"size {s.size} at source, {d.size} at destination"))
            return
        if self.mode == "size":
            self.report.matched += 1
            return
        for algo in (SHA256, MD5):  # a hash both sides know costs no read
            if s.hashes.get(algo) and d.hashes.get(algo):
                if s.hashes[algo] == d.hashes[algo]:
                    self.report.matched += 1
                else:
                    self.report.add(Difference(s.key, "different", f"{algo} differs"))
                return
        self.report.hashed += 1
        try:
            src_sum = await object_sha256(self.src, s)
        except NotFound:  # deleted since it was listed: the source no longer has it
            self.report.add(Difference(s.key, "extra", "deleted at source while verifying"))
            return
        try:
            dst_sum = await object_sha256(self.dst, d)
        except NotFound:
            self.report.add(Difference(s.key, "missing", "deleted at destination while verifying"))
            return
        if src_sum == dst_sum:
            self.report.matched += 1
        else:
            self.report.add(Difference(s.key, "different", f"sha256 {src_sum[:12]}… at source, "
                                                            f"{dst_sum[:12]}… at destination"))

    def keys_to_fix(self) -> list[str]:
        return [p.key for p in self.report.problems if p.kind in ("missing", "different")]


async def verify_and_fix(src: Backend, dst: Backend, *, mode: Literal["checksum", "size"] = "checksum",
                         filt: Filter = NO_FILTER, sample: float = 1.0, workers: int = HASH_WORKERS,
                         fix: bool = False, stop: StopSignal | None = None) -> dict[str, Any]:
    """Verify ``dst`` against ``src``; with ``fix``, copy what is missing or different and verify again.

    Returns the report as ``verify --json`` prints it: ``before_fix`` (the
    first report, when a fix ran), ``fixed`` (objects copied) and the fields
    of the last report.
    """
    from ..pipeline.stats import JobStats
    from .copy import CopyJob, CopyOptions

    job = VerifyJob(src, dst, mode=mode, filt=filt, sample=sample, workers=workers, stop=stop)
    report = await job.run()
    if not fix or report.ok:
        return {"before_fix": None, "fixed": 0, **report.as_dict()}
    keys = job.keys_to_fix()

    async def items() -> AsyncIterator[ObjectInfo]:
        for key in keys:
            yield await src.stat(key)

    stats = JobStats()
    await CopyJob(src, dst, CopyOptions(transfers=workers), items=items(), stats=stats, stop=stop).run()
    again = await VerifyJob(src, dst, mode=mode, filt=filt, sample=sample, workers=workers, stop=stop).run()
    return {"before_fix": report.as_dict(), "fixed": stats.done_objects, **again.as_dict()}
