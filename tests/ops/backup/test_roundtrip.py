"""Round trips: every type, both codecs, local/S3/Yandex.Disk as storage source and as backup destination."""

from __future__ import annotations

from pathlib import Path

import pytest

from vertexflow.ops.backup.create import CreateOptions, create_backup
from vertexflow.ops.backup.reading import Opened, load_metadata
from vertexflow.ops.backup.restore import restore_backup
from vertexflow.ops.backup.verify import verify_backup
from vertexflow.transforms.compression import parse_codec

from .conftest import Stores, contents, db_rows, digests, fill, make_db, tree_files

KINDS = ("local", "s3", "yandex")
#: every source x destination pair; the codec alternates so both meet every backend
PAIRS = [(src, dst, ("gzip", "zstd")[i % 2]) for i, (src, dst) in
         enumerate((s, d) for s in KINDS for d in KINDS)]


def _marks(*kinds: str) -> list[pytest.MarkDecorator]:
    return [pytest.mark.s3] if "s3" in kinds else []


@pytest.mark.parametrize("src,dst,codec", [pytest.param(*p, marks=_marks(*p[:2]), id="-".join(p)) for p in PAIRS])
async def test_full_backup_round_trips_file_by_file(stores: Stores, tmp_path: Path, src: str, dst: str,
                                                    codec: str) -> None:
    files = tree_files()
    source = await stores.get(src, "data")
    await fill(source, files)
    make_db(tmp_path / "app.db")
    dest = await stores.get(dst, "backups")
    # 64 KiB parts: the ~200 KiB compressed archive spans several
    result = await create_backup(dest, CreateOptions(kind="full", codec=parse_codec(codec), chunk_size=64 * 1024,
                                                     db_path=str(tmp_path / "app.db"), storage=source))
    meta = result.metadata
    assert meta.storage is not None and len(meta.storage.parts) >= 3
    assert meta.storage.files == len(files) and meta.storage.bytes == sum(map(len, files.values()))
    assert all(p.size <= 64 * 1024 for p in meta.storage.parts)

    opened = Opened(dest, meta.id, await load_metadata(dest, meta.id))
    report = await verify_backup(opened)
    assert report.ok, report.problems
    assert report.files == len(files)

    target = await stores.get(src, "restored")
    restored = await restore_backup(opened, target=target, db_path=str(tmp_path / "restored.db"))
    assert restored.files == len(files)
    assert await contents(target) == digests(files)
    assert db_rows(tmp_path / "restored.db") == db_rows(tmp_path / "app.db")


@pytest.mark.parametrize("codec", ["gzip", "zstd:5"])
@pytest.mark.parametrize("kind", ["storage", "database"])
async def test_single_type_backups_round_trip(stores: Stores, tmp_path: Path, kind: str, codec: str) -> None:
    files = tree_files(seed=9)
    source = await stores.get("local", "data")
    await fill(source, files)
    make_db(tmp_path / "app.db", rows=2000)
    dest = await stores.get("local", "backups")
    result = await create_backup(dest, CreateOptions(
        kind=kind, codec=parse_codec(codec), chunk_size=32 * 1024,
        db_path=str(tmp_path / "app.db") if kind == "database" else None,
        storage=source if kind == "storage" else None))
    meta = await load_metadata(dest, result.metadata.id)
    assert (meta.storage is None) == (kind == "database") and (meta.database is None) == (kind == "storage")
    assert meta.type == kind and meta.id.startswith(f"vertexflow-{kind}-")
    opened = Opened(dest, meta.id, meta)
    assert (await verify_backup(opened)).ok
    target = await stores.get("local", "restored")
    await restore_backup(opened, target=target, db_path=str(tmp_path / "app.db"))
    if kind == "storage":
        assert await contents(target) == digests(files)
    else:
        assert db_rows(tmp_path / "app.db") == [(i + 1, f"item {i}", bytes([i % 256]) * 100) for i in range(2000)]
        kept = list(tmp_path.glob("app.db.before-restore-*"))
        assert len(kept) == 1 and db_rows(kept[0]) == db_rows(tmp_path / "app.db")


async def test_restore_only_prefix(stores: Stores) -> None:
    files = tree_files()
    source = await stores.get("local", "data")
    await fill(source, files)
    dest = await stores.get("local", "backups")
    result = await create_backup(dest, CreateOptions(kind="storage", codec=parse_codec("zstd"), storage=source))
    opened = Opened(dest, result.metadata.id, result.metadata)
    target = await stores.get("local", "restored")
    restored = await restore_backup(opened, target=target, db_path=None, only="docs/")
    want = {k: v for k, v in digests(files).items() if k.startswith("docs/")}
    assert await contents(target) == want and restored.files == len(want)
    assert restored.skipped == len(files) - len(want)
