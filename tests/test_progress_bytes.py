"""Progress counts bytes as they move, not when their object finishes (CLI line, daemon API, metrics)."""

from __future__ import annotations

import io

from rich.console import Console

from vertexflow.daemon.jobs import Totals, progress
from vertexflow.pipeline.progress import ProgressView
from vertexflow.pipeline.stats import JobStats

MiB = 1024 * 1024


def one_large_object_half_moved() -> JobStats:
    stats = JobStats(listed_objects=1, listed_bytes=100 * MiB, listing_done=True)
    stats.moved_bytes = 40 * MiB  # in flight: no object done yet
    return stats


def test_the_daemon_reports_the_fraction_of_bytes_moved() -> None:
    p = progress(one_large_object_half_moved(), rate=10 * MiB)
    assert p["done_bytes"] == 0 and p["moved_bytes"] == 40 * MiB
    assert p["fraction"] == 0.4
    assert p["eta_seconds"] == 6.0  # the 60 MiB left at 10 MiB/s


def test_a_retried_object_never_shows_more_than_everything() -> None:
    stats = one_large_object_half_moved()
    stats.moved_bytes = 130 * MiB  # a retry streamed 30 MiB again
    p = progress(stats, rate=10 * MiB)
    assert p["fraction"] == 1.0 and p["eta_seconds"] == 0.0


def test_the_command_line_shows_the_bytes_in_flight() -> None:
    console = Console(width=200, file=io.StringIO(), force_terminal=False)
    line = ProgressView(one_large_object_half_moved(), console).render().plain
    assert line.startswith("[████████░░░░░░░░░░░░] 40.00 MiB/100.00 MiB"), line


def test_the_bytes_counter_grows_with_the_run_and_never_steps_back() -> None:
    totals = Totals()
    live = one_large_object_half_moved()
    during = totals.with_live(live).bytes
    assert during == 40 * MiB
    live.moved_bytes, live.done_bytes, live.done_objects = 100 * MiB, 100 * MiB, 1
    totals.add(live)  # the run ends
    assert totals.with_live(None).bytes == 100 * MiB >= during
