"""Company migrations while a platform process writes: every scenario on every kind of backend.

A writer process (:mod:`.writer`) creates, overwrites and deletes one
company's files through its own ``StorageManager`` at a steady rate, during:

* ``live``: a live migration X -> Y;
* ``filtered``: a staged copy (a filter leaves files out: the company stays on X), then the run that
  completes the move;
* ``rollback``: ``migrate rollback`` of a switched migration (the sync back runs under the write fence
  machinery);
* ``back``: X -> Y, the company works on Y (creates, overwrites, deletes), then Y -> X, where X still holds
  the copy it left behind, with files the company no longer has;
* ``killed``: a live migration whose migrator is killed with SIGKILL, then run again (the rerun takes the
  stale one over).

After each, every acknowledged write is read back with its last content, nothing deleted came back, both
with an independent client of the backend (plain file reads, boto3, yadisk) and through a fresh
``StorageManager``; ``vertexflow company verify`` passes and the company is routed where expected.

The backends X and Y: two folders of local disk; two SeaweedFS servers with different credentials; two
Yandex.Disk emulators (different tokens) with latency.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from vertexflow.errors import NotFound
from vertexflow.ops.migrate import migrate_company, resolve_target
from vertexflow.tenancy import StorageManager
from vertexflow.tenancy.adapters import FOLDER_MARKER
from vertexflow.tenancy.live_state import LiveState
from vertexflow.tenancy.registry import Company, Placement, Registry
from vertexflow.testing.yandex_disk.process import emulator_process

from ..cli.helpers import vf
from .conftest import minio_conn
from .writer import SUBFOLDERS, Writer, WriterResult

pytestmark = pytest.mark.slow

CONTENT_TYPES = ["portraits", "videos"]
#: the categories the writer works in
CATEGORIES = ["c0", "c1", "c2"]
#: a category whose files the writer never changes (what a filter can leave out for sure)
ARCHIVE = "archive"
CATEGORY_ARGS = [a for c in (*CATEGORIES, ARCHIVE) for a in ("--category", c)]
#: files big enough that a bandwidth limit makes the copy last while the writer writes (which leaves them alone)
BIG = {f"c0/Image/big{i}.bin": f"big {i} ".ljust(64 * 1024, "b") for i in range(4)}
#: the copy of BIG takes about a second under it: the writer's operations overlap the migration
BWLIMIT = "256k"
LATENCY = "0.005"  # seconds per emulator request: a remote disk, slower than the writer's pace
_roots = itertools.count()


def _initial() -> dict[str, dict[str, str | None]]:
    files: dict[str, dict[str, str | None]] = {
        ct: {f"{c}/{s}/f{i}.txt": f"initial {ct} {c}/{s}/f{i} ".ljust(100 + 37 * i, "i")
             for c in (*CATEGORIES, ARCHIVE) for s in SUBFOLDERS for i in range(1)} for ct in CONTENT_TYPES}
    files["portraits"].update(BIG)
    return files


# -- the backends, each with an independent reader ----------------------------------------------------
@dataclass
class Side:
    """A backend the company may live on: its connection, and an independent read of the company's files."""

    name: str
    conn: dict[str, Any]
    #: content type -> {key: content} of the company's files, read without vertexflow (folder markers left out)
    read: Callable[[str], dict[str, str]]


def _local_side(name: str, root: Path) -> Side:
    def read(ct: str) -> dict[str, str]:
        base = root / ct / "acme"
        return {p.relative_to(base).as_posix(): p.read_text() for p in sorted(base.rglob("*")) if p.is_file()}

    return Side(name, {"type": "local", "path": str(root)}, read)


def _s3_side(name: str, conn: dict[str, Any], client: Any, bucket: str) -> Side:
    def read(ct: str) -> dict[str, str]:
        prefix = f"{ct}/acme/"
        out = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", ()):
                if o["Key"].rsplit("/", 1)[-1] == FOLDER_MARKER:
                    continue
                body = client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
                out[o["Key"].removeprefix(prefix)] = body.decode()
        return out

    return Side(name, conn, read)


