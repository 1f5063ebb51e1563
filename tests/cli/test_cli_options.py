"""The rclone options of copy and sync on local disk, run as users run them (the real command, a subprocess).

Each test checks what was written with plain file reads and sha256, never with vertexflow.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from .helpers import Result, vf

KB = 1024


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def digests(root: Path) -> dict[str, str]:
    """Every regular file under ``root`` (links not followed): relative path -> SHA-256."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def five_files(root: Path) -> dict[str, bytes]:
    files = {f"f{i}.bin": os.urandom(300 * KB) for i in range(1, 6)}
    tree(root, files)
    return files


def summary(r: Result) -> dict:
    return json.loads(r.out)


# -- --max-transfer / --max-duration ------------------------------------------------------------

@pytest.mark.parametrize(("mode", "copied"), [("hard", 2), ("soft", 2), ("cautious", 1)])
def test_max_transfer_stops_at_the_limit_and_a_rerun_continues(tmp_path: Path, mode: str, copied: int) -> None:
    files = five_files(tmp_path / "src")
    args = ["copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--transfers", "1", "--json"]
    r = vf(*args, "--max-transfer", "500k", "--cutoff-mode", mode)
    assert r.code == 8, r.err
    s = summary(r)
    if mode == "hard":  # the second object is aborted unless it finished before the cut was seen
        assert s["objects"] + s["cutoff"]["aborted"] == copied
        copied = s["objects"]
    assert s["objects"] == copied and s["failed"] == 0 and s["cutoff"]["reached"] == "max-transfer"
    on_disk = digests(tmp_path / "dst")
    assert len(on_disk) == copied and all(on_disk[k] == sha(files[k]) for k in on_disk)
    again = vf(*args, "--max-transfer", "500k", "--cutoff-mode", mode)
    assert again.code in (0, 8) and summary(again)["resumed"] is True
    assert summary(again)["skipped"] == copied  # the first run's objects are not sent again
    last = vf(*args)
    assert last.code == 0, last.err
    assert digests(tmp_path / "dst") == {k: sha(v) for k, v in files.items()}


def test_hard_cutoff_aborts_what_is_in_flight_and_soft_lets_it_finish(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * KB)
    tree(tmp_path / "src", {"big.bin": data})
    args = ["copy", str(tmp_path / "src"), "--json", "--bwlimit", "1M", "--max-transfer", "256k", "--no-journal"]
    hard = vf(*args, str(tmp_path / "hard"), "--cutoff-mode", "hard")
    assert hard.code == 8, hard.err
    assert summary(hard)["objects"] == 0 and summary(hard)["cutoff"]["aborted"] == 1
    assert summary(hard)["seconds"] < 2.5  # cut well before the 3 s the whole file takes at 1M/s
    assert os.listdir(tmp_path / "hard") == []  # no partial file, no temporary file left behind
    soft = vf(*args, str(tmp_path / "soft"), "--cutoff-mode", "soft")
    assert soft.code == 8, soft.err
    assert summary(soft)["objects"] == 1 and summary(soft)["cutoff"]["aborted"] == 0
    assert digests(tmp_path / "soft") == {"big.bin": sha(data)}


def test_max_duration_stops_and_a_rerun_finishes(tmp_path: Path) -> None:
    files = {f"f{i}.bin": os.urandom(512 * KB) for i in range(6)}
    tree(tmp_path / "src", files)
    args = ["copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--json", "--transfers", "1"]
    started = time.monotonic()
    r = vf(*args, "--bwlimit", "1M", "--max-duration", "1s", "--cutoff-mode", "soft")
    assert r.code == 10, r.err
    assert time.monotonic() - started < 30
    s = summary(r)
    assert s["cutoff"]["reached"] == "max-duration" and 0 < s["objects"] < 6 and s["failed"] == 0
    assert all(digests(tmp_path / "dst")[k] == sha(files[k]) for k in digests(tmp_path / "dst"))
    done = vf(*args)
    assert done.code == 0 and summary(done)["skipped"] == s["objects"]
    assert digests(tmp_path / "dst") == {k: sha(v) for k, v in files.items()}


