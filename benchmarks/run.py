#!/usr/bin/env python3
"""Run vertexflow's benchmarks against its peers; one command, all on the same data.

    python benchmarks/run.py                    # full run: local, S3 and RSS rows
    python benchmarks/run.py --quick            # small datasets, 1 round: smoke test
    python benchmarks/run.py --only local --repeat 5
    python benchmarks/run.py --only local,local-cold  # local rows, page cache warm and cold
    python benchmarks/run.py --only s3-up,s3-down --datasets B

Writes ``latest.md`` / ``latest.json`` and a dated copy of each to ``--out``
(``quick-latest.*`` for ``--quick``) and prints the markdown. See README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import datasets, report, scratchfs, tools
from benchmarks.measure import have_gnu_time, remove_tree
from benchmarks.scenarios import (
    Context,
    DownloadScenario,
    ColdLocalScenario,
    LocalScenario,
    Scenario,
    ScenarioResult,
    Target,
    UploadScenario,
    run_scenario,
)

HERE = Path(__file__).resolve().parent
GROUPS = ("local", "local-cold", "s3-up", "s3-down", "rss", "plan", "sync", "yandex", "stages", "backup", "cluster",
          "metadata")
#: groups run by their own scripts, reported in latest-extra.md
EXTRA = {"plan": "plan_rss.py", "sync": "sync_nochange.py", "yandex": "yandex_rows.py", "stages": "stages.py",
         "backup": "backup_rows.py", "cluster": "cluster_rows.py", "metadata": "metadata_rows.py"}
ALIASES = {"s3": ("s3-up", "s3-down"), "all": GROUPS}
#: issue 23: verified downloads and uploads at least this fraction of what the server delivers to a trivial client
LIMIT_TARGET = 0.85


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small datasets (A 4 x 32 MiB, B 2,000 files, C 20,000) and 1 round, for smoke tests")
    p.add_argument("--only", default="all",
                   help=f"comma-separated groups: {', '.join(GROUPS)}, s3 (= s3-up,s3-down), all [all]")
    p.add_argument("--datasets", default="A,B", help="datasets for the throughput rows [A,B]")
    p.add_argument("--repeat", type=int, default=None, help="rounds per scenario, median reported [3; 1 with --quick]")
    p.add_argument("--rss-repeat", type=int, default=1, help="rounds of the RSS scenario [1]")
    p.add_argument("--out", type=Path, default=HERE / "results", help="where the reports go [benchmarks/results]")
    p.add_argument("--data-dir", type=Path, default=HERE / "data",
                   help="datasets (or, with the loop image, the image holding them), kept between runs [benchmarks/data]")
    p.add_argument("--work-dir", type=Path, default=HERE / "work",
                   help="scratch space: destinations, server data, logs; removed at the end [benchmarks/work]")
    p.add_argument("--keep-work", action="store_true", help="keep the scratch space (logs) for debugging")
    p.add_argument("--fs", choices=("auto", "loop", "plain"), default="auto",
                   help="loop: datasets and copies on a journaled ext4 image of our own (needs root); plain: on "
                        "the host's filesystem; auto: loop where possible [auto] (see scratchfs.py)")
    p.add_argument("--regen", action="store_true", help="regenerate the datasets even if they match their manifest")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds allowed per command [60 + 5 MB/s + 200 objects/s of the row's data]")
    args = p.parse_args(argv)
    groups: list[str] = []
    for g in (x.strip() for x in args.only.split(",") if x.strip()):
        for name in ALIASES.get(g, (g,)):
            if name not in GROUPS:
                p.error(f"unknown group {g!r} in --only; known: {', '.join(GROUPS)}, s3, all")
            if name not in groups:
                groups.append(name)
    args.groups = groups
    args.dataset_labels = [d.strip().upper() for d in args.datasets.split(",") if d.strip()]
    if any(d not in ("A", "B") for d in args.dataset_labels):
        p.error("--datasets takes A and/or B (C is the RSS dataset)")
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1 or args.rss_repeat < 1:
        p.error("--repeat and --rss-repeat must be at least 1")
    return args


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def check_tools(groups: list[str]) -> dict[str, str]:
    """Find every tool the chosen groups need, or fail naming the missing ones; returns their versions."""
    need = ["vertexflow", "rm"]
    if "local" in groups or "local-cold" in groups:
        need += ["rclone", "cp"]
    if "s3-up" in groups or "s3-down" in groups:
        need += ["rclone", "s5cmd", "weed"]
    missing, versions = [], {}
    for name in dict.fromkeys(need):
        try:
            path = tools.find(name)
        except tools.ToolMissing as exc:
            missing.append(str(exc))
            continue
        if name != "rm":
            versions[name] = f"{tools.version(path)} ({path})"
    if "s3-up" in groups or "s3-down" in groups:
        try:
            import boto3  # noqa: F401

            from vertexflow.testing.seaweedfs import SeaweedFS  # noqa: F401
        except ImportError as exc:
            missing.append(f"the S3 rows need vertexflow.testing.seaweedfs and boto3 importable by "
                           f"{sys.executable}: {exc}")
    if missing:
        raise SystemExit("benchmarks: missing tools:\n  " + "\n  ".join(missing))
    return versions


def build_scenarios(args: argparse.Namespace, ds: dict[str, datasets.Dataset]) -> list[Scenario]:
    out: list[Scenario] = []
    labels = args.dataset_labels
    for label in labels:
        metric = "MB/s" if label == "A" else "objects/s"
        need = (2.0, 0.7) if label == "A" else (1.2, 0.6)
        targets = [Target("vertexflow", "rclone --checksum", metric, need[0]),
                   Target("vertexflow", "cp -r", metric, need[1])]
        if "local" in args.groups:
            out.append(LocalScenario(f"local-{label}", f"{label} local -> local", ds[label],
                                     [tools.VF, tools.VF_NOFSYNC, tools.VF_NOVERIFY, tools.RCLONE_LOCAL, tools.CP],
                                     targets))
        if "local-cold" in args.groups:
            out.append(ColdLocalScenario(f"cold-{label}", f"{label} local -> local, cold cache", ds[label],
                                         [tools.VF, tools.RCLONE_LOCAL, tools.CP], targets))
    for group, cls, arrow in (("s3-up", UploadScenario, "local -> S3"), ("s3-down", DownloadScenario, "S3 -> local")):
        if group in args.groups:
            for label in labels:
                metric = "MB/s" if label == "A" else "objects/s"
                # downloads: a --no-verify row too, for what the SHA-256 of every byte costs against s5cmd
                ours = ([tools.VF_S3, tools.VF_S3_NOFSYNC, tools.VF_S3_NOVERIFY] if group == "s3-down"
                        else [tools.VF_S3])
                # the limit row: the server with a client that only moves bytes (benchmarks/limit.py)
                limit = tools.limit_contender("get" if group == "s3-down" else "put")
                out.append(cls(f"{group}-{label}", f"{label} {arrow}", ds[label],
                               [*ours, tools.S5CMD, tools.RCLONE_S3, limit],
                               [Target("vertexflow", "s5cmd", metric, 1.0),
                                Target("vertexflow", "rclone", metric, 1.0),
                                Target("vertexflow", limit.name, metric, LIMIT_TARGET)]))
                if group == "s3-down" and label == "A":
                    # the same objects as written by vertexflow (or any AWS client since December 2024):
                    # each keeps a CRC64NVME, which checks a download at memory speed instead of a SHA-256
                    out.append(DownloadScenario(f"{group}-{label}-crc", f"{label} {arrow}, stored CRC64NVME",
                                                ds[label], [tools.VF_S3, tools.VF_S3_NOFSYNC, tools.S5CMD, tools.RCLONE_S3,
                                                            limit],
                                                [Target("vertexflow", "s5cmd", metric, 1.0),
                                                 Target("vertexflow", "rclone", metric, 1.0),
                                                 Target("vertexflow", limit.name, metric, LIMIT_TARGET)],
                                                seeded_by="vertexflow"))
    if "rss" in args.groups:
        c = ds["C"]
        per_part = c.files // c.spec.parts
        part_bytes = per_part * c.spec.max_size  # C's files all have one size
        small = tools.Contender(f"vertexflow, {per_part:,} objects", "vertexflow", True, tools.VF_RSS.flags)
        large = tools.Contender(f"vertexflow, {c.files:,} objects", "vertexflow", True, tools.VF_RSS.flags)
        out.append(LocalScenario(
            "rss-C", "C local -> local, peak RSS", c, [small, large], [],
            group="rss", sources={small.name: (c.part(0), per_part, part_bytes),
                                  large.name: (c.root, c.files, c.bytes)}))
    return out


def code_identity() -> str:
    """Which vertexflow was measured: the commit, uncommitted changes, and a digest of the package's files."""
    import hashlib
    import subprocess

    repo = HERE.parent
    h = hashlib.sha256()
    for path in sorted((repo / "vertexflow").rglob("*.py")):
        h.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes())
    digest = h.hexdigest()[:12]
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "vertexflow"],
                               capture_output=True, text=True, timeout=10, check=False).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return f"vertexflow/*.py digest {digest} (git not available)"
    changes = f" + {len(dirty)} uncommitted change(s) under vertexflow/" if dirty else ""
    return f"commit {head or '?'}{changes}; vertexflow/*.py digest {digest} (at start)"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def host_line() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()} ({os.cpu_count()} CPUs, {mem:.0f} GiB RAM, Linux {platform.release()})"


