"""A live one-line progress display on stderr, drawn from :class:`JobStats`.

Honest about what is known: while the source is still being listed, totals
are shown as lower bounds ("≥") and there is no ETA. The rate is the bytes
moved over the last few seconds, not the average since the start.
"""

from __future__ import annotations

import time
from collections import deque

import anyio
from rich.console import Console
from rich.live import Live
from rich.text import Text

from .stats import JobStats

WINDOW = 5.0  # seconds of history behind the displayed rate


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"  # pragma: no cover


class ProgressView:
    def __init__(self, stats: JobStats, console: Console | None = None) -> None:
        self.stats = stats
        self.console = console or Console(stderr=True)
        self._samples: deque[tuple[float, int]] = deque()

    def rate(self) -> float:
        now = time.monotonic()
        self._samples.append((now, self.stats.moved_bytes))
        while len(self._samples) > 2 and now - self._samples[0][0] > WINDOW:
            self._samples.popleft()
        t0, b0 = self._samples[0]
        return (self.stats.moved_bytes - b0) / (now - t0) if now > t0 else 0.0

    def render(self) -> Text:
        s = self.stats
        rate = self.rate()
        bound = "" if s.listing_done else "≥"
        total_objects = s.listed_objects
        line = Text()
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
        if s.listing_done and rate > 0:
            eta = max(0.0, (s.listed_bytes - moved) / rate)
            line.append(f"ETA {int(eta // 3600)}:{int(eta % 3600 // 60):02d}:{int(eta % 60):02d}")
        else:
            line.append("ETA --:--:--")
        return line

    async def run(self, interval: float = 0.25) -> None:
        """Redraw until cancelled."""
        with Live(self.render(), console=self.console, refresh_per_second=8, transient=False) as live:
            try:
                while True:
                    await anyio.sleep(interval)
                    live.update(self.render())
            finally:
                live.update(self.render())
