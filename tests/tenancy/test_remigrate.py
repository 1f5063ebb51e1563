"""Migrating a company back to a backend it used before, and cleaning up the copy a company left behind."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from vertexflow.errors import ConfigError
from vertexflow.ops.migrate import migrate_company
from vertexflow.tenancy import StorageManager
from vertexflow.testing.yandex_disk import YandexDiskEmulator

from ..cli.helpers import vf
from .conftest import TOKEN, make_manager

FILES = {f"cat{c}/{sub}/f{i}.bin": f"{c}-{sub}-{i}".encode() * 40
         for c in range(2) for sub in ("Image", "QR") for i in range(3)}


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` read with plain file reads (the independent check of local disk)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _raw(tmp_path: Path) -> dict:
    return {"portraits": {"storage_type": "local"}, "local": {"base_path": str(tmp_path / "files")},
            "connections": {"nas": {"type": "local", "path": str(tmp_path / "nas")}}}


async def _away_and_changed(m: StorageManager, company_id: int) -> dict[str, bytes]:
    """The company moves to nas and works there: a file deleted, one overwritten, one created."""
    for key, data in FILES.items():
        await m.save_file("portraits", key, data, company_id=company_id)
    assert (await migrate_company(m, company_id, "nas")).state == "switched"
    await m.delete_file("portraits", "cat0/Image/f1.bin", company_id=company_id)
    await m.save_file("portraits", "cat1/QR/f0.bin", b"changed on nas", company_id=company_id)
    await m.save_file("portraits", "cat1/Image/new.bin", b"new on nas", company_id=company_id)
    expected = {**FILES, "cat1/QR/f0.bin": b"changed on nas", "cat1/Image/new.bin": b"new on nas"}
    del expected["cat0/Image/f1.bin"]
    return expected


async def test_migrating_back_deletes_what_the_company_no_longer_has(tmp_path: Path) -> None:
    async with make_manager(tmp_path, _raw(tmp_path)) as m:
        acme = m.registry.add_company("acme")
        expected = await _away_and_changed(m, acme.id)
        old_copy = tmp_path / "files/portraits/acme"
        assert (old_copy / "cat0/Image/f1.bin").exists()  # the copy left behind holds the deleted file

        dry = await migrate_company(m, acme.id, "local", dry_run=True)
        assert dry.state == "dry_run"
        [plan] = [p for p in dry.plan if p.content_type == "portraits"]
        assert plan.as_dict()["extras"] == 1 and plan.as_dict()["first_extras"] == ["cat0/Image/f1.bin"]
        assert (old_copy / "cat0/Image/f1.bin").exists()  # a dry run deletes nothing

        with pytest.raises(ConfigError, match=r"would delete 1 files .* no longer has .*--max-delete 0"):
            await migrate_company(m, acme.id, "local", max_delete=0)
        assert m.registry.company(acme.id).storage_connection_id is not None  # still on nas
        assert (old_copy / "cat0/Image/f1.bin").exists()

        result = await migrate_company(m, acme.id, "local", max_delete=1)
        assert result.state == "switched", result.message
        assert result.deleted == 1
        [back] = [p.as_dict() for p in result.plan if p.content_type == "portraits"]
        assert back["deleted"] == 1 and back["verified"] == len(expected)
        assert {k: v for k, v in _tree(old_copy).items() if not k.endswith(".keep")} == expected
        report = m.registry.migration(result.migration_id).report
        assert report["deleted"] == 1 and report["plan"][0]["first_extras"] == ["cat0/Image/f1.bin"]


def _cli_env(tmp_path: Path) -> dict[str, str]:
    cfg = tmp_path / "storage_config.json"
    cfg.write_text(json.dumps(_raw(tmp_path)))
    return {"VERTEXFLOW_DB": str(tmp_path / "platform.db"), "VERTEXFLOW_STORAGE_CONFIG": str(cfg)}


async def test_cli_migrating_back_is_bounded_by_max_delete_and_shown(tmp_path: Path) -> None:
    env = _cli_env(tmp_path)
    async with StorageManager.open(env["VERTEXFLOW_STORAGE_CONFIG"], env["VERTEXFLOW_DB"]) as m:
        acme = m.registry.add_company("acme")
        expected = await _away_and_changed(m, acme.id)
    r = vf("migrate", "company", "acme", "--to", "local", "--dry-run", env=env)
    assert r.code == 0, r.err
    assert "1 files on the target the company no longer has" in r.out and "to delete: cat0/Image/f1.bin" in r.out
    r = vf("migrate", "company", "acme", "--to", "local", "--max-delete", "0", "--json", env=env)
    assert r.code == 2 and "would delete 1 files" in r.err and "--max-delete 1" in r.err, (r.out, r.err)
    assert (tmp_path / "files/portraits/acme/cat0/Image/f1.bin").exists()
    r = vf("migrate", "company", "acme", "--to", "local", "--json", env=env)
    assert r.code == 0, r.err
    data = r.json()
    assert data["state"] == "switched" and data["deleted"] == 1
    show = vf("migrate", "show", str(data["migration_id"]), "--json", env=env).json()
    [portraits] = [p for p in show["report"]["plan"] if p["content_type"] == "portraits"]
    assert portraits["deleted"] == 1 and portraits["verified"] == len(expected) and portraits["copied"] >= 2
    text = vf("migrate", "show", str(data["migration_id"]), env=env).out
    assert f"migration {data['migration_id']}: company acme  nas -> local  switched" in text
    assert f"verified {len(expected)}" in text and "deleted 1" in text


def test_cleanup_removes_the_copy_left_behind_and_never_a_route(tmp_path: Path) -> None:
    env = _cli_env(tmp_path)

    async def setup() -> None:
        async with StorageManager.open(env["VERTEXFLOW_STORAGE_CONFIG"], env["VERTEXFLOW_DB"]) as m:
            acme, beta = m.registry.add_company("acme"), m.registry.add_company("beta")
            for key, data in FILES.items():
                await m.save_file("portraits", key, data, company_id=acme.id)
                await m.save_file("portraits", key, data, company_id=beta.id)

    import anyio

    anyio.run(setup)
    assert vf("migrate", "company", "acme", "--to", "nas", env=env).code == 0
    old_copy, current = tmp_path / "files/portraits/acme", tmp_path / "nas/portraits/acme"
    # in its grace period: refused, nothing deleted, and the next step is printed
    r = vf("migrate", "cleanup", "1", env=env)
    assert r.code == 2 and "kept for 7.0 days" in r.err and "--grace 0" in r.err, r.err
    r = vf("migrate", "cleanup", "1", "--dry-run", "--json", env=env)
    assert r.code == 0 and r.json()["state"] == "dry_run", r.err
    [loc] = r.json()["locations"]
    assert loc["files"] == len(FILES) and loc["deleted"] == 0 and "grace period ends in" in r.json()["message"]
    assert len(_tree(old_copy)) >= len(FILES)

    r = vf("migrate", "cleanup", "1", "--grace", "0", env=env)
    assert r.code == 0, r.err
    assert f"deleted {len(FILES)} files of company acme on default (local:portraits/acme)" in r.out
    assert not old_copy.exists()  # the files and their emptied folders
    assert {k: v for k, v in _tree(current).items() if not k.endswith(".keep")} == FILES  # the route: untouched
    assert _tree(tmp_path / "files/portraits/beta") == FILES  # another company on that backend: untouched
    assert "cleanup" in vf("migrate", "show", "1", env=env).out

    # back on local, migration 1's left-behind side is the company's route again: kept, and it says why
    assert vf("migrate", "company", "acme", "--to", "local", env=env).code == 0
    r = vf("migrate", "cleanup", "1", "--grace", "0", "--json", env=env)
    assert r.code == 0, r.err
    assert r.json()["deleted"] == 0 and r.json()["locations"][0]["skipped"] == "the current route of this company"
    assert {k: v for k, v in _tree(old_copy).items() if not k.endswith(".keep")} == FILES
    # migration 2 left the copy on nas: that one goes
    r = vf("migrate", "cleanup", "2", "--grace", "0", env=env)
    assert r.code == 0 and not current.exists(), r.err
    assert vf("company", "verify", "acme", "--category", "cat0", env=env).code == 0


async def test_cleanup_of_a_migration_that_did_not_switch_removes_its_partial_copy(tmp_path: Path) -> None:
    from vertexflow.ops.migrate_cleanup import cleanup_migration

    async with make_manager(tmp_path, _raw(tmp_path)) as m:
        acme = m.registry.add_company("acme")
        for key, data in FILES.items():
            await m.save_file("portraits", key, data, company_id=acme.id)
        staged = await migrate_company(m, acme.id, "nas", filt=_only_qr())
        assert staged.state == "staged" and (tmp_path / "nas/portraits/acme").exists()
        with pytest.raises(ConfigError, match="kept for"):
            await cleanup_migration(m, staged.migration_id)
        result = await cleanup_migration(m, staged.migration_id, grace=0)
        assert result.copy_of == "target" and result.deleted == staged.copied > 0
        assert not (tmp_path / "nas/portraits/acme").exists()
        assert _tree(tmp_path / "files/portraits/acme") == FILES  # where the company is: untouched
        record = m.registry.migration(staged.migration_id)
        assert record.state == "staged" and record.report["cleanup"]["deleted"] == result.deleted
        # a migration in progress is refused, whichever record is named
        m.registry.start_migration(acme.id, {"storage_type": "default", "storage_connection_id": None},
                                   {"storage_type": "local", "storage_connection_id": None}, live=False)
        with pytest.raises(ConfigError, match="in progress"):
            await cleanup_migration(m, staged.migration_id, grace=0)


def _only_qr():
    from vertexflow.filters import Filter

    return Filter(include=("*/QR/*",))


@pytest.mark.parametrize("to", ["nas", "yandex_disk"])
async def test_empty_provisioned_folders_move_with_the_company(tmp_path: Path, emulator: YandexDiskEmulator,
                                                               to: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A category provisioned but still empty is part of the company's layout: the migration carries it."""
    import yadisk

    raw = {**_raw(tmp_path), "yandex_disk": {"enabled": True, "token": TOKEN, "base_url": emulator.base_url}}
    async with make_manager(tmp_path, raw) as m:
        acme = m.registry.add_company("acme")
        await m.provision_company_storage(acme.id, ["cats", "newcat"])
        await m.save_file("portraits", "cats/Image/a.jpg", b"jpeg", company_id=acme.id)
        assert (await migrate_company(m, acme.id, to)).state == "switched"
        report = await m.verify_company_storage(acme.id, ["cats", "newcat"])
        assert report.missing == []
        # and back again, from folders that exist only as folders on the source
        assert (await migrate_company(m, acme.id, "local")).state == "switched"
        assert (tmp_path / "files/portraits/acme/newcat/nft_markers").is_dir()
    if to == "yandex_disk":  # checked with an independent client (yadisk builds its URLs from BASE_API_URL)
        monkeypatch.setattr(yadisk.settings, "BASE_API_URL", emulator.origin)
        async with yadisk.AsyncClient(token=TOKEN, session="aiohttp") as client:
            assert await client.is_dir("/portraits/acme/newcat/QR")


