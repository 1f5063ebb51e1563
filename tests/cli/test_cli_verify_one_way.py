"""verify --one-way and verify --fix --delete, against local disk and SeaweedFS (read back with boto3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vertexflow.testing.seaweedfs import SeaweedFS

from .helpers import vf


def write(root: Path, files: dict[str, bytes]) -> None:
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)


def keys(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


SOURCE = {"a.txt": b"a", "d/b.txt": b"bb", "d/c.txt": b"ccc", "keep/x.txt": b"x"}


def test_one_way_counts_no_extras_and_fix_delete_removes_them_under_guards(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src, SOURCE)
    write(dst, {"a.txt": b"a", "d/b.txt": b"bb", "extra1.txt": b"1", "d/extra2.txt": b"2", "keep/old.txt": b"o"})
    missing = vf("verify", str(src), str(dst), "--one-way", "--json")
    assert missing.code == 1 and missing.json()["missing"] == 2 and missing.json()["extra"] == 0
    assert vf("copy", str(src), str(dst)).code == 0
    both_ways = vf("verify", str(src), str(dst), "--json")
    assert both_ways.code == 1 and both_ways.json()["extra"] == 3
    one_way = vf("verify", str(src), str(dst), "--one-way", "--json")
    assert one_way.code == 0, one_way.out
    assert one_way.json()["extra"] == 0 and one_way.json()["dst_objects"] == 7

    (src / "d" / "new.txt").write_bytes(b"new")  # missing: a refused --fix --delete copies it not either
    refused = vf("verify", str(src), str(dst), "--fix", "--delete", "--max-delete", "1", "--exclude", "keep/**")
    assert refused.code == 2 and "more than --max-delete 1" in refused.err and "nothing was copied" in refused.err
    assert "d/new.txt" not in keys(dst) and "extra1.txt" in keys(dst)
    fixed = vf("verify", str(src), str(dst), "--fix", "--delete", "--max-delete", "2", "--exclude", "keep/**",
               "--json")
    assert fixed.code == 0, fixed.out + fixed.err
    result = fixed.json()
    assert result["deleted"] == 2 and result["fixed"] == 1 and result["extra"] == 0
    assert keys(dst) == sorted([*SOURCE, "d/new.txt", "keep/old.txt"])  # the excluded extra stays


def test_fix_delete_refuses_an_empty_source_and_bad_combinations(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    write(dst, {"a.txt": b"a", "b.txt": b"b"})
    empty = vf("verify", str(src), str(dst), "--fix", "--delete")
    assert empty.code == 2 and "source listing came back empty" in empty.err
    assert keys(dst) == ["a.txt", "b.txt"]
    for extra, words in ((["--delete"], "add --fix"), (["--fix", "--delete", "--one-way"], "--one-way"),
                         (["--max-delete", "3"], "--max-delete")):
        r = vf("verify", str(src), str(dst), *extra)
        assert r.code == 2 and words in r.err, (extra, r.err)
    assert keys(dst) == ["a.txt", "b.txt"]


@pytest.mark.s3
def test_one_way_and_fix_delete_on_s3(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str,
                                      seaweed: SeaweedFS) -> None:
    client = seaweed.boto3_client()
    write(tmp_path / "src", SOURCE)
    assert vf("copy", str(tmp_path / "src"), f"s3://{s3_bucket}/v").code == 0
    client.put_object(Bucket=s3_bucket, Key="v/extra.txt", Body=b"e")
    client.put_object(Bucket=s3_bucket, Key="w/outside.txt", Body=b"o")
    assert vf("verify", str(tmp_path / "src"), f"s3://{s3_bucket}/v").code == 1
    assert vf("verify", str(tmp_path / "src"), f"s3://{s3_bucket}/v", "--one-way").code == 0
    fixed = vf("verify", str(tmp_path / "src"), f"s3://{s3_bucket}/v", "--fix", "--delete", "--json")
    assert fixed.code == 0 and fixed.json()["deleted"] == 1, fixed.err
    listed = client.list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted([*(f"v/{k}" for k in SOURCE), "w/outside.txt"])
