"""Chaos rounds: vertexflow's command line under network faults and signals, and what broke.

    python benchmarks/chaos.py --rounds 20 --seed 1
    python benchmarks/chaos.py --ops copy_down --seed 7 --rounds 1      # replay one round
    python benchmarks/chaos.py --rounds 5 --seed 1 --json results/chaos.json
    python benchmarks/chaos.py --rounds 200 --seed 1 --jobs 4   # four runs at once, 50 seeds each
    python benchmarks/chaos.py --merge a.json b.json   # one table from runs made side by side

Starts its own SeaweedFS servers (two, for copy_s3_s3 and the migrations) in a temporary
directory, with a fault-injecting proxy in front of each
(vertexflow.testing.faults.FaultProxy, default rates), and runs every
operation of vertexflow.testing.killer.OPERATIONS for N rounds; round i uses
seed S+i for its data, its faults and the moments of its signals. After every
run and at the end of each round the invariants are checked (every object at
the destination whole and equal to its source by SHA-256, read back with
boto3 or hashlib; no temporary file left at a local destination; no
incomplete multipart upload after success; the documented exit status).

Prints a table per operation and fault kind: rounds, faults injected, objects
checked, violations, then every violation with the command that replays it.
Exits 1 if there was any violation. Runs made side by side (each with its
own servers: disjoint --ops or seed ranges, each with --json) are summed by
--merge, which refuses a round (operation and seed) present twice; --jobs N
makes N such runs itself, each with every operation and a share of the seeds.

    python benchmarks/chaos.py --resume-download --rounds 3 --seed 1

instead measures resuming within an object: three 30 MiB objects copied
S3 -> local through a proxy that resets the connection in one 64 KiB piece
of an answer's body in 250 on average (about every 16 MiB), one copy per
round; prints per round the exit status, the objects identical to their
source by SHA-256, the resets and the answer bytes the proxy forwarded
against the objects' size. The command under test is the ``vertexflow``
that ``python -m`` finds (set PYTHONPATH, from another directory, to
measure another checkout).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vertexflow.testing.faults import DEFAULT_RATES, KINDS, ThreadedFaultProxy  # noqa: E402
from vertexflow.testing.killer import (  # noqa: E402
    OPERATIONS,
    TWO_SERVERS,
    YANDEX,
    ChaosLab,
    MiB,
    RoundResult,
    Run,
    local_tree,
    run_cli,
    run_rounds,
    signal_of,
)
from vertexflow.testing.seaweedfs import SeaweedFS  # noqa: E402

#: --resume-download: the objects, and the chance a 64 KiB piece of an answer's body meets a reset (issue 25)
RESUME_OBJECTS, RESUME_SIZE, RESUME_RATE = 3, 30 * MiB, 1 / 250


def table(results: list[RoundResult]) -> str:
    """One block per operation: a row per fault kind (or signal), then the operation's total."""
    by_op: dict[str, list[RoundResult]] = defaultdict(list)
    for r in results:
        by_op[r.operation].append(r)
    lines = ["| operation | fault | rounds | faults injected | runs | objects checked | violations |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for op, rs in by_op.items():
        desc, kind = OPERATIONS[op]
        rounds, runs = len(rs), sum(len(r.runs) for r in rs)
        checked = sum(r.objects_checked for r in rs)
        violations = sum(len(r.violations) for r in rs)
        if kind == "kill":
            sig = signal_of(op)
            sent = sum(1 for r in rs for run in r.runs if run.signal)
            lines.append(f"| {op} ({desc}) | {sig} | {rounds} | {sent} | {runs} | {checked} | {violations} |")
            continue
        faults: Counter[str] = Counter()
        for r in rs:
            faults.update(r.faults)
        for k in KINDS:
            # a violation is not tied to one kind: the round's violations show on its total row
            hit = sum(1 for r in rs if r.faults.get(k))
            lines.append(f"| {op} | {k} | {hit} | {faults.get(k, 0)} | | | |")
        lines.append(f"| **{op}** ({desc}) | all | {rounds} | {sum(faults.values())} | {runs} | {checked} | "
                     f"{violations} |")
    return "\n".join(lines)


def summary(results: list[RoundResult]) -> str:
    """One row per operation (the README's table): rounds, faults, signals, objects checked, violations."""
    by_op: dict[str, list[RoundResult]] = defaultdict(list)
    for r in results:
        by_op[r.operation].append(r)
    lines = ["| operation | rounds | faults injected | signals | objects checked | violations |",
             "|---|---:|---:|---:|---:|---:|"]
    for op, rs in by_op.items():
        lines.append(f"| {op} | {len(rs)} | {sum(sum(r.faults.values()) for r in rs):,} | "
                     f"{sum(1 for r in rs for run in r.runs if run.signal):,} | "
                     f"{sum(r.objects_checked for r in rs):,} | {sum(len(r.violations) for r in rs)} |")
    return "\n".join(lines)


def totals(results: list[RoundResult]) -> str:
    """One line: rounds, faults, signals, objects checked and violations over every operation."""
    faults = sum(sum(r.faults.values()) for r in results)
    signals = sum(1 for r in results for run in r.runs if run.signal)
    checked = sum(r.objects_checked for r in results)
    violations = sum(len(r.violations) for r in results)
    return (f"all: {len(results)} rounds, {faults} faults injected, {signals} signals, "
            f"{checked} objects checked, {violations} violation{'' if violations == 1 else 's'}")


def coverage(results: list[RoundResult]) -> str:
    """Per operation, the seeds its rounds ran with, as ranges (``1-120, 151-200``), and the mean time of
    a round where it was recorded (what planning a longer run needs)."""
    seeds: dict[str, list[int]] = defaultdict(list)
    times: dict[str, list[float]] = defaultdict(list)
    for r in results:
        seeds[r.operation].append(r.seed)
        if r.seconds:
            times[r.operation].append(r.seconds)
    lines = []
    for op, got in seeds.items():
        got.sort()
        spans, start = [], got[0]
        for a, b in zip(got, got[1:] + [None]):
            if b != a + 1:
                spans.append(f"{start}" if start == a else f"{start}-{a}")
                start = b
        took = f", {sum(times[op]) / len(times[op]):.1f} s a round" if times[op] else ""
        lines.append(f"- {op}: {len(got)} rounds, seeds {', '.join(spans)}{took}")
    return "\n".join(lines)


def from_json(path: Path) -> tuple[dict, list[RoundResult]]:
    """A --json file's run (its figures besides the rounds) and its rounds, as results again."""
    doc = json.loads(path.read_text())
    results = []
    for row in doc["results"]:
        r = RoundResult(row["operation"], row["seed"], faults=Counter(row["faults"]),
                        objects_checked=row["objects_checked"], seconds=row.get("seconds", 0.0))
        r.runs = [Run([], code, "", "", 0.0, signal=sig) for code, sig in zip(row["exits"], row["signals"])]
        r.violations = list(row["violations"])  # their text, as printed
        results.append(r)
    return {k: v for k, v in doc.items() if k != "results"}, results


def merge(paths: list[Path], title: str | None = None, out: Path | None = None) -> int:
    """--merge: one table from several --json files (and, with ``out``, one such file of them all);
    exit 1 on a violation, 2 on a round present twice."""
    results: list[RoundResult] = []
    rows: list[dict] = []
    seen: dict[tuple[str, int], Path] = {}
    runs = []
    for path in paths:
        head, rs = from_json(path)
        for r in rs:
            if (r.operation, r.seed) in seen:
                print(f"{path}: {r.operation} seed {r.seed} is also in {seen[r.operation, r.seed]}", file=sys.stderr)
                return 2
            seen[r.operation, r.seed] = path
        results.extend(rs)
        rows.extend(json.loads(path.read_text())["results"])
        runs.append(f"{path.name} ({len(rs)} rounds, {head.get('seconds', 0):.0f} s)")
    order = list(OPERATIONS)
    results.sort(key=lambda r: (order.index(r.operation) if r.operation in order else len(order), r.seed))
    print(title or f"# Chaos: {len(paths)} runs side by side merged: {'; '.join(runs)}\n")
    print(table(results))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"merged": [str(p) for p in paths], "results": rows}, indent=2))
    print(f"\n{summary(results)}\n\n{totals(results)}\n")
    print(coverage(results))
    violations = [v for r in results for v in r.violations]
    for v in violations:
        print(f"* {v}")
    return 1 if violations else 0


