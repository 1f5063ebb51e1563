"""Overlapping source and destination are refused before anything is listed or written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vertexflow.testing.sample_tree import make_tree

from ..cli.helpers import vf


def count(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file())


def test_a_copy_into_its_own_subtree_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    made = make_tree(tree, files=15)
    for args in (["copy", str(tree), str(tree / "inner")], ["sync", str(tree), str(tree / "inner"), "--delete"],
                 ["copy", str(tree), str(tree)], ["copy", str(tree), str(tmp_path / "tree" / ".." / "tree" / "x")]):
        r = vf(*args)
        assert r.code == 2, (args, r.err)
        assert "nothing was done" in r.err and str(tree) in r.err
        assert count(tree) == made.files  # nothing written
    assert "--exclude 'inner/**'" in vf("copy", str(tree), str(tree / "inner")).err


def test_a_destination_that_holds_the_source_is_refused_through_a_symlink(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    make_tree(tree / "photos", files=5)
    os.symlink(tree, tmp_path / "alias")
    r = vf("sync", str(tree / "photos"), str(tmp_path / "alias"), "--delete")
    assert r.code == 2 and "inside the destination" in r.err, r.err
    assert count(tree / "photos") == 5  # a sync --delete would have removed the source


def test_excluding_the_destination_subtree_makes_it_safe(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    made = make_tree(tree, files=10)
    for _ in range(2):  # a rerun does not copy the copy
        r = vf("copy", str(tree), str(tree / "backup"), "--exclude", "backup/**")
        assert r.code == 0, r.err
    assert count(tree / "backup") == made.files


@pytest.mark.s3
def test_overlapping_prefixes_in_one_bucket_are_refused(tmp_path: Path, s3_env: dict[str, str],
                                                        s3_bucket: str) -> None:
    make_tree(tmp_path / "src", files=3)
    assert vf("copy", str(tmp_path / "src"), f"s3://{s3_bucket}/p").code == 0
    r = vf("copy", f"s3://{s3_bucket}/p", f"s3://{s3_bucket}/p/q")
    assert r.code == 2 and "inside the source" in r.err, r.err
    r = vf("verify", f"s3://{s3_bucket}/p", f"s3://{s3_bucket}/p", "--fix")
    assert r.code == 2 and "same place" in r.err
    ok = vf("copy", f"s3://{s3_bucket}/p", f"s3://{s3_bucket}/p2")  # a sibling prefix is another place
    assert ok.code == 0, ok.err
