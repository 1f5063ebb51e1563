"""Adaptive concurrency: in flight drops when a store says "slow down" and grows back after."""

from __future__ import annotations

from typing import Any

import random
from pathlib import Path

import anyio
import pytest

from vertexflow.backends.base import UploadCheckpoint
from vertexflow.backends.local import LocalBackend
from vertexflow.errors import Throttled
from vertexflow.middleware.adaptive import AdaptiveBackend, AIMDLimiter
from vertexflow.middleware.base import BackendWrapper
from vertexflow.middleware.wrap import wrap
from vertexflow.model import BodyFactory, ObjectInfo
from vertexflow.ops.copy import CopyJob, CopyOptions
from vertexflow.pipeline.stats import JobStats
from vertexflow.retry import RetryPolicy
from vertexflow.testing.sample_tree import make_tree, trees_equal

PATIENT = RetryPolicy(attempts=30, base_delay=0.005, max_delay=0.05, deadline=60)


class SlowDownServer(BackendWrapper):
    """A store that answers "slow down" to puts beyond ``capacity`` in flight, or at random at ``rate``.

    Each put takes ``latency`` seconds, so that puts overlap as they would over a network.
    """

    def __init__(self, inner: LocalBackend, *, capacity: int | None = None, rate: float = 0.0,
                 latency: float = 0.005, seed: int = 1) -> None:
        super().__init__(inner)
        self.capacity, self.rate, self.latency = capacity, rate, latency
        self.rng = random.Random(seed)
        self.in_flight = 0
        self.accepted = 0
        self.refused = 0

    async def put(self, info: ObjectInfo, body: BodyFactory, *,
                  checkpoint: UploadCheckpoint | None = None, pace: Any = None) -> ObjectInfo:
        self.in_flight += 1
        try:
            await anyio.sleep(self.latency)
            if (self.capacity is not None and self.in_flight > self.capacity) or self.rng.random() < self.rate:
                self.refused += 1
                raise Throttled("503 SlowDown (injected)", backend="test", key=info.key)
            result = await self.inner.put(info, body)
            self.accepted += 1
            return result
        finally:
            self.in_flight -= 1


async def test_one_burst_of_throttling_cuts_once_and_successes_add_back() -> None:
    limiter = AIMDLimiter(16)
    started = anyio.Event()

    async def throttled_request() -> None:
        try:
            async with limiter.slot():
                await started.wait()
                raise Throttled("slow down")
        except Throttled:
            pass

    async with anyio.create_task_group() as tg:
        for _ in range(16):
            tg.start_soon(throttled_request)
        await anyio.sleep(0.01)
        assert limiter.in_flight == 16
        started.set()
    assert (limiter.limit, limiter.cuts, limiter.throttled) == (8, 1, 16)  # 16 refusals, one cut
    for _ in range(8):
        async with limiter.slot():
            pass
    assert limiter.limit == pytest.approx(9, abs=0.05)  # +1 per round of `limit` successes
    for _ in range(1000):
        async with limiter.slot():
            pass
    assert limiter.limit == 16  # never above the maximum


async def test_refusals_retried_inside_the_backend_cut_too() -> None:
    limiter = AIMDLimiter(16)
    retried = [0]
    async with limiter.slot(lambda: retried[0]):
        retried[0] += 1  # the backend retried a 429 on its own
    assert limiter.limit == 8 and limiter.throttled == 1
    async with limiter.slot(lambda: retried[0]):
        pass
    assert limiter.limit > 8


async def test_slots_wait_while_over_the_limit() -> None:
    limiter = AIMDLimiter(4)
    limiter.limit = 2
    go = anyio.Event()

    async def request() -> None:
        async with limiter.slot():
            await go.wait()

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(request)
        await anyio.sleep(0.01)
        assert limiter.in_flight == 2  # the other 8 wait
        go.set()
    assert limiter.in_flight == 0 and limiter.limit > 2


async def sample(limiter: AIMDLimiter, out: list[tuple[float, int]]) -> None:
    while True:
        out.append((limiter.limit, limiter.in_flight))
        await anyio.sleep(0.002)


