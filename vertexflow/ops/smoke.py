"""A smoke check of a company's storage through :class:`StorageManager` (``vertexflow company smoke``).

The platform's migration guide asks the operator, after a migration, to "test
file access for various content types: upload a test file, download a
previously stored file". :func:`smoke_company` does that for every content
type on the company's current route, as the platform would, through the
manager (so a live migration's routing, its dual writes and write fence, are
what is tested):

1. ``upload``: a small test file under a key no platform file has
   (``.vertexflow-smoke-<uuid>.txt`` at the company's root, so no folder is left behind);
2. ``read``: read it back and compare the bytes;
3. ``public_url``: its public URL; an ``http``/``https`` one is fetched
   (status 200, the Content-Type the store keeps for the file or, where it
   keeps none, the one its name implies, and the same bytes); a ``file://``
   one is read from disk; a store with no public URLs skips the step;
4. ``read_existing``: the first file the company has there, read (its first
   :data:`EXISTING_READ` bytes); skipped when the company has none;
5. ``delete``: the test file is deleted, also when a step failed or the
   check is cancelled, and checked gone.

Each step is reported with its latency; a failed step names what failed and
the route. Nothing raises for a failed step: the report says so
(:attr:`SmokeReport.ok`).
"""

from __future__ import annotations

import mimetypes
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import anyio

from ..tenancy.adapters import FOLDER_MARKER
from ..tenancy.manager import StorageManager

#: the test file's key starts so: a name the platform never gives a file (it starts with a dot)
SMOKE_PREFIX = ".vertexflow-smoke-"
#: seconds the public URL's fetch may take: far beyond a healthy store or CDN, short enough for a stuck one
HTTP_TIMEOUT = 30.0
#: bytes of an existing file read (enough to prove it is readable; a video need not be read whole)
EXISTING_READ = 64 * 1024
#: bytes of a public URL's answer read at most (the test file is far smaller; an error page may not be)
HTTP_READ_LIMIT = 1024 * 1024
#: GETs of the public URL before it is called broken, when what failed may pass (a 5xx or 429, a connection
#: cut, a body short or corrupted on the way): the check says whether the route serves, not whether one
#: request met a bad moment
HTTP_TRIES = 3
#: seconds before the second GET, doubled before each later one
HTTP_RETRY_DELAY = 0.5
#: answers worth asking again
_PASSING_STATUSES = frozenset({429, 500, 502, 503, 504})
STEPS = ("upload", "read", "public_url", "read_existing", "delete")
#: what a step found: passed (True), failed (False) or skipped (None), and what it says
Outcome = tuple[bool | None, str]


@dataclass(slots=True)
class SmokeStep:
    content_type: str
    step: str
    #: True passed, False failed, None skipped (the detail says why)
    ok: bool | None
    seconds: float
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"content_type": self.content_type, "step": self.step, "ok": self.ok,
                "seconds": round(self.seconds, 4), "detail": self.detail}


@dataclass(slots=True)
class SmokeReport:
    company: str
    #: content type -> the company's route for it (``connection:path``)
    routes: dict[str, str] = field(default_factory=dict)
    steps: list[SmokeStep] = field(default_factory=list)

    @property
    def failures(self) -> list[SmokeStep]:
        return [s for s in self.steps if s.ok is False]

    @property
    def ok(self) -> bool:
        return not self.failures

    def message(self) -> str:
        if self.ok:
            return f"company {self.company}: every step passed on {', '.join(self.routes.values())}"
        first = self.failures[0]
        return (f"company {self.company}: {len(self.failures)} steps failed; first: {first.content_type} "
                f"{first.step} on {self.routes.get(first.content_type, '?')}: {first.detail}")

    def as_dict(self) -> dict[str, Any]:
        return {"company": self.company, "ok": self.ok, "routes": self.routes,
                "steps": [s.as_dict() for s in self.steps], "message": self.message()}


