"""Trying vertexflow without real storage: ``vertexflow demo`` and ``vertexflow emulate``."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from ..filters import parse_size
from ..pipeline.progress import human_bytes
from ..pipeline.runner import StopSignal
from ..pipeline.stats import JobStats
from .run import EXIT_OK, EXIT_PARTIAL, fail, print_summary, reported, run_job


@click.command()
@click.option("--dir", "workdir", type=click.Path(file_okay=False), default=None,
              help="Where to create the sample tree and its copy [a new temporary directory].")
@click.option("--files", type=click.IntRange(1, 1_000_000), default=2000, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def demo(workdir: str | None, files: int, as_json: bool) -> None:
    """The embedded default job: make a sample tree, copy it local-to-local with
    SHA-256 verification, check every byte, print the summary.

    Without --dir the tree and its copy live in a temporary directory that is
    removed at the end (however the run ends); with --dir they stay there.
    """
    import shutil
    import tempfile

    if workdir is not None:
        _demo(workdir, files, as_json)
        return
    base = tempfile.mkdtemp(prefix="vertexflow-demo-")
    try:
        _demo(base, files, as_json)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _demo(base: str, files: int, as_json: bool) -> None:
    from ..backends.local import LocalBackend
    from ..ops.copy import CopyJob
    from ..testing.sample_tree import make_tree, trees_equal

    src, dst = os.path.join(base, "source"), os.path.join(base, "copy")
    made = make_tree(src, files=files)
    click.echo(f"sample tree: {made.files:,} files, {human_bytes(made.bytes)} in {src}", err=True)
    stats = JobStats()
    stop = StopSignal()

    async def job() -> None:
        async with LocalBackend(src) as s, LocalBackend(dst) as d:
            await CopyJob(s, d, stats=stats, stop=stop).run()

    code = run_job(job, stats, stop, sys.stderr.isatty())
    print_summary(stats, as_json, f"{src} -> {dst}")
    if code == EXIT_OK:
        problems = trees_equal(src, dst)
        if problems:
            fail("copy differs from the source: " + "; ".join(problems[:5]), EXIT_PARTIAL)
        click.echo(f"verified: every file of {dst} matches its source byte for byte", err=True)
    sys.exit(code)


@click.group()
def emulate() -> None:
    """Run a local emulator of a storage service, to rehearse without a real account."""


@emulate.command("yandex-disk")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--token", default=None, help="Accept only this OAuth token [any non-empty token].")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Keep state in this directory (survives restarts) [in memory].")
@click.option("--latency", type=float, default=0.0, help="Seconds added to every API request.")
@click.option("--rate-limit", type=click.FloatRange(0, 1), default=0.0, help="Share of requests answered 429.")
@click.option("--retry-after", type=float, default=1.0, help="Retry-After seconds sent with 429s.")
@click.option("--error-rate", type=click.FloatRange(0, 1), default=0.0, help="Share of requests answered 5xx.")
@click.option("--lock-rate", type=click.FloatRange(0, 1), default=0.0, help="Share of requests answered 423.")
@click.option("--async-upload-rate", type=click.FloatRange(0, 1), default=0.0,
              help="Share of uploads answered 202 and finished later.")
@click.option("--async-delay", type=float, default=0.2, help="Seconds an asynchronous operation stays in progress.")
@click.option("--total-space", default="10G", help="Disk size, e.g. 10G.")
@click.option("--max-file-size", default="1G", help="Largest file accepted (1G free, 50G paid accounts).")
@click.option("--paid", is_flag=True, help="Report a paid account.")
@click.option("--seed", type=int, default=0, help="Seed for the injected faults.")
def emulate_yandex_disk(port: int, host: str, token: str | None, data_dir: str | None, total_space: str,
                        max_file_size: str, **knobs: Any) -> None:
    """The Yandex.Disk REST API on HOST:PORT (point a remote's base_url, or
    YANDEX_DISK_API_URL, at http://HOST:PORT/v1/disk)."""
    from pathlib import Path

    from ..testing.yandex_disk import serve

    with reported():
        sizes = {"total_space": parse_size(total_space), "max_file_size": parse_size(max_file_size)}
    serve(port, host=host, token=token, data_dir=Path(data_dir) if data_dir else None, **sizes, **knobs)
