"""The platform as a separate process: it creates, overwrites and deletes one company's files at a steady rate.

Run as a module (``python -m vertexflow.testing.platform_writer ARGS``, see :func:`main`), it writes
through its own :class:`~vertexflow.tenancy.StorageManager` on the platform
database, the way a platform process does, until the test asks it to stop
(a ``stop`` file in its work folder), and records in ``result.json`` the
last acknowledged outcome of every key it touched: its content, or ``None``
when the last acknowledged operation deleted it. A write that raised is an
error, and its key is reported as uncertain. After each operation it reads
one key back through the same manager and compares it with what it knows.

The test side (the tests' and the chaos harness's, :mod:`.killer`) is :class:`Writer`: it starts the process, waits until it is
writing, waits for a number of further operations, stops it and returns its
result. Everything about the run (company, content types, categories, seed,
rate) comes from the command line, so every scenario uses this one script.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUBFOLDERS = ("Image", "QR", "nft_markers")
#: what ``python -m`` runs (this file, also when it runs as ``__main__``)
MODULE = "vertexflow.testing.platform_writer"


# -- the process -----------------------------------------------------------------
def _content(rng: random.Random, ct: str, key: str, seed: int, n: int) -> str:
    head = f"{ct}|{key}|seed {seed}|op {n}|"
    return head + "x" * rng.randrange(10, 600)  # small files of varied sizes: a size change is also a change


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    import anyio

    from vertexflow.errors import NotFound
    from vertexflow.tenancy import StorageManager

    work = Path(args.work)
    state: dict[str, dict[str, str | None]] = json.loads(Path(args.initial).read_text()) if args.initial else {}
    for ct in args.content_type:
        state.setdefault(ct, {})
    rng = random.Random(args.seed)
    errors: list[str] = []
    read_errors: list[str] = []
    uncertain: list[str] = []
    where: dict[str, int] = {}  # the route each acknowledged operation took (adapter description) -> count
    ops = 0
    slowest = 0.0  # the longest operation, in seconds (a write fence pauses writes)
    timeline: list[tuple[float, str, int]] = []  # (seconds, route kind, op) whenever the route kind changes
    started = time.monotonic()
    async with StorageManager.open(args.config, args.db) as m:
        adapters = {ct: await m.get_company_adapter(args.company, ct) for ct in args.content_type}
        # bounded by count and time; the test stops it with a file
        while ops < args.max_ops and time.monotonic() - started < args.max_seconds and not (work / "stop").exists():
            ops += 1
            ct = rng.choice(args.content_type)
            mine = {k: v for k, v in state[ct].items() if not k.startswith(tuple(args.frozen))}
            present = sorted(k for k, v in mine.items() if v is not None)
            gone = sorted(k for k, v in mine.items() if v is None)
            roll = rng.random()
            if roll < 0.35 or not present:
                kind, key = "create", f"{rng.choice(args.category)}/{rng.choice(SUBFOLDERS)}/s{args.seed}-n{ops}.txt"
            elif roll < 0.40 and gone:
                kind, key = "create", rng.choice(gone)  # a deleted key written again
            elif roll < 0.75:
                kind, key = "overwrite", rng.choice(present)
            else:
                kind, key = "delete", rng.choice(present)
            adapter = adapters[ct]
            t0 = time.monotonic()
            try:
                if kind == "delete":
                    await adapter.delete_file(key)
                    state[ct][key] = None
                else:
                    data = _content(rng, ct, key, args.seed, ops)
                    await adapter.save_file(key, data.encode())
                    state[ct][key] = data
                route = adapter.describe()
                where[route] = where.get(route, 0) + 1
                kind_of_route = route.split("(")[0].split(":")[0]
                if not timeline or timeline[-1][1] != kind_of_route:
                    timeline.append((round(t0 - started, 3), kind_of_route, ops))
            except Exception:
                errors.append(f"op {ops} {kind} {ct}:{key}\n{traceback.format_exc()}")
                uncertain.append(f"{ct}:{key}")
            # read one key back (the one just written half the time): the platform reads while it writes
            probe = key if rng.random() < 0.5 else rng.choice(sorted(state[ct]))  # frozen files too
            if f"{ct}:{probe}" not in uncertain:
                want = state[ct][probe]
                try:
                    got: str | None = (await adapter.get_file(probe)).decode()
                except NotFound:
                    got = None
                except Exception:
                    got = f"error: {traceback.format_exc()}"
                if got != want:
                    read_errors.append(f"op {ops} read {ct}:{probe}: {str(got)[:80]!r} != {str(want)[:80]!r}")
            slowest = max(slowest, time.monotonic() - t0)
            if ops == args.ready_after:
                (work / "ready").write_text("1")
            (work / "progress.tmp").write_text(str(ops))
            os.replace(work / "progress.tmp", work / "progress")
            await anyio.sleep(args.interval)
    return {"state": state, "errors": errors, "read_errors": read_errors, "uncertain": uncertain, "ops": ops,
            "where": where, "seconds": round(time.monotonic() - started, 3), "slowest": round(slowest, 3),
            "timeline": timeline}


def main(argv: list[str] | None = None) -> None:
    import anyio

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--company", type=int, required=True)
    p.add_argument("--content-type", action="append", required=True)
    p.add_argument("--category", action="append", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--initial", help="JSON {content type: {key: content}}: the company's files when it starts")
    p.add_argument("--frozen", action="append", default=[], help="A key prefix whose files it never changes")
    p.add_argument("--interval", type=float, default=0.005)  # a steady rate, as a platform under load
    p.add_argument("--ready-after", type=int, default=10)
    p.add_argument("--max-ops", type=int, default=5000)  # bounds: the test normally stops it much earlier
    p.add_argument("--max-seconds", type=float, default=90.0)
    args = p.parse_args(argv)
    result = anyio.run(_run, args)
    work = Path(args.work)
    (work / "result.tmp").write_text(json.dumps(result))
    os.replace(work / "result.tmp", work / "result.json")


# -- the test's side ---------------------------------------------------------------
@dataclass
class WriterResult:
    state: dict[str, dict[str, str | None]]
    errors: list[str]
    read_errors: list[str]
    uncertain: list[str]
    ops: int
    where: dict[str, int]
    seconds: float
    slowest: float
    timeline: list[tuple[float, str, int]]

    def expected(self) -> dict[str, dict[str, str]]:
        """Per content type, the files the company must have: every key whose last acknowledged operation wrote it."""
        return {ct: {k: v for k, v in keys.items() if v is not None} for ct, keys in self.state.items()}

    def deleted(self) -> dict[str, set[str]]:
        """Per content type, the keys whose last acknowledged operation deleted them."""
        return {ct: {k for k, v in keys.items() if v is None} for ct, keys in self.state.items()}

    def ops_on(self, prefix: str) -> int:
        """Acknowledged operations whose route's description starts with ``prefix`` (``dual(``, ``y:``...)."""
        return sum(n for route, n in self.where.items() if route.startswith(prefix))