def side_by_side(a: argparse.Namespace, work: Path) -> int:
    """--jobs N: N runs of this script at once, each with servers of its own, every operation and a
    contiguous share of the seeds; their rounds merged into one table."""
    shares = [a.rounds // a.jobs + (1 if k < a.rounds % a.jobs else 0) for k in range(a.jobs)]
    children, paths, seed = [], [], a.seed
    for k, rounds in enumerate(shares):
        if not rounds:
            continue
        path = work / f"job-{k}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--rounds", str(rounds), "--seed", str(seed),
               "--ops", a.ops, "--minutes", str(a.minutes), "--rate-scale", str(a.rate_scale), "--json", str(path)]
        children.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))  # each one's progress: our stderr
        paths.append(path)
        seed += rounds
    codes = [c.wait() for c in children]
    missing = [str(p) for p, code in zip(paths, codes) if not p.exists()]
    if missing:
        print(f"runs ended without their figures ({', '.join(missing)}): exits {codes}", file=sys.stderr)
        return 2
    title = (f"# Chaos: `python benchmarks/chaos.py --rounds {a.rounds} --seed {a.seed} --jobs {a.jobs}"
             + (f" --ops {a.ops}" if a.ops != ",".join(OPERATIONS) else "")
             + (f" --rate-scale {a.rate_scale}" if a.rate_scale != 1.0 else "") + "`\n")
    return merge(paths, title, a.json)


