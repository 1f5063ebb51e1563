"""Worker processes that copy batches of small local files.

Why processes: a small file's copy is about eleven system calls, and each one
releases and retakes the GIL. With the listing, the planner, the journal and
the event loop in the same process, worker threads spend more time handing
the GIL to each other than copying; the same loop in processes copies several
times as many files a second (measurements: ``benchmarks/NOTES.md``). So once
a local -> local job has seen enough small files, it hands their batches to a
few processes, each running :meth:`LocalBackend.copy_file` (the same code,
checks and atomic writes as the thread path).

Contract:

* :class:`FileCopyProcesses` ``(src_root, dst_root, hash_files, processes)``;
  ``await copy(batch)`` takes ``(key, listed version, mtime_ns)`` tuples and
  returns, in order, a :class:`~.local.Written` or the exception that file
  raised (per-file errors never fail the batch).
* :class:`~vertexflow.errors.ProcessesUnavailable` when the pool cannot start or a worker died:
  the caller copies that batch in threads instead, and should stop using the
  pool (``broken`` is then true).
* Workers ignore SIGINT and SIGTERM: stopping belongs to the parent, which
  lets the batches in flight finish (each is at most ``batch_files`` small
  files) or, on a hard stop, leaves them to finish on their own; every file
  is still written whole or not at all. A worker whose parent dies (kill -9)
  exits at once.
* ``aclose()`` waits for the workers to exit.

Workers are forked from a ``forkserver`` (never from the parent, which has
threads); where there is none, they are spawned, and a program that starts
them must then guard its entry point (``if __name__ == "__main__"``), as
``vertexflow/__main__.py`` does.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from concurrent.futures import ProcessPoolExecutor

import anyio

from ..errors import ProcessesUnavailable
from .local import FileJob, LocalBackend, Written


def processes_allowed() -> bool:
    """False in a daemonic process (a Dask worker, for one), which may not start processes of its own."""
    return not multiprocessing.current_process().daemon


class FileCopyProcesses:
    def __init__(self, src_root: str, dst_root: str, *, hash_files: bool, processes: int) -> None:
        self._args = (src_root, dst_root, hash_files)
        self._pool = ProcessPoolExecutor(max_workers=processes, mp_context=_context(), initializer=_init_worker)
        self.broken = False
        self._processes = processes
        self._pids: set[int] = set()

    async def copy(self, batch: list[FileJob]) -> list[Written | Exception]:
        if self.broken:
            raise ProcessesUnavailable("worker processes already failed")
        try:
            if len(self._pids) < self._processes:
                # this submit may start a worker, which waits for the forkserver
                # to start and import (a pause, the first time): not on the event loop
                future = await anyio.to_thread.run_sync(self._pool.submit, _copy_batch, *self._args, batch)
                self._pids.update(self.pids())
            else:
                future = self._pool.submit(_copy_batch, *self._args, batch)
            return await asyncio.wrap_future(future)
        except Exception as exc:
            # BrokenProcessPool: a worker died; OSError: one could not start;
            # RuntimeError: submitted after shutdown. Per-file errors never get here.
            self.broken = True
            raise ProcessesUnavailable(f"worker processes failed: {exc}", frozenset(self._pids)) from exc

    def pids(self) -> list[int]:
        """The worker processes running now (started as batches arrive)."""
        return [p.pid for p in list((self._pool._processes or {}).values()) if p.pid is not None]

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: self._pool.shutdown(wait=True, cancel_futures=True))


def _context() -> multiprocessing.context.BaseContext:
    """``forkserver``, preloading the program's ``__main__`` and this module.

    Each worker is then a fork of one single-threaded server that has already
    imported what a worker needs (paid once per run), not a fresh
    interpreter importing it all again (``spawn``: paid by every worker).
    A worker re-runs the parent's ``__main__`` unless its server already did,
    hence ``__main__`` in the preload (the entry point must be guarded).
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # no effect once a server runs: it is then reused as it is
    context.set_forkserver_preload(["__main__", __name__])
    return context


def _init_worker() -> None:
    # The parent decides when its workers stop: Ctrl-C reaches the whole
    # process group, and a service manager may send SIGTERM to every process
    # of the service, while the parent still drains the batches in flight.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # A worker waits for work on a queue whose pipe it also holds open, so it
    # never sees the parent die: a parent killed outright (kill -9) would
    # leave it, and the forkserver it keeps alive, running for ever.
    threading.Thread(target=_exit_with_parent, name="vertexflow-parent-watch", daemon=True).start()


def _exit_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    multiprocessing.connection.wait([parent.sentinel])
    os._exit(1)  # a batch cut short leaves temporary files, which the next listing removes


# -- in the worker process ------------------------------------------------
_backends: dict[tuple[str, str, bool], tuple[LocalBackend, LocalBackend]] = {}


def _copy_batch(src_root: str, dst_root: str, hash_files: bool, batch: list[FileJob]) -> list[Written | Exception]:
    ends = _backends.get((src_root, dst_root, hash_files))
    if ends is None:
        # one pair per job; kept so the destination's cache of made directories lasts
        ends = _backends[(src_root, dst_root, hash_files)] = (
            LocalBackend(src_root), LocalBackend(dst_root, hash_files=hash_files))
    src, dst = ends
    return dst.copy_files(src, batch)


__all__ = ["FileCopyProcesses", "processes_allowed"]
