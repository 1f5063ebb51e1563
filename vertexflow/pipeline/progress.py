"""What a running job shows of its progress, drawn from :class:`JobStats`: a live line, or JSON lines.

Honest about what is known: while the source is still being listed, totals
are shown as lower bounds ("≥"; ``totals_final: false`` in JSON) and there
is no ETA. The rate is the bytes moved over the last :data:`WINDOW` seconds,
not the average since the start, and the ETA is what is left at that rate.

* :class:`ProgressView`: the one-line display on a terminal (stderr). It is
  drawn with rich's ``Live``, which the command line already uses for its
  tables: it redraws one line in place, follows the terminal's width, and
  does nothing special when stderr is not a terminal. tqdm would be a second
  library for the same line, and counts items, where this line counts bytes,
  objects and errors at once.
* :class:`ProgressJson`: ``--progress-json FILE``: one JSON object per
  second and a final one, for scripts (:meth:`ProgressJson.fields` lists
  the keys).
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import IO, Any

import anyio
from rich.console import Console
from rich.live import Live
from rich.text import Text

from .stats import JobStats

WINDOW = 5.0  # seconds of history behind the displayed rate
JSON_INTERVAL = 1.0  # seconds between two JSON progress objects: often enough for a script, few lines an hour


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"  # pragma: no cover


class RateWindow:
    """Bytes per second over the last ``window`` seconds of samples of a growing byte count.

    A count that goes down starts the window again: a job that counts a
    new phase from zero (a restore's second pass over its archive).
    """

    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, moved: int, now: float | None = None) -> float:
        """Take a sample; the rate over the window up to it."""
        now = time.monotonic() if now is None else now
        if self._samples and moved < self._samples[-1][1]:
            self._samples.clear()
        self._samples.append((now, moved))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.window:
            self._samples.popleft()
        t0, b0 = self._samples[0]
        return (moved - b0) / (now - t0) if now > t0 else 0.0


def phase(stats: JobStats) -> str:
    """What the job is doing: the phase it names, else listing (totals still growing) or transferring."""
    if stats.phase is not None:
        return stats.phase
    return "transferring" if stats.listing_done else "listing"


def eta_seconds(stats: JobStats, rate: float) -> float | None:
    """Seconds left at ``rate``: None until the totals are known and bytes move."""
    if not stats.listing_done or rate <= 0:
        return None
    return max(0.0, (stats.listed_bytes - stats.progress_bytes) / rate)


class ProgressView:
    def __init__(self, stats: JobStats, console: Console | None = None) -> None:
        self.stats = stats
        self.console = console or Console(stderr=True)
        self._rate = RateWindow()

    def rate(self) -> float:
        return self._rate.add(self.stats.moved_bytes)

    def render(self) -> Text:
        s = self.stats
        rate = self.rate()
        bound = "" if s.listing_done else "≥"
        total_objects = s.listed_objects
        line = Text()
        if s.phase is not None:
            line.append(f"{s.phase}  ", style="bold")
        moved = s.progress_bytes  # bytes count as they move, not when their object finishes
        if s.listing_done and s.listed_bytes:
            filled = int(moved / s.listed_bytes * 20)
            line.append("[" + "█" * filled + "░" * (20 - filled) + "] ", style="cyan")
        line.append(f"{human_bytes(moved)}/{bound}{human_bytes(s.listed_bytes)}  ")
        line.append(f"{human_bytes(rate)}/s  ", style="green")
        finished = s.done_objects + s.skipped_objects + s.failed_objects
        line.append(f"objects {finished:,}/{bound}{total_objects:,}  ")
        if s.skipped_objects:
            line.append(f"(unchanged {s.skipped_objects:,}) ")
        if not s.listing_done:
            line.append("(listing) ", style="yellow")
        line.append(f"errors {s.failed_objects:,}  ", style="red" if s.failed_objects else "")
        if s.retries:
            line.append(f"retries {s.retries:,}  ")
        eta = eta_seconds(s, rate)
        if eta is not None:
            line.append(f"ETA {int(eta // 3600)}:{int(eta % 3600 // 60):02d}:{int(eta % 60):02d}")
        else:
            line.append("ETA --:--:--")
        return line

    async def run(self, interval: float = 0.25) -> None:
        """Redraw until cancelled."""
        # drawn when updated, not by rich's refresh thread besides (a third of the redraws, and no thread)
        with Live(self.render(), console=self.console, auto_refresh=False, transient=False) as live:
            try:
                while True:
                    await anyio.sleep(interval)
                    live.update(self.render(), refresh=True)
            finally:
                live.update(self.render(), refresh=True)


#: the final JSON object's ``phase`` by exit status (any other: failed): 1 is done with failures counted,
#: 8 and 10 a run stopped at --max-transfer / --max-duration, 130 interrupted
FINAL_PHASE = {0: "done", 1: "done", 8: "stopped", 10: "stopped", 130: "interrupted"}


class ProgressJson:
    """``--progress-json``: a JSON object every :data:`JSON_INTERVAL` on ``stream`` while the job runs, then a last one.

    Each object is one line, written and flushed whole, with the keys of
    :meth:`fields`; the final one adds ``"final": true`` and the command's
    ``exit_status``.
    """

    def __init__(self, stats: JobStats, stream: IO[str], *, interval: float = JSON_INTERVAL,
                 close: bool = False) -> None:
        self.stats, self.stream, self.interval = stats, stream, interval
        self._close = close
        self._rate = RateWindow()
        self.lines = 0

    def fields(self) -> dict[str, Any]:
        """The progress now: ``bytes_done``/``bytes_total`` (as they move; the total grows while
        ``totals_final`` is false), ``objects_done`` (copied, unchanged or failed) / ``objects_total``,
        ``rate_bytes_per_s`` over the last ``rate_window_s``, ``eta_seconds`` (null: unknown) and ``phase``."""
        s = self.stats
        rate = self._rate.add(s.moved_bytes)
        eta = eta_seconds(s, rate)
        return {"time": round(time.time(), 3), "elapsed": round(s.elapsed, 3), "phase": phase(s),
                "bytes_done": s.progress_bytes, "bytes_total": s.listed_bytes,
                "objects_done": s.done_objects + s.skipped_objects + s.failed_objects,
                "objects_total": s.listed_objects, "totals_final": s.listing_done,
                "skipped": s.skipped_objects, "failed": s.failed_objects, "retries": s.retries,
                "rate_bytes_per_s": round(rate, 1), "rate_window_s": self._rate.window,
                "eta_seconds": None if eta is None else round(eta, 1), "final": False}

    def _write(self, data: dict[str, Any]) -> None:
        self.stream.write(json.dumps(data) + "\n")
        self.stream.flush()
        self.lines += 1

    async def run(self) -> None:
        """Write a line every interval until cancelled (the first at once)."""
        while True:
            self._write(self.fields())
            await anyio.sleep(self.interval)

    def finish(self, exit_status: int) -> None:
        """The final line: the state at the end, its ``exit_status``; closes a file opened for it."""
        try:
            data = self.fields()
            final = FINAL_PHASE.get(exit_status, "failed")
            data.update(final=True, exit_status=exit_status, phase=final,
                        eta_seconds=0.0 if final == "done" else None)
            self._write(data)
        finally:
            if self._close:
                self.stream.close()
