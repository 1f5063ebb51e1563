"""Where the datasets and the copies live: a journaled ext4 of our own, or the host's filesystem.

Why not simply the host's filesystem: on an ext4 *without a journal* (this
reference VM's root is one: ``/sys/fs/ext4/vda/journal_task`` reads
``<none>``) the kernel will not reuse an inode deleted in the last 60 s (360 s
while its inode-table block is dirty) and scans past every such inode on each
file creation (``find_inode_bit`` -> ``recently_deleted``, ~90 % of ``cp -r``'s
time in ``perf``). Emptying a 20,000-file destination before each run thus
made the next run's file creations 3-10x slower, growing from round to round
and with other processes' deletions: ``cp -r`` of dataset B took 0.8 s on a
journaled ext4 and 2.8-10 s on the root filesystem.

``loop`` mode (the default where the harness runs as root with ``mkfs.ext4``,
``losetup`` and ``mount``): a sparse image ``bench-ext4.img`` in the data
directory, formatted once with mkfs.ext4's defaults (so with a journal) and
fully initialised inode tables (no background ``ext4lazyinit`` during the
runs), attached with ``--direct-io=on`` (no second copy in the host's page
cache) and mounted for the run. It holds the datasets (kept between runs, like
``benchmarks/data/``) and every local destination, so local copies stay within
one filesystem (``copy_file_range`` works as on any single disk). It is
unmounted and detached at the end, also after errors and Ctrl-C; a mount left
by a killed run is cleaned up at the next start.

``plain`` mode: datasets in ``benchmarks/data/``, destinations in
``benchmarks/work/``; the report warns when that filesystem is a journal-less ext4.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .measure import helper

GiB = 1 << 30
#: sparse: only what is written takes disk space (about 7 GB for a full run)
IMAGE_SIZE = 16 * GiB
#: C alone is 200,000 files, its copy as many again
IMAGE_INODES = 1_500_000
IMAGE_LABEL = "vfbench"


@dataclass(slots=True)
class Scratch:
    kind: str                 # "loop-ext4" or "plain"
    data_dir: Path            # datasets
    dst_root: Path            # parent of every local destination
    description: str
    warning: str | None = None
    _device: str | None = None
    _mountpoint: Path | None = None

    @property
    def can_drop_cache(self) -> bool:
        return self._mountpoint is not None

    def drop_cache(self) -> None:
        """Evict this filesystem's pages from the page cache: flush, unmount and mount it again.

        What the cold-cache rows start from: every file is read from the disk
        again. Only the loop image can do it (``/proc/sys/vm/drop_caches`` is
        not writable in a container; unmounting evicts a filesystem's pages
        anywhere). The host's own caching of the disk behind the image is out
        of reach, which is why cold rows vary more than warm ones.
        """
        if self._mountpoint is None or self._device is None:
            raise RuntimeError("dropping the page cache needs the loop image (--fs loop, as root)")
        os.sync()
        for attempt in range(5):
            try:
                helper(["umount", str(self._mountpoint)], timeout=120)
                break
            except RuntimeError:
                if attempt == 4:
                    raise
                time.sleep(1)  # a tool that just exited may still hold a file open
        helper(["mount", self._device, str(self._mountpoint)], timeout=120)

    def close(self, say: Callable[[str], None]) -> None:
        if self._mountpoint is not None:
            _trim(self._mountpoint, say)
            _unmount(self._mountpoint, self._device, say)
            self._mountpoint = None


def fs_of(path: Path) -> tuple[str, str, str]:
    """(mount point, filesystem type, device) holding ``path``."""
    path = path.resolve()
    best = ("/", "?", "?")
    with open("/proc/self/mounts") as f:
        for line in f:
            dev, mnt, fstype = line.split()[:3]
            mnt = mnt.replace("\\040", " ")
            if (path == Path(mnt) or Path(mnt) in path.parents) and len(mnt) >= len(best[0]):
                best = (mnt, fstype, dev)
    return best


def journal_less_ext4(path: Path) -> bool:
    _, fstype, dev = fs_of(path)
    if fstype != "ext4":
        return False
    try:
        return Path(f"/sys/fs/ext4/{Path(dev).name}/journal_task").read_text().strip() == "<none>"
    except OSError:
        return False


def _loop_possible() -> str | None:
    """Why loop mode cannot work here, or None."""
    if os.geteuid() != 0:
        return "not running as root"
    for tool in ("mkfs.ext4", "losetup", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    if not Path("/dev/loop-control").exists():
        return "no /dev/loop-control"
    return None


def _attached(image: Path) -> list[str]:
    out = helper(["losetup", "-j", str(image)], timeout=30).stdout
    return [line.split(":", 1)[0] for line in out.splitlines() if line.strip()]


def _mounts_of(device: str) -> list[Path]:
    with open("/proc/self/mounts") as f:
        return [Path(line.split()[1]) for line in f if line.split()[0] == device]


def _unmount(mountpoint: Path, device: str | None, say: Callable[[str], None]) -> None:
    os.sync()
    for attempt in range(5):
        try:
            helper(["umount", str(mountpoint)], timeout=120)
            break
        except RuntimeError as exc:
            if attempt == 4:
                say(f"warning: {exc}; detaching lazily")
                helper(["umount", "-l", str(mountpoint)], timeout=60)
            time.sleep(1)  # a tool killed a moment ago may still hold a file open
    if device is not None:
        try:
            helper(["losetup", "-d", device], timeout=60)
        except RuntimeError as exc:
            say(f"warning: could not detach {device}: {exc}")


def _trim(mountpoint: Path, say: Callable[[str], None]) -> None:
    """Give the blocks of deleted copies back to the host: the sparse image stays at its live data (~4 GB).

    Not mounted with ``-o discard``: online discards would land in the timed runs.
    """
    if shutil.which("fstrim") is None:
        return
    try:
        helper(["fstrim", str(mountpoint)], timeout=300)
    except RuntimeError as exc:
        say(f"warning: {exc}")


def _cleanup_stale(image: Path, say: Callable[[str], None]) -> None:
    """A previous run killed with -9 may have left the image mounted and attached."""
    for device in _attached(image):
        for mnt in _mounts_of(device):
            say(f"unmounting {mnt}, left by an earlier run")
            _unmount(mnt, None, say)
        helper(["losetup", "-d", device], timeout=60)


def _format(image: Path, say: Callable[[str], None]) -> None:
    free = shutil.disk_usage(image.parent).free
    if free < 10 * GiB:
        raise RuntimeError(f"the benchmark image needs about 10 GB free in {image.parent}; {free / 1e9:.1f} GB free")
    say(f"creating {image} ({IMAGE_SIZE / GiB:.0f} GiB sparse ext4 with a journal) ...")
    image.unlink(missing_ok=True)
    with open(image, "wb") as f:
        f.truncate(IMAGE_SIZE)
    helper(["mkfs.ext4", "-q", "-F", "-L", IMAGE_LABEL, "-N", str(IMAGE_INODES),
            "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image)], timeout=600)


def _attach(image: Path) -> str:
    try:
        return helper(["losetup", "--find", "--show", "--direct-io=on", str(image)], timeout=60).stdout.strip()
    except RuntimeError:  # direct I/O refused by the host filesystem: cached twice, still correct
        return helper(["losetup", "--find", "--show", str(image)], timeout=60).stdout.strip()


def open_scratch(mode: str, *, data_dir: Path, work_dir: Path, say: Callable[[str], None]) -> Scratch:
    """The place for datasets and destinations, per ``mode`` ("auto", "loop" or "plain")."""
    why_not = _loop_possible() if mode in ("auto", "loop") else "--fs plain"
    if why_not is None:
        image = data_dir / "bench-ext4.img"
        mountpoint = work_dir / "mnt"
        data_dir.mkdir(parents=True, exist_ok=True)
        mountpoint.mkdir(parents=True, exist_ok=True)
        device = None
        try:
            if image.exists():
                _cleanup_stale(image, say)
            if not image.exists() or image.stat().st_size != IMAGE_SIZE:
                _format(image, say)
            device = _attach(image)
            try:
                helper(["mount", device, str(mountpoint)], timeout=120)
            except RuntimeError:  # a damaged image: start it again (datasets are regenerated)
                helper(["losetup", "-d", device], timeout=60)
                _format(image, say)
                device = _attach(image)
                helper(["mount", device, str(mountpoint)], timeout=120)
        except Exception as exc:
            if device is not None:
                helper(["losetup", "-d", device], timeout=60)
            if mode == "loop":
                raise
            why_not = f"setting up the loop image failed: {exc}"
        else:
            (mountpoint / "data").mkdir(exist_ok=True)
            (mountpoint / "dst").mkdir(exist_ok=True)
            return Scratch(
                "loop-ext4", mountpoint / "data", mountpoint / "dst",
                f"datasets and destinations on a journaled ext4 (mkfs.ext4 defaults) in the sparse image "
                f"{image}, loop-attached with direct I/O ({device}) and mounted at {mountpoint}",
                _device=device, _mountpoint=mountpoint)
    if mode == "loop":
        raise RuntimeError(f"--fs loop: {why_not}")
    dst_root = work_dir / "dst"
    dst_root.mkdir(parents=True, exist_ok=True)
    warning = None
    if journal_less_ext4(dst_root):
        warning = (f"destinations are on an ext4 without a journal ({fs_of(dst_root)[2]}): file creation after "
                   f"deletions is slowed by the kernel's recently-deleted-inode scan, so the small-file rows "
                   f"measure mostly the kernel (the journaled loop image needs root; not used here: {why_not})")
    _, fstype, dev = fs_of(dst_root)
    return Scratch("plain", data_dir, dst_root,
                   f"datasets in {data_dir}, destinations in {dst_root} ({fstype} on {dev}; loop image not used: "
                   f"{why_not})", warning=warning)
