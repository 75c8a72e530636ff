"""Hall time. Every rule reads the time through a Clock so tests can run a day in seconds."""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol
from zoneinfo import ZoneInfo


class Clock(Protocol):
    zone: ZoneInfo

    def now(self) -> dt.datetime:
        """The current time, aware, in the hall's zone."""

    def timestamp(self) -> float:
        """The current time as POSIX seconds."""


class SystemClock:
    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone

    def now(self) -> dt.datetime:
        return dt.datetime.now(self.zone)

    def timestamp(self) -> float:
        return time.time()


class ScaledClock:
    """Hall time that is `start` at the POSIX time `anchor` and runs `speed` times faster than
    real time: a whole simulated working day in minutes. Anchored on the wall clock, so that the
    gateway and the simulators (separate processes) share one timeline."""

    def __init__(self, start: dt.datetime, speed: float, anchor: float | None = None) -> None:
        if start.tzinfo is None or not isinstance(start.tzinfo, ZoneInfo):
            raise ValueError("ScaledClock needs an aware start time with a ZoneInfo")
        if speed <= 0:
            raise ValueError("speed must be greater than 0")
        self.zone = start.tzinfo
        self.speed = speed
        self.start = start
        self.anchor = time.time() if anchor is None else anchor

    def now(self) -> dt.datetime:
        elapsed = (time.time() - self.anchor) * self.speed
        return self.start + dt.timedelta(seconds=elapsed)

    def timestamp(self) -> float:
        return self.now().timestamp()


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: dt.datetime) -> None:
        if start.tzinfo is None or not isinstance(start.tzinfo, ZoneInfo):
            raise ValueError("FakeClock needs an aware start time with a ZoneInfo")
        self.zone = start.tzinfo
        self._now = start

    def now(self) -> dt.datetime:
        return self._now

    def timestamp(self) -> float:
        return self._now.timestamp()

    def advance(self, seconds: float) -> dt.datetime:
        self._now = self._now + dt.timedelta(seconds=seconds)
        return self._now

    def set(self, when: dt.datetime) -> None:
        self._now = when.astimezone(self.zone)


def iso(when: dt.datetime) -> str:
    """The contract's time format: ISO 8601 to the second with the hall's UTC offset."""
    return when.isoformat(timespec="seconds")
