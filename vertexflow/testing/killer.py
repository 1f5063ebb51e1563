"""The chaos harness: vertexflow's command line under network faults and signals, checked by invariants.

* :func:`run_cli` runs ``python -m vertexflow ...`` as a subprocess (bounded in time);
* :func:`kill_rounds` runs a command, sends it a signal (SIGKILL, SIGTERM,
  SIGINT) at a moment drawn from a seed, and reruns it until it exits 0,
  checking invariants after every round (bounded in rounds and time);
* the invariants, one function each, return a list of problems (empty: held):
  :func:`check_whole`, :func:`check_no_temp_files`,
  :func:`check_no_multipart_uploads`, :func:`check_journal`, :func:`check_exit_status`;
* :class:`ChaosLab` owns one or two SeaweedFS servers, a :class:`FaultProxy`
  in front of each, a config file naming them as remotes ``a`` and ``b``
  (5 MiB parts), the Yandex.Disk emulator behind a proxy too (remote ``y``),
  and runs the operations (:data:`OPERATIONS`): copy and sync local -> S3 and
  S3 -> local through the faults, S3 -> S3 across two servers, local ->
  Yandex.Disk, and the kill rounds of a multipart upload.

Everything is drawn from a round's seed (the data, the faults, the moments of
the signals), so a violation names the seed that replays it:
``python benchmarks/chaos.py --ops OP --seed SEED --rounds 1``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .faults import DEFAULT_RATES, FaultProxy, ThreadedFaultProxy
from .seaweedfs import SeaweedFS

MiB = 1024 * 1024
#: vertexflow's documented exit statuses (README, "What you see")
EXIT_OK, EXIT_PARTIAL, EXIT_FATAL, EXIT_INTERRUPTED = 0, 1, 2, 130
DOCUMENTED = frozenset({EXIT_OK, EXIT_PARTIAL, EXIT_FATAL, EXIT_INTERRUPTED})
#: the name every temporary file of the local backend starts with (vertexflow/backends/local.py)
TMP_PREFIX = ".vertexflow-tmp-"
#: seconds one run of the command may take before it counts as hung
RUN_TIMEOUT = 180.0
#: signals a run sent them again and again gets at most (20 s of them every 0.05 s)
MAX_REPEATS = 400


# -- running the command ------------------------------------------------------

@dataclass(slots=True)
class Run:
    """One run of the command: its arguments, exit status, output, and the signal sent (if any)."""

    args: list[str]
    code: int
    out: str
    err: str
    seconds: float
    signal: str | None = None
    signal_at: float | None = None
    hung: bool = False

    def summary(self) -> dict[str, Any] | None:
        """The ``--json`` summary, if the run printed one."""
        try:
            value = json.loads(self.out)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


def _command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "vertexflow", "--log-level", "warning", *args]


def run_cli(args: list[str], env: dict[str, str], *, timeout: float = RUN_TIMEOUT,
            sig: signal.Signals | None = None, at: float | None = None,
            second_after: float | None = None, every: float | None = None) -> Run:
    """Run the command; with ``sig``, send it ``at`` seconds after the start (and again ``second_after``
    seconds later, if given and the process still runs; or, with ``every``, again every that many
    seconds until it exits, at most :data:`MAX_REPEATS` times). A run past ``timeout`` is killed (``hung``)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(_command(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    sent: str | None = None
    hung = False
    try:
        if sig is not None and at is not None:
            try:
                proc.wait(timeout=at)
            except subprocess.TimeoutExpired:
                proc.send_signal(sig)
                sent = sig.name
                gaps = [second_after] if second_after is not None else [every] * MAX_REPEATS if every else []
                for n, gap in enumerate(gaps, start=2):
                    try:
                        proc.wait(timeout=gap)
                        break
                    except subprocess.TimeoutExpired:
                        proc.send_signal(sig)
                        sent = f"{sig.name} x{n}"
        try:
            out, err = proc.communicate(timeout=max(1.0, timeout - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            hung = True
            proc.kill()
            out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return Run(args, proc.returncode, out, err, time.monotonic() - t0, sent, at if sent else None, hung)


# -- the invariants -----------------------------------------------------------

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def local_tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (temporary files included) as key -> SHA-256, read with hashlib."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            out[path.relative_to(root).as_posix()] = sha256_file(path)
    return out


def s3_tree(client: Any, bucket: str, prefix: str) -> dict[str, str]:
    """Every object under ``prefix/`` as key (below the prefix) -> SHA-256, read back with boto3."""
    out: dict[str, str] = {}
    start = f"{prefix.rstrip('/')}/" if prefix else ""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=start):
        for item in page.get("Contents", ()):
            h = hashlib.sha256()
            for chunk in client.get_object(Bucket=bucket, Key=item["Key"])["Body"].iter_chunks(MiB):
                h.update(chunk)
            out[item["Key"][len(start):]] = h.hexdigest()
    return out


def yadisk_tree(api: str, path: str, token: str = "chaos") -> dict[str, str]:
    """Every file under ``path`` on a Yandex.Disk API (``api`` = ``http://host:port/v1/disk``) as
    key (below ``path``) -> SHA-256, listed and downloaded with urllib."""
    import urllib.error
    import urllib.parse
    import urllib.request

    def get(url: str) -> bytes:
        req = urllib.request.Request(url, headers={"Authorization": f"OAuth {token}"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.read()

    out: dict[str, str] = {}
    todo = [path.rstrip("/")]
    for _ in range(10_000):
        if not todo:
            return out
        folder = todo.pop()
        for offset in range(0, 1_000_000, 1000):
            q = urllib.parse.urlencode({"path": folder, "limit": 1000, "offset": offset})
            try:
                listing = json.loads(get(f"{api}/resources?{q}"))
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    break
                raise
            items = listing.get("_embedded", {}).get("items", [])
            for item in items:
                item_path = item["path"].removeprefix("disk:")
                if item["type"] == "dir":
                    todo.append(item_path)
                else:
                    href = json.loads(get(f"{api}/resources/download?"
                                          + urllib.parse.urlencode({"path": item_path})))["href"]
                    out[item_path[len(path.rstrip("/")) + 1:]] = hashlib.sha256(get(href)).hexdigest()
            if len(items) < 1000:
                break
    raise RuntimeError("too many folders")


def check_whole(actual: dict[str, str], expected: dict[str, str], *, complete: bool,
                extra_ok: Iterable[str] = ()) -> list[str]:
    """Every object at the destination equals its source (by SHA-256); nothing unexpected is there
    (but ``extra_ok``, e.g. what a sync has yet to delete); with ``complete``, nothing is missing."""
    problems = []
    allowed = set(extra_ok)
    for key, digest in sorted(actual.items()):
        if key in expected:
            if digest != expected[key]:
                problems.append(f"torn or different object {key!r}: sha256 {digest[:12]} != source {expected[key][:12]}")
        elif key not in allowed:
            problems.append(f"unexpected object {key!r} at the destination")
    if complete:
        problems += [f"missing object {key!r}" for key in sorted(set(expected) - set(actual))]
    return problems


def check_no_temp_files(root: Path) -> list[str]:
    """No vertexflow temporary file (``.vertexflow-tmp-*``) anywhere under a local destination."""
    left = []
    if root.exists():
        for dirpath, _dirs, files in os.walk(root):
            left += [str(Path(dirpath, n).relative_to(root)) for n in files if n.startswith(TMP_PREFIX)]
    return [f"temporary file left: {name}" for name in sorted(left)]


def check_no_multipart_uploads(client: Any, bucket: str, prefix: str = "") -> list[str]:
    """No incomplete multipart upload in ``bucket`` (under ``prefix/``, if given)."""
    left = []
    start = f"{prefix.rstrip('/')}/" if prefix else ""
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=start):
        left += [(u["Key"], u["UploadId"]) for u in page.get("Uploads", ())]
    return [f"incomplete multipart upload left: {key} (upload id {uid})" for key, uid in sorted(left)]


def check_journal(path: Path) -> list[str]:
    """The journal (if the run made one) opens and passes SQLite's integrity check."""
    if not path.exists():
        return []
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            rows = [r[0] for r in db.execute("PRAGMA integrity_check")]
    except sqlite3.Error as exc:
        return [f"journal {path.name} does not open: {exc}"]
    return [] if rows == ["ok"] else [f"journal {path.name} fails its integrity check: {rows[:3]}"]


def check_exit_status(run: Run, allowed: Iterable[int] = DOCUMENTED) -> list[str]:
    """The exit status is a documented one, allowed here, and agrees with the ``--json`` summary
    (0: nothing failed; 1: failures named; 130: interrupted); no traceback on stderr."""
    problems = []
    allowed = set(allowed)
    if run.hung:
        return [f"hung: still running after {run.seconds:.0f} s"]
    if run.code not in allowed:
        problems.append(f"exit status {run.code} not in {sorted(allowed)}"
                        + (f" (after {run.signal} at {run.signal_at:.2f} s)" if run.signal else "")
                        + f"; stderr: {run.err.strip()[-300:]!r}")
    if "Traceback (most recent call last)" in run.err:
        problems.append(f"traceback on stderr: {run.err.strip()[-400:]!r}")
    summary = run.summary()
    if summary is not None and run.code in DOCUMENTED:
        failed = summary.get("failed", 0)
        if run.code == EXIT_OK and (failed or summary.get("fatal_error") or summary.get("interrupted")):
            problems.append(f"exit 0 but the summary says failed={failed}, fatal_error={summary.get('fatal_error')!r}, "
                            f"interrupted={summary.get('interrupted')}")
        if run.code == EXIT_PARTIAL and not failed and not summary.get("failures"):
            problems.append("exit 1 but the summary names no failure")
        if run.code == EXIT_INTERRUPTED and not summary.get("interrupted"):
            problems.append("exit 130 but the summary does not say interrupted")
    return problems


# -- results ------------------------------------------------------------------

@dataclass(slots=True)
class Violation:
    operation: str
    seed: int
    invariant: str
    detail: str

    def __str__(self) -> str:
        return (f"{self.operation} seed={self.seed} [{self.invariant}] {self.detail} "
                f"(replay: python benchmarks/chaos.py --ops {self.operation} --seed {self.seed} --rounds 1)")


@dataclass(slots=True)
class RoundResult:
    """One round of one operation: the runs it took, the faults injected, what was checked and broken."""

    operation: str
    seed: int
    runs: list[Run] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    objects_checked: int = 0
    violations: list[Violation] = field(default_factory=list)

    def violate(self, invariant: str, problems: list[str]) -> None:
        """Record problems (one seen again after a later run of the round is recorded once)."""
        for p in problems:
            v = Violation(self.operation, self.seed, invariant, p)
            if v not in self.violations:
                self.violations.append(v)


# -- data ---------------------------------------------------------------------

def make_tree(root: Path, rng: random.Random, *, big: int = 0) -> dict[str, str]:
    """A small tree drawn from ``rng`` (an empty file, small files in nested folders, one of 6 MiB:
    two 5 MiB parts) plus, with ``big``, ``big.bin`` of that many bytes; key -> SHA-256."""
    sizes = {"empty.txt": 0, "one.txt": 1, "a/b/c/deep.bin": rng.randrange(1, 4096)}
    for i in range(rng.randrange(4, 9)):
        sizes[f"dir{i % 3}/f{i:02d}.dat"] = rng.choice([rng.randrange(1, 64 * 1024), rng.randrange(64 * 1024, MiB)])
    sizes["multi/six.bin"] = 6 * MiB + rng.randrange(0, 64 * 1024)
    if big:
        sizes["big.bin"] = big
    out = {}
    for key, size in sizes.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        with open(path, "wb") as f:
            left = size
            while left:
                chunk = rng.randbytes(min(left, MiB))
                f.write(chunk)
                h.update(chunk)
                left -= len(chunk)
        out[key] = h.hexdigest()
    return out


def put_tree(server: SeaweedFS, bucket: str, prefix: str, root: Path, tree: dict[str, str]) -> None:
    """Seed a source prefix straight on the server, one PutObject each. Bodies under 1 KiB go on a
    connection of their own: against SeaweedFS, boto3 waits a minute (its read timeout) on a 1-byte
    PutObject that follows another request on the same connection."""
    client = server.boto3_client()
    for key in tree:
        data = (root / key).read_bytes()
        c = client if len(data) >= 1024 else server.boto3_client(read_timeout=59)
        c.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=data)


# -- the lab ------------------------------------------------------------------

#: name -> (description, kind): "faults" runs go through the proxy's faults, "kill" runs are signalled
OPERATIONS: dict[str, tuple[str, str]] = {
    "copy_up": ("copy local -> S3", "faults"),
    "copy_down": ("copy S3 -> local", "faults"),
    "sync_up": ("sync --delete local -> S3", "faults"),
    "sync_down": ("sync --delete S3 -> local", "faults"),
    "copy_s3_s3": ("copy S3 -> S3, two servers", "faults"),
    "copy_yadisk": ("copy local -> Yandex.Disk emulator", "faults"),
    "kill_up_SIGKILL": ("copy local -> S3, 24 MiB, SIGKILL", "kill"),
    "kill_up_SIGTERM": ("copy local -> S3, 24 MiB, SIGTERM (twice at times)", "kill"),
    "kill_up_SIGINT": ("copy local -> S3, 24 MiB, SIGINT (twice at times)", "kill"),
    "kill_down_SIGKILL": ("copy S3 -> local, 24 MiB, SIGKILL", "kill"),
}

#: runs of a command per round under faults before the round counts as never finishing
MAX_RUNS = 6
#: signals per kill round before the command is left to finish
MAX_KILLS = 3


class ChaosLab:
    """``with ChaosLab(workdir) as lab: lab.round("copy_up", seed)``.

    Starts SeaweedFS server A (and B for ``copy_s3_s3``, on demand) in
    ``workdir``, a :class:`FaultProxy` in front of each, and writes a config
    file with the remotes ``a`` and ``b`` pointing at the proxies (credentials
    from the environment, 5 MiB parts).
    """

    def __init__(self, workdir: Path, *, rates: dict[str, float] | None = None, two_servers: bool = True,
                 yandex: bool = True,
                 stall_seconds: float = 3.0, delay_seconds: float = 1.0, retries: int = 5,
                 signal_window: tuple[float, float] = (0.3, 2.0), second_signal: bool = True,
                 signal_every: float | None = None) -> None:
        self.workdir = Path(workdir)
        self.rates = dict(DEFAULT_RATES if rates is None else rates)
        self.two_servers = two_servers
        self.yandex = yandex
        #: the Yandex.Disk emulator's API base URL (straight, not through the proxy)
        self.yandex_api = ""
        self.stall_seconds = stall_seconds
        self.delay_seconds = delay_seconds
        self.retries = retries
        #: a kill round's signals land this many seconds after the start (the CLI is ready after ~0.5 s)
        self.signal_window = signal_window
        #: SIGTERM/SIGINT: half the signals are followed by a second one (abort what is in flight)
        self.second_signal = second_signal
        #: SIGTERM/SIGINT: instead, every signal is sent again every that many seconds until the run ends
        #: (a second signal at every moment of the shutdown, not at one drawn moment)
        self.signal_every = signal_every
        self.servers: dict[str, SeaweedFS] = {}
        self.proxies: dict[str, FaultProxy] = {}
        self.clients: dict[str, Any] = {}
        self._stack = ExitStack()
        self.env: dict[str, str] = {}

    def __enter__(self) -> ChaosLab:
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            names = ("a", "b") if self.two_servers else ("a",)
            config = []
            for name in names:
                server = self._stack.enter_context(SeaweedFS(self.workdir / f"seaweedfs-{name}",
                                                             access_key=f"chaos-{name}",
                                                             secret_key=f"chaos-{name}-secret"))
                threaded = self._stack.enter_context(ThreadedFaultProxy(
                    int(server.endpoint.rsplit(":", 1)[1]), seed=0, rates={},
                    stall_seconds=self.stall_seconds, delay_seconds=self.delay_seconds))
                self.servers[name], self.proxies[name] = server, threaded.proxy
                self.clients[name] = server.boto3_client()
                server.create_bucket("chaos")
                upper = name.upper()
                self.env[f"CHAOS_{upper}_KEY"] = server.access_key
                self.env[f"CHAOS_{upper}_SECRET"] = server.secret_key
                config.append(f'[remotes.{name}]\ntype = "s3"\nendpoint = "{threaded.proxy.endpoint}"\n'
                              f'region = "{server.region}"\naccess_key_id_env = "CHAOS_{upper}_KEY"\n'
                              f'secret_access_key_env = "CHAOS_{upper}_SECRET"\naddressing_style = "path"\n'
                              f"part_size = {5 * MiB}\n")
            if self.yandex:
                from .yandex_disk.process import emulator_process

                self.yandex_api = self._stack.enter_context(emulator_process(
                    "--data-dir", str(self.workdir / "yandex-disk")))
                port = int(self.yandex_api.split(":")[2].split("/")[0])
                threaded = self._stack.enter_context(ThreadedFaultProxy(
                    port, seed=0, rates={}, stall_seconds=self.stall_seconds,
                    delay_seconds=self.delay_seconds, error_body="json"))
                self.proxies["y"] = threaded.proxy
                self.env["CHAOS_Y_TOKEN"] = "chaos"
                config.append(f'[remotes.y]\ntype = "yandex_disk"\ntoken_env = "CHAOS_Y_TOKEN"\n'
                              f'base_url = "{threaded.proxy.endpoint}/v1/disk"\nroot = "/"\n')
            cfg = self.workdir / "remotes.toml"
            cfg.write_text("\n".join(config))
            a = self.servers["a"]
            self.env.update({
                "VERTEXFLOW_CONFIG": str(cfg),
                # s3:// locations would go through the proxy too
                "AWS_ENDPOINT_URL": self.proxies["a"].endpoint, "AWS_ACCESS_KEY_ID": a.access_key,
                "AWS_SECRET_ACCESS_KEY": a.secret_key, "AWS_REGION": a.region,
            })
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _environ(self, round_dir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VERTEXFLOW_"))}
        env.update(self.env)
        env["VERTEXFLOW_JOURNAL"] = str(round_dir / "journal.db")
        env["HOME"] = str(round_dir)
        return env

    def _arm(self, seed: int, on: bool) -> None:
        """Every proxy: this round's seed, its counts zeroed, faults on or off."""
        for i, proxy in enumerate(self.proxies.values()):
            proxy.rearm(seed * 10 + i, dict(self.rates) if on else {})

    def _faults(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for proxy in self.proxies.values():
            total.update(proxy.counts)
        return total

    # -- one round -----------------------------------------------------

    def round(self, operation: str, seed: int) -> RoundResult:
        """One round of ``operation`` with everything drawn from ``seed``; its violations."""
        result = RoundResult(operation, seed)
        round_dir = self.workdir / f"{operation}-{seed}"
        round_dir.mkdir(parents=True)
        rng = random.Random(f"{operation}:{seed}")
        try:
            if operation.startswith("kill_"):
                self._kill_round(result, round_dir, rng, operation)
            else:
                self._fault_round(result, round_dir, rng, operation)
        except Exception as exc:  # noqa: BLE001 - the harness itself failing is reported, not hidden
            result.violate("harness", [f"{type(exc).__name__}: {exc}"])
        finally:
            if not result.faults:
                result.faults = self._faults()
            self._arm(seed, on=False)
        return result

    def _fault_round(self, result: RoundResult, round_dir: Path, rng: random.Random, operation: str) -> None:
        src = round_dir / "src"
        tree = make_tree(src, rng)
        a = self.clients["a"]
        prefix = f"{operation}-{result.seed}"
        stale: set[str] = set()
        extra_ok: set[str] = set()
        local_dst: Path | None = None
        dst_client, dst_prefix = a, prefix
        if operation in ("copy_up", "sync_up"):
            args = [operation.split("_")[0], str(src), f"a:chaos/{prefix}"]
        elif operation in ("copy_down", "sync_down"):
            put_tree(self.servers["a"], "chaos", prefix, src, tree)
            local_dst = round_dir / "dst"
            local_dst.mkdir()
            args = [operation.split("_")[0], f"a:chaos/{prefix}", str(local_dst)]
        elif operation == "copy_yadisk":
            if not self.yandex_api:
                raise RuntimeError("copy_yadisk needs the Yandex.Disk emulator")
            args = ["copy", str(src), f"y:/{prefix}"]
        elif operation == "copy_s3_s3":
            if "b" not in self.clients:
                raise RuntimeError("copy_s3_s3 needs two servers")
            put_tree(self.servers["a"], "chaos", prefix, src, tree)
            dst_client = self.clients["b"]
            args = ["copy", f"a:chaos/{prefix}", f"b:chaos/{prefix}"]
        else:
            raise ValueError(f"unknown operation {operation!r}")
        if operation.startswith("sync"):
            # what --delete must remove, and an object to be replaced
            changed = sorted(tree)[rng.randrange(len(tree))]
            junk = {"gone/old.bin": rng.randbytes(rng.randrange(1, 100_000)), changed: b"stale " + rng.randbytes(100)}
            for key, data in junk.items():
                if local_dst is not None:
                    (local_dst / key).parent.mkdir(parents=True, exist_ok=True)
                    (local_dst / key).write_bytes(data)
                else:
                    a.put_object(Bucket="chaos", Key=f"{prefix}/{key}", Body=data)
            args.append("--delete")
            stale = {changed}
            extra_ok = {"gone/old.bin"}  # until the run that deletes it
        args += ["--json", "--no-progress", "--retries", str(self.retries)]
        env = self._environ(round_dir)

        def state() -> dict[str, str]:
            if operation == "copy_yadisk":
                return yadisk_tree(self.yandex_api, f"/{prefix}")
            return local_tree(local_dst) if local_dst is not None else s3_tree(dst_client, "chaos", dst_prefix)

        self._arm(result.seed, on=True)
        for attempt in range(MAX_RUNS):
            run = run_cli(args, env)
            result.runs.append(run)
            result.violate("exit status", check_exit_status(run, {EXIT_OK, EXIT_PARTIAL, EXIT_FATAL}))
            now = state()
            # between runs an object is its source's, or still the stale one a sync replaces
            seen = {k: v for k, v in now.items() if not (k in stale and v != tree[k])}
            temp = {k for k in seen if k.rsplit("/", 1)[-1].startswith(TMP_PREFIX)}
            result.violate("whole objects", check_whole({k: v for k, v in seen.items() if k not in temp}, tree,
                                                        complete=run.code == EXIT_OK, extra_ok=extra_ok))
            if local_dst is not None and not run.hung:  # a run that ended by itself cleans up after itself
                result.violate("no temporary files", check_no_temp_files(local_dst))
            if run.code == EXIT_OK or run.hung:
                break
        else:
            result.violate("finishes", [f"not done after {MAX_RUNS} runs under faults (last exit "
                                        f"{result.runs[-1].code}: {result.runs[-1].err.strip()[-300:]!r})"])
            return
        if run.code != EXIT_OK:
            return
        result.faults = self._faults()
        self._arm(result.seed, on=False)
        final = state()
        result.objects_checked += len(final)
        result.violate("whole objects", check_whole(final, tree, complete=True))  # exact: deletes done too
        if operation != "copy_yadisk":
            result.violate("no multipart uploads", check_no_multipart_uploads(dst_client, "chaos", dst_prefix))

    def _kill_round(self, result: RoundResult, round_dir: Path, rng: random.Random, operation: str) -> None:
        _, direction, sig_name = operation.split("_")
        sig = signal.Signals[sig_name]
        src = round_dir / "src"
        tree = make_tree(src, rng, big=24 * MiB)
        a = self.clients["a"]
        prefix = f"{operation}-{result.seed}"
        local_dst: Path | None = None
        if direction == "up":
            args = ["copy", str(src), f"a:chaos/{prefix}"]
        else:
            put_tree(self.servers["a"], "chaos", prefix, src, tree)
            local_dst = round_dir / "dst"
            local_dst.mkdir()
            args = ["copy", f"a:chaos/{prefix}", str(local_dst)]
        # at 16 MB/s the copy takes about two seconds here: room for a signal to land mid-upload
        args += ["--json", "--no-progress", "--transfers", "4", "--bwlimit", "16M"]
        env = self._environ(round_dir)

        def state() -> dict[str, str]:
            return local_tree(local_dst) if local_dst is not None else s3_tree(a, "chaos", prefix)

        self._arm(result.seed, on=False)  # signals only: the proxy passes everything
        kills = rng.randrange(1, MAX_KILLS + 1)
        for attempt in range(kills + 2):
            signalled = attempt < kills
            at = rng.uniform(*self.signal_window)
            twice = sig is not signal.SIGKILL and rng.random() < 0.5 and self.second_signal
            second_after = rng.uniform(0.05, 0.5) if twice else None
            every = self.signal_every if sig is not signal.SIGKILL else None
            run = run_cli(args, env, sig=sig if signalled else None, at=at if signalled else None,
                          second_after=None if every else second_after, every=every)
            result.runs.append(run)
            if run.signal is None:
                allowed = {EXIT_OK}
            elif sig is signal.SIGKILL:
                allowed = {-signal.SIGKILL, EXIT_OK}
            else:
                allowed = {EXIT_INTERRUPTED, EXIT_OK}
            result.violate("exit status", check_exit_status(run, allowed))
            now = state()
            temp = {k for k in now if k.rsplit("/", 1)[-1].startswith(TMP_PREFIX)}
            result.violate("whole objects", check_whole({k: v for k, v in now.items() if k not in temp}, tree,
                                                        complete=run.code == EXIT_OK))
            result.violate("journal", check_journal(round_dir / "journal.db"))
            if run.code == EXIT_INTERRUPTED:
                # README: the first signal lets transfers finish, the second aborts them and removes
                # temporary files and multipart uploads: an interrupted run leaves neither
                if local_dst is not None:
                    result.violate("no temporary files after 130", check_no_temp_files(local_dst))
                else:
                    result.violate("no multipart uploads after 130", check_no_multipart_uploads(a, "chaos", prefix))
            if run.code == EXIT_OK:
                break
        else:
            result.violate("finishes", [f"not done after {kills} signals and 2 free runs (last exit "
                                        f"{result.runs[-1].code}: {result.runs[-1].err.strip()[-300:]!r})"])
            return
        final = state()
        result.objects_checked += len(final)
        result.violate("whole objects", check_whole(final, tree, complete=True))
        if local_dst is not None:
            result.violate("no temporary files", check_no_temp_files(local_dst))
        else:
            result.violate("no multipart uploads", check_no_multipart_uploads(a, "chaos", prefix))


def run_rounds(lab: ChaosLab, operations: Iterable[str], rounds: int, seed: int,
               on_round: Callable[[RoundResult], None] | None = None,
               deadline: float | None = None) -> list[RoundResult]:
    """``rounds`` rounds of each operation, round ``i`` with seed ``seed + i``; stops early past ``deadline``
    (a ``time.monotonic()`` value)."""
    results = []
    for op in operations:
        for i in range(rounds):
            if deadline is not None and time.monotonic() > deadline:
                return results
            r = lab.round(op, seed + i)
            results.append(r)
            if on_round is not None:
                on_round(r)
    return results