class Writer:
    """One writer process over ``work`` (its own folder)."""

    def __init__(self, work: Path, *, config: Path, db: Path, company_id: int, content_types: list[str],
                 categories: list[str], seed: int, initial: dict[str, dict[str, str | None]] | None = None,
                 frozen: tuple[str, ...] = (), interval: float = 0.005, max_seconds: float | None = None,
                 max_ops: int | None = None, env: dict[str, str] | None = None) -> None:
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", MODULE, "--config", str(config), "--db", str(db), "--company", str(company_id),
                "--seed", str(seed), "--work", str(work), "--interval", str(interval)]
        for ct in content_types:
            args += ["--content-type", ct]
        for c in categories:
            args += ["--category", c]
        for prefix in frozen:
            args += ["--frozen", prefix]
        if max_seconds is not None:
            args += ["--max-seconds", str(max_seconds)]
        if max_ops is not None:
            args += ["--max-ops", str(max_ops)]
        if initial is not None:
            (work / "initial.json").write_text(json.dumps(initial))
            args += ["--initial", str(work / "initial.json")]
        self.log = open(work / "writer.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def _alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"the writer exited with {self.proc.returncode}: {self.tail()}")

    def tail(self) -> str:
        self.log.flush()
        return (self.work / "writer.log").read_text(errors="replace")[-3000:]

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not (self.work / "ready").exists():
            self._alive()
            assert time.monotonic() < deadline, f"the writer was not writing after {timeout} s"
            time.sleep(0.02)

    def ops(self) -> int:
        """Operations done so far."""
        try:
            return int((self.work / "progress").read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def wait_ops(self, more: int, timeout: float = 30) -> None:
        """Until the writer has done at least ``more`` further operations."""
        target = self.ops() + more
        deadline = time.monotonic() + timeout
        while self.ops() < target:
            self._alive()
            assert time.monotonic() < deadline, f"the writer did not do {more} operations in {timeout} s"
            time.sleep(0.02)

    def stop(self, timeout: float = 60) -> WriterResult:
        (self.work / "stop").write_text("1")
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.log.close()
        assert self.proc.returncode == 0, self.tail()
        return WriterResult(**json.loads((self.work / "result.json").read_text()))

    def kill(self) -> None:
        """Stop a writer whose test failed (nothing is checked)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


if __name__ == "__main__":
    main()
