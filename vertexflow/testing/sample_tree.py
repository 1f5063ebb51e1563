"""Deterministic sample trees for the demo, tests and benchmarks."""

from __future__ import annotations

import filecmp
import os
import random
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Made:
    files: int
    bytes: int


def make_tree(root: str | os.PathLike[str], *, files: int, min_size: int = 1024, max_size: int = 64 * 1024,
              dirs: int = 20, seed: int = 42) -> Made:
    """Write ``files`` files of random sizes and content spread over nested directories.

    Content comes from a seeded generator, so the same arguments give the
    same tree (byte for byte) on every machine.
    """
    rng = random.Random(seed)
    root = Path(root)
    total = 0
    for i in range(files):
        d = root / f"dir{i % dirs:03d}" / f"sub{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        size = rng.randint(min_size, max_size)
        (d / f"file{i:07d}.bin").write_bytes(rng.randbytes(size))
        total += size
    return Made(files, total)


def trees_equal(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> list[str]:
    """Differences between two trees (missing, extra or different files); empty if equal."""
    problems: list[str] = []
    a, b = Path(a), Path(b)
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    problems += [f"missing {p}" for p in sorted(files_a - files_b)]
    problems += [f"extra {p}" for p in sorted(files_b - files_a)]
    for p in sorted(files_a & files_b):
        if not filecmp.cmp(a / p, b / p, shallow=False):
            problems.append(f"differs {p}")
    return problems
