"""Defects the chaos rounds found in company migrations, each replayed deterministically (the seed that found it
names the test: ``python benchmarks/chaos.py --ops OP --seed N --rounds 1`` replays the round)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from vertexflow.testing.killer import EXIT_OK, ChaosLab, check_migration_exit, company_route, run_cli, s3_keys


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosLab]:
    with ChaosLab(tmp_path_factory.mktemp("chaos-regressions"), yandex=False) as lab:
        yield lab


def _company(lab: ChaosLab, tmp_path: Path, bucket: str) -> dict[str, str]:
    """Company acme on server A (connection src) in ``bucket``; the migrator's environment (through the proxies)."""
    for server in lab.servers.values():
        server.create_bucket(bucket)
    env = {**lab.environ(tmp_path), "VERTEXFLOW_DB": str(tmp_path / "platform.db"),
           "VERTEXFLOW_STORAGE_CONFIG": str(lab.platform_config(tmp_path, bucket, through_proxies=True))}
    added = run_cli(["company", "add", "acme", "--connection", "src"], env)
    assert added.code == EXIT_OK, added.err
    return env


def test_chaos_seed_migrate_live_1(lab: ChaosLab, tmp_path: Path) -> None:
    """migrate_live seed 1, run 4: server B held a file company acme no longer has (an earlier failed run
    had copied it there, the platform deleted it since); the migration deletes such a file first, and the one
    DeleteObject of it met 5xx answers (the S3 client's own three tries): the migration failed with exit 2 at
    once, where a copy asks again for the whole object. Replayed: the file on B, the first three DELETEs of it
    answered with an injected 5xx by B's proxy."""
    bucket = "regress-migrate-live-1"
    env = _company(lab, tmp_path, bucket)
    rng = random.Random(1)
    a, b = lab.clients["a"], lab.clients["b"]
    a.put_object(Bucket=bucket, Key="portraits/acme/c0/Image/kept.bin", Body=rng.randbytes(5000))
    gone = "portraits/acme/c0/Image/gone.bin"
    b.put_object(Bucket=bucket, Key=gone, Body=rng.randbytes(5000))
    proxy = lab.proxies["b"]
    proxy.rearm(1, {})
    proxy.force = {f"DELETE /{bucket}/{gone}?#{n}": "error" for n in range(3)}  # each try the client makes
    try:
        run = run_cli(["migrate", "company", "acme", "--to", "dst", "--json", "--no-progress"], env)
    finally:
        proxy.force = {}
    assert proxy.counts["error"] == 3, proxy.identities
    assert check_migration_exit(run, "switched", {EXIT_OK}) == [], run.err[-2000:]
    assert company_route(tmp_path / "platform.db", "acme") == ("dst", None)
    assert {k for k in s3_keys(b, bucket, "portraits/acme") if not k.endswith("/.keep")} == {
        "portraits/acme/c0/Image/kept.bin"}
