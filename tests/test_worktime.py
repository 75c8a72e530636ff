"""Working days and periods: weekdays, holidays, make-up working days, breaks, service hours."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from gateway.config import parse_config
from gateway.worktime import WorkCalendar

ZONE = ZoneInfo("Asia/Shanghai")
HALL = """
site: h
timetables:
  standard:
    periods:
      - {start: "09:00", end: "12:00"}
      - {start: "13:30", end: "17:30"}
    breaks:
      - {start: "10:30", end: "10:50"}
      - {start: "15:30", end: "15:50"}
  early:
    periods:
      - {start: "08:30", end: "12:00", clock_in_by: "08:40"}
      - {start: "14:30", end: "17:30", clock_in_by: "14:40"}
calendar:
  holidays: ["2026-10-01", "2026-10-02"]
  workdays: ["2026-09-27"]
staff:
  - {id: s1, name: 张三, timetable: early}
  - {id: s2, name: 李四}
"""


def at(day: str, time: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T{time}").replace(tzinfo=ZONE)


def test_weekdays_holidays_and_make_up_days() -> None:
    calendar = WorkCalendar(parse_config(HALL))
    assert calendar.is_working_day(dt.date(2026, 9, 25))  # a Friday
    assert not calendar.is_working_day(dt.date(2026, 9, 26))  # a Saturday
    assert calendar.is_working_day(dt.date(2026, 9, 27))  # a Sunday made a working day (调休)
    assert not calendar.is_working_day(dt.date(2026, 10, 1))  # National Day, a Thursday
    assert calendar.periods(dt.date(2026, 10, 1)) == ()


def test_periods_breaks_and_clock_in_deadlines() -> None:
    config = parse_config(HALL)
    calendar = WorkCalendar(config)
    morning, afternoon = calendar.periods(dt.date(2026, 11, 20))
    assert morning.start == at("2026-11-20", "09:00:00")
    assert morning.clock_in_by == morning.start
    assert len(morning.breaks) == 1
    assert afternoon.in_break(at("2026-11-20", "15:40:00"))
    assert calendar.in_working_time(at("2026-11-20", "10:40:00"))
    assert not calendar.in_working_time(at("2026-11-20", "10:40:00"), breaks_count=False)
    assert not calendar.in_working_time(at("2026-11-20", "12:30:00"))
    early = calendar.timetable_for(config.staff[0])
    assert early == "early"
    assert calendar.timetable_for(config.staff[1]) == "standard"
    first = calendar.periods(dt.date(2026, 11, 20), early)[0]
    assert first.clock_in_by == at("2026-11-20", "08:40:00")


def test_service_hours_span_every_timetable_and_the_lunch_gap() -> None:
    calendar = WorkCalendar(parse_config(HALL))
    hours = calendar.service_hours(dt.date(2026, 11, 20))
    assert hours is not None
    assert (hours.start, hours.end) == (at("2026-11-20", "08:30:00"), at("2026-11-20", "17:30:00"))
    assert calendar.in_service_hours(at("2026-11-20", "12:45:00"))
    assert not calendar.in_service_hours(at("2026-11-20", "22:00:00"))
    assert not calendar.in_service_hours(at("2026-11-21", "10:00:00"))  # a Saturday
