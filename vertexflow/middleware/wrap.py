"""The one place where decorators are put around a backend, and in what order.

From the outside in::

    TransformedBackend   objects in, stored forms out (hash, compress, chunk)
    ThrottledBackend     bandwidth: counts the bytes that really move (compressed
                         bytes, every part, manifests)
    AdaptiveBackend      AIMD concurrency: each request to the store (so each
                         chunk part) takes its own slot
    the backend

Backends never know about limits or stages. With nothing asked, :func:`wrap`
returns the backend itself, so the engine keeps its local fast paths.
"""

from __future__ import annotations

from typing import Any

from ..backends.base import Backend
from ..pipeline.stats import JobStats
from ..throttle import Bandwidth
from ..transforms import Stages, TransformCounters
from .adaptive import AdaptiveBackend, AIMDLimiter
from .stages import TransformedBackend
from .throttled import ThrottledBackend


class ConcurrencyReport:
    """The adaptive limiters of a job, by backend, for its summary."""

    def __init__(self) -> None:
        self.limiters: dict[str, AIMDLimiter] = {}

    def as_dict(self) -> dict[str, Any]:
        return {name: limiter.as_dict() for name, limiter in self.limiters.items()}

    def describe(self) -> str:
        return "; ".join(f"{name}: {limiter.describe()}" for name, limiter in self.limiters.items())


def wrap(backend: Backend, *, stages: Stages | None = None, bandwidth: Bandwidth | None = None,
         remote_bandwidth: Bandwidth | None = None, adaptive: int | None = None,
         stats: JobStats | None = None) -> Backend:
    """``backend`` with what is asked of it.

    ``bandwidth`` is the job's limit (shared by both ends: reads count
    against ``down``, writes against ``up``); ``remote_bandwidth`` this
    remote's own, from its config. ``adaptive`` is the most requests in
    flight (AIMD); None turns it off. ``stats`` receives the counters the
    summary reports ("transforms", "concurrency", "bwlimit").
    """
    limits = [b for b in (bandwidth, remote_bandwidth) if b is not None]
    reads = [b.down for b in limits if b.down is not None]
    writes = [b.up for b in limits if b.up is not None]
    out = backend
    if adaptive is not None:
        limiter = AIMDLimiter(adaptive)
        out = AdaptiveBackend(out, limiter)
        if stats is not None:
            report = stats.reporters.setdefault("concurrency", ConcurrencyReport())
            report.limiters[backend.describe()] = limiter
    if reads or writes:
        out = ThrottledBackend(out, reads=reads, writes=writes)
        if stats is not None and bandwidth is not None:
            stats.reporters["bwlimit"] = bandwidth
    if stages is not None and stages.active:
        writes_stages = stats is not None and bool(stages.order)  # a reading view has nothing to report
        counters = stats.reporters.setdefault("transforms", TransformCounters()) if writes_stages else None
        out = TransformedBackend(out, stages, counters)
    return out
