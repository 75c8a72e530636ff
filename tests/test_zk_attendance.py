"""Attendance rules as a pure function: windows, late and early minutes, missing punches,
absences, the calendar, two timetables and the monthly half-day rule."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from gateway.attendance import (
    FLAG_IMPLAUSIBLE,
    SETTLE_AFTER,
    AttendanceRules,
    Fact,
    Punch,
    count_facts,
    punches_from_rows,
)
from gateway.config import parse_config
from gateway.events import PunchEvent
from gateway.roster import Roster
from gateway.store import JournalRow

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
  workdays: ["2026-10-10"]
staff:
  - {id: a, name: 张三, pin: "1"}
  - {id: b, name: 李四, pin: "2", timetable: early}
"""
FRIDAY = dt.date(2026, 11, 20)


def at(time: str, day: dt.date = FRIDAY) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day.isoformat()}T{time}").replace(tzinfo=ZONE)


def rules(text: str = HALL) -> AttendanceRules:
    return AttendanceRules(parse_config(text))


def facts(staff_id: str, *times: str, day: dt.date = FRIDAY) -> list[tuple[str, int | None, str]]:
    r = rules()
    judged = r.judge_day(staff_id, day, [at(t, day) for t in times])
    return [(f.action, f.minutes, f.ts.strftime("%H:%M:%S")) for f in r.day_facts(judged)]


def test_each_period_owns_the_punches_up_to_the_middle_of_the_gap() -> None:
    morning, afternoon = rules().windows("a", FRIDAY)
    assert (morning.start, morning.end) == (at("00:00:00"), at("12:45:00"))
    assert (afternoon.start, afternoon.end) == (
        at("12:45:00"),
        at("00:00:00", FRIDAY + dt.timedelta(days=1)),
    )
    assert morning.middle == at("10:30:00")


def test_a_day_on_time_has_no_facts() -> None:
    assert facts("a", "08:51:12", "12:01:00", "13:20:00", "17:31:40") == []


def test_late_minutes_are_rounded_up_from_the_deadline() -> None:
    assert facts("a", "09:00:00", "12:00:00", "13:30:00", "17:30:00") == []
    assert facts("a", "09:00:01", "12:00:00", "13:30:00", "17:30:00") == [("late", 1, "09:00:01")]
    assert facts("a", "08:55:00", "12:03:00", "13:37:30", "17:30:00") == [("late", 8, "13:37:30")]


def test_early_leave_is_the_last_punch_before_the_end() -> None:
    assert facts("a", "08:55:00", "11:40:00", "13:29:00", "17:20:00") == [
        ("early_leave", 20, "11:40:00"),
        ("early_leave", 10, "17:20:00"),
    ]
    # a punch after the early one cancels it
    assert facts("a", "08:55:00", "12:00:00", "13:29:00", "17:20:00", "17:45:00") == []


def test_two_punches_on_arrival_are_not_a_departure() -> None:
    assert facts("a", "08:50:00", "08:50:20", "13:29:00", "17:31:00") == [
        ("no_punch", None, "12:00:00")
    ]


def test_a_lone_punch_is_an_arrival_before_the_middle_and_a_departure_after_it() -> None:
    assert facts("a", "08:58:00", "13:29:00", "17:31:00") == [("no_punch", None, "12:00:00")]
    assert facts("a", "12:05:00", "13:29:00", "17:31:00") == [("no_punch", None, "09:00:00")]
    assert facts("a", "10:45:00", "13:29:00", "17:31:00") == [
        ("early_leave", 75, "10:45:00"),
        ("no_punch", None, "09:00:00"),
    ]


def test_a_very_late_arrival_with_a_departure_is_late() -> None:
    assert facts("a", "10:45:00", "12:05:00", "13:29:00", "17:31:00") == [("late", 105, "10:45:00")]


def test_a_period_without_a_punch_is_absent_for_its_length() -> None:
    assert facts("a", "08:55:00", "12:01:00") == [("absent", 240, "13:30:00")]
    assert facts("a") == [("absent", 180, "09:00:00"), ("absent", 240, "13:30:00")]


