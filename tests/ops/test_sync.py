"""sync and copy planning with the journal, on local disk."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from vertexflow.backends.local import LocalBackend
from vertexflow.errors import JobAborted
from vertexflow.filters import Filter
from vertexflow.model import ObjectInfo
from vertexflow.ops.copy import CopyOptions
from vertexflow.ops.plan import Planner, merge
from vertexflow.ops.sync import SyncJob, SyncOptions
from vertexflow.pipeline.runner import StopSignal
from vertexflow.retry import RetryPolicy
from vertexflow.state.journal import Journal
from vertexflow.middleware.base import BackendWrapper
from vertexflow.testing.faults import FaultyBackend
from vertexflow.testing.sample_tree import make_tree, trees_equal

FAST = CopyOptions(retry=RetryPolicy(attempts=2, base_delay=0.01))


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    async with await Journal.open(tmp_path / "journal.db") as j:
        yield j


async def sync(journal: Journal, src: Path | LocalBackend | FaultyBackend, dst: Path | LocalBackend | FaultyBackend,
               **kw: object):  # type: ignore[no-untyped-def]
    s = src if not isinstance(src, Path) else LocalBackend(src)
    d = dst if not isinstance(dst, Path) else LocalBackend(dst)
    stop = kw.pop("stop", None)
    options = SyncOptions(**{"copy": FAST, **kw})  # type: ignore[arg-type]
    job = SyncJob(s, d, journal, src_spec=str(getattr(src, "root", src)), dst_spec=str(getattr(dst, "root", dst)),
                  options=options, stop=stop)  # type: ignore[arg-type]
    return await job.run()


async def test_second_sync_copies_nothing(journal: Journal, tmp_path: Path) -> None:
    made = make_tree(tmp_path / "src", files=200)
    first = await sync(journal, tmp_path / "src", tmp_path / "dst", mode="sync")
    assert (first.done_objects, first.skipped_objects) == (200, 0)
    second = await sync(journal, tmp_path / "src", tmp_path / "dst", mode="sync")
    assert (second.done_objects, second.skipped_objects, second.done_bytes) == (0, 200, 0)
    assert trees_equal(tmp_path / "src", tmp_path / "dst") == []
    assert made.files == 200


async def test_changed_sources_are_copied_again(journal: Journal, tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=20)
    await sync(journal, tmp_path / "src", tmp_path / "dst", mode="sync")
    files = sorted((tmp_path / "src").rglob("*.bin"))
    files[0].write_bytes(b"different size")
    data = files[1].read_bytes()
    files[1].write_bytes(bytes([data[0] ^ 1]) + data[1:])  # same size, new mtime
    os.utime(files[1], (1_900_000_000, 1_900_000_000))
    again = await sync(journal, tmp_path / "src", tmp_path / "dst", mode="sync")
    assert again.done_objects == 2 and again.skipped_objects == 18
    assert trees_equal(tmp_path / "src", tmp_path / "dst") == []


async def test_checksum_mode_finds_same_size_same_mtime_changes(journal: Journal, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    for side, content in (("src", b"aaaa"), ("dst", b"bbbb")):
        p = tmp_path / side / "f"
        p.write_bytes(content)
        os.utime(p, (1_700_000_000, 1_700_000_000))
    default = await sync(journal, tmp_path / "src", tmp_path / "dst", mode="sync")
    assert default.skipped_objects == 1
    checked = await sync(journal, tmp_path / "src", tmp_path / "dst", mode="sync", compare="checksum")
    assert checked.done_objects == 1
    assert (tmp_path / "dst" / "f").read_bytes() == b"aaaa"


async def test_delete_only_with_flag(journal: Journal, tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=10)
    await sync(journal, tmp_path / "src", tmp_path / "dst", mode="sync")
    (tmp_path / "dst" / "extra.txt").write_text("x")
    kept = await sync(journal, tmp_path / "src", tmp_path / "dst", mode="sync")
    assert (tmp_path / "dst" / "extra.txt").exists() and kept.deleted_objects == 0
    gone = await sync(journal, tmp_path / "src", tmp_path / "dst", mode="sync", delete=True)
    assert gone.deleted_objects == 1
    assert trees_equal(tmp_path / "src", tmp_path / "dst") == []


async def test_delete_refused_when_source_is_empty(journal: Journal, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    make_tree(tmp_path / "dst", files=5)
    with pytest.raises(JobAborted, match="empty"):
        await sync(journal, tmp_path / "src", tmp_path / "dst", mode="sync", delete=True)
    assert len(list((tmp_path / "dst").rglob("*.bin"))) == 5


async def test_max_delete_stops_the_job(journal: Journal, tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=3)
    make_tree(tmp_path / "dst", files=8, seed=7)  # different names beyond the first 3? same names, other data
    for i in range(5):
        (tmp_path / "dst" / f"stale{i}").write_text("old")
    with pytest.raises(JobAborted, match="max-delete 2"):
        await sync(journal, tmp_path / "src", tmp_path / "dst", mode="sync", delete=True, max_delete=2)
    assert len(list((tmp_path / "dst").glob("stale*"))) == 5


async def test_no_deletes_after_a_failed_transfer(journal: Journal, tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=3)
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "stale").write_text("old")
    dst = FaultyBackend(LocalBackend(tmp_path / "dst"), put_failures=100)
    stats = await sync(journal, tmp_path / "src", dst, mode="sync", delete=True)
    assert stats.failed_objects == 3 and stats.deleted_objects == 0 and stats.deletes_skipped == 1
    assert (tmp_path / "dst" / "stale").exists()


async def test_dry_run_changes_nothing(journal: Journal, tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=4)
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "stale").write_text("old")
    seen = []
    job = SyncJob(LocalBackend(tmp_path / "src"), LocalBackend(tmp_path / "dst"), journal, src_spec="a", dst_spec="b",
                  options=SyncOptions(mode="sync", delete=True, dry_run=True), on_plan=seen.append)
    stats = await job.run()
    assert sorted(d.action for d in seen) == ["copy"] * 4 + ["delete"]
    assert stats.planned_deletes == 1 and stats.done_objects == 0
    assert [p.name for p in (tmp_path / "dst").iterdir()] == ["stale"]
    assert await journal.list_jobs() == []


async def test_filters_apply_to_both_sides(journal: Journal, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    for name, size in (("a/keep.jpg", 10), ("a/skip.tmp", 10), ("b/big.jpg", 5000), ("b/small.jpg", 1)):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(b"x" * size)
    dst.mkdir()
    (dst / "outside.tmp").write_text("excluded: never deleted")
    filt = Filter(exclude=["*.tmp"], min_size=2, max_size=1000)
    stats = await sync(journal, src, dst, mode="sync", delete=True, filter=filt)
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file()) == ["a/keep.jpg", "outside.tmp"]
    assert stats.deleted_objects == 0


async def test_order_by_size_desc(journal: Journal, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sizes = [5, 500, 50, 5000, 1]
    for i, size in enumerate(sizes):
        (src / f"f{i}").write_bytes(b"x" * size)
    dst = FaultyBackend(LocalBackend(tmp_path / "dst"))
    await sync(journal, src, dst, order_by="size,desc", copy=CopyOptions(transfers=1))
    assert list(dst.put_calls) == ["f3", "f1", "f2", "f0", "f4"]


async def test_interrupted_sync_resumes_without_resending(journal: Journal, tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=600)
    stop = StopSignal()
    src, dst = LocalBackend(tmp_path / "src"), LocalBackend(tmp_path / "dst")
    job = SyncJob(src, dst, journal, src_spec="s", dst_spec="d", stop=stop,
                  options=SyncOptions(mode="sync", copy=CopyOptions(transfers=1, batch_files=2, queue_size=2)))

    async def stop_soon() -> None:
        while job.stats.done_objects < 100:
            await anyio.sleep(0.001)
        stop.request_graceful()

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_soon)
        first = await job.run()
    assert first.interrupted and 100 <= first.done_objects < 600
    state = (await journal.get_job(first.job_id)).state  # type: ignore[union-attr]
    assert state == "interrupted"
    second = await SyncJob(LocalBackend(tmp_path / "src"), LocalBackend(tmp_path / "dst"), journal,
                           src_spec="s", dst_spec="d", options=SyncOptions(mode="sync")).run()
    assert second.resumed and second.job_id == first.job_id
    assert second.done_objects == 600 - first.done_objects
    assert second.skipped_objects == first.done_objects
    assert trees_equal(tmp_path / "src", tmp_path / "dst") == []


class ShuffledListing(BackendWrapper):
    """A backend that lists in no particular order (as some stores do)."""

    def __init__(self, inner: LocalBackend) -> None:
        super().__init__(inner)
        self.features = replace(self.features, sorted_listing=False)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:  # type: ignore[override]
        items = [i async for i in self.inner.list(prefix)]
        random.Random(1).shuffle(items)
        for i in items:
            yield i


async def test_unsorted_listings_are_sorted_through_sqlite(journal: Journal, tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=300)
    make_tree(tmp_path / "dst", files=150)  # the same first 150 files
    (tmp_path / "dst" / "zzz-extra").write_text("x")
    planner = Planner(ShuffledListing(LocalBackend(tmp_path / "src")),
                      ShuffledListing(LocalBackend(tmp_path / "dst")), journal=None, delete=True)
    decisions = [d async for d in planner.decisions()]
    keys = [d.key for d in decisions]
    assert keys == sorted(keys)
    actions = [d.action for d in decisions]
    assert actions.count("copy") == 150 and actions.count("skip") == 150 and actions.count("delete") == 1


async def test_merge_pairs_sorted_streams() -> None:
    async def stream(keys: list[str]) -> AsyncIterator[ObjectInfo]:
        for k in keys:
            yield ObjectInfo(key=k, size=1)

    pairs = [(a.key if a else None, b.key if b else None)
             async for a, b in merge(stream(["a", "b", "d"]), stream(["b", "c", "d", "e"]))]
    assert pairs == [("a", None), ("b", "b"), (None, "c"), ("d", "d"), (None, "e")]


def test_filter_globs_sizes_ages() -> None:
    from datetime import UTC, datetime

    from vertexflow.filters import parse_age, parse_size

    f = Filter(include=["*.jpg", "docs/**"], exclude=["**/tmp/*"])
    assert f.matches_key("a/b/c.jpg") and f.matches_key("docs/x/y.txt")
    assert not f.matches_key("a/b/c.png") and not f.matches_key("a/tmp/c.jpg")
    assert Filter(include=["/top.txt"]).matches_key("top.txt")
    assert not Filter(include=["/top.txt"]).matches_key("sub/top.txt")
    assert Filter(include=["{a,b}.txt"]).matches_key("x/b.txt")
    assert Filter(extensions=("jpg",)).matches_key("x/Y.JPG") and not Filter(extensions=("jpg",)).matches_key("jpg")
    assert parse_size("1.5M") == 1572864 and parse_size("10k") == 10240 and parse_size("7") == 7
    assert parse_age("1d12h") == timedelta(hours=36) and parse_age("90s") == timedelta(seconds=90)
    now = datetime(2026, 1, 10, tzinfo=UTC)
    old = ObjectInfo(key="o", size=1, mtime=datetime(2026, 1, 1, tzinfo=UTC))
    new = ObjectInfo(key="n", size=1, mtime=datetime(2026, 1, 9, 23, tzinfo=UTC))
    assert Filter(min_age=parse_age("7d"), now=now).matches(old) and not Filter(min_age=parse_age("7d"), now=now).matches(new)
    assert Filter(max_age=parse_age("2h"), now=now).matches(new) and not Filter(max_age=parse_age("2h"), now=now).matches(old)
    from vertexflow.errors import ConfigError
    for bad in ("12x", "", "M"):
        with pytest.raises(ConfigError):
            parse_size(bad)
    with pytest.raises(ConfigError):
        parse_age("7 days")


async def test_a_destination_stamped_in_whole_seconds_is_not_older_than_its_source(tmp_path: Path) -> None:
    # S3's LastModified has no fraction: an object stored within the second its source file was
    # written lists up to 1 s before the file's mtime, and was copied again on every run
    from datetime import UTC, datetime

    from vertexflow.backends.s3 import S3Backend

    planner = Planner(LocalBackend(tmp_path), S3Backend("bucket", endpoint_url="http://127.0.0.1:9"), journal=None)
    assert not planner.dst.features.preserves_mtime
    written = datetime(2026, 11, 25, 5, 30, 7, 900_000, tzinfo=UTC)
    src = ObjectInfo(key="a", size=3, mtime=written)

    def stored(seconds: float) -> ObjectInfo:
        return ObjectInfo(key="a", size=3, mtime=datetime.fromtimestamp(written.timestamp() + seconds, UTC))

    assert (await planner.compare(src, stored(-0.9), None)).action == "skip"  # 05:30:07 against 05:30:07.9
    assert (await planner.compare(src, stored(5), None)).action == "skip"
    decision = await planner.compare(src, stored(-2.9), None)  # stored before the source last changed
    assert (decision.action, decision.why) == ("copy", "source newer")
    assert (await planner.compare(src, replace(stored(5), size=4), None)).action == "copy"
