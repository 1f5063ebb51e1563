"""Shard planning, the key-range filter and what a shard task carries (no cluster needed)."""

from __future__ import annotations

import pickle
import random

import pytest

from vertexflow.config import parse_config
from vertexflow.distributed import shards as shards_mod
from vertexflow.distributed.bandwidth import ShardBandwidth, slots_share
from vertexflow.distributed.jobs import merge_reports, shard_tasks
from vertexflow.distributed.shards import ShardPlanner, listing_prefix
from vertexflow.errors import ConfigError
from vertexflow.filters import Filter
from vertexflow.locations import parse_location
from vertexflow.model import ObjectInfo
from vertexflow.ops.assembly import Transfer
from vertexflow.ops.spec import StageSpec, TransferSettings, TransferSpec


def keys(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return sorted({f"d{rng.randint(0, 30):02d}/s{rng.randint(0, 5)}/f{rng.randint(0, 10**9)}" for _ in range(n)})


def plan(ks: list[str], sizes: dict[str, int] | None = None, **kw: int) -> shards_mod.ShardPlan:
    p = ShardPlanner(**{"slots": 2, **kw})
    for k in ks:
        p.add(ObjectInfo(key=k, size=(sizes or {}).get(k, 100)))
    return p.plan()


def owner(shards: list[shards_mod.Shard], key: str) -> list[int]:
    return [s.index for s in shards if s.contains(key)]


def test_shards_cover_every_key_once_and_respect_bounds() -> None:
    ks = keys(20_000)
    result = plan(ks, max_objects=1500, min_objects=100)
    assert result.objects == len(ks)
    assert all(s.objects <= 1500 for s in result.shards)
    assert sum(s.objects for s in result.shards) == len(ks)
    assert result.shards[0].start_at is None and result.shards[-1].end_before is None
    for a, b in zip(result.shards, result.shards[1:], strict=False):
        assert a.end_before == b.start_at
    for k in ks[::97] + ["", "\uffff", "d15/zzz"]:  # planned keys, and keys added after planning
        assert len(owner(result.shards, k)) == 1, k
    counted = [sum(1 for k in ks if s.contains(k)) for s in result.shards]
    assert counted == [s.objects for s in result.shards]


def test_shard_count_adapts_to_the_job() -> None:
    assert len(plan(keys(500)).shards) == 1  # small job: one shard
    # a few thousand objects: a shard per worker thread, so that no worker idles (the default floors)
    assert len(plan(keys(3000), slots=2).shards) == 2
    assert len(plan(keys(5000), slots=4).shards) == 4
    assert len(plan(keys(2500), slots=4).shards) == 2  # at least WORKER_MIN_OBJECTS objects a shard
    two_big = {"a": 600 * 1024 ** 2, "b": 600 * 1024 ** 2}  # two large objects: one for each worker
    assert len(plan(sorted(two_big), two_big, slots=2).shards) == 2
    assert len(plan(keys(20_000), slots=2).shards) == 2  # no shard below MIN_OBJECTS small objects
    assert len(plan(keys(20_000), slots=2, min_objects=1000).shards) == 8  # PER_SLOT per worker thread
    assert len(plan(keys(20_000), slots=3, min_objects=1000).shards) == 12
    big = {k: 10 * 1024 ** 2 for k in keys(60)}  # 600 MiB in 60 objects: split by bytes, bounded by bytes
    by_bytes = plan(sorted(big), big, slots=1, max_bytes=100 * 1024 ** 2)
    assert len(by_bytes.shards) >= 6 and all(s.bytes <= 100 * 1024 ** 2 for s in by_bytes.shards)


def test_planner_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shards_mod, "MAX_PIECES", 50)
    p = ShardPlanner(slots=2, granule=4, max_objects=10_000)
    for k in keys(20_000):
        p.add(ObjectInfo(key=k, size=1))
        assert len(p.pieces) <= 50
    result = p.plan()
    assert sum(s.objects for s in result.shards) == p.objects


def test_bounds_from_the_environment() -> None:
    assert shards_mod.bounds_from_env({"VERTEXFLOW_SHARD_MAX_BYTES": "10G", "VERTEXFLOW_SHARD_MIN_OBJECTS": "500"}) \
        == {"max_bytes": 10 * 1024 ** 3, "min_objects": 500}
    with pytest.raises(ConfigError, match="VERTEXFLOW_SHARD_MAX_OBJECTS"):
        shards_mod.bounds_from_env({"VERTEXFLOW_SHARD_MAX_OBJECTS": "0"})


def test_planner_rejects_unsorted_listing() -> None:
    p = ShardPlanner(slots=1)
    p.add(ObjectInfo(key="b", size=1))
    with pytest.raises(ValueError, match="not in key order"):
        p.add(ObjectInfo(key="a", size=1))


