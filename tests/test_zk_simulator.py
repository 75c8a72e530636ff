"""The simulated clock's own clock: an offset, a drift, and setting itself from the `Date`."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from gateway.clock import FakeClock
from simulators.zk_push import SimClock, parse_pins

ZONE = ZoneInfo("Asia/Shanghai")
START = dt.datetime(2026, 11, 20, 9, 0, 0, tzinfo=ZONE)


def test_a_clock_is_off_by_its_offset_and_drifts() -> None:
    true_time = FakeClock(START)
    clock = SimClock("CK1", "http://x", time_source=true_time.now, offset_s=30, drift_ppm=500)
    assert clock.now() == dt.datetime(2026, 11, 20, 9, 0, 30)
    true_time.advance(10_000)  # 500 ppm of 10 000 s is 5 s
    assert clock.now() == dt.datetime(2026, 11, 20, 11, 47, 15)


def test_a_clock_sets_itself_from_the_servers_date_and_drifts_from_there() -> None:
    true_time = FakeClock(START)
    clock = SimClock("CK1", "http://x", time_source=true_time.now, offset_s=-600, drift_ppm=1000)
    true_time.advance(1000)
    clock.set_time(true_time.now())  # what a handshake does with its answer's Date
    assert clock.now() == dt.datetime(2026, 11, 20, 9, 16, 40)
    true_time.advance(2000)
    assert clock.now() == dt.datetime(2026, 11, 20, 9, 50, 2)


def test_a_clock_in_another_zone_stamps_its_own_local_time() -> None:
    clock = SimClock("CK1", "http://x", zone="Asia/Tokyo", time_source=FakeClock(START).now)
    assert clock.now() == dt.datetime(2026, 11, 20, 10, 0, 0)


def test_punches_wait_until_acknowledged() -> None:
    clock = SimClock("CK1", "http://x", time_source=FakeClock(START).now)
    record = clock.punch("1001", status=1, verify=15)
    assert (record.pin, record.status, record.verify, record.stamp) == (
        "1001",
        1,
        15,
        "2026-11-20 09:00:00",
    )
    assert list(clock.pending) == [record]
    assert clock.acknowledged == []


def test_pin_ranges() -> None:
    assert parse_pins("1001-1003,2001") == ["1001", "1002", "1003", "2001"]