def _lock(work: Path) -> int:
    """One harness at a time: two would measure each other."""
    import fcntl

    fd = os.open(work / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SystemExit(f"benchmarks: another run holds {work / '.lock'}; wait for it to finish") from None
    return fd


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every `finally` (server, mount, scratch space) runs
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where a parent shell ignored it
    started = dt.datetime.now().astimezone()
    code = code_identity()
    versions = check_tools(args.groups)
    gnu_time = have_gnu_time()
    if not gnu_time:
        say("note: /usr/bin/time (GNU time) not found: peak RSS is sampled from /proc every 20 ms instead")

    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    lock = _lock(work)
    results: list[ScenarioResult] = []
    ds: dict[str, datasets.Dataset] = {}
    interrupted = False
    scratch = None
    try:
        scratch = scratchfs.open_scratch(args.fs, data_dir=Path(args.data_dir).resolve(), work_dir=work, say=say)
        say(f"filesystem: {scratch.description}")
        if scratch.warning:
            say(f"WARNING: {scratch.warning}")
        specs = datasets.specs(args.quick)
        wanted = list(args.dataset_labels) if set(args.groups) - {"rss", *EXTRA} else []
        if "rss" in args.groups:
            wanted.append("C")
        for label in wanted:
            ds[label] = datasets.ensure(scratch.data_dir, specs[label], regen=args.regen, say=say)
        results = measure_all(args, ds, scratch, work, started, gnu_time)
    except KeyboardInterrupt:
        interrupted = True
        say("interrupted: cleaned up; writing what was measured")
    finally:
        if scratch is not None:
            scratch.close(say)
        os.close(lock)

    latest = "quick-latest" if args.quick else "latest"
    if results:
        write_report(args, argv, results, ds, scratch, started, code, versions, gnu_time, interrupted)
    if not interrupted:
        run_extra_scripts(args, latest)
    if not results and not set(EXTRA) & set(args.groups):
        return 130 if interrupted else 1
    return 130 if interrupted else 0


def measure_all(args: argparse.Namespace, ds: dict[str, datasets.Dataset], scratch: scratchfs.Scratch,
                work: Path, started: dt.datetime, gnu_time: bool) -> list[ScenarioResult]:
    """Start the server if needed and run every scenario; always stops it and removes the scratch space.

    A Ctrl-C returns the results so far (marked by the caller) instead of losing them.
    """
    run_dir = Path(tempfile.mkdtemp(prefix=f"run-{started:%Y%m%d-%H%M%S}-", dir=work))
    dst_root = scratch.dst_root / run_dir.name
    dst_root.mkdir(parents=True)
    rclone_config = run_dir / "rclone.conf"
    rclone_config.write_text("")
    ctx = Context(work=run_dir, dst_root=dst_root, rclone_config=rclone_config, gnu_time=gnu_time,
                  timeout_override=args.timeout, say=say,
                  drop_cache=scratch.drop_cache if scratch.can_drop_cache else None)
    results: list[ScenarioResult] = []
    server = None
    try:
        scenarios = build_scenarios(args, ds)
        if any(s.group in ("s3-up", "s3-down") for s in scenarios):
            from vertexflow.testing.seaweedfs import SeaweedFS

            server = SeaweedFS(run_dir / "seaweedfs")
            say("starting SeaweedFS ...")
            server.start()
            ctx.server = server
            ctx.s3 = tools.S3Access(server.endpoint, server.access_key, server.secret_key, server.region)
            say(f"SeaweedFS S3 at {server.endpoint}")
        for sc in scenarios:
            result = ScenarioResult(sc, args.rss_repeat if sc.group == "rss" else args.repeat)
            results.append(result)
            run_scenario(ctx, result)
    except KeyboardInterrupt:
        results = [r for r in results if r.samples]
        if not results:
            raise
        say("interrupted: stopping")
        results[-1].interrupted = True
    finally:
        if server is not None:
            server.stop()
        remove_tree(dst_root)
        if args.keep_work:
            say(f"scratch space kept in {run_dir}")
        else:
            remove_tree(run_dir)
    return results


def write_report(args: argparse.Namespace, argv: list[str] | None, results: list[ScenarioResult],
                 ds: dict[str, datasets.Dataset], scratch: scratchfs.Scratch | None, started: dt.datetime,
                 code: str, versions: dict[str, str], gnu_time: bool, interrupted: bool) -> None:
    interrupted = interrupted or any(r.interrupted for r in results)
    specs_used = [f"{d.label} = {d.spec.description}: {d.files:,} files, {d.bytes / 1e6:,.1f} MB "
                  f"({d.root})" for d in ds.values()]
    notes = [
        ("Each scenario's rows run one after another in this process, on the same data, interleaved per "
        f"round (every tool once, in table order, then the next round); {args.repeat} round(s) per "
        f"throughput scenario, {args.rss_repeat} for RSS; medians reported."),
        ("Before each timed run the destination is absent (a fresh directory, or a fresh bucket for uploads) "
        "and dirty pages are flushed (`sync`); after it the output is counted (files and bytes must equal "
        "the source; a run that does not is reported failed) and deleted."),
        ("Page cache warm: the source is read once before the timed runs (S3 sources: downloaded once with "
        "s5cmd, untimed); the cold-cache rows instead unmount and mount the benchmark filesystem before every "
        "timed run. Destination writes stay in the page cache for the peers and `vertexflow --no-fsync`; "
        "vertexflow syncs them by default (a file before its rename, a batch of small files at once)."),
        f"Filesystem: {scratch.description if scratch else '?'}.",
        "Wall time includes process start-up (vertexflow's Python interpreter and imports too).",
        "Peak RSS: `/usr/bin/time -f %M` (the kernel's ru_maxrss of the tool's largest process)."
        if gnu_time else "Peak RSS: VmHWM of the tool's process tree sampled every 20 ms.",
        ("SeaweedFS (`weed mini`, one process) runs on the same machine and competes for the same CPUs; "
        "the S3 rows measure the pair, not the client alone."),
        (f"Load average at start {'/'.join(f'{x:.2f}' for x in results[0].load_before)}, at end "
        f"{'/'.join(f'{x:.2f}' for x in results[-1].load_after)} (2 cores: above 2 means processes waited "
        "for a CPU); other processes may share this machine."),
    ]
    if any(r.scenario.group in ("s3-up", "s3-down") for r in results):
        notes.append("Limit rows (`limit`): benchmarks/limit.py, a trivial aiohttp client with vertexflow's "
                     "default objects in flight, part size, parts per object and connections (flags below), run "
                     "and timed like the other rows (Python start-up included); downloads are read into "
                     "nothing (its own byte count is checked), uploads checked by listing the bucket. "
                     f"Targets: vertexflow >= {LIMIT_TARGET:g}x limit (column \"of limit\").")
    if scratch is not None and scratch.warning:
        notes.insert(0, f"WARNING: {scratch.warning}.")
    if interrupted:
        notes.insert(0, "INTERRUPTED: this report covers only the rounds that ran.")
    now_code = code_identity()
    meta = {
        "mode": "quick" if args.quick else "full",
        "started": started.isoformat(timespec="seconds"),
        "host": host_line(),
        "command": shlex.join([Path(sys.executable).name, "benchmarks/run.py", *(argv or sys.argv[1:])]),
        "python": sys.version.split()[0],
        "code": code if now_code == code else f"{code}; CHANGED while the benchmark ran (now: {now_code})",
        "filesystem": scratch.kind if scratch else None,
        "repeat": args.repeat,
        "rss_repeat": args.rss_repeat,
        "versions": versions,
        "datasets": specs_used,
        "notes": notes,
        "duration_s": round(time.time() - started.timestamp(), 1),
    }
    stem = f"{started:%Y%m%d-%H%M%S}" + ("-quick" if args.quick else "")
    latest = "quick-latest" if args.quick else "latest"
    path, text = report.write(results, meta, args.out, stem, latest)
    print(text)
    say(f"report written to {path} (and {latest}.md/.json beside it)")


def run_extra_scripts(args: argparse.Namespace, latest: str) -> None:
    """The groups that are scripts of their own (planning RSS, no-change sync, Yandex rows, stages)."""
    scripts = []
    for group, script in EXTRA.items():
        if group in args.groups:
            if args.quick:
                extra = ["--count", "100000"] if group == "plan" else ["--quick"]
            else:
                extra = []
            if group in ("sync", "cluster", "metadata"):
                extra += ["--data-dir", str(args.data_dir)]
            scripts.append([script, *extra])
    sections = []
    for script, *script_args in scripts:
        say(f"running {script} {' '.join(script_args)}")
        out = subprocess.run([sys.executable, str(HERE / script), *script_args],
                             capture_output=True, text=True, timeout=3600)
        body = out.stdout if out.returncode == 0 else f"FAILED ({out.returncode}):\n{out.stderr[-3000:]}"
        sections.append(f"## {script} {' '.join(script_args)}\n\n```\n{body.strip()}\n```\n")
        print(sections[-1])
    if sections:
        (args.out / f"{latest}-extra.md").write_text("# vertexflow: planning, no-change sync, Yandex.Disk, stages\n\n"
                                                     + "\n".join(sections))


if __name__ == "__main__":
    sys.exit(main())
