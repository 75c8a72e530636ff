"""Attendance (考勤): late arrivals, early departures, missing punches and absences, judged from
the journal's punches against each person's timetable and the hall's calendar (domain.md).

How one period of a working day is judged (times in the hall's zone):
- The period owns the punches of its *window*: from the middle of the gap before it (midnight for
  the day's first period) to the middle of the gap after it (midnight for the last). For
  09:00-12:00 and 13:30-17:30 the windows are 00:00-12:45 and 12:45-24:00.
- The clock-in is the first punch of the window before the period's end; the clock-out is the
  last punch of the window after the period's middle. A lone punch is the clock-in before the
  middle and the clock-out after it. The clock's direction key is not used: staff rarely press
  it, and a punch means "I am here" whichever key was lit.
- `late`: a clock-in after `clock_in_by`; `early_leave`: a clock-out before the period's end;
  minutes rounded up, so 09:00:01 against 09:00 is one minute late. `no_punch`: punches in the
  window but no clock-in or no clock-out. `absent`: no punch at all in the window (minutes: the
  period's length).
- Every `late_early_per_month_as_half_day` (default 4) late arrivals or early departures in a
  calendar month make one `absent` of half a day (minutes: half the day's periods).

Everything above is a pure function of the punches and the config (`AttendanceRules`), so the
ledger of any day can be computed again with the same answer. `AttendanceEngine` publishes the
facts live, each once it is *final*, i.e. no punch still to come can change it:
- `late` at the clock-in itself when it comes before the period's middle (a later punch cannot
  change the first one); otherwise with the rest of the period;
- `early_leave`, `no_punch` and `absent` when the period's window has closed, plus SETTLE_AFTER
  for clocks that upload in batches, and once every punch clock has been heard from since (so a
  clock that was offline has uploaded what it held); one silent clock holds them at most
  MAX_SETTLE_HOLD, but while no clock at all has been heard from they wait (no evidence is not
  an absence);
- the monthly half day together with the late or early departure that completes it.
Event ids are stable: the same judgement of the same period always has the same id. Only
published (trusted) punches count; punches journaled with a flag count only when the ledger is
asked to (`--include-flagged`). A gateway first started after the hall opened judges from the
next day on: the punches of the morning before it existed are not in its journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import math
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from pydantic import ValidationError

from gateway.bus import EventBus
from gateway.clock import Clock
from gateway.config import Config, StaffConfig
from gateway.errors import StoreError
from gateway.events import AttendanceEvent, PunchEvent
from gateway.ids import stable_id
from gateway.roster import Roster
from gateway.store import JournalRow, Store
from gateway.worktime import WorkCalendar, WorkPeriod

log = logging.getLogger(__name__)

# a clock in batch mode uploads every TransInterval minutes (1 by default); wait that and more
SETTLE_AFTER: Final = dt.timedelta(minutes=5)
# one clock that stays offline while others work must not hold the day's ledger forever
MAX_SETTLE_HOLD: Final = dt.timedelta(hours=12)
# after a start, clocks reconnect (within Delay) and upload what they held; give them this long
BACKLOG_GRACE: Final = dt.timedelta(minutes=1)
# the wall clock can jump (NTP, a fake clock in tests): a long wait is re-checked this often
RECHECK_S: Final = 60.0
# punches arriving this close together are judged together; a late fact waits at most this long
COALESCE_S: Final = 0.2
# a store that failed to commit is tried again after this long
RETRY_AFTER_ERROR_S: Final = 10.0
# journal flag of a record whose time is too far from the gateway's (see drivers/zk_push)
FLAG_IMPLAUSIBLE: Final = "implausible_time"
SINCE_CURSOR: Final = "attendance:since"

Action = Literal["late", "early_leave", "absent", "no_punch"]


@dataclass(frozen=True, slots=True)
class Punch:
    staff_id: str
    at: dt.datetime  # aware
    event_id: str = ""


@dataclass(frozen=True, slots=True)
class Window:
    """The stretch of the day whose punches belong to one period."""

    index: int
    period: WorkPeriod
    start: dt.datetime
    end: dt.datetime

    @property
    def middle(self) -> dt.datetime:
        return self.period.start + (self.period.end - self.period.start) / 2

    def contains(self, when: dt.datetime) -> bool:
        return self.start <= when < self.end


@dataclass(frozen=True, slots=True)
class PeriodOutcome:
    window: Window
    punches: int
    clock_in: dt.datetime | None
    clock_out: dt.datetime | None

    @property
    def late_minutes(self) -> int:
        if self.clock_in is None:
            return 0
        return _minutes_after(self.window.period.clock_in_by, self.clock_in)

    @property
    def early_minutes(self) -> int:
        if self.clock_out is None:
            return 0
        return _minutes_after(self.clock_out, self.window.period.end)

    @property
    def absent(self) -> bool:
        return self.punches == 0

    @property
    def no_punch(self) -> bool:
        return self.punches > 0 and (self.clock_in is None or self.clock_out is None)


@dataclass(frozen=True, slots=True)
class StaffDay:
    staff_id: str
    day: dt.date
    punches: tuple[dt.datetime, ...]  # sorted, hall time
    periods: tuple[PeriodOutcome, ...]  # none on a day off

    @property
    def first_in(self) -> dt.datetime | None:
        return self.punches[0] if self.punches else None

    @property
    def last_out(self) -> dt.datetime | None:
        return self.punches[-1] if len(self.punches) > 1 else None

    @property
    def working(self) -> bool:
        return bool(self.periods)


@dataclass(frozen=True, slots=True)
class Fact:
    """One attendance judgement, and the moment from which nothing still to come can change it."""

    event_id: str
    staff_id: str
    action: Action
    minutes: int | None
    ts: dt.datetime
    final_at: dt.datetime
    day: dt.date
    period: int | None  # None: the monthly half-day rule

    def event(self, received_at: dt.datetime) -> AttendanceEvent:
        return AttendanceEvent(
            event_id=self.event_id,
            ts=self.ts,
            received_at=received_at,
            device_id=None,
            staff_id=self.staff_id,
            action=self.action,
            minutes=self.minutes,
        )


@dataclass(frozen=True, slots=True)
class Counts:
    late: int = 0
    late_minutes: int = 0
    early_leave: int = 0
    early_minutes: int = 0
    no_punch: int = 0
    absent: int = 0  # periods without a punch
    absent_minutes: int = 0
    half_days: int = 0  # by the monthly rule

    @property
    def late_or_early(self) -> int:
        return self.late + self.early_leave


@dataclass(frozen=True)
class PersonLedger:
    staff: StaffConfig
    days: tuple[StaffDay, ...]  # the days asked for
    facts: tuple[Fact, ...]  # final facts from the first of the month to the last day asked for

    def counts(self, first: dt.date, last: dt.date) -> Counts:
        return count_facts(f for f in self.facts if first <= f.day <= last)

    def day_facts(self, day: dt.date) -> list[Fact]:
        return [f for f in self.facts if f.day == day and f.period is not None]


def count_facts(facts: Iterable[Fact]) -> Counts:
    totals: dict[str, int] = defaultdict(int)
    for fact in facts:
        if fact.period is None:
            totals["half_days"] += 1
        elif fact.action == "late":
            totals["late"] += 1
            totals["late_minutes"] += fact.minutes or 0
        elif fact.action == "early_leave":
            totals["early_leave"] += 1
            totals["early_minutes"] += fact.minutes or 0
        elif fact.action == "no_punch":
            totals["no_punch"] += 1
        else:
            totals["absent"] += 1
            totals["absent_minutes"] += fact.minutes or 0
    return Counts(**totals)


class AttendanceRules:
    """The hall's attendance rules over its calendar and timetables. Pure."""

    def __init__(self, config: Config) -> None:
        self.site = config.site
        self.zone = config.zone
        self.calendar = WorkCalendar(config)
        self.staff: dict[str, StaffConfig] = {s.id: s for s in config.staff}
        self.half_day_after = config.rules.late_early_per_month_as_half_day

    def timetable(self, staff_id: str) -> str | None:
        person = self.staff.get(staff_id)
        if person is None:
            return None
        return self.calendar.timetable_for(person)

    def windows(self, staff_id: str, day: dt.date) -> tuple[Window, ...]:
        timetable = self.timetable(staff_id)
        if timetable is None:
            return ()
        return _windows(self.calendar.periods(day, timetable), day, self.zone)

    def judge_day(
        self, staff_id: str, day: dt.date, punches: Iterable[dt.datetime] = ()
    ) -> StaffDay:
        zone = self.zone
        times = tuple(sorted(t if t.tzinfo is zone else t.astimezone(zone) for t in punches))
        outcomes = tuple(_judge(window, times) for window in self.windows(staff_id, day))
        return StaffDay(staff_id, day, times, outcomes)

    def day_facts(self, staff_day: StaffDay) -> list[Fact]:
        return [fact for o in staff_day.periods for fact in self._period_facts(staff_day, o)]

    def half_days(self, staff_id: str, month_facts: Iterable[Fact]) -> list[Fact]:
        """The monthly rule over one person's facts of one month: every N-th late arrival or
        early departure (in time order) makes half a day of absence."""
        occurrences = sorted(
            (
                f
                for f in month_facts
                if f.period is not None and f.action in ("late", "early_leave")
            ),
            key=lambda f: (f.ts, f.event_id),
        )
        result: list[Fact] = []
        n = self.half_day_after
        for k in range(1, len(occurrences) // n + 1):
            counted = occurrences[: k * n]
            last = counted[-1]
            event_id = stable_id(
                self.site, "attendance", staff_id, last.day.strftime("%Y-%m"), "half_day", k
            )
            result.append(
                Fact(
                    event_id,
                    staff_id,
                    "absent",
                    self.half_day_minutes(staff_id, last.day),
                    last.ts,
                    max(f.final_at for f in counted),
                    last.day,
                    None,
                )
            )
        return result

    def half_day_minutes(self, staff_id: str, day: dt.date) -> int:
        return sum(_minutes(w.period.start, w.period.end) for w in self.windows(staff_id, day)) // 2

    def annotate(
        self, staff_id: str, at: dt.datetime, others: Iterable[dt.datetime]
    ) -> tuple[int | None, int | None]:
        """`late_minutes` and `early_minutes` of a punch, as the punch event carries them.

        Late: the punch is the first of its period's window (among `others`, the person's other
        known punches) before the middle, and after `clock_in_by`; this is exactly when the
        `late` fact is published at once. Early: the punch falls between the middle and the end
        of a period, so leaving now is early; a later punch may still cancel the `early_leave`.
        """
        local = at.astimezone(self.zone)
        for window in self.windows(staff_id, local.date()):
            if not window.contains(local):
                continue
            late = early = None
            if local < window.middle:
                first = not any(window.start <= t < local for t in others)
                minutes = _minutes_after(window.period.clock_in_by, local)
                late = minutes if first and minutes else None
            elif local < window.period.end:
                early = _minutes_after(local, window.period.end)
            return late, early
        return None, None

    def ledger(
        self,
        punches: Iterable[Punch],
        first: dt.date,
        last: dt.date,
        *,
        as_of: dt.datetime,
    ) -> list[PersonLedger]:
        """Every person's days from `first` to `last`, and the facts final by `as_of` from the
        first of `first`'s month (so that monthly counts are complete)."""
        by_day: dict[tuple[str, dt.date], list[dt.datetime]] = defaultdict(list)
        for punch in punches:
            by_day[punch.staff_id, punch.at.astimezone(self.zone).date()].append(punch.at)
        start = first.replace(day=1)
        ledgers = []
        for staff_id, person in self.staff.items():
            if self.timetable(staff_id) is None:
                continue
            days = [
                self.judge_day(staff_id, d, by_day.get((staff_id, d), ()))
                for d in _days(start, last)
            ]
            facts = self._facts(staff_id, days)
            ledgers.append(
                PersonLedger(
                    person,
                    tuple(d for d in days if d.day >= first),
                    tuple(f for f in facts if f.final_at <= as_of),
                )
            )
        return ledgers

    def _period_facts(self, staff_day: StaffDay, outcome: PeriodOutcome) -> list[Fact]:
        window = outcome.window
        period = window.period
        settled = window.end + SETTLE_AFTER
        make = functools.partial(self._fact, staff_day=staff_day, window=window)
        if outcome.absent:
            return [make("absent", _minutes(period.start, period.end), period.start, settled)]
        facts = []
        if outcome.clock_in is not None and outcome.late_minutes:
            known_at = outcome.clock_in if outcome.clock_in < window.middle else settled
            facts.append(make("late", outcome.late_minutes, outcome.clock_in, known_at))
        if outcome.clock_out is not None and outcome.early_minutes:
            facts.append(make("early_leave", outcome.early_minutes, outcome.clock_out, settled))
        if outcome.no_punch:
            missing_at = period.clock_in_by if outcome.clock_in is None else period.end
            facts.append(make("no_punch", None, missing_at, settled))
        return facts

    def _fact(
        self,
        action: Action,
        minutes: int | None,
        ts: dt.datetime,
        final_at: dt.datetime,
        *,
        staff_day: StaffDay,
        window: Window,
    ) -> Fact:
        event_id = stable_id(
            self.site,
            "attendance",
            staff_day.staff_id,
            staff_day.day.isoformat(),
            window.index,
            action,
            minutes,
        )
        return Fact(
            event_id, staff_day.staff_id, action, minutes, ts, final_at, staff_day.day, window.index
        )

    def _facts(self, staff_id: str, days: Sequence[StaffDay]) -> list[Fact]:
        by_month: dict[tuple[int, int], list[Fact]] = defaultdict(list)
        for day in days:
            by_month[day.day.year, day.day.month].extend(self.day_facts(day))
        facts: list[Fact] = []
        for month_facts in by_month.values():
            facts += month_facts
            facts += self.half_days(staff_id, month_facts)
        return facts


def punches_from_rows(
    rows: Iterable[JournalRow], roster: Roster, *, include_flagged: bool = False
) -> tuple[list[Punch], int]:
    """The attendance punches in journal rows, and how many flagged ones were left out.

    A punch counts for the person its event named, or (if the PIN was not on the roster then)
    for whoever has that PIN now, so a roster fixed later counts the punches made before.
    """
    punches: list[Punch] = []
    left_out = 0
    for row in rows:
        if row.kind != "punch":
            continue
        trusted = row.published or (include_flagged and FLAG_IMPLAUSIBLE in row.flags.split(","))
        if not trusted:
            left_out += 1
            continue
        try:
            event = PunchEvent.model_validate_json(row.payload)
        except ValidationError:
            left_out += 1
            continue
        staff_id = event.staff_id
        if staff_id is None:
            person = roster.by_pin(event.pin)
            staff_id = person.id if person is not None else None
        if staff_id is not None:
            punches.append(Punch(staff_id, event.ts, event.event_id))
    return punches, left_out


def read_punch_rows(path: str | Path, since: dt.datetime, until: dt.datetime) -> list[JournalRow]:
    """Punch rows of a store, read-only, so a ledger can be printed while the gateway runs."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"no store at {path}")
    columns = "seq, event_id, kind, subject, device_id, ts, ts_epoch, received_at, published"
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = conn.execute(
                f"SELECT {columns}, flags, payload FROM journal"  # noqa: S608  # constant columns
                " WHERE kind = 'punch' AND ts_epoch >= ? AND ts_epoch < ? ORDER BY seq",
                (since.timestamp(), until.timestamp()),
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise StoreError(f"cannot read {path}: {err}") from err
    return [
        JournalRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]), r[9], r[10])
        for r in rows
    ]


ContactTimes = Callable[[], Iterable[dt.datetime | None]]


class AttendanceEngine:
    """Keeps this month's and last month's punches, and publishes each fact once it is final.

    `stored` is told of every punch committed to the journal; `annotate` answers a punch
    clock's question "is this punch late?" before it stores the punch; `contacts` gives, for
    every punch clock, when it was last heard from in this run (None: not yet).
    """

    def __init__(
        self,
        rules: AttendanceRules,
        *,
        roster: Roster,
        clock: Clock,
        bus: EventBus,
        store: Store,
        contacts: ContactTimes,
    ) -> None:
        self.rules = rules
        self._roster = roster
        self._clock = clock
        self._bus = bus
        self._store = store
        self._contacts = contacts
        self._started = clock.now()
        self._since: dt.date = self._started.date()
        self._punches: dict[tuple[str, dt.date], list[dt.datetime]] = defaultdict(list)
        # punches taken, by event id, with their day: forgotten with the punches of that day
        self._seen: dict[str, dt.date] = {}
        self._forgotten_before: dt.date | None = None
        # facts of a person's day (a function of that day's punches), and of a person's month
        # (every day of it, and the monthly rule over them); a new punch invalidates both
        self._day_facts: dict[tuple[str, dt.date], list[Fact]] = {}
        self._month_facts: dict[tuple[str, dt.date], list[Fact]] = {}
        self._published: set[str] = set()
        self._wake = asyncio.Event()
        self.holding = False  # facts are due but wait for a clock to be heard from

    async def restore(self) -> None:
        """Learn the punches and published facts of this month and the last from the journal."""
        now = self._clock.now()
        self._started = now
        since = await self._store.cursor(SINCE_CURSOR)
        if since is None:
            # the first run: a day already under way had punches before the gateway existed
            hours = self.rules.calendar.service_hours(now.date())
            first = now.date() if hours is None or now < hours.start else now.date() + _DAY
            await self._store.set_cursor(SINCE_CURSOR, first.isoformat())
            self._since = first
        else:
            self._since = dt.date.fromisoformat(since)
        horizon = _start_of_day(_previous_month(now.date()), self.rules.zone)
        rows = await self._store.journal(kinds=["punch"], since_epoch=horizon.timestamp())
        punches, _left_out = punches_from_rows(rows, self._roster)
        self._add(punches)
        facts = await self._store.journal(kinds=["attendance"], since_epoch=horizon.timestamp())
        self._published.update(row.event_id for row in facts)

    def annotate(
        self, batch: Sequence[tuple[str | None, dt.datetime]]
    ) -> list[tuple[int | None, int | None]]:
        """`late_minutes`/`early_minutes` for each (staff_id, time) of a batch not yet stored;
        the batch's own punches count as known, in whatever order the clock sent them."""
        in_batch: dict[str, list[dt.datetime]] = defaultdict(list)
        for staff_id, at in batch:
            if staff_id is not None:
                in_batch[staff_id].append(at)
        result: list[tuple[int | None, int | None]] = []
        for staff_id, at in batch:
            if staff_id is None:
                result.append((None, None))
                continue
            day = at.astimezone(self.rules.zone).date()
            others = [*self._punches.get((staff_id, day), ()), *in_batch[staff_id]]
            result.append(self.rules.annotate(staff_id, at, others))
        return result

    def stored(self, punches: Iterable[Punch]) -> None:
        if self._add(punches):
            self.wake()

    def wake(self) -> None:
        self._wake.set()

    def reload(self, config: Config) -> None:
        """New staff and rules (SIGHUP): the facts are judged again from the punches kept; any
        already published stays published (fact ids are stable)."""
        self.rules = AttendanceRules(config)
        self._day_facts.clear()
        self._month_facts.clear()
        self.wake()

    async def run(self) -> None:
        """Publish due facts until cancelled."""
        while True:
            self._wake.clear()
            now = self._clock.now()
            due, next_check = self._due(now)
            wait = RECHECK_S
            if next_check is not None:
                wait = min(wait, max(0.0, (next_check - now).total_seconds()))
            if due:
                try:
                    await self._bus.publish_many([(fact.event(now), "") for fact in due])
                except StoreError as err:
                    log.error("attendance: %d facts not stored, retrying: %s", len(due), err)
                    wait = RETRY_AFTER_ERROR_S
                else:
                    self._published.update(fact.event_id for fact in due)
                    log.info("attendance: published %d facts", len(due))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
                # punches come in bursts (a backlog, the 9 o'clock rush): judge a burst once
                await asyncio.sleep(COALESCE_S)

    def due(self, now: dt.datetime) -> list[Fact]:
        """The facts that would be published at `now` (for tests and diagnostics)."""
        return self._due(now)[0]

    def _add(self, punches: Iterable[Punch]) -> bool:
        added = False
        for punch in punches:
            if punch.event_id in self._seen:
                continue
            at = punch.at.astimezone(self.rules.zone)
            day = at.date()
            self._seen[punch.event_id] = day
            self._punches[punch.staff_id, day].append(at)
            self._day_facts.pop((punch.staff_id, day), None)
            self._month_facts.pop((punch.staff_id, day.replace(day=1)), None)
            added = True
        return added

    def _due(self, now: dt.datetime) -> tuple[list[Fact], dt.datetime | None]:
        today = now.astimezone(self.rules.zone).date()
        months = (_previous_month(today), today.replace(day=1))
        self._forget_before(months[0])
        heard = [t for t in self._contacts() if t is not None]
        contacts = (min(heard), max(heard)) if heard else None
        due: list[Fact] = []
        next_check: dt.datetime | None = None
        held = False
        for staff_id in self.rules.staff:
            if self.rules.timetable(staff_id) is None:
                continue
            for month in months:
                for fact in self._month(staff_id, month):
                    if fact.event_id in self._published or fact.day < self._since:
                        continue
                    ready_at = self._ready_at(fact.final_at, now, contacts)
                    if ready_at is None:
                        held = True
                        next_check = _earliest(next_check, fact.final_at + MAX_SETTLE_HOLD)
                    elif ready_at <= now:
                        due.append(fact)
                    else:
                        next_check = _earliest(next_check, ready_at)
        self.holding = held
        due.sort(key=lambda f: (f.ts, f.event_id))
        return due, next_check

    def _ready_at(
        self,
        final_at: dt.datetime,
        now: dt.datetime,
        contacts: tuple[dt.datetime, dt.datetime] | None,
    ) -> dt.datetime | None:
        """When a fact final at `final_at` may be published: a time, or None while clocks may
        still hold punches. `contacts`: the oldest and newest last contact of the clocks heard
        from in this run. No clock heard from since: no evidence at all, wait (a hall whose
        clocks are down is not absent). Some clock not heard from since: wait for it, but not
        longer than MAX_SETTLE_HOLD."""
        after = max(final_at, self._started + BACKLOG_GRACE)
        if now < after:
            return after
        if contacts is None or contacts[1] < after:
            return None
        if contacts[0] < after and now < final_at + MAX_SETTLE_HOLD:
            return None
        return after

    def _month(self, staff_id: str, month: dt.date) -> list[Fact]:
        """Every fact of a person's month, days still to come included (they are not final)."""
        key = (staff_id, month)
        facts = self._month_facts.get(key)
        if facts is None:
            first, last = month_bounds(month)
            facts = [fact for day in _days(first, last) for fact in self._day(staff_id, day)]
            facts += self.rules.half_days(staff_id, facts)
            self._month_facts[key] = facts
        return facts

    def _day(self, staff_id: str, day: dt.date) -> list[Fact]:
        key = (staff_id, day)
        facts = self._day_facts.get(key)
        if facts is None:
            punches = self._punches.get(key, ())
            facts = self.rules.day_facts(self.rules.judge_day(staff_id, day, punches))
            self._day_facts[key] = facts
        return facts

    def _forget_before(self, horizon: dt.date) -> None:
        for cache in (self._month_facts, self._day_facts):
            for key in [k for k in cache if k[1] < horizon]:
                del cache[key]
        for key in [k for k in self._punches if k[1] < horizon]:
            del self._punches[key]
        if horizon != self._forgotten_before:  # a new month: the ids of the oldest one go
            self._forgotten_before = horizon
            for event_id in [e for e, day in self._seen.items() if day < horizon]:
                del self._seen[event_id]


_DAY: Final = dt.timedelta(days=1)


def _windows(periods: Sequence[WorkPeriod], day: dt.date, zone: dt.tzinfo) -> tuple[Window, ...]:
    if not periods:
        return ()
    day_start = _start_of_day(day, zone)
    day_end = _start_of_day(day + _DAY, zone)
    windows = []
    for index, period in enumerate(periods):
        start = day_start if index == 0 else _between(periods[index - 1].end, period.start)
        end = (
            day_end if index == len(periods) - 1 else _between(period.end, periods[index + 1].start)
        )
        windows.append(Window(index, period, start, end))
    return tuple(windows)


def _judge(window: Window, times: Sequence[dt.datetime]) -> PeriodOutcome:
    inside = [t for t in times if window.contains(t)]
    if not inside:
        return PeriodOutcome(window, 0, None, None)
    ins = [i for i, t in enumerate(inside) if t < window.period.end]
    outs = [i for i, t in enumerate(inside) if t >= window.middle]
    first_in = ins[0] if ins else None
    last_out = outs[-1] if outs else None
    if first_in is not None and first_in == last_out:
        first_in = None  # a lone punch after the middle: a departure without an arrival
    return PeriodOutcome(
        window,
        len(inside),
        inside[first_in] if first_in is not None else None,
        inside[last_out] if last_out is not None else None,
    )


def _minutes_after(deadline: dt.datetime, when: dt.datetime) -> int:
    """Whole minutes, rounded up, by which `when` is after `deadline` (0 if not after)."""
    seconds = (when - deadline).total_seconds()
    return math.ceil(seconds / 60) if seconds > 0 else 0


def _minutes(start: dt.datetime, end: dt.datetime) -> int:
    return int((end - start).total_seconds() // 60)


def _between(a: dt.datetime, b: dt.datetime) -> dt.datetime:
    return a + (b - a) / 2


def _start_of_day(day: dt.date, zone: dt.tzinfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=zone)


def _previous_month(day: dt.date) -> dt.date:
    first = day.replace(day=1)
    return (first - _DAY).replace(day=1)


def _days(first: dt.date, last: dt.date) -> Iterator[dt.date]:
    day = first
    while day <= last:
        yield day
        day += _DAY


def _earliest(a: dt.datetime | None, b: dt.datetime) -> dt.datetime:
    return b if a is None or b < a else a


def month_bounds(month: dt.date) -> tuple[dt.date, dt.date]:
    """The first and last day of `month`'s month."""
    first = month.replace(day=1)
    following = (first + dt.timedelta(days=32)).replace(day=1)
    return first, following - _DAY