async def test_a_connections_own_bwlimit_paces_the_migration_to_it(tmp_path: Path) -> None:
    """``connections.<name>.bwlimit`` in storage_config.json holds for a migration without --bwlimit."""
    raw = _raw(tmp_path)
    raw["connections"]["nas"]["bwlimit"] = "100k"
    async with make_manager(tmp_path, raw) as m:
        acme = m.registry.add_company("acme")
        for i in range(4):
            await m.save_file("portraits", f"cats/Image/{i}.bin", bytes([i]) * 100 * 1024, company_id=acme.id)
        started = time.monotonic()
        assert (await migrate_company(m, acme.id, "nas")).state == "switched"
        # 400 KiB at 100 KiB/s: about 4 s (a burst of about a second is allowed); unpaced it takes milliseconds
        assert time.monotonic() - started >= 2.5
    bad = _raw(tmp_path)
    bad["connections"]["nas"]["bwlimit"] = "fast"
    with pytest.raises(ConfigError, match=r"connections\.nas.*bwlimit"):
        make_manager(tmp_path, bad)


@pytest.mark.s3
async def test_a_migration_keeps_and_checks_what_describes_each_file(tmp_path: Path, seaweed, s3_bucket: str,  # type: ignore[no-untyped-def]
                                                                    seaweed2, bucket2: str) -> None:
    """Content-Type, headers and user metadata move with a company (bulk copy and reconciled keys alike),
    and the migration's verification compares them: one lost on the target is sent again."""
    import boto3

    from vertexflow.tenancy.dual_write import reconcile_key

    from .conftest import minio_conn

    minio_a = minio_conn(seaweed, s3_bucket)
    del minio_a["type"]
    raw = {"portraits": {"storage_type": "minio"}, "minio": minio_a,
           "connections": {"minio-b": minio_conn(seaweed2, bucket2)}}
    a = boto3.client("s3", endpoint_url=seaweed.endpoint, aws_access_key_id=seaweed.access_key,
                     aws_secret_access_key=seaweed.secret_key, region_name=seaweed.region)
    b = boto3.client("s3", endpoint_url=seaweed2.endpoint, aws_access_key_id=seaweed2.access_key,
                     aws_secret_access_key=seaweed2.secret_key, region_name=seaweed2.region)
    described = {"ContentType": "video/mp4", "CacheControl": "max-age=3600", "Metadata": {"owner": "company-7"}}
    for i in range(3):
        a.put_object(Bucket=s3_bucket, Key=f"portraits/acme/cats/Image/v{i}.mp4", Body=b"mp4" * 100, **described)
    async with make_manager(tmp_path, raw) as m:
        acme = m.registry.add_company("acme")
        old = m.adapter_for(m.target(m.registry.company(acme.id), "portraits"))
        placement = m.registry.company(acme.id).placement
        from vertexflow.ops.migrate import resolve_target

        target, _ = resolve_target(m, m.registry.company(acme.id), "minio-b")
        new = m.adapter_for(m.target(m.registry.company(acme.id), "portraits", target))
        try:  # a dirty key reconciled during a live migration keeps its description
            assert await reconcile_key(old, new, "cats/Image/v0.mp4") == "copied"
        finally:
            await old.aclose()
            await new.aclose()
        head = b.head_object(Bucket=bucket2, Key="portraits/acme/cats/Image/v0.mp4")
        assert (head["ContentType"], head["CacheControl"], head["Metadata"]["owner"]) == (
            "video/mp4", "max-age=3600", "company-7")
        # a copy on the target with the right bytes but no description: the verification finds it and fixes it
        b.put_object(Bucket=bucket2, Key="portraits/acme/cats/Image/v1.mp4", Body=b"mp4" * 100,
                     ContentType="text/plain")
        result = await migrate_company(m, acme.id, "minio-b")
        assert result.state == "switched", result.message
        assert placement != m.registry.company(acme.id).placement
    for i in range(3):
        head = b.head_object(Bucket=bucket2, Key=f"portraits/acme/cats/Image/v{i}.mp4")
        assert (head["ContentType"], head["CacheControl"], head["Metadata"].get("owner")) == (
            "video/mp4", "max-age=3600", "company-7"), i


