"""A job-wide bandwidth limit split across the shards running on a cluster.

The driver owns the limit (``--bwlimit``, ``--bwlimit-up``/``-down``, a
timetable). It publishes one number, the *share*: ``1 / n`` where ``n`` is
the number of shards that can run at once, ``min(unfinished shards, worker
threads)``. Each shard's buckets run at ``limit x share``, the limit read
from the timetable at the shard's own clock (so a timetable switches on
every worker as it would in one process).

Why that ``n`` rather than "shards seen running": while more shards wait
than there are threads, a finished shard is replaced at once, so the
share stays put and no new shard ever starts at a share that, added to the
others, exceeds the limit. It grows only in the tail of the job, when
fewer shards are left than threads: the remaining shards then take over
the bandwidth of the finished ones. A shard polls the share every
``POLL_SECONDS`` and a waiting bucket rechecks its rate at least every
second, so a change applies within about 1.5 s. A lost worker leaves the
share as it was until its shard is rescheduled: the job then runs below the
limit, never above it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import anyio

from ..throttle import BUFFER, RECHECK, Bandwidth, Timetable, TokenBucket, parse_bwlimit

#: how often a shard looks at the driver's share
POLL_SECONDS = 0.5


def slots_share(unfinished: int, slots: int) -> float:
    """The share of the job's limit one running shard gets."""
    return 1.0 / max(1, min(unfinished, slots))


class ShardBandwidth(Bandwidth):
    """A :class:`Bandwidth` whose rates are the job's timetable times :attr:`share` (set from outside)."""

    def __init__(self, up: Timetable | None, down: Timetable | None, *, share: float,
                 now: Callable[[], datetime] = datetime.now) -> None:
        super().__init__(up, down, now=now)
        self.share = share
        self.up = TokenBucket(self._rate(up, "up", now), buffer=BUFFER) if up else None
        self.down = TokenBucket(self._rate(down, "down", now), buffer=BUFFER) if down else None

    def _rate(self, table: Timetable, side: str, now: Callable[[], datetime]) -> Callable[[], float | None]:
        cached: list[float] = [float("-inf"), 0.0]  # until, job-wide rate (or -1 for off)

        def rate() -> float | None:
            t = anyio.current_time()
            if t >= cached[0]:  # the timetable is looked up at most once a second
                job_rate = getattr(table.rates_at(now()), side)
                cached[:] = [t + RECHECK, -1.0 if job_rate is None else job_rate]
            return None if cached[1] < 0 else cached[1] * self.share

        return rate

    @classmethod
    def from_texts(cls, limits: tuple[str | None, str | None, str | None], share: float) -> ShardBandwidth | None:
        """From the job's ``(--bwlimit, --bwlimit-up, --bwlimit-down)`` texts, as :meth:`Bandwidth.from_options`."""
        both, up, down = limits
        template = Bandwidth.from_options(both, up, down)  # validates, and decides each side's table
        if template is None:
            return None
        both_table = parse_bwlimit(both) if both else None
        up_table = parse_bwlimit(up, "--bwlimit-up") if up else both_table
        down_table = parse_bwlimit(down, "--bwlimit-down") if down else both_table
        return cls(up_table, down_table, share=share)
