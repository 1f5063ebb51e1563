"""Bandwidth limits on a real local-disk copy: the achieved rate over sliding windows."""

from __future__ import annotations

from typing import Any

import os
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest

from vertexflow.backends.base import UploadCheckpoint
from vertexflow.backends.local import LocalBackend
from vertexflow.middleware.base import BackendWrapper
from vertexflow.middleware.throttled import ThrottledBackend
from vertexflow.middleware.wrap import wrap
from vertexflow.model import BodyFactory, ObjectInfo
from vertexflow.ops.copy import CopyJob, CopyOptions
from vertexflow.testing.sample_tree import trees_equal
from vertexflow.throttle import Bandwidth

M = 1024 * 1024


class Recording(BackendWrapper):
    """Notes when each piece of a put's body reaches the store (under the limit, as a network would)."""

    def __init__(self, inner: LocalBackend) -> None:
        super().__init__(inner)
        self.events: list[tuple[float, int]] = []

    async def put(self, info: ObjectInfo, body: BodyFactory, *,
                  checkpoint: UploadCheckpoint | None = None, pace: Any = None) -> ObjectInfo:
        events = self.events

        async def recorded() -> AsyncIterator[bytes]:
            async with aclosing(body()) as chunks:  # type: ignore[type-var]
                async for chunk in chunks:
                    events.append((time.monotonic(), len(chunk)))
                    yield chunk

        return await self.inner.put(info, recorded)


def window_rates(events: list[tuple[float, int]], width: float, step: float = 0.05) -> list[float]:
    """Bytes per second in every window of ``width`` seconds that lies within the transfer."""
    start, end = events[0][0], events[-1][0]
    rates = []
    t = start
    while t + width <= end:
        rates.append(sum(n for when, n in events if t <= when < t + width) / width)
        t += step
    return rates


def worst_error(events: list[tuple[float, int]], rate: float, width: float) -> float:
    rates = window_rates(events, width)
    assert rates, "the transfer was shorter than one window"
    return max(abs(r - rate) / rate for r in rates)


def make_source(root: Path, total: int) -> None:
    root.mkdir(parents=True)
    sizes = [total // 8] * 4 + [total // 16] * 8  # large files stream, small ones go whole
    sizes[-1] += total - sum(sizes)
    for i, size in enumerate(sizes):
        (root / f"f{i:02d}.bin").write_bytes(os.urandom(size))


async def limited_copy(tmp_path: Path, rate: int, seconds: float) -> list[tuple[float, int]]:
    make_source(tmp_path / "src", int(rate * seconds))
    recorder = Recording(LocalBackend(tmp_path / "dst"))
    dst = wrap(recorder, bandwidth=Bandwidth.from_options(str(rate)))
    assert isinstance(dst, ThrottledBackend)
    stats = await CopyJob(LocalBackend(tmp_path / "src"), dst, CopyOptions(transfers=4)).run()
    assert stats.failed_objects == 0
    assert trees_equal(tmp_path / "src", tmp_path / "dst") == []
    return recorder.events


def test_the_window_check_can_fail() -> None:
    steady = [(i * 0.01, 10_000) for i in range(300)]  # 1 MB/s for 3 s
    assert worst_error(steady, 1_000_000, 1.0) < 0.02
    assert worst_error(steady, 900_000, 1.0) > 0.05  # 11% over the limit
    bursty = [(i * 0.01, 20_000 if 100 <= i < 150 else 10_000) for i in range(300)]
    assert worst_error(bursty, 1_000_000, 1.0) > 0.05


async def test_limit_holds_within_5_percent_on_a_local_copy(tmp_path: Path) -> None:
    rate = 4 * M
    events = await limited_copy(tmp_path, rate, 3.0)
    assert worst_error(events, rate, 1.0) < 0.05
    elapsed = events[-1][0] - events[0][0]
    assert abs(sum(n for _, n in events) / elapsed - rate) / rate < 0.05


@pytest.mark.slow
async def test_limit_holds_within_5_percent_over_10_second_windows(tmp_path: Path) -> None:
    rate = 2 * M
    events = await limited_copy(tmp_path, rate, 22.0)
    assert worst_error(events, rate, 10.0) < 0.05


async def test_reads_are_limited_too(tmp_path: Path) -> None:
    make_source(tmp_path / "src", 6 * M)
    bw = Bandwidth.from_options(None, down="4M")
    src = wrap(LocalBackend(tmp_path / "src"), bandwidth=bw)
    start = time.monotonic()
    await CopyJob(src, LocalBackend(tmp_path / "dst"), CopyOptions(transfers=4)).run()
    elapsed = time.monotonic() - start
    assert 1.4 < elapsed < 1.7  # 6 MiB at 4 MiB/s, less the first burst
    assert trees_equal(tmp_path / "src", tmp_path / "dst") == []
