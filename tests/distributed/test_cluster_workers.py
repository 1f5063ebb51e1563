"""A worker that cannot run the job (no vertexflow, another version) is found before any shard runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.helpers import vf
from vertexflow import __version__

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.slow

#: a package that shadows the installed vertexflow on the worker's PYTHONPATH
SHADOWS = {
    "missing": "raise ModuleNotFoundError(\"No module named 'vertexflow'\", name='vertexflow')\n",
    "other": "__version__ = '0.0.1'\n",
}


def _wait(predicate, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A Dask scheduler process on 127.0.0.1: (its address, its scheduler file)."""
    sfile = tmp_path / "scheduler.json"
    proc = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                             "--port", "0", "--no-dashboard", "--scheduler-file", str(sfile)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: sfile.exists() and sfile.stat().st_size > 0, "the scheduler")
        yield json.loads(sfile.read_text())["address"], sfile
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _worker(sfile: Path, pythonpath: Path | None) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(sfile),
                             "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1", "--no-dashboard"],
                            env=env, cwd=sfile.parent,  # not the checkout: `-m` puts the cwd first on sys.path
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("shadow", sorted(SHADOWS))
def test_a_worker_without_this_vertexflow_is_named_before_any_shard_runs(
        tmp_path: Path, scheduler: tuple[str, Path], shadow: str) -> None:
    address, sfile = scheduler
    fake = tmp_path / "fake"
    (fake / "vertexflow").mkdir(parents=True)
    (fake / "vertexflow/__init__.py").write_text(SHADOWS[shadow])
    workers = [_worker(sfile, None), _worker(sfile, fake)]
    try:
        with distributed.Client(address, timeout=30) as client:
            _wait(lambda: len(client.scheduler_info()["workers"]) == 2, "two workers")
        src = tmp_path / "src"
        src.mkdir()
        for i in range(3):
            (src / f"f{i}.bin").write_bytes(b"x" * 100)
        r = vf("copy", str(src), str(tmp_path / "dst"), "--cluster", address, "--no-progress", timeout=180)
        assert r.code == 2, (r.out, r.err)
        expected = "cannot import vertexflow" if shadow == "missing" else "runs vertexflow 0.0.1"
        assert "1 of 2 workers cannot run this job" in r.err and expected in r.err, r.err
        assert f"Install vertexflow {__version__}" in r.err and "Traceback" not in r.err
        assert not (tmp_path / "dst").exists()  # no shard ran
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=30)