async def test_in_flight_drops_under_throttling_and_recovers(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=400, min_size=100, max_size=2000)
    server = SlowDownServer(LocalBackend(tmp_path / "dst"), capacity=4)
    stats = JobStats()
    dst = wrap(server, adaptive=16, stats=stats)
    assert isinstance(dst, AdaptiveBackend)
    limiter = dst.limiter
    samples: list[tuple[float, int]] = []

    async def lift_capacity() -> None:
        while server.accepted < 150:
            await anyio.sleep(0.002)
        server.capacity = None  # the store recovers
        lifted.append(len(samples))

    lifted: list[int] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(sample, limiter, samples)
        tg.start_soon(lift_capacity)
        await CopyJob(LocalBackend(tmp_path / "src"), dst, CopyOptions(transfers=16, retry=PATIENT),
                      stats=stats).run()
        tg.cancel_scope.cancel()
    assert stats.failed_objects == 0 and trees_equal(tmp_path / "src", tmp_path / "dst") == []
    during = [in_flight for _, in_flight in samples[len(samples) // 10:lifted[0]]]
    after = [in_flight for _, in_flight in samples[lifted[0]:]]
    assert limiter.lowest <= 4  # cut to what the store takes
    assert max(during) <= 8  # ... and kept near it: not 16
    assert max(after) > 8 and limiter.limit >= 12  # grown back once the store recovered
    report = stats.summary()["concurrency"][server.describe()]
    assert report["max"] == 16 and report["lowest"] <= 4 and report["throttled"] == server.refused > 0
    assert report["peak_in_flight"] > 8  # before the first refusals


async def test_adaptive_refuses_fewer_than_a_fixed_concurrency(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=200, min_size=100, max_size=2000)
    refused = {}
    for adaptive in (None, 16):
        server = SlowDownServer(LocalBackend(tmp_path / f"dst-{adaptive}"), capacity=4)
        await CopyJob(LocalBackend(tmp_path / "src"), wrap(server, adaptive=adaptive),
                      CopyOptions(transfers=16, retry=PATIENT)).run()
        refused[adaptive] = server.refused
    # the margin leaves room for scheduling noise: measured 2.7-4x fewer refusals
    assert refused[16] * 2 < refused[None]


async def test_random_throttling_lowers_the_limit_and_it_recovers(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=300, min_size=100, max_size=2000)
    server = SlowDownServer(LocalBackend(tmp_path / "dst"), rate=0.3)
    dst = wrap(server, adaptive=16)
    assert isinstance(dst, AdaptiveBackend)

    async def calm_down() -> None:
        while server.accepted < 100:
            await anyio.sleep(0.002)
        lowered.append(dst.limiter.limit)
        server.rate = 0.0

    lowered: list[float] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(calm_down)
        stats = await CopyJob(LocalBackend(tmp_path / "src"), dst, CopyOptions(transfers=16, retry=PATIENT)).run()
    assert stats.failed_objects == 0
    assert dst.limiter.lowest < 4 and lowered[0] < 8
    assert dst.limiter.limit > lowered[0] + 4


async def test_yandex_429s_through_the_adaptive_limiter(tmp_path: Path) -> None:
    from vertexflow.backends.yandex import YandexDiskBackend
    from vertexflow.testing.yandex_disk import running_emulator

    make_tree(tmp_path / "src", files=120, min_size=100, max_size=4000)
    stats = JobStats()
    async with running_emulator(rate_limit=0.15, retry_after=0.01, seed=5) as emu:
        async with YandexDiskBackend("/adaptive", token="t", base_url=emu.base_url) as yd:
            dst = wrap(yd, adaptive=16, stats=stats)
            await CopyJob(LocalBackend(tmp_path / "src"), dst, CopyOptions(transfers=16, retry=PATIENT),
                          stats=stats).run()
            assert stats.failed_objects == 0
            async with LocalBackend(tmp_path / "back") as back:
                await CopyJob(yd, back, CopyOptions(retry=PATIENT)).run()
    assert trees_equal(tmp_path / "src", tmp_path / "back") == []
    report = stats.summary()["concurrency"][yd.describe()]
    assert report["throttled"] > 0 and report["lowest"] < 16
