"""``--timeout`` / ``--contimeout`` against a server that accepts connections and never answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import vf

#: how long the server keeps a silent connection open: longer than any run below waits
HOLD_SECONDS = 60.0


class SilentServer:
    """Accepts on 127.0.0.1, reads what it is sent, and never answers (a store that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        deadline = time.monotonic() + HOLD_SECONDS
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            self._held.append(conn)  # kept open, never written to

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._held:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    with SilentServer() as server:
        yield server


def _s3_env(server: SilentServer) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "silent", "AWS_SECRET_ACCESS_KEY": "silent-secret", "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": server.endpoint}


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "vertexflow", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **env})


def test_s3_timeout_fails_a_stalled_store_where_the_default_still_waits(tmp_path: Path,
                                                                        silent: SilentServer) -> None:
    env = _s3_env(silent)
    args = ["copy", "s3://stalled/photos", str(tmp_path / "out"), "--no-journal"]
    default = _start(args, env)
    try:
        start = time.monotonic()
        r = vf(*args, "--timeout", "1s", "--retries", "1", env=env, timeout=90)
        took = time.monotonic() - start
        assert r.code != 0
        assert took < 30, f"{took:.1f} s"
        assert "no answer from " + silent.endpoint in r.err, r.err
        assert "for 1 s" in r.err and "--timeout" in r.err, r.err
        assert "s3://stalled/photos" in r.err, r.err  # the remote is named
        # the same command without --timeout is still waiting on its first request (60 s a read)
        assert default.poll() is None, default.communicate()
    finally:
        default.kill()
        default.communicate()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_timeout_from_the_environment(tmp_path: Path, silent: SilentServer) -> None:
    env = {**_s3_env(silent), "VERTEXFLOW_TIMEOUT": "1s", "VERTEXFLOW_RETRIES": "1"}
    start = time.monotonic()
    r = vf("copy", "s3://stalled/p", str(tmp_path / "out"), "--no-journal", env=env, timeout=90)
    assert r.code != 0 and time.monotonic() - start < 30
    assert "for 1 s" in r.err and "--timeout" in r.err, r.err


def test_yandex_timeout_fails_a_stalled_api(tmp_path: Path, silent: SilentServer) -> None:
    env = {"YANDEX_DISK_TOKEN": "silent-token", "YANDEX_DISK_API_URL": silent.endpoint}
    start = time.monotonic()
    r = vf("copy", "yadisk:/photos", str(tmp_path / "out"), "--no-journal", "--timeout", "1s", "--retries", "1",
           env=env, timeout=90)
    took = time.monotonic() - start
    assert r.code != 0
    assert took < 30, f"{took:.1f} s"
    assert "for 1 s" in r.err and "--timeout" in r.err, r.err
    assert "127.0.0.1" in r.err, r.err


@pytest.fixture
def unreachable() -> Iterator[int]:
    """A port on 127.0.0.1 whose accept queue is full and never drained: a new connection is never made."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.2)
        try:
            yield port
        finally:
            for filler in fillers:
                filler.close()


def test_s3_contimeout_fails_a_connection_never_made(tmp_path: Path, unreachable: int) -> None:
    endpoint = f"http://127.0.0.1:{unreachable}"
    env = {"AWS_ACCESS_KEY_ID": "silent", "AWS_SECRET_ACCESS_KEY": "silent-secret", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint}
    start = time.monotonic()
    r = vf("copy", "s3://stalled/p", str(tmp_path / "out"), "--no-journal", "--contimeout", "1s", "--retries", "1",
           env=env, timeout=90)
    assert r.code != 0 and time.monotonic() - start < 30
    assert f"could not connect to {endpoint} within 1 s (--contimeout)" in r.err, r.err


@pytest.mark.parametrize(("option", "value"), [("--timeout", "abc"), ("--timeout", "0s"),
                                               ("--contimeout", "5 minutes")])
def test_bad_timeout_exits_2_before_anything(tmp_path: Path, silent: SilentServer, option: str, value: str) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    r = vf("copy", str(tmp_path / "src"), f"s3://untouched/x", option, value, env=_s3_env(silent))
    assert r.code == 2, r.err
    assert f"{option} {value!r}" in r.err, r.err
    assert silent.accepted == 0  # nothing was asked of the store


def test_timeout_before_the_commands_name(tmp_path: Path, silent: SilentServer) -> None:
    # as rclone takes it: `vertexflow --timeout 1s copy ...` is the same command as with it after
    start = time.monotonic()
    r = vf("--timeout", "1s", "copy", "s3://stalled/p", str(tmp_path / "out"), "--no-journal", "--retries", "1",
           env=_s3_env(silent), timeout=90)
    assert r.code != 0 and time.monotonic() - start < 30
    assert "for 1 s" in r.err and "--timeout" in r.err, r.err


def test_yandex_contimeout_fails_a_connection_never_made(tmp_path: Path, unreachable: int) -> None:
    env = {"YANDEX_DISK_TOKEN": "silent-token", "YANDEX_DISK_API_URL": f"http://127.0.0.1:{unreachable}"}
    start = time.monotonic()
    r = vf("copy", "yadisk:/photos", str(tmp_path / "out"), "--no-journal", "--contimeout", "1s", "--retries", "1",
           env=env, timeout=120)
    took = time.monotonic() - start
    assert r.code != 0 and took < 30, (took, r.err)  # the remote's request_timeout (30 s) would still be waiting
    assert "--contimeout" in r.err, r.err
