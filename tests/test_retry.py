"""Retries: what a failed attempt leaves behind while the next one waits."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from vertexflow.errors import TransientError
from vertexflow.retry import RetryPolicy, release_frames, retry_call


class Buffer:
    """Stands for a part in flight (weakly referenceable, unlike bytes)."""


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    # what matters is what refcounting frees; the cyclic collector would hide it
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _fail_holding(held: list[weakref.ref[Buffer]], n: int) -> None:
    part = Buffer()
    held.append(weakref.ref(part))
    error = TransientError(f"part {n} failed")
    raise error  # the frame keeps `part` and `error`; error -> traceback -> frame: a cycle


def test_release_frames_reaches_chained_and_grouped_errors(no_cyclic_gc: None) -> None:
    held: list[weakref.ref[Buffer]] = []
    errors = []
    for n in range(3):
        try:
            _fail_holding(held, n)
        except TransientError as exc:
            errors.append(exc)
    try:
        try:
            raise ExceptionGroup("parts", errors)
        except ExceptionGroup as group:
            raise RuntimeError("object failed") from group.exceptions[0]  # context: the group
    except RuntimeError as exc:
        caught = exc
    del errors
    assert [r() is not None for r in held] == [True, True, True]
    release_frames(caught)
    assert [r() is None for r in held] == [True, True, True]


async def test_a_retry_waits_without_the_failed_attempts_buffers(no_cyclic_gc: None) -> None:
    held: list[weakref.ref[Buffer]] = []
    alive_while_waiting: list[bool] = []

    async def attempt() -> str:
        if held:
            alive_while_waiting.append(held[0]() is not None)
            return "done"
        _fail_holding(held, 1)
        return "unreachable"

    assert await retry_call(attempt, RetryPolicy(attempts=2, base_delay=0.0)) == "done"
    assert alive_while_waiting == [False]
