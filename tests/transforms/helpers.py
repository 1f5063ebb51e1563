"""A test tree that exercises every stage, and a round trip through stages and back."""

from __future__ import annotations

import gzip
import itertools
import random
from pathlib import Path

from vertexflow.backends.base import Backend
from vertexflow.backends.local import LocalBackend
from vertexflow.middleware.stages import TransformedBackend
from vertexflow.model import ObjectInfo
from vertexflow.ops.copy import CopyJob, CopyOptions
from vertexflow.pipeline.stats import JobStats
from vertexflow.retry import RetryPolicy
from vertexflow.testing.sample_tree import trees_equal
from vertexflow.transforms import Stages

KiB = 1024
CHUNK = 64 * KiB
FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)

#: every order of every non-empty set of stages (15)
ORDERS = [",".join(p) for n in (1, 2, 3) for c in itertools.combinations(("hash", "compress", "chunk"), n)
          for p in itertools.permutations(c)]


def words(rng: random.Random, size: int) -> bytes:
    """Text that compresses about 3x: enough left to need several parts after compression."""
    vocab = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(4000)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(vocab) + b" "
    return bytes(out[:size])


def make_stage_tree(root: Path, seed: int = 7) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {
        "empty": b"",
        "tiny.txt": b"tiny",
        "text/notes.txt": words(rng, 400 * KiB + 3),
        "text/repetitive.log": b"GET /index.html 200\n" * 20_000,
        "rand.bin": rng.randbytes(200 * KiB + 7),
        "exact.bin": rng.randbytes(2 * CHUNK),
        "media/photo.jpg": b"\xff\xd8\xff\xe0" + rng.randbytes(100 * KiB),
        "media/clip.mp4": b"\x00\x00\x00\x18ftypmp42" + rng.randbytes(150 * KiB),
        "archive.gz": gzip.compress(words(rng, 90 * KiB), mtime=0),
        "документы/файл + #1.txt": words(rng, 70 * KiB),
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def stages_for(order: str, *, codec: str = "zstd:3", hashes: str = "sha256,md5,blake3,xxh128", **kw: object) -> Stages:
    names = order.split(",")
    return Stages.from_options(stages=order, hashes=hashes if "hash" in names else None,
                               compress=codec if "compress" in names else None,
                               chunk_size=CHUNK if "chunk" in names else None, retry=FAST_RETRY, **kw)


def reader_for(store: Backend, stages: Stages) -> TransformedBackend:
    """What a later run reads the store with: undo what was written."""
    return TransformedBackend(store, Stages(decompress=stages.codec is not None,
                                            reassemble=stages.chunk_size is not None))


async def copy_all(src: Backend, dst: Backend, **options: object) -> JobStats:
    stats = await CopyJob(src, dst, CopyOptions(retry=FAST_RETRY, **options)).run()  # type: ignore[arg-type]
    assert stats.failed_objects == 0, stats.failures[:3]
    return stats


async def round_trip(store: Backend, stages: Stages, tmp_path: Path) -> tuple[TransformedBackend, JobStats]:
    """Copy the stage tree into ``store`` through ``stages``, then back out; both trees must match."""
    files = make_stage_tree(tmp_path / "src")
    view = TransformedBackend(store, stages)
    up = await copy_all(LocalBackend(tmp_path / "src"), view)
    assert up.done_objects == len(files)
    listed = sorted([info.key async for info in view.list()])
    assert listed == sorted(files)
    await copy_all(reader_for(store, stages), LocalBackend(tmp_path / "back"))
    assert trees_equal(tmp_path / "src", tmp_path / "back") == []
    return view, up


async def stored_keys(store: Backend) -> list[str]:
    return sorted([info.key async for info in store.list()])


def info(key: str, size: int | None) -> ObjectInfo:
    return ObjectInfo(key=key, size=size)
