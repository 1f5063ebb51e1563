"""The daemon exposed safely: HTTPS, tokens only in the Authorization header, a minimum token length,
a read-only token; bad certificates, keys and tokens stop it before it starts (exit 2).

The daemon runs as a subprocess with a self-signed certificate made in the test; requests go over
HTTPS with that certificate as the only trusted CA.
"""

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
from pathlib import Path

import pytest

from .helpers import DaemonProcess, free_port, wait_until
from .tls import make_cert

CONTROL = "control-" + "c" * 32
READ = "read-only-" + "r" * 30
JOB = '[[jobs]]\nname = "j"\nkind = "sync"\nsource = "a"\ndest = "b"\n'


def _served_certificate(port: int) -> bytes:
    """The DER certificate the daemon presents to a new connection (not verified: only compared)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _der(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


def test_https_with_a_control_and_a_read_only_token(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.txt").write_text("hello")
    (tmp_path / "tls").mkdir()
    cert, _ = make_cert(tmp_path / "tls", "server")
    # relative paths: taken from the config file's directory; the read token from the environment
    text = (f'[daemon]\nlisten = "127.0.0.1:{{PORT}}"\ntoken = "{CONTROL}"\nread_token_env = "VF_READ"\n'
            'tls_cert = "tls/server-cert.pem"\ntls_key = "tls/server-key.pem"\n' + JOB)
    d = DaemonProcess(tmp_path, text, token=CONTROL, ca=cert, env={"VF_READ": READ}).start()
    try:
        assert d.url.startswith("https://")
        assert d.get("/api/daemon")["tls"] is True
        with pytest.raises(OSError):  # plain HTTP is not spoken on that port
            urllib.request.urlopen(f"http://127.0.0.1:{d.port}/healthz", timeout=5).read()
        # probes and the page are open; everything else needs a token, in the header only
        assert d.request("GET", "/healthz", token="")[0] == 200
        assert d.request("GET", "/", token="")[0] == 200
        status, body, headers = d.request("GET", "/api/jobs", token="")
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
        for given in (CONTROL, READ):
            status, body, _ = d.request("GET", f"/api/jobs?token={given}", token="")
            assert status == 401, given
            assert "send it in the Authorization header" in json.loads(body)["error"]
        assert d.request("GET", "/api/jobs", token=CONTROL[:-1])[0] == 401
        assert d.request("GET", "/api/jobs", headers={"Authorization": f"Basic {CONTROL}"}, token="")[0] == 401

        # the read-only token: the GET API, /metrics and /events, never control
        for path in ("/api/jobs", "/api/jobs/j", "/api/daemon", "/api/errors", "/metrics"):
            assert d.request("GET", path, token=READ)[0] == 200, path
        assert b"vertexflow_job_state" in d.request("GET", "/metrics", token=READ)[1]
        req = urllib.request.Request(d.url + "/events", headers={"Authorization": f"Bearer {READ}"})
        with urllib.request.urlopen(req, timeout=5, context=d.ssl) as stream:
            assert stream.readline() == b"event: jobs\n"
            assert json.loads(stream.readline().removeprefix(b"data: "))["jobs"][0]["name"] == "j"
        for action in ("start", "pause", "resume", "cancel"):
            status, body, _ = d.request("POST", f"/api/jobs/j/{action}", token=READ)
            assert status == 403, action
            assert json.loads(body)["error"] == "the read-only token cannot control jobs: use the control token"
        assert d.job("j")["last_result"] is None and d.job("j")["state"] == "idle"  # nothing started

        # the control token does both
        assert d.post("/api/jobs/j/start")[0] == 200
        wait_until(lambda: d.job("j")["last_result"], 15, what="the run started by the control token")
        assert (tmp_path / "b" / "f.txt").read_text() == "hello"
    finally:
        d.stop()
    assert d.proc is not None and d.proc.returncode == 0


def test_cli_certificate_is_read_again_on_sighup(tmp_path: Path) -> None:
    """--tls-cert/--tls-key take precedence over the file; a renewed certificate is served after SIGHUP,
    a renewal whose key does not match is refused and the served one stays."""
    (tmp_path / "a").mkdir()
    first, first_key = make_cert(tmp_path, "first")
    second, second_key = make_cert(tmp_path, "second")
    cert, key = tmp_path / "live-cert.pem", tmp_path / "live-key.pem"
    cert.write_bytes(first.read_bytes())
    key.write_bytes(first_key.read_bytes())
    trusted = tmp_path / "both.pem"
    trusted.write_text(first.read_text() + second.read_text())
    text = f'[daemon]\nlisten = "127.0.0.1:{{PORT}}"\ntoken = "{CONTROL}"\n' + JOB
    d = DaemonProcess(tmp_path, text, token=CONTROL, ca=trusted,
                      args=("--tls-cert", str(cert), "--tls-key", str(key))).start()
    try:
        assert _served_certificate(d.port) == _der(first)
        cert.write_bytes(second.read_bytes())
        key.write_bytes(second_key.read_bytes())
        d.signal(signal.SIGHUP)
        wait_until(lambda: _served_certificate(d.port) == _der(second), 10, what="the renewed certificate")
        assert d.get("/api/daemon")["reloads"] == 1

        cert.write_bytes(first.read_bytes())  # a renewal gone wrong: the certificate without its key
        d.signal(signal.SIGHUP)
        refused = wait_until(lambda: [e for e in d.get("/api/errors")["errors"] if "reload refused" in e["message"]],
                             10, what="the refused reload")
        assert f"--tls-key: {key} is not the private key of the certificate in {cert}" in refused[0]["message"]
        assert _served_certificate(d.port) == _der(second)
        assert d.get("/api/daemon")["reloads"] == 1
    finally:
        d.stop()


def _start(tmp_path: Path, config: str, *args: str, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    (tmp_path / "daemon.toml").write_text(config)
    return subprocess.run([sys.executable, "-m", "vertexflow", "daemon", "--config", str(tmp_path / "daemon.toml"),
                           *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {}), "VERTEXFLOW_JOURNAL": str(tmp_path / "journal.db")})


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("certs")
    make_cert(where, "a")
    make_cert(where, "b")
    make_cert(where, "locked", passphrase=b"secret")
    return where


BAD = [
    # (config [daemon] lines, command-line arguments, environment, what stderr must say)
    ('token = "short"', (), {}, "daemon.token has 5 characters, fewer than the 32 required"),
    ('token_env = "VF_T"', (), {"VF_T": "x" * 31}, "daemon.token_env: the token in VF_T has 31 characters, "
                                                   "fewer than the 32 required"),
    (f'token = "{CONTROL}"\nread_token = "tiny"', (), {}, "daemon.read_token has 4 characters"),
    (f'token = "{CONTROL}"\nread_token = "{CONTROL}"', (), {}, "daemon.read_token: the same as daemon.token"),
    (f'read_token = "{READ}"', (), {}, "daemon.read_token: needs daemon.token"),
    (f'token = "{CONTROL}"\ntoken_env = "VF_T"', (), {"VF_T": CONTROL}, "daemon.token: give token or token_env"),
    ('tls_cert = "{C}/missing.pem"\ntls_key = "{C}/a-key.pem"', (), {}, "daemon.tls_cert: {C}/missing.pem does not exist"),
    ('tls_cert = "{C}/a-cert.pem"\ntls_key = "{C}/missing.pem"', (), {}, "daemon.tls_key: {C}/missing.pem does not exist"),
    ('tls_cert = "{C}/a-cert.pem"\ntls_key = "{C}/b-key.pem"', (), {},
     "daemon.tls_key: {C}/b-key.pem is not the private key of the certificate in {C}/a-cert.pem"),
    ('tls_cert = "{C}/a-key.pem"\ntls_key = "{C}/a-key.pem"', (), {}, "daemon.tls_cert: {C}/a-key.pem holds no PEM certificate"),
    ('tls_cert = "{C}/a-cert.pem"', (), {}, "daemon.tls_key: {C}/a-cert.pem holds no PEM private key"),
    ('tls_key = "{C}/a-key.pem"', (), {}, "daemon.tls_key: given without daemon.tls_cert"),
    ('tls_cert = "{C}/locked-cert.pem"\ntls_key = "{C}/locked-key.pem"', (), {},
     "daemon.tls_key: {C}/locked-key.pem is encrypted"),
    ("", ("--tls-cert", "{C}/nope.pem", "--tls-key", "{C}/a-key.pem"), {}, "--tls-cert: {C}/nope.pem does not exist"),
    ("", ("--tls-cert", "{C}/a-cert.pem", "--tls-key", "{C}/b-key.pem"), {},
     "--tls-key: {C}/b-key.pem is not the private key of the certificate in {C}/a-cert.pem"),
    ("", ("--tls-key", "{C}/a-key.pem"), {}, "--tls-key: given without --tls-cert"),
]


#: cases also run with --check (each run costs an interpreter's start)
CHECKED = (BAD[0][3], BAD[8][3])


@pytest.mark.parametrize(("daemon", "args", "env", "message"), BAD,
                         ids=[b[3].split(":")[0].split(" ")[0] + f"-{i}" for i, b in enumerate(BAD)])
def test_bad_token_or_tls_file_exits_2_before_starting(tmp_path: Path, certs: Path, daemon: str,
                                                       args: tuple[str, ...], env: dict[str, str],
                                                       message: str) -> None:
    port = free_port()
    config = f'[daemon]\nlisten = "127.0.0.1:{port}"\n{daemon.replace("{C}", str(certs))}\n' + JOB
    started = time.monotonic()
    result = _start(tmp_path, config, *(a.replace("{C}", str(certs)) for a in args), env=env)
    assert result.returncode == 2, result.stderr
    assert message.replace("{C}", str(certs)) in result.stderr
    assert "daemon started" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "journal.db").exists()  # nothing opened, nothing left behind
    assert time.monotonic() - started < 30
    with pytest.raises(OSError):  # nothing listens on the port
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    if message in CHECKED:  # --check finds the same in the file
        check = _start(tmp_path, config, "--check", env=env)
        assert check.returncode == 2 and message.replace("{C}", str(certs)) in check.stderr


def test_the_dashboard_sends_the_token_in_the_header_only(tmp_path: Path) -> None:
    """In a real browser over HTTPS: the page asks for the token, keeps it out of every URL, watches with
    the read-only token (its buttons are refused), controls with the control token."""
    chromium = "/usr/bin/chromium"
    if not os.path.exists(chromium):
        pytest.skip(f"{chromium} is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.txt").write_text("hello")
    cert, key = make_cert(tmp_path, "server")
    text = (f'[daemon]\nlisten = "127.0.0.1:{{PORT}}"\ntoken = "{CONTROL}"\nread_token = "{READ}"\n'
            f'tls_cert = "{cert}"\ntls_key = "{key}"\n' + JOB)
    d = DaemonProcess(tmp_path, text, token=CONTROL, ca=cert).start()
    requests: list[tuple[str, str | None]] = []
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True,
                                        args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                              "--disable-background-networking", "--disable-component-update"])
            try:
                page = browser.new_context(ignore_https_errors=True).new_page()
                page.on("request", lambda r: requests.append((r.url, r.headers.get("authorization"))))
                page.goto(d.url + "/", wait_until="domcontentloaded")
                form = page.locator("#login")
                form.wait_for(state="visible", timeout=10_000)
                assert page.locator("#conn").inner_text() == "token needed"

                page.fill("#token", "wrong-" + "w" * 40)
                page.click("#login button")
                page.wait_for_function("document.querySelector('#login .why').textContent.includes('refused')",
                                       timeout=10_000)

                page.fill("#token", READ)
                page.click("#login button")
                card = page.locator('.job[data-job="j"]')
                card.wait_for(timeout=10_000)
                page.wait_for_function("document.querySelector('#conn').textContent === 'live'", timeout=10_000)
                start = card.locator('button[data-action="start"]')
                start.click()
                page.wait_for_function(
                    "document.querySelector('.job[data-job=\"j\"] button[data-action=\"start\"]').title"
                    ".includes('read-only token cannot control')", timeout=10_000)
                assert d.job("j")["last_result"] is None

                page.reload()  # the token stays for this tab
                card.wait_for(timeout=10_000)
                page.click("#logout")
                form.wait_for(state="visible", timeout=10_000)
                page.fill("#token", CONTROL)
                page.click("#login button")
                card.wait_for(timeout=10_000)
                card.locator('button[data-action="start"]').click()
                wait_until(lambda: d.job("j")["last_result"], 15, what="the run the page started")
                page.wait_for_function(
                    "document.querySelector('.job[data-job=\"j\"] .last').textContent.startsWith('success')",
                    timeout=10_000)
            finally:
                browser.close()
    finally:
        d.stop()
    assert (tmp_path / "b" / "f.txt").read_text() == "hello"
    assert not [url for url, _ in requests if "token" in url or CONTROL in url or READ in url]
    events = [auth for url, auth in requests if url.endswith("/events")]
    assert f"Bearer {READ}" in events and f"Bearer {CONTROL}" in events
