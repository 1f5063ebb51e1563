"""Bandwidth limits: token buckets shared by every worker, following rclone-style timetables.

Forms of a limit (``--bwlimit``, ``--bwlimit-up``, ``--bwlimit-down``, a
remote's ``bwlimit`` in the config file):

* ``10M``: 10 MiB/s each way; ``off``: no limit. Units as for sizes: ``k``,
  ``M``, ``G`` are binary; a bare number is bytes per second.
* ``10M:1M``: 10 MiB/s up (writes to a destination), 1 MiB/s down (reads).
* A timetable of ``[DAY-]HH:MM,RATE`` entries separated by spaces, e.g.
  ``"08:00,512k 19:00,10M 23:00,off"`` or ``"Mon-08:00,512k Sat-00:00,off"``.
  Each entry starts at its time (every day, or on its weekday) and lasts
  until the next one; before the first entry of a day (or week) the last
  entry still applies. Times are local time. A running job switches rates
  as the clock passes an entry (within a second).

Accuracy: bytes pass in slices of at most ``burst``, the smaller of one
buffer and 20 ms at the current rate. A slice may go as soon as the bucket
is out of debt, and an idle bucket saves at most the smaller of one buffer
and 100 ms of the rate, so over any window the bytes moved exceed rate x
window by at most 120 ms worth (1.2% of a 10-second window), and only in a
window that follows an idle spell. Since a consumer stalled by the event
loop (up to 100 ms) is credited the time, a saturated transfer does not fall
below the rate either. Waiting consumers recheck the rate at least every
second: that is how a timetable switch takes effect mid-transfer.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import anyio

from .errors import ConfigError
from .filters import parse_size

#: The largest burst: one pipeline buffer (the local backend's read size).
BUFFER = 4 * 1024 * 1024
#: Slice at a given rate, in seconds of it: small against any window a user measures.
BURST_SECONDS = 0.02
#: What an idle bucket saves, in seconds of the rate (at most one buffer): a
#: consumer that the event loop or the OS stalls this long still catches up.
SAVE_SECONDS = 0.1
#: Smallest burst (and slice handed on at once): below this, per-slice costs dominate.
MIN_BURST = 8 * 1024
#: Waiting consumers look at the rate again at least this often (timetable switches).
RECHECK = 1.0

_DAYS = {name: i for i, names in enumerate((
    ("mon", "monday"), ("tue", "tuesday"), ("wed", "wednesday"), ("thu", "thursday"),
    ("fri", "friday"), ("sat", "saturday"), ("sun", "sunday"))) for name in names}
_ENTRY = re.compile(r"(?:([A-Za-z]+)-)?(\d{1,2}):(\d{2}),(\S+)")
_MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True, slots=True)
class Rates:
    """Bytes per second each way; None means unlimited."""

    up: float | None
    down: float | None


def parse_rate(text: str, what: str = "--bwlimit") -> float | None:
    """``512k``, ``10M``, ``off`` -> bytes per second (None for off)."""
    if text.strip().lower() == "off":
        return None
    try:
        rate = parse_size(text)
    except ConfigError:
        raise ConfigError(f"{what}: invalid rate {text!r}: use e.g. 512k, 10M or off") from None
    if rate <= 0:
        raise ConfigError(f"{what}: rate {text!r} must be positive (use off for no limit)")
    return float(rate)


def _parse_rates(text: str, what: str) -> Rates:
    up, sep, down = text.partition(":")
    if sep:
        return Rates(parse_rate(up, what), parse_rate(down, what))
    rate = parse_rate(text, what)
    return Rates(rate, rate)


class Timetable:
    """Rates that change at set times of the day or week (one entry: a constant limit).

    ``entries`` are (minute of the week, rates), Monday 00:00 being minute 0.
    """

    def __init__(self, entries: list[tuple[int, Rates]], text: str) -> None:
        self._entries = sorted(entries, key=lambda e: e[0])
        self._minutes = [m for m, _ in self._entries]
        self.text = text

    def rates_at(self, when: datetime) -> Rates:
        minute = when.weekday() * _MINUTES_PER_DAY + when.hour * 60 + when.minute
        i = bisect.bisect_right(self._minutes, minute) - 1
        return self._entries[i][1]  # i == -1: the week's last entry is still on

    @property
    def one_way(self) -> bool:
        """Every entry gives one rate (not ``UP:DOWN``)."""
        return all(r.up == r.down for _, r in self._entries)

    def __str__(self) -> str:
        return self.text


def parse_bwlimit(text: str, what: str = "--bwlimit") -> Timetable:
    """A rate (``10M``, ``10M:1M``, ``off``) or a timetable of ``[DAY-]HH:MM,RATE`` entries."""
    tokens = text.split()
    if len(tokens) == 1 and "," not in tokens[0]:
        return Timetable([(0, _parse_rates(tokens[0], what))], text)
    if not tokens:
        raise ConfigError(f"{what}: empty limit")
    entries: list[tuple[int, Rates]] = []
    for token in tokens:
        m = _ENTRY.fullmatch(token)
        if not m:
            raise ConfigError(f"{what}: {token!r} is not HH:MM,RATE or DAY-HH:MM,RATE (e.g. Mon-08:00,512k)")
        day, hour, minute, rate = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
        if hour > 23 or minute > 59:
            raise ConfigError(f"{what}: {token!r}: no such time of day")
        rates = _parse_rates(rate, what)
        at = hour * 60 + minute
        if day is None:
            entries += [(d * _MINUTES_PER_DAY + at, rates) for d in range(7)]
        elif day.lower() in _DAYS:
            entries.append((_DAYS[day.lower()] * _MINUTES_PER_DAY + at, rates))
        else:
            raise ConfigError(f"{what}: {token!r}: unknown day {day!r} (use Mon, Tue, ... Sun)")
    return Timetable(entries, text)


class TokenBucket:
    """A bytes-per-second limit shared by every worker that passes bytes through it.

    ``rate()`` gives the current limit (None: unlimited); it is asked again on
    every call and while waiting, so a changing rate applies at once.
    """

    def __init__(self, rate: Callable[[], float | None], *, buffer: int = BUFFER,
                 clock: Callable[[], float] = anyio.current_time) -> None:
        self._rate = rate
        self._buffer = buffer
        self._clock = clock
        self._tokens: float | None = None  # bytes that may pass now; below 0: debt to wait out
        self._last = 0.0
        self._lock = anyio.Lock()  # one waiter at a time, first come first served
        #: bytes let through so far
        self.passed = 0

    def burst(self, rate: float | None) -> int:
        """The largest slice let through at once."""
        if rate is None:
            return self._buffer
        return int(min(self._buffer, max(MIN_BURST, rate * BURST_SECONDS)))

    def capacity(self, rate: float) -> int:
        """The most an idle bucket saves."""
        return int(min(self._buffer, max(self.burst(rate), rate * SAVE_SECONDS)))

    def slice_size(self) -> int:
        """The most bytes to hand on at once (a larger buffer is cut into slices of this)."""
        return self.burst(self._rate())

    async def consume(self, n: int) -> None:
        """Wait until ``n`` bytes may pass."""
        if self._rate() is None:
            self.passed += n
            return
        async with self._lock:
            while True:
                rate = self._rate()
                if rate is None:
                    break
                now = self._clock()
                if self._tokens is None:
                    self._tokens = 0.0  # start empty: the first slice goes at once, in debt
                else:
                    self._tokens = min(float(self.capacity(rate)), self._tokens + (now - self._last) * rate)
                self._last = now
                # Out of debt is enough: a consumer woken late by the event loop is
                # credited the time, so the long-run rate is the limit, not less.
                if self._tokens >= 0:
                    self._tokens -= n
                    break
                await anyio.sleep(min(-self._tokens / rate, RECHECK))
        self.passed += n


class _CurrentRate:
    """One side's rate from a timetable, looked up again at most every second."""

    def __init__(self, table: Timetable, side: str, now: Callable[[], datetime],
                 clock: Callable[[], float]) -> None:
        self._table, self._side, self._now, self._clock = table, side, now, clock
        self._until = float("-inf")
        self._value: float | None = None

    def __call__(self) -> float | None:
        t = self._clock()
        if t >= self._until:
            self._value = getattr(self._table.rates_at(self._now()), self._side)
            self._until = t + RECHECK
        return self._value


