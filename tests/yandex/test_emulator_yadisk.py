"""The emulator checked with an independent client: yadisk's AsyncClient over aiohttp.

yadisk builds every API URL as ``settings.BASE_API_URL + "/v1/disk/..."``
(reading the setting when each request is made) and only waits on
operation links that start with ``BASE_API_URL + "/v1/disk/operations/"``,
so it is pointed at the emulator's origin, without ``/v1/disk``.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest
import yadisk
import yadisk.exceptions as yexc

from vertexflow.testing.yandex_disk import YandexDiskEmulator

from .conftest import TOKEN

FAST = {"poll_interval": 0.05}  # yadisk polls operations every second by default


@pytest.fixture
async def client(emulator: YandexDiskEmulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[yadisk.AsyncClient]:
    monkeypatch.setattr(yadisk.settings, "BASE_API_URL", emulator.origin)
    async with yadisk.AsyncClient(token=TOKEN, session="aiohttp") as c:
        yield c


async def download(client: yadisk.AsyncClient, path: str) -> bytes:
    buf = io.BytesIO()
    await client.download(path, buf)
    return buf.getvalue()


async def test_token_and_disk_info(client: yadisk.AsyncClient) -> None:
    assert await client.check_token()
    assert not await client.check_token("")
    info = await client.get_disk_info()
    assert info.total_space and info.total_space > 0
    assert info.used_space == 0
    assert info.trash_size == 0
    assert info.max_file_size == 1 << 30
    assert info.is_paid is False
    assert info.reg_time is not None  # parsed with yadisk's strict timestamp format


async def test_mkdir_upload_list_download(client: yadisk.AsyncClient) -> None:
    await client.mkdir("/folder")
    assert await client.is_dir("/folder")
    await client.upload(io.BytesIO(b"hello world"), "/folder/hello.txt")

    async def chunks() -> AsyncIterator[bytes]:  # sent with chunked transfer encoding
        for i in range(5):
            yield bytes([65 + i]) * 100_000

    await client.upload(chunks, "disk:/folder/с пробелом и юникодом.bin")
    names = sorted([item.name async for item in client.listdir("/folder")])
    assert names == ["hello.txt", "с пробелом и юникодом.bin"]
    meta = await client.get_meta("/folder/hello.txt")
    assert meta.type == "file"
    assert meta.size == 11
    assert meta.md5 == "5eb63bbbe01eeed093cb22bb8f5acdc3"
    assert meta.sha256 == "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    assert meta.path == "disk:/folder/hello.txt"
    assert meta.created is not None and meta.modified is not None
    assert meta.resource_id and meta.revision
    assert await download(client, "/folder/hello.txt") == b"hello world"
    big = await download(client, "/folder/с пробелом и юникодом.bin")
    assert big == b"".join(bytes([65 + i]) * 100_000 for i in range(5))


async def test_listdir_pages_and_makedirs(client: yadisk.AsyncClient) -> None:
    await client.makedirs("/a/b/c")
    for i in range(7):
        await client.upload(io.BytesIO(str(i).encode()), f"/a/b/c/{i}.txt")
    listed = [item.name async for item in client.listdir("/a/b/c", limit=3)]
    assert sorted(listed) == [f"{i}.txt" for i in range(7)]
    files = [f.path async for f in client.get_files(limit=100)]
    assert len(files) == 7


async def test_copy_move_rename_remove(client: yadisk.AsyncClient) -> None:
    await client.mkdir("/src")
    await client.upload(io.BytesIO(b"payload"), "/src/f.txt")
    await client.copy("/src/f.txt", "/copied.txt", **FAST)
    assert await download(client, "/copied.txt") == b"payload"
    await client.move("/copied.txt", "/moved.txt", **FAST)
    assert not await client.exists("/copied.txt")
    assert await download(client, "/moved.txt") == b"payload"
    await client.copy("/src", "/src2", **FAST)  # a non-empty folder: 202 and an operation
    assert [i.name async for i in client.listdir("/src2")] == ["f.txt"]
    await client.rename("/moved.txt", "renamed.txt", **FAST)
    assert await client.is_file("/renamed.txt")
    await client.remove("/src2", permanently=True, **FAST)
    assert not await client.exists("/src2")


async def test_trash(client: yadisk.AsyncClient) -> None:
    await client.upload(io.BytesIO(b"x" * 10), "/gone.txt")
    await client.remove("/gone.txt", **FAST)  # to the trash
    info = await client.get_disk_info()
    assert info.trash_size == 10 and info.used_space == 10
    trashed = [t async for t in client.trash_listdir("/")]
    assert [t.origin_path for t in trashed] == ["disk:/gone.txt"]
    await client.restore_trash(trashed[0].path, **FAST)
    assert await download(client, "/gone.txt") == b"x" * 10
    await client.remove("/gone.txt", **FAST)
    await client.remove_trash("/", **FAST)
    assert (await client.get_disk_info()).used_space == 0


async def test_publish(client: yadisk.AsyncClient, emulator: YandexDiskEmulator, http) -> None:
    await client.upload(io.BytesIO(b"public bytes"), "/share.txt")
    await client.publish("/share.txt")
    meta = await client.get_meta("/share.txt")
    assert meta.public_url and meta.public_key
    async with http.get(meta.public_url) as resp:  # no token needed
        assert resp.status == 200
        assert await resp.read() == b"public bytes"
    public = await client.get_public_meta(meta.public_key)
    assert public.name == "share.txt"
    await client.unpublish("/share.txt")
    assert (await client.get_meta("/share.txt")).public_url is None


async def test_errors_map_to_yadisk_exceptions(client: yadisk.AsyncClient, emulator: YandexDiskEmulator,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    await client.mkdir("/d")
    with pytest.raises(yexc.DirectoryExistsError):
        await client.mkdir("/d")
    with pytest.raises(yexc.ParentNotFoundError):
        await client.mkdir("/missing/child")
    with pytest.raises(yexc.PathNotFoundError):
        await client.get_meta("/missing")
    await client.upload(io.BytesIO(b"1"), "/d/f")
    with pytest.raises(yexc.PathExistsError):
        await client.upload(io.BytesIO(b"2"), "/d/f")
    await client.upload(io.BytesIO(b"2"), "/d/f", overwrite=True)
    assert await download(client, "/d/f") == b"2"
    with pytest.raises(yexc.OperationNotFoundError):
        await client.get_operation_status("0000")


async def test_wrong_token_is_unauthorized(emulator: YandexDiskEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from vertexflow.testing.yandex_disk import running_emulator

    async with running_emulator(token="the-only-token") as strict:
        monkeypatch.setattr(yadisk.settings, "BASE_API_URL", strict.origin)
        async with yadisk.AsyncClient(token="wrong", session="aiohttp") as c:
            assert not await c.check_token()
            with pytest.raises(yexc.UnauthorizedError):
                await c.get_disk_info()
        async with yadisk.AsyncClient(token="the-only-token", session="aiohttp") as c:
            assert await c.check_token()


async def test_quota_and_size_limit(make_emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    async with make_emulator(total_space=1000, max_file_size=600) as emu:
        monkeypatch.setattr(yadisk.settings, "BASE_API_URL", emu.origin)
        async with yadisk.AsyncClient(token=TOKEN, session="aiohttp") as c:
            with pytest.raises(yexc.PayloadTooLargeError):
                await c.upload(io.BytesIO(b"x" * 700), "/too-big", n_retries=0)
            await c.upload(io.BytesIO(b"x" * 600), "/a")
            with pytest.raises(yexc.InsufficientStorageError):
                await c.upload(io.BytesIO(b"x" * 500), "/b", n_retries=0)
            assert not await c.exists("/b") and not await c.exists("/too-big")