def test_holidays_and_make_up_days() -> None:
    holiday = dt.date(2026, 10, 1)
    saturday = dt.date(2026, 10, 10)
    sunday = dt.date(2026, 10, 11)
    assert facts("a", "09:30:00", day=holiday) == []
    assert facts("a", day=sunday) == []
    assert facts("a", "09:03:00", "12:00:00", "13:30:00", "17:30:00", day=saturday) == [
        ("late", 3, "09:03:00")
    ]


def test_clock_in_by_is_the_deadline_not_the_start() -> None:
    assert facts("b", "08:39:59", "12:00:00", "14:40:00", "17:30:00") == []
    assert facts("b", "08:41:00", "12:00:00", "14:52:00", "17:30:00") == [
        ("late", 1, "08:41:00"),
        ("late", 12, "14:52:00"),
    ]


def test_when_each_fact_becomes_final() -> None:
    r = rules()
    day = r.judge_day("a", FRIDAY, [at("09:10:00"), at("11:50:00")])
    by_action = {f.action: f for f in r.day_facts(day)}
    assert by_action["late"].final_at == at("09:10:00")  # before the middle: at once
    assert by_action["early_leave"].final_at == at("12:45:00") + SETTLE_AFTER
    assert (
        by_action["absent"].final_at == at("00:00:00", FRIDAY + dt.timedelta(days=1)) + SETTLE_AFTER
    )
    late_after_middle = r.day_facts(r.judge_day("a", FRIDAY, [at("10:45:00"), at("12:05:00")]))
    assert late_after_middle[0].final_at == at("12:45:00") + SETTLE_AFTER


def test_ids_are_stable_and_differ_between_facts() -> None:
    r = rules()
    first = r.day_facts(r.judge_day("a", FRIDAY, [at("09:10:00"), at("11:50:00")]))
    again = r.day_facts(r.judge_day("a", FRIDAY, [at("11:50:00"), at("09:10:00")]))
    assert [f.event_id for f in first] == [f.event_id for f in again]
    other = r.day_facts(r.judge_day("a", FRIDAY, [at("09:11:00"), at("11:50:00")]))
    assert first[0].event_id != other[0].event_id
    assert len({f.event_id for f in first}) == len(first)


def month_of_lates(r: AttendanceRules, staff_id: str, days: list[dt.date]) -> list[Fact]:
    found: list[Fact] = []
    for day in days:
        found += r.day_facts(
            r.judge_day(
                staff_id,
                day,
                [
                    at("09:05:00", day),
                    at("12:00:00", day),
                    at("13:29:00", day),
                    at("17:30:00", day),
                ],
            )
        )
    return found


def test_every_fourth_late_or_early_is_half_a_day_of_absence() -> None:
    r = rules()
    days = [dt.date(2026, 11, d) for d in (2, 3, 4, 5, 6, 9, 10, 11, 12)]
    month = month_of_lates(r, "a", days)
    assert len(month) == 9
    half_days = r.half_days("a", month)
    assert [(f.action, f.minutes, f.day.day, f.period) for f in half_days] == [
        ("absent", 210, 5, None),
        ("absent", 210, 11, None),
    ]
    assert half_days[0].final_at == at("09:05:00", dt.date(2026, 11, 5))
    assert r.half_days("a", month[:3]) == []
    b_month = month_of_lates(r, "b", days[:4])
    assert r.half_days("b", b_month)[0].minutes == (210 + 180) // 2


def test_the_number_per_half_day_is_config() -> None:
    r = rules(HALL + "rules: {late_early_per_month_as_half_day: 2}\n")
    month = month_of_lates(r, "a", [dt.date(2026, 11, 2), dt.date(2026, 11, 3)])
    assert len(r.half_days("a", month)) == 1