def test_a_migration_ends_with_a_smoke_check_of_the_new_route(tmp_path: Path) -> None:
    env = _cli_env(tmp_path)
    assert vf("company", "add", "acme", env=env).code == 0
    assert vf("company", "provision", "acme", "--category", "cats", env=env).code == 0
    (tmp_path / "files/portraits/acme/cats/Image/a.jpg").write_bytes(b"jpeg" * 100)
    r = vf("migrate", "company", "acme", "--to", "nas", env=env)
    assert r.code == 0 and "smoke check of the new route: every step passed" in r.out, (r.out, r.err)
    record = json.loads(vf("migrate", "show", "1", "--json", env=env).out)
    steps = record["report"]["smoke"]["steps"]
    assert record["report"]["smoke"]["ok"] and {s["step"] for s in steps} >= {"upload", "read", "delete"}, steps
    assert not [p for p in (tmp_path / "nas").rglob(".vertexflow-smoke-*")]  # the test file is gone
    # a route that cannot be written: the switch stands (the files are verified), the exit status says it
    (tmp_path / "files/portraits/acme").chmod(0o500)
    try:
        r = vf("migrate", "rollback", "acme", "--no-sync-back", "--json", env=env)
    finally:
        (tmp_path / "files/portraits/acme").chmod(0o700)
    if os.geteuid() != 0:  # root writes anyway: the failing half checks only as another user
        assert r.code == 1 and not r.json()["smoke"]["ok"], (r.out, r.err)
    else:
        assert r.code == 0 and r.json()["smoke"]["ok"], (r.out, r.err)
    r = vf("migrate", "company", "acme", "--to", "nas", "--no-smoke", "--json", env=env)
    assert r.code == 0 and r.json()["smoke"] is None, r.err


