"""When a job runs: interval or cron schedules, and the windows it may run in.

Times are local time, as in bandwidth timetables (:mod:`vertexflow.throttle`).

* ``interval``: the first run at start, then one every INTERVAL counted from
  the start of the previous run (a run that overruns is followed at once).
* ``cron``: a standard five-field expression (croniter), e.g. ``*/5 * * * *``.
* windows: ``"[DAYS ]HH:MM-HH:MM"``; DAYS is ``Mon``, ``Mon-Fri``, ``Sat,Sun``
  or a mix, every day when left out. An end at or before the start crosses
  midnight (``22:00-02:00``: from 22:00 to 02:00 the next morning, the day
  naming the evening). ``24:00`` is the end of the day. Outside every window a
  running job is paused at a clean point, and continued in the next window.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEK = 7 * 86400
_WINDOW = re.compile(r"(?:(?P<days>[A-Za-z,\-]+)\s+)?(?P<start>\d{1,2}:\d{2})-(?P<end>\d{1,2}:\d{2})")


def check_cron(expr: str) -> None:
    """Raise ValueError (with the expression) unless ``expr`` is a valid five-field cron expression."""
    from croniter import croniter

    if len(expr.split()) != 5 or not croniter.is_valid(expr):
        raise ValueError(f"{expr!r} is not a cron expression: use five fields, e.g. '*/5 * * * *'")


def cron_next(expr: str, after: datetime) -> datetime:
    from croniter import croniter

    return croniter(expr, after).get_next(datetime)  # type: ignore[no-any-return]


def cron_period(expr: str) -> float:
    """Seconds between the next two firings: the job's nominal period."""
    first = cron_next(expr, datetime.now())
    return (cron_next(expr, first) - first).total_seconds()


@dataclass(frozen=True, slots=True)
class Schedule:
    """A job's schedule: ``interval`` seconds, a ``cron`` expression, or neither (on demand)."""

    interval: float | None = None
    cron: str | None = None

    def next_run(self, now: datetime, last_start: datetime | None) -> datetime | None:
        """When the next scheduled run is due (None: only on demand or events)."""
        if self.interval is not None:
            return now if last_start is None else max(now, last_start + timedelta(seconds=self.interval))
        if self.cron is not None:
            return cron_next(self.cron, now)
        return None


def _minutes(text: str, *, end: bool) -> int:
    hour, minute = (int(p) for p in text.split(":"))
    if (hour == 24 and minute == 0 and end) or (hour < 24 and minute < 60):
        return hour * 60 + minute
    raise ValueError(f"{text!r} is not a time of day")


def _days(text: str | None) -> list[int]:
    if text is None:
        return list(range(7))
    out: list[int] = []
    for part in text.lower().split(","):
        first, _, last = part.partition("-")
        for name in (first, last or first):
            if name[:3] not in _DAYS or name not in (name[:3], _full(name[:3])):
                raise ValueError(f"unknown day {name!r} (use Mon, Tue, ... Sun)")
        a, b = _DAYS.index(first[:3]), _DAYS.index((last or first)[:3])
        out += [(a + i) % 7 for i in range((b - a) % 7 + 1)]
    return sorted(set(out))


def _full(short: str) -> str:
    return {"mon": "monday", "tue": "tuesday", "wed": "wednesday", "thu": "thursday", "fri": "friday",
            "sat": "saturday", "sun": "sunday"}[short]


@dataclass(frozen=True, slots=True)
class Windows:
    """Spans of the week, as (start, end) seconds from Monday 00:00; ``end`` may pass the week's end."""

    spans: tuple[tuple[int, int], ...] = ()
    text: tuple[str, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Windows:
        """Raise ValueError naming a bad entry."""
        spans: list[tuple[int, int]] = []
        texts = tuple(entries)
        for entry in texts:
            m = _WINDOW.fullmatch(entry.strip())
            if not m:
                raise ValueError(f"{entry!r} is not '[DAYS ]HH:MM-HH:MM', e.g. 'Mon-Fri 01:00-06:00'")
            try:
                start, end = _minutes(m["start"], end=False), _minutes(m["end"], end=True)
                days = _days(m["days"])
            except ValueError as exc:
                raise ValueError(f"{entry!r}: {exc}") from None
            if end <= start:
                end += 24 * 60  # crosses midnight
            spans += [((d * 1440 + start) * 60, (d * 1440 + end) * 60) for d in days]
        return cls(tuple(spans), texts)

    @property
    def always(self) -> bool:
        return not self.spans

    def is_open(self, when: datetime) -> bool:
        if not self.spans:
            return True
        s = _second_of_week(when)
        return any(a <= s < b or a <= s + _WEEK < b for a, b in self.spans)

    def next_change(self, when: datetime) -> datetime | None:
        """The next moment a window opens or closes (None: always open). The state may be
        the same on both sides of it where windows overlap: callers look again then."""
        if not self.spans:
            return None
        s = _second_of_week(when)
        deltas = [((edge % _WEEK) - s) % _WEEK or _WEEK for span in self.spans for edge in span]
        return when + timedelta(seconds=min(deltas))

    def next_open(self, when: datetime) -> datetime | None:
        """When a window is next open (``when`` itself if one is open now)."""
        t = when
        for _ in range(2 * len(self.spans) + 2):  # each step crosses one edge
            if self.is_open(t):
                return t
            nxt = self.next_change(t)
            if nxt is None:
                return t
            t = nxt
        return None  # pragma: no cover - a non-empty set of spans always opens within a week


def _second_of_week(when: datetime) -> float:
    return when.weekday() * 86400 + when.hour * 3600 + when.minute * 60 + when.second + when.microsecond / 1e6
