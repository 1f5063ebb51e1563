"""What a daemon running for months must not accumulate in native memory, which no Python-side count shows.

SQLite's own allocations (prepared statements, page cache) are read with ``sqlite3_memory_used`` from the
library the interpreter loaded; what the C allocator keeps after a run, from the process's resident size.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sqlite3
from pathlib import Path

import anyio
import pytest

from vertexflow.config import Config
from vertexflow.daemon import memory
from vertexflow.daemon.config import JobSpec
from vertexflow.daemon.controller import JobController
from vertexflow.daemon.jobs import SUCCESS, ErrorLog
from vertexflow.daemon.runners import SyncRunner
from vertexflow.state.journal import DestRecord, Journal

from .test_controller import SETTINGS, eventually


def sqlite_memory() -> ctypes._CFuncPtr:
    """``sqlite3_memory_used`` of the SQLite the sqlite3 module runs on (skips where that cannot be read)."""
    name = ctypes.util.find_library("sqlite3")
    maps = Path("/proc/self/maps")
    loaded = maps.exists() and any("libsqlite3" in line for line in maps.read_text().splitlines())
    if name is None or not loaded:
        pytest.skip("the sqlite3 module's library is not a shared libsqlite3 this process can call")
    lib = ctypes.CDLL(name)
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    return lib.sqlite3_memory_used


async def test_looking_up_every_count_of_keys_keeps_sqlite_memory_flat(tmp_path: Path) -> None:
    """A continuous job looks up as many keys in the destination index as changed since its last run:
    over weeks, every count from 1 to hundreds. SQLite's memory must not grow with the counts seen."""
    assert sqlite3.sqlite_version_info >= (3, 8)
    used = sqlite_memory()
    async with await Journal.open(tmp_path / "journal.db") as journal:
        keys = [f"d{i % 7}/f{i:06d}.bin" for i in range(600)]
        await journal.record_dest("dest", [DestRecord(k, f"v{i}", i, 1.0, f"s{i}", None) for i, k in enumerate(keys)])
        found = await journal.dest_records("dest", keys[:3])  # the connection and its first statements
        assert sorted(found) == keys[:3]
        before = used()
        assert before > 0  # the counter is the live library's
        for n in range(1, 300):
            found = await journal.dest_records("dest", keys[n:2 * n] + ["absent"])
            assert sorted(found) == sorted(keys[n:2 * n])  # padding finds nothing more, nothing less
            assert found[keys[n]] == DestRecord(keys[n], f"v{n}", n, 1.0, f"s{n}", None)
        grown = used() - before
    assert grown < 1 << 20, f"SQLite's memory grew by {grown / 2**20:.1f} MiB over 299 lookups of different sizes"


async def test_a_lookup_of_more_keys_than_one_statement_takes(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path / "journal.db") as journal:
        keys = [f"k{i:05d}" for i in range(1300)]
        await journal.record_dest("dest", [DestRecord(k, None, i, None, None, None) for i, k in enumerate(keys)])
        found = await journal.dest_records("dest", keys[::-1] + ["x"])
        assert len(found) == 1300 and found["k01299"].size == 1299
        assert await journal.dest_records("dest", []) == {}


def resident() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def test_what_a_run_freed_goes_back_to_the_system(tmp_path: Path) -> None:
    """Memory freed in holes of the C allocator's heap (live blocks around them) stays resident until
    the allocator is told to give it back: the controller does after each run."""
    if not memory.available():
        pytest.skip("not glibc: the allocator is not tuned")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.bin").write_bytes(os.urandom(1000))
    spec = JobSpec.model_validate({"kind": "sync", "name": "j", "source": str(tmp_path / "src"),
                                   "dest": str(tmp_path / "dst")})
    async with await Journal.open(tmp_path / "journal.db") as journal:
        job = JobController(spec, SyncRunner(spec, remotes=Config(), journal=journal), settings=SETTINGS,
                            errors=ErrorLog(50), journal=journal)
        # 96 MiB in 3 KiB blocks (the C allocator's, not Python's), one in eight kept: 84 MiB of holes
        blocks = [bytearray(3072) for _ in range(32768)]
        kept = blocks[::8]
        del blocks
        before = resident()
        async with anyio.create_task_group() as tg:
            tg.start_soon(job.run)
            job.trigger("manual")
            await eventually(lambda: job.results and job.results[-1].outcome == SUCCESS, 20, "a run")
            job.drain()
        after = resident()
        assert len(kept) == 4096
    assert before - after > 48 << 20, f"resident {before >> 20} MiB before the run, {after >> 20} MiB after"
