"""move, moveto and copyto, run as users run them: every object ends at the destination (read back with boto3,
yadisk or from disk) and leaves the source only once its copy is proven; a copy that differs keeps its source;
bad input touches nothing; a move killed outright (kill -9) at any moment loses no object."""

from __future__ import annotations

import json

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yadisk

from vertexflow.testing.sample_tree import make_tree
from vertexflow.testing.seaweedfs import SeaweedFS
from vertexflow.testing.yandex_disk.process import emulator_process

from .helpers import vf

TOKEN = "move-token-51c2"


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def s3_digests(client: object, bucket: str, prefix: str) -> dict[str, str]:
    out = {}
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)  # type: ignore[attr-defined]
    for page in pages:
        for o in page.get("Contents", ()):
            body = client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()  # type: ignore[attr-defined]
            out[o["Key"][len(prefix):]] = hashlib.sha256(body).hexdigest()
    return out


@pytest.mark.s3
def test_move_a_tree_to_s3_and_back(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str,
                                    seaweed: SeaweedFS) -> None:
    client = seaweed.boto3_client()
    src = tmp_path / "src"
    make_tree(src, files=40)
    (src / "hollow" / "inner").mkdir(parents=True)
    (src / "big.bin").write_bytes(os.urandom(12 * 1024 * 1024))  # multipart, and more than one read
    original = digests(src)
    up = vf("move", str(src), f"s3://{s3_bucket}/m", "--delete-empty-src-dirs", "--json")
    assert up.code == 0, up.err
    result = up.json()
    assert result["move"]["source_deleted"] == len(original) and result["move"]["source_kept"] == 0
    assert result["move"]["proven_by"]["journal"] == len(original)  # the copy's own SHA-256 checks, no read
    assert s3_digests(client, s3_bucket, "m/") == original
    assert digests(src) == {} and src.is_dir() and not (src / "hollow").exists()

    back = tmp_path / "back"
    down = vf("move", f"s3://{s3_bucket}/m", str(back), "--json")
    assert down.code == 0, down.err
    assert digests(back) == original
    assert s3_digests(client, s3_bucket, "m/") == {}


@pytest.mark.s3
def test_move_between_buckets_copies_server_side(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str,
                                                 seaweed: SeaweedFS) -> None:
    client = seaweed.boto3_client()
    make_tree(tmp_path / "src", files=12)
    original = digests(tmp_path / "src")
    assert vf("copy", str(tmp_path / "src"), f"s3://{s3_bucket}/a").code == 0
    other = f"{s3_bucket}-to"
    seaweed.create_bucket(other)
    try:
        r = vf("move", f"s3://{s3_bucket}/a", f"s3://{other}/b", "--json")
        assert r.code == 0, r.err
        assert r.json()["server_side_copies"] == 12 and r.json()["move"]["source_deleted"] == 12
        assert s3_digests(client, other, "b/") == original
        assert s3_digests(client, s3_bucket, "a/") == {}
    finally:
        seaweed.delete_bucket_recursive(other)


@pytest.mark.s3
def test_a_source_whose_copy_differs_stays(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str,
                                           seaweed: SeaweedFS) -> None:
    client = seaweed.boto3_client()
    src = tmp_path / "src"
    make_tree(src, files=6)
    victim = sorted(digests(src))[2]
    size = (src / victim).stat().st_size
    time.sleep(1.1)  # stored after the file was written: size and time say "unchanged", and the copy skips it
    client.put_object(Bucket=s3_bucket, Key=f"m/{victim}", Body=b"\0" * size)
    progress = tmp_path / "progress.jsonl"
    r = vf("move", str(src), f"s3://{s3_bucket}/m", "--progress-json", str(progress))
    assert r.code == 1, r.err
    assert f"KEPT {victim}: its copy differs: SHA-256" in r.err
    final = json.loads(progress.read_text().splitlines()[-1])
    assert final["final"] and final["exit_status"] == 1, final  # the command's status, not the copy's
    assert list(digests(src)) == [victim]  # the other five moved; the one whose copy differs stayed
    assert len(s3_digests(client, s3_bucket, "m/")) == 6
    fixed = vf("move", str(src), f"s3://{s3_bucket}/m", "--checksum")  # compared by content: sent again
    assert fixed.code == 0, fixed.err
    assert digests(src) == {}


