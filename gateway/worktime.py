"""Working time: working days (with holidays and make-up days), and a timetable's periods and
breaks on a day. Pure: every answer is a function of the config and the time asked about.

Used by attendance (late and early), presence (working time), kiosks watched only in service
hours, alerts (a device is only expected on while the hall is open) and the screens' schedule.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from gateway.config import Config, StaffConfig, Timetable

STANDARD = "standard"  # the timetable staff follow when they name none and several exist
_CACHE_DAYS = 4096  # (timetable, day) pairs kept; a year of a few timetables fits


@dataclass(frozen=True)
class Interval:
    start: dt.datetime
    end: dt.datetime

    def contains(self, when: dt.datetime) -> bool:
        return self.start <= when < self.end


@dataclass(frozen=True)
class WorkPeriod(Interval):
    """One period of a working day: clock in by `clock_in_by`; breaks fall inside it."""

    clock_in_by: dt.datetime
    breaks: tuple[Interval, ...] = ()

    def in_break(self, when: dt.datetime) -> bool:
        return any(b.contains(when) for b in self.breaks)


class WorkCalendar:
    def __init__(self, config: Config) -> None:
        self.zone: ZoneInfo = config.zone
        self._holidays = frozenset(config.calendar.holidays)
        self._workdays = frozenset(config.calendar.workdays)
        self._timetables: dict[str, Timetable] = dict(config.timetables)
        self._cache: dict[tuple[str, dt.date], tuple[WorkPeriod, ...]] = {}

    @property
    def timetable_names(self) -> tuple[str, ...]:
        return tuple(self._timetables)

    def is_working_day(self, day: dt.date) -> bool:
        """Monday to Friday, except holidays; a make-up working day (调休) counts too."""
        if day in self._workdays:
            return True
        if day in self._holidays:
            return False
        return day.weekday() < 5

    def timetable_for(self, person: StaffConfig | None) -> str | None:
        """The timetable a person follows: their own, else `standard`, else the only one."""
        if person is not None and person.timetable is not None:
            return person.timetable
        if STANDARD in self._timetables:
            return STANDARD
        if len(self._timetables) == 1:
            return next(iter(self._timetables))
        return None

    def periods(self, day: dt.date, timetable: str | None = None) -> tuple[WorkPeriod, ...]:
        """The periods of `timetable` (default: the hall's) on `day`; none on a day off."""
        name = timetable if timetable is not None else self.timetable_for(None)
        if name is None or name not in self._timetables or not self.is_working_day(day):
            return ()
        key = (name, day)
        if key not in self._cache:
            if len(self._cache) >= _CACHE_DAYS:
                self._cache.clear()
            self._cache[key] = _periods(self._timetables[name], day, self.zone)
        return self._cache[key]

    def period_at(self, when: dt.datetime, timetable: str | None = None) -> WorkPeriod | None:
        local = when.astimezone(self.zone)
        for period in self.periods(local.date(), timetable):
            if period.contains(local):
                return period
        return None

    def in_working_time(
        self, when: dt.datetime, timetable: str | None = None, *, breaks_count: bool = True
    ) -> bool:
        """In a period of the timetable; in a break only when breaks count as working time."""
        period = self.period_at(when, timetable)
        if period is None:
            return False
        return breaks_count or not period.in_break(when)

    def service_hours(self, day: dt.date) -> Interval | None:
        """When the hall is open on `day`: the earliest start to the latest end of every
        timetable (the lunch gap included: the hall stays open), or None on a day off."""
        periods = [p for name in self._timetables for p in self.periods(day, name)]
        if not periods:
            return None
        return Interval(min(p.start for p in periods), max(p.end for p in periods))

    def in_service_hours(self, when: dt.datetime) -> bool:
        hours = self.service_hours(when.astimezone(self.zone).date())
        return hours is not None and hours.contains(when)


def _periods(timetable: Timetable, day: dt.date, zone: ZoneInfo) -> tuple[WorkPeriod, ...]:
    def at(time: dt.time) -> dt.datetime:
        return dt.datetime.combine(day, time, tzinfo=zone)

    result = []
    for period in timetable.periods:
        start, end = at(period.start), at(period.end)
        breaks = tuple(
            Interval(at(b.start), at(b.end))
            for b in timetable.breaks
            if period.start <= b.start and b.end <= period.end
        )
        clock_in_by = at(period.clock_in_by) if period.clock_in_by is not None else start
        result.append(WorkPeriod(start, end, clock_in_by=clock_in_by, breaks=breaks))
    return tuple(result)