def test_a_sync_stopped_at_a_limit_deletes_nothing(tmp_path: Path) -> None:
    five_files(tmp_path / "src")
    tree(tmp_path / "dst", {"extra.txt": b"only at the destination"})
    r = vf("sync", str(tmp_path / "src"), str(tmp_path / "dst"), "--delete", "--transfers", "1",
           "--max-transfer", "300k", "--json")
    assert r.code == 8, r.err
    assert (tmp_path / "dst" / "extra.txt").read_bytes() == b"only at the destination"
    r = vf("sync", str(tmp_path / "src"), str(tmp_path / "dst"), "--delete", "--json")
    assert r.code == 0 and summary(r)["deleted"] == 1 and not (tmp_path / "dst" / "extra.txt").exists()


# -- --files-from / --include-from / --exclude-from --------------------------------------------

def test_files_from_include_from_exclude_from(tmp_path: Path) -> None:
    names = ["a/1.txt", "a/2.txt", "a/3.jpg", "b/4.txt", "b/5.jpg", "c/6.txt"]
    tree(tmp_path / "src", {n: n.encode() for n in names})
    (tmp_path / "list").write_text("# the keys to copy\n/a/1.txt\n\n  a/3.jpg  \n; a comment\nb/5.jpg\nnot/there.txt\n")
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "one"), "--files-from", str(tmp_path / "list"))
    assert r.code == 0, r.err
    assert sorted(digests(tmp_path / "one")) == ["a/1.txt", "a/3.jpg", "b/5.jpg"]
    (tmp_path / "inc").write_text("*.txt\n")
    (tmp_path / "exc").write_text("# not b\nb/**\n")
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "two"), "--include-from", str(tmp_path / "inc"),
           "--exclude-from", str(tmp_path / "exc"))
    assert r.code == 0, r.err
    assert sorted(digests(tmp_path / "two")) == ["a/1.txt", "a/2.txt", "c/6.txt"]
    # the other filters still apply to the named keys
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "three"), "--files-from", str(tmp_path / "list"),
           "--ext", "jpg")
    assert r.code == 0 and sorted(digests(tmp_path / "three")) == ["a/3.jpg", "b/5.jpg"]


# -- what is done with existing destination objects ----------------------------------------------

def _aged(path: Path, seconds_ago: float) -> None:
    t = time.time() - seconds_ago
    os.utime(path, (t, t))


def test_ignore_existing_update_and_immutable(tmp_path: Path) -> None:
    src = tree(tmp_path / "src", {"same.txt": b"same", "older-dst.txt": b"new source",
                                  "newer-dst.txt": b"old source", "new.txt": b"new"})
    _aged(src / "older-dst.txt", 100)
    _aged(src / "newer-dst.txt", 3600)

    def destination(name: str) -> Path:
        dst = tree(tmp_path / name, {"older-dst.txt": b"stale copy", "newer-dst.txt": b"edited at the destination"})
        (dst / "same.txt").write_bytes(b"same")
        os.utime(dst / "same.txt", ns=(os.stat(src / "same.txt").st_mtime_ns,) * 2)
        _aged(dst / "older-dst.txt", 7200)
        _aged(dst / "newer-dst.txt", 10)
        return dst

    dst = destination("ignore")
    r = vf("copy", str(src), str(dst), "--ignore-existing", "--json")
    assert r.code == 0, r.err
    assert (summary(r)["objects"], summary(r)["skipped"]) == (1, 3)
    assert (dst / "older-dst.txt").read_bytes() == b"stale copy" and (dst / "new.txt").read_bytes() == b"new"

    dst = destination("update")
    r = vf("copy", str(src), str(dst), "--update", "--json")
    assert r.code == 0, r.err
    assert (dst / "older-dst.txt").read_bytes() == b"new source"  # older at the destination: replaced
    assert (dst / "newer-dst.txt").read_bytes() == b"edited at the destination"  # newer there: kept

    dst = destination("immutable")
    r = vf("sync", str(src), str(dst), "--immutable", "--json")
    assert r.code == 1, r.err
    assert summary(r)["failed"] == 2 and summary(r)["objects"] == 1
    assert "FAILED older-dst.txt: [conflict]" in r.err and "--immutable" in r.err
    assert (dst / "older-dst.txt").read_bytes() == b"stale copy"
    assert (dst / "newer-dst.txt").read_bytes() == b"edited at the destination"
    assert (dst / "new.txt").read_bytes() == b"new"
    plan = vf("sync", str(src), str(dst), "--immutable", "--dry-run")
    assert "refuse older-dst.txt" in plan.out and plan.code == 1


# -- --backup-dir ------------------------------------------------------------------------------

