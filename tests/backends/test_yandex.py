"""Yandex.Disk backend: the conformance suite against the emulator."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest

from vertexflow.backends.yandex import YandexDiskBackend
from vertexflow.retry import RetryPolicy
from vertexflow.testing.yandex_disk import YandexDiskEmulator, running_emulator

from .conformance import BackendConformance

_roots = itertools.count()


@pytest.fixture(scope="session")
async def yandex_emulator() -> AsyncIterator[YandexDiskEmulator]:
    async with running_emulator(token="conformance-token") as emu:
        yield emu


@pytest.fixture
async def backend(yandex_emulator: YandexDiskEmulator) -> AsyncIterator[YandexDiskBackend]:
    b = YandexDiskBackend(f"/conformance-{next(_roots)}", token="conformance-token",
                          base_url=yandex_emulator.base_url,
                          retry_policy=RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.1))
    await b.check(write=True)
    async with b:
        yield b


class TestYandexConformance(BackendConformance):
    pass
