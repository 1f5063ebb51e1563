"""Schedules and windows, on fixed dates (2026-11-23 is a Monday)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from vertexflow.daemon.schedule import Schedule, Windows, cron_period

MON = datetime(2026, 11, 23)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return MON + timedelta(days=day, hours=hour, minutes=minute)


def test_interval_runs_first_at_start_then_every_interval_from_the_last_start() -> None:
    s = Schedule(interval=600)
    assert s.next_run(at(0, 9), None) == at(0, 9)
    assert s.next_run(at(0, 9, 3), at(0, 9)) == at(0, 9, 10)
    assert s.next_run(at(0, 9, 30), at(0, 9)) == at(0, 9, 30)  # overran: at once


def test_cron_and_on_demand() -> None:
    s = Schedule(cron="*/15 2 * * 1-5")
    assert s.next_run(at(0, 1, 59), None) == at(0, 2, 0)
    assert s.next_run(at(0, 2, 50), None) == at(1, 2, 0)
    assert s.next_run(at(4, 3), None) == at(7, 2, 0)  # Friday after the last slot: next Monday
    assert Schedule().next_run(at(0, 0), None) is None
    assert cron_period("*/5 * * * *") == 300


def test_weekday_window() -> None:
    w = Windows.parse(["Mon-Fri 01:00-06:00"])
    assert w.is_open(at(0, 1)) and w.is_open(at(4, 5, 59))
    assert not w.is_open(at(0, 6)) and not w.is_open(at(5, 2)) and not w.is_open(at(0, 0, 59))
    assert w.next_open(at(0, 7)) == at(1, 1)
    assert w.next_open(at(4, 7)) == at(7, 1)  # Friday evening: Monday 01:00
    assert w.next_open(at(2, 3)) == at(2, 3)
    assert w.next_change(at(2, 3)) == at(2, 6)


def test_window_across_midnight_and_the_week_end() -> None:
    w = Windows.parse(["Sun 22:00-02:00"])
    assert w.is_open(at(6, 23)) and w.is_open(at(7, 1, 30))  # Sunday night into Monday
    assert not w.is_open(at(0, 2)) and not w.is_open(at(6, 21))
    assert w.next_open(at(0, 3)) == at(6, 22)
    every_night = Windows.parse(["22:00-02:00", "Sat,Sun 00:00-24:00"])
    assert every_night.is_open(at(2, 1)) and every_night.is_open(at(5, 12)) and not every_night.is_open(at(2, 12))


def test_no_windows_is_always_open() -> None:
    w = Windows.parse([])
    assert w.always and w.is_open(at(3, 3)) and w.next_change(at(3, 3)) is None


@pytest.mark.parametrize("bad", ["01:00", "Mon-Fri 1-6", "Xyz 01:00-02:00", "24:30-01:00", "Mon 10:00-10:60"])
def test_bad_windows(bad: str) -> None:
    with pytest.raises(ValueError):
        Windows.parse([bad])