def test_backup_dir_keeps_what_sync_overwrites_and_deletes(tmp_path: Path) -> None:
    src = tree(tmp_path / "src", {"keep.txt": b"unchanged", "edit.txt": b"version 2", "new/added.txt": b"added"})
    dst = tree(tmp_path / "dst", {"keep.txt": b"unchanged", "edit.txt": b"version 1", "gone/old.txt": b"deleted"})
    os.utime(dst / "keep.txt", ns=(os.stat(src / "keep.txt").st_mtime_ns,) * 2)
    _aged(dst / "edit.txt", 3600)
    r = vf("sync", str(src), str(dst), "--delete", "--backup-dir", str(tmp_path / "backup" / "run1"), "--json")
    assert r.code == 0, r.err
    assert digests(dst) == digests(src)
    assert digests(tmp_path / "backup" / "run1") == {"edit.txt": sha(b"version 1"), "gone/old.txt": sha(b"deleted")}
    assert summary(r)["backup_dir"]["kept"] == 2


@pytest.mark.parametrize("where", ["dst/old", "src/old", "dst", "."])
def test_backup_dir_overlapping_is_refused_before_anything_is_done(tmp_path: Path, where: str) -> None:
    tree(tmp_path / "src", {"a.txt": b"new"})
    tree(tmp_path / "dst", {"a.txt": b"old", "b.txt": b"extra"})
    before = digests(tmp_path)
    backup = tmp_path / where
    r = vf("sync", str(tmp_path / "src"), str(tmp_path / "dst"), "--delete", "--backup-dir", str(backup))
    assert r.code == 2, r.err
    assert "--backup-dir" in r.err and "overlaps the" in r.err and "nothing was done" in r.err
    assert digests(tmp_path) == before
    assert not (tmp_path / "dst" / "old").exists() and not (tmp_path / "src" / "old").exists()


# -- --create-empty-src-dirs, --links, --copy-links -------------------------------------------------------

def test_create_empty_src_dirs(tmp_path: Path) -> None:
    src = tree(tmp_path / "src", {"full/a.txt": b"a"})
    for d in ("empty", "deep/er/est", "full/inner-empty"):
        (src / d).mkdir(parents=True)
    assert vf("copy", str(src), str(tmp_path / "plain")).code == 0
    assert not (tmp_path / "plain" / "empty").exists()
    r = vf("copy", str(src), str(tmp_path / "dirs"), "--create-empty-src-dirs", "--exclude", "deep/**")
    assert r.code == 0, r.err
    dst = tmp_path / "dirs"
    assert (dst / "empty").is_dir() and (dst / "full" / "inner-empty").is_dir() and not (dst / "deep").exists()
    assert (dst / "full" / "a.txt").read_bytes() == b"a"


def _links_tree(root: Path) -> Path:
    tree(root, {"real.txt": b"the real bytes", "folder/inside.txt": b"inside"})
    (root / "to-file").symlink_to("real.txt")
    (root / "to-folder").symlink_to("folder")
    (root / "broken").symlink_to("nowhere/at/all")
    (root / "folder" / "loop").symlink_to("..")
    return root


def test_links_are_skipped_stored_or_followed(tmp_path: Path) -> None:
    src = _links_tree(tmp_path / "src")
    r = vf("copy", str(src), str(tmp_path / "skipped"))
    assert r.code == 0, r.err
    assert sorted(digests(tmp_path / "skipped")) == ["folder/inside.txt", "real.txt"]
    assert "skipping symlink" in r.err

    r = vf("copy", str(src), str(tmp_path / "stored"), "--links", "--json")
    assert r.code == 0, r.err
    stored = tmp_path / "stored"  # local disk to local disk: each link made as the link it is, as rclone does
    assert os.readlink(stored / "to-file") == "real.txt" and (stored / "to-file").read_bytes() == b"the real bytes"
    assert os.readlink(stored / "to-folder") == "folder"
    assert os.readlink(stored / "broken") == "nowhere/at/all"
    assert os.readlink(stored / "folder" / "loop") == ".."
    assert not list(stored.rglob("*.rclonelink"))
    assert summary(r)["objects"] == 6
    assert (stored / "to-file").lstat().st_mtime_ns // 10**9 == (src / "to-file").lstat().st_mtime_ns // 10**9
    again = vf("copy", str(src), str(stored), "--links", "--json")
    assert again.code == 0 and summary(again)["objects"] == 0, again.out  # links in place are left alone

    r = vf("copy", str(src), str(tmp_path / "followed"), "--copy-links", "--json")
    assert r.code == 0, r.err
    followed = digests(tmp_path / "followed")
    assert followed["to-file"] == sha(b"the real bytes")
    assert followed["to-folder/inside.txt"] == sha(b"inside")
    assert "broken" not in followed and not any(k.startswith("folder/loop") for k in followed)

    (src / "to-file").unlink()  # a link changed at the source is made again
    (src / "to-file").symlink_to("folder/inside.txt")
    changed = vf("copy", str(src), str(stored), "--links", "--json")
    assert changed.code == 0 and summary(changed)["objects"] == 1, changed.out
    assert os.readlink(stored / "to-file") == "folder/inside.txt"


