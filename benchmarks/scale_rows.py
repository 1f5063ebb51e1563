#!/usr/bin/env python3
"""Scale: a copy and a no-change sync of N generated 1 KiB files, local -> S3, vertexflow against rclone and s5cmd.

    python benchmarks/scale_rows.py --objects 100000
    python benchmarks/scale_rows.py --objects 1000000 --tools vertexflow --deadline 21:40 --remove-data
    python benchmarks/scale_rows.py --render benchmarks/results/scale-1000000.json --skip-reason "..."

Generates N files of 1 KiB from a fixed seed under ``--data-dir`` (default
benchmarks/data/scale-N; reused when a finished one is there), in nested
folders of 1,000 files each (``d00/d00/f0000000.bin``). Starts a SeaweedFS
(``weed mini``) in a fresh work folder and puts a counting proxy in front of
it: vertexflow's FaultProxy with no fault at all, which counts every HTTP
request it forwards. Then, for each tool, into its own fresh bucket: the copy
of the whole tree, then the same command as a sync (nothing changed, so
nothing should be written). Each command runs alone under GNU ``time``
(benchmarks/measure.py): its wall time and its own peak RSS. After a copy the
bucket's keys are counted with an independent client (boto3, straight to the
server); after a sync, the PUTs the proxy saw must be 0.

Every tool talks through the same proxy, so each pays the same small delay
per request (the proxy is a Python thread of this process; its CPU seconds
are in the table). The flat-memory claim holds when a tool's peak RSS at N is
within 50 MB of its peak at 100,000 (compared from scale-100000.json when it
is there).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import resource
import shlex
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `vertexflow` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import measure, tools  # noqa: E402
from vertexflow.testing.faults import ThreadedFaultProxy  # noqa: E402
from vertexflow.testing.seaweedfs import SeaweedFS  # noqa: E402

HERE = Path(__file__).resolve().parent
#: files per folder: a real tree spreads its files over folders, and 1,000 keeps every listing page full
PER_DIR = 1000
#: 1 KiB: small enough that requests, not bytes, decide the time
SIZE = 1024
#: fixed, so every run copies the same bytes
SEED = 20261207
PREFIX = "scale"
#: within this of the 100,000-object run a peak RSS counts as flat (the issue's bound)
FLAT_MB = 50
ALL_TOOLS = ("vertexflow", "rclone", "s5cmd")
CONTENDERS = {"vertexflow": tools.VF_S3, "rclone": tools.RCLONE_S3, "s5cmd": tools.S5CMD}
#: the sub-command each tool's copy line names, and what its sync is called
SYNC_WORD = {"vertexflow": ("copy", "sync"), "rclone": ("copy", "sync"), "s5cmd": ("cp", "sync")}


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def rel(i: int) -> str:
    """The i-th file's path: 100 folders of 1,000 files under each of the top folders."""
    return f"d{i // (PER_DIR * 100):02d}/d{i // PER_DIR % 100:02d}/f{i:07d}.bin"


def generate(root: Path, count: int) -> float:
    """``count`` files of SIZE bytes under ``root`` (reused when its marker says it is complete); seconds spent."""
    marker = root.with_name(root.name + ".complete")
    if marker.is_file() and marker.read_text().strip() == str(count) and root.is_dir():
        return 0.0
    start = time.perf_counter()
    marker.unlink(missing_ok=True)
    measure.remove_tree(root, timeout=3600)
    rng = random.Random(SEED)
    for first in range(0, count, PER_DIR):
        n = min(PER_DIR, count - first)
        blob = rng.randbytes(SIZE * n)
        folder = root / rel(first).rsplit("/", 1)[0]
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(n):
            with open(root / rel(first + j), "wb") as f:
                f.write(blob[j * SIZE:(j + 1) * SIZE])
    marker.write_text(f"{count}\n")
    return time.perf_counter() - start


def sync_invocation(tool: str, copy: tools.Invocation) -> tools.Invocation:
    """The copy's command line with its sub-command turned into a sync (same source, destination and flags)."""
    word, sync = SYNC_WORD[tool]
    argv = list(copy.argv)
    argv[argv.index(word)] = sync
    return tools.Invocation(argv, copy.env)


