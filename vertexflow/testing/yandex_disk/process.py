"""The emulator as its own process, the way users run it (``vertexflow emulate yandex-disk``)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

#: seconds a fresh interpreter gets to import vertexflow and bind the port
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def emulator_process(*flags: str) -> Iterator[str]:
    """Run ``vertexflow emulate yandex-disk FLAGS`` on a free port; yields its API base URL.

    Raises RuntimeError if it does not accept connections within
    :data:`START_TIMEOUT`; the process is stopped when the block ends.
    """
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "vertexflow", "emulate", "yandex-disk", "--port", str(port),
                             *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the Yandex.Disk emulator did not start on port {port}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1/disk"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
