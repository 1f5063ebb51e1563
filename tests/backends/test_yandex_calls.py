"""Yandex.Disk: the API calls a put and an open make per file, counted by the emulator.

Each call costs a round trip to a distant service, so a file takes no call
the protocol and vertexflow's checks do not need: a put is the upload link,
the PUT, and one PATCH for its properties whose answer carries the server's
SHA-256 (the check of what was stored); an open is one stat whose answer
carries the download link, and the GET of that link.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from contextlib import aclosing
from datetime import datetime, timezone
from pathlib import Path

import anyio
import pytest
import yadisk

from vertexflow.backends.yandex import YandexDiskBackend
from vertexflow.backends.yandex.api import Resource
from vertexflow.backends.yandex.listing import sort_entries, walk
from vertexflow.errors import IntegrityError
from vertexflow.model import ObjectInfo, body_from_bytes, read_all
from vertexflow.retry import RetryPolicy
from vertexflow.testing.yandex_disk import YandexDiskEmulator, running_emulator

TOKEN = "calls-token"
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, deadline=10)
FILES = 12
WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)


def payload(i: int) -> bytes:
    return f"file {i} ".encode() * (100 + i)


def independent(emu: YandexDiskEmulator, monkeypatch: pytest.MonkeyPatch) -> yadisk.AsyncClient:
    """yadisk, pointed at the emulator: checks what vertexflow wrote by its own requests."""
    monkeypatch.setattr(yadisk.settings, "BASE_API_URL", emu.origin)
    return yadisk.AsyncClient(token=TOKEN, session="aiohttp")


def since(emu: YandexDiskEmulator, before: Counter[str]) -> Counter[str]:
    return Counter(emu.request_counts) - before


async def test_put_is_link_put_and_one_patch_that_verifies(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_emulator(token=TOKEN) as emu:
        async with YandexDiskBackend("/calls", token=TOKEN, base_url=emu.base_url, retry_policy=FAST) as b:
            await b.check(write=True)
            await b.make_folder("d")  # the folder once, so only per-file calls are counted below
            before = Counter(emu.request_counts)
            for i in range(FILES):
                data = payload(i)
                info = await b.put(ObjectInfo(key=f"d/f{i}", size=len(data), mtime=WHEN), body_from_bytes(data))
                assert info.hashes["sha256"] == hashlib.sha256(data).hexdigest()
                assert info.mtime == WHEN
            calls = since(emu, before)
        assert calls == Counter({"GET /v1/disk/resources/upload": FILES, "PUT /upload-target/{token}": FILES,
                                 "PATCH /v1/disk/resources": FILES})
        # what was stored, read back by another client: the bytes and the mtime property
        async with independent(emu, monkeypatch) as y:
            for i in range(FILES):
                meta = await y.get_meta(f"disk:/calls/d/f{i}")
                assert meta.sha256 == hashlib.sha256(payload(i)).hexdigest()
                assert meta.custom_properties and "mtime" in meta.custom_properties


async def test_put_without_properties_still_checks_the_stored_hash() -> None:
    async with running_emulator(token=TOKEN) as emu:
        async with YandexDiskBackend("/calls", token=TOKEN, base_url=emu.base_url, retry_policy=FAST,
                                     metadata=False) as b:
            await b.check(write=True)
            before = Counter(emu.request_counts)
            await b.put(ObjectInfo(key="f", size=5), body_from_bytes(b"hello"))
            calls = since(emu, before)
        # nothing to PATCH: one stat reads the server's SHA-256 instead
        assert calls == Counter({"GET /v1/disk/resources/upload": 1, "PUT /upload-target/{token}": 1,
                                 "GET /v1/disk/resources": 1})


@pytest.mark.parametrize("metadata", [True, False])
async def test_a_corrupted_upload_is_still_caught_and_removed(metadata: bool,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_emulator(token=TOKEN, corrupt_rate=1.0) as emu:
        async with YandexDiskBackend("/calls", token=TOKEN, base_url=emu.base_url, retry_policy=FAST,
                                     metadata=metadata) as b:
            await b.check(write=True)
            with pytest.raises(IntegrityError):
                await b.put(ObjectInfo(key="bad", size=7, mtime=WHEN), body_from_bytes(b"payload"))
        async with independent(emu, monkeypatch) as y:
            assert not await y.exists("disk:/calls/bad")


async def test_open_is_one_stat_and_the_get_of_its_link(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_emulator(token=TOKEN) as emu:
        async with independent(emu, monkeypatch) as y:  # files written by another client
            await y.mkdir("disk:/calls")
            for i in range(FILES):
                await y.upload(io.BytesIO(payload(i)), f"disk:/calls/f{i}")
        async with YandexDiskBackend("/calls", token=TOKEN, base_url=emu.base_url, retry_policy=FAST) as b:
            before = Counter(emu.request_counts)
            for i in range(FILES):
                info = await b.stat(f"f{i}")
                async with b.open(f"f{i}", if_version=info.version) as body:
                    assert await read_all(body) == payload(i)
                async with b.open(f"f{i}", offset=3, length=5) as body:  # ranged reads too
                    assert await read_all(body) == payload(i)[3:8]
            calls = since(emu, before)
        assert calls == Counter({"GET /v1/disk/resources": 3 * FILES, "GET /download-target/{token}": 2 * FILES})


async def test_the_engines_default_transfers_all_reach_the_server_at_once(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    # The emulator counts a request as it arrives and answers it LATENCY later: within that
    # window every one of the engine's 16 default transfers (REMOTE_TRANSFERS) is on the wire,
    # none waiting for a pooled connection.
    latency, transfers = 3.0, 16
    async with running_emulator(token=TOKEN, data_dir=tmp_path) as fast:
        async with independent(fast, monkeypatch) as y:
            await y.mkdir("disk:/calls")
            for i in range(transfers):
                await y.upload(io.BytesIO(payload(i)), f"disk:/calls/f{i}")
    async with running_emulator(token=TOKEN, data_dir=tmp_path, latency=latency) as emu:  # the same files, slowly
        async with YandexDiskBackend("/calls", token=TOKEN, base_url=emu.base_url, retry_policy=FAST) as b:
            route = "GET /v1/disk/resources"
            arrived = 0
            with anyio.move_on_after(latency * 0.8):
                async with anyio.create_task_group() as tg:
                    for i in range(transfers):
                        tg.start_soon(b.stat, f"f{i}")
                    while arrived < transfers:
                        await anyio.sleep(0.02)
                        arrived = emu.request_counts[route]
                    tg.cancel_scope.cancel()
        assert arrived == transfers, f"{arrived} of {transfers} requests reached the server at once"


async def test_the_walk_lists_the_folders_it_enters_next_together() -> None:
    # 12 folders of 7 sub-folders of 3 files (as the benchmark's tree B is laid out): the walk
    # should fetch a folder's sub-folders together, not one round trip each.
    tops, subs, files, lookahead = 12, 7, 3, 8
    tree: dict[str, list[Resource]] = {"": [Resource(name=f"d{t}", path="", type="dir") for t in range(tops)]}
    for t in range(tops):
        tree[f"d{t}"] = [Resource(name=f"s{s}", path="", type="dir") for s in range(subs)]
        for s in range(subs):
            tree[f"d{t}/s{s}"] = [Resource(name=f"f{f}", path="", type="file") for f in range(files)]
    in_flight, rounds, held_most = 0, 0, 0
    fetched: set[str] = set()
    visited: set[str] = set()

    async def fetch(folder: str) -> list[Resource]:
        nonlocal in_flight, rounds
        if in_flight == 0:
            rounds += 1  # a new round trip: nothing else was on the wire
        in_flight += 1
        await anyio.sleep(0.001)
        in_flight -= 1
        fetched.add(folder)
        return sort_entries(tree[folder])

    keys = []
    async with aclosing(walk(fetch, "", await fetch(""), "", lookahead=lookahead)) as items:
        async for key, _ in items:
            keys.append(key)
            parts = key.split("/")[:-1]
            visited.update("/".join(parts[:i]) for i in range(len(parts) + 1))  # the folders entered
            held_most = max(held_most, len(fetched - visited))
    assert keys == sorted(f"d{t}/s{s}/f{f}" for t in range(tops) for s in range(subs) for f in range(files))
    assert rounds <= 2 + tops  # the root, its folders, then each folder's sub-folders at once
    assert held_most <= 2 * lookahead  # still bounded: about lookahead per level