def test_the_ledger_counts_a_month_and_resets_with_the_next() -> None:
    r = rules()
    punches = [
        Punch("a", at(t, dt.date(2026, 10, d)), f"{d}-{t}")
        for d in (8, 9, 12, 13, 14)
        for t in ("09:05:00", "12:00:00", "13:29:00", "17:30:00")
    ] + [Punch("a", at("09:06:00", dt.date(2026, 11, 2)), "nov")]
    october = r.ledger(
        punches,
        dt.date(2026, 10, 1),
        dt.date(2026, 10, 31),
        as_of=at("12:00:00", dt.date(2026, 12, 1)),
    )
    person = next(p for p in october if p.staff.id == "a")
    counts = person.counts(dt.date(2026, 10, 1), dt.date(2026, 10, 31))
    assert (counts.late, counts.late_minutes, counts.half_days) == (5, 25, 1)
    # 22 weekdays in October 2026, less the holidays on the 1st and 2nd, plus Saturday the
    # 10th (a make-up day): 21 working days, 5 of them with punches
    assert sum(1 for d in person.days if d.working) == 21
    assert counts.absent == (21 - 5) * 2
    november = r.ledger(
        punches,
        dt.date(2026, 11, 2),
        dt.date(2026, 11, 2),
        as_of=at("12:00:00", dt.date(2026, 11, 2)),
    )
    nov = next(p for p in november if p.staff.id == "a")
    # the morning is known (late at once); the afternoon is not over at noon
    assert [(f.action, f.minutes) for f in nov.facts] == [("late", 6)]
    assert count_facts(nov.facts).half_days == 0


def test_a_punch_says_whether_it_is_late_or_early() -> None:
    r = rules()
    assert r.annotate("a", at("09:07:00"), []) == (7, None)
    assert r.annotate("a", at("09:07:00"), [at("08:58:00")]) == (None, None)
    assert r.annotate("a", at("08:58:00"), [at("09:07:00")]) == (None, None)
    assert r.annotate("a", at("11:45:00"), [at("08:58:00")]) == (None, 15)
    assert r.annotate("a", at("12:10:00"), []) == (None, None)
    assert r.annotate("a", at("12:50:00"), []) == (None, None)  # the afternoon's, early enough
    assert r.annotate("a", at("09:30:00", dt.date(2026, 10, 1)), []) == (None, None)
    assert r.annotate("nobody", at("09:30:00"), []) == (None, None)


def row(event: PunchEvent, *, published: bool = True, flags: str = "") -> JournalRow:
    return JournalRow(
        1,
        event.event_id,
        "punch",
        "c1",
        "c1",
        "",
        event.ts.timestamp(),
        "",
        published,
        flags,
        event.payload_json(),
    )


def test_punches_from_the_journal() -> None:
    config = parse_config(HALL)
    roster = Roster(config)

    def punch(event_id: str, pin: str, staff_id: str | None) -> PunchEvent:
        return PunchEvent(
            event_id=event_id,
            ts=at("09:00:00"),
            received_at=at("09:00:01"),
            device_id="c1",
            staff_id=staff_id,
            pin=pin,
            direction="in",
            verify="face",
        )

    rows = [
        row(punch("e1", "1", "a")),
        row(punch("e2", "2", None)),  # the PIN was added to the roster later
        row(punch("e3", "9", None)),  # still nobody's
        row(punch("e4", "1", "a"), published=False, flags=FLAG_IMPLAUSIBLE),
    ]
    punches, left_out = punches_from_rows(rows, roster)
    assert [(p.staff_id, p.event_id) for p in punches] == [("a", "e1"), ("b", "e2")]
    assert left_out == 1
    punches, left_out = punches_from_rows(rows, roster, include_flagged=True)
    assert [p.event_id for p in punches] == ["e1", "e2", "e4"]
    assert left_out == 0


@pytest.mark.parametrize("n", [1, 3, 4, 7])
def test_half_days_never_count_a_fact_twice(n: int) -> None:
    r = rules(HALL + f"rules: {{late_early_per_month_as_half_day: {n}}}\n")
    days = [dt.date(2026, 11, d) for d in range(2, 28) if dt.date(2026, 11, d).weekday() < 5]
    month = month_of_lates(r, "a", days)
    assert len(r.half_days("a", month)) == len(month) // n
