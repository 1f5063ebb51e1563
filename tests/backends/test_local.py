"""Local backend: the conformance suite plus what only local disk has."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from vertexflow.backends.local import TMP_PREFIX, LocalBackend
from vertexflow.errors import InvalidKey

from .conformance import BackendConformance, put_bytes


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    b = LocalBackend(tmp_path / "root")
    await b.check(write=True)
    async with b:
        yield b


class TestLocalConformance(BackendConformance):
    pass


async def test_failed_put_leaves_no_temp_files(backend: LocalBackend) -> None:
    from .conformance import failing_body
    from vertexflow.model import ObjectInfo

    data = os.urandom(2 * 1024 * 1024)
    with pytest.raises(RuntimeError):
        await backend.put(ObjectInfo(key="d/f", size=len(data)), failing_body(data, 1000))
    leftovers = [p for p in backend.root.rglob("*") if p.is_file()]
    assert leftovers == []


async def test_symlinks_and_temp_files_are_not_listed(backend: LocalBackend, tmp_path: Path) -> None:
    await put_bytes(backend, "real.txt", b"r")
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    os.symlink(outside, backend.root / "link.txt")
    (backend.root / f"{TMP_PREFIX}abc").write_text("partial")
    assert [i.key async for i in backend.list()] == ["real.txt"]


async def test_symlinked_directory_cannot_be_escaped_through(backend: LocalBackend, tmp_path: Path) -> None:
    # a key is a path below the root; ".." never gets through
    with pytest.raises(InvalidKey):
        backend.local_path("a/../../outside.txt")


async def test_segment_longer_than_the_filesystem_allows(backend: LocalBackend) -> None:
    with pytest.raises(InvalidKey):
        await put_bytes(backend, "x" * 300, b"1")


async def test_missing_root_is_not_found(tmp_path: Path) -> None:
    from vertexflow.errors import NotFound

    b = LocalBackend(tmp_path / "does-not-exist")
    with pytest.raises(NotFound):
        await b.check()
    with pytest.raises(NotFound):
        [i async for i in b.list()]


async def test_streamed_put_of_network_sized_pieces_keeps_every_byte_in_order(backend: LocalBackend) -> None:
    # pieces of 1 byte to 300 KiB, as a download hands them on: they are gathered,
    # hashed and written in groups, and the last group of each gathering is short
    import hashlib
    import random

    from vertexflow.model import ObjectInfo

    rng = random.Random(7)
    pieces = [os.urandom(rng.choice((1, 17, 4096, 65536, 300 * 1024))) for _ in range(120)]
    data = b"".join(pieces)
    assert len(data) > 2 * 4 * 1024 * 1024  # more than two gatherings

    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    stored = await backend.put(ObjectInfo(key="d/streamed", size=len(data)), body)
    assert (backend.root / "d/streamed").read_bytes() == data
    assert stored.hashes["sha256"] == hashlib.sha256(data).hexdigest()


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors through /proc")
async def test_a_batch_copies_each_file_on_its_own_and_closes_every_source(tmp_path: Path) -> None:
    """copy_files opens a whole batch ahead (a read-ahead hint per file): each file still fails alone."""
    from vertexflow.errors import NotFound, SourceChanged

    src, dst = LocalBackend(tmp_path / "src"), LocalBackend(tmp_path / "dst")
    await src.check(write=True)
    await dst.check(write=True)
    for key in ("a", "gone", "changed", "d/e"):
        await put_bytes(src, key, key.encode() * 100)
    versions = {key: (await src.stat(key)).version for key in ("a", "gone", "changed", "d/e")}
    os.unlink(src.root / "gone")
    (src.root / "changed").write_bytes(b"longer than it was listed" * 100)
    jobs = [(key, versions.get(key), None) for key in ("a", "gone", "changed", "../escape", "d/e")]

    before = _open_descriptors()
    results = dst.copy_files(src, jobs)
    assert _open_descriptors() == before

    assert [type(r).__name__ for r in results] == ["Written", "NotFound", "SourceChanged", "InvalidKey", "Written"]
    assert isinstance(results[1], NotFound) and isinstance(results[2], SourceChanged)
    assert results[0].size == 100 and results[4].size == 300
    assert (dst.root / "a").read_bytes() == b"a" * 100 and (dst.root / "d/e").read_bytes() == b"d/e" * 100
    assert sorted(p.name for p in dst.root.rglob("*") if p.is_file()) == ["a", "e"]


@pytest.mark.parametrize("fsync", [True, False])
async def test_a_batch_made_durable_together_still_fails_a_file_alone(tmp_path: Path, fsync: bool) -> None:
    """With fsync a batch's files are synced at once before any is renamed into place (one filesystem sync,
    then one per folder): a file that cannot take its name (a folder stands there) fails alone, the others
    land whole, and no temporary file is left."""
    from vertexflow.errors import Conflict

    src, dst = LocalBackend(tmp_path / "src"), LocalBackend(tmp_path / "dst", fsync=fsync)
    await src.check(write=True)
    await dst.check(write=True)
    keys = ("a", "blocked", "d/e", "d/f")
    for key in keys:
        await put_bytes(src, key, key.encode() * 50)
    (dst.root / "blocked").mkdir()
    (dst.root / "blocked" / "inside").write_text("kept")
    results = dst.copy_files(src, [(key, None, None) for key in keys])
    assert [type(r).__name__ for r in results] == ["Written", "Conflict", "Written", "Written"]
    assert isinstance(results[1], Conflict) and results[1].key == "blocked"
    assert {p.relative_to(dst.root).as_posix(): p.read_bytes() for p in dst.root.rglob("*") if p.is_file()} == {
        "a": b"a" * 50, "d/e": b"d/e" * 50, "d/f": b"d/f" * 50, "blocked/inside": b"kept"}
    assert not [p for p in dst.root.rglob(f"{TMP_PREFIX}*")]


async def test_a_file_where_a_folder_should_be_is_a_conflict_naming_it(tmp_path: Path) -> None:
    from vertexflow.errors import Conflict

    (tmp_path / "a").write_text("a file, not a folder")
    async with LocalBackend(tmp_path) as b:
        with pytest.raises(Conflict, match="creating the folder failed") as info:
            await b.make_folder("a/b")
    assert info.value.key == "a/b"
