"""The installed ``vertexflow`` console script takes SIGINT/SIGTERM from its start, as ``python -m vertexflow`` does.

The console script calls :func:`vertexflow.cli.main` directly (no ``__main__``),
so the group's callback installs :data:`vertexflow.interrupts.INTERRUPTS`
before it reads the config file; a signal while it does exits 130 with
nothing begun (it was killed by the signal: exit -15).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

SCRIPT = shutil.which("vertexflow")


@pytest.mark.skipif(SCRIPT is None, reason="the vertexflow console script is not installed")
def test_sigterm_to_the_console_script_during_start_up_exits_130(tmp_path: Path) -> None:
    assert SCRIPT is not None
    src, dst, journal = tmp_path / "src", tmp_path / "dst", tmp_path / "journal.db"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a")
    fifo = tmp_path / "config.toml"  # the command waits on it while it reads its config: start-up
    os.mkfifo(fifo)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VERTEXFLOW_"))}
    env.update(VERTEXFLOW_CONFIG=str(fifo), VERTEXFLOW_JOURNAL=str(journal))
    proc = subprocess.Popen([SCRIPT, "copy", str(src), str(dst), "--json", "--no-progress"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:  # a writer opens a FIFO without waiting only once a reader has it open
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:
                if exc.errno != errno.ENXIO or proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the command never opened its config file (exit {proc.poll()})") from exc
                time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        os.write(fd, b"# an empty config\n")
        os.close(fd)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (proc.returncode, out, err)
    assert "Traceback" not in err
    assert not dst.exists() and not journal.exists()
