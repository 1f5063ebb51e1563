"""Running the real daemon in a subprocess, and waiting on it with deadlines."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float = 15.0, interval: float = 0.1, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; bounded in time (and so in count)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, ValueError) as exc:  # the daemon not listening yet, a half-written file
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DaemonProcess:
    """``vertexflow daemon --config PATH [ARGS]`` on 127.0.0.1 and a free port.

    ``ca``: the daemon serves HTTPS with a certificate this file holds (or
    is signed by): requests go to ``https://`` and verify it.
    """

    def __init__(self, workdir: Path, config_text: str, *, token: str | None = None,
                 port: int | None = None, args: tuple[str, ...] = (), ca: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.token = token
        self.args = args
        self.env = env or {}
        self.ssl = ssl.create_default_context(cafile=str(ca)) if ca is not None else None
        self.config = workdir / "daemon.toml"
        self.write_config(config_text)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"daemon-{self.port}.log"
        self.starts = 0

    def write_config(self, text: str) -> None:
        self.config.write_text(text.replace("{PORT}", str(self.port)), encoding="utf-8")

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl else 'http'}://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True) -> DaemonProcess:
        self.starts += 1
        self._log = open(self.workdir / f"daemon-{self.port}-{self.starts}.log", "wb")  # noqa: SIM115
        self.log_path = Path(self._log.name)
        self.proc = subprocess.Popen([sys.executable, "-m", "vertexflow", "--log-format", "json", "daemon",
                                      "--config", str(self.config), *self.args], stdout=self._log,
                                     stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        if wait_ready:
            wait_until(lambda: self.get("/readyz")["ready"], 20, what="the daemon to be ready")
        return self

    def log_events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def request(self, method: str, path: str, *, token: str | None = None, headers: dict[str, str] | None = None
                ) -> tuple[int, bytes, dict[str, str]]:
        req = urllib.request.Request(self.url + path, method=method, headers=headers or {})
        token = token if token is not None else self.token
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if method == "POST":
            req.data = b""
        try:
            with urllib.request.urlopen(req, timeout=5, context=self.ssl) as r:
                return r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)

    def get(self, path: str) -> Any:
        status, body, _ = self.request("GET", path)
        if status not in (200, 503):
            raise AssertionError(f"GET {path}: {status} {body[:300]!r}")
        return json.loads(body)

    def post(self, path: str) -> tuple[int, Any]:
        status, body, _ = self.request("POST", path)
        return status, json.loads(body)

    def metrics(self) -> dict[str, float]:
        """The exposition as {'name{labels}': value}."""
        status, body, _ = self.request("GET", "/metrics")
        assert status == 200
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def job(self, name: str) -> dict[str, Any]:
        return self.get(f"/api/jobs/{name}")  # type: ignore[no-any-return]

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = 20) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def stop(self) -> None:
        """Terminate (test teardown): SIGTERM, then SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path (temporary files included: tests look for them)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def partial_files(root: Path) -> list[str]:
    return [str(p) for p in root.rglob(".vertexflow-tmp-*")]
