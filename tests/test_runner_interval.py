"""A bus member with a poll interval of its own is due only that often, and offline members
keep the offline pace (never faster than their interval)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from gateway.clock import FakeClock
from gateway.devices import DeviceHub
from gateway.metrics import Metrics
from gateway.runner import OFFLINE_POLL_S, DeviceRunner


def _runner(poll_interval_s: float | None = None) -> DeviceRunner:
    clock = FakeClock(dt.datetime(2026, 11, 20, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai")))
    metrics = Metrics()
    hub = DeviceHub([("led-1", "display")], clock, metrics)
    return DeviceRunner("led-1", "display", hub, metrics, poll_interval_s=poll_interval_s)


def test_without_an_interval_a_member_is_due_in_every_sweep() -> None:
    runner = _runner()
    runner.attempted(100.0)
    runner.poll_ok()
    assert runner.due(100.001)
    assert runner.next_due() is None


def test_an_interval_spaces_the_polls_of_an_online_member() -> None:
    runner = _runner(poll_interval_s=10.0)
    assert runner.due(0.0)  # never polled: due at once
    runner.attempted(100.0)
    runner.poll_ok()
    assert not runner.due(109.9)
    assert runner.due(110.0)
    assert runner.next_due() == 110.0


def test_an_offline_member_is_polled_at_the_slower_of_its_interval_and_the_offline_pace() -> None:
    fast = _runner(poll_interval_s=1.0)
    slow = _runner(poll_interval_s=30.0)
    for runner in (fast, slow):
        for _ in range(3):
            runner.attempted(100.0)
            runner.poll_failed("timeout")
        assert not runner.online
    assert fast.next_due() == 100.0 + OFFLINE_POLL_S
    assert slow.next_due() == 130.0
    assert not slow.due(100.0 + OFFLINE_POLL_S)