def test_listing_prefix_never_misses_a_key() -> None:
    ks = keys(5000, seed=7)
    for _ in range(300):
        a, b = sorted(random.sample(ks, 2))
        prefix = listing_prefix(a, b)
        assert all(k.startswith(prefix) for k in ks if a <= k < b)
    assert listing_prefix("d03/s1/f1", "d03/s4/f2") == "d03/s"
    assert listing_prefix(None, "x", "p/") == "p/"


def test_range_filter_and_unchanged_fingerprint() -> None:
    f = Filter(start_at="b", end_before="d")
    assert [k for k in ("a", "b", "c", "cz", "d", "e") if f.matches_key(k)] == ["b", "c", "cz"]
    assert f.active and "start_at" in f.describe()
    assert "start_at" not in Filter(prefix="x/").describe()  # jobs recorded before ranges keep their identity


def test_shard_tasks_carry_no_secret(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = parse_config({"remotes": {"store": {"type": "s3", "endpoint": "http://127.0.0.1:1",
                                                 "access_key_id": "AKIDINLINEVALUE",
                                                 "secret_access_key": "s3cr3t-INLINE-value"}}})
    dst = parse_location("store:bucket/p", config)
    assert dst.kwargs["secret_access_key"] == "s3cr3t-INLINE-value"  # the backend's arguments hold it...
    plan_ = plan(keys(3000), slots=2)
    spec = TransferSpec(source=str(tmp_path), dest="store:bucket/p", config_path="/etc/vf.toml",
                        settings=TransferSettings(transfers=4, bwlimit="4M",
                                                  stages=StageSpec(compress="zstd:3")))
    tasks = shard_tasks(Transfer.prepare(spec, config), plan_.shards)
    blob = pickle.dumps(tasks)
    assert b"s3cr3t-INLINE-value" not in blob and b"AKIDINLINEVALUE" not in blob  # ...the tasks do not
    assert tasks[0].dst == "store:bucket/p" and tasks[0].bwlimit == ("4M", None, None)
    assert tasks[0].spec is not None
    shipped = TransferSpec.from_dict(tasks[0].spec)  # the spec as the worker reads it back
    assert shipped.settings.stages.compress == "zstd:3" and shipped.settings.transfers == 4
    assert shipped.no_journal and shipped.dest == "store:bucket/p"


def test_share_and_shard_bandwidth() -> None:
    assert slots_share(10, 2) == 0.5 and slots_share(1, 2) == 1.0 and slots_share(0, 4) == 1.0
    bw = ShardBandwidth.from_texts(("4M", None, None), 0.5)
    assert bw is not None and bw.up is not None and bw.down is not None
    assert ShardBandwidth.from_texts((None, None, None), 1.0) is None


def test_merge_verify_reports() -> None:
    base = {"src_objects": 1, "dst_objects": 1, "compared": 1, "hashed_both_sides": 1, "matched": 1,
            "missing": 0, "extra": 0, "different": 0, "problems": [], "ok": True, "before_fix": None}
    bad = {**base, "matched": 0, "different": 1, "ok": False,
           "problems": [{"kind": "different", "key": "k", "detail": "x"}]}
    merged = merge_reports([base, bad], shards=2)
    assert merged["ok"] is False and merged["different"] == 1 and merged["src_objects"] == 2
    assert merged["problems"][0]["key"] == "k"


def test_union_of_busy_windows() -> None:
    from vertexflow.distributed.jobs import union_seconds

    assert union_seconds([[0, 4], [1, 3], [5, 7]]) == 6
    assert union_seconds([[2, 5], [0, 3]]) == 5 and union_seconds([]) == 0


def test_cluster_progress_never_goes_backwards_when_a_shard_is_retried() -> None:
    from vertexflow.distributed.driver import ShardProgress
    from vertexflow.pipeline.stats import JobStats

    progress, live, shown = ShardProgress(), JobStats(), []

    def event(shard: int, attempt: str, kind: str, objects: int = 0) -> None:
        progress.take({"shard": shard, "attempt": attempt, "event": kind, "done_objects": objects,
                       "done_bytes": objects * 100, "moved_bytes": objects * 100})
        progress.apply(live)
        shown.append(live.done_objects)

    event(0, "a", "start")
    event(1, "b", "start")
    event(0, "a", "progress", 500)
    event(1, "b", "progress", 240)
    event(1, "c", "start")  # shard 1's worker was lost: a second attempt counts from zero
    event(1, "b", "progress", 260)  # a late snapshot of the lost attempt is dropped
    event(1, "c", "progress", 100)
    event(1, "c", "progress", 300)
    assert shown == sorted(shown) and shown[-1] == 800  # never backwards; shard 1 counted once
    progress.finish(0, {"stats": {"objects": 500, "bytes": 50_000}})
    progress.finish(1, {"stats": {"objects": 120, "skipped": 380, "bytes": 12_000}})  # the retry skipped the rest
    progress.apply(live, exact=True)
    assert live.done_objects == 620 and live.skipped_objects == 380 and live.done_bytes == 62_000