def _media(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


class _Steps:
    def __init__(self, report: SmokeReport, content_type: str) -> None:
        self.report, self.ct = report, content_type

    async def run(self, name: str, fn: Callable[[], Awaitable[Outcome]]) -> bool:
        """Run step ``name``: ``fn`` gives (passed, failed or skipped, detail); an error it raises fails it."""
        started = time.monotonic()
        try:
            ok, detail = await fn()
        except Exception as exc:  # noqa: BLE001 - any failure of a step is its result, named in the report
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        self.report.steps.append(SmokeStep(self.ct, name, ok, time.monotonic() - started, detail))
        return ok is not False

    def skip(self, name: str, why: str) -> None:
        self.report.steps.append(SmokeStep(self.ct, name, None, 0.0, f"skipped: {why}"))


async def _fetch(url: str, timeout: float) -> tuple[int, str | None, bytes]:
    """GET ``url``: (status, Content-Type, at most HTTP_READ_LIMIT bytes of the body)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        async with session.get(url, max_redirects=5) as resp:
            body = await resp.content.read(HTTP_READ_LIMIT)
            return resp.status, resp.headers.get("Content-Type"), body


async def smoke_company(manager: StorageManager, company_ref: int | str, *,
                        content_types: list[str] | None = None, http_timeout: float = HTTP_TIMEOUT) -> SmokeReport:
    """Run the smoke check (see the module docstring) on every content type (or ``content_types``).

    Raises :class:`ConfigError` for an unknown company or content type, or a route that cannot be
    built (a connection without settings); a step that fails is in the report, not raised.
    """
    company = manager.company(company_ref)
    names = content_types or manager.config.content_type_names()
    report = SmokeReport(company.slug)
    for ct in names:
        report.routes[ct] = manager.target(company, ct).label()  # an unknown content type: ConfigError now
    for ct in names:
        await _smoke_one(manager, company.id, ct, report, http_timeout)
    return report


async def _smoke_one(manager: StorageManager, company_id: int, ct: str, report: SmokeReport,
                     http_timeout: float) -> None:
    steps = _Steps(report, ct)
    token = uuid.uuid4().hex
    key = f"{SMOKE_PREFIX}{token}.txt"
    data = f"vertexflow smoke test {token} of {report.company} {ct}\n".encode()
    adapter = await manager.get_company_adapter(company_id, ct)  # a route that cannot be built: ConfigError

    async def upload() -> Outcome:
        await manager.save_file(ct, key, data, company_id=company_id)
        return True, f"{len(data)} bytes to {key}"

    async def read() -> Outcome:
        got = await manager.get_file(ct, key, company_id=company_id)
        if got != data:
            return False, f"read back {len(got)} bytes that differ from the {len(data)} written"
        return True, f"{len(got)} bytes, equal"

    async def public_url() -> Outcome:
        try:
            url = await manager.get_public_url(ct, key, company_id=company_id)
        except NotImplementedError as exc:
            return None, f"skipped: {exc}"
        scheme = urlsplit(url).scheme
        if scheme == "file":
            path = unquote(urlsplit(url).path)
            body = await anyio.Path(path).read_bytes()
            if body != data:
                return False, f"{url}: the file on disk differs from the test file"
            return True, f"{url}: read from disk, equal"
        if scheme not in ("http", "https"):
            return None, f"skipped: {scheme}: URLs are not fetched ({url})"
        shown = url.split("?", 1)[0]  # a presigned URL's query is a credential: not printed
        expected = _media((await adapter.stat(key)).content_type) or _media(mimetypes.guess_type(key)[0])
        failed: list[str] = []
        for attempt in range(HTTP_TRIES):
            if attempt:
                await anyio.sleep(HTTP_RETRY_DELAY * 2 ** (attempt - 1))
            try:
                status, served, body = await _fetch(url, http_timeout)
            except (aiohttp.ClientError, TimeoutError) as exc:
                failed.append(f"{type(exc).__name__}: {exc}")
                continue
            if status in _PASSING_STATUSES:
                failed.append(f"HTTP {status}")
                continue
            if status != 200:
                return False, f"GET {shown}: HTTP {status}"
            if _media(served) != expected:
                return False, f"GET {shown}: Content-Type {served!r}, expected {expected!r}"
            if body != data:
                failed.append(f"{len(body)} bytes that differ from the test file")
                continue
            tries = f" (try {attempt + 1}; before: {'; '.join(failed)})" if failed else ""
            return True, f"GET {shown}: 200, {served}, {len(body)} bytes, equal{tries}"
        return False, f"GET {shown}: {HTTP_TRIES} tries failed: {'; '.join(failed)}"

    async def read_existing() -> Outcome:
        found = None
        async with aclosing(adapter.list_files()) as files:  # type: ignore[type-var]
            async for info in files:
                name = info.key.rsplit("/", 1)[-1]
                if name != FOLDER_MARKER and not name.startswith(SMOKE_PREFIX):
                    found = info
                    break
        if found is None:
            return None, "skipped: the company has no file of this content type yet"
        want = min(found.size, EXISTING_READ) if found.size is not None else None
        got = 0
        if want != 0:
            async with adapter.backend.open(found.key, length=want) as chunks:
                async for chunk in chunks:
                    got += len(chunk)
        if want is not None and got != want:
            return False, f"{found.key}: read {got} bytes of the {want} asked"
        return True, f"{found.key}: read {got} bytes"

    async def delete() -> Outcome:
        await manager.delete_file(ct, key, company_id=company_id)
        if await manager.file_exists(ct, key, company_id=company_id):
            return False, f"{key} is still there after its delete"
        return True, f"{key} deleted"

    try:
        if await steps.run("upload", upload):
            if await steps.run("read", read):
                await steps.run("public_url", public_url)
            else:
                steps.skip("public_url", "the test file could not be read back")
        else:
            steps.skip("read", "the upload failed")
            steps.skip("public_url", "the upload failed")
        await steps.run("read_existing", read_existing)
    finally:
        with anyio.CancelScope(shield=True):  # the test file goes, whatever happened
            await steps.run("delete", delete)
