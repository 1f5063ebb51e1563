"""The daemon's HTTP API, metrics and dashboard (aiohttp).

Endpoints (``docs/daemon.md`` has the reference with examples)::

    GET  /healthz                     200 while the event loop answers
    GET  /readyz                      200 once the jobs are loaded, 503 while starting or draining
    GET  /api/daemon                  version, start time, config file, reloads
    GET  /api/jobs                    every job: state, progress, next run, last result
    GET  /api/jobs/{name}             one job, with its last results and throughput samples
    POST /api/jobs/{name}/start       run now (also lifts a pause or a cancel)
    POST /api/jobs/{name}/pause       stop at a clean point and hold
    POST /api/jobs/{name}/resume      lift a pause or cancel; an interrupted run continues
    POST /api/jobs/{name}/cancel      abort the run in flight and hold
    GET  /api/jobs/{name}/runs/{id}/report   a run's per-object report, JSON lines (sync jobs; the run in
                                      progress too, as far as it has written; ``id`` is a result's ``id``)
    GET  /api/errors[?job=&limit=]    recent errors, newest last
    GET  /api/snapshot                the dashboard's first frame: the daemon, every job in detail, errors
    GET  /metrics                     Prometheus exposition
    GET  /events                      server-sent events: a "jobs" update every second
    GET  /                            the dashboard (with a first snapshot in it when no token is set)

With a token set (required when listening beyond loopback), every endpoint
but ``/healthz``, ``/readyz`` and the dashboard's page asks for
``Authorization: Bearer TOKEN``. A token in the URL (``?token=``) is refused
(401): URLs end up in logs, proxies and browser history. The page itself
holds no data: it asks for the token and sends it in that header on its own
requests, the event stream included (read with fetch, not EventSource, which
cannot send headers), so no cookie exists for another site to ride on; it
draws from ``/api/snapshot`` before the stream opens. Without a token (the
daemon on loopback, answering only requests that name it so) the page
carries that first snapshot itself, so it is drawn complete at once. A
second, read-only token opens the GET API, ``/metrics`` and ``/events`` and
is refused (403) on the control endpoints. POSTs carrying an ``Origin`` other
than the daemon's own are refused, so a web page elsewhere cannot drive a
daemon on loopback; without a token, requests must name the daemon as
``127.0.0.1``, ``localhost`` or ``[::1]`` in ``Host`` (a defence against DNS
rebinding).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from .jobs import REFUSED
from .metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from .service import Daemon

SERVICE: web.AppKey[Daemon] = web.AppKey("service")
#: the daemon asks for no token: its page may carry data (it answers only requests naming loopback)
OPEN_PAGE: web.AppKey[bool] = web.AppKey("open_page")
#: seconds between two snapshots on /events
EVENT_INTERVAL = 1.0
#: event streams open at once (each costs one snapshot per second)
MAX_EVENT_STREAMS = 32
#: answered without a token: probes, and the dashboard's page (it holds no data and asks for the token)
_OPEN = ("/healthz", "/readyz", "/")
#: what the read-only token may do
_READ_METHODS = ("GET", "HEAD")
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
_ACTIONS = ("start", "pause", "resume", "cancel")
#: answers that mean the action changed nothing


def make_app(service: Daemon, token: str | None, read_token: str | None = None) -> web.Application:
    app = web.Application(middlewares=[_guard(token, read_token)])
    app[SERVICE] = service
    app[OPEN_PAGE] = token is None
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/daemon", daemon_info)
    app.router.add_get("/api/jobs", jobs)
    app.router.add_get("/api/jobs/{name}", job)
    app.router.add_post("/api/jobs/{name}/{action}", action)
    app.router.add_get("/api/jobs/{name}/runs/{run}/report", report)
    app.router.add_get("/api/errors", errors)
    app.router.add_get("/api/snapshot", snapshot)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/events", events)
    app.router.add_get("/", dashboard)
    return app


def bearer(header: str) -> str:
    """The token of an ``Authorization: Bearer TOKEN`` header ("" for none or another scheme)."""
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _guard(token: str | None, read_token: str | None) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        if "token" in request.query:
            return _unauthorized("a token in the URL is refused (URLs are logged and kept in history): "
                                 "send it in the Authorization header (Authorization: Bearer TOKEN)")
        if token is not None and request.path not in _OPEN:
            given = bearer(request.headers.get("Authorization", "")).encode()
            if hmac.compare_digest(given, token.encode()):
                pass
            elif read_token is not None and hmac.compare_digest(given, read_token.encode()):
                if request.method not in _READ_METHODS:
                    return _error(403, "the read-only token cannot control jobs: use the control token")
            else:
                return _unauthorized("a valid token is required (Authorization: Bearer TOKEN)")
        if token is None and request.url.host not in _LOOPBACK_NAMES:
            # without a token the daemon listens on loopback only; a page whose name resolves
            # there (DNS rebinding) sends its own name as Host and is refused
            return _error(403, f"unexpected Host {request.host!r}: use 127.0.0.1 or localhost")
        origin = request.headers.get("Origin")
        if request.method == "POST" and origin and urlsplit(origin).netloc != request.host:
            return _error(403, f"cross-origin request from {origin} refused")
        return await handler(request)

    return guard


def _unauthorized(message: str) -> web.Response:
    return web.json_response({"error": message}, status=401, headers={"WWW-Authenticate": "Bearer"})


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    ready = service.ready and not service.draining
    reason = "draining" if service.draining else None if ready else "starting"
    return web.json_response({"ready": ready, "reason": reason}, status=200 if ready else 503)


async def daemon_info(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].info())


async def jobs(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    return web.json_response({"jobs": [c.snapshot() for c in service.controllers.values()]})


def _controller(request: web.Request) -> Any:
    name = request.match_info["name"]
    controller = request.app[SERVICE].controllers.get(name)
    if controller is None:
        raise web.HTTPNotFound(text=json.dumps({"error": f"no job named {name!r}"}), content_type="application/json")
    return controller


async def job(request: web.Request) -> web.Response:
    return web.json_response(_controller(request).snapshot(detail=True))


async def report(request: web.Request) -> web.StreamResponse:
    """The report file of a run, streamed as it is on disk (a run in progress: what it has written so far)."""
    controller = _controller(request)
    run = request.match_info["run"]
    path = controller.reports.find(controller.name, int(run)) if run.isdigit() and controller.reports else None
    if path is None:
        return _error(404, f"no report of run {run} of job {controller.name!r} is kept "
                           f"(kept: {', '.join(map(str, controller.reports.runs(controller.name))) or 'none'})"
                      if controller.reports is not None else "the daemon keeps no reports without a journal")
    return web.FileResponse(path, headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-store"})


async def action(request: web.Request) -> web.Response:
    verb = request.match_info["action"]
    if verb not in _ACTIONS:
        return _error(404, f"unknown action {verb!r}: use {', '.join(_ACTIONS)}")
    controller = _controller(request)
    if request.app[SERVICE].draining:
        return _error(503, "the daemon is draining")
    result = getattr(controller, verb)()
    snapshot = controller.snapshot()
    return web.json_response({"job": controller.name, "action": verb, "result": result,
                              "state": snapshot["state"], "next_run": snapshot["next_run"]},
                             status=409 if result in REFUSED else 200)


async def errors(request: web.Request) -> web.Response:
    try:
        limit = max(1, min(1000, int(request.query.get("limit", "100"))))
    except ValueError:
        return _error(400, "limit must be a number")
    events = request.app[SERVICE].errors.recent(request.query.get("job"), limit)
    return web.json_response({"errors": [e.as_dict() for e in events]})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[SERVICE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def snapshot_of(service: Daemon, *, update: bool = False) -> dict[str, Any]:
    """What the dashboard draws: /api/snapshot and the page's first frame, every job in detail.

    ``update``: one /events event, which the page adds to what it has: each job
    without its past results and with only the newest throughput sample (the
    whole of both for sixty jobs is most of a megabyte, every second, for each
    page open).
    """
    if update:
        jobs = [{**c.snapshot(), "throughput": _newest(c.throughput.samples)} for c in service.controllers.values()]
    else:
        jobs = [c.snapshot(detail=True) for c in service.controllers.values()]
    return {"time": service.now(), "daemon": service.info(), "jobs": jobs,
            "errors": [e.as_dict() for e in service.errors.recent(None, 20)]}


def _newest(samples: Sequence[tuple[float, float]]) -> list[list[float]]:
    return [[round(samples[-1][0], 2), round(samples[-1][1], 1)]] if samples else []


async def snapshot(request: web.Request) -> web.Response:
    return web.json_response(snapshot_of(request.app[SERVICE]))


async def events(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE]
    if service.event_streams >= MAX_EVENT_STREAMS:
        return _error(503, "too many event streams open")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    service.event_streams += 1
    try:
        await response.prepare(request)
        while not service.draining:
            payload = json.dumps(snapshot_of(service, update=True))
            await response.write(f"event: jobs\ndata: {payload}\n\n".encode())
            await asyncio.sleep(EVENT_INTERVAL)
    except (ConnectionResetError, ConnectionError):
        pass  # the page went away
    finally:
        service.event_streams -= 1
    return response


async def dashboard(request: web.Request) -> web.Response:
    """The page. With a token set it holds no data (the version and all data come over the authenticated
    API); without one it carries a first snapshot, so it is drawn at once, before the event stream opens."""
    html = resources.files("vertexflow.daemon").joinpath("static/dashboard.html").read_text(encoding="utf-8")
    first = json.dumps(snapshot_of(request.app[SERVICE])) if request.app[OPEN_PAGE] else "null"
    # inside <script>: no "</script>" or "<!--" may appear, so "<", ">" and "&" travel as JSON escapes
    first = first.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    html = html.replace("{{SNAPSHOT}}", first)
    return web.Response(text=html, content_type="text/html", headers=_PAGE_HEADERS)


#: the page asks for a token and has buttons: no framing by another site (clickjacking), no referrer; it
#: loads nothing from elsewhere and talks only to the daemon (connect-src), so a token it holds stays here
_PAGE_HEADERS = {
    "Cache-Control": "no-cache, no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": ("frame-ancestors 'none'; connect-src 'self'; img-src 'self' data:; "
                                "object-src 'none'; base-uri 'none'; form-action 'none'"),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