# -- where options come from ------------------------------------------------------------------

def test_global_options_after_the_command(tmp_path: Path) -> None:
    tree(tmp_path / "src", {"a.txt": b"a"})
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--log-level", "info", "--log-format", "json")
    assert r.code == 0, r.err
    events = [json.loads(line) for line in r.err.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "object copied" and e.get("key") == "a.txt" for e in events)
    r = vf("ls", str(tmp_path / "src"), "--config", str(tmp_path / "missing.toml"))
    assert r.code == 2 and "missing.toml does not exist" in r.err
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--log-level=bogus")
    assert r.code == 2 and "--log-level" in r.err
    # the daemon's own --config stays the daemon's
    r = vf("daemon", "--check", "--config", str(tmp_path / "daemon.toml"), "--log-level", "debug")
    assert r.code == 2 and "daemon.toml" in r.err and "No such option" not in r.err


def test_options_from_environment_and_config_file_in_order(tmp_path: Path) -> None:
    five_files(tmp_path / "src")
    config = tmp_path / "vf.toml"
    config.write_text('[options]\nmax-transfer = "300k"\ntransfers = 1\njson = true\n')
    args = ["--config", str(config), "copy", str(tmp_path / "src"), "--no-journal"]
    from_file = vf(*args, str(tmp_path / "a"))
    assert from_file.code == 8 and summary(from_file)["cutoff"]["max_transfer"] == "300k"
    from_env = vf(*args, str(tmp_path / "b"), env={"VERTEXFLOW_MAX_TRANSFER": "600k"})
    assert from_env.code == 8 and summary(from_env)["cutoff"]["max_transfer"] == "600k"
    from_flag = vf(*args, str(tmp_path / "c"), "--max-transfer", "10M", env={"VERTEXFLOW_MAX_TRANSFER": "600k"})
    assert from_flag.code == 0 and summary(from_flag)["objects"] == 5
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "d"), env={"VERTEXFLOW_NO_VERIFY": "true",
                                                                    "VERTEXFLOW_JSON": "1"})
    assert r.code == 0 and summary(r)["objects"] == 5
    config.write_text('[options]\nmax-transfr = "1M"\n')
    bad = vf("--config", str(config), "ls", str(tmp_path / "src"))
    assert bad.code == 2 and "options.max-transfr" in bad.err and str(config) in bad.err


def test_remotes_from_environment_over_the_config_file(tmp_path: Path) -> None:
    tree(tmp_path / "one", {"from-file.txt": b"1"})
    tree(tmp_path / "two", {"from-env.txt": b"2"})
    config = tmp_path / "vf.toml"
    config.write_text(f'[remotes.my-disk]\ntype = "local"\npath = "{tmp_path / "one"}"\n')
    assert vf("--config", str(config), "ls", "my-disk:").out.split() == ["from-file.txt"]
    over = vf("--config", str(config), "ls", "my-disk:", env={"VERTEXFLOW_REMOTE_MY_DISK_PATH": str(tmp_path / "two")})
    assert over.code == 0 and over.out.split() == ["from-env.txt"]
    only_env = vf("ls", "scratch:", env={"VERTEXFLOW_REMOTE_SCRATCH_TYPE": "local",
                                         "VERTEXFLOW_REMOTE_SCRATCH_PATH": str(tmp_path / "two")})
    assert only_env.code == 0 and only_env.out.split() == ["from-env.txt"]
    stray = vf("ls", str(tmp_path / "one"), env={"VERTEXFLOW_REMOTE_NOBODY_PATH": "/x"})
    assert stray.code == 2 and "VERTEXFLOW_REMOTE_NOBODY_PATH" in stray.err
    bad = vf("ls", "scratch:", env={"VERTEXFLOW_REMOTE_SCRATCH_TYPE": "local"})
    assert bad.code == 2 and "remotes.scratch.path" in bad.err


