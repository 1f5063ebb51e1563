"""verify: missing, extra and different objects; sampling; --fix."""

from __future__ import annotations

import os
from pathlib import Path

from vertexflow.backends.local import LocalBackend
from vertexflow.ops.verify import VerifyJob, sampled
from vertexflow.testing.sample_tree import make_tree

from ..cli.helpers import vf


def damaged_pair(tmp_path: Path) -> tuple[Path, Path]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, files=40)
    make_tree(dst, files=40)
    files = sorted(dst.rglob("*.bin"))
    files[0].unlink()                                   # missing
    data = bytearray(files[1].read_bytes())
    data[len(data) // 2] ^= 0xFF                        # different content, same size
    files[1].write_bytes(bytes(data))
    files[2].write_bytes(files[2].read_bytes()[:-1])    # truncated
    (dst / "extra.bin").write_bytes(b"extra")           # extra
    return src, dst


async def test_verify_reports_each_kind(tmp_path: Path) -> None:
    src, dst = damaged_pair(tmp_path)
    report = await VerifyJob(LocalBackend(src), LocalBackend(dst)).run()
    assert (report.missing, report.extra, report.different) == (1, 1, 2)
    assert report.src_objects == 40 and report.dst_objects == 40
    kinds = {p.key: p.kind for p in report.problems}
    assert kinds["extra.bin"] == "extra"
    assert not report.ok


async def test_size_only_misses_same_size_corruption(tmp_path: Path) -> None:
    src, dst = damaged_pair(tmp_path)
    report = await VerifyJob(LocalBackend(src), LocalBackend(dst), mode="size").run()
    assert report.different == 1  # only the truncated one
    assert report.hashed == 0


async def test_sample_is_deterministic_and_partial(tmp_path: Path) -> None:
    keys = [f"k{i}" for i in range(2000)]
    picked = [k for k in keys if sampled(k, 0.05)]
    assert 50 < len(picked) < 150
    assert picked == [k for k in keys if sampled(k, 0.05)]
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, files=100)
    make_tree(dst, files=100)
    report = await VerifyJob(LocalBackend(src), LocalBackend(dst), sample=0.1).run()
    assert 0 < report.compared < 40 and report.ok


def test_cli_verify_json_and_fix(tmp_path: Path) -> None:
    src, dst = damaged_pair(tmp_path)
    r = vf("verify", str(src), str(dst), "--json")
    assert r.code == 1
    assert r.json()["different"] == 2
    fixed = vf("verify", str(src), str(dst), "--fix", "--json")
    result = fixed.json()
    assert result["before_fix"]["missing"] == 1 and result["fixed"] == 3
    # the extra object stays (verify --fix copies, it never deletes), so still exit 1
    assert (result["missing"], result["different"], result["extra"]) == (0, 0, 1)
    assert fixed.code == 1
    os.unlink(dst / "extra.bin")
    ok = vf("verify", str(src), str(dst))
    assert ok.code == 0 and "OK" in ok.err


async def test_an_object_deleted_while_verifying_is_a_difference_not_a_crash(tmp_path: Path) -> None:
    from collections.abc import AsyncIterator

    from vertexflow.middleware.base import BackendWrapper
    from vertexflow.model import ObjectInfo

    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, files=10)
    make_tree(dst, files=10)
    doomed = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*.bin"))[3]

    class DeletesAfterListing(BackendWrapper):
        """The destination as a busy platform sees it: a file goes between the listing and the read."""

        async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:  # type: ignore[override]
            async for info in self.inner.list(prefix):
                yield info
                if info.key == doomed:
                    (dst / doomed).unlink()

    report = await VerifyJob(LocalBackend(src), DeletesAfterListing(LocalBackend(dst))).run()
    assert [(p.key, p.kind) for p in report.problems] == [(doomed, "missing")]
    assert report.matched == 9 and not report.ok


def test_metadata_between_local_directories_is_the_mtime_and_fix_sends_the_file_again(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, files=6)
    make_tree(dst, files=6)
    files = sorted(p.relative_to(dst) for p in dst.rglob("*.bin"))
    for rel in files:  # the same times on both sides, but one file an hour off and one within the tolerance
        t = (src / rel).stat().st_mtime_ns
        os.utime(dst / rel, ns=(t, t))
    os.utime(dst / files[0], ns=((src / files[0]).stat().st_mtime_ns + 3600 * 10**9,) * 2)
    os.utime(dst / files[1], ns=((src / files[1]).stat().st_mtime_ns + 5 * 10**8,) * 2)
    assert vf("verify", str(src), str(dst), "--json").code == 0  # the bytes match
    r = vf("verify", str(src), str(dst), "--metadata", "--json")
    assert r.code == 1
    got = r.json()
    assert got["metadata_different"] == 1 and got["matched"] == len(files) - 1
    assert [(p["key"], p["kind"], p["parts"]) for p in got["problems"]] == [(files[0].as_posix(), "metadata",
                                                                             ["mtime"])]
    fixed = vf("verify", str(src), str(dst), "--metadata", "--fix", "--json").json()
    # local disk changes no description in place: the file is sent again, with its mtime
    assert (fixed["fixed"], fixed["fixed_in_place"], fixed["ok"]) == (1, 0, True)
    assert (dst / files[0]).stat().st_mtime_ns // 1000 == (src / files[0]).stat().st_mtime_ns // 1000
