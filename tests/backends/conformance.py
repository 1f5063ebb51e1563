"""The conformance suite every backend must pass.

Subclass :class:`BackendConformance` in a ``test_<backend>.py`` module and
provide an async fixture ``backend`` that yields a fresh, empty backend whose
root already exists (``check(write=True)`` has been called).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import anyio
import pytest

from vertexflow.backends.base import Backend
from vertexflow.errors import IntegrityError, InvalidKey, NotFound, SourceChanged
from vertexflow.model import SHA256, ObjectInfo, body_from_bytes, read_all

ODD_KEYS = [
    "with space/file name.txt",
    "unicode/привет мир ✓.txt",
    "percent/100%25 and %.txt",
    "plus/a+b=c.txt",
    "question/why?.txt",
    "hash/#1 #2.txt",
    "quote/it's \"quoted\".txt",
    "long/" + "x" * 200 + ".bin",
]


async def put_bytes(backend: Backend, key: str, data: bytes, **kw: object) -> ObjectInfo:
    return await backend.put(ObjectInfo(key=key, size=len(data), **kw), body_from_bytes(data))  # type: ignore[arg-type]


async def get_bytes(backend: Backend, key: str, **kw: object) -> bytes:
    async with backend.open(key, **kw) as body:  # type: ignore[arg-type]
        return await read_all(body)


async def keys(backend: Backend, prefix: str = "") -> list[str]:
    return [info.key async for info in backend.list(prefix)]


def failing_body(data: bytes, fail_after: int):
    async def body() -> AsyncIterator[bytes]:
        yield data[:fail_after]
        raise RuntimeError("source broke mid-stream")

    return body


def chunked_body(data: bytes, chunk: int):
    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(data), chunk):
            yield data[i:i + chunk]

    return body


class BackendConformance:
    """Behaviour every backend promises (see ``vertexflow/backends/base.py``)."""

    #: size of the "large" object: above S3's 8 MiB multipart threshold
    large_size = 9 * 1024 * 1024 + 123

    async def test_empty_root_lists_nothing(self, backend: Backend) -> None:
        assert await keys(backend) == []

    async def test_round_trip_small(self, backend: Backend) -> None:
        data = os.urandom(1000)
        stored = await put_bytes(backend, "a/b/c.bin", data)
        assert stored.key == "a/b/c.bin"
        assert stored.size == 1000
        assert stored.hashes.get(SHA256) == hashlib.sha256(data).hexdigest()
        assert await get_bytes(backend, "a/b/c.bin") == data
        info = await backend.stat("a/b/c.bin")
        assert info.size == 1000

    async def test_round_trip_empty_object(self, backend: Backend) -> None:
        stored = await put_bytes(backend, "empty", b"")
        assert stored.size == 0
        assert await get_bytes(backend, "empty") == b""
        assert await keys(backend) == ["empty"]

    async def test_round_trip_large_streamed(self, backend: Backend) -> None:
        data = os.urandom(self.large_size)
        info = ObjectInfo(key="big/blob.bin", size=len(data))
        stored = await backend.put(info, chunked_body(data, 1 << 20))
        assert stored.size == len(data)
        assert stored.hashes.get(SHA256) == hashlib.sha256(data).hexdigest()
        assert await get_bytes(backend, "big/blob.bin") == data

    async def test_open_range(self, backend: Backend) -> None:
        data = bytes(range(256)) * 40
        await put_bytes(backend, "r.bin", data)
        assert await get_bytes(backend, "r.bin", offset=100) == data[100:]
        assert await get_bytes(backend, "r.bin", offset=100, length=50) == data[100:150]
        assert await get_bytes(backend, "r.bin", offset=0, length=1) == data[:1]
        assert await get_bytes(backend, "r.bin", offset=len(data) - 10, length=100) == data[-10:]

    async def test_list_prefix_and_order(self, backend: Backend) -> None:
        names = ["b/2", "a.txt", "a/b", "a/a/z", "c", "ab"]
        for n in names:
            await put_bytes(backend, n, n.encode())
        listed = await keys(backend)
        assert sorted(listed) == sorted(names)
        if backend.features.sorted_listing:
            assert listed == sorted(names)
        assert sorted(await keys(backend, "a/")) == ["a/a/z", "a/b"]
        assert sorted(await keys(backend, "a")) == ["a.txt", "a/a/z", "a/b", "ab"]
        assert await keys(backend, "zzz") == []
        by_key = {i.key: i async for i in backend.list()}
        assert by_key["a/b"].size == 3
        assert by_key["a/b"].version is not None

    async def test_list_many_pages(self, backend: Backend) -> None:
        count = 1050  # more than one listing page of S3 (1000) and Yandex
        limiter = anyio.Semaphore(16)

        async def one(i: int) -> None:
            async with limiter:
                await put_bytes(backend, f"many/{i:05d}", b"x")

        async with anyio.create_task_group() as tg:
            for i in range(count):
                tg.start_soon(one, i)
        listed = await keys(backend, "many/")
        assert len(listed) == count
        assert len(set(listed)) == count

    async def test_missing_object(self, backend: Backend) -> None:
        with pytest.raises(NotFound):
            await backend.stat("nope/missing.txt")
        with pytest.raises(NotFound):
            await get_bytes(backend, "nope/missing.txt")

    async def test_a_directory_is_not_an_object(self, backend: Backend) -> None:
        await put_bytes(backend, "dir/inner.txt", b"x")
        with pytest.raises(NotFound):
            await backend.stat("dir")

    async def test_delete_is_idempotent(self, backend: Backend) -> None:
        await put_bytes(backend, "d/x", b"1")
        await backend.delete("d/x")
        with pytest.raises(NotFound):
            await backend.stat("d/x")
        await backend.delete("d/x")
        await backend.delete("never/existed")
        assert await keys(backend) == []

    async def test_overwrite_replaces(self, backend: Backend) -> None:
        await put_bytes(backend, "o", b"first version")
        await put_bytes(backend, "o", b"second")
        assert await get_bytes(backend, "o") == b"second"
        assert (await backend.stat("o")).size == 6

    async def test_failed_put_leaves_nothing_and_keeps_old(self, backend: Backend) -> None:
        await put_bytes(backend, "keep", b"old content")
        data = os.urandom(3 * 1024 * 1024)
        for key in ("keep", "fresh"):
            with pytest.raises(RuntimeError):
                await backend.put(ObjectInfo(key=key, size=len(data)), failing_body(data, 1024 * 1024))
        assert await get_bytes(backend, "keep") == b"old content"
        with pytest.raises(NotFound):
            await backend.stat("fresh")
        assert await keys(backend) == ["keep"]

    async def test_failed_large_put_leaves_nothing(self, backend: Backend) -> None:
        data = os.urandom(self.large_size)
        with pytest.raises(RuntimeError):
            await backend.put(ObjectInfo(key="big", size=len(data)), failing_body(data, 8 * 1024 * 1024 + 5))
        with pytest.raises(NotFound):
            await backend.stat("big")

    async def test_cancelled_put_leaves_nothing(self, backend: Backend) -> None:
        started = anyio.Event()

        async def slow_body() -> AsyncIterator[bytes]:
            yield b"x" * 65536
            started.set()
            await anyio.sleep(30)
            yield b"never"

        async with anyio.create_task_group() as tg:
            async def run() -> None:
                await backend.put(ObjectInfo(key="cancelled", size=None), slow_body)

            tg.start_soon(run)
            with anyio.fail_after(10):
                await started.wait()
            await anyio.sleep(0.1)
            tg.cancel_scope.cancel()
        with pytest.raises(NotFound):
            await backend.stat("cancelled")
        assert await keys(backend) == []

    async def test_size_mismatch_is_source_changed(self, backend: Backend) -> None:
        data = b"12345"
        with pytest.raises(SourceChanged):
            await backend.put(ObjectInfo(key="short", size=10), body_from_bytes(data))
        with pytest.raises(SourceChanged):
            await backend.put(ObjectInfo(key="long", size=2), body_from_bytes(data))
        assert await keys(backend) == []

    async def test_wrong_expected_hash_is_integrity_error(self, backend: Backend) -> None:
        data = b"payload"
        wrong = hashlib.sha256(b"other").hexdigest()
        with pytest.raises(IntegrityError):
            await backend.put(ObjectInfo(key="h", size=len(data), hashes={SHA256: wrong}), body_from_bytes(data))
        assert await keys(backend) == []
        right = hashlib.sha256(data).hexdigest()
        stored = await backend.put(ObjectInfo(key="h", size=len(data), hashes={SHA256: right}), body_from_bytes(data))
        assert stored.hashes[SHA256] == right

    async def test_stale_version_is_source_changed(self, backend: Backend) -> None:
        await put_bytes(backend, "v", b"one")
        old = await backend.stat("v")
        await anyio.sleep(0.01)
        await put_bytes(backend, "v", b"two, longer")
        with pytest.raises(SourceChanged):
            await get_bytes(backend, "v", if_version=old.version)
        new = await backend.stat("v")
        assert await get_bytes(backend, "v", if_version=new.version) == b"two, longer"

    async def test_read_whole(self, backend: Backend) -> None:
        data = os.urandom(3000)
        await put_bytes(backend, "w/x", data)
        listed = await backend.stat("w/x")
        told: list[int] = []
        assert await backend.read_whole("w/x", limit=3000, if_version=listed.version, on_bytes=told.append) == data
        assert sum(told) == len(data)  # progress hears of every byte
        with pytest.raises(SourceChanged):
            await backend.read_whole("w/x", limit=2999)  # grown past what the listing said
        await put_bytes(backend, "w/e", b"")
        assert await backend.read_whole("w/e", limit=10) == b""
        with pytest.raises(NotFound):
            await backend.read_whole("w/missing", limit=10)
        await anyio.sleep(0.01)
        await put_bytes(backend, "w/x", b"changed")
        with pytest.raises(SourceChanged):
            await backend.read_whole("w/x", limit=3000, if_version=listed.version)

    async def test_mtime_preserved_where_declared(self, backend: Backend) -> None:
        if not backend.features.preserves_mtime:
            pytest.skip("backend does not preserve mtime")
        when = datetime(2021, 5, 4, 3, 2, 1, 123456, tzinfo=UTC)
        stored = await put_bytes(backend, "m", b"x", mtime=when)
        assert stored.mtime == when
        assert (await backend.stat("m")).mtime == when

    async def test_native_hashes_reported(self, backend: Backend) -> None:
        data = b"hash me"
        await put_bytes(backend, "nh", data)
        info = await backend.stat("nh")
        for algo in backend.features.native_hashes:
            assert info.hashes.get(algo) == hashlib.new(algo, data).hexdigest(), algo

    @pytest.mark.parametrize("key", ODD_KEYS)
    async def test_odd_key_names_round_trip(self, backend: Backend, key: str) -> None:
        data = key.encode()
        await put_bytes(backend, key, data)
        assert await get_bytes(backend, key) == data
        assert await keys(backend) == [key]
        await backend.delete(key)
        assert await keys(backend) == []

    @pytest.mark.parametrize("key", ["../escape", "a/../../b", "/abs", "a\x00b", "a//b", "./a", ""])
    async def test_unsafe_keys_rejected(self, backend: Backend, key: str) -> None:
        with pytest.raises(InvalidKey):
            await put_bytes(backend, key, b"x")

    async def test_server_copy_where_declared(self, backend: Backend) -> None:
        if not backend.features.server_side_copy:
            pytest.skip("backend has no server-side copy")
        assert backend.same_store(backend)
        data = os.urandom(5000)
        src = await put_bytes(backend, "src/obj", data)
        copied = await backend.server_copy(backend, src, "dst/obj")
        assert copied.size == len(data)
        assert await get_bytes(backend, "dst/obj") == data

    async def test_check_succeeds_on_root(self, backend: Backend) -> None:
        await backend.check()
        await backend.check(write=True)