def _yandex_side(name: str, url: str, token: str, root: str) -> Side:
    import yadisk

    origin = url.removesuffix("/v1/disk")

    async def read_all(ct: str) -> dict[str, str]:
        prefix = f"disk:{root}/{ct}/acme/"
        saved, yadisk.settings.BASE_API_URL = yadisk.settings.BASE_API_URL, origin  # yadisk reads it per request
        try:
            async with yadisk.AsyncClient(token=token, session="aiohttp") as client:
                paths = [f.path async for f in client.get_files(limit=1000) if f.path and f.path.startswith(prefix)]
                out: dict[str, str] = {}
                limit = anyio.Semaphore(8)

                async def one(path: str) -> None:
                    async with limit:
                        buf = io.BytesIO()
                        await client.download(path, buf)
                        out[path.removeprefix(prefix)] = buf.getvalue().decode()

                async with anyio.create_task_group() as tg:
                    for path in paths:
                        tg.start_soon(one, path)
                return out
        finally:
            yadisk.settings.BASE_API_URL = saved

    def read(ct: str) -> dict[str, str]:
        return anyio.run(read_all, ct)

    return Side(name, {"type": "yandex_disk", "token": token, "base_url": url, "root": root}, read)


@pytest.fixture(scope="module")
def disks() -> Iterator[tuple[str, str]]:
    """Two Yandex.Disk emulators (two accounts, two tokens) with latency, as processes of their own."""
    with emulator_process("--token", "token-x", "--latency", LATENCY) as x, \
            emulator_process("--token", "token-y", "--latency", LATENCY) as y:
        yield x, y


def _sides(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Side, Side]:
    if kind == "local":
        return _local_side("x", tmp_path / "x"), _local_side("y", tmp_path / "y")
    if kind == "s3":
        seaweed, bucket = request.getfixturevalue("seaweed"), request.getfixturevalue("s3_bucket")
        seaweed2, bucket2 = request.getfixturevalue("seaweed2"), request.getfixturevalue("bucket2")
        x = {"type": "s3", "endpoint": seaweed.endpoint, "bucket": bucket, "access_key_id": seaweed.access_key,
             "secret_access_key": seaweed.secret_key, "region": seaweed.region, "addressing_style": "path"}
        return (_s3_side("x", x, seaweed.boto3_client(), bucket),
                _s3_side("y", minio_conn(seaweed2, bucket2), seaweed2.boto3_client(), bucket2))
    url_x, url_y = request.getfixturevalue("disks")
    n = next(_roots)
    return (_yandex_side("x", url_x, "token-x", f"/platform-{os.getpid()}-{n}"),
            _yandex_side("y", url_y, "token-y", f"/platform-{os.getpid()}-{n}"))


