"""Short blocking calls: on the event loop while they stay short, in threads once they are not."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import anyio
import pytest

from vertexflow.backends.local import INLINE_WRITE, LocalBackend
from vertexflow.backends.short_calls import ShortCalls
from vertexflow.model import ObjectInfo, body_from_bytes


def _where() -> int:
    return threading.get_ident()


def _sleep_then_where(seconds: float) -> int:
    time.sleep(seconds)
    return threading.get_ident()


async def test_quick_calls_run_on_the_loop() -> None:
    calls = ShortCalls(anyio.CapacityLimiter(2))
    here = threading.get_ident()
    for _ in range(50):
        assert await calls.run(_where) == here
    assert (calls.inline_calls, calls.thread_calls) == (50, 0)


async def test_one_stall_sends_calls_to_threads_until_the_cool_down_ends() -> None:
    calls = ShortCalls(anyio.CapacityLimiter(2), stall_s=0.02, cool_down_s=0.3)
    here = threading.get_ident()
    assert await calls.run(_sleep_then_where, 0.05) == here  # the stall itself ran inline
    assert not calls.inline
    assert await calls.run(_where) != here
    assert calls.thread_calls == 1
    await anyio.sleep(0.35)
    assert calls.inline
    assert await calls.run(_where) == here


async def test_calls_slow_on_average_go_to_threads_a_lone_outlier_does_not() -> None:
    calls = ShortCalls(anyio.CapacityLimiter(2), slow_s=0.002, stall_s=1.0, cool_down_s=60)
    await calls.run(time.sleep, 0.02)  # 10x the limit, once: the average moves by a 64th of it
    for _ in range(20):
        await calls.run(_where)
    assert calls.inline
    for n in range(1, 101):  # 5 ms each: the average passes 2 ms after ~33 calls
        await calls.run(time.sleep, 0.005)
        if not calls.inline:
            break
    assert not calls.inline, "calls stayed inline although every one was slow"
    assert 3 <= n <= 64  # not at the first slow call (each moves the average by a 64th)
    assert await calls.run(_where) != threading.get_ident()


async def test_an_inline_call_raises_what_it_raised() -> None:
    calls = ShortCalls(anyio.CapacityLimiter(1))

    def fail() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        await calls.run(fail)
    assert calls.inline


async def test_a_call_cancelled_before_it_starts_does_not_run() -> None:
    calls = ShortCalls(anyio.CapacityLimiter(1))
    ran: list[int] = []
    with anyio.CancelScope() as scope:
        scope.cancel()
        await calls.run(ran.append, 1)
    assert scope.cancelled_caught and ran == []


@pytest.mark.parametrize("fsync", [False, True])
async def test_local_puts_of_small_objects_are_written_inline_larger_ones_in_threads(tmp_path: Path,
                                                                                   fsync: bool) -> None:
    # with fsync a small write waits for a disk flush: never on the loop, in threads that wait together
    backend = LocalBackend(tmp_path, fsync=fsync)
    try:
        small, large = b"s" * 1000, b"L" * (INLINE_WRITE + 1)
        await backend.put(ObjectInfo(key="a/small", size=len(small)), body_from_bytes(small))
        await backend.put(ObjectInfo(key="a/large", size=len(large)), body_from_bytes(large))
        assert backend.short_calls.inline_calls == (0 if fsync else 1)
        assert (tmp_path / "a/small").read_bytes() == small
        assert (tmp_path / "a/large").read_bytes() == large
    finally:
        await backend.aclose()