def resume_download(work: Path, rounds: int, seed: int) -> tuple[str, bool]:
    """The --resume-download rounds: a table, and whether every round copied every object whole."""
    lines = [f"| seed | exit | objects identical | resets | answer bytes / object bytes | seconds |",
             "|---:|---:|---:|---:|---:|---:|"]
    ok = True
    with SeaweedFS(work / "seaweedfs") as server:
        server.create_bucket("resume")
        client = server.boto3_client()
        for i in range(rounds):
            s = seed + i
            rng = random.Random(f"resume:{s}")
            tree = {}
            for n in range(RESUME_OBJECTS):
                data = rng.randbytes(RESUME_SIZE)
                client.put_object(Bucket="resume", Key=f"r{s}/o{n}.bin", Body=data)
                tree[f"o{n}.bin"] = hashlib.sha256(data).hexdigest()
            del data
            dst = work / f"dst-{s}"
            env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VERTEXFLOW_"))}
            with ThreadedFaultProxy(int(server.endpoint.rsplit(":", 1)[1]), seed=s, rates={},
                                    chunk_reset_rate=RESUME_RATE) as tp:
                env.update(AWS_ENDPOINT_URL=tp.proxy.endpoint, AWS_ACCESS_KEY_ID=server.access_key,
                           AWS_SECRET_ACCESS_KEY=server.secret_key, AWS_REGION=server.region,
                           VERTEXFLOW_JOURNAL=str(work / f"journal-{s}.db"), HOME=str(work))
                run = run_cli(["copy", f"s3://resume/r{s}", str(dst), "--json", "--no-progress"], env)
                resets, sent = tp.proxy.counts["reset_response"], tp.proxy.answer_bytes
            got = local_tree(dst)
            same = sum(1 for k, v in tree.items() if got.get(k) == v)
            ok = ok and run.code == 0 and same == len(tree)
            lines.append(f"| {s} | {run.code} | {same} of {len(tree)} | {resets} | "
                         f"{sent / (RESUME_OBJECTS * RESUME_SIZE):.2f} | {run.seconds:.1f} |")
            print(f"  resume seed={s}: exit {run.code}, {same} of {len(tree)} identical, {resets} resets",
                  file=sys.stderr, flush=True)
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="rounds of each operation (default 5)")
    p.add_argument("--seed", type=int, default=1, help="round i uses seed SEED+i (default 1)")
    p.add_argument("--ops", default=",".join(OPERATIONS),
                   help=f"operations, comma-separated (default all: {','.join(OPERATIONS)})")
    p.add_argument("--minutes", type=float, default=60.0, help="stop starting rounds after this long (default 60)")
    p.add_argument("--rate-scale", type=float, default=1.0, help="multiply every default fault rate by this")
    p.add_argument("--json", type=Path, help="also write every round's figures and violations here")
    p.add_argument("--keep-work", action="store_true", help="keep the temporary directory (printed)")
    p.add_argument("--resume-download", action="store_true",
                   help="measure resuming within an object instead (see above)")
    p.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                   help="print one table from these --json files instead of running rounds")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at once, each with its own servers and a share of the seeds (default 1)")
    a = p.parse_args(argv)
    if a.merge:
        return merge(a.merge, out=a.json)
    ops = [o for o in a.ops.split(",") if o]
    unknown = [o for o in ops if o not in OPERATIONS]
    if unknown or a.rounds < 1:
        p.error(f"unknown operations {unknown}" if unknown else "--rounds must be at least 1")
    rates = {k: v * a.rate_scale for k, v in DEFAULT_RATES.items()}
    if sum(rates.values()) > 1:
        p.error("--rate-scale makes the rates sum above 1")

    if a.jobs < 1:
        p.error("--jobs must be at least 1")

    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="vf-chaos-"))
    results: list[RoundResult] = []
    if a.jobs > 1 and not a.resume_download:
        try:
            return side_by_side(a, work)
        finally:
            import shutil
            shutil.rmtree(work, ignore_errors=True)
    if a.resume_download:
        try:
            text, ok = resume_download(work, a.rounds, a.seed)
        finally:
            if not a.keep_work:
                import shutil
                shutil.rmtree(work, ignore_errors=True)
        print(f"# Resume within an object: `python benchmarks/chaos.py --resume-download --rounds {a.rounds} "
              f"--seed {a.seed}` ({time.monotonic() - t0:.0f} s; {RESUME_OBJECTS} objects of "
              f"{RESUME_SIZE // MiB} MiB, a reset in one 64 KiB piece of an answer's body in "
              f"{round(1 / RESUME_RATE)})\n")
        print(text)
        return 0 if ok else 1

    def progress(r: RoundResult) -> None:
        codes = ",".join(str(run.code) for run in r.runs)
        print(f"  {r.operation} seed={r.seed}: runs exit {codes}; faults {sum(r.faults.values())}; "
              f"checked {r.objects_checked}; violations {len(r.violations)}; {r.seconds:.1f} s",
              file=sys.stderr, flush=True)

    try:
        with ChaosLab(work, rates=rates, two_servers=bool(TWO_SERVERS & set(ops)),
                      yandex=bool(YANDEX & set(ops))) as lab:
            lab.forget_clean_rounds = not a.keep_work
            results = run_rounds(lab, ops, a.rounds, a.seed, on_round=progress,
                                 deadline=t0 + a.minutes * 60)
    finally:
        if a.keep_work:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            import shutil
            shutil.rmtree(work, ignore_errors=True)

    seconds = time.monotonic() - t0
    print(f"# Chaos: `python benchmarks/chaos.py --rounds {a.rounds} --seed {a.seed}"
          + (f" --ops {a.ops}" if a.ops != ",".join(OPERATIONS) else "")
          + (f" --rate-scale {a.rate_scale}" if a.rate_scale != 1.0 else "") + f"` ({seconds:.0f} s)\n")
    print(table(results))
    violations = [v for r in results for v in r.violations]
    print(f"\n{summary(results)}\n\n{totals(results)}\n")
    print(coverage(results))
    print(f"\n{len(violations)} violation(s) in {len(results)} rounds")
    for v in violations:
        print(f"* {v}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({
            "rounds": a.rounds, "seed": a.seed, "ops": ops, "seconds": round(seconds, 1), "rates": rates,
            "results": [{"operation": r.operation, "seed": r.seed, "faults": dict(r.faults),
                         "exits": [run.code for run in r.runs], "signals": [run.signal for run in r.runs],
                         "objects_checked": r.objects_checked, "seconds": round(r.seconds, 1),
                         "violations": [str(v) for v in r.violations]} for r in results],
        }, indent=2))
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