# -- the platform ---------------------------------------------------------------------------------------
@dataclass
class Platform:
    tmp_path: Path
    x: Side
    y: Side
    company_id: int = 0
    writers: list[Writer] = field(default_factory=list)
    #: options that slow a migration's copy down enough for the writer to overlap it
    pace: tuple[str, ...] = ()
    #: migrations that ended as expected but exited with another status than 0
    bad_exits: list[str] = field(default_factory=list)

    @property
    def cfg(self) -> Path:
        return self.tmp_path / "storage_config.json"

    @property
    def db(self) -> Path:
        return self.tmp_path / "platform.db"

    @property
    def env(self) -> dict[str, str]:
        return {"VERTEXFLOW_DB": str(self.db), "VERTEXFLOW_STORAGE_CONFIG": str(self.cfg)}

    def side(self, name: str) -> Side:
        return {"x": self.x, "y": self.y}[name]

    def writer(self, seed: int, initial: dict[str, dict[str, str | None]]) -> Writer:
        w = Writer(self.tmp_path / f"writer-{seed}", config=self.cfg, db=self.db, company_id=self.company_id,
                   content_types=CONTENT_TYPES, categories=CATEGORIES, seed=seed, initial=initial,
                   frozen=(f"{ARCHIVE}/", *BIG))
        self.writers.append(w)
        w.wait_ready()
        return w

    def migrate(self, to: str, *args: str, expect: str = "switched") -> dict[str, Any]:
        r = vf("migrate", "company", "acme", "--to", to, "--json", *CATEGORY_ARGS, *args, env=self.env, timeout=150)
        n = len(list(self.tmp_path.glob("migrate-*.out")))
        (self.tmp_path / f"migrate-{n}.out").write_text(r.out + "\n---- stderr\n" + r.err)
        assert r.out.strip(), r.err[-3000:]
        data = r.json()
        assert data["state"] == expect, (data["message"], r.err[-3000:])
        if r.code != 0:  # checked last (in check), so that a wrong status does not hide what else is wrong
            self.bad_exits.append(f"migrate --to {to} {' '.join(args)}: exit {r.code} although {expect}; "
                                  f"transfer {data.get('transfer')}; {_failures(r.err)}")
        return data

    def check(self, result: WriterResult, where: str) -> None:
        """Every acknowledged write readable with its last content, nothing deleted back, verify passes,
        the company routed to ``where``."""
        assert result.errors == [], result.errors[:3]
        assert result.uncertain == []
        assert result.read_errors == [], result.read_errors[:5]
        expected, deleted = result.expected(), result.deleted()
        with Registry.open(self.db) as reg:
            company = reg.company(self.company_id)
            assert company.storage_connection_id == reg.connection(where).id, company
            route = LiveState(reg).route(self.company_id)
            assert route.state is None and route.migration_id is None, route  # no dual writes, no fence
            assert reg.db.execute("SELECT COUNT(*) FROM vertexflow_inflight").fetchone()[0] == 0
            assert reg.db.execute("SELECT COUNT(*) FROM vertexflow_migration_dirty").fetchone()[0] == 0
        verify = vf("company", "verify", "acme", *CATEGORY_ARGS, env=self.env)
        assert verify.code == 0 and verify.out.strip() == "ok", (verify.out, verify.err)
        side = self.side(where)
        for ct in CONTENT_TYPES:  # the backend itself, read without vertexflow
            _same_files(f"{where} ({ct}, read directly)", side.read(ct), expected[ct])

        async def through_vertexflow() -> None:
            wrong: list[str] = []
            limit = anyio.Semaphore(8)

            async def read(adapter: Any, ct: str, key: str, want: str | None) -> None:
                async with limit:
                    try:
                        got: str | None = (await adapter.get_file(key)).decode()
                    except NotFound:
                        got = None
                    if got != want or (want is None and await adapter.file_exists(key)):
                        wrong.append(f"{ct}:{key}: {str(got)[:60]!r} != {str(want)[:60]!r}")

            async with StorageManager.open(self.cfg, self.db) as m:
                for ct in CONTENT_TYPES:
                    adapter = await m.get_company_adapter(self.company_id, ct)
                    listed = {i.key async for i in adapter.list_files()
                              if i.key.rsplit("/", 1)[-1] != FOLDER_MARKER}
                    assert listed == set(expected[ct]), (sorted(listed - set(expected[ct]))[:5],
                                                         sorted(set(expected[ct]) - listed)[:5])
                    async with anyio.create_task_group() as tg:
                        for key, content in expected[ct].items():
                            tg.start_soon(read, adapter, ct, key, content)
                        for key in deleted[ct]:
                            tg.start_soon(read, adapter, ct, key, None)
            assert wrong == [], f"{len(wrong)} files read wrong through vertexflow: {wrong[:5]}"

        anyio.run(through_vertexflow)
        assert self.bad_exits == [], self.bad_exits


def _failures(log: str) -> str:
    """The objects a command's log says failed, counted by reason, and the first of them."""
    failed = [e for e in (json.loads(line) for line in log.splitlines() if line.startswith("{"))
              if e.get("event") == "object failed"]
    reasons: dict[str, int] = {}
    for e in failed:
        reasons[e.get("reason", "?")] = reasons.get(e.get("reason", "?"), 0) + 1
    return f"objects failed by reason {reasons}" + (f", first: {failed[0].get('error')}" if failed else "")


