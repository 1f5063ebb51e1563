"""The benchmark datasets: generated once from a fixed seed, reused while they match their manifest.

Each dataset ``NAME`` lives in ``DATA_DIR/NAME/`` (the tree the tools copy)
beside ``DATA_DIR/NAME.manifest.json`` (what it was generated from and a
digest of its listing). Kept outside the tree so that no tool copies it.

Reuse: a dataset is reused when its manifest names the same spec and
generator version and a fresh walk of the tree gives the same file count,
byte count and listing digest (paths and sizes; contents are not re-read,
``--regen`` forces a rebuild). Generation writes to ``NAME.partial/`` and
renames it into place before writing the manifest, so an interrupted run
never leaves a tree that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB

#: bump when the layout or content generation changes: old trees are rebuilt
GENERATOR_VERSION = 1
#: bytes produced per ``randbytes`` call while writing a large file (bounded memory)
WRITE_CHUNK = 8 * MiB


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """What to generate. File sizes are uniform in [min_size, max_size] from ``seed``."""

    name: str           # directory name under the data dir, e.g. "A" or "A-quick"
    label: str          # short name used in tables: "A", "B", "C"
    description: str
    files: int
    min_size: int
    max_size: int
    layout: str         # "flat", "nested" or "parts" (see _paths)
    seed: int
    parts: int = 1      # "parts" layout: the tree is split in this many equal top-level parts


@dataclass(frozen=True, slots=True)
class Dataset:
    spec: DatasetSpec
    root: Path
    files: int
    bytes: int

    @property
    def label(self) -> str:
        return self.spec.label

    def part(self, index: int) -> Path:
        """A top-level part of a "parts" dataset (each holds files // parts files)."""
        return self.root / f"part{index}"


def specs(quick: bool) -> dict[str, DatasetSpec]:
    """The datasets of a full run, or the smaller ones of ``--quick``."""
    if quick:
        return {
            "A": DatasetSpec("A-quick", "A", "4 files of 32 MiB", 4, 32 * MiB, 32 * MiB, "flat", 1001),
            "B": DatasetSpec("B-quick", "B", "2,000 files of 1-64 KiB in nested directories",
                             2_000, 1 * KiB, 64 * KiB, "nested", 1002),
            "C": DatasetSpec("C-quick", "C", "20,000 files of 1 KiB in 10 parts of 2,000",
                             20_000, 1 * KiB, 1 * KiB, "parts", 1003, parts=10),
        }
    return {
        "A": DatasetSpec("A", "A", "16 files of 128 MiB", 16, 128 * MiB, 128 * MiB, "flat", 1),
        "B": DatasetSpec("B", "B", "20,000 files of 1-64 KiB in nested directories",
                         20_000, 1 * KiB, 64 * KiB, "nested", 2),
        "C": DatasetSpec("C", "C", "200,000 files of 1 KiB in 10 parts of 20,000",
                         200_000, 1 * KiB, 1 * KiB, "parts", 3, parts=10),
    }


def _paths(spec: DatasetSpec, rng: random.Random) -> Iterator[str]:
    """Relative paths of the dataset's files, in generation order."""
    if spec.layout == "flat":
        for i in range(spec.files):
            yield f"file{i:03d}.bin"
    elif spec.layout == "nested":
        # 8 top directories, 5 below each, 4 below those: 208 directories at
        # depths 1-3; each file lands in one of them at random.
        dirs = []
        for a in range(8):
            dirs.append(f"d{a}")
            for b in range(5):
                dirs.append(f"d{a}/e{b}")
                for c in range(4):
                    dirs.append(f"d{a}/e{b}/f{c}")
        for i in range(spec.files):
            yield f"{rng.choice(dirs)}/obj{i:06d}.dat"
    elif spec.layout == "parts":
        per_part = spec.files // spec.parts
        for i in range(spec.files):
            part, j = divmod(i, per_part)
            yield f"part{part}/d{j // 200:03d}/f{j:06d}.dat"
    else:  # pragma: no cover - specs are defined above
        raise ValueError(spec.layout)


def _listing_digest(entries: Iterator[tuple[str, int]]) -> tuple[int, int, str]:
    count = total = 0
    h = hashlib.sha256()
    for rel, size in sorted(entries):
        count += 1
        total += size
        h.update(f"{rel}\t{size}\n".encode())
    return count, total, h.hexdigest()


def walk_files(root: Path) -> Iterator[tuple[str, int]]:
    """(relative path, size) of every regular file under ``root``."""
    stack = [root]
    while stack:
        top = stack.pop()
        with os.scandir(top) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    yield os.path.relpath(entry.path, root), entry.stat(follow_symlinks=False).st_size


def count_tree(root: Path) -> tuple[int, int]:
    """(files, bytes) under ``root``; (0, 0) if it does not exist."""
    if not root.exists():
        return 0, 0
    files = total = 0
    for _, size in walk_files(root):
        files += 1
        total += size
    return files, total


def _manifest_path(data_dir: Path, spec: DatasetSpec) -> Path:
    return data_dir / f"{spec.name}.manifest.json"


def _reusable(data_dir: Path, spec: DatasetSpec) -> Dataset | None:
    root = data_dir / spec.name
    try:
        manifest = json.loads(_manifest_path(data_dir, spec).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("spec") != asdict(spec) or manifest.get("generator") != GENERATOR_VERSION:
        return None
    if not root.is_dir():
        return None
    count, total, digest = _listing_digest(walk_files(root))
    if (count, total, digest) != (manifest.get("files"), manifest.get("bytes"), manifest.get("digest")):
        return None
    return Dataset(spec, root, count, total)


def _generate(data_dir: Path, spec: DatasetSpec) -> Dataset:
    root = data_dir / spec.name
    partial = data_dir / f"{spec.name}.partial"
    manifest = _manifest_path(data_dir, spec)
    manifest.unlink(missing_ok=True)
    for stale in (partial, root):
        if stale.exists():
            shutil.rmtree(stale)
    rng = random.Random(f"vertexflow-bench:{spec.name}:{spec.seed}")
    made_dirs: set[str] = set()
    entries: list[tuple[str, int]] = []
    for rel in _paths(spec, rng):
        size = rng.randint(spec.min_size, spec.max_size)
        parent = os.path.dirname(rel)
        if parent not in made_dirs:
            (partial / parent).mkdir(parents=True, exist_ok=True)
            made_dirs.add(parent)
        with open(partial / rel, "wb") as f:
            left = size
            while left:
                n = min(left, WRITE_CHUNK)
                f.write(rng.randbytes(n))  # random bytes: nothing compresses or dedupes
                left -= n
        entries.append((rel, size))
    os.sync()  # the timed runs should not pay for writing the dataset back
    partial.rename(root)
    count, total, digest = _listing_digest(iter(entries))
    manifest.write_text(json.dumps({"spec": asdict(spec), "generator": GENERATOR_VERSION,
                                    "files": count, "bytes": total, "digest": digest}, indent=2))
    return Dataset(spec, root, count, total)


def ensure(data_dir: Path, spec: DatasetSpec, *, regen: bool = False,
           say: Callable[[str], None] = print) -> Dataset:
    """The dataset, reused when it matches its manifest, else (re)generated."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if not regen:
        found = _reusable(data_dir, spec)
        if found is not None:
            say(f"dataset {spec.name}: reusing {found.files:,} files, {found.bytes / 1e6:,.0f} MB in {found.root}")
            return found
    need = spec.files * (spec.max_size + spec.min_size) // 2 + spec.files * 4 * KiB
    free = shutil.disk_usage(data_dir).free
    if free < need * 1.2:
        raise RuntimeError(f"dataset {spec.name} needs about {need / 1e9:.1f} GB; "
                           f"only {free / 1e9:.1f} GB free in {data_dir}")
    say(f"dataset {spec.name}: generating {spec.description} in {data_dir / spec.name} ...")
    made = _generate(data_dir, spec)
    say(f"dataset {spec.name}: {made.files:,} files, {made.bytes / 1e6:,.0f} MB")
    return made


def warm(root: Path) -> int:
    """Read every file under ``root`` once (the warm-up read before timed runs); returns bytes read."""
    buf = bytearray(4 * MiB)
    view = memoryview(buf)
    total = 0
    for rel, _ in walk_files(root):
        with open(root / rel, "rb", buffering=0) as f:
            while n := f.readinto(view):
                total += n
    return total