# -- the small things ---------------------------------------------------------------------------

def test_names_with_a_newline_are_escaped(tmp_path: Path) -> None:
    tree(tmp_path / "src", {"two\nlines.txt": b"x", "tab\there.txt": b"y"})
    r = vf("ls", str(tmp_path / "src"))
    assert r.out.splitlines() == ["tab\\there.txt", "two\\nlines.txt"]
    r = vf("ls", "--long", str(tmp_path / "src"))
    assert len(r.out.splitlines()) == 2 and r.out.splitlines()[1].endswith("  two\\nlines.txt")
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--dry-run")
    assert "copy two\\nlines.txt (missing at destination)" in r.out.splitlines()
    r = vf("ls", "--json", str(tmp_path / "src"))
    assert sorted(json.loads(line)["key"] for line in r.out.splitlines()) == ["tab\there.txt", "two\nlines.txt"]


def test_ls_long_promises_only_the_digests_it_shows() -> None:
    r = vf("ls", "--help")
    assert "local disk and S3 list none" in " ".join(r.out.split())


def test_dry_run_lists_the_plan_in_the_order_asked(tmp_path: Path) -> None:
    sizes = {"a.bin": 30, "b.bin": 10, "c.bin": 50, "d.bin": 20}
    tree(tmp_path / "src", {k: b"x" * n for k, n in sizes.items()})
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--dry-run", "--order-by", "size,desc")
    assert r.code == 0, r.err
    listed = [line.split()[1] for line in r.out.splitlines() if line.startswith("copy ")]
    assert listed == ["c.bin", "a.bin", "d.bin", "b.bin"]
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--dry-run", "--order-by", "size,asc", "--json")
    assert [line.split()[1] for line in summary(r)["plan"]] == ["b.bin", "d.bin", "a.bin", "c.bin"]


def test_jobs_list_at_80_columns_shows_whole_locations(tmp_path: Path) -> None:
    deep = tmp_path / "a-rather-long-folder-name" / "and-another-one-below-it" / "source-tree"
    tree(deep, {"x.txt": b"x"})
    assert vf("copy", str(deep), str(tmp_path / "destination-folder")).code == 0
    r = vf("jobs", "list", env={"COLUMNS": "80"})
    assert r.code == 0, r.err
    assert "…" not in r.out and max(len(line) for line in r.out.splitlines()) <= 80
    lines = r.out.splitlines()
    first = next(i for i, line in enumerate(lines) if "file://" in line)  # the job's first line
    start = lines[first].index("file://")
    end = lines[first].index("file://", start + 1)
    column = "".join(line[start:end].strip() for line in lines[first:])
    assert column.startswith(f"file://{deep}")


def test_demo_leaves_nothing_behind(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    r = vf("demo", "--files", "30", env={"TMPDIR": str(scratch)})
    assert r.code == 0, r.err
    assert os.listdir(scratch) == []
    kept = vf("demo", "--files", "5", "--dir", str(tmp_path / "mine"))
    assert kept.code == 0 and len(digests(tmp_path / "mine" / "copy")) == 5


# -- bad input: a clear message, exit 2, nothing touched ----------------------------------------------

@pytest.mark.parametrize(("args", "words"), [
    (["--max-transfer", "abc"], "--max-transfer: invalid size 'abc'"),
    (["--max-duration", "soon"], "--max-duration: invalid age 'soon'"),
    (["--max-transfer", "0"], "--max-transfer '0': give a size above 0"),
    (["--files-from", "{tmp}/no-such-list.txt"], "--files-from {tmp}/no-such-list.txt: no such file"),
    (["--include-from", "{tmp}"], "a directory"),
    (["--links", "--copy-links"], "--links and --copy-links"),
    (["--ignore-existing", "--immutable"], "--ignore-existing and --immutable"),
])
def test_bad_options_exit_2_and_touch_nothing(tmp_path: Path, args: list[str], words: str) -> None:
    tree(tmp_path / "src", {"a.txt": b"a"})
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "dst"), *args)
    assert r.code == 2, r.err
    assert words.replace("{tmp}", str(tmp_path)) in r.err
    assert not (tmp_path / "dst").exists()
