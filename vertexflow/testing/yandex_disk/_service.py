"""The emulator's HTTP service: the REST API under ``/v1/disk`` and the data routes.

API calls need ``Authorization: OAuth <token>``; the upload and download
links the API hands out (``/upload-target/...``, ``/download-target/...``)
and public links (``/d/...``) need none, as on the real service.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import random
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from . import _errors as err
from ._blobs import DirBlobs, MemoryBlobs
from ._errors import ApiError
from ._tree import DISK, TRASH, Ids, Journal, Node, Parts, Tree, display, format_time, parse_path

GiB = 1 << 30
#: Operations remembered for status queries; the oldest are forgotten first.
MAX_OPERATIONS = 100_000
#: Body bytes read per step of an upload.
UPLOAD_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class Knobs:
    """Test and rehearsal settings; every one is also a CLI flag (``--rate-limit`` ...)."""

    #: seconds added to every request (API and data routes) before it is handled
    latency: float = 0.0
    #: fraction of API requests answered 429 TooManyRequestsError
    rate_limit: float = 0.0
    #: the Retry-After those 429s carry, in seconds (fractions allowed, for fast tests)
    retry_after: float = 1.0
    #: fraction of requests (API and data routes) answered 500/502/503/504
    error_rate: float = 0.0
    #: fraction of API requests answered 423 DiskResourceLockedError
    lock_rate: float = 0.0
    #: fraction of upload PUTs answered 202, the file appearing ``async_delay`` later
    async_upload_rate: float = 0.0
    #: seconds an asynchronous operation (202 upload, folder delete/copy/move) stays in-progress
    async_delay: float = 0.2
    #: fraction of uploads stored with their first byte flipped (corruption in transit)
    corrupt_rate: float = 0.0
    #: the account's size; uploads and copies beyond it answer 507
    total_space: int = 10 * GiB
    #: the largest file an upload may carry (1 GiB on a free account, 50 GiB paid): 413 beyond
    max_file_size: int = 1 * GiB
    #: report a paid account (``is_paid``)
    paid: bool = False
    #: seconds an unused upload link stays valid (the service's is 30 minutes)
    link_ttl: float = 1800.0
    #: seed of the random choices (faults, ids): the same seed gives the same run
    seed: int | None = 0


KNOB_NAMES = tuple(f.name for f in fields(Knobs))


@dataclass(slots=True)
class Operation:
    status: str = "in-progress"
    ready_at: float | None = None  # becomes "success" at this time

    def current(self) -> str:
        if self.status == "in-progress" and self.ready_at is not None and time.monotonic() >= self.ready_at:
            self.status = "success"
        return self.status


@dataclass(slots=True)
class UploadLink:
    parts: Parts
    overwrite: bool
    expires: float
    operation_id: str
    used: bool = False


def _bool(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.lower() in ("true", "1", "yes")


def _int(query: Any, name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise err.field_error(name, "Not a valid integer.") from None
    if value < 0:
        raise err.field_error(name, "Must be greater than or equal to 0.")
    return value


def filter_fields(obj: Any, paths: list[list[str]]) -> Any:
    """Keep what ``fields=a,b.c`` names; a key named with sub-fields keeps only those."""
    if isinstance(obj, list):
        return [filter_fields(x, paths) for x in obj]
    if not isinstance(obj, dict):
        return obj
    wanted: dict[str, list[list[str]]] = {}
    for p in paths:
        wanted.setdefault(p[0], []).append(p[1:])
    out = {}
    for key, subs in wanted.items():
        if key in obj:
            deeper = [s for s in subs if s]
            out[key] = filter_fields(obj[key], deeper) if deeper else obj[key]
    return out


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)  # the service sends UTF-8 text, not \u escapes


def _retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


class YandexDiskEmulator:
    """State and settings of one emulated account, and the aiohttp app serving it.

    ``token``: the only OAuth token accepted (any non-empty one when None).
    ``data_dir``: keep files and metadata there so they survive a restart
    (in memory when None). Other keyword arguments are :class:`Knobs`.
    After :func:`running_emulator` starts it, ``base_url`` is the API base
    (``http://127.0.0.1:PORT/v1/disk``) and ``origin`` the server's root.
    """

    def __init__(self, *, token: str | None = None, data_dir: str | os.PathLike[str] | None = None,
                 **knobs: Any) -> None:
        unknown = set(knobs) - set(KNOB_NAMES)
        if unknown:
            raise TypeError(f"unknown emulator settings: {', '.join(sorted(unknown))}")
        self.knobs = Knobs(**knobs)
        self.token = token
        self.ids = Ids(self.knobs.seed)
        self._faults = random.Random(self.knobs.seed)
        if data_dir is not None:
            root = Path(data_dir)
            root.mkdir(parents=True, exist_ok=True)
            self.tree = Tree(DirBlobs(root), self.ids, Journal(root))
        else:
            self.tree = Tree(MemoryBlobs(), self.ids)
        self.operations: OrderedDict[str, Operation] = OrderedDict()
        self.uploads: OrderedDict[str, UploadLink] = OrderedDict()
        #: requests seen, keyed ``"METHOD /route"`` (e.g. ``"PUT /v1/disk/resources"`` for mkdir)
        self.request_counts: Counter[str] = Counter()
        self.base_url = ""
        self.origin = ""
        self._secret = os.urandom(32)  # signs download links
        self._tasks: set[asyncio.Task[None]] = set()
        self._reg_time = int(time.time())
        self._app: web.Application | None = None

    # -- app ----------------------------------------------------------------
    @property
    def app(self) -> web.Application:
        if self._app is None:
            self._app = self.make_app()
        return self._app

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        api = "/v1/disk"
        r = app.router
        r.add_get(api, self.disk_info)
        r.add_get(api + "/", self.disk_info)
        r.add_get(api + "/resources", self.get_resource)
        r.add_put(api + "/resources", self.mkdir)
        r.add_delete(api + "/resources", self.delete)
        r.add_patch(api + "/resources", self.patch)
        r.add_get(api + "/resources/files", self.files)
        r.add_get(api + "/resources/last-uploaded", self.last_uploaded)
        r.add_get(api + "/resources/upload", self.upload_link)
        r.add_get(api + "/resources/download", self.download_link)
        r.add_post(api + "/resources/copy", self.copy)
        r.add_post(api + "/resources/move", self.move)
        r.add_put(api + "/resources/publish", self.publish)
        r.add_put(api + "/resources/unpublish", self.unpublish)
        r.add_get(api + "/operations/{id}", self.operation)
        r.add_get(api + "/trash/resources", self.trash_get)
        r.add_delete(api + "/trash/resources", self.trash_delete)
        r.add_put(api + "/trash/resources/restore", self.trash_restore)
        r.add_get(api + "/public/resources", self.public_get)
        r.add_get(api + "/public/resources/download", self.public_download_link)
        r.add_put("/upload-target/{token}", self.upload_put)
        r.add_get("/download-target/{token}", self.download_get)
        r.add_get("/d/{key}", self.public_page)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _cleanup(self, app: web.Application) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.close()

    def close(self) -> None:
        if self.tree.journal is not None:
            self.tree.journal.close()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        resource = request.match_info.route.resource
        self.request_counts[f"{request.method} {resource.canonical if resource else request.path}"] += 1
        api = request.path.startswith("/v1/disk")
        if self.knobs.latency:
            await asyncio.sleep(self.knobs.latency)
        try:
            if api:
                self._authorize(request)
                self._api_faults()
            else:
                await self._data_faults(request)
            return await handler(request)
        except ApiError as e:
            headers = {"Retry-After": _retry_after(self.knobs.retry_after)} if e.status == 429 else None
            if api or request.path.startswith("/upload-target"):
                return web.json_response(e.body(), status=e.status, headers=headers, dumps=_dumps)
            return web.Response(status=e.status, text=err.html_error(e.status, e.description),
                                content_type="text/html", headers=headers)

    def _authorize(self, request: web.Request) -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "OAuth" or not token.strip() or (self.token is not None and token.strip() != self.token):
            raise err.unauthorized()

    def _draw_fault(self, rate_limit: float, lock_rate: float) -> ApiError | None:
        if not (rate_limit or lock_rate or self.knobs.error_rate):
            return None
        r = self._faults.random()  # one draw: the rates add up, and a seed replays the same faults
        if r < rate_limit:
            return err.too_many_requests()
        r -= rate_limit
        if r < lock_rate:
            return err.locked()
        r -= lock_rate
        if r < self.knobs.error_rate:
            return err.server_error(self._faults.choice(sorted(err.SERVER_ERRORS)))
        return None

    def _api_faults(self) -> None:
        fault = self._draw_fault(self.knobs.rate_limit, self.knobs.lock_rate)
        if fault is not None:
            raise fault

    async def _data_faults(self, request: web.Request) -> None:
        fault = self._draw_fault(0.0, 0.0)
        if fault is not None:
            if request.method == "PUT":
                # the upload was received and then lost: drain it, keep nothing
                link = self.uploads.get(request.match_info.get("token", ""))
                if link is not None:
                    link.used = True
                    self._fail_operation(link.operation_id)
                try:
                    async for _ in request.content.iter_chunked(UPLOAD_CHUNK):
                        pass
                except Exception:
                    pass
            raise fault

    # -- helpers --------------------------------------------------------------
    def _reply(self, request: web.Request, payload: dict[str, Any], status: int = 200) -> web.Response:
        spec = request.query.get("fields", "")
        if spec:
            payload = filter_fields(payload, [f.split(".") for f in spec.split(",") if f])
        return web.json_response(payload, status=status, dumps=_dumps)

    def _origin(self, request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    def _resource_link(self, request: web.Request, parts: Parts) -> dict[str, Any]:
        query = urlencode({"path": display(DISK, parts)})  # spaces become "+", as the service writes them
        return {"href": f"{self._origin(request)}/v1/disk/resources?{query}", "method": "GET", "templated": False}

    def _new_operation(self, *, delayed: bool) -> str:
        op_id = self.ids.hex()
        ready = time.monotonic() + self.knobs.async_delay if delayed else None
        self.operations[op_id] = Operation(ready_at=ready)
        while len(self.operations) > MAX_OPERATIONS:
            self.operations.popitem(last=False)
        return op_id

    def _operation_link(self, request: web.Request, op_id: str) -> dict[str, Any]:
        # yadisk only waits on links of exactly this form
        return {"href": f"{self._origin(request)}/v1/disk/operations/{op_id}", "method": "GET", "templated": False}

    def _fail_operation(self, op_id: str) -> None:
        op = self.operations.get(op_id)
        if op is not None and op.status == "in-progress":
            op.status = "failed"

    def _sign(self, payload: dict[str, Any]) -> str:
        raw = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).rstrip(b"=")
        mac = hmac.new(self._secret, raw, hashlib.sha256).hexdigest()[:32]
        return f"{raw.decode()}.{mac}"

    def _unsign(self, token: str) -> dict[str, Any] | None:
        raw, _, mac = token.rpartition(".")
        good = hmac.new(self._secret, raw.encode(), hashlib.sha256).hexdigest()[:32]
        if not raw or not hmac.compare_digest(mac, good):
            return None
        payload = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        return payload if payload.get("exp", 0) >= time.time() else None

    def _download_href(self, request: web.Request, node: Node, name: str) -> str:
        token = self._sign({"sha": node.sha256, "size": node.size, "mime": node.mime_type,
                            "name": name, "exp": int(time.time() + 12 * 3600)})
        query = urlencode({"filename": name, "disposition": "attachment", "content_type": node.mime_type,
                           "fsize": node.size, "media_type": node.media_type, "etag": node.md5})
        return f"{self._origin(request)}/download-target/{token}?{query}"

    def resource_json(self, request: web.Request, area: str, parts: Parts, node: Node) -> dict[str, Any]:
        name = parts[-1] if parts else area
        out: dict[str, Any] = {"name": name, "exif": {}, "created": format_time(node.created),
                               "resource_id": node.resource_id, "modified": format_time(node.modified),
                               "path": display(area, parts), "type": "dir" if node.is_dir else "file",
                               "revision": node.revision}
        if parts:
            out["comment_ids"] = {"private_resource": node.resource_id, "public_resource": node.resource_id}
        else:
            out["comment_ids"] = {}
        if not node.is_dir:
            out.update(antivirus_status="clean", size=node.size, mime_type=node.mime_type,
                       media_type=node.media_type, md5=node.md5, sha256=node.sha256,
                       file=self._download_href(request, node, name))
        if node.public_key:
            out.update(public_key=node.public_key, public_url=node.public_url)
        if node.custom_properties:
            out["custom_properties"] = node.custom_properties
        if node.origin_path:
            out.update(origin_path=node.origin_path, deleted=format_time(node.deleted or node.modified))
        return out

    def _listing(self, request: web.Request, area: str, parts: Parts, node: Node) -> dict[str, Any]:
        out = self.resource_json(request, area, parts, node)
        if node.children is None:
            return out
        q = request.query
        limit, offset = _int(q, "limit", 20), _int(q, "offset", 0)
        sort = q.get("sort", "")
        field_name = sort.lstrip("-")
        keys = {"": lambda kv: kv[0], "name": lambda kv: kv[0], "path": lambda kv: kv[0],
                "created": lambda kv: (kv[1].created, kv[0]), "modified": lambda kv: (kv[1].modified, kv[0]),
                "size": lambda kv: (kv[1].total_size() if kv[1].is_dir else kv[1].size, kv[0])}
        if field_name not in keys:
            raise err.field_error("sort", f'"{sort}" is not a valid choice.')
        entries = sorted(node.children.items(), key=keys[field_name], reverse=sort.startswith("-"))
        page = entries[offset:offset + limit]
        out["_embedded"] = {
            "sort": sort, "items": [self.resource_json(request, area, parts + (n,), c) for n, c in page],
            "limit": limit, "offset": offset, "path": display(area, parts), "total": len(entries)}
        return out

    def _check_space(self, extra: int) -> None:
        if self.tree.used_space + extra > self.knobs.total_space:
            raise err.quota_exhausted()

    # -- disk ---------------------------------------------------------------
    async def disk_info(self, request: web.Request) -> web.Response:
        k = self.knobs
        reg = format_time(self._reg_time)
        return self._reply(request, {
            "max_file_size": k.max_file_size, "paid_max_file_size": 50 * GiB,
            "total_space": k.total_space, "reg_time": reg, "trash_size": self.tree.trash_size,
            "is_paid": k.paid, "is_idm_managed_folder_address_access": False,
            "used_space": self.tree.used_space,
            "system_folders": {"applications": "disk:/Приложения", "downloads": "disk:/Загрузки/"},
            "user": {"reg_time": reg, "display_name": "emulator", "uid": Ids.UID, "country": "ru",
                     "is_child": False, "login": "emulator"},
            "is_idm_managed_public_access": False, "unlimited_autoupload_enabled": False,
            "revision": self.ids.revision()})

    # -- resources ----------------------------------------------------------
    async def get_resource(self, request: web.Request) -> web.Response:
        parts = parse_path(request.query.get("path"))
        node = self.tree.require(DISK, parts)
        return self._reply(request, self._listing(request, DISK, parts, node))

    async def mkdir(self, request: web.Request) -> web.Response:
        parts = parse_path(request.query.get("path"))
        existing = self.tree.get(DISK, parts)
        if existing is not None:
            if existing.is_dir:
                raise err.dir_exists(display(DISK, parts))
            raise err.already_exists(display(DISK, parts))
        self.tree.parent_dir(DISK, parts)
        self.tree.set(DISK, parts, self.tree.new_dir())
        return self._reply(request, self._resource_link(request, parts), 201)

    async def patch(self, request: web.Request) -> web.Response:
        parts = parse_path(request.query.get("path"))
        node = self.tree.require(DISK, parts)
        if request.content_type != "application/json":
            raise ApiError(415, "UnsupportedMediaTypeError", "Unsupported Media Type", "Неподдерживаемый тип.")
        try:
            body = await request.json()
            props = body.get("custom_properties") or {}
            assert isinstance(props, dict)
        except Exception:
            raise err.field_error("custom_properties", "Not a valid object.") from None
        merged = dict(node.custom_properties or {})
        merged.update(props)
        node.custom_properties = {k: v for k, v in merged.items() if v is not None} or None
        node.revision = self.ids.revision()
        self.tree.set(DISK, parts, node)
        return self._reply(request, self.resource_json(request, DISK, parts, node))

    async def delete(self, request: web.Request) -> web.Response:
        q = request.query
        parts = parse_path(q.get("path"))
        if not parts:
            raise err.bad_request("The root folder cannot be deleted.")
        node = self.tree.require(DISK, parts)
        md5 = q.get("md5")
        if md5:
            if node.is_dir:
                raise err.field_error("md5", "Only a file has an MD5.")
            if md5.lower() != node.md5:
                raise err.md5_differs()
        if _bool(q.get("permanently")):
            self.tree.set(DISK, parts, None)
        else:
            self._to_trash(parts, node)
        if (node.children or _bool(q.get("force_async"))):
            op_id = self._new_operation(delayed=True)
            return self._reply(request, self._operation_link(request, op_id), 202)
        return web.Response(status=204, content_type="application/json")

    def _to_trash(self, parts: Parts, node: Node) -> None:
        trash = self.tree.roots[TRASH].children
        assert trash is not None
        name, n = parts[-1], 1
        while name in trash:
            n += 1
            name = f"{parts[-1]}_{n}"
        node.origin_path = display(DISK, parts)
        node.deleted = int(time.time())
        # into the trash first, so the blobs never lose their last reference
        self.tree.set(TRASH, (name,), node)
        self.tree.set(DISK, parts, None)

    async def files(self, request: web.Request) -> web.Response:
        q = request.query
        limit, offset = _int(q, "limit", 20), _int(q, "offset", 0)
        media = {m for m in q.get("media_type", "").split(",") if m}
        found = []
        stack: list[tuple[Parts, Node]] = [((), self.tree.roots[DISK])]
        while stack:
            parts, node = stack.pop()
            if node.children is None:
                if not media or node.media_type in media:
                    found.append((parts, node))
            else:
                stack.extend((parts + (n,), c) for n, c in node.children.items())
        sort = q.get("sort", "name").lstrip("-") or "name"
        key = {"name": lambda pn: (pn[0][-1], pn[0]), "path": lambda pn: pn[0],
               "created": lambda pn: pn[1].created, "modified": lambda pn: pn[1].modified,
               "size": lambda pn: pn[1].size}.get(sort)
        if key is None:
            raise err.field_error("sort", f'"{sort}" is not a valid choice.')
        found.sort(key=key, reverse=q.get("sort", "").startswith("-"))
        items = [self.resource_json(request, DISK, p, n) for p, n in found[offset:offset + limit]]
        return self._reply(request, {"items": items, "limit": limit, "offset": offset})

    async def last_uploaded(self, request: web.Request) -> web.Response:
        limit = _int(request.query, "limit", 20)
        found = [(p, n) for p, n in self._walk(DISK) if not n.is_dir]
        found.sort(key=lambda pn: pn[1].modified, reverse=True)
        items = [self.resource_json(request, DISK, p, n) for p, n in found[:limit]]
        return self._reply(request, {"items": items, "limit": limit})

    def _walk(self, area: str) -> list[tuple[Parts, Node]]:
        out: list[tuple[Parts, Node]] = []
        stack: list[tuple[Parts, Node]] = [((), self.tree.roots[area])]
        while stack:
            parts, node = stack.pop()
            out.append((parts, node))
            if node.children is not None:
                stack.extend((parts + (n,), c) for n, c in node.children.items())
        return out

    # -- upload -------------------------------------------------------------
    async def upload_link(self, request: web.Request) -> web.Response:
        q = request.query
        parts = parse_path(q.get("path"))
        overwrite = _bool(q.get("overwrite"))
        size = _int(q, "size", 0)
        if size > self.knobs.max_file_size:
            raise err.file_too_large(self.knobs.max_file_size, self.knobs.paid)
        if self.tree.used_space >= self.knobs.total_space:
            raise err.quota_exhausted()
        existing = self.tree.get(DISK, parts)
        if existing is not None and existing.is_dir:
            raise err.dir_exists(display(DISK, parts))
        if existing is not None and not overwrite:
            raise err.already_exists(display(DISK, parts))
        self.tree.parent_dir(DISK, parts)
        now = time.monotonic()
        while self.uploads:  # links are kept in expiry order
            token, link = next(iter(self.uploads.items()))
            if link.expires > now:
                break
            del self.uploads[token]
            self._fail_operation(link.operation_id)
        op_id = self._new_operation(delayed=False)
        token = f"{time.strftime('%Y%m%dT%H%M%S')}.{self.ids.hex(128)}"
        self.uploads[token] = UploadLink(parts, overwrite, now + self.knobs.link_ttl, op_id)
        href = f"{self._origin(request)}/upload-target/{token}"
        return self._reply(request, {"operation_id": op_id, "href": href, "method": "PUT", "templated": False})

    async def upload_put(self, request: web.Request) -> web.StreamResponse:
        link = self.uploads.get(request.match_info["token"])
        if link is None or link.expires < time.monotonic():
            return web.Response(status=404, text=err.html_error(404, "Not Found"), content_type="text/html")
        if link.used:
            # a second PUT on one link is refused: ask for a fresh link
            return web.Response(status=400, text=err.html_error(400, "Bad Request"), content_type="text/html")
        link.used = True
        existing = self.tree.get(DISK, link.parts)
        replaced = existing.size if existing is not None and not existing.is_dir else 0
        staging = self.tree.blobs.stage()
        corrupt = bool(self.knobs.corrupt_rate) and self._faults.random() < self.knobs.corrupt_rate
        try:
            async for chunk in request.content.iter_chunked(UPLOAD_CHUNK):
                if corrupt and chunk:
                    chunk, corrupt = bytes([chunk[0] ^ 0xFF]) + chunk[1:], False
                if staging.size + len(chunk) > self.knobs.max_file_size:
                    raise err.file_too_large(self.knobs.max_file_size, self.knobs.paid)
                self._check_space(staging.size + len(chunk) - replaced)
                await staging.write(chunk)
            if request.content_length is not None and staging.size != request.content_length:
                raise err.bad_request("The body is shorter than its Content-Length.")
            sha, md5 = await staging.finish()
        except BaseException as exc:
            # a torn or refused body leaves nothing behind
            await staging.discard()
            self._fail_operation(link.operation_id)
            if isinstance(exc, Exception) and not isinstance(exc, ApiError):
                # the client went away mid-body (reset, truncated chunking): nobody to answer
                return web.Response(status=400, text=err.html_error(400, "Bad Request"), content_type="text/html")
            raise
        size = staging.size
        if self.knobs.async_upload_rate and self._faults.random() < self.knobs.async_upload_rate:
            task = asyncio.create_task(self._commit_later(link, sha, md5, size))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return web.Response(status=202)
        try:
            self._commit(link, sha, md5, size)
        finally:
            self.tree.blobs.decref(sha)  # the pin taken by finish()
        return web.Response(status=201)

    async def _commit_later(self, link: UploadLink, sha: str, md5: str, size: int) -> None:
        try:
            await asyncio.sleep(self.knobs.async_delay)
            self._commit(link, sha, md5, size)
        except ApiError:
            pass  # recorded as the operation's failure
        finally:
            self.tree.blobs.decref(sha)

    def _commit(self, link: UploadLink, sha: str, md5: str, size: int) -> None:
        try:
            existing = self.tree.get(DISK, link.parts)
            path = display(DISK, link.parts)
            if existing is not None and existing.is_dir:
                raise err.dir_exists(path)
            if existing is not None and not link.overwrite:
                raise err.already_exists(path)
            self.tree.parent_dir(DISK, link.parts)
            self._check_space(size - (existing.size if existing is not None else 0))
            created = existing.created if existing is not None else None
            node = self.tree.new_file(link.parts[-1], size, sha, md5, created)
            self.tree.set(DISK, link.parts, node)
        except ApiError:
            self._fail_operation(link.operation_id)
            raise
        op = self.operations.get(link.operation_id)
        if op is not None:
            op.status = "success"

    # -- download -------------------------------------------------------------
    async def download_link(self, request: web.Request) -> web.Response:
        parts = parse_path(request.query.get("path"))
        node = self.tree.require(DISK, parts)
        name = parts[-1] if parts else "disk"
        return self._reply(request, {"href": self._href_for(request, node, name), "method": "GET",
                                     "templated": False})

    def _href_for(self, request: web.Request, node: Node, name: str) -> str:
        if node.is_dir:
            # folders download as zip archives on the service; not emulated
            return f"{self._origin(request)}/download-target/folder?filename={quote(name)}.zip"
        return self._download_href(request, node, name)

    async def download_get(self, request: web.Request) -> web.StreamResponse:
        payload = self._unsign(request.match_info["token"])
        if payload is None or not self.tree.blobs.has(payload["sha"]):
            raise ApiError(404, "NotFound", "Not Found")
        return await self._stream(request, payload["sha"], payload["size"], payload["mime"], payload["name"])

    async def _stream(self, request: web.Request, sha: str, size: int, mime: str, name: str) -> web.StreamResponse:
        start, end = 0, size  # [start, end)
        status = 200
        headers = {"Accept-Ranges": "bytes", "Content-Type": mime or "application/octet-stream",
                   "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"}
        rng = request.headers.get("Range")
        if rng:
            parsed = _parse_range(rng, size)
            if parsed is None:
                return web.Response(status=416, text=err.html_error(416, "Range Not Satisfiable"),
                                    content_type="text/html", headers={"Content-Range": f"bytes */{size}"})
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = end - start
        await resp.prepare(request)
        async for chunk in self.tree.blobs.read(sha, start, end - start):
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    # -- copy and move --------------------------------------------------------
    async def copy(self, request: web.Request) -> web.Response:
        return await self._copy_or_move(request, move=False)

    async def move(self, request: web.Request) -> web.Response:
        return await self._copy_or_move(request, move=True)

    async def _copy_or_move(self, request: web.Request, *, move: bool) -> web.Response:
        q = request.query
        src_parts = parse_path(q.get("from"), name="from")
        dst_parts = parse_path(q.get("path"))
        overwrite = _bool(q.get("overwrite"))
        src = self.tree.require(DISK, src_parts)
        if not src_parts or not dst_parts:
            raise err.bad_request("The root folder cannot be copied or moved.")
        if dst_parts[:len(src_parts)] == src_parts and len(dst_parts) > len(src_parts):
            raise err.move_into_itself(display(DISK, src_parts))
        self.tree.parent_dir(DISK, dst_parts)
        existing = self.tree.get(DISK, dst_parts)
        if existing is not None and (not overwrite or dst_parts == src_parts):
            raise err.already_exists(display(DISK, dst_parts))
        if move:
            self.tree.set(DISK, dst_parts, src)
            self.tree.set(DISK, src_parts, None)
        else:
            self._check_space(src.total_size() - (existing.total_size() if existing is not None else 0))
            self.tree.set(DISK, dst_parts, self.tree.clone(src))
        if src.children or _bool(q.get("force_async")):
            return self._reply(request, self._operation_link(request, self._new_operation(delayed=True)), 202)
        return self._reply(request, self._resource_link(request, dst_parts), 201)

    # -- operations -------------------------------------------------------------
    async def operation(self, request: web.Request) -> web.Response:
        op = self.operations.get(request.match_info["id"])
        if op is None:
            raise err.operation_not_found()
        return self._reply(request, {"status": op.current()})

    # -- publishing -------------------------------------------------------------
    async def publish(self, request: web.Request) -> web.Response:
        parts = parse_path(request.query.get("path"))
        node = self.tree.require(DISK, parts)
        if not node.public_key:
            node.public_key = base64.b64encode(bytes.fromhex(self.ids.hex(512))).decode()
            node.public_url = f"{self._origin(request)}/d/{self.ids.token(14)}"
            self.tree.set(DISK, parts, node)
        return self._reply(request, self._resource_link(request, parts))

    async def unpublish(self, request: web.Request) -> web.Response:
        parts = parse_path(request.query.get("path"))
        node = self.tree.require(DISK, parts)
        if node.public_key:
            node.public_key = node.public_url = None
            self.tree.set(DISK, parts, node)
        return self._reply(request, self._resource_link(request, parts))

    def _find_public(self, key: str | None) -> tuple[Parts, Node]:
        if key:
            for parts, node in self._walk(DISK):
                if node.public_key and key in (node.public_key, node.public_url):
                    return parts, node
        raise err.not_found()

    async def public_get(self, request: web.Request) -> web.Response:
        parts, node = self._find_public(request.query.get("public_key"))
        sub = parse_path(request.query["path"]) if request.query.get("path") else ()
        target = self.tree.require(DISK, parts + sub)
        out = self._listing(request, DISK, parts + sub, target)
        out.update(public_key=node.public_key, public_url=node.public_url)
        return self._reply(request, out)

    async def public_download_link(self, request: web.Request) -> web.Response:
        parts, node = self._find_public(request.query.get("public_key"))
        sub = parse_path(request.query["path"]) if request.query.get("path") else ()
        target = self.tree.require(DISK, parts + sub)
        name = (parts + sub)[-1]
        return self._reply(request, {"href": self._href_for(request, target, name), "method": "GET",
                                     "templated": False})

    async def public_page(self, request: web.Request) -> web.StreamResponse:
        url = f"{self._origin(request)}/d/{request.match_info['key']}"
        for parts, node in self._walk(DISK):
            if node.public_url == url and not node.is_dir:
                return await self._stream(request, node.sha256, node.size, node.mime_type, parts[-1])
        raise ApiError(404, "NotFound", "Not Found")

    # -- trash ------------------------------------------------------------------
    async def trash_get(self, request: web.Request) -> web.Response:
        parts = parse_path(request.query.get("path") or "trash:/", area=TRASH)
        node = self.tree.require(TRASH, parts)
        return self._reply(request, self._listing(request, TRASH, parts, node))

    async def trash_delete(self, request: web.Request) -> web.Response:
        raw = request.query.get("path")
        if not raw or not parse_path(raw, area=TRASH):  # no path, or the trash itself: empty it
            trash = self.tree.roots[TRASH].children or {}
            names = list(trash)
            for name in names:
                self.tree.set(TRASH, (name,), None)
            if not names:
                return web.Response(status=204, content_type="application/json")
            return self._reply(request, self._operation_link(request, self._new_operation(delayed=True)), 202)
        parts = parse_path(raw, area=TRASH)
        node = self.tree.require(TRASH, parts)
        self.tree.set(TRASH, parts, None)
        if node.children or _bool(request.query.get("force_async")):
            return self._reply(request, self._operation_link(request, self._new_operation(delayed=True)), 202)
        return web.Response(status=204, content_type="application/json")

    async def trash_restore(self, request: web.Request) -> web.Response:
        q = request.query
        parts = parse_path(q.get("path"), area=TRASH)
        node = self.tree.require(TRASH, parts)
        if not parts:
            raise err.bad_request("The trash itself cannot be restored.")
        origin = parse_path(node.origin_path or display(DISK, parts[-1:]))
        if q.get("name"):
            origin = origin[:-1] + (q["name"],)
        existing = self.tree.get(DISK, origin)
        if existing is not None and not _bool(q.get("overwrite")):
            raise err.already_exists(display(DISK, origin))
        for i in range(1, len(origin)):  # the folders it was in come back too
            if self.tree.get(DISK, origin[:i]) is None:
                self.tree.set(DISK, origin[:i], self.tree.new_dir())
        node.origin_path = None
        node.deleted = None
        self.tree.set(DISK, origin, node)
        self.tree.set(TRASH, parts, None)
        if node.children or _bool(q.get("force_async")):
            return self._reply(request, self._operation_link(request, self._new_operation(delayed=True)), 202)
        return self._reply(request, self._resource_link(request, origin), 201)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` as ``[start, end)``; None when unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return (0, size) if size else None  # unsupported forms: the whole body
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            n = int(last)
            start, end = max(0, size - n), size
        else:
            start = int(first)
            end = min(size, int(last) + 1) if last else size
    except ValueError:
        return (0, size) if size else None
    if start >= size or start >= end:
        return None
    return start, end
