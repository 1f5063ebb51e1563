"""The chaos harness: vertexflow's command line under network faults and signals, checked by invariants.

* :func:`run_cli` runs ``python -m vertexflow ...`` as a subprocess (bounded in time);
* :func:`kill_rounds` runs a command, sends it a signal (SIGKILL, SIGTERM,
  SIGINT) at a moment drawn from a seed, and reruns it until it exits 0,
  checking invariants after every round (bounded in rounds and time);
* the invariants, one function each, return a list of problems (empty: held):
  :func:`check_whole`, :func:`check_no_temp_files`,
  :func:`check_no_multipart_uploads`, :func:`check_journal`, :func:`check_exit_status`,
  :func:`check_migration_exit`, :func:`check_live_state_gone`,
  :func:`check_moved` (a move loses nothing), :func:`check_foreign` (what the
  operation does not own is untouched), :func:`check_resend` (a rerun sends
  again only what was not whole at the destination); :func:`read_backups`
  reads backups back with boto3, gzip and tarfile;
* :class:`ChaosLab` owns one or two SeaweedFS servers, a :class:`FaultProxy`
  in front of each, a config file naming them as remotes ``a`` and ``b``
  (5 MiB parts), the Yandex.Disk emulator behind a proxy too (remote ``y``),
  and runs the operations (:data:`OPERATIONS`): copy and sync local -> S3 and
  S3 -> local through the faults, S3 -> S3 across two servers, local ->
  Yandex.Disk, move local -> S3, verify --fix both ways, backup create and
  restore; the kill rounds of a multipart upload, a move and a backup; the
  daemon running a sync job, SIGKILLed and restarted; Yandex.Disk -> local;
  and a company migrated between the two servers (live, rolled back, its
  migrator SIGKILLed) while a platform writer (:mod:`.platform_writer`)
  creates, overwrites and deletes its files.

Everything is drawn from a round's seed (the data, the faults, the moments of
the signals), so a violation names the seed that replays it:
``python benchmarks/chaos.py --ops OP --seed SEED --rounds 1``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
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
            second_after: float | None = None, every: float | None = None,
            after: Callable[[], bool] | None = None) -> Run:
    """Run the command; with ``sig``, send it ``at`` seconds after the start (or, with ``after``, after
    ``after()`` first holds, asked every 50 ms) (and again ``second_after`` seconds later, if given and the
    process still runs; or, with ``every``, again every that many seconds until it exits, at most
    :data:`MAX_REPEATS` times). A run past ``timeout`` is killed (``hung``)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(_command(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    sent: str | None = None
    sent_at = 0.0
    hung = False
    try:
        if sig is not None and at is not None and after is not None:
            # stdout and stderr stay unread meanwhile: a --json command writes them at its end
            while proc.poll() is None and time.monotonic() - t0 < timeout and not after():
                time.sleep(0.05)
        if sig is not None and at is not None:
            try:
                proc.wait(timeout=at)
            except subprocess.TimeoutExpired:
                proc.send_signal(sig)
                sent = sig.name
                sent_at = time.monotonic() - t0
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
    signal_at = (sent_at if after is not None else at) if sent else None
    return Run(args, proc.returncode, out, err, time.monotonic() - t0, sent, signal_at, hung)


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


def s3_keys(client: Any, bucket: str, prefix: str) -> set[str]:
    """The keys under ``prefix/``, listed with boto3."""
    return {item["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
            for item in page.get("Contents", ())}


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


def check_journal_agrees(path: Path, actual: dict[str, str]) -> list[str]:
    """What the journal (if the run made one) records as copied agrees with the destination: every object
    it marks done with a SHA-256, and every entry of its destination index with one, is there with it."""
    if not path.exists():
        return []
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"objects", "dest_index"} <= tables:
                return []  # killed while it was being made: it records nothing yet (the next run makes it)
            rows = db.execute("SELECT key, sha256, 'done' FROM objects WHERE action = 'copy' AND state = 'done' "
                              "AND sha256 IS NOT NULL UNION ALL "
                              "SELECT key, sha256, 'indexed' FROM dest_index WHERE sha256 IS NOT NULL").fetchall()
    except sqlite3.Error as exc:
        return [f"journal {path.name} does not read: {exc}"]
    problems = []
    for key, digest, what in sorted(set(rows)):
        if actual.get(key) != digest:
            got = actual.get(key)
            problems.append(f"the journal has {key!r} {what} with sha256 {digest[:12]}, the destination "
                            + (f"{got[:12]}" if got else "has no such object"))
    return problems


def check_exit_status(run: Run, allowed: Iterable[int] = DOCUMENTED, *, summary_kind: str = "transfer") -> list[str]:
    """The exit status is a documented one, allowed here, and agrees with the ``--json`` summary
    (``summary_kind`` "transfer": 0 nothing failed, 1 failures named, 130 interrupted; "verify": 0 exactly
    when ``ok``; "none": not checked); no traceback on stderr."""
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
    if summary is not None and summary_kind == "verify" and run.code in (EXIT_OK, EXIT_PARTIAL):
        if (run.code == EXIT_OK) != bool(summary.get("ok")):
            problems.append(f"exit {run.code} but the report says ok={summary.get('ok')!r}")
        return problems
    if summary is not None and summary_kind == "transfer" and run.code in DOCUMENTED:
        failed = summary.get("failed", 0)
        if run.code == EXIT_OK and (failed or summary.get("fatal_error") or summary.get("interrupted")):
            problems.append(f"exit 0 but the summary says failed={failed}, fatal_error={summary.get('fatal_error')!r}, "
                            f"interrupted={summary.get('interrupted')}")
        if run.code == EXIT_PARTIAL and not failed and not summary.get("failures"):
            problems.append("exit 1 but the summary names no failure")
        if run.code == EXIT_INTERRUPTED and not summary.get("interrupted"):
            problems.append("exit 130 but the summary does not say interrupted")
    return problems


def check_moved(at_source: dict[str, str], at_dest: dict[str, str], expected: dict[str, str], *,
                done: bool) -> list[str]:
    """A move loses nothing: every object is whole at its source, at the destination, or both; the source
    holds nothing changed; once the move is ``done``, everything is at the destination and nothing at
    the source (README: a killed move loses nothing)."""
    problems = []
    for key, digest in sorted(expected.items()):
        if at_source.get(key) != digest and at_dest.get(key) != digest:
            problems.append(f"lost object {key!r}: neither whole at the source nor at the destination")
    problems += [f"source object {key!r} changed: sha256 {digest[:12]}" for key, digest in sorted(at_source.items())
                 if key in expected and digest != expected[key]]
    if done:
        problems += [f"moved object {key!r} still at the source" for key in sorted(at_source) if key in expected]
    return problems


def reported_copies(report: Path, actions: Iterable[str] = ("copied",)) -> set[str]:
    """The keys a run's ``--report`` file names with one of ``actions`` (the lines written before it ended)."""
    keys: set[str] = set()
    wanted = set(actions)
    if report.exists():
        for line in report.read_text(errors="replace").splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue  # the last line of a killed run may be cut short
            if isinstance(item, dict) and item.get("action") in wanted:
                keys.add(item["key"])
    return keys


def _files_under(root: Path) -> set[str]:
    """Every file's path under ``root`` (temporary ones too), relative; nothing if it does not exist."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def check_resend(copied: set[str], whole_before: set[str]) -> list[str]:
    """A rerun sends again at most what was not whole at the destination when it started (the objects in
    flight when the previous run ended, and those not begun): nothing already whole there is sent again."""
    return [f"re-sent object {key!r}: it was whole at the destination before this run"
            for key in sorted(copied & whole_before)]


def s3_snapshot(client: Any, bucket: str, keys: Iterable[str]) -> dict[str, str]:
    """What identifies each object now (SHA-256 of its bytes, ETag, last modified), read with boto3;
    an absent one is left out."""
    out = {}
    for key in keys:
        try:
            got = client.get_object(Bucket=bucket, Key=key)
        except client.exceptions.NoSuchKey:
            continue
        digest = hashlib.sha256(got["Body"].read()).hexdigest()
        out[key] = f"{digest} {got['ETag']} {got['LastModified'].isoformat()}"
    return out


def local_snapshot(paths: Iterable[Path]) -> dict[str, str]:
    """What identifies each file now (SHA-256, size, mtime in ns); an absent one is left out."""
    out = {}
    for path in paths:
        if path.is_file():
            st = path.stat()
            out[str(path)] = f"{sha256_file(path)} {st.st_size} {st.st_mtime_ns}"
    return out


def check_foreign(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Objects the operation did not own (beside its prefix or folder) are there and unchanged."""
    problems = []
    for key, ident in sorted(before.items()):
        if key not in after:
            problems.append(f"foreign object {key!r} deleted")
        elif after[key] != ident:
            problems.append(f"foreign object {key!r} changed: {ident[:12]} -> {after[key][:12]}")
    return problems


def read_backups(client: Any, bucket: str, prefix: str) -> dict[str, dict[str, str] | None]:
    """Every backup folder under ``prefix/``, read back with boto3, tarfile and gzip/zstd only: id -> the
    archived files (path -> SHA-256) for a folder with metadata.json (the parts checked against it),
    None for one without (an incomplete backup). A complete-looking folder that does not read whole
    raises ValueError naming what is wrong."""
    import gzip
    import io
    import tarfile

    start = f"{prefix.rstrip('/')}/"
    folders: dict[str, set[str]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=start):
        for item in page.get("Contents", ()):
            top, _, name = item["Key"][len(start):].partition("/")
            folders.setdefault(top, set()).add(name)
    out: dict[str, dict[str, str] | None] = {}
    for bid, names in sorted(folders.items()):
        if "metadata.json" not in names:
            out[bid] = None
            continue

        def get(name: str) -> bytes:
            return client.get_object(Bucket=bucket, Key=f"{start}{bid}/{name}")["Body"].read()

        meta = json.loads(get("metadata.json"))
        storage = meta.get("storage") or {}
        stream = bytearray()
        for part in storage.get("parts", []):
            if part["name"] not in names:
                raise ValueError(f"backup {bid} looks complete but part {part['name']} is missing")
            data = get(part["name"])
            if hashlib.sha256(data).hexdigest() != part["sha256"] or len(data) != part["size"]:
                raise ValueError(f"backup {bid} looks complete but part {part['name']} differs from metadata.json")
            stream += data
        if hashlib.sha256(stream).hexdigest() != storage.get("stream", {}).get("sha256"):
            raise ValueError(f"backup {bid}: the parts joined differ from storage.stream.sha256")
        if storage.get("compression") == "zstd":
            import zstandard

            raw = zstandard.ZstdDecompressor().decompressobj().decompress(bytes(stream))
        else:
            raw = gzip.decompress(bytes(stream))
        files = {}
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for member in tar:
                if member.isfile():
                    f = tar.extractfile(member)
                    files[member.name] = hashlib.sha256(f.read() if f else b"").hexdigest()
        out[bid] = files
    return out


def check_migration_exit(run: Run, done: str, allowed: Iterable[int]) -> list[str]:
    """A ``migrate company`` / ``migrate rollback`` run: the exit status is documented and allowed here, and
    agrees with its ``--json`` result (docs/migration.md): 0 when it reached ``done`` ("switched",
    "rolled_back") and its smoke check passed; 1 when it failed (and rolled back), or reached ``done`` with a
    failed smoke check; 2 when it did not reach ``done``."""
    problems = check_exit_status(run, allowed, summary_kind="none")
    if run.hung or run.code not in (EXIT_OK, EXIT_PARTIAL, EXIT_FATAL):
        return problems
    summary = run.summary()
    if summary is None:
        return problems + [f"exit {run.code} without a --json result; stdout {run.out.strip()[-200:]!r}"]
    state = summary.get("state")
    smoke_ok = bool((summary.get("smoke") or {"ok": True}).get("ok"))
    if run.code == EXIT_OK and (state != done or not smoke_ok):
        problems.append(f"exit 0 but the result says state={state!r}, smoke ok={smoke_ok}")
    if run.code == EXIT_PARTIAL and state == done and smoke_ok:
        problems.append(f"exit 1 but the result says {done} with its smoke check passed")
    if run.code == EXIT_FATAL and state == done:
        problems.append(f"exit 2 but the result says {done}: {summary.get('message')!r}")
    return problems


def company_route(db: Path, slug: str) -> tuple[str | None, str | None]:
    """Where a company is (the name of its storage connection, None without one) and the state of its live
    migration (None without one), read from the platform database with sqlite3."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as db_:
        row = db_.execute("SELECT c.id, s.name FROM companies c LEFT JOIN storage_connections s "
                          "ON s.id = c.storage_connection_id WHERE c.slug = ?", (slug,)).fetchone()
        if row is None:
            raise ValueError(f"no company {slug!r} in {db}")
        live = db_.execute("SELECT state FROM vertexflow_routing WHERE company_id = ?", (row[0],)).fetchone()
    return row[1], live[0] if live else None


def check_live_state_gone(db: Path) -> list[str]:
    """Once every migration ended and the writers stopped, the platform database holds no live state: no
    company routed through a migration, no write in flight, no dirty key."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as db_:
        routed = db_.execute("SELECT company_id, state FROM vertexflow_routing WHERE state IS NOT NULL").fetchall()
        inflight = db_.execute("SELECT COUNT(*) FROM vertexflow_inflight").fetchone()[0]
        dirty = db_.execute("SELECT COUNT(*) FROM vertexflow_migration_dirty").fetchone()[0]
    return ([f"company {cid} still routed through a migration (state {state!r})" for cid, state in routed]
            + ([f"{inflight} writes still registered in flight"] if inflight else [])
            + ([f"{dirty} dirty keys left"] if dirty else []))


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
    #: wall time of the round, its checks included
    seconds: float = 0.0

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
    "move_up": ("move local -> S3", "faults"),
    "kill_move_SIGKILL": ("move local -> S3, 24 MiB, SIGKILL", "kill"),
    "fix_up": ("verify --fix --delete local -> S3: one object missing, one corrupted, one extra", "faults"),
    "fix_down": ("verify --fix --delete S3 -> local: one object missing, one corrupted, one extra", "faults"),
    "backup_create": ("backup create --type storage local -> S3", "faults"),
    "backup_restore": ("backup restore S3 -> local", "faults"),
    "kill_backup_SIGKILL": ("backup create local -> S3, 8 MiB, SIGKILL", "kill"),
    "kill_restore_SIGKILL": ("backup restore S3 -> local, 24 MiB, SIGKILL", "kill"),
    "daemon_job": ("daemon sync --delete job local -> S3 through the faults, SIGKILL, restarted", "kill"),
    "copy_yadisk_down": ("copy Yandex.Disk emulator -> local", "faults"),
    "migrate_live": ("migrate company --live S3 -> S3, two servers, a platform writer meanwhile", "faults"),
    "migrate_rollback": ("migrate rollback S3 -> S3 after a live migration, a platform writer meanwhile", "faults"),
    "kill_migrate_SIGKILL": ("migrate company --live S3 -> S3, a platform writer meanwhile, SIGKILL", "kill"),
}
#: the operations that migrate a company (:meth:`ChaosLab._migrate_round`)
MIGRATIONS = ("migrate_live", "migrate_rollback", "kill_migrate_SIGKILL")
#: the operations that need server B, and those that need the Yandex.Disk emulator (a lab starts them on demand)
TWO_SERVERS = frozenset({"copy_s3_s3", *MIGRATIONS})
YANDEX = frozenset({"copy_yadisk", "copy_yadisk_down"})


def signal_of(operation: str) -> str:
    """The signal a kill round sends (the daemon's round: SIGKILL)."""
    last = operation.rsplit("_", 1)[-1]
    return last if last.startswith("SIG") else "SIGKILL"

#: the key a fix round's destination holds that its source does not (deleted by --fix --delete)
EXTRA_KEY = "extra/junk.bin"
#: seconds the daemon's round waits for a run to succeed after its last restart
DAEMON_WAIT = 150.0
#: seconds a restarted daemon whose job had already succeeded must stay idle to count as done
SETTLED = 5.0

#: runs of a command per round under faults before the round counts as never finishing
MAX_RUNS = 6
#: a migration round's company, and the two other companies it must leave alone (name -> connection)
MIGRATED, OTHERS = "acme", {"beta": "src", "gamma": "dst"}
#: the categories the platform writer works in, and the one of the originals it never changes
WRITER_CATEGORIES, ARCHIVE = ("c0", "c1"), "archive"
#: a migration's copy (about 10 MiB) takes a few seconds at this rate: the writer's operations overlap it
MIGRATE_BWLIMIT = "4M"
#: the platform writer's operations after a migration round's last run (on the company's route then)
WRITES_AFTER = 10
#: the platform writer's pause between operations: some 10 a second, a busy company (a faster one makes the
#: migration copy thousands of small files, and a round minutes long)
WRITER_INTERVAL = 0.1
#: the platform writer stops by itself after this many seconds or operations (the round stops it much earlier)
WRITER_SECONDS, WRITER_OPS = 1800.0, 100_000
#: signals per kill round before the command is left to finish
MAX_KILLS = 3



def _last_exit(result: RoundResult) -> str:
    """The last run's exit status and the end of its stderr, for a round that never finished."""
    last = result.runs[-1]
    return f"last exit {last.code}: {last.err.strip()[-300:]!r}"

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
        #: a round that broke nothing leaves nothing behind (its folder, its objects): a long run's disk use
        #: stays that of a few rounds; False keeps them all (--keep-work)
        self.forget_clean_rounds = True
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

    def environ(self, round_dir: Path) -> dict[str, str]:
        """The command's environment for a round in ``round_dir``: the lab's remotes and credentials, the
        journal and HOME there."""
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
        started = time.monotonic()
        round_dir = self.workdir / f"{operation}-{seed}"
        round_dir.mkdir(parents=True)
        rng = random.Random(f"{operation}:{seed}")
        try:
            if operation == "daemon_job":
                self._daemon_round(result, round_dir, rng)
            elif operation in MIGRATIONS:
                self._migrate_round(result, round_dir, rng, operation)
            elif operation.startswith("kill_"):
                self._kill_round(result, round_dir, rng, operation)
            elif operation.startswith("backup_"):
                self._backup_round(result, round_dir, rng, operation)
            else:
                self._fault_round(result, round_dir, rng, operation)
        except Exception as exc:  # noqa: BLE001 - the harness itself failing is reported, not hidden
            result.violate("harness", [f"{type(exc).__name__}: {exc}"])
        finally:
            if not result.faults:
                result.faults = self._faults()
            self._arm(seed, on=False)
            result.seconds = time.monotonic() - started
        if self.forget_clean_rounds and not result.violations:
            self._forget(f"{operation}-{seed}", round_dir)
        return result

    def _forget(self, prefix: str, round_dir: Path) -> None:
        """Remove what a round left: its folder, and its objects (and the foreign ones put beside them) in the
        lab's ``chaos`` buckets (SeaweedFS reclaims the space of deleted objects by itself)."""
        shutil.rmtree(round_dir, ignore_errors=True)
        for client in self.clients.values():
            keys = [item["Key"] for p in (f"{prefix}/", f"{prefix}-foreign/", f"foreign/{prefix}/", f"{prefix}.bin")
                    for page in client.get_paginator("list_objects_v2").paginate(Bucket="chaos", Prefix=p)
                    for item in page.get("Contents", ())]
            for i in range(0, len(keys), 1000):
                client.delete_objects(Bucket="chaos", Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]],
                                                              "Quiet": True})

    def _foreign(self, round_dir: Path, prefix: str) -> Callable[[], dict[str, str]]:
        """Put objects the round's operation does not own beside what it does (in every bucket the lab has:
        a sibling prefix that starts with the round's, a key that does, one under another folder; local
        files beside the round's folders); the function that reads them all back. Their bytes come from
        a generator of their own: the round's draws do not depend on how many servers the lab has."""
        rng = random.Random(f"foreign:{prefix}")
        keys = [f"{prefix}-foreign/keep.bin", f"{prefix}.bin", f"foreign/{prefix}/keep.bin"]
        bodies = [rng.randbytes(rng.randrange(1024, 20_000)) for _ in keys]  # 1 KiB and up: see put_tree
        for client in self.clients.values():
            for key, body in zip(keys, bodies):
                client.put_object(Bucket="chaos", Key=key, Body=body)
        paths = [round_dir / "src-foreign" / "keep.bin", round_dir / "dst.bin", round_dir / "srcx.bin"]
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(rng.randbytes(rng.randrange(1, 20_000)))

        def snapshot() -> dict[str, str]:
            out = local_snapshot(paths)
            for name, client in self.clients.items():
                out.update({f"{name}:{k}": v for k, v in s3_snapshot(client, "chaos", keys).items()})
            return out

        return snapshot

    def _fault_round(self, result: RoundResult, round_dir: Path, rng: random.Random, operation: str) -> None:
        src = round_dir / "src"
        tree = make_tree(src, rng)
        a = self.clients["a"]
        prefix = f"{operation}-{result.seed}"
        stale: set[str] = set()
        extra_ok: set[str] = set()
        local_dst: Path | None = None
        dst_client, dst_prefix = a, prefix
        summary_kind = "transfer"
        if operation in ("copy_up", "sync_up", "move_up"):
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
        elif operation == "copy_yadisk_down":
            if not self.yandex_api:
                raise RuntimeError("copy_yadisk_down needs the Yandex.Disk emulator")
            # the source is put there by vertexflow without faults (a journal of its own), then read back
            seed_env = {**self.environ(round_dir), "VERTEXFLOW_JOURNAL": str(round_dir / "seed-journal.db")}
            seeded = run_cli(["copy", str(src), f"y:/{prefix}", "--json", "--no-progress"], seed_env)
            if seeded.code != EXIT_OK or yadisk_tree(self.yandex_api, f"/{prefix}") != tree:
                raise RuntimeError(f"seeding the emulator exited {seeded.code}: {seeded.err.strip()[-300:]!r}")
            local_dst = round_dir / "dst"
            local_dst.mkdir()
            args = ["copy", f"y:/{prefix}", str(local_dst)]
        elif operation == "copy_s3_s3":
            if "b" not in self.clients:
                raise RuntimeError("copy_s3_s3 needs two servers")
            put_tree(self.servers["a"], "chaos", prefix, src, tree)
            dst_client = self.clients["b"]
            args = ["copy", f"a:chaos/{prefix}", f"b:chaos/{prefix}"]
        elif operation in ("fix_up", "fix_down"):
            # the destination starts as a copy of the source, then loses one object, has one corrupted
            # (same size, one byte inverted) and gains one the source does not have
            put_tree(self.servers["a"], "chaos", prefix, src, tree)
            if operation == "fix_down":
                import shutil

                local_dst = round_dir / "dst"
                shutil.copytree(src, local_dst)
                args = ["verify", f"a:chaos/{prefix}", str(local_dst)]
            else:
                args = ["verify", str(src), f"a:chaos/{prefix}"]
            keys = sorted(k for k in tree if (src / k).stat().st_size > 0)
            missing, corrupted = rng.sample(keys, 2)
            data = bytearray((src / corrupted).read_bytes())
            data[rng.randrange(len(data))] ^= 0xFF
            if local_dst is not None:
                (local_dst / missing).unlink()
                (local_dst / corrupted).write_bytes(bytes(data))
                (local_dst / EXTRA_KEY).parent.mkdir(parents=True, exist_ok=True)
                (local_dst / EXTRA_KEY).write_bytes(rng.randbytes(5000))
            else:
                a.delete_object(Bucket="chaos", Key=f"{prefix}/{missing}")
                a.put_object(Bucket="chaos", Key=f"{prefix}/{corrupted}", Body=bytes(data))
                a.put_object(Bucket="chaos", Key=f"{prefix}/{EXTRA_KEY}", Body=rng.randbytes(5000))
            args += ["--fix", "--delete"]
            stale, extra_ok = {corrupted}, {EXTRA_KEY}
            summary_kind = "verify"
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
        args += ["--json", "--no-progress"]
        if summary_kind == "transfer":
            args += ["--retries", str(self.retries)]
        env = self.environ(round_dir)
        foreign = self._foreign(round_dir, prefix)
        foreign_before = foreign()

        def state() -> dict[str, str]:
            if operation == "copy_yadisk":
                return yadisk_tree(self.yandex_api, f"/{prefix}")
            return local_tree(local_dst) if local_dst is not None else s3_tree(dst_client, "chaos", dst_prefix)

        self._arm(result.seed, on=True)
        whole: set[str] = set()
        for attempt in range(MAX_RUNS):
            report = round_dir / f"report-{attempt}.jsonl"
            run = run_cli(args + (["--report", str(report)] if summary_kind == "transfer" else []), env)
            result.runs.append(run)
            result.violate("exit status", check_exit_status(run, {EXIT_OK, EXIT_PARTIAL, EXIT_FATAL},
                                                            summary_kind=summary_kind))
            result.violate("resent at most in flight", check_resend(reported_copies(report), whole))
            now = state()
            # between runs an object is its source's, or still the stale one a sync replaces
            seen = {k: v for k, v in now.items() if not (k in stale and v != tree[k])}
            temp = {k for k in seen if k.rsplit("/", 1)[-1].startswith(TMP_PREFIX)}
            seen = {k: v for k, v in seen.items() if k not in temp}
            # what this run finished: whole at the destination and reported copied or unchanged (one that
            # failed, e.g. its answer lost after the store had it, or that was in flight at a fatal error,
            # was in flight: the next run may send it again)
            done = reported_copies(report, ("copied", "skipped")) if summary_kind == "transfer" else set()
            whole = {k for k, v in seen.items() if tree.get(k) == v and k in done}
            result.violate("whole objects", check_whole(seen, tree, complete=run.code == EXIT_OK, extra_ok=extra_ok))
            if operation == "move_up":
                result.violate("nothing lost by a move", check_moved(local_tree(src), seen, tree,
                                                                      done=run.code == EXIT_OK))
            if local_dst is not None and not run.hung:  # a run that ended by itself cleans up after itself
                result.violate("no temporary files", check_no_temp_files(local_dst))
            if run.code == EXIT_OK or run.hung:
                break
        else:
            result.violate("finishes", [f"not done after {MAX_RUNS} runs under faults ({_last_exit(result)})"])
            return
        if run.code != EXIT_OK:
            return
        result.faults = self._faults()
        self._arm(result.seed, on=False)
        final = state()
        result.objects_checked += len(final)
        result.violate("whole objects", check_whole(final, tree, complete=True))  # exact: deletes done too
        result.violate("journal agrees", check_journal_agrees(round_dir / "journal.db", final))
        if operation != "copy_yadisk":
            result.violate("no multipart uploads", check_no_multipart_uploads(dst_client, "chaos", dst_prefix))
        result.violate("foreign objects", check_foreign(foreign_before, foreign()))

    def _backup_round(self, result: RoundResult, round_dir: Path, rng: random.Random, operation: str) -> None:
        """backup_create: ``backup create`` local -> S3 through the faults, rerun until it exits 0; after every
        run each backup folder with metadata.json reads back whole (parts by their SHA-256, the archive's
        files equal to the source), and ``backup list`` marks the others incomplete. backup_restore: a
        backup made without faults, restored S3 -> local through them, rerun until it exits 0."""
        src = round_dir / "src"
        tree = make_tree(src, rng)
        a = self.clients["a"]
        prefix = f"{operation}-{result.seed}"
        to = f"a:chaos/{prefix}"
        # parts of at most 4 MiB: two or three per backup here, each its own upload
        create = ["backup", "create", "--type", "storage", "--storage", str(src), "--to", to, "--chunk-size", "4M",
                  "--json", "--no-progress"]
        env = self.environ(round_dir)
        foreign = self._foreign(round_dir, prefix)
        foreign_before = foreign()
        local_dst = round_dir / "dst"
        if operation == "backup_create":
            args = create
        else:
            self._arm(result.seed, on=False)
            made = run_cli(create, env)
            if made.code != EXIT_OK or not made.summary():
                raise RuntimeError(f"backup create without faults exited {made.code}: {made.err.strip()[-300:]!r}")
            args = ["backup", "restore", f"{to}/{made.summary()['backup']}", "--target-storage", str(local_dst),
                    "--json", "--no-progress"]
        self._arm(result.seed, on=True)
        for attempt in range(MAX_RUNS):
            run = run_cli(args, env)
            result.runs.append(run)
            result.violate("exit status", check_exit_status(run, {EXIT_OK, EXIT_PARTIAL, EXIT_FATAL},
                                                            summary_kind="none"))
            if operation == "backup_create":
                self._check_backups(result, prefix, tree, run)
            else:
                now = local_tree(local_dst)
                temp = {k for k in now if k.rsplit("/", 1)[-1].startswith(TMP_PREFIX)}
                result.violate("whole objects", check_whole({k: v for k, v in now.items() if k not in temp}, tree,
                                                            complete=run.code == EXIT_OK))
                if not run.hung:
                    result.violate("no temporary files", check_no_temp_files(local_dst))
            if run.code == EXIT_OK or run.hung:
                break
        else:
            result.violate("finishes", [f"not done after {MAX_RUNS} runs under faults ({_last_exit(result)})"])
            return
        if run.code != EXIT_OK:
            return
        result.faults = self._faults()
        self._arm(result.seed, on=False)
        if operation == "backup_create":
            result.objects_checked += self._check_listed(result, prefix, to, env)
        else:
            final = local_tree(local_dst)
            result.objects_checked += len(final)
            result.violate("whole objects", check_whole(final, tree, complete=True))
        result.violate("no multipart uploads", check_no_multipart_uploads(a, "chaos", prefix))
        result.violate("foreign objects", check_foreign(foreign_before, foreign()))

    def _check_backups(self, result: RoundResult, prefix: str, tree: dict[str, str], run: Run) -> None:
        """After a run of ``backup create``: every backup with metadata.json reads back whole and equal to the
        source; the one a run that exited 0 names is among them."""
        try:
            backups = read_backups(self.clients["a"], "chaos", prefix)
        except ValueError as exc:
            result.violate("no partial backup seen as complete", [str(exc)])
            return
        for bid, files in backups.items():
            if files is not None:
                result.violate("whole objects", [f"backup {bid}: {p}" for p in check_whole(files, tree, complete=True)])
        if run.code == EXIT_OK:
            bid = (run.summary() or {}).get("backup")
            if backups.get(bid) is None:
                result.violate("whole objects", [f"exit 0 but backup {bid!r} is not complete at the destination"])

    def _check_listed(self, result: RoundResult, prefix: str, to: str, env: dict[str, str]) -> int:
        """``backup list`` marks complete exactly the backups that read back whole; the files checked."""
        listed = run_cli(["backup", "list", "--to", to, "--json"], env)
        backups = read_backups(self.clients["a"], "chaos", prefix)
        if listed.code != EXIT_OK:
            result.violate("backup list", [f"backup list exited {listed.code}: {listed.err.strip()[-300:]!r}"])
            return 0
        marks = {e["id"]: e["complete"] for e in json.loads(listed.out)}
        for bid, files in backups.items():
            if marks.get(bid) != (files is not None):
                why = "it reads back whole" if files is not None else "it has no metadata.json"
                result.violate("backup list", [f"backup {bid} listed complete={marks.get(bid)} but {why}"])
        return sum(len(files) for files in backups.values() if files is not None)

    def _kill_round(self, result: RoundResult, round_dir: Path, rng: random.Random, operation: str) -> None:
        _, direction, sig_name = operation.split("_")
        sig = signal.Signals[sig_name]
        src = round_dir / "src"
        tree = make_tree(src, rng, big=(8 if direction == "backup" else 24) * MiB)
        a = self.clients["a"]
        prefix = f"{operation}-{result.seed}"
        local_dst: Path | None = None
        summary_kind = "transfer"
        if direction in ("up", "move"):
            args = ["copy" if direction == "up" else "move", str(src), f"a:chaos/{prefix}"]
        elif direction == "backup":
            # parts of 4 MiB: four or five; gzip:1, the fastest, keeps the 1-3 killed runs short
            args = ["backup", "create", "--type", "storage", "--storage", str(src), "--to", f"a:chaos/{prefix}",
                    "--chunk-size", "4M", "--compress", "gzip:1"]
            summary_kind = "none"
        elif direction == "restore":
            # the backup it restores, made without faults or signals; parts of 4 MiB, so a kill lands between
            # two or within one
            self._arm(result.seed, on=False)
            made = run_cli(["backup", "create", "--type", "storage", "--storage", str(src), "--to",
                            f"a:chaos/{prefix}", "--chunk-size", "4M", "--json", "--no-progress"],
                           self.environ(round_dir))
            if made.code != EXIT_OK or not made.summary():
                raise RuntimeError(f"backup create exited {made.code}: {made.err.strip()[-300:]!r}")
            local_dst = round_dir / "dst"
            args = ["backup", "restore", f"a:chaos/{prefix}/{made.summary()['backup']}",
                    "--target-storage", str(local_dst)]
            summary_kind = "none"
        else:
            put_tree(self.servers["a"], "chaos", prefix, src, tree)
            local_dst = round_dir / "dst"
            local_dst.mkdir()
            args = ["copy", f"a:chaos/{prefix}", str(local_dst)]
        args += ["--json", "--no-progress"]
        if direction not in ("backup", "restore"):
            # at 16 MB/s the copy takes about two seconds here: room for a signal to land mid-upload
            args += ["--transfers", "4", "--bwlimit", "16M"]
        env = self.environ(round_dir)
        foreign = self._foreign(round_dir, prefix)
        foreign_before = foreign()

        def state() -> dict[str, str]:
            return local_tree(local_dst) if local_dst is not None else s3_tree(a, "chaos", prefix)

        self._arm(result.seed, on=False)  # signals only: the proxy passes everything
        kills = rng.randrange(1, MAX_KILLS + 1)
        whole: set[str] = set()
        for attempt in range(kills + 2):
            signalled = attempt < kills
            at = rng.uniform(*self.signal_window)
            twice = sig is not signal.SIGKILL and rng.random() < 0.5 and self.second_signal
            second_after = rng.uniform(0.05, 0.5) if twice else None
            every = self.signal_every if sig is not signal.SIGKILL else None
            report = round_dir / f"report-{attempt}.jsonl"
            after = None
            if direction == "backup":
                # the moment counts from this run's first part at the destination: a kill lands between
                # parts, or after the last one, before metadata.json
                before = {k for k in s3_keys(a, "chaos", prefix)}
                at = rng.uniform(0.0, 1.5)

                def after() -> bool:
                    return any(k.rsplit("/", 1)[-1].startswith("storage.tar")
                               for k in s3_keys(a, "chaos", prefix) - before)
            elif direction == "restore":
                # the moment counts from this run's first new file (or temporary file) at the destination: a
                # restore of a few MiB is over within a second of its start
                assert local_dst is not None
                present = _files_under(local_dst)
                at = rng.uniform(0.0, 0.6)

                def after() -> bool:
                    return bool(_files_under(local_dst) - present)
            run = run_cli(args + (["--report", str(report)] if direction not in ("backup", "restore") else []), env,
                          sig=sig if signalled else None, at=at if signalled else None,
                          second_after=None if every else second_after, every=every, after=after)
            result.runs.append(run)
            if run.signal is None:
                allowed = {EXIT_OK}
            elif sig is signal.SIGKILL:
                allowed = {-signal.SIGKILL, EXIT_OK}
            else:
                allowed = {EXIT_INTERRUPTED, EXIT_OK}
            result.violate("exit status", check_exit_status(run, allowed, summary_kind=summary_kind))
            if direction == "backup":
                self._check_backups(result, prefix, tree, run)
            else:
                now = state()
                temp = {k for k in now if k.rsplit("/", 1)[-1].startswith(TMP_PREFIX)}
                now = {k: v for k, v in now.items() if k not in temp}
                result.violate("whole objects", check_whole(now, tree, complete=run.code == EXIT_OK))
                result.violate("resent at most in flight", check_resend(reported_copies(report), whole))
                whole = {k for k, v in now.items() if tree.get(k) == v}
                if direction == "move":
                    result.violate("nothing lost by a move", check_moved(local_tree(src), now, tree,
                                                                          done=run.code == EXIT_OK))
                result.violate("journal", check_journal(round_dir / "journal.db"))
                result.violate("journal agrees", check_journal_agrees(round_dir / "journal.db", now))
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
            result.violate("finishes", [f"not done after {kills} signals and 2 free runs ({_last_exit(result)})"])
            return
        if direction == "backup":
            result.objects_checked += self._check_listed(result, prefix, f"a:chaos/{prefix}", env)
        else:
            final = state()
            result.objects_checked += len(final)
            result.violate("whole objects", check_whole(final, tree, complete=True))
        if local_dst is not None:
            result.violate("no temporary files", check_no_temp_files(local_dst))
        else:
            result.violate("no multipart uploads", check_no_multipart_uploads(a, "chaos", prefix))
        result.violate("foreign objects", check_foreign(foreign_before, foreign()))

    def _daemon_round(self, result: RoundResult, round_dir: Path, rng: random.Random) -> None:
        """The daemon running a ``sync --delete`` job local -> S3 through the faults: SIGKILLed 1-3 times at
        drawn moments, restarted each time (an unfinished run continues at start); after each kill the
        journal opens and every object at the destination is whole; after the last start the job's run
        succeeds, the destination equals the source (the stale object deleted, foreign ones untouched),
        no multipart upload is left, and SIGTERM stops the daemon with 0."""
        import urllib.request

        src = round_dir / "src"
        tree = make_tree(src, rng, big=8 * MiB)
        a = self.clients["a"]
        prefix = f"daemon_job-{result.seed}"
        a.put_object(Bucket="chaos", Key=f"{prefix}/gone/old.bin", Body=rng.randbytes(5000))
        journal = round_dir / "journal.db"
        cfg = round_dir / "daemon.toml"
        cfg.write_text(
            '[daemon]\nlisten = "127.0.0.1:0"\n'
            f'journal = "{journal}"\n'
            # a failed run (the faults) is retried soon, not after the default 5 s doubling to 10 min
            'backoff_initial = "1s"\nbackoff_max = "2s"\ndrain_timeout = "10s"\n'
            '[[jobs]]\nname = "chaos"\nkind = "sync"\n'
            f'source = "{src}"\ndest = "a:chaos/{prefix}"\n'
            # runs at start, then not again within the round; 8 MB/s: a kill lands mid-run
            f'interval = "1h"\ndelete = true\nbwlimit = "8M"\ntransfers = 4\nretries = {self.retries}\n')
        env = self.environ(round_dir)
        foreign = self._foreign(round_dir, prefix)
        foreign_before = foreign()
        command = [sys.executable, "-m", "vertexflow", "--log-level", "info", "--log-format", "json",
                   "daemon", "--config", str(cfg)]
        self._arm(result.seed, on=True)
        kills = rng.randrange(1, MAX_KILLS)  # 1 or 2: each restart costs the daemon's start-up
        for attempt in range(kills + 1):
            log = round_dir / f"daemon-{attempt}.log"
            t0 = time.monotonic()
            with open(log, "w") as err:
                proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                        stdin=subprocess.DEVNULL)
            try:
                if attempt < kills:
                    # the moment is drawn from the job's run start (the daemon's start-up takes 1-3 s here)
                    at = rng.uniform(*self.signal_window)
                    begun = time.monotonic() + 60
                    while time.monotonic() < begun and proc.poll() is None and \
                            '"job run started"' not in log.read_text():
                        time.sleep(0.05)
                    try:
                        proc.wait(timeout=at)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                    proc.wait(timeout=60)
                    at = time.monotonic() - t0
                    run = Run(command, proc.returncode, "", log.read_text(), time.monotonic() - t0,
                              "SIGKILL", at)
                    result.runs.append(run)
                    result.violate("exit status", check_exit_status(run, {-signal.SIGKILL}, summary_kind="none"))
                else:
                    outcome = self._daemon_wait(proc, log, urllib.request)
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                    run = Run(command, proc.returncode, "", log.read_text(), time.monotonic() - t0)
                    result.runs.append(run)
                    result.violate("exit status", check_exit_status(run, {EXIT_OK}, summary_kind="none"))
                    if outcome != "success":
                        result.violate("finishes", [f"the job's run after the last restart: {outcome}"])
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            now = s3_tree(a, "chaos", prefix)
            result.violate("whole objects", check_whole(now, tree, complete=attempt == kills,
                                                        extra_ok={"gone/old.bin"} if attempt < kills else ()))
            result.violate("journal", check_journal(journal))
            result.violate("journal agrees", check_journal_agrees(journal, now))
        result.faults = self._faults()
        self._arm(result.seed, on=False)
        final = s3_tree(a, "chaos", prefix)
        result.objects_checked += len(final)
        result.violate("whole objects", check_whole(final, tree, complete=True))
        result.violate("no multipart uploads", check_no_multipart_uploads(a, "chaos", prefix))
        result.violate("foreign objects", check_foreign(foreign_before, foreign()))

    @staticmethod
    def _daemon_wait(proc: subprocess.Popen[bytes], log: Path, request: Any) -> str:
        """Wait (at most :data:`DAEMON_WAIT` s) for the daemon's job to finish a run that started after this
        start; its outcome ("success", "partial", ...), or why there was none."""
        import re

        deadline = time.monotonic() + DAEMON_WAIT
        base = ""
        started_at = time.time()
        settled: float | None = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return f"the daemon exited {proc.returncode}: {log.read_text()[-300:]!r}"
            if not base:
                m = re.search(r'"listen": "(?:https?://)?127\.0\.0\.1:(\d+)', log.read_text())
                if m:
                    base = f"http://127.0.0.1:{m.group(1)}"
            if base:
                try:
                    with request.urlopen(f"{base}/api/jobs/chaos", timeout=10) as r:
                        job = json.loads(r.read())
                except OSError:
                    job = {}
                last = job.get("last_result")
                # a run that failed under the faults is retried after the backoff: wait for a success
                if last and last.get("started", 0) >= started_at - 1 and last.get("outcome") == "success":
                    return "success"
                # the kill came after the run had succeeded: the restarted daemon remembers it and has nothing
                # to run before its schedule (right); seen so for SETTLED seconds, past a resume at its start
                idle = (last and last.get("outcome") == "success" and job.get("state") == "scheduled"
                        and not job.get("pending") and not job.get("failures_in_a_row"))
                if not idle:
                    settled = None
                elif settled is None:
                    settled = time.monotonic()
                elif time.monotonic() - settled >= SETTLED:
                    return "success"
            time.sleep(0.25)
        return f"no successful run within {DAEMON_WAIT:.0f} s"

    # -- company migrations ---------------------------------------------

    def platform_config(self, round_dir: Path, bucket: str, *, through_proxies: bool) -> Path:
        """A storage config with content type ``portraits`` and connections ``src`` (server A) and ``dst``
        (server B), both in ``bucket`` with 5 MiB parts: straight to the servers (the platform writer's), or
        through the fault proxies (the migrator's). The connections are named in the storage config only,
        so each process reaches them the way its own file says."""
        conns = {}
        for conn, name in (("src", "a"), ("dst", "b")):
            server = self.servers[name]
            conns[conn] = {"type": "s3", "endpoint": self.proxies[name].endpoint if through_proxies else server.endpoint,
                           "bucket": bucket, "region": server.region, "access_key_id": server.access_key,
                           "secret_access_key": server.secret_key, "addressing_style": "path", "part_size": 5 * MiB}
        path = round_dir / ("migrator.json" if through_proxies else "platform.json")
        path.write_text(json.dumps({"portraits": {"storage_type": "local"},
                                    "local": {"base_path": str(round_dir / "files")}, "connections": conns}))
        return path

    def _migrate_round(self, result: RoundResult, round_dir: Path, rng: random.Random, operation: str) -> None:
        """A company on server A (connection ``src``): originals the platform leaves alone (a 6 MiB one among
        them: two parts) and small files a platform writer (:class:`~.platform_writer.Writer`, its own
        process and StorageManager, straight to the servers) creates, overwrites and deletes all round; two
        other companies, one on each server. ``migrate_live``: ``migrate company --live`` to server B
        (connection ``dst``) through the faults, run again until it exits 0. ``migrate_rollback``: that
        migration without faults, the 6 MiB original replaced on B, then ``migrate rollback`` through the
        faults until it exits 0. ``kill_migrate_SIGKILL``: the live migration SIGKILLed 1-3 times at moments
        drawn from its first object on B, run again until it switched. After every run the exit status
        agrees with the ``--json`` result and the company is where that result says; at the end, read with
        boto3 where the database says the company is: every original whole, every acknowledged write at its
        last content, nothing the writer deleted back; the other companies untouched; no incomplete
        multipart upload on either server; no live state left."""
        from ..tenancy.adapters import FOLDER_MARKER
        from .platform_writer import SUBFOLDERS, Writer

        if "b" not in self.clients:
            raise RuntimeError(f"{operation} needs two servers")
        bucket = f"{operation}-{result.seed}".replace("_", "-").lower()
        for server in self.servers.values():
            server.create_bucket(bucket)
        clients = {"src": self.clients["a"], "dst": self.clients["b"]}
        db = round_dir / "platform.db"
        platform_cfg = self.platform_config(round_dir, bucket, through_proxies=False)
        env = {**self.environ(round_dir), "VERTEXFLOW_DB": str(db),
               "VERTEXFLOW_STORAGE_CONFIG": str(self.platform_config(round_dir, bucket, through_proxies=True))}

        # the company: originals in archive/ (the writer's categories are others), the writer's first files
        src = round_dir / "src"
        originals = {f"{ARCHIVE}/Image/{k}": v for k, v in make_tree(src / ARCHIVE / "Image", rng).items()}
        initial = {f"{c}/{s}/f0.txt": f"initial {c}/{s} ".ljust(rng.randrange(50, 3000), "i")
                   for c in WRITER_CATEGORIES for s in SUBFOLDERS}
        for key, text in initial.items():
            (src / key).parent.mkdir(parents=True, exist_ok=True)
            (src / key).write_text(text)
        put_tree(self.servers["a"], bucket, f"portraits/{MIGRATED}", src,
                 {**originals, **{k: "" for k in initial}})
        for slug, conn in OTHERS.items():
            other = random.Random(f"{slug}:{bucket}")
            for i in range(3):  # 1 KiB and up: see put_tree
                clients[conn].put_object(Bucket=bucket, Key=f"portraits/{slug}/c0/Image/f{i}.bin",
                                         Body=other.randbytes(other.randrange(1024, 50_000)))
        for slug, conn in {MIGRATED: "src", **OTHERS}.items():
            added = run_cli(["company", "add", slug, "--connection", conn], env)
            if added.code != EXIT_OK:
                raise RuntimeError(f"company add {slug} exited {added.code}: {added.err.strip()[-300:]!r}")

        def others() -> dict[str, str]:
            out = {}
            for slug in OTHERS:
                for conn, client in clients.items():
                    keys = s3_keys(client, bucket, f"portraits/{slug}")
                    out.update({f"{conn}:{k}": v for k, v in s3_snapshot(client, bucket, keys).items()})
            return out

        others_before = others()
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as db_:
            company_id = db_.execute("SELECT id FROM companies WHERE slug = ?", (MIGRATED,)).fetchone()[0]

        migrate = ["migrate", "company", MIGRATED, "--to", "dst", "--live", "--json", "--no-progress",
                   "--bwlimit", MIGRATE_BWLIMIT]
        if operation == "migrate_rollback":
            args, done, source, target = ["migrate", "rollback", MIGRATED, "--json", "--bwlimit", MIGRATE_BWLIMIT], \
                "rolled_back", "dst", "src"
        else:
            args, done, source, target = migrate, "switched", "src", "dst"
        writer = Writer(round_dir / "writer", config=platform_cfg, db=db, company_id=company_id,
                        content_types=["portraits"], categories=list(WRITER_CATEGORIES), seed=result.seed,
                        initial={"portraits": dict(initial)}, interval=WRITER_INTERVAL, max_seconds=WRITER_SECONDS,
                        max_ops=WRITER_OPS, env=self.environ(round_dir))
        stopped = False
        try:
            writer.wait_ready(60)
            if operation == "migrate_rollback":
                # the migration it rolls back, without faults; then the company changes on B: a 6 MiB original
                # replaced there (the sync back has two parts to send), the writer going on meanwhile
                first = run_cli(migrate, env)
                if first.code != EXIT_OK:
                    raise RuntimeError(f"the migration to roll back exited {first.code}: {first.err.strip()[-300:]!r}")
                big = f"{ARCHIVE}/Image/multi/six.bin"
                body = rng.randbytes(6 * MiB + rng.randrange(0, 64 * 1024))
                clients["dst"].put_object(Bucket=bucket, Key=f"portraits/{MIGRATED}/{big}", Body=body)
                originals[big] = hashlib.sha256(body).hexdigest()
                writer.wait_ops(WRITES_AFTER, timeout=60)
            killing = operation.startswith("kill_")
            self._arm(result.seed, on=not killing)
            kills = rng.randrange(1, MAX_KILLS + 1) if killing else 0
            for attempt in range(max(MAX_RUNS, kills + 2)):
                signalled = attempt < kills
                after = None
                if signalled:
                    def after() -> bool:
                        return bool(s3_keys(clients["dst"], bucket, f"portraits/{MIGRATED}"))
                run = run_cli(args, env, sig=signal.SIGKILL if signalled else None,
                              at=rng.uniform(0.0, 2.5) if signalled else None, after=after)
                result.runs.append(run)
                (round_dir / f"run-{attempt}.out").write_text(f"{' '.join(args)}\nexit {run.code} signal {run.signal}"
                                                            f" at {run.signal_at}\n{run.out}\n---- stderr\n{run.err}")
                if run.signal:
                    result.violate("exit status", check_exit_status(run, {-signal.SIGKILL, EXIT_OK},
                                                                    summary_kind="none"))
                else:
                    allowed = {EXIT_OK} if killing else {EXIT_OK, EXIT_PARTIAL, EXIT_FATAL}
                    result.violate("exit status", check_migration_exit(run, done, allowed))
                where, live = company_route(db, MIGRATED)
                state = (run.summary() or {}).get("state")
                if run.signal is None or run.code != -signal.SIGKILL:
                    # a run that ended by itself leaves the company where its result says, and no live state
                    want = target if state == done else source
                    if where != want:
                        result.violate("company where its result says",
                                       [f"run {attempt} ended {state!r} (exit {run.code}), the company is on "
                                        f"{where!r}, not {want!r}"])
                    if live is not None:
                        result.violate("no live state after a run", [f"run {attempt} ended {state!r} (exit "
                                                                      f"{run.code}), live state {live!r} left"])
                elif where not in (source, target):
                    result.violate("company where its result says", [f"killed, the company is on {where!r}"])
                if where == target and (state == done or run.signal):
                    break
                if run.hung:
                    break
            else:
                result.violate("finishes", [f"not done after {len(result.runs)} runs ({_last_exit(result)})"])
            result.faults = self._faults()
            self._arm(result.seed, on=False)
            writer.wait_ops(WRITES_AFTER, timeout=60)  # on the company's route after the last run
            stopped = True
            wrote = writer.stop()
        finally:
            if not stopped:
                writer.kill()
        result.violate("acknowledged writes", [f"a platform write failed: {e.strip()[-300:]}" for e in wrote.errors])
        result.violate("platform reads", wrote.read_errors)
        where, _ = company_route(db, MIGRATED)
        if where != target:
            result.violate("finishes", [f"the company is on {where!r} at the end, not {target!r}"])
        uncertain = {u.split(":", 1)[1] for u in wrote.uncertain}
        expected = {**originals, **{k: hashlib.sha256(v.encode()).hexdigest()
                                    for k, v in wrote.expected()["portraits"].items() if k not in uncertain}}
        if where in clients:
            final = {k: v for k, v in s3_tree(clients[where], bucket, f"portraits/{MIGRATED}").items()
                     if k.rsplit("/", 1)[-1] != FOLDER_MARKER}
            result.objects_checked += len(final)
            result.violate("whole objects", check_whole(final, expected, complete=True, extra_ok=uncertain))
        for conn, client in clients.items():
            result.violate("no multipart uploads", [f"{conn}: {p}" for p in check_no_multipart_uploads(client, bucket)])
        result.violate("other companies untouched", check_foreign(others_before, others()))
        result.violate("no live state left", check_live_state_gone(db))
        if not result.violations:
            # each round's bucket is a collection with volumes of its own on SeaweedFS: kept, a long run
            # exhausts the servers' volumes ("no free volumes left") after about 30 rounds; one that broke
            # something stays to be looked at
            for server in self.servers.values():
                server.delete_bucket_recursive(bucket)

def run_rounds(lab: ChaosLab, operations: Iterable[str], rounds: int, seed: int,
               on_round: Callable[[RoundResult], None] | None = None,
               deadline: float | None = None) -> list[RoundResult]:
    """``rounds`` rounds of each operation, round ``i`` with seed ``seed + i``; stops early past ``deadline``
    (a ``time.monotonic()`` value). Round ``i`` of every operation runs before round ``i + 1`` of any, so
    a run cut short by its deadline has tried each operation about as often."""
    results = []
    operations = list(operations)
    for i in range(rounds):
        for op in operations:
            if deadline is not None and time.monotonic() > deadline:
                return results
            r = lab.round(op, seed + i)
            results.append(r)
            if on_round is not None:
                on_round(r)
    return results