def kinds(identities: list[str]) -> Counter[str]:
    """Requests by kind from the proxy's identities (``METHOD /bucket/key?query#n``): a GET of a bucket is a LIST."""
    out: Counter[str] = Counter()
    for ident in identities:
        method, _, rest = ident.partition(" ")
        path = rest.partition("?")[0].strip("/")
        if method == "GET" and "/" not in path:
            out["LIST"] += 1
        else:
            out[method] += 1
    return out


def bucket_keys(server: SeaweedFS, bucket: str) -> int:
    client = server.boto3_client()
    return sum(page.get("KeyCount", 0)
               for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket))


def own_summary(log: Path) -> dict[str, Any] | None:
    """vertexflow's --json summary from its log (stdout and stderr together), if it printed one."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    start = text.find("\n{") + 1 if not text.startswith("{") else 0
    if start == 0 and not text.startswith("{"):
        return None
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[start:])
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def deadline_at(text: str | None) -> dt.datetime | None:
    """``HH:MM`` UTC today (tomorrow if already past by more than 12 hours)."""
    if not text:
        return None
    hh, mm = (int(x) for x in text.split(":"))
    at = now_utc().replace(hour=hh, minute=mm, second=0, microsecond=0)
    if (now_utc() - at).total_seconds() > 12 * 3600:
        at += dt.timedelta(days=1)
    return at


def run_rows(args: argparse.Namespace, src: Path, work: Path, server: SeaweedFS,
             tp: ThreadedFaultProxy, deadline: dt.datetime | None) -> list[dict[str, Any]]:
    proxy = tp.proxy
    s3 = tools.S3Access(proxy.endpoint, server.access_key, server.secret_key, server.region)
    rclone_config = work / "rclone.conf"
    rclone_config.write_text("")
    journal = work / "vf-journal.db"
    rows: list[dict[str, Any]] = []
    for tool in args.tools:
        bucket = f"scale-{tool}"
        server.create_bucket(bucket)
        copy = tools.upload(CONTENDERS[tool], src, s3, bucket, PREFIX, rclone_config)
        if tool == "vertexflow":  # its own summary (its requests) and a journal of its own, not the user's
            copy = tools.Invocation([*copy.argv, "--json", "--journal", str(journal)], copy.env)
        copy_ok = False
        for op, inv in (("copy", copy), ("no-change sync", sync_invocation(tool, copy))):
            row: dict[str, Any] = {"tool": tool, "op": op, "objects": args.objects,
                                   "command": shlex.join([Path(inv.argv[0]).name, *inv.argv[1:]])}
            rows.append(row)
            if op != "copy" and not copy_ok:
                row["note"] = "not run: the copy before it did not finish"
                continue
            timeout = args.timeout
            if deadline is not None:
                left = (deadline - now_utc()).total_seconds()
                if left <= 0:
                    row["note"] = f"not run: the deadline {deadline:%H:%M} UTC had passed"
                    continue
                timeout = min(timeout, left)
            measure.settle()
            time.sleep(1)  # the previous tool's connections close before the counts are zeroed
            tp.call(lambda: proxy.rearm(0, {}))
            time.sleep(0.2)
            row["load_before"] = round(os.getloadavg()[0], 2)
            cpu0 = cpu_self()
            started = now_utc()
            log = work / f"{tool}-{op.replace(' ', '-')}.log"
            res = measure.run(inv.argv, env=inv.env, timeout=timeout, log_path=log)
            time.sleep(0.2)  # the last answers leave the proxy
            row.update(started=f"{started:%H:%M:%S}", seconds=round(res.wall_s, 2),
                       requests=proxy.requests, by_kind=dict(kinds(proxy.identities).most_common()),
                       peak_rss_mb=round(res.peak_rss_kib / 1024, 1) if res.peak_rss_kib else None,
                       proxy_cpu_s=round(cpu_self() - cpu0, 1), returncode=res.returncode)
            if res.timed_out:
                why = "the deadline" if timeout < args.timeout else f"--timeout {args.timeout:.0f} s"
                row["note"] = f"stopped by {why} after {res.wall_s:.0f} s (not finished)"
                continue
            if not res.ok:
                row["note"] = f"failed: exit {res.returncode}: {res.log[-300:]!r}"
                continue
            if tool == "vertexflow":
                summary = own_summary(log)
                if summary is not None:
                    row["own_requests"] = summary.get("requests")
            if op == "copy":
                have = bucket_keys(server, bucket)
                row["keys_in_bucket"] = have
                copy_ok = have == args.objects
                if not copy_ok:
                    row["note"] = f"only {have:,} of {args.objects:,} objects in the bucket"
            elif row["by_kind"].get("PUT", 0):
                row["note"] = f"wrote {row['by_kind']['PUT']:,} objects although nothing changed"
            print(json.dumps(row), flush=True)
    return rows


def fmt(v: Any, spec: str = ",") -> str:
    return "-" if v is None else format(v, spec)


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]], base: dict[tuple[str, str], float] | None) -> str:
    n = meta["objects"]
    out = [f"# Scale: {n:,} objects of 1 KiB, local -> S3 (SeaweedFS on 127.0.0.1)", "",
           f"Run {meta['started']} to {meta['ended']} UTC on {meta['cpus']} cores "
           f"({meta['memory_gib']} GiB RAM), load average before {meta['load_before']} and after "
           f"{meta['load_after']} (the machine is shared); vertexflow commit {meta['commit']}; "
           f"{meta['versions']}.", "",
           f"Command: `{meta['argv']}`. Source generated in {meta['generate_s']:.0f} s "
           f"({'reused' if meta['generate_s'] == 0 else 'fresh'}): {n:,} files in folders of {PER_DIR:,}, "
           f"seed {SEED}. Each tool writes into its own fresh bucket; its sync is the same command again with "
           "nothing changed. Requests are counted by a proxy in front of the server "
           "(vertexflow.testing.faults.FaultProxy, no faults); LIST is a GET of the bucket.", "",
           "| tool | run | seconds | objects/s | requests | requests/object | requests by kind | "
           "peak RSS (MB) | load before | proxy CPU (s) | notes |",
           "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---|"]
    for r in rows:
        secs = r.get("seconds")
        done = "note" not in r
        rate = round(n / secs) if done and secs else None
        per = round(r["requests"] / n, 3) if done and r.get("requests") is not None else None
        by = ", ".join(f"{k} {v:,}" for k, v in r.get("by_kind", {}).items()) or "-"
        notes = []
        if r.get("own_requests") is not None:
            notes.append(f"vertexflow counted {r['own_requests']:,} requests itself")
        if r.get("keys_in_bucket") is not None:
            notes.append(f"{r['keys_in_bucket']:,} keys in the bucket after (boto3)")
        if "note" in r:
            notes.append(f"**{r['note']}**")
        out.append(f"| {r['tool']} | {r['op']} | {fmt(secs, ',.2f')} | {fmt(rate)} | {fmt(r.get('requests'))} | "
                   f"{fmt(per)} | {by} | {fmt(r.get('peak_rss_mb'))} | {fmt(r.get('load_before'))} | "
                   f"{fmt(r.get('proxy_cpu_s'))} | {'; '.join(notes)} |")
    out += ["", "Commands (endpoint and bucket as run; every tool reads its credentials from the environment):", ""]
    out += [f"- {r['tool']} {r['op']}: `{r['command']}`" for r in rows if "command" in r]
    if base is not None:
        out += ["", f"Peak RSS against the 100,000-object run (scale-100000.json); flat means within {FLAT_MB} MB:",
                "", "| tool | run | peak RSS here (MB) | at 100,000 (MB) | difference (MB) | flat? |",
                "|---|---|---:|---:|---:|---|"]
        for r in rows:
            was = base.get((r["tool"], r["op"]))
            now = r.get("peak_rss_mb")
            if was is None or now is None or "note" in r:
                out.append(f"| {r['tool']} | {r['op']} | {fmt(now)} | {fmt(was)} | - | not measured |")
                continue
            diff = round(now - was, 1)
            out.append(f"| {r['tool']} | {r['op']} | {now} | {was} | {diff:+} | "
                       f"{'yes' if abs(diff) <= FLAT_MB else '**NO**'} |")
    return "\n".join(out) + "\n"


def baseline(results: Path) -> dict[tuple[str, str], float] | None:
    path = results / "scale-100000.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return {(r["tool"], r["op"]): r["peak_rss_mb"] for r in data["rows"]
            if r.get("peak_rss_mb") is not None and "note" not in r}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--objects", type=int, default=1_000_000)
    p.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma-separated, of " + ", ".join(ALL_TOOLS))
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per command")
    p.add_argument("--deadline", default=None, help="HH:MM UTC: start nothing after it, stop a command at it")
    p.add_argument("--data-dir", type=Path, default=None, help="[benchmarks/data/scale-N]")
    p.add_argument("--out", type=Path, default=None, help="[benchmarks/results/scale-N.md]")
    p.add_argument("--remove-data", action="store_true", help="delete the generated files at the end")
    p.add_argument("--skip-reason", default="not in --tools",
                   help="why the tools left out of --tools did not run, for their rows")
    p.add_argument("--render", type=Path, default=None, metavar="JSON",
                   help="only write the markdown again from a run's JSON (with --skip-reason, --out)")
    args = p.parse_args()
    if args.render is not None:
        render(args)
        return
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    bad = [t for t in args.tools if t not in ALL_TOOLS]
    if bad or args.objects < 1:
        p.error(f"--tools: unknown {bad}" if bad else "--objects must be at least 1")
    deadline = deadline_at(args.deadline)
    src = args.data_dir or HERE / "data" / f"scale-{args.objects}"
    out = args.out or HERE / "results" / f"scale-{args.objects}.md"
    for t in args.tools:
        tools.find(t)
    meta: dict[str, Any] = {
        "objects": args.objects, "started": f"{now_utc():%Y-%m-%d %H:%M:%S}", "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "load_before": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "argv": shlex.join(["python", "benchmarks/scale_rows.py", *sys.argv[1:]]),
        "commit": measure.helper(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
                                 timeout=30).stdout.strip(),
        "versions": "; ".join(f"{t} {tools.version(tools.find(t))}" for t in args.tools),
    }
    print(f"generating {args.objects:,} files under {src} ...", flush=True)
    meta["generate_s"] = round(generate(src, args.objects), 1)
    (HERE / "work").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"scale-{args.objects}-", dir=HERE / "work"))
    rows: list[dict[str, Any]] = []
    try:
        with SeaweedFS(work / "seaweed") as server, \
                ThreadedFaultProxy(int(server.endpoint.rsplit(":", 1)[1]), rates={}) as tp:
            rows = run_rows(args, src, work, server, tp, deadline)
    finally:
        measure.remove_tree(work, timeout=3600)
        if args.remove_data:
            measure.remove_tree(src, timeout=3600)
            src.with_name(src.name + ".complete").unlink(missing_ok=True)
    meta["ended"] = f"{now_utc():%H:%M:%S}"
    meta["load_after"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    write(out, meta, with_skipped(rows, args.objects, args.skip_reason))


def with_skipped(rows: list[dict[str, Any]], objects: int, reason: str) -> list[dict[str, Any]]:
    """The rows, and a row saying so for each tool and run that is not among them."""
    have = {(r["tool"], r["op"]) for r in rows}
    return rows + [{"tool": t, "op": op, "objects": objects, "note": f"not run: {reason}"}
                   for t in ALL_TOOLS for op in ("copy", "no-change sync") if (t, op) not in have]


def write(out: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    base = baseline(out.parent) if meta["objects"] != 100_000 else None
    text = markdown(meta, rows, base)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


def render(args: argparse.Namespace) -> None:
    data = json.loads(args.render.read_text())
    out = args.out or args.render.with_suffix(".md")
    ran = [r for r in data["rows"] if "command" in r]  # a tool left out has no command line: its reason is new
    write(out, data["meta"], with_skipped(ran, data["meta"]["objects"], args.skip_reason))


if __name__ == "__main__":
    main()
