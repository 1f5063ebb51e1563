"""A daemon backup job reports its progress while it reads, as a copy does (not only once the backup is written).

The source is the Yandex.Disk emulator with a latency on every request, so
the backup takes long enough to be watched; the run's stats are sampled
while it goes, and the backup it wrote is read back independently (its
metadata.json, and its archive with tar).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
from dataclasses import replace
from pathlib import Path

import anyio

from vertexflow.backends.yandex import YandexDiskBackend
from vertexflow.daemon.config import load_daemon_config
from vertexflow.daemon.runners import BackupRunner
from vertexflow.model import ObjectInfo, body_from_bytes
from vertexflow.pipeline.runner import StopSignal
from vertexflow.pipeline.stats import JobStats
from vertexflow.state.journal import Journal
from vertexflow.testing.yandex_disk import running_emulator

KiB = 1024
#: seconds the emulator adds to every request: a dozen objects take a few seconds to read
LATENCY = 0.15


async def test_a_backup_job_counts_objects_and_bytes_as_it_reads(tmp_path: Path) -> None:
    rng = random.Random(7)
    # both paths of the archive: small objects read whole, larger ones streamed
    files = {f"photos/small-{i:02d}.jpg": rng.randbytes(20 * KiB + i) for i in range(8)}
    files.update({f"photos/large-{i}.raw": rng.randbytes(1100 * KiB + i) for i in range(4)})
    total = sum(len(v) for v in files.values())
    async with running_emulator(token="t") as emu:
        async with YandexDiskBackend("/data", token="t", base_url=emu.base_url) as disk:
            for key, data in files.items():
                await disk.put(ObjectInfo(key=key, size=len(data)), body_from_bytes(data))
        emu.knobs = replace(emu.knobs, latency=LATENCY)  # filled at once; read slowly
        (tmp_path / "daemon.toml").write_text(
            f'[remotes.yd]\ntype = "yandex_disk"\ntoken = "t"\nbase_url = "{emu.base_url}"\nroot = "/data"\n\n'
            '[[jobs]]\nname = "nightly"\nkind = "backup"\nsource = "yd:"\ndest = "backups"\n'
            'options = { compress = "gzip", chunk_size = "256K" }\n', encoding="utf-8")
        config, remotes = load_daemon_config(tmp_path / "daemon.toml", {})
        async with await Journal.open(tmp_path / "journal.db") as journal:
            runner = BackupRunner(config.jobs[0], remotes=remotes, journal=journal)
            stats, samples = JobStats(), []

            async def watch() -> None:
                while True:  # ended with the run (a few seconds)
                    samples.append((stats.listing_done, stats.listed_objects, stats.listed_bytes,
                                    stats.done_objects, stats.moved_bytes))
                    await anyio.sleep(0.05)

            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                with anyio.fail_after(120):
                    await runner.run(stats, StopSignal())
                tg.cancel_scope.cancel()

    # while it ran: the whole tree was counted, and objects and bytes went up between none and all
    during = [s for s in samples if s[0] and 0 < s[3] < len(files)]
    assert during, f"no progress was seen during the backup: {samples[:3]} ... {samples[-3:]}"
    assert all(s[1] == len(files) and s[2] == total for s in during)
    moved = [s[4] for s in samples]
    assert moved == sorted(moved), "progress went backwards"
    assert len({m for m in moved if 0 < m < total}) >= 3, "bytes moved in one step"
    assert (stats.done_objects, stats.done_bytes, stats.moved_bytes) == (len(files), total, total)

    # what it wrote, read back without vertexflow
    (folder,) = (tmp_path / "backups").iterdir()
    meta = json.loads((folder / "metadata.json").read_text())
    assert (meta["storage"]["files"], meta["storage"]["bytes"]) == (len(files), total)
    stream = b"".join((folder / p["name"]).read_bytes() for p in meta["storage"]["parts"])
    with tarfile.open(fileobj=io.BytesIO(stream), mode="r:gz") as tar:
        got = {m.name: hashlib.sha256(tar.extractfile(m).read()).hexdigest()  # type: ignore[union-attr]
               for m in tar.getmembers() if m.isfile()}
    assert got == {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}
