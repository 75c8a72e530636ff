"""`hallgw attendance`: the supervision desk's attendance ledger (考勤台账), read from the store.

A day: one row per person (first in, last out, late and early minutes, missing punches,
absences, and the month's count so far). A month: a table per person, day by day, with the
month's totals. Both can be written as CSV (UTF-8 with a byte order mark, so that Excel shows
the names). The store is opened read-only, so the ledger can be printed while the gateway runs.
"""

from __future__ import annotations

import csv
import datetime as dt
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Final, TextIO

from gateway.attendance import (
    AttendanceRules,
    PersonLedger,
    StaffDay,
    count_facts,
    month_bounds,
    punches_from_rows,
    read_punch_rows,
)
from gateway.clock import SystemClock
from gateway.config import load_config_or_report
from gateway.errors import StoreError
from gateway.roster import Roster

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_CONFIG: Final = 2
WEEKDAYS: Final = "一二三四五六日"
CSV_COLUMNS: Final = (
    "staff_id",
    "name",
    "date",
    "working_day",
    "first_in",
    "last_out",
    "late_minutes",
    "early_minutes",
    "no_punch",
    "absent_periods",
    "month_late_early",
    "month_half_days",
)


def print_ledger(
    config_path: str,
    *,
    day: dt.date | None = None,
    month: dt.date | None = None,
    csv_path: str | None = None,
    include_flagged: bool = False,
    out: TextIO | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Print the ledger of `day` or of `month`; the exit status."""
    out = out or sys.stdout
    config = load_config_or_report(config_path)
    if config is None:
        return EXIT_CONFIG
    rules = AttendanceRules(config)
    if not rules.calendar.timetable_names:
        print("no timetables in the config: nothing to judge attendance by", file=sys.stderr)  # noqa: T201
        return EXIT_CONFIG
    if day is not None:
        first = last = day
    elif month is not None:
        first, last = month_bounds(month)
    else:
        raise ValueError("give a day or a month")
    zone = config.zone
    since = dt.datetime.combine(first.replace(day=1), dt.time(0), tzinfo=zone)
    until = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(0), tzinfo=zone)
    try:
        rows = read_punch_rows(config.store.path, since, until)
    except StoreError as err:
        print(f"cannot read the store: {err}", file=sys.stderr)  # noqa: T201
        return EXIT_FAILURE
    roster = Roster(config)
    punches, _ = punches_from_rows(rows, roster, include_flagged=include_flagged)
    shown_from = dt.datetime.combine(first, dt.time(0), tzinfo=zone).timestamp()
    _, left_out = punches_from_rows(
        [r for r in rows if r.ts_epoch >= shown_from], roster, include_flagged=include_flagged
    )
    ledgers = rules.ledger(punches, first, last, as_of=now or SystemClock(zone).now())
    title = config.display_name
    if day is not None:
        _day_table(out, title, day, ledgers, rules)
    else:
        for person in ledgers:
            _person_table(out, title, first, last, person)
    if left_out:
        print(
            f"\n{left_out} punch records were journaled with a flag (implausible time or unmapped"
            " status) and are not counted; --include-flagged counts those with a time flag.",
            file=out,
        )
    if csv_path is not None:
        _write_csv(Path(csv_path), ledgers)
    return EXIT_OK


def csv_rows(ledgers: Sequence[PersonLedger]) -> list[dict[str, str]]:
    """One row per person and day: working days and days with punches."""
    rows = []
    for person in ledgers:
        for staff_day in person.days:
            if not staff_day.working and not staff_day.punches:
                continue
            row = _day_row(person, staff_day)
            rows.append(dict(zip(CSV_COLUMNS, row, strict=True)))
    return rows


def display_width(text: str) -> int:
    """Columns on a terminal: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _day_row(person: PersonLedger, staff_day: StaffDay) -> list[str]:
    day = staff_day.day
    facts = count_facts(person.day_facts(day))
    month_so_far = person.counts(day.replace(day=1), day)
    return [
        person.staff.id,
        person.staff.name,
        day.isoformat(),
        "1" if staff_day.working else "0",
        _time(staff_day.first_in),
        _time(staff_day.last_out),
        str(facts.late_minutes),
        str(facts.early_minutes),
        str(facts.no_punch),
        str(facts.absent),
        str(month_so_far.late_or_early),
        str(month_so_far.half_days),
    ]


def _day_table(
    out: TextIO,
    title: str,
    day: dt.date,
    ledgers: Sequence[PersonLedger],
    rules: AttendanceRules,
) -> None:
    print(f"{title} 考勤 {day.isoformat()} 星期{WEEKDAYS[day.weekday()]}", file=out)
    header = [
        "staff", "name", "timetable", "first in", "last out", "late min", "early min",
        "no punch", "absent", "month late/early", "month half days",
    ]  # fmt: skip
    rows = []
    for person in ledgers:
        staff_day = person.days[0]
        row = _day_row(person, staff_day)
        timetable = rules.timetable(person.staff.id) if staff_day.working else "day off"
        rows.append([row[0], row[1], timetable or "", *row[4:]])
    _table(out, header, rows)


def _person_table(
    out: TextIO, title: str, first: dt.date, last: dt.date, person: PersonLedger
) -> None:
    staff = person.staff
    print(f"\n{title} 考勤 {first:%Y-%m}: {staff.id} {staff.name}", file=out)
    header = ["date", "", "first in", "last out", "late min", "early min", "no punch", "absent"]
    rows = []
    for staff_day in person.days:
        if not staff_day.working and not staff_day.punches:
            continue
        row = _day_row(person, staff_day)
        weekday = WEEKDAYS[staff_day.day.weekday()] + ("" if staff_day.working else " off")
        rows.append([row[2], weekday, *row[4:10]])
    _table(out, header, rows)
    counts = person.counts(first, last)
    print(
        f"late {counts.late} ({counts.late_minutes} min), early {counts.early_leave}"
        f" ({counts.early_minutes} min), no punch {counts.no_punch}, absent {counts.absent}"
        f" periods ({counts.absent_minutes} min), half days by the monthly rule"
        f" {counts.half_days}",
        file=out,
    )


def _table(out: TextIO, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(display_width(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [
            cell + " " * (width - display_width(cell))
            for cell, width in zip(row, widths, strict=True)
        ]
        print("  ".join(cells).rstrip(), file=out)


def _time(when: dt.datetime | None) -> str:
    return when.strftime("%H:%M:%S") if when is not None else ""


def _write_csv(path: Path, ledgers: Sequence[PersonLedger]) -> None:
    with path.open("w", encoding="utf-8-sig", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(ledgers))