def _same_files(where: str, got: dict[str, str], want: dict[str, str]) -> None:
    missing = sorted(set(want) - set(got))
    back = sorted(set(got) - set(want))
    stale = sorted(k for k in set(got) & set(want) if got[k] != want[k])
    assert not (missing or back or stale), (f"{where}: {len(missing)} acknowledged writes missing {missing[:5]}, "
                                            f"{len(back)} files that should not be there {back[:5]}, "
                                            f"{len(stale)} not at their last content {stale[:5]}")


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3), "yandex"])
def platform(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Platform]:
    """The company acme on X, provisioned, with its initial files; Y empty."""
    x, y = _sides(request.param, tmp_path, request)
    # the emulator's latency alone makes a copy last
    p = Platform(tmp_path, x, y, pace=() if request.param == "yandex" else ("--bwlimit", BWLIMIT))
    p.cfg.write_text(json.dumps({**{ct: {"storage_type": "local"} for ct in CONTENT_TYPES},
                                 "local": {"base_path": str(tmp_path / "files")},
                                 "connections": {"x": x.conn, "y": y.conn}}))

    async def fill() -> int:
        async with StorageManager.open(p.cfg, p.db) as m:
            reg = m.require_registry()
            placement, _ = resolve_target(m, Company(0, "acme", None, Placement("default", None)), "x")
            acme = reg.add_company("acme", storage_type=placement.storage_type,
                                   storage_connection_id=placement.storage_connection_id)
            await m.provision_company_storage(acme.id, [*CATEGORIES, ARCHIVE])
            limit = anyio.Semaphore(8)

            async def save(ct: str, key: str, content: str) -> None:
                async with limit:
                    await m.save_file(ct, key, content.encode(), company_id=acme.id)

            async with anyio.create_task_group() as tg:
                for ct, files in _initial().items():
                    for key, content in files.items():
                        tg.start_soon(save, ct, key, content)
            return acme.id

    p.company_id = anyio.run(fill)
    try:
        yield p
    finally:
        for w in p.writers:
            w.kill()


# -- the scenarios ----------------------------------------------------------------------------------------
def test_live_migration(platform: Platform) -> None:
    w = platform.writer(1, _initial())
    try:
        platform.migrate("y", "--live", *platform.pace)
        w.wait_ops(10)  # writes after the switch
    finally:
        result = w.stop()
    assert result.ops_on("dual(") >= 3 and result.ops_on("y:") >= 5, result.where
    platform.check(result, "y")


def test_filtered_migration_then_the_rest(platform: Platform) -> None:
    w = platform.writer(2, _initial())
    try:
        staged = platform.migrate("y", "--live", *platform.pace, "--exclude", f"{ARCHIVE}/**",
                                  expect="staged")
        assert staged["left_out"] > 0 and "To complete the move" in staged["message"]
        w.wait_ops(10)  # writes after the staged copy: to X alone
    finally:
        first = w.stop()
    assert first.ops_on("dual(") >= 3 and first.ops_on("x:") >= 5, first.where
    platform.check(first, "x")  # a staged copy moves nothing: every file of the company is on X

    # the command the staged copy named, while the platform writes again (Y holds what the filter selected,
    # as it was then: since, the writer overwrote and deleted some of it on X)
    w = platform.writer(3, first.state)
    try:
        platform.migrate("y", "--live", *platform.pace)
        w.wait_ops(10)
    finally:
        second = w.stop()
    assert second.ops_on("dual(") >= 3 and second.ops_on("y:") >= 5, second.where
    platform.check(second, "y")


