"""Fixtures for the Yandex.Disk emulator and backend tests: a fresh emulator per test."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import pytest

from vertexflow.testing.yandex_disk import YandexDiskEmulator, running_emulator

TOKEN = "test-token-3f9a7c"


@pytest.fixture
async def emulator() -> AsyncIterator[YandexDiskEmulator]:
    async with running_emulator() as emu:
        yield emu


@pytest.fixture
def make_emulator() -> Callable[..., AbstractAsyncContextManager[YandexDiskEmulator]]:
    """``async with make_emulator(rate_limit=0.2) as emu`` for tests that need knobs."""
    return running_emulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"OAuth {token}"}


async def call(http: aiohttp.ClientSession, method: str, url: str, *, token: str | None = TOKEN,
               **kw: Any) -> tuple[int, Any]:
    """One request; returns ``(status, JSON body or text)``."""
    headers = kw.pop("headers", {})
    if token is not None:
        headers = {**auth(token), **headers}
    async with http.request(method, url, headers=headers, **kw) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text) if text else None
        except ValueError:
            return resp.status, text
