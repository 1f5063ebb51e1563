"""The emulator's raw HTTP behaviour, checked against what the real service sends."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from vertexflow.testing.yandex_disk import YandexDiskEmulator, running_emulator

from .conftest import TOKEN, call

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")
FILE_FIELDS = {"name", "path", "type", "size", "md5", "sha256", "created", "modified", "mime_type",
               "media_type", "resource_id", "revision", "file", "antivirus_status", "exif", "comment_ids"}


async def upload(http: aiohttp.ClientSession, emu: YandexDiskEmulator, path: str, data: bytes,
                 *, overwrite: bool = False) -> dict:
    status, link = await call(http, "GET", f"{emu.base_url}/resources/upload",
                              params={"path": path, "overwrite": str(overwrite).lower()})
    assert status == 200, link
    async with http.put(link["href"], data=data) as resp:
        assert resp.status == 201, await resp.text()
    return link


async def mkdir(http: aiohttp.ClientSession, emu: YandexDiskEmulator, path: str) -> None:
    status, body = await call(http, "PUT", f"{emu.base_url}/resources", params={"path": path})
    assert status == 201, body


def assert_error(body: dict, name: str) -> None:
    assert set(body) >= {"message", "description", "error"}
    assert body["error"] == name


# -- authorization ---------------------------------------------------------------

async def test_authorization(http, emulator) -> None:
    status, body = await call(http, "GET", emulator.base_url, token=None)
    assert status == 401
    assert body == {"message": "Не авторизован.", "description": "Unauthorized", "error": "UnauthorizedError"}
    status, _ = await call(http, "GET", emulator.base_url, headers={"Authorization": f"Bearer {TOKEN}"}, token=None)
    assert status == 401
    assert (await call(http, "GET", emulator.base_url, token="anything"))[0] == 200
    async with running_emulator(token="secret") as strict:
        assert (await call(http, "GET", strict.base_url, token="wrong"))[0] == 401
        assert (await call(http, "GET", strict.base_url, token="secret"))[0] == 200


# -- resources -----------------------------------------------------------------------

async def test_mkdir_answers_and_conflicts(http, emulator) -> None:
    status, body = await call(http, "PUT", f"{emulator.base_url}/resources", params={"path": "disk:/a b"})
    assert status == 201
    # links the server builds encode spaces as "+"
    assert body == {"href": f"{emulator.base_url}/resources?path=disk%3A%2Fa+b", "method": "GET",
                    "templated": False}
    status, body = await call(http, "PUT", f"{emulator.base_url}/resources", params={"path": "/a b"})
    assert status == 409
    assert_error(body, "DiskPathPointsToExistentDirectoryError")
    assert body["description"] == 'Specified path "disk:/a b" points to existent directory.'
    status, body = await call(http, "PUT", f"{emulator.base_url}/resources", params={"path": "/x/y"})
    assert status == 409
    assert_error(body, "DiskPathDoesntExistsError")
    status, body = await call(http, "PUT", f"{emulator.base_url}/resources", params={"path": "disk:path"})
    assert status == 400
    status, body = await call(http, "PUT", f"{emulator.base_url}/resources")
    assert status == 400
    assert_error(body, "FieldValidationError")


async def test_resource_json(http, emulator) -> None:
    await mkdir(http, emulator, "/dir")
    await upload(http, emulator, "/dir/photo.jpg", b"jpeg bytes")
    status, f = await call(http, "GET", f"{emulator.base_url}/resources", params={"path": "/dir/photo.jpg"})
    assert status == 200
    assert set(f) == FILE_FIELDS
    assert f["path"] == "disk:/dir/photo.jpg" and f["name"] == "photo.jpg" and f["type"] == "file"
    assert f["size"] == 10
    assert f["md5"] == hashlib.md5(b"jpeg bytes").hexdigest()
    assert f["sha256"] == hashlib.sha256(b"jpeg bytes").hexdigest()
    assert f["mime_type"] == "image/jpeg" and f["media_type"] == "image"
    assert TIMESTAMP.match(f["created"]) and TIMESTAMP.match(f["modified"])
    assert isinstance(f["revision"], int) and f["resource_id"].count(":") == 1

    status, d = await call(http, "GET", f"{emulator.base_url}/resources", params={"path": "disk:/dir"})
    assert d["type"] == "dir" and "size" not in d and "md5" not in d
    emb = d["_embedded"]
    assert set(emb) == {"sort", "items", "limit", "offset", "path", "total"}
    assert emb["path"] == "disk:/dir" and emb["limit"] == 20 and emb["offset"] == 0 and emb["total"] == 1
    assert [i["name"] for i in emb["items"]] == ["photo.jpg"]
    assert "_embedded" not in emb["items"][0]

    status, root = await call(http, "GET", f"{emulator.base_url}/resources", params={"path": "/"})
    assert root["path"] == "disk:/" and root["name"] == "disk"


async def test_paging_and_limit_zero(http, emulator) -> None:
    await mkdir(http, emulator, "/p")
    for i in range(5):
        await upload(http, emulator, f"/p/{i}", b"x")
    status, body = await call(http, "GET", f"{emulator.base_url}/resources", params={"path": "/p", "limit": 0})
    assert body["_embedded"]["items"] == [] and body["_embedded"]["total"] == 5
    seen = []
    for offset in range(0, 5, 2):
        _, page = await call(http, "GET", f"{emulator.base_url}/resources",
                             params={"path": "/p", "limit": 2, "offset": offset})
        seen += [i["name"] for i in page["_embedded"]["items"]]
    assert seen == ["0", "1", "2", "3", "4"]
    _, rev = await call(http, "GET", f"{emulator.base_url}/resources", params={"path": "/p", "sort": "-name"})
    assert [i["name"] for i in rev["_embedded"]["items"]] == ["4", "3", "2", "1", "0"]
    status, body = await call(http, "GET", f"{emulator.base_url}/resources", params={"path": "/p", "limit": "x"})
    assert status == 400
    assert_error(body, "FieldValidationError")


async def test_fields_filtering(http, emulator) -> None:
    await mkdir(http, emulator, "/files_test")
    # the example from Yandex's own server tests
    _, body = await call(http, "GET", f"{emulator.base_url}/resources",
                         params={"path": "/", "fields": "name,_embedded.items.path,_embedded.items.type,"
                                                        "_embedded.items.resource_id"})
    assert set(body) == {"name", "_embedded"}
    assert set(body["_embedded"]) == {"items"}
    assert set(body["_embedded"]["items"][0]) == {"path", "type", "resource_id"}
    # as yadisk asks: a key and its sub-keys keeps only the sub-keys
    _, body = await call(http, "GET", f"{emulator.base_url}/resources",
                         params={"path": "/", "limit": 1,
                                 "fields": "type,_embedded,_embedded.offset,_embedded.limit,_embedded.total"})
    assert body == {"type": "dir", "_embedded": {"offset": 0, "limit": 1, "total": 1}}
    _, body = await call(http, "GET", emulator.base_url, params={"fields": "used_space,trash_size"})
    assert body == {"used_space": 0, "trash_size": 0}
    status, body = await call(http, "GET", f"{emulator.base_url}/resources",
                              params={"path": "/nope", "fields": "name"})
    assert status == 404
    assert body == {"message": "Не удалось найти запрошенный ресурс.", "description": "Resource not found.",
                    "error": "DiskNotFoundError"}


async def test_flat_file_list(http, emulator) -> None:
    await mkdir(http, emulator, "/m")
    await upload(http, emulator, "/m/song.mp3", b"a")
    await upload(http, emulator, "/pic.png", b"b")
    _, body = await call(http, "GET", f"{emulator.base_url}/resources/files", params={"limit": 10})
    assert set(body) == {"items", "limit", "offset"}  # no "total" here
    assert sorted(i["path"] for i in body["items"]) == ["disk:/m/song.mp3", "disk:/pic.png"]
    _, body = await call(http, "GET", f"{emulator.base_url}/resources/files", params={"media_type": "image"})
    assert [i["name"] for i in body["items"]] == ["pic.png"]


async def test_disk_info(http, emulator) -> None:
    await upload(http, emulator, "/f", b"12345")
    _, info = await call(http, "GET", emulator.base_url)
    assert {"total_space", "used_space", "trash_size", "max_file_size", "is_paid", "revision", "reg_time",
            "user", "system_folders"} <= set(info)
    assert info["used_space"] == 5 and info["trash_size"] == 0 and info["is_paid"] is False
    assert TIMESTAMP.match(info["reg_time"])


# -- upload ------------------------------------------------------------------------------

async def test_upload_link_and_chunked_put(http, emulator) -> None:
    status, link = await call(http, "GET", f"{emulator.base_url}/resources/upload", params={"path": "/c.bin"})
    assert status == 200
    assert set(link) == {"operation_id", "href", "method", "templated"}
    assert link["method"] == "PUT" and link["templated"] is False

    async def body() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield os.urandom(700_000)

    async with http.put(link["href"], data=body()) as resp:  # chunked, and no Authorization
        assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert "Authorization" not in resp.request_info.headers
        assert resp.status == 201
    async with http.put(link["href"], data=b"again") as resp:
        assert resp.status == 400  # a link is good for one PUT
    _, op = await call(http, "GET", f"{emulator.base_url}/operations/{link['operation_id']}")
    assert op == {"status": "success"}
    _, meta = await call(http, "GET", f"{emulator.base_url}/resources", params={"path": "/c.bin"})
    assert meta["size"] == 2_100_000


async def test_upload_conflicts_come_from_the_link_request(http, emulator) -> None:
    await mkdir(http, emulator, "/d")
    await upload(http, emulator, "/d/f", b"1")
    url = f"{emulator.base_url}/resources/upload"
    status, body = await call(http, "GET", url, params={"path": "/d/f"})
    assert status == 409
    assert_error(body, "DiskResourceAlreadyExistsError")
    status, body = await call(http, "GET", url, params={"path": "/d/f", "overwrite": "true"})
    assert status == 200
    status, body = await call(http, "GET", url, params={"path": "/nope/f"})
    assert status == 409
    assert_error(body, "DiskPathDoesntExistsError")
    status, body = await call(http, "GET", url, params={"path": "/d"})
    assert status == 409
    assert_error(body, "DiskPathPointsToExistentDirectoryError")


async def test_torn_upload_leaves_nothing(http, emulator) -> None:
    _, link = await call(http, "GET", f"{emulator.base_url}/resources/upload", params={"path": "/torn"})

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 100_000
        raise RuntimeError("source broke")

    with pytest.raises(aiohttp.ClientError):
        async with http.put(link["href"], data=broken()):
            pass
    await asyncio.sleep(0.1)
    assert (await call(http, "GET", f"{emulator.base_url}/resources", params={"path": "/torn"}))[0] == 404
    _, op = await call(http, "GET", f"{emulator.base_url}/operations/{link['operation_id']}")
    assert op == {"status": "failed"}
    _, info = await call(http, "GET", emulator.base_url)
    assert info["used_space"] == 0


async def test_async_upload_202(http) -> None:
    async with running_emulator(async_upload_rate=1.0, async_delay=0.3) as emu:
        _, link = await call(http, "GET", f"{emu.base_url}/resources/upload", params={"path": "/later"})
        async with http.put(link["href"], data=b"data") as resp:
            assert resp.status == 202
        op_url = f"{emu.base_url}/operations/{link['operation_id']}"
        assert (await call(http, "GET", op_url))[1] == {"status": "in-progress"}
        assert (await call(http, "GET", f"{emu.base_url}/resources", params={"path": "/later"}))[0] == 404
        for _ in range(50):
            await asyncio.sleep(0.05)
            if (await call(http, "GET", op_url))[1]["status"] != "in-progress":
                break
        assert (await call(http, "GET", op_url))[1] == {"status": "success"}
        assert (await call(http, "GET", f"{emu.base_url}/resources", params={"path": "/later"}))[0] == 200


async def test_file_size_limit_413(http) -> None:
    async with running_emulator(max_file_size=1000) as emu:
        status, body = await call(http, "GET", f"{emu.base_url}/resources/upload",
                                  params={"path": "/big", "size": 5000})
        assert status == 413
        assert body["reason"] == "FreeUserUploadFileSizeLimitExceeded" and body["limit"] == 1000
        _, link = await call(http, "GET", f"{emu.base_url}/resources/upload", params={"path": "/big"})
        async with http.put(link["href"], data=b"x" * 5000) as resp:
            assert resp.status == 413
        assert (await call(http, "GET", f"{emu.base_url}/resources", params={"path": "/big"}))[0] == 404


async def test_quota_507(http) -> None:
    async with running_emulator(total_space=1000) as emu:
        await upload(http, emu, "/a", b"x" * 800)
        _, link = await call(http, "GET", f"{emu.base_url}/resources/upload", params={"path": "/b"})
        async with http.put(link["href"], data=b"x" * 300) as resp:
            assert resp.status == 507
            assert_error(await resp.json(), "DiskStorageQuotaExhaustedError")
        # overwriting frees the old size first
        await upload(http, emu, "/a", b"y" * 1000, overwrite=True)
        status, body = await call(http, "GET", f"{emu.base_url}/resources/upload", params={"path": "/c"})
        assert status == 507  # a full disk refuses the link already
        status, body = await call(http, "POST", f"{emu.base_url}/resources/copy", params={"from": "/a", "path": "/c"})
        assert status == 507


# -- download ---------------------------------------------------------------------------------

async def test_download_link_and_ranges(http, emulator) -> None:
    data = bytes(range(256)) * 10
    await upload(http, emulator, "/r.bin", data)
    status, link = await call(http, "GET", f"{emulator.base_url}/resources/download", params={"path": "/r.bin"})
    assert status == 200 and link["method"] == "GET" and link["templated"] is False
    async with http.get(link["href"]) as resp:  # no Authorization
        assert resp.status == 200 and resp.headers["Accept-Ranges"] == "bytes"
        assert await resp.read() == data
    async with http.get(link["href"], headers={"Range": "bytes=100-149"}) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Range"] == f"bytes 100-149/{len(data)}"
        assert await resp.read() == data[100:150]
    async with http.get(link["href"], headers={"Range": "bytes=2500-"}) as resp:
        assert await resp.read() == data[2500:]
    async with http.get(link["href"], headers={"Range": "bytes=-10"}) as resp:
        assert await resp.read() == data[-10:]
    async with http.get(link["href"], headers={"Range": f"bytes={len(data)}-"}) as resp:
        assert resp.status == 416
    async with http.get(f"{emulator.origin}/download-target/forged.token") as resp:
        assert resp.status == 404
        assert resp.content_type == "text/html"  # the downloader errs in HTML, not JSON


# -- delete, copy, move, operations -------------------------------------------------------------

async def test_delete_file_and_folder(http, emulator) -> None:
    await mkdir(http, emulator, "/e")
    await mkdir(http, emulator, "/full")
    await upload(http, emulator, "/full/f", b"abc")
    status, body = await call(http, "DELETE", f"{emulator.base_url}/resources",
                              params={"path": "/e", "permanently": "true"})
    assert status == 204 and body is None
    status, body = await call(http, "DELETE", f"{emulator.base_url}/resources",
                              params={"path": "/full/f", "md5": "0" * 32})
    assert status == 409
    assert_error(body, "MD5DifferError")
    status, op = await call(http, "DELETE", f"{emulator.base_url}/resources",
                            params={"path": "/full", "permanently": "true"})
    assert status == 202
    assert re.fullmatch(re.escape(emulator.base_url) + r"/operations/[0-9a-f]{64}", op["href"])
    status, state = await call(http, "GET", op["href"])
    assert state["status"] in ("in-progress", "success")
    status, body = await call(http, "DELETE", f"{emulator.base_url}/resources", params={"path": "/full"})
    assert status == 404
    assert_error(body, "DiskNotFoundError")


async def test_delete_to_trash_and_restore(http, emulator) -> None:
    await upload(http, emulator, "/t.txt", b"12345")
    status, _ = await call(http, "DELETE", f"{emulator.base_url}/resources", params={"path": "/t.txt"})
    assert status == 204
    _, info = await call(http, "GET", emulator.base_url)
    assert info["trash_size"] == 5 and info["used_space"] == 5  # the trash counts toward used space
    _, trash = await call(http, "GET", f"{emulator.base_url}/trash/resources", params={"path": "trash:/"})
    item = trash["_embedded"]["items"][0]
    assert item["origin_path"] == "disk:/t.txt" and TIMESTAMP.match(item["deleted"])
    status, _ = await call(http, "PUT", f"{emulator.base_url}/trash/resources/restore", params={"path": item["path"]})
    assert status == 201
    assert (await call(http, "GET", f"{emulator.base_url}/resources", params={"path": "/t.txt"}))[0] == 200


async def test_copy_and_move(http, emulator) -> None:
    await mkdir(http, emulator, "/src")
    await upload(http, emulator, "/src/f", b"content")
    url = emulator.base_url
    status, body = await call(http, "POST", f"{url}/resources/copy", params={"from": "/src/f", "path": "/f2"})
    assert status == 201 and body["href"].endswith("path=disk%3A%2Ff2")
    status, body = await call(http, "POST", f"{url}/resources/copy", params={"from": "/src/f", "path": "/f2"})
    assert status == 409
    assert_error(body, "DiskResourceAlreadyExistsError")
    status, body = await call(http, "POST", f"{url}/resources/copy",
                              params={"from": "/src/f", "path": "/f2", "overwrite": "true"})
    assert status == 201
    status, body = await call(http, "POST", f"{url}/resources/copy", params={"from": "/src", "path": "/dst"})
    assert status == 202 and "/operations/" in body["href"]
    status, body = await call(http, "POST", f"{url}/resources/move", params={"from": "/src", "path": "/src/in"})
    assert status == 409
    status, body = await call(http, "POST", f"{url}/resources/move", params={"from": "/f2", "path": "/moved"})
    assert status == 201
    assert (await call(http, "GET", f"{url}/resources", params={"path": "/f2"}))[0] == 404
    _, moved = await call(http, "GET", f"{url}/resources", params={"path": "/moved"})
    assert moved["md5"] == hashlib.md5(b"content").hexdigest()
    status, body = await call(http, "POST", f"{url}/resources/copy", params={"from": "/none", "path": "/x"})
    assert status == 404
    status, body = await call(http, "GET", f"{url}/operations/0000")
    assert status == 404
    assert_error(body, "DiskOperationNotFoundError")


async def test_publish(http, emulator) -> None:
    await upload(http, emulator, "/pub.txt", b"open")
    status, body = await call(http, "PUT", f"{emulator.base_url}/resources/publish", params={"path": "/pub.txt"})
    assert status == 200 and body["method"] == "GET"
    _, meta = await call(http, "GET", f"{emulator.base_url}/resources", params={"path": "/pub.txt"})
    async with http.get(meta["public_url"]) as resp:
        assert await resp.read() == b"open"
    status, _ = await call(http, "PUT", f"{emulator.base_url}/resources/unpublish", params={"path": "/pub.txt"})
    _, meta = await call(http, "GET", f"{emulator.base_url}/resources", params={"path": "/pub.txt"})
    assert "public_url" not in meta


# -- knobs ---------------------------------------------------------------------------------

async def test_rate_limit_answers_429_with_retry_after(http) -> None:
    async with running_emulator(rate_limit=1.0, retry_after=2) as emu:
        status, body = await call(http, "GET", emu.base_url)
        assert status == 429
        assert_error(body, "TooManyRequestsError")
        async with http.get(emu.base_url, headers={"Authorization": f"OAuth {TOKEN}"}) as resp:
            assert resp.headers["Retry-After"] == "2"


async def test_injected_server_errors(http) -> None:
    async with running_emulator(error_rate=1.0) as emu:
        statuses = {(await call(http, "GET", emu.base_url))[0] for _ in range(30)}
        assert statuses <= {500, 502, 503, 504} and len(statuses) > 1


async def test_fault_rates_and_seed(http) -> None:
    async def run(seed: int) -> list[int]:
        async with running_emulator(rate_limit=0.2, error_rate=0.05, seed=seed) as emu:
            return [(await call(http, "GET", emu.base_url))[0] for _ in range(400)]

    first = await run(7)
    assert first == await run(7)  # same seed, same faults
    assert 40 < first.count(429) < 130
    assert 3 < sum(s >= 500 for s in first) < 45


async def test_latency(http) -> None:
    async with running_emulator(latency=0.05) as emu:
        start = time.monotonic()
        await call(http, "GET", emu.base_url)
        assert time.monotonic() - start >= 0.05


async def test_request_counts(http, emulator) -> None:
    await mkdir(http, emulator, "/k")
    assert emulator.request_counts["PUT /v1/disk/resources"] == 1


# -- persistence ----------------------------------------------------------------------------

async def test_data_dir_survives_a_restart(http, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    async with running_emulator(data_dir=tmp_path) as emu:
        await mkdir(http, emu, "/keep")
        await upload(http, emu, "/keep/a.bin", data)
        await upload(http, emu, "/keep/b.bin", b"gone soon")
        await call(http, "DELETE", f"{emu.base_url}/resources", params={"path": "/keep/b.bin", "permanently": "true"})
        await upload(http, emu, "/trashed", b"t")
        await call(http, "DELETE", f"{emu.base_url}/resources", params={"path": "/trashed"})
        # a torn upload leaves no temporary file behind
        _, link = await call(http, "GET", f"{emu.base_url}/resources/upload", params={"path": "/torn"})

        async def broken() -> AsyncIterator[bytes]:
            yield b"x" * 1000
            raise RuntimeError("broken")

        with pytest.raises(aiohttp.ClientError):
            async with http.put(link["href"], data=broken()):
                pass
        await asyncio.sleep(0.1)
        assert list((tmp_path / "tmp").iterdir()) == []
    async with running_emulator(data_dir=tmp_path) as emu:
        _, listing = await call(http, "GET", f"{emu.base_url}/resources", params={"path": "/keep"})
        assert [i["name"] for i in listing["_embedded"]["items"]] == ["a.bin"]
        _, link = await call(http, "GET", f"{emu.base_url}/resources/download", params={"path": "/keep/a.bin"})
        async with http.get(link["href"]) as resp:
            assert await resp.read() == data
        _, info = await call(http, "GET", emu.base_url)
        assert info["used_space"] == len(data) + 1 and info["trash_size"] == 1
    blobs = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == 2  # the permanently deleted file's content is gone


async def test_lock_rate_answers_423(http) -> None:
    async with running_emulator(lock_rate=1.0) as emu:
        status, body = await call(http, "GET", emu.base_url)
        assert status == 423
        assert_error(body, "DiskResourceLockedError")