def test_rollback(platform: Platform) -> None:
    initial = _initial()

    async def away() -> None:
        async with StorageManager.open(platform.cfg, platform.db) as m:
            assert (await migrate_company(m, platform.company_id, "y")).state == "switched"
            for key in BIG:  # changed on Y since the switch: the sync back has bytes to move
                initial["portraits"][key] = BIG[key].replace("big", "BIG", 1)
                await m.save_file("portraits", key, initial["portraits"][key].encode(),
                                  company_id=platform.company_id)

    anyio.run(away)
    w = platform.writer(4, initial)
    try:
        w.wait_ops(10)  # on Y alone
        r = vf("migrate", "rollback", "acme", *platform.pace, "--json", env=platform.env, timeout=150)
        (platform.tmp_path / "rollback.out").write_text(r.out + "\n---- stderr\n" + r.err)
        assert r.code == 0, (r.json()["message"], _failures(r.err))
        assert r.json()["state"] == "rolled_back" and r.json()["copied"] >= len(BIG), r.json()
        w.wait_ops(10)  # on X again
    finally:
        result = w.stop()
    assert result.ops_on("y:") >= 5 and result.ops_on("dual(") >= 3 and result.ops_on("x:") >= 5, result.where
    platform.check(result, "x")


def test_migration_back_to_a_backend_used_before(platform: Platform) -> None:
    w = platform.writer(5, _initial())
    try:
        platform.migrate("y", "--live", *platform.pace)
        w.wait_ops(30)  # the company works on Y: creates, overwrites, deletes
    finally:
        away = w.stop()
    platform.check(away, "y")
    # X still holds the copy the company left: with files it no longer has, and files at older content
    left = platform.x.read("portraits") | {f"videos/{k}": v for k, v in platform.x.read("videos").items()}
    now = away.expected()["portraits"] | {f"videos/{k}": v for k, v in away.expected()["videos"].items()}
    assert set(left) - set(now), "the writer deleted none of the files X holds"
    assert any(left[k] != now[k] for k in set(left) & set(now)), "the writer overwrote none of the files X holds"

    w = platform.writer(6, away.state)
    try:
        platform.migrate("x", "--live", *platform.pace)
        w.wait_ops(10)
    finally:
        back = w.stop()
    assert back.ops_on("dual(") >= 3 and back.ops_on("x:") >= 5, back.where
    platform.check(back, "x")


def test_killed_migrator_then_rerun(platform: Platform) -> None:
    w = platform.writer(7, _initial())
    try:
        log = platform.tmp_path / "killed-migrator.log"
        with open(log, "wb") as out:
            first = subprocess.Popen([sys.executable, "-m", "vertexflow", "migrate", "company", "acme", "--to", "y",
                                      "--live", "--bwlimit", "100k", "--transfers", "1"],
                                     stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **platform.env})
        try:
            _wait_copying(platform, first, log)
            time.sleep(0.8)  # into the copy of the big files (about 2.5 s at this limit)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        status = vf("migrate", "status", "acme", "--json", env=platform.env)
        mig = status.json()["migration"]
        # killed in the middle: copying as a rule (a loaded machine may get it to the verification or the fence)
        assert mig["state"] == "stale" and mig["recorded_state"] in ("copying", "verifying", "closing"), (
            mig["state"], mig.get("recorded_state"), mig["message"], mig.get("lease"))
        w.wait_ops(10)  # the migrator is dead: the platform keeps dual-writing
        data = platform.migrate("y", "--live")
        assert data["taken_over"] == [mig["id"]], data
        w.wait_ops(10)
    finally:
        result = w.stop()
    assert result.ops_on("dual(") >= 5 and result.ops_on("y:") >= 5, result.where
    platform.check(result, "y")
    with Registry.open(platform.db) as reg:
        old, new = reg.migrations(platform.company_id)
        assert old.state == "failed" and f"taken over by migration {new.id}" in (old.message or "")
        assert new.state == "switched"


def _wait_copying(platform: Platform, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    """Until the live migration's dual writes have begun."""
    deadline = time.monotonic() + timeout
    with Registry.open(platform.db) as reg:
        while LiveState(reg).route(platform.company_id).state != "copying":
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the migration did not start copying"
            time.sleep(0.02)
