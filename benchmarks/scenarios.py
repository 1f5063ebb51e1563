"""The benchmark scenarios (one per table section) and the loop that runs them.

A scenario is one dataset moved one way by several contenders (vertexflow
and its peers). ``run_scenario`` warms the source once, then for each
repetition runs every contender once, in a fixed interleaved order
(vertexflow, peer, peer, vertexflow, peer, peer, ...), so that slow drifts in
machine load hit every tool alike. Before each timed run the destination is
fresh (an absent directory or a new bucket) and dirty pages are flushed;
after it, the output is counted (files and bytes must match the source) and
removed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import tools
from .datasets import Dataset, count_tree, warm
from .measure import helper, remove_tree, run, settle
from .tools import Contender, Invocation, S3Access


@dataclass(frozen=True, slots=True)
class Target:
    """vertexflow row ``ours`` must reach ``minimum`` x the rate of row ``peer`` (by ``metric``)."""

    ours: str
    peer: str
    metric: str          # "MB/s" or "objects/s"
    minimum: float


@dataclass(slots=True)
class Sample:
    contender: str
    rep: int
    files: int
    bytes: int
    wall_s: float
    peak_rss_kib: int | None
    ok: bool
    problem: str | None
    load1: float


@dataclass(slots=True)
class Context:
    work: Path                  # this run's scratch space: logs, journals, server data (host filesystem)
    dst_root: Path              # parent of every local destination (see scratchfs)
    rclone_config: Path
    gnu_time: bool
    timeout_override: float | None
    say: Callable[[str], None]
    drop_cache: Callable[[], None] | None = None  # the scratch filesystem's, where it can (cold-cache rows)
    server: Any = None          # vertexflow.testing.seaweedfs.SeaweedFS while S3 rows run
    s3: S3Access | None = None
    _serial: int = 0

    def timeout_for(self, files: int, nbytes: int) -> float:
        """Generous per-command bound: 60 s + 5 MB/s + 200 objects/s, unless --timeout says otherwise."""
        if self.timeout_override is not None:
            return self.timeout_override
        return 60 + nbytes / 5e6 + files / 200

    def fresh_name(self, *parts: str) -> str:
        self._serial += 1
        name = "-".join(p.lower().replace(" ", "").replace("_", "-") for p in parts)
        return f"{name}-{self._serial}"[:63]


class Scenario:
    key: str                 # e.g. "local-A"
    group: str               # "local", "s3-up", "s3-down", "rss"
    title: str               # e.g. "A local -> local"
    dataset: Dataset
    contenders: list[Contender]
    targets: list[Target]

    def moved(self, c: Contender) -> tuple[int, int]:
        return self.dataset.files, self.dataset.bytes

    def setup(self, ctx: Context) -> None: ...
    def prepare(self, ctx: Context, c: Contender, rep: int) -> Any: ...
    def invocation(self, ctx: Context, c: Contender, handle: Any) -> Invocation: ...
    def check(self, ctx: Context, c: Contender, handle: Any) -> str | None: ...
    def clear(self, ctx: Context, handle: Any) -> None: ...
    def teardown(self, ctx: Context) -> None: ...

    def describe_setup(self) -> str:
        return ""


def _expect(got: tuple[int, int], want: tuple[int, int], where: str) -> str | None:
    if got != want:
        return f"{where} holds {got[0]:,} files / {got[1]:,} bytes, expected {want[0]:,} / {want[1]:,}"
    return None


# -- local -> local --------------------------------------------------------------

class LocalScenario(Scenario):
    def __init__(self, key: str, title: str, dataset: Dataset, contenders: list[Contender],
                 targets: list[Target], group: str = "local",
                 sources: dict[str, tuple[Path, int, int]] | None = None) -> None:
        self.key, self.title, self.group = key, title, group
        self.dataset, self.contenders, self.targets = dataset, contenders, targets
        # per-contender (source dir, files, bytes); by default the whole dataset
        self.sources = sources or {c.name: (dataset.root, dataset.files, dataset.bytes) for c in contenders}

    def moved(self, c: Contender) -> tuple[int, int]:
        _, files, nbytes = self.sources[c.name]
        return files, nbytes

    def setup(self, ctx: Context) -> None:
        for src in {s for s, _, _ in self.sources.values()}:
            warm(src)

    def describe_setup(self) -> str:
        return "source read once before the timed runs (page cache warm)"

    def prepare(self, ctx: Context, c: Contender, rep: int) -> Path:
        dst = ctx.dst_root / ctx.fresh_name(self.key, c.tool, str(rep))
        remove_tree(dst)
        settle()
        return dst

    def invocation(self, ctx: Context, c: Contender, handle: Path) -> Invocation:
        return tools.local_to_local(c, self.sources[c.name][0], handle, ctx.rclone_config)

    def check(self, ctx: Context, c: Contender, handle: Path) -> str | None:
        return _expect(count_tree(handle), self.moved(c), str(handle))

    def clear(self, ctx: Context, handle: Path) -> None:
        remove_tree(handle)


class ColdLocalScenario(LocalScenario):
    """The local rows again with the page cache dropped before every timed run: every tool reads from the disk.

    The warm rows measure ``cp -r`` as a memory copy (4 GB/s on the benchmark
    VM); a copy of data that is not in memory, as a backup or migration
    mostly is, reads it from the disk, which is what this row measures.
    """

    def __init__(self, key: str, title: str, dataset: Dataset, contenders: list[Contender],
                 targets: list[Target]) -> None:
        super().__init__(key, title, dataset, contenders, targets, group="local-cold")

    def setup(self, ctx: Context) -> None:
        if ctx.drop_cache is None:
            raise RuntimeError("cold-cache rows need the loop image (--fs loop, as root)")

    def describe_setup(self) -> str:
        return ("page cache cold: the benchmark filesystem is unmounted and mounted again before every timed "
                "run, so each tool reads the source from the disk")

    def prepare(self, ctx: Context, c: Contender, rep: int) -> Path:
        dst = super().prepare(ctx, c, rep)
        assert ctx.drop_cache is not None
        ctx.drop_cache()
        return dst


# -- S3 ------------------------------------------------------------------------------

def _bucket_totals(ctx: Context, bucket: str, prefix: str) -> tuple[int, int]:
    client = ctx.server.boto3_client(read_timeout=120)
    files = total = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
        for item in page.get("Contents", ()):
            files += 1
            total += item["Size"]
    return files, total


#: the prefix each tool writes under, so a stray key is easy to attribute
PREFIX = {"vertexflow": "x", "s5cmd": "y", "rclone": "z", "limit": "w"}


class UploadScenario(Scenario):
    group = "s3-up"

    def __init__(self, key: str, title: str, dataset: Dataset, contenders: list[Contender],
                 targets: list[Target]) -> None:
        self.key, self.title = key, title
        self.dataset, self.contenders, self.targets = dataset, contenders, targets

    def setup(self, ctx: Context) -> None:
        warm(self.dataset.root)

    def describe_setup(self) -> str:
        return "source read once before the timed runs (page cache warm); a new bucket per run"

    def prepare(self, ctx: Context, c: Contender, rep: int) -> tuple[str, str]:
        bucket = ctx.fresh_name("up", self.dataset.label, c.tool, str(rep))
        ctx.server.create_bucket(bucket)
        settle()
        return bucket, PREFIX[c.tool]

    def invocation(self, ctx: Context, c: Contender, handle: tuple[str, str]) -> Invocation:
        assert ctx.s3 is not None
        bucket, prefix = handle
        return tools.upload(c, self.dataset.root, ctx.s3, bucket, prefix, ctx.rclone_config)

    def check(self, ctx: Context, c: Contender, handle: tuple[str, str]) -> str | None:
        bucket, prefix = handle
        return _expect(_bucket_totals(ctx, bucket, prefix), self.moved(c), f"s3://{bucket}/{prefix}/")

    def clear(self, ctx: Context, handle: tuple[str, str]) -> None:
        ctx.server.delete_bucket_recursive(handle[0])


class DownloadScenario(Scenario):
    group = "s3-down"

    def __init__(self, key: str, title: str, dataset: Dataset, contenders: list[Contender],
                 targets: list[Target], *, seeded_by: str = "s5cmd") -> None:
        self.key, self.title = key, title
        self.dataset, self.contenders, self.targets = dataset, contenders, targets
        self.bucket: str | None = None
        self.prefix = "data"
        #: "s5cmd": objects that carry no digest of their bytes; "vertexflow": objects with a stored
        #: CRC64NVME (as AWS keeps for every object since December 2024) and the sha256 metadata
        self.seeded_by = seeded_by

    def describe_setup(self) -> str:
        if self.seeded_by == "vertexflow":
            return ("source bucket filled once by vertexflow (a stored full-object CRC64NVME and the sha256 "
                    "metadata on every object), then downloaded once untimed (warm-up)")
        return ("source bucket filled once by s5cmd (no vertexflow metadata), then downloaded once "
                "untimed (warm-up)")

    def setup(self, ctx: Context) -> None:
        assert ctx.s3 is not None
        self.bucket = ctx.fresh_name("src", self.dataset.label)
        ctx.server.create_bucket(self.bucket)
        timeout = ctx.timeout_for(self.dataset.files, self.dataset.bytes)
        if self.seeded_by == "vertexflow":
            helper([tools.find("vertexflow"), "copy", str(self.dataset.root), f"s3://{self.bucket}/{self.prefix}",
                    "--no-progress", "--no-journal"], timeout=timeout, env=tools.vertexflow_env(ctx.s3))
        else:
            helper(tools.seed_upload(self.dataset.root, ctx.s3, self.bucket, self.prefix),
                   timeout=timeout, env=tools.s5cmd_env(ctx.s3))
        problem = _expect(_bucket_totals(ctx, self.bucket, self.prefix),
                          (self.dataset.files, self.dataset.bytes), f"seeded bucket {self.bucket}")
        if problem:
            raise RuntimeError(problem)
        scratch = ctx.dst_root / "warmup"
        remove_tree(scratch)
        helper([tools.find("s5cmd"), "--endpoint-url", ctx.s3.endpoint, "--numworkers",
                str(tools.REMOTE_TRANSFERS), "cp", f"s3://{self.bucket}/{self.prefix}/*", f"{scratch}/"],
               timeout=timeout, env=tools.s5cmd_env(ctx.s3))
        remove_tree(scratch)

    def prepare(self, ctx: Context, c: Contender, rep: int) -> Path:
        dst = ctx.dst_root / ctx.fresh_name(self.key, c.tool, str(rep))
        remove_tree(dst)
        settle()
        return dst

    def invocation(self, ctx: Context, c: Contender, handle: Path) -> Invocation:
        assert ctx.s3 is not None and self.bucket is not None
        return tools.download(c, self.bucket, self.prefix, handle, ctx.s3, ctx.rclone_config)

    def check(self, ctx: Context, c: Contender, handle: Path) -> str | None:
        if c.tool == "limit":  # it reads into nothing: its own count of the bytes it received
            try:
                counts = json.loads(handle.read_text())
                got = (int(counts["objects"]), int(counts["bytes"]))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                return f"no counts from limit.py in {handle}: {exc}"
            return _expect(got, self.moved(c), f"limit.py's counts ({handle})")
        return _expect(count_tree(handle), self.moved(c), str(handle))

    def clear(self, ctx: Context, handle: Path) -> None:
        remove_tree(handle)

    def teardown(self, ctx: Context) -> None:
        if self.bucket is not None and ctx.server is not None and ctx.server.running:
            ctx.server.delete_bucket_recursive(self.bucket)
            self.bucket = None


# -- the loop -----------------------------------------------------------------------

@dataclass(slots=True)
class ScenarioResult:
    scenario: Scenario
    repeat: int
    samples: list[Sample] = field(default_factory=list)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    seconds: float = 0.0
    error: str | None = None
    interrupted: bool = False


def run_scenario(ctx: Context, result: ScenarioResult) -> None:
    """Fill ``result`` (given by the caller so that a Ctrl-C keeps the rounds already measured)."""
    scenario, repeat = result.scenario, result.repeat
    result.load_before = os.getloadavg()
    began = time.monotonic()
    logs = ctx.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ctx.say(f"== {scenario.title}: {', '.join(c.name for c in scenario.contenders)}; "
            f"{repeat} round{'s' if repeat > 1 else ''}")
    try:
        scenario.setup(ctx)
        for rep in range(1, repeat + 1):
            for c in scenario.contenders:
                handle = scenario.prepare(ctx, c, rep)
                try:
                    inv = scenario.invocation(ctx, c, handle)
                    if c.tool == "vertexflow":
                        # a fresh journal per run, as on a first copy (not the user's ~/.local/state one)
                        journals = ctx.work / "journals"
                        journals.mkdir(exist_ok=True)
                        inv.env["VERTEXFLOW_JOURNAL"] = str(journals / f"{ctx.fresh_name('journal')}.db")
                    files, nbytes = scenario.moved(c)
                    load1 = os.getloadavg()[0]
                    log_path = logs / f"{ctx.fresh_name(scenario.key, c.name, str(rep))}.log"
                    res = run(inv.argv, env=inv.env, timeout=ctx.timeout_for(files, nbytes),
                              log_path=log_path, gnu_time=ctx.gnu_time)
                    problem = None
                    if res.timed_out:
                        problem = f"timed out after {res.wall_s:.0f} s"
                    elif res.returncode != 0:
                        problem = f"exit status {res.returncode}: {res.log.strip()[-600:]}"
                    else:
                        problem = scenario.check(ctx, c, handle)
                    sample = Sample(c.name, rep, files, nbytes, res.wall_s, res.peak_rss_kib,
                                    problem is None, problem, load1)
                    result.samples.append(sample)
                    rss = f"{res.peak_rss_kib * 1024 / 1e6:,.0f} MB" if res.peak_rss_kib else "?"
                    status = "ok" if problem is None else f"FAILED: {problem}"
                    ctx.say(f"   round {rep} {c.name:<24} {res.wall_s:8.2f} s  "
                            f"{nbytes / 1e6 / res.wall_s:9.1f} MB/s  {files / res.wall_s:9.0f} obj/s  "
                            f"peak RSS {rss:>8}  load {load1:.2f}  {status}")
                finally:
                    scenario.clear(ctx, handle)
    except Exception as exc:  # noqa: BLE001 - one broken scenario does not sink the rest of the run
        result.error = f"{type(exc).__name__}: {exc}"
        ctx.say(f"   scenario failed: {result.error}")
    except KeyboardInterrupt:
        result.interrupted = True
        raise
    finally:
        try:
            scenario.teardown(ctx)
        finally:
            result.load_after = os.getloadavg()
            result.seconds = time.monotonic() - began
