"""Dirty keys are reconciled and compared several at once (``vertexflow.ops.migrate.each_at_once``): one at a
time, a pass over a few hundred keys through a slow or flaky link outlasted the writers it chased (chaos
round migrate_rollback, seeds 1-3, held past the harness's 180 s)."""

from __future__ import annotations

import anyio
import pytest

from vertexflow.errors import MigrationFailed
from vertexflow.ops.migrate import RECONCILE_CONCURRENCY, each_at_once


async def test_chaos_seed_migrate_rollback_1_dirty_keys_are_handled_many_at_once() -> None:
    seen: list[int] = []
    in_flight = peak = 0

    async def handle(item: int) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await anyio.sleep(0.01)
        seen.append(item)
        in_flight -= 1

    await each_at_once(range(100), handle)
    assert sorted(seen) == list(range(100))
    assert peak == RECONCILE_CONCURRENCY


async def test_the_first_error_stops_the_others_and_is_raised_as_itself() -> None:
    started: list[int] = []

    async def handle(item: int) -> None:
        started.append(item)
        if item == 3:
            raise MigrationFailed("verification of k3 failed after its final sync", migration_id=7)
        await anyio.sleep(1)

    with anyio.fail_after(10), pytest.raises(MigrationFailed, match="k3"):
        await each_at_once(range(1000), handle)
    assert len(started) < 1000  # the rest were never started
