"""The daemon: the job controllers, the HTTP server, signals, reloads and draining.

Lifecycle:

* start: read the config (a bad one exits 2 before anything runs), open the
  journal, bind the HTTP server, start one controller per job. A job whose
  last run was interrupted (the journal says so) runs again at once and
  continues where it stopped.
* SIGTERM / SIGINT: drain. No run starts; runs in progress stop at a clean
  point (no new object; those in flight finish; the journal is flushed).
  After ``drain_timeout`` the transfers still in flight are aborted (their
  temporary files and multipart uploads are removed). A second signal aborts
  at once. Exit status 0.
* SIGHUP: read the config again. Jobs that are gone are drained and removed,
  new jobs start, changed jobs take their new settings at their next run (a
  run in progress is never dropped). A bad file is logged and ignored.
  ``[daemon]`` settings (listen, tokens, TLS files, journal) take effect at a
  restart; the TLS certificate and key are read again from the same files
  (a renewed certificate is served to new connections).
* A job's supervisor that fails (a bug) is restarted after a backoff; it
  never takes the other jobs down.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import anyio
from aiohttp import web

from .. import __version__
from ..config import Config
from ..errors import ConfigError
from ..logs import get_logger
from ..state.journal import Journal, default_journal_path
from . import memory
from .config import DaemonConfig, JobSpec, load_daemon_config, server_ssl_context
from .controller import JobController
from .http import make_app
from .jobs import ErrorLog
from .metrics import DaemonMetrics
from .runners import runner_class

log = get_logger("vertexflow.daemon")

#: after the drain timeout and the abort, how long cleanup (temp files, multipart aborts) may take
ABORT_GRACE = 10.0
#: [daemon] settings read only at start: a reload that changes them says so
RESTART_SETTINGS = ("listen", "journal", "token", "token_env", "read_token", "read_token_env", "tls_cert",
                    "tls_key")
#: event-loop lag: how often it is sampled, and the window its maximum is taken over
LAG_INTERVAL = 0.25
LAG_WINDOW = 60.0


class Daemon:
    """``tls``: the certificate and key files given on the command line (they take precedence over
    ``[daemon] tls_cert``/``tls_key``); ConfigError for a bad file, token or TLS file."""

    def __init__(self, config_path: str, *, fallback_remotes: Callable[[], Config] | None = None,
                 environ: Mapping[str, str] = os.environ, tls: tuple[str, str] | None = None) -> None:
        self.config_path = config_path
        self.environ = environ
        self._fallback = fallback_remotes
        self.config, self.remotes = self._load()
        self.token = self.config.daemon.resolved_token(environ)
        self.read_token = self.config.daemon.resolved_read_token(environ)
        self.tls = tls or self.config.daemon.tls
        self._tls_names = ("--tls-cert", "--tls-key") if tls else ("daemon.tls_cert", "daemon.tls_key")
        self.ssl: ssl.SSLContext | None = None
        if self.tls is not None:
            self.ssl = server_ssl_context(*self.tls, cert_name=self._tls_names[0], key_name=self._tls_names[1])
        self.errors = ErrorLog(self.config.daemon.errors_kept)
        self.controllers: dict[str, JobController] = {}
        self.metrics = DaemonMetrics(lambda: list(self.controllers.values()))
        self.ready = False
        self.draining = False
        self.started = time.time()
        self.reloads = 0
        #: the last SIGHUP: {"time", "applied"} (the dashboard clears reload errors older than an applied one)
        self.last_reload: dict[str, Any] | None = None
        self.event_streams = 0
        self.address: str | None = None
        self.journal: Journal | None = None
        self._stop_requested = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None

    def _load(self) -> tuple[DaemonConfig, Config]:
        return load_daemon_config(self.config_path, self.environ, self._fallback)

    # -- running -------------------------------------------------------------
    async def serve(self) -> None:
        """Run until SIGTERM/SIGINT and a drain. Raises ConfigError for a journal or port problem."""
        settings = self.config.daemon
        memory.limit_arenas()  # before the journal's and the runs' threads take arenas of their own
        path = settings.journal or str(default_journal_path(self.environ))
        try:
            self.journal = await Journal.open(path)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the journal {path}: {exc}") from exc
        runner = web.AppRunner(make_app(self, self.token, self.read_token), access_log=None,
                               handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, settings.host, settings.port, ssl_context=self.ssl)
            try:
                await site.start()
            except OSError as exc:
                raise ConfigError(f"daemon.listen: cannot listen on {settings.listen}: {exc.strerror}") from exc
            host, port = runner.addresses[0][:2]
            self.address = f"{host}:{port}"
            if self.ssl is None and not settings.loopback:
                log.warning("serving plain HTTP beyond loopback: tokens cross the network readable; "
                            "give tls_cert/tls_key or put a TLS reverse proxy in front", listen=self.address)
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._signals)
                tg.start_soon(self._ticker)
                tg.start_soon(self._lag_monitor)
                for spec in self.config.jobs:
                    self._add(spec)
                self.ready = True
                log.info("daemon started", listen=self.address, jobs=[j.name for j in self.config.jobs],
                         journal=path, pid=os.getpid(), version=__version__)
                await self._stop_requested.wait()
                await self._drain()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()
                await self.journal.aclose()
            log.info("daemon stopped")

    def request_stop(self) -> None:
        self._stop_requested.set()

    def now(self) -> float:
        return time.time()

    def info(self) -> dict[str, Any]:
        return {"version": __version__, "pid": os.getpid(), "started": self.started, "config": self.config_path,
                "listen": self.address, "tls": self.ssl is not None, "jobs": len(self.controllers),
                "reloads": self.reloads, "last_reload": self.last_reload, "draining": self.draining,
                "ready": self.ready}

    def _add(self, spec: JobSpec) -> None:
        assert self.journal is not None and self._tg is not None
        runner = runner_class(spec.kind)(spec, remotes=self.remotes, journal=self.journal)
        controller = JobController(spec, runner, settings=self.config.daemon, errors=self.errors,
                                   on_result=self.metrics.observe, journal=self.journal)
        self.controllers[spec.name] = controller
        self._tg.start_soon(self._supervise, controller)

    async def _supervise(self, controller: JobController) -> None:
        """Run a job's controller; restart it after a backoff if it fails (a bug), never spreading."""
        delay = self.config.daemon.backoff_initial
        while True:
            try:
                await controller.run()
                return
            except Exception as exc:
                message = f"job supervisor failed: {exc!r}"
                self.errors.add(controller.name, "daemon", message)
                log.exception("job supervisor failed", job=controller.name)
            if controller.closing or self.controllers.get(controller.name) is not controller:
                return
            await anyio.sleep(delay)
            delay = min(self.config.daemon.backoff_max, delay * 2)
            controller.done = anyio.Event()
            controller.scope = anyio.CancelScope()

    async def _drain(self) -> None:
        self.draining = True
        controllers = list(self.controllers.values())
        running = [c.name for c in controllers if c.stats is not None]
        timeout = self.config.daemon.drain_timeout
        log.info("draining: no new runs; runs in progress stop at a clean point", running=running,
                 timeout_s=timeout)
        for c in controllers:
            c.drain()
        if not await _wait_all(controllers, timeout):
            log.warning("drain timeout: aborting the transfers still in flight",
                        running=[c.name for c in controllers if c.stats is not None])
            for c in controllers:
                c.abort()
            if not await _wait_all(controllers, ABORT_GRACE):
                for c in controllers:
                    c.scope.cancel()
        log.info("drained")

    async def _retire(self, controller: JobController) -> None:
        controller.drain()
        if not await _wait_all([controller], self.config.daemon.drain_timeout):
            controller.abort()
            if not await _wait_all([controller], ABORT_GRACE):
                controller.scope.cancel()
        if controller.name not in self.controllers:  # not added back meanwhile
            self.metrics.forget(controller.name)

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self.reload()
                elif not self.draining:
                    log.info("signal received: draining", signal=signal.Signals(signum).name)
                    self.request_stop()
                else:
                    log.warning("second signal: aborting the transfers in flight")
                    for c in self.controllers.values():
                        c.abort()

    def reload(self) -> bool:
        """Read the config again and apply the job changes; False (and an error logged) if it is bad."""
        try:
            config, remotes = self._load()
            if self.tls is not None:
                self._reload_certificate()
        except ConfigError as exc:
            self.errors.add("daemon", "config", f"reload refused, keeping the running config: {exc}")
            log.error("reload refused: keeping the running config", error=str(exc))
            self.metrics.reloaded(False)
            self.last_reload = {"time": time.time(), "applied": False}
            return False
        old = self.config
        if any(getattr(config.daemon, k) != getattr(old.daemon, k) for k in RESTART_SETTINGS):
            log.warning("listen, token, TLS file and journal changes take effect at the next restart")
        self.config, self.remotes = config, remotes
        new = {j.name: j for j in config.jobs}
        added, removed, changed = [], [], []
        assert self._tg is not None and self.journal is not None
        for name in list(self.controllers):
            if name not in new:
                controller = self.controllers.pop(name)
                removed.append(name)
                self._tg.start_soon(self._retire, controller)
        for name, spec in new.items():
            controller = self.controllers.get(name)
            if controller is None:
                added.append(name)
                self._add(spec)
            else:
                controller.settings = config.daemon
                if controller.spec != spec or remotes != controller.runner.remotes:
                    changed.append(name)
                    controller.update(spec, runner_class(spec.kind)(spec, remotes=remotes, journal=self.journal))
        self.reloads += 1
        self.metrics.reloaded(True)
        self.last_reload = {"time": time.time(), "applied": True}
        log.info("config reloaded", added=added, removed=removed, changed=changed)
        return True

    def _reload_certificate(self) -> None:
        """Read the served certificate and key again (a renewal), checked before the live context takes them."""
        assert self.tls is not None and self.ssl is not None
        cert, key = self.tls
        server_ssl_context(cert, key, cert_name=self._tls_names[0], key_name=self._tls_names[1])
        try:
            self.ssl.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:  # the files changed again in between
            raise ConfigError(f"{self._tls_names[0]}: {cert} could not be read again: {exc}") from exc

    async def _ticker(self) -> None:
        while True:
            now = time.time()
            for c in list(self.controllers.values()):
                c.tick(now)
                c.check_overdue(now)
            await anyio.sleep(1.0)

    async def _lag_monitor(self) -> None:
        samples: deque[tuple[float, float]] = deque()
        while True:
            t0 = time.monotonic()
            await anyio.sleep(LAG_INTERVAL)
            t1 = time.monotonic()
            lag = max(0.0, t1 - t0 - LAG_INTERVAL)
            samples.append((t1, lag))
            while samples and samples[0][0] < t1 - LAG_WINDOW:
                samples.popleft()
            self.metrics.loop_lag.set(lag)
            self.metrics.loop_lag_max.set(max(s for _, s in samples))


async def _wait_all(controllers: list[JobController], timeout: float) -> bool:
    with anyio.move_on_after(timeout):
        for c in controllers:
            await c.done.wait()
        return True
    return False