class Bandwidth:
    """A pair of buckets: ``up`` for bytes written to a store, ``down`` for bytes read.

    Shared by every backend and worker it is given to (a job's limit, or one
    remote's).
    """

    def __init__(self, up: Timetable | None, down: Timetable | None, *, buffer: int = BUFFER,
                 now: Callable[[], datetime] = datetime.now,
                 clock: Callable[[], float] = anyio.current_time) -> None:
        self.up = TokenBucket(_CurrentRate(up, "up", now, clock), buffer=buffer, clock=clock) if up else None
        self.down = TokenBucket(_CurrentRate(down, "down", now, clock), buffer=buffer, clock=clock) if down else None
        self.description = {"up": str(up) if up else "off", "down": str(down) if down else "off"}

    def as_dict(self) -> dict[str, object]:
        """For the job summary: the limits and the bytes that passed them."""
        return {**self.description, "up_bytes": self.up.passed if self.up else None,
                "down_bytes": self.down.passed if self.down else None}

    def describe(self) -> str:
        return f"up {self.description['up']}, down {self.description['down']}"

    @classmethod
    def from_options(cls, both: str | None = None, up: str | None = None, down: str | None = None,
                     **kwargs: object) -> Bandwidth | None:
        """From ``--bwlimit`` (both ways, or ``UP:DOWN``), ``--bwlimit-up`` and ``--bwlimit-down``."""
        both_table = parse_bwlimit(both) if both else None
        up_table = _one_way(up, "--bwlimit-up") if up else both_table
        down_table = _one_way(down, "--bwlimit-down") if down else both_table
        if up_table is None and down_table is None:
            return None
        return cls(up_table, down_table, **kwargs)  # type: ignore[arg-type]


def _one_way(text: str, flag: str) -> Timetable:
    table = parse_bwlimit(text, flag)
    if not table.one_way:
        raise ConfigError(f"{flag} takes one rate per entry, not UP:DOWN")
    return table