def test_moveto_and_copyto_give_one_object_a_new_name(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=6)
    first = sorted(digests(tmp_path / "src"))[0]
    digest = digests(tmp_path / "src")[first]
    copied = vf("copyto", str(tmp_path / "src" / first), str(tmp_path / "out" / "copy.bin"))
    assert copied.code == 0, copied.err
    assert digests(tmp_path / "out") == {"copy.bin": digest} and (tmp_path / "src" / first).exists()
    again = vf("copyto", str(tmp_path / "src" / first), str(tmp_path / "out" / "copy.bin"), "--json")
    assert again.code == 0 and again.json()["skipped"] == 1  # unchanged: nothing sent
    moved = vf("moveto", str(tmp_path / "src" / first), str(tmp_path / "src" / "renamed.bin"))
    assert moved.code == 0, moved.err
    assert not (tmp_path / "src" / first).exists()
    assert digests(tmp_path / "src")["renamed.bin"] == digest
    tree = vf("copyto", str(tmp_path / "src"), str(tmp_path / "tree"))  # a folder: as copy
    assert tree.code == 0 and digests(tmp_path / "tree") == digests(tmp_path / "src")
    plain = vf("move", str(tmp_path / "src" / "renamed.bin"), str(tmp_path / "into"))  # one object: into DST
    assert plain.code == 0 and digests(tmp_path / "into") == {"renamed.bin": digest}


