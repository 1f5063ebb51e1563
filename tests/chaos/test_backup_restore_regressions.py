"""``backup restore`` S3 -> local under the faults the chaos rounds met (issue 25), each on chosen requests.

A backup is made straight to the suite's SeaweedFS; the restore reads it
through a :class:`~vertexflow.testing.faults.FaultProxy` whose ``force``
picks the requests that meet a fault (a request's identity names the backup
``vertexflow-storage-ID``). A flipped byte is a fault of the way, not of
the backup: the read is made again and the restore finishes in its first
run. A backup damaged in the store is still refused, after one more read.
What was restored is read back with hashlib.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from vertexflow.testing.faults import ThreadedFaultProxy
from vertexflow.testing.killer import Run, check_exit_status, local_tree, run_cli
from vertexflow.testing.seaweedfs import SeaweedFS

pytestmark = [pytest.mark.s3]

#: members of the backed-up tree: small files and random (incompressible) ones over several 1 MiB parts
SIZES = {"a.txt": 10, "one.txt": 3000, "dir/b.bin": 900_000, "dir/sub/c.bin": 1_300_000, "d.bin": 700_000,
         "empty.txt": 0}


@pytest.fixture
def backup(seaweed: SeaweedFS, s3_bucket: str, tmp_path: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    """A storage backup of a tree made straight to the server: (its location, its id, the tree's SHA-256s)."""
    src = tmp_path / "src"
    rng = random.Random("backup-restore-regressions")
    tree = {}
    for key, size in SIZES.items():
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        data = rng.randbytes(size)
        (src / key).write_bytes(data)
        tree[key] = hashlib.sha256(data).hexdigest()
    to = f"s3://{s3_bucket}/bk"
    made = run_cli(["backup", "create", "--type", "storage", "--storage", str(src), "--to", to,
                    "--chunk-size", "1M", "--json", "--no-progress"], _env(seaweed, seaweed.endpoint, tmp_path),
                   timeout=120)
    assert made.code == 0, made.err
    summary = made.summary()
    assert summary is not None
    yield to, summary["backup"], tree


def _env(server: SeaweedFS, endpoint: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VERTEXFLOW_"))}
    env.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID=server.access_key,
               AWS_SECRET_ACCESS_KEY=server.secret_key, AWS_REGION=server.region,
               VERTEXFLOW_JOURNAL=str(tmp_path / "journal.db"), HOME=str(tmp_path))
    return env


def _restore(server: SeaweedFS, tmp_path: Path, to: str, bid: str, force: dict[str, str], *,
             command: str = "restore") -> tuple[Run, dict[str, int], list[str]]:
    """``backup restore`` (or ``verify``) through a proxy forcing ``force``: the run, the faults injected, the
    requests asked."""
    port = int(server.endpoint.rsplit(":", 1)[1])
    target = ["--target-storage", str(tmp_path / "dst")] if command == "restore" else []
    with ThreadedFaultProxy(port, seed=0, rates={}, force=force, stall_seconds=1.0, delay_seconds=0.5,
                            retry_after=0) as tp:
        run = run_cli(["backup", command, f"{to}/{bid}", *target, "--json", "--no-progress"],
                      _env(server, tp.proxy.endpoint, tmp_path), timeout=120)
        return run, dict(tp.proxy.counts), list(tp.proxy.identities)


def _get(bucket: str, name: str, n: int) -> str:
    """The identity of the ``n``-th GET (from 0) of the backup's object ``name``."""
    return f"GET /{bucket}/bk/vertexflow-storage-ID/{name}?#{n}"


def _gets(asked: list[str], name: str) -> int:
    return sum(1 for a in asked if a.startswith("GET ") and a.split("?")[0].endswith(f"/{name}"))


def _parts(server: SeaweedFS, bucket: str, bid: str) -> list[str]:
    listed = server.boto3_client().list_objects_v2(Bucket=bucket, Prefix=f"bk/{bid}/")
    return sorted(k for item in listed.get("Contents", ()) if ".part" in (k := item["Key"].rsplit("/", 1)[1]))


def _restored_whole(run: Run, tmp_path: Path, tree: dict[str, str], faults: dict[str, int], asked: list[str],
                    injected: dict[str, int]) -> None:
    assert faults == injected, (faults, asked)
    assert check_exit_status(run, {0}, summary_kind="none") == [], (run.err, asked)
    assert "restore an older one" not in run.err
    assert local_tree(tmp_path / "dst") == tree
    summary = run.summary()
    assert summary is not None and summary["files"] == len(tree) and summary["bytes"] == sum(SIZES.values())


# backup_restore seed 5: a byte of the answer to the GET of metadata.json flipped on the way; the S3 read
# compared it with the MD5 the server gave (IntegrityError) and the restore called the backup damaged
# ("restore an older one", exit 1) where reading it again restores it
def test_chaos_seed_backup_restore_5(seaweed: SeaweedFS, s3_bucket: str, tmp_path: Path,
                                     backup: tuple[str, str, dict[str, str]]) -> None:
    to, bid, tree = backup
    run, faults, asked = _restore(seaweed, tmp_path, to, bid, {_get(s3_bucket, "metadata.json", 0): "flip"})
    _restored_whole(run, tmp_path, tree, faults, asked, {"flip": 1})
    assert _gets(asked, "metadata.json") == 2


# backup_restore seed 6: the same for SHA256SUMS (read with metadata.json, both read again); in the seed's run
# the reads after it met a delay, a 503 and a reset, taken here in the order they fall on the re-read
def test_chaos_seed_backup_restore_6(seaweed: SeaweedFS, s3_bucket: str, tmp_path: Path,
                                     backup: tuple[str, str, dict[str, str]]) -> None:
    to, bid, tree = backup
    force = {_get(s3_bucket, "SHA256SUMS", 0): "flip", _get(s3_bucket, "SHA256SUMS", 1): "delay",
             _get(s3_bucket, "MEMBERS.sha256", 0): "error", _get(s3_bucket, "MEMBERS.sha256", 1): "reset_response"}
    run, faults, asked = _restore(seaweed, tmp_path, to, bid, force)
    _restored_whole(run, tmp_path, tree, faults, asked,
                    {"flip": 1, "delay": 1, "error": 1, "reset_response": 1})
    assert _gets(asked, "metadata.json") == 2 and _gets(asked, "SHA256SUMS") == 2


# backup_restore seed 10: metadata.json flipped, and its next GETs answered 503, then reset mid-body: the
# re-read goes through the S3 read's own retries and brings the document whole
def test_chaos_seed_backup_restore_10(seaweed: SeaweedFS, s3_bucket: str, tmp_path: Path,
                                      backup: tuple[str, str, dict[str, str]]) -> None:
    to, bid, tree = backup
    force = {_get(s3_bucket, "metadata.json", 0): "flip", _get(s3_bucket, "metadata.json", 1): "error",
             _get(s3_bucket, "metadata.json", 2): "reset_response@0.5"}
    run, faults, asked = _restore(seaweed, tmp_path, to, bid, force)
    _restored_whole(run, tmp_path, tree, faults, asked, {"flip": 1, "error": 1, "reset_response": 1})
    assert _gets(asked, "metadata.json") == 4


@pytest.mark.parametrize("name", ["MEMBERS.sha256", "MEMBERS.jsonl"])
def test_member_list_flipped_on_the_way_is_read_again(seaweed: SeaweedFS, s3_bucket: str, tmp_path: Path,
                                                       backup: tuple[str, str, dict[str, str]], name: str) -> None:
    to, bid, tree = backup
    run, faults, asked = _restore(seaweed, tmp_path, to, bid, {_get(s3_bucket, name, 0): "flip"})
    _restored_whole(run, tmp_path, tree, faults, asked, {"flip": 1})
    assert _gets(asked, name) == 2


# the parts are read twice by a sound restore (checked, then written): a flip in the first read makes the check
# start again; in the second, the members already written stay, and the rest is read again and written
@pytest.mark.parametrize(("which", "n", "reads"), [("first", 0, 3), ("last", 1, 3)],
                         ids=["first-part-while-checking", "last-part-while-writing"])
def test_part_flipped_on_the_way_is_read_again(seaweed: SeaweedFS, s3_bucket: str, tmp_path: Path,
                                               backup: tuple[str, str, dict[str, str]], which: str, n: int,
                                               reads: int) -> None:
    to, bid, tree = backup
    parts = _parts(seaweed, s3_bucket, bid)
    assert len(parts) >= 3, parts
    part = parts[0] if which == "first" else parts[-1]
    run, faults, asked = _restore(seaweed, tmp_path, to, bid, {_get(s3_bucket, part, n): "flip"})
    _restored_whole(run, tmp_path, tree, faults, asked, {"flip": 1})
    assert _gets(asked, part) == reads
    assert not [p for p in (tmp_path / "dst").rglob("*") if p.name.startswith(".")], "a temporary file is left"


# a backup damaged in the store is not a fault of the way: refused as before (exit 1, the object named, the
# advice to restore an older one, nothing written), after exactly one more read
def test_metadata_damaged_in_the_store_is_refused_after_one_more_read(
        seaweed: SeaweedFS, s3_bucket: str, tmp_path: Path, backup: tuple[str, str, dict[str, str]]) -> None:
    to, bid, _ = backup
    client = seaweed.boto3_client()
    key = f"bk/{bid}/SHA256SUMS"
    body = bytearray(client.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    # another hex digit in the first sum: still a well-formed file, no longer agreeing with the metadata
    body[10] = ord("0") if body[10] != ord("0") else ord("1")
    client.put_object(Bucket=s3_bucket, Key=key, Body=bytes(body))
    run, faults, asked = _restore(seaweed, tmp_path, to, bid, {})
    assert faults == {}
    assert check_exit_status(run, {1}, summary_kind="none") == [], run.err
    assert "SHA256SUMS" in run.err and "restore an older one" in run.err and "nothing was written" in run.err
    assert _gets(asked, "metadata.json") == 2 and _gets(asked, "SHA256SUMS") == 2
    assert not (tmp_path / "dst").exists()


def _damage_part(server: SeaweedFS, bucket: str, bid: str) -> str:
    """One byte of the backup's second part changed in the store (boto3); the part's name."""
    client = server.boto3_client()
    part = _parts(server, bucket, bid)[1]
    key = f"bk/{bid}/{part}"
    body = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    client.put_object(Bucket=bucket, Key=key, Body=bytes(body))
    return part


def test_part_damaged_in_the_store_is_refused_after_one_more_read(
        seaweed: SeaweedFS, s3_bucket: str, tmp_path: Path, backup: tuple[str, str, dict[str, str]]) -> None:
    to, bid, _ = backup
    part = _damage_part(seaweed, s3_bucket, bid)
    run, faults, asked = _restore(seaweed, tmp_path, to, bid, {})
    assert check_exit_status(run, {1}, summary_kind="none") == [], run.err
    assert "restore an older one" in run.err and "nothing was written" in run.err
    assert _gets(asked, part) == 2  # pass 1, made twice; never written
    assert not (tmp_path / "dst").exists() or local_tree(tmp_path / "dst") == {}



# backup verify reads the parts once: a flip on the way was reported as a damaged part (exit 1, ok false)
def test_verify_reads_a_part_flipped_on_the_way_again(seaweed: SeaweedFS, s3_bucket: str, tmp_path: Path,
                                                      backup: tuple[str, str, dict[str, str]]) -> None:
    to, bid, tree = backup
    part = _parts(seaweed, s3_bucket, bid)[0]
    run, faults, asked = _restore(seaweed, tmp_path, to, bid, {_get(s3_bucket, part, 0): "flip"}, command="verify")
    assert faults == {"flip": 1}, asked
    assert check_exit_status(run, {0}, summary_kind="verify") == [], run.err
    report = run.summary()
    assert report is not None and report["ok"] and report["files"] == len(tree), report
    assert _gets(asked, part) == 2


def test_verify_reports_a_part_damaged_in_the_store_after_one_more_read(
        seaweed: SeaweedFS, s3_bucket: str, tmp_path: Path, backup: tuple[str, str, dict[str, str]]) -> None:
    to, bid, _ = backup
    part = _damage_part(seaweed, s3_bucket, bid)
    run, faults, asked = _restore(seaweed, tmp_path, to, bid, {}, command="verify")
    assert check_exit_status(run, {1}, summary_kind="verify") == [], run.err
    report = run.summary()
    assert report is not None and not report["ok"]
    where = [p["where"] for p in report["problems"]]
    assert part in where and len(where) == len(set(where)), report["problems"]  # the second read's, once each
    assert _gets(asked, part) == 2
