"""Cutting a job into shards: contiguous key ranges of the source listing.

A shard is the half-open range ``[start_at, end_before)`` of keys (``None``
is unbounded), so the shards of one plan cover the whole key space: an
object added to the source after planning still falls into exactly one
shard, and a shard run as an ordinary copy/sync with a range filter
(:class:`vertexflow.filters.Filter`) touches nothing outside it, on either
side (``sync --delete`` deletes only destination extras within its range).

The planner reads the source listing once, in key order (a backend that
does not list in order is sorted through SQLite first, see
:func:`vertexflow.ops.plan.ordered_listing`), and never holds the keys: it
keeps "pieces" (the first key of every ``granule`` objects, with their
object and byte counts); when there are more than ``MAX_PIECES`` it merges
neighbours and doubles the granule, so memory is bounded whatever the job
size. Once the listing ends it knows the totals and groups pieces into
shards:

* the number of shards adapts to the job: about ``PER_SLOT`` shards per
  worker thread (so a slow shard or a lost worker does not hold the tail
  of the job), but no shard smaller than both ``min_objects`` objects and
  ``min_bytes`` bytes unless the whole job is, except that a job of at least
  ``WORKER_MIN_OBJECTS`` objects or ``WORKER_MIN_BYTES`` bytes per worker
  thread gets a shard per worker thread at least (no worker idles); and
* every shard holds at most ``max_objects`` objects and about
  ``max_bytes`` bytes (one object larger than that is a shard of its own).

A shard's worker lists only under the longest common prefix of its two
bounds (:func:`listing_prefix`): where the source has a hierarchy, most
shards list one or a few "directories", not the whole tree.
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from ..model import ObjectInfo

#: default largest shard: a retried shard re-lists (and re-compares) at most this much
MAX_OBJECTS = 100_000
#: default largest shard in bytes: bounds the work lost with a worker
MAX_BYTES = 64 * 1024 ** 3
#: default smallest shard, in objects and in bytes: a shard costs about half a second
#: of its own (task start, fresh connections, a listing of each side), so a
#: shard of fewer small objects than this spends more than ~5% of its time on that
#: (measured: dataset B on 2 workers took 31% longer as 8 shards than in one
#: process, 6% as 2 shards)
MIN_OBJECTS = 10_000
MIN_BYTES = 1024 ** 3
#: the floors that keep every worker busy: a job of at least this many objects (or bytes)
#: per worker is cut into one shard per worker at least (2 shards on 2 workers cost ~6%
#: over one process, against a worker idle for the whole job)
WORKER_MIN_OBJECTS = 1_000
WORKER_MIN_BYTES = 256 * 1024 ** 2
#: environment variables that override the bounds (sizes take units: 512M, 10G)
BOUND_VARIABLES = {"max_objects": "VERTEXFLOW_SHARD_MAX_OBJECTS", "max_bytes": "VERTEXFLOW_SHARD_MAX_BYTES",
                   "min_objects": "VERTEXFLOW_SHARD_MIN_OBJECTS", "min_bytes": "VERTEXFLOW_SHARD_MIN_BYTES"}
#: shards per worker thread when the job is big enough
PER_SLOT = 4
#: pieces kept while listing; past this, neighbours merge (memory bound: ~100 bytes per piece plus its key)
MAX_PIECES = 20_000


@dataclass(frozen=True, slots=True)
class Shard:
    """Keys in ``[start_at, end_before)`` (None: unbounded); the counts are as planned."""

    index: int
    start_at: str | None
    end_before: str | None
    objects: int = 0
    bytes: int = 0

    def contains(self, key: str) -> bool:
        return (self.start_at is None or key >= self.start_at) and (self.end_before is None or key < self.end_before)


@dataclass(slots=True)
class _Piece:
    first: str
    objects: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class ShardPlan:
    shards: list[Shard]
    objects: int
    bytes: int


def bounds_from_env(environ: Mapping[str, str] = os.environ) -> dict[str, int]:
    """The shard bounds set in the environment (``BOUND_VARIABLES``); raises ConfigError naming a bad one."""
    from ..errors import ConfigError
    from ..filters import parse_size

    out: dict[str, int] = {}
    for name, var in BOUND_VARIABLES.items():
        if text := environ.get(var):
            value = parse_size(text)
            if value < 1:
                raise ConfigError(f"{var}={text!r}: must be at least 1")
            out[name] = value
    return out


def listing_prefix(start_at: str | None, end_before: str | None, prefix: str = "") -> str:
    """The longest prefix every key of ``[start_at, end_before)`` under ``prefix`` shares.

    If ``a <= k < b`` then ``k`` starts with the common prefix of ``a`` and
    ``b``, so listing only under it misses nothing.
    """
    if start_at is None or end_before is None:
        return prefix
    common = os.path.commonprefix([start_at, end_before])
    return common if common.startswith(prefix) else prefix


class ShardPlanner:
    """Feed it the listing in key order (:meth:`add`), then :meth:`plan`."""

    def __init__(self, *, slots: int, max_objects: int = MAX_OBJECTS, max_bytes: int = MAX_BYTES,
                 min_objects: int = MIN_OBJECTS, min_bytes: int = MIN_BYTES, granule: int = 64) -> None:
        if max_objects < 1 or max_bytes < 1 or slots < 1:
            raise ValueError("shard bounds and slots must be positive")
        self.slots, self.max_objects, self.max_bytes = slots, max_objects, max_bytes
        self.min_objects = min(min_objects, max_objects)
        self.min_bytes = max(1, min(min_bytes, max_bytes))
        self.granule = max(1, min(granule, max_objects))
        # a piece never outgrows a shard, so shards can honour the bounds; nor a worker's floor, so
        # that a job of a few large objects still splits across the workers
        self._piece_bytes = max(1, min(max_bytes // 16, WORKER_MIN_BYTES))
        self.pieces: list[_Piece] = []
        self.objects = self.bytes = 0
        self._last: str | None = None

    def add(self, info: ObjectInfo) -> None:
        key, size = info.key, info.size or 0
        if self._last is not None and key <= self._last:
            raise ValueError(f"listing not in key order at {key!r}")
        self._last = key
        cur = self.pieces[-1] if self.pieces else None
        if (cur is None or cur.objects >= self.granule or cur.bytes + size > self._piece_bytes
                or cur.objects + 1 > self.max_objects):
            cur = _Piece(key)
            self.pieces.append(cur)
            if len(self.pieces) > MAX_PIECES:
                self._coarsen()
                cur = self.pieces[-1]
        cur.objects += 1
        cur.bytes += size
        self.objects += 1
        self.bytes += size

    def _coarsen(self) -> None:
        """Merge neighbouring pieces where the merged piece stays within a shard's bounds."""
        merged: list[_Piece] = []
        for piece in self.pieces:
            last = merged[-1] if merged else None
            if (last is not None and last.objects + piece.objects <= self.max_objects
                    and last.bytes + piece.bytes <= self.max_bytes and last.objects < 2 * self.granule):
                last.objects += piece.objects
                last.bytes += piece.bytes
            else:
                merged.append(piece)
        self.pieces = merged
        self.granule *= 2

    def plan(self) -> ShardPlan:
        """Group the pieces into shards (at least one, covering every key)."""
        every_worker = min(self.slots, max(self.objects // WORKER_MIN_OBJECTS, self.bytes // WORKER_MIN_BYTES))
        want = max(math.ceil(self.objects / self.max_objects), math.ceil(self.bytes / self.max_bytes),
                   min(PER_SLOT * self.slots, max(self.objects // max(1, self.min_objects),
                                                   self.bytes // self.min_bytes)), every_worker, 1)
        obj_target = min(self.max_objects, max(1, math.ceil(self.objects / want)))
        bytes_target = min(self.max_bytes, max(1, math.ceil(self.bytes / want)))
        groups: list[list[_Piece]] = [[]]
        acc_objects = acc_bytes = 0
        for piece in self.pieces:
            over = (acc_objects + piece.objects > self.max_objects or acc_bytes + piece.bytes > self.max_bytes
                    or acc_objects >= obj_target or (acc_bytes >= bytes_target and acc_objects > 0))
            if groups[-1] and over:
                groups.append([])
                acc_objects = acc_bytes = 0
            groups[-1].append(piece)
            acc_objects += piece.objects
            acc_bytes += piece.bytes
        shards: list[Shard] = []
        for i, group in enumerate(groups):
            start = None if i == 0 else group[0].first
            end = groups[i + 1][0].first if i + 1 < len(groups) else None
            shards.append(Shard(i, start, end, sum(p.objects for p in group), sum(p.bytes for p in group)))
        return ShardPlan(shards, self.objects, self.bytes)


async def plan_shards(listing: AsyncIterator[ObjectInfo], *, slots: int, **bounds: int) -> ShardPlan:
    """Plan shards from ``listing`` (ascending key order), streamed."""
    planner = ShardPlanner(slots=slots, **bounds)
    async for info in listing:
        planner.add(info)
    return planner.plan()