def test_a_move_stopped_at_max_transfer_deletes_what_it_copied(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", files=20, min_size=10_000, max_size=10_000)
    original = digests(tmp_path / "src")
    cut = vf("move", str(tmp_path / "src"), str(tmp_path / "dst"), "--max-transfer", "50K", "--transfers", "1",
             "--json")
    assert cut.code == 8, cut.err
    moved = cut.json()["move"]
    assert 0 < moved["source_deleted"] < 20 and moved["source_deleted"] + moved["not_copied"] == 20
    assert moved["source_kept"] == 0 and "KEPT" not in cut.err
    assert len(digests(tmp_path / "src")) == moved["not_copied"]
    assert len(digests(tmp_path / "dst")) == moved["source_deleted"]
    rest = vf("move", str(tmp_path / "src"), str(tmp_path / "dst"))
    assert rest.code == 0, rest.err
    assert digests(tmp_path / "src") == {} and digests(tmp_path / "dst") == original


@pytest.mark.s3
def test_moveto_and_copyto_on_s3(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str,
                                 seaweed: SeaweedFS) -> None:
    client = seaweed.boto3_client()
    client.put_object(Bucket=s3_bucket, Key="a/one.txt", Body=b"one")
    r = vf("copyto", f"s3://{s3_bucket}/a/one.txt", f"s3://{s3_bucket}/b/two.txt", "--json")
    assert r.code == 0, r.err
    assert r.json()["server_side_copies"] == 1
    r = vf("moveto", f"s3://{s3_bucket}/b/two.txt", str(tmp_path / "local" / "three.txt"))
    assert r.code == 0, r.err
    assert (tmp_path / "local" / "three.txt").read_bytes() == b"one"
    assert s3_digests(client, s3_bucket, "") == {"a/one.txt": hashlib.sha256(b"one").hexdigest()}


@pytest.mark.s3
def test_bad_input_touches_nothing(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str,
                                   seaweed: SeaweedFS) -> None:
    src = tmp_path / "tree"
    make_tree(src, files=8)
    before = digests(src)
    one = sorted(before)[0]
    for args, words in (
        (("move", str(src), str(src)), "same place"),
        (("move", str(src), str(src / "inner")), "inside the source"),
        (("move", str(src / "dir000"), str(src)), "inside the destination"),
        (("move", str(src), str(tmp_path / "link" / ".." / "tree" / "x")), "inside the source"),
        (("moveto", str(src / one), str(src / one)), "same place"),
        (("move", str(src), str(tmp_path / "z"), "--compress", "zstd"), "--compress"),
        (("move", str(src), str(tmp_path / "z"), "--cluster", "local:1"), "cluster"),
        (("move", str(src), str(tmp_path / "z"), "--links"), "--links"),
        (("moveto", str(src / one), f"s3://{s3_bucket}"), "name the destination object"),
        (("move", str(tmp_path / "absent"), str(tmp_path / "z")), "absent"),
    ):
        (tmp_path / "link").mkdir(exist_ok=True)
        r = vf(*args)
        assert r.code == 2, (args, r.err)
        assert words in r.err, (args, r.err)
    assert digests(src) == before and not (tmp_path / "z").exists()
    client = seaweed.boto3_client()
    client.put_object(Bucket=s3_bucket, Key="p/x.txt", Body=b"x")
    r = vf("move", f"s3://{s3_bucket}/p", f"s3://{s3_bucket}/p/q")
    assert r.code == 2 and "inside the source" in r.err
    assert s3_digests(client, s3_bucket, "") == {"p/x.txt": hashlib.sha256(b"x").hexdigest()}


@pytest.fixture
def yandex(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[dict[str, str], yadisk.Client]]:
    with emulator_process("--token", TOKEN, "--data-dir", str(tmp_path / "yd-state")) as url:
        monkeypatch.setattr(yadisk.settings, "BASE_API_URL", url.removesuffix("/v1/disk"))
        with yadisk.Client(token=TOKEN, session="requests") as disk:
            yield {"YANDEX_DISK_TOKEN": TOKEN, "YANDEX_DISK_API_URL": url}, disk


def test_move_to_yandex_disk_and_rename_there(tmp_path: Path, yandex: tuple[dict[str, str], yadisk.Client]) -> None:
    env, disk = yandex
    make_tree(tmp_path / "src", files=10)
    original = digests(tmp_path / "src")
    r = vf("move", str(tmp_path / "src"), "yadisk:/m", "--json", env=env)
    assert r.code == 0, r.err
    assert digests(tmp_path / "src") == {}
    first = sorted(original)[0]
    assert disk.get_meta(f"/m/{first}").sha256 == original[first]
    r = vf("moveto", f"yadisk:/m/{first}", "yadisk:/renamed.bin", env=env)
    assert r.code == 0, r.err
    assert not disk.exists(f"/m/{first}") and disk.get_meta("/renamed.bin").sha256 == original[first]


# -- kill -9 -------------------------------------------------------------------------------------

def _count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def _kill_when(args: list[str], ready: Callable[[], bool], limit: float = 90.0) -> bool:
    """Run ``vertexflow ARGS``; SIGKILL it once ``ready()`` holds. False: it ended first."""
    proc = subprocess.Popen([sys.executable, "-m", "vertexflow", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + limit
        while proc.poll() is None and time.monotonic() < deadline:
            if ready():
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(30)
                return True
            time.sleep(0.03)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


@pytest.mark.s3
def test_kill_9_during_a_move_loses_no_object(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str,
                                              seaweed: SeaweedFS) -> None:
    client = seaweed.boto3_client()
    src = tmp_path / "src"
    make_tree(src, files=60, min_size=24 * 1024, max_size=40 * 1024)
    original = digests(src)
    # every other object is at the destination already (not by vertexflow: no journal record), so the
    # second pass reads both sides to prove them, slowly under the bandwidth limit: deletes come one by one
    for key in sorted(original)[::2]:
        client.put_object(Bucket=s3_bucket, Key=f"m/{key}", Body=(src / key).read_bytes())
    args = ["move", str(src), f"s3://{s3_bucket}/m", "--bwlimit", "300k", "--transfers", "2"]

    def lost() -> list[str]:
        here, there = digests(src), s3_digests(client, s3_bucket, "m/")
        problems = [k for k, d in original.items() if here.get(k) != d and there.get(k) != d]
        problems += [k for k, d in here.items() if original.get(k) != d]  # nothing changed at the source
        return problems

    def copying() -> bool:  # an object the move sent is there, none deleted yet
        listed = client.list_objects_v2(Bucket=s3_bucket, Prefix="m/")
        return listed.get("KeyCount", 0) > 30 and _count_files(src) == 60

    def deleting() -> bool:  # the second pass has deleted some source objects, not all
        return 0 < _count_files(src) < 58

    assert _kill_when(args, copying), "the move ended before it could be killed while copying"
    assert lost() == []
    assert _count_files(src) == 60  # nothing deleted before the copy pass ended
    assert _kill_when(args, deleting), "the move ended before it could be killed while deleting"
    assert lost() == []
    finished = vf(*args, "--json")
    assert finished.code == 0, finished.err
    assert digests(src) == {} and s3_digests(client, s3_bucket, "m/") == original
