"""The Yandex.Disk backend against the emulator: what the conformance suite does not cover."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

import anyio
import pytest
from structlog.testing import capture_logs

from vertexflow import logs as vf_logs
from vertexflow.backends.yandex import YandexDiskBackend
from vertexflow.errors import (
    AuthError,
    ConfigError,
    ConnectionFailed,
    InsufficientStorage,
    IntegrityError,
    NotFound,
    ObjectTooLarge,
    SourceChanged,
)
from vertexflow.model import SHA256, ObjectInfo, body_from_bytes, read_all
from vertexflow.retry import RetryPolicy, retry_call
from vertexflow.testing.yandex_disk import YandexDiskEmulator, running_emulator

from .conftest import TOKEN, call

MiB = 1 << 20
FAST = RetryPolicy(attempts=8, base_delay=0.01, max_delay=0.05, deadline=30)
#: what the engine does around a whole object
ENGINE = RetryPolicy(attempts=8, base_delay=0.01, max_delay=0.05, deadline=60)


def make(emu: YandexDiskEmulator, root: str = "/root", **kw: object) -> YandexDiskBackend:
    kw.setdefault("retry_policy", FAST)
    return YandexDiskBackend(root, token=kw.pop("token", TOKEN), base_url=emu.base_url, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def backend(emulator: YandexDiskEmulator) -> AsyncIterator[YandexDiskBackend]:
    async with make(emulator) as b:
        await b.check(write=True)
        yield b


async def put_bytes(b: YandexDiskBackend, key: str, data: bytes) -> ObjectInfo:
    return await b.put(ObjectInfo(key=key, size=len(data)), body_from_bytes(data))


async def get_bytes(b: YandexDiskBackend, key: str, **kw: object) -> bytes:
    async with b.open(key, **kw) as body:  # type: ignore[arg-type]
        return await read_all(body)


async def test_large_file_streamed_both_ways(backend: YandexDiskBackend) -> None:
    size = 50 * MiB + 7
    seed = os.urandom(MiB)

    async def body() -> AsyncIterator[bytes]:  # 1 MiB pieces, never the whole file
        sent = 0
        i = 0
        while sent < size:
            part = (seed[i % 7:] + seed[:i % 7])[:size - sent]
            sent += len(part)
            i += 1
            yield part

    expected = hashlib.sha256()
    tail = b""
    async for part in body():
        expected.update(part)
        tail = (tail + part)[-10:]
    stored = await backend.put(ObjectInfo(key="big/fifty.bin", size=size), body)
    assert stored.size == size
    assert stored.hashes[SHA256] == expected.hexdigest()
    got = hashlib.sha256()
    n = 0
    async with backend.open("big/fifty.bin") as it:
        async for part in it:
            got.update(part)
            n += len(part)
    assert n == size and got.hexdigest() == expected.hexdigest()
    assert await get_bytes(backend, "big/fifty.bin", offset=size - 10) == tail


@pytest.mark.parametrize("key", ["папка с пробелами/файл №1.txt", "emoji 😀/a b  c.bin", "a:b/c;d=e&f.txt",
                                 "trailing space /x", "%2F/encoded%20name"])
async def test_unicode_spaces_and_odd_names(backend: YandexDiskBackend, key: str) -> None:
    await put_bytes(backend, key, key.encode())
    assert [i.key async for i in backend.list()] == [key]
    assert await get_bytes(backend, key) == key.encode()


async def test_listing_order_and_prefixes(backend: YandexDiskBackend) -> None:
    keys = ["a.txt", "a/b", "a/a/z", "ab", "b/2", "c", "a/c/d/e", "a-b/x", "z/y/x/w"]
    keys += [f"many/{i:03d}/{j}" for i in range(12) for j in range(3)]
    async with anyio.create_task_group() as tg:
        for k in keys:
            tg.start_soon(put_bytes, backend, k, k.encode())
    listed = [i.key async for i in backend.list()]
    assert listed == sorted(keys)
    assert [i.key async for i in backend.list("a/")] == sorted(k for k in keys if k.startswith("a/"))
    assert [i.key async for i in backend.list("many/01")] == sorted(k for k in keys if k.startswith("many/01"))
    assert [i.key async for i in backend.list("a.txt/")] == []
    infos = {i.key: i async for i in backend.list("b/")}
    assert infos["b/2"].hashes["md5"] == hashlib.md5(b"b/2").hexdigest()
    assert infos["b/2"].version == hashlib.sha256(b"b/2").hexdigest()


async def test_missing_root(emulator: YandexDiskEmulator) -> None:
    async with make(emulator, "/does/not/exist") as b:
        with pytest.raises(NotFound):
            await b.check()
        with pytest.raises(NotFound):
            [i async for i in b.list()]
        with pytest.raises(NotFound):
            [i async for i in b.list("some/prefix")]
        await b.check(write=True)  # creates it, one level at a time
        assert [i async for i in b.list()] == []


async def test_directory_cache_saves_mkdirs(emulator: YandexDiskEmulator, backend: YandexDiskBackend) -> None:
    before = emulator.request_counts["PUT /v1/disk/resources"]
    for i in range(30):
        await put_bytes(backend, f"a/b/{i}", b"x")
    assert emulator.request_counts["PUT /v1/disk/resources"] - before == 2  # "a" and "a/b", once each
    async with make(emulator, dir_cache_size=0) as uncached:
        before = emulator.request_counts["PUT /v1/disk/resources"]
        for i in range(5):
            await put_bytes(uncached, f"a/b/u{i}", b"x")
        # without the cache every level is asked for each time (and answers 409: exists)
        assert emulator.request_counts["PUT /v1/disk/resources"] - before == 5 * 3


async def test_concurrent_creators_of_one_folder(emulator: YandexDiskEmulator, backend: YandexDiskBackend) -> None:
    before = emulator.request_counts["PUT /v1/disk/resources"]
    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(put_bytes, backend, f"x/y/z/{i}", b"1")
    assert emulator.request_counts["PUT /v1/disk/resources"] - before == 3  # one request per level
    # two backends with their own caches race; the loser's 409 means "exists"
    async with make(emulator) as other:
        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(put_bytes, backend, f"race/{i}/a", b"1")
                tg.start_soon(put_bytes, other, f"race/{i}/b", b"2")
    assert len([i async for i in backend.list("race/")]) == 20


async def test_folder_deleted_behind_the_cache(emulator: YandexDiskEmulator, backend: YandexDiskBackend,
                                               http) -> None:
    await put_bytes(backend, "gone/deeper/f", b"1")
    status, _ = await call(http, "DELETE", f"{emulator.base_url}/resources",
                           params={"path": "disk:/root/gone", "permanently": "true"})
    assert status in (202, 204)
    await put_bytes(backend, "gone/deeper/g", b"2")  # the link answers 409; the chain is re-created
    assert [i.key async for i in backend.list("gone/")] == ["gone/deeper/g"]


async def test_retries_under_429_and_5xx(make_emulator) -> None:
    async with make_emulator(rate_limit=0.2, error_rate=0.05, retry_after=0.01, seed=3) as emu:
        async with make(emu) as b:
            await retry_call(lambda: b.check(write=True), ENGINE)
            payloads = {f"d{i % 3}/f{i}": os.urandom(1000 + i) for i in range(40)}

            async def one(key: str, data: bytes) -> None:
                # the engine retries whole puts (a fresh upload link each time)
                await retry_call(lambda: b.put(ObjectInfo(key=key, size=len(data)), body_from_bytes(data)), ENGINE)

            async with anyio.create_task_group() as tg:
                for k, v in payloads.items():
                    tg.start_soon(one, k, v)
            listed = await retry_call(lambda: _keys(b), ENGINE)
            assert listed == sorted(payloads)
            for k, v in payloads.items():
                assert await retry_call(lambda k=k: get_bytes(b, k), ENGINE) == v
            assert b.retries > 0  # the backend's own retries of single requests
            assert emu.request_counts["PUT /upload-target/{token}"] >= len(payloads)


async def _keys(b: YandexDiskBackend) -> list[str]:
    return [i.key async for i in b.list()]


async def test_202_uploads_are_awaited(make_emulator) -> None:
    async with make_emulator(async_upload_rate=1.0, async_delay=0.2) as emu:
        async with make(emu) as b:
            await b.check(write=True)
            stored = await put_bytes(b, "later/f.bin", b"async")
            assert stored.size == 5
            assert await get_bytes(b, "later/f.bin") == b"async"
            assert emu.request_counts["GET /v1/disk/operations/{id}"] >= 1


async def test_corrupted_upload_is_an_integrity_error_and_removed(make_emulator) -> None:
    async with make_emulator(corrupt_rate=1.0) as emu:
        async with make(emu) as b:
            await b.check(write=True)
            with pytest.raises(IntegrityError):
                await put_bytes(b, "bad", b"payload")
            with pytest.raises(NotFound):
                await b.stat("bad")


async def test_file_size_limit(make_emulator) -> None:
    async with make_emulator(max_file_size=1000) as emu:
        async with make(emu) as b:
            with pytest.raises(ObjectTooLarge):  # the server's 413, mid-stream
                await put_bytes(b, "big", b"x" * 5000)
            await b.check(write=True)  # learns the account's limit
            uploads = emu.request_counts["GET /v1/disk/resources/upload"]
            with pytest.raises(ObjectTooLarge):
                await put_bytes(b, "big", b"x" * 5000)
            assert emu.request_counts["GET /v1/disk/resources/upload"] == uploads  # refused up front
            with pytest.raises(NotFound):
                await b.stat("big")


async def test_quota(make_emulator) -> None:
    async with make_emulator(total_space=10_000) as emu:
        async with make(emu) as b:
            await b.check(write=True)
            assert await b.free_space() == 10_000
            await put_bytes(b, "a", b"x" * 8000)
            assert await b.free_space() == 2000
            with pytest.raises(InsufficientStorage) as info:
                await put_bytes(b, "b", b"x" * 3000)
            assert info.value.fatal
            with pytest.raises(NotFound):
                await b.stat("b")


async def test_token_never_in_messages_or_logs(http) -> None:
    secret = "AQAAAAAsecret-token-value"
    async with running_emulator(token=secret, rate_limit=0.5, retry_after=0.01) as emu:
        async with YandexDiskBackend("/r", token="wrong-" + secret, base_url=emu.base_url,
                                     retry_policy=FAST) as bad:
            with pytest.raises(AuthError) as info:
                await bad.check()
            assert secret not in str(info.value) and secret not in repr(info.value)
        vf_logs.set_level("debug")  # the retries are logged at info
        try:
            with capture_logs() as logs:
                async with YandexDiskBackend("/r", token=secret, base_url=emu.base_url, retry_policy=FAST) as b:
                    await retry_call(lambda: b.check(write=True), ENGINE)
                    with pytest.raises(NotFound) as missing:
                        await retry_call(lambda: b.stat("nope"), ENGINE)
                    assert secret not in str(missing.value)
                    assert secret not in b.describe() and secret not in repr(b)
        finally:
            vf_logs.set_level("warning")
        assert logs and all(secret not in str(entry) for entry in logs)


async def test_check_unreachable_and_config() -> None:
    async with YandexDiskBackend("/", token="t", base_url="http://127.0.0.1:9/v1/disk", request_timeout=2,
                                 retry_policy=RetryPolicy(attempts=1)) as b:
        with pytest.raises(ConnectionFailed) as info:
            await b.check()
        assert "http://127.0.0.1:9/v1/disk" in str(info.value)
    with pytest.raises(ConfigError):
        YandexDiskBackend("/", token="")
    with pytest.raises(ConfigError):
        YandexDiskBackend("/", token="t", upload_concurrency=0)


def test_settings_from_env() -> None:
    env = {"YANDEX_REQUEST_TIMEOUT": "12.5", "YANDEX_CHUNK_SIZE_MB": "4", "YANDEX_UPLOAD_CONCURRENCY": "16",
           "YANDEX_DIRECTORY_CACHE_TTL": "60", "YANDEX_DIRECTORY_CACHE_SIZE": "50",
           "YANDEX_SESSION_POOL_CONNECTIONS": "5", "YANDEX_SESSION_POOL_MAXSIZE": "8", "OTHER": "x"}
    assert YandexDiskBackend.settings_from_env(env) == {
        "request_timeout": 12.5, "chunk_size": 4 * MiB, "upload_concurrency": 16, "dir_cache_ttl": 60.0,
        "dir_cache_size": 50, "pool_connections": 5, "pool_maxsize": 8}
    assert YandexDiskBackend.settings_from_env({}) == {}
    for var, value in [("YANDEX_UPLOAD_CONCURRENCY", "many"), ("YANDEX_UPLOAD_CONCURRENCY", "0"),
                       ("YANDEX_REQUEST_TIMEOUT", "-1"), ("YANDEX_CHUNK_SIZE_MB", "0")]:
        with pytest.raises(ConfigError, match=var):
            YandexDiskBackend.settings_from_env({var: value})


async def test_versions_and_ranges(backend: YandexDiskBackend) -> None:
    data = bytes(range(256)) * 100
    first = await put_bytes(backend, "v", data)
    assert await get_bytes(backend, "v", offset=1000, length=24) == data[1000:1024]
    assert await get_bytes(backend, "v", offset=len(data)) == b""
    await put_bytes(backend, "v", b"changed")
    with pytest.raises(SourceChanged):
        await get_bytes(backend, "v", if_version=first.version)


async def test_delete_never_removes_a_folder(backend: YandexDiskBackend) -> None:
    await put_bytes(backend, "dir/inner", b"1")
    await backend.delete("dir")
    assert [i.key async for i in backend.list()] == ["dir/inner"]


async def test_delete_to_trash(emulator: YandexDiskEmulator, http) -> None:
    async with make(emulator, trash=True) as b:
        await b.check(write=True)
        await put_bytes(b, "t", b"abc")
        await b.delete("t")
        _, trash = await call(http, "GET", f"{emulator.base_url}/trash/resources", params={"path": "trash:/"})
        assert [i["origin_path"] for i in trash["_embedded"]["items"]] == ["disk:/root/t"]


async def test_server_copy_between_roots_and_publish(emulator: YandexDiskEmulator, backend: YandexDiskBackend,
                                                     http) -> None:
    src = await put_bytes(backend, "s/file", b"copy me")
    async with make(emulator, "/other") as other:
        assert other.same_store(backend)
        copied = await other.server_copy(backend, src, "deep/dst")
        assert copied.hashes[SHA256] == hashlib.sha256(b"copy me").hexdigest()
        assert await get_bytes(other, "deep/dst") == b"copy me"
        url = await other.publish("deep/dst")
        async with http.get(url) as resp:
            assert await resp.read() == b"copy me"
    async with make(emulator, token="another-account") as stranger:
        assert not stranger.same_store(backend)


async def test_locked_answers_are_retried(make_emulator) -> None:
    async with make_emulator(lock_rate=0.3, seed=5) as emu:
        async with make(emu) as b:
            await b.check(write=True)
            await retry_call(lambda: put_bytes(b, "l/f", b"locked"), ENGINE)
            assert await retry_call(lambda: get_bytes(b, "l/f"), ENGINE) == b"locked"
            assert b.retries > 0


async def test_stale_cache_of_an_ancestor(emulator: YandexDiskEmulator, backend: YandexDiskBackend, http) -> None:
    await put_bytes(backend, "p/q/r/f", b"1")
    await call(http, "DELETE", f"{emulator.base_url}/resources", params={"path": "disk:/root/p", "permanently": "true"})
    # "p/q" is still cached as existing; creating "p/q/s" answers 409 (parent missing)
    await put_bytes(backend, "p/q/s/g", b"2")
    assert [i.key async for i in backend.list()] == ["p/q/s/g"]
    assert backend.features.max_object_size == emulator.knobs.max_file_size
