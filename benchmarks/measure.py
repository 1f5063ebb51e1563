"""Running one command, timed, bounded, with its peak memory.

Peak RSS: each command runs under GNU ``/usr/bin/time -f %M``, which reports
the ``ru_maxrss`` that ``wait4`` returns for the tool: the kernel's own
high-water mark of resident memory, exact (no sampling) and taken from the
largest process of the tree that ``time`` waited for (every tool measured
here is a single process; a tool that forked workers would report its
largest one, not their sum).

Why not ``wait4`` from the harness itself: the harness is a large Python
process, and a child forked (or vforked) from it inherits that size as its
starting high-water mark, so even ``true`` reports the harness's RSS. GNU
``time`` forks from a ~1 MB process. Without ``/usr/bin/time`` (apt package
``time``) the harness falls back to polling ``VmHWM`` in
``/proc/PID/status`` of the tool and its descendants every 20 ms, summing
them; a peak in the last 20 ms of a process's life can be missed.

Every command runs in its own session with a timeout; on timeout, Ctrl-C or
any error its whole process group is killed before the harness goes on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

GNU_TIME = "/usr/bin/time"
POLL_INTERVAL = 0.02


@dataclass(slots=True)
class RunResult:
    argv: list[str]
    wall_s: float
    peak_rss_kib: int | None
    returncode: int
    timed_out: bool
    log: str          # tail of the tool's stdout and stderr

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def have_gnu_time() -> bool:
    if not os.access(GNU_TIME, os.X_OK):
        return False
    try:
        out = subprocess.run([GNU_TIME, "-f", "%M", "true"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stderr.strip().isdigit()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode(errors="replace")


def _vmhwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            pass
    return out


def run(argv: list[str], *, env: dict[str, str], timeout: float, log_path: Path,
        cwd: Path | None = None, gnu_time: bool = True) -> RunResult:
    """Run ``argv``, wait at most ``timeout`` seconds; wall time covers start-up to exit."""
    rss_path = log_path.with_suffix(".rss")
    rss_path.unlink(missing_ok=True)
    full = [GNU_TIME, "-f", "%M", "-o", str(rss_path), *argv] if gnu_time else list(argv)
    timed_out = threading.Event()
    peak_polled = 0
    with open(log_path, "wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(full, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            if gnu_time:
                timer = threading.Timer(timeout, lambda: (timed_out.set(), _kill_group(proc)))
                timer.start()
                try:
                    proc.wait()
                finally:
                    timer.cancel()
            else:
                deadline = start + timeout
                while proc.poll() is None:
                    peak_polled = max(peak_polled, sum(_vmhwm_kib(p) for p in _descendants(proc.pid)))
                    if time.perf_counter() > deadline:
                        timed_out.set()
                        _kill_group(proc)
                        proc.wait()
                        break
                    time.sleep(POLL_INTERVAL)
            wall = time.perf_counter() - start
        except BaseException:
            _kill_group(proc)
            proc.wait()
            raise
        finally:
            _kill_group(proc)  # anything the tool left running in its group
    peak: int | None
    if gnu_time:
        text = _tail(rss_path).strip().splitlines()
        peak = int(text[-1]) if text and text[-1].strip().isdigit() else None
    else:
        peak = peak_polled or None
    return RunResult(argv=list(argv), wall_s=wall, peak_rss_kib=peak, returncode=proc.returncode,
                     timed_out=timed_out.is_set(), log=_tail(log_path))


def helper(argv: list[str], *, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A bounded, untimed helper command (rm -rf, version queries, seeding); raises on failure."""
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {err.strip()[-2000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def remove_tree(path: Path, timeout: float = 600) -> None:
    """``rm -rf`` (much faster than shutil.rmtree on 200,000 files), bounded."""
    if path.exists() or path.is_symlink():
        helper(["rm", "-rf", "--", str(path)], timeout=timeout)


def settle() -> None:
    """Flush dirty pages so the next timed run starts without the previous one's writeback."""
    os.sync()