async def test_cleanup_on_s3_deletes_in_batches(tmp_path: Path, seaweed, s3_bucket: str) -> None:  # type: ignore[no-untyped-def]
    """What a staged migration left on an S3 target goes in one DeleteObjects a thousand files, counted on
    the wire (the fault proxy passing everything through), and is gone by boto3's listing."""
    from vertexflow.ops.migrate_cleanup import cleanup_migration
    from vertexflow.testing.faults import FaultProxy

    from .conftest import minio_conn

    async with FaultProxy(int(seaweed.endpoint.rsplit(":", 1)[1]), seed=1, rates={}) as proxy:
        conn = {**minio_conn(seaweed, s3_bucket), "endpoint": proxy.endpoint.removeprefix("http://")}
        raw = {**_raw(tmp_path), "connections": {"s3b": conn}}
        many = {f"cat0/QR/q{i:03d}.bin": b"q%d" % i for i in range(40)}
        async with make_manager(tmp_path, raw) as m:
            acme = m.registry.add_company("acme")
            for key, data in {**FILES, **many}.items():
                await m.save_file("portraits", key, data, company_id=acme.id)
            staged = await migrate_company(m, acme.id, "s3b", filt=_only_qr(), smoke=False)
            assert staged.state == "staged" and staged.copied == sum("/QR/" in k for k in FILES) + len(many)
            before = len(proxy.identities)
            result = await cleanup_migration(m, staged.migration_id, grace=0)
            assert result.deleted >= staged.copied  # and the folder markers the migration made
            sent = proxy.identities[before:]
    batches = [i for i in sent if i.startswith("POST ") and "?delete" in i]
    assert len(batches) == 1 and not [i for i in sent if i.startswith("DELETE ")], sent
    left = seaweed.boto3_client().list_objects_v2(Bucket=s3_bucket, Prefix="portraits/acme/")
    assert left.get("KeyCount", 0) == 0, left.get("Contents")
