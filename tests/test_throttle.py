"""Bandwidth limits: rates and timetables, the token bucket, switching while bytes flow."""

from __future__ import annotations

from datetime import datetime

import anyio
import pytest

from vertexflow.errors import ConfigError
from vertexflow.throttle import MIN_BURST, Bandwidth, Rates, TokenBucket, parse_bwlimit, parse_rate

M = 1024 * 1024


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """A time on weekday ``day`` (0 = Monday) of a week in 2024 (1 January 2024 was a Monday)."""
    return datetime(2024, 1, 1 + day, hour, minute)


def test_rates() -> None:
    assert parse_rate("10M") == 10 * M and parse_rate("512k") == 512 * 1024 and parse_rate("1.5M") == 1.5 * M
    assert parse_rate("off") is None and parse_rate("OFF") is None
    for bad in ("fast", "-1M", "0", ""):
        with pytest.raises(ConfigError):
            parse_rate(bad)


def test_a_single_rate_or_up_down_pair() -> None:
    assert parse_bwlimit("10M").rates_at(at(3, 12)) == Rates(10 * M, 10 * M)
    assert parse_bwlimit("10M:1M").rates_at(at(3, 12)) == Rates(10 * M, 1 * M)
    assert parse_bwlimit("off:1M").rates_at(at(3, 12)) == Rates(None, 1 * M)


def test_daily_timetable() -> None:
    table = parse_bwlimit("08:00,512k 19:00,10M 23:00,off")
    assert table.rates_at(at(2, 8)).up == 512 * 1024
    assert table.rates_at(at(2, 18, 59)).up == 512 * 1024
    assert table.rates_at(at(2, 19)).up == 10 * M
    assert table.rates_at(at(2, 23, 30)).up is None
    assert table.rates_at(at(2, 7, 59)).up is None  # before the day's first entry: last night's still holds
    assert table.rates_at(at(0, 0, 0)).up is None  # Monday 00:00: Sunday's 23:00 entry


def test_weekly_timetable() -> None:
    table = parse_bwlimit("Mon-08:00,512k Sat-00:00,off")
    assert table.rates_at(at(0, 7)).up is None  # Monday before 08:00: the weekend's "off" goes on
    assert table.rates_at(at(0, 8)).up == 512 * 1024
    assert table.rates_at(at(4, 23, 59)).up == 512 * 1024  # all week
    assert table.rates_at(at(5, 0)).up is None
    mixed = parse_bwlimit("Sat-00:00,off 09:00,1M:2M")
    assert mixed.rates_at(at(5, 10)) == Rates(1 * M, 2 * M)  # daily entries apply on weekends too
    assert mixed.rates_at(at(5, 5)).up is None


@pytest.mark.parametrize("bad", ["25:00,1M", "08:60,1M", "Xyz-08:00,1M", "08:00", "08:00,fast", "8h,1M"])
def test_bad_timetables(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_bwlimit(bad)


def test_up_and_down_options() -> None:
    bw = Bandwidth.from_options("10M", up="1M")
    assert bw is not None and bw.up is not None and bw.down is not None
    assert bw.description == {"up": "1M", "down": "10M"}
    assert Bandwidth.from_options(None, down="2M").up is None  # type: ignore[union-attr]
    assert Bandwidth.from_options(None) is None
    with pytest.raises(ConfigError, match="not UP:DOWN"):
        Bandwidth.from_options(None, up="1M:2M")


def test_burst_and_savings_are_at_most_one_buffer() -> None:
    bucket = TokenBucket(lambda: 1.0)
    assert bucket.burst(1 * M) == int(0.02 * M)
    assert bucket.burst(10_000 * M) == 4 * M  # one buffer
    assert bucket.burst(1000) == MIN_BURST
    assert bucket.capacity(1 * M) == int(0.1 * M) and bucket.capacity(1000 * M) == 4 * M


async def measured_rate(bucket: TokenBucket, seconds: float, piece: int = 16 * 1024, workers: int = 4) -> float:
    """Bytes per second that ``workers`` concurrent consumers get through ``bucket``."""
    passed = 0
    start = anyio.current_time()

    async def consume() -> None:
        nonlocal passed
        while anyio.current_time() - start < seconds:
            await bucket.consume(piece)
            passed += piece

    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(consume)
    return passed / (anyio.current_time() - start)


async def test_bucket_holds_the_rate_across_workers() -> None:
    rate = 2 * M
    got = await measured_rate(TokenBucket(lambda: rate), 1.5)
    # never more than the rate; less only when the process was not scheduled (a busy CI machine once
    # gave 1.73 MB/s: a stall late in the window cannot be made up before it closes)
    assert got < rate * 1.05
    assert got > rate * 0.8


async def test_a_timetable_switch_applies_while_bytes_flow() -> None:
    now = {"t": at(1, 9, 30)}
    bw = Bandwidth(parse_bwlimit("09:00,4M 10:00,1M"), None, now=lambda: now["t"])
    assert bw.up is not None
    before = await measured_rate(bw.up, 1.0)

    async def switch() -> None:
        await anyio.sleep(0.5)
        now["t"] = at(1, 10, 0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(switch)
        await measured_rate(bw.up, 2.0)  # the switch happens in here
    after = await measured_rate(bw.up, 1.5)
    assert abs(before - 4 * M) / (4 * M) < 0.05
    assert abs(after - 1 * M) / (1 * M) < 0.05


async def test_unlimited_passes_at_once() -> None:
    bucket = TokenBucket(lambda: None)
    with anyio.fail_after(1):
        for _ in range(1000):
            await bucket.consume(10 * M)
    assert bucket.passed == 10_000 * M
