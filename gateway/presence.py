"""The presence engine: who is at their window, out (外出), off-post (离岗), and which windows
have nobody (空岗), derived from the devices, the roster, the timetables and the registers.

Inputs, each applied at the time the gateway learned it: punches (arrival), pad
login/logout/pause/resume, the queue caller's window states (status, the staff number at the
caller) and its activity, outings, leave. Time moves by `advance(to)`, which evaluates at every
instant where a status can change without an input (a period starts or ends, a grace runs out,
an outing becomes overdue, the day ends), so a whole day runs in milliseconds on a fake clock
and a replay of the day's journal after a restart gives the same statuses, `since` included.

Staff statuses (mqtt.md), in this order of precedence:
1. `out`: an outing is running (also outside working time: the hall shows who is out).
2. `off_duty`: outside the person's working time (a period of their timetable on a working day;
   breaks are working time unless `rules.breaks_excuse_absence`).
3. `on_post`: at a window: logged in at its pad, or shown by its queue caller (status idle or
   serving), the window not paused. A login counts on the day it was made (a login left
   overnight is not presence the next morning); a caller's login of an earlier day counts again
   once the caller is used today.
4. `on_leave`: leave covers now.
5. `not_arrived`: no arrival yet in this period: no punch in the period's attendance window (the
   same windows as attendance, from the middle of the gap before it) and no time at a window.
   A person without a window is `on_post` once arrived.
6. Away from the window since `gone` (when they left it, or the period started, or they
   arrived, or an outing or leave ended, whichever is latest):
   - an A post is `off_post` once away `rules.off_post_grace_min`, `on_post` before that;
   - a B post is `standby` while the window is covered by a colleague (its A at it or within
     their grace, or another B at it). Uncovered, its clock starts when the last colleague
     left (or its own `gone`, if later): `off_post` once that is `grace` ago; before that
     `on_post` if it left the window itself last, else `standby`.
   `off_post` carries the time the absence began as `since`; every other status carries the
   moment it began.

Window statuses: `closed` outside the working time of all its staff; else `serving`/`idle`
when someone is at it and it is not paused (serving: its caller shows a ticket being served);
`paused` when its pad or caller is paused; `closed` when its caller says closed; else
`unattended`. `covering` is the post of the person at it (A preferred), null for anyone else.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal
from zoneinfo import ZoneInfo

from gateway.attendance import AttendanceRules
from gateway.config import Config, StaffConfig, WindowConfig
from gateway.leave import Leave
from gateway.outings import OVERDUE, Outing, limits_exceeded
from gateway.worktime import Interval, WorkCalendar

StaffStatus = Literal[
    "on_post", "standby", "out", "off_post", "on_leave", "not_arrived", "off_duty"
]
WindowStatus = Literal["serving", "idle", "paused", "unattended", "closed"]
CallerStatus = Literal["closed", "idle", "serving", "paused"]
STAFF_STATUSES: Final[tuple[StaffStatus, ...]] = (
    "on_post",
    "standby",
    "out",
    "off_post",
    "on_leave",
    "not_arrived",
    "off_duty",
)
WINDOW_STATUSES: Final[tuple[WindowStatus, ...]] = (
    "serving",
    "idle",
    "paused",
    "unattended",
    "closed",
)
LIMIT_EXCEEDED: Final = "limit_exceeded"
ConditionRule = Literal["window_unattended", "outing_overdue", "outing_rule"]
_DAY: Final = dt.timedelta(days=1)
# staff at-window stretches kept per person; a day of logins and pauses fits many times
_STRETCHES_KEPT: Final = 200


@dataclass(frozen=True)
class StaffView:
    staff_id: str
    status: StaffStatus
    since: dt.datetime
    outing: Outing | None
    flags: tuple[str, ...]


@dataclass(frozen=True)
class WindowView:
    window_id: str
    status: WindowStatus
    since: dt.datetime
    staff_id: str | None
    covering: Literal["A", "B"] | None
    ticket: str | None


@dataclass(frozen=True)
class Board:
    """What the hall screen shows, before names are masked and payloads built."""

    at: dt.datetime
    out: tuple[StaffView, ...]
    off_post: tuple[StaffView, ...]
    unattended: tuple[WindowView, ...]
    on_leave: tuple[str, ...]  # staff ids
    staff_counts: Mapping[StaffStatus, int]
    window_counts: Mapping[WindowStatus, int]


@dataclass(frozen=True)
class Condition:
    """A condition the alert engine raises and resolves (mqtt.md alert rules): a window with
    nobody at it, an outing past its expected return, an outing let through under `warn`.

    `subject` is `("window_id", id)` or `("staff_id", id)`; `active` False is the resolution.
    Raised once when it starts and once when it ends (and again if its `since` changes)."""

    rule: ConditionRule
    subject: tuple[Literal["window_id", "staff_id"], str]
    active: bool
    since: dt.datetime
    summary: str
    outing_id: str | None = None


ConditionListener = Callable[[Condition], None]


@dataclass(frozen=True)
class OutingFact:
    """Something the engine decided about an outing that must be journaled and published: its
    end (the person is back at a window, or the day ended) or that it is overdue."""

    action: Literal["end", "overdue"]
    outing: Outing
    at: dt.datetime


@dataclass
class _Pad:
    window_id: str
    staff_id: str | None = None
    logged_in: bool = False
    login_at: dt.datetime | None = None
    paused: bool = False


@dataclass
class _Caller:
    status: CallerStatus = "closed"
    staff_id: str | None = None
    ticket: str | None = None
    login_at: dt.datetime | None = None
    active_at: dt.datetime | None = None


@dataclass
class _Stretch:
    start: dt.datetime
    end: dt.datetime | None = None


@dataclass
class _Person:
    """One evaluation's findings about a person (before A/B is resolved)."""

    config: StaffConfig
    interval: Interval | None
    status: StaffStatus | None = None
    since: dt.datetime | None = None
    gone: dt.datetime | None = None  # away from the window since
    absent_since: dt.datetime | None = None  # not covering the window since
    outing: Outing | None = None
    there: bool = False  # at the window or within the grace: covers it for a B


@dataclass
class _WindowIndex:
    """What an evaluation knows of every window at once, made in one pass over the devices."""

    paused: set[str]  # paused by the queue caller or a pad logged in today
    present: defaultdict[str, list[str]]  # staff at each window, not out
    unknown: set[str]  # a pad logged in today with a card nobody has


@dataclass
class _Changes:
    staff: set[str] = field(default_factory=set)
    windows: set[str] = field(default_factory=set)
    removed_staff: set[str] = field(default_factory=set)
    removed_windows: set[str] = field(default_factory=set)
    outings: bool = False


class PresenceEngine:
    def __init__(self, config: Config, *, start: dt.datetime) -> None:
        self._at = start
        self._pads: dict[str, _Pad] = {}
        self._callers: dict[str, _Caller] = {}
        self._punches: dict[str, list[dt.datetime]] = {}
        self._stretches: dict[str, list[_Stretch]] = {}
        self._present: dict[str, str] = {}  # staff id → window id, at a window now
        self._outings: dict[str, Outing] = {}
        self._file_leave: list[Leave] = []
        self._api_leave: dict[str, Leave] = {}
        self._staff_views: dict[str, StaffView] = {}
        self._window_views: dict[str, WindowView] = {}
        self._conditions: dict[tuple[str, str], Condition] = {}
        self._listeners: list[ConditionListener] = []
        self._next: dt.datetime | None = None
        self._dirty = False  # an input applied and not yet evaluated
        self.changes = _Changes()
        self.pending: list[OutingFact] = []
        self.configure(config)

    # -- configuration ---------------------------------------------------------------------

    def configure(self, config: Config) -> None:
        """Take a roster, timetables and rules; inputs and statuses of ids that remain stay."""
        self.config = config
        self.zone: ZoneInfo = config.zone
        self._attendance = AttendanceRules(config)
        self.calendar: WorkCalendar = self._attendance.calendar
        self.staff: dict[str, StaffConfig] = {s.id: s for s in config.staff}
        self.windows: dict[str, WindowConfig] = {w.id: w for w in config.windows}
        self._window_staff: dict[str, list[StaffConfig]] = {w: [] for w in self.windows}
        for person in config.staff:
            if person.window is not None and person.window in self._window_staff:
                self._window_staff[person.window].append(person)
        self._grace = dt.timedelta(minutes=config.rules.off_post_grace_min)
        self._breaks_count = not config.rules.breaks_excuse_absence
        self._timetables: dict[str, str | None] = {
            s.id: self.calendar.timetable_for(s) for s in config.staff
        }
        self._hall_timetable = self.calendar.timetable_for(None)
        self._intervals: dict[tuple[str | None, dt.date], tuple[Interval, ...]] = {}
        for gone in set(self._staff_views) - set(self.staff):
            del self._staff_views[gone]
            self.changes.removed_staff.add(gone)
        for gone in set(self._window_views) - set(self.windows):
            del self._window_views[gone]
            self.changes.removed_windows.add(gone)
        self._next = None
        if self._staff_views or self._window_views:
            self._evaluate(self._at)

    def add_listener(self, listener: ConditionListener) -> None:
        self._listeners.append(listener)

    # -- what it knows -----------------------------------------------------------------------

    @property
    def at(self) -> dt.datetime:
        """The time the statuses are evaluated at."""
        return self._at

    def staff_view(self, staff_id: str) -> StaffView:
        return self._staff_views[staff_id]

    def staff_views(self) -> list[StaffView]:
        return [self._staff_views[s] for s in self.staff if s in self._staff_views]

    def window_view(self, window_id: str) -> WindowView:
        return self._window_views[window_id]

    def window_views(self) -> list[WindowView]:
        return [self._window_views[w] for w in self.windows if w in self._window_views]

    def conditions(self) -> list[Condition]:
        """The conditions active now (for a listener that starts after the engine)."""
        return [c for c in self._conditions.values() if c.active]

    def outing(self, outing_id: str) -> Outing | None:
        return self._outings.get(outing_id)

    def running_outing(self, staff_id: str, at: dt.datetime | None = None) -> Outing | None:
        when = self._at if at is None else at
        for outing in self._outings.values():
            if outing.staff_id == staff_id and outing.running(when):
                return outing
        return None

    def outings_of_day(self, day: dt.date, staff_id: str | None = None) -> list[Outing]:
        """Outings started on `day` (hall time), and those still running, oldest first."""
        return [
            o
            for o in self._outings.values()
            if (staff_id is None or o.staff_id == staff_id)
            and (self._day(o.started_at) == day or o.ended_at is None)
        ]

    def leave(self) -> list[Leave]:
        return [*self._file_leave, *self._api_leave.values()]

    def api_leave(self, leave_id: str) -> Leave | None:
        return self._api_leave.get(leave_id)

    def next_change(self) -> dt.datetime | None:
        """The next instant a status can change without an input."""
        return self._next

    def board(self) -> Board:
        staff = self.staff_views()
        windows = self.window_views()
        day = self._day(self._at)
        on_leave = sorted(
            {lv.staff_id for lv in self.leave() if lv.covers_day(day, self.zone)} & set(self.staff),
            key=list(self.staff).index,
        )
        return Board(
            at=self._at,
            out=tuple(sorted((v for v in staff if v.status == "out"), key=_by_since)),
            off_post=tuple(sorted((v for v in staff if v.status == "off_post"), key=_by_since)),
            unattended=tuple(v for v in windows if v.status == "unattended"),
            on_leave=tuple(on_leave),
            staff_counts={s: sum(1 for v in staff if v.status == s) for s in STAFF_STATUSES},
            window_counts={s: sum(1 for v in windows if v.status == s) for s in WINDOW_STATUSES},
        )

    def take_changes(self) -> _Changes:
        changes, self.changes = self.changes, _Changes()
        return changes

    def take_pending(self) -> list[OutingFact]:
        pending, self.pending = self.pending, []
        return pending

    # -- time --------------------------------------------------------------------------------

    def advance(self, to: dt.datetime) -> None:
        """Evaluate at every instant up to `to` where a status can change, then at `to`."""
        while self._next is not None and self._next <= to:
            self._evaluate(self._next)
        if to > self._at or self._dirty or not self._staff_views:
            self._evaluate(to)

    # -- inputs (each applied at `at`, when the gateway learned it) ---------------------------

    def pad(
        self,
        device_id: str,
        window_id: str,
        action: str,
        staff_id: str | None,
        at: dt.datetime,
    ) -> None:
        at = self._moved_to(at)
        pad = self._pads.setdefault(device_id, _Pad(window_id))
        pad.window_id = window_id
        if action == "login":
            pad.staff_id, pad.logged_in, pad.login_at, pad.paused = staff_id, True, at, False
        elif action == "logout":
            pad.staff_id, pad.logged_in, pad.paused = None, False, False
        elif action == "pause":
            pad.paused = True
        elif action == "resume":
            pad.paused = False
        else:
            return  # a fault says nothing about who is there
        self._inputs_changed(at)

    def punch(self, staff_id: str, ts: dt.datetime, at: dt.datetime) -> None:
        at = self._moved_to(at)
        if staff_id not in self.staff:
            return
        self._punches.setdefault(staff_id, []).append(ts.astimezone(self.zone))
        self._forget_before(self._day(at) - _DAY)
        self._inputs_changed(at)

    def caller(
        self,
        window_id: str,
        status: CallerStatus,
        staff_id: str | None,
        ticket: str | None,
        at: dt.datetime,
        *,
        evaluate: bool = True,
    ) -> None:
        """The queue controller's state of one window (from its device state values). A caller
        polled many times a second may leave the evaluation to the next `advance`."""
        at = self._moved_to(at)
        caller = self._callers.setdefault(window_id, _Caller())
        if staff_id != caller.staff_id:
            caller.login_at = at if staff_id is not None else None
        caller.status, caller.staff_id, caller.ticket = status, staff_id, ticket
        if evaluate:
            self._inputs_changed(at)
        else:
            self._dirty = True

    def caller_activity(self, window_id: str, at: dt.datetime) -> None:
        """A ticket called, finished or skipped at the window: someone works its caller today."""
        at = self._moved_to(at)
        caller = self._callers.setdefault(window_id, _Caller())
        stale = not self._fresh(caller.login_at, at) and not self._fresh(caller.active_at, at)
        caller.active_at = at
        if stale and caller.staff_id is not None:
            self._inputs_changed(at)

    def start_outing(self, outing: Outing) -> None:
        at = self._moved_to(outing.started_at)
        self._outings[outing.outing_id] = outing
        self.changes.outings = True
        self._inputs_changed(at)

    def end_outing(self, outing_id: str, at: dt.datetime, by: str | None) -> Outing | None:
        """End a running outing; None if there is none by that id or it has ended."""
        outing = self._outings.get(outing_id)
        if outing is None or outing.ended_at is not None:
            return None
        at = self._moved_to(at)
        ended = outing.ended(at, by)
        self._outings[outing_id] = ended
        self.changes.outings = True
        self._inputs_changed(at)
        return ended

    def flag_outing(self, outing_id: str, flag: str) -> None:
        """A flag learned from the journal (an overdue already published)."""
        outing = self._outings.get(outing_id)
        if outing is not None and flag not in outing.flags:
            self._outings[outing_id] = outing.with_flag(flag)
            self.changes.outings = True

    def set_file_leave(self, leave: Iterable[Leave], at: dt.datetime) -> None:
        at = self._moved_to(at)
        self._file_leave = list(leave)
        self._inputs_changed(at)

    def add_leave(self, leave: Leave, at: dt.datetime) -> None:
        at = self._moved_to(at)
        self._api_leave[leave.leave_id] = leave
        self._inputs_changed(at)

    def cancel_leave(self, leave_id: str, at: dt.datetime) -> Leave | None:
        at = self._moved_to(at)
        removed = self._api_leave.pop(leave_id, None)
        if removed is not None:
            self._inputs_changed(at)
        return removed

    # -- evaluation ----------------------------------------------------------------------------

    def _moved_to(self, at: dt.datetime) -> dt.datetime:
        """Evaluate every instant before `at` where a status changes; the caller applies its
        input at `at`. Inputs never go back in time: one learned late is applied now."""
        at = max(at.astimezone(self.zone), self._at)
        while self._next is not None and self._next <= at:
            self._evaluate(self._next)
        self._at = at
        return at

    def _inputs_changed(self, at: dt.datetime) -> None:
        self._track(at)
        self._evaluate(at)

    def _track(self, at: dt.datetime) -> None:
        """Follow who is at a window; someone back at a window is back from their outing."""
        present = self._presence(at)
        for staff_id, window_id in present.items():
            if self._present.get(staff_id) == window_id:
                continue
            stretches = self._stretches.setdefault(staff_id, [])
            if stretches and stretches[-1].end is None:
                stretches[-1].end = at  # moved to another window
            stretches.append(_Stretch(at))
            del stretches[:-_STRETCHES_KEPT]
            outing = self.running_outing(staff_id, at)
            if outing is not None and outing.started_at < at:
                ended = outing.ended(at, "returned")
                self._outings[outing.outing_id] = ended
                self.pending.append(OutingFact("end", ended, at))
                self.changes.outings = True
        for staff_id in set(self._present) - set(present):
            stretches = self._stretches.get(staff_id, [])
            if stretches and stretches[-1].end is None:
                stretches[-1].end = at
        self._present = present

    def _presence(self, at: dt.datetime) -> dict[str, str]:
        """Who is at a window at `at` (as the devices say; outings are not considered)."""
        paused = self._paused_windows(at)
        present: dict[str, str] = {}
        for pad in self._pads.values():
            if (
                pad.logged_in
                and not pad.paused
                and pad.staff_id is not None
                and self._fresh(pad.login_at, at)
                and pad.window_id not in paused
            ):
                present.setdefault(pad.staff_id, pad.window_id)
        for window_id, caller in self._callers.items():
            if (
                caller.staff_id is not None
                and caller.status in ("idle", "serving")
                and (self._fresh(caller.login_at, at) or self._fresh(caller.active_at, at))
                and window_id not in paused
            ):
                present.setdefault(caller.staff_id, window_id)
        return present

    def _paused_windows(self, at: dt.datetime) -> set[str]:
        """The windows paused at `at`: by their queue caller, or by a pad logged in today.

        One pass over the devices, for all windows at once: a 300-window hall is evaluated
        several times a second when busy, and a pass per window made that quadratic."""
        paused = {w for w, caller in self._callers.items() if caller.status == "paused"}
        paused.update(
            p.window_id
            for p in self._pads.values()
            if p.logged_in and p.paused and self._fresh(p.login_at, at)
        )
        return paused

    def _fresh(self, when: dt.datetime | None, at: dt.datetime) -> bool:
        return when is not None and self._day(when) == self._day(at)

    def _evaluate(self, at: dt.datetime) -> None:
        self._dirty = False
        self._at = max(self._at, at)
        at = self._at
        if self._present != self._presence(at):
            self._track(at)  # a login went stale at midnight
        self._settle_outings(at)
        people = {s: self._person(person, at) for s, person in self.staff.items()}
        self._resolve_posts(people, at)
        candidates: list[dt.datetime] = []
        for staff_id, person in people.items():
            assert person.status is not None
            flags: tuple[str, ...] = ()
            if person.outing is not None:
                flags = person.outing.flags
            day = self._day(at)
            if limits_exceeded(self.outings_of_day(day, staff_id), self.config.rules.outing, at):
                flags = (*flags, LIMIT_EXCEEDED)
            self._set_staff(staff_id, person.status, person.since or at, person.outing, flags)
            candidates.extend(
                mark + self._grace for mark in (person.gone, person.absent_since) if mark
            )
        at_windows = _WindowIndex(
            paused=self._paused_windows(at),
            present=defaultdict(list),
            unknown={
                p.window_id
                for p in self._pads.values()
                if p.logged_in
                and p.staff_id is None
                and not p.paused
                and self._fresh(p.login_at, at)
            },
        )
        for staff_id, window_id in self._present.items():
            if staff_id not in people or people[staff_id].outing is None:
                at_windows.present[window_id].append(staff_id)
        for window_id in self.windows:
            self._set_window(window_id, at, people, at_windows)
        self._update_conditions(at)
        candidates.extend(self._boundaries(at))
        self._next = min((c for c in candidates if c > at), default=None)

    def _settle_outings(self, at: dt.datetime) -> None:
        for outing in list(self._outings.values()):
            if outing.ended_at is not None:
                continue
            day_end = _start_of_day(self._day(outing.started_at) + _DAY, self.zone)
            current = outing
            if at >= outing.expected_back and not outing.overdue and outing.expected_back < day_end:
                current = outing.with_flag(OVERDUE)
                self._outings[outing.outing_id] = current
                self.pending.append(OutingFact("overdue", current, outing.expected_back))
                self.changes.outings = True
            if at >= day_end:
                ended = current.ended(day_end, "day_end")
                self._outings[outing.outing_id] = ended
                self.pending.append(OutingFact("end", ended, day_end))
                self.changes.outings = True

    def _person(self, person: StaffConfig, at: dt.datetime) -> _Person:  # noqa: PLR0911  # a return per status, in order of precedence
        interval = self._interval(self._timetables.get(person.id), at)
        found = _Person(person, interval)
        outing = self.running_outing(person.id, at)
        if outing is not None:
            found.status, found.since, found.outing = "out", outing.started_at, outing
            found.absent_since = outing.started_at
            return found
        if interval is None:
            found.status = "off_duty"
            return found
        if person.id in self._present:
            found.status, found.there = "on_post", True
            return found
        leave = self._leave_at(person.id, at)
        if leave is not None:
            found.status, found.absent_since = "on_leave", interval.start
            return found
        arrived = self._arrived_at(person.id, at)
        if arrived is None:
            found.status, found.absent_since = "not_arrived", interval.start
            return found
        if person.window is None or person.window not in self.windows:
            found.status = "on_post"  # guides and supervisors have no window to be at
            return found
        marks = [interval.start, arrived]
        stretches = self._stretches.get(person.id)
        if stretches and stretches[-1].end is not None:
            marks.append(stretches[-1].end)
        marks.extend(self._ends_before(person.id, at))
        found.gone = found.absent_since = max(marks)
        found.there = at - found.gone < self._grace
        return found

    def _resolve_posts(self, people: dict[str, _Person], at: dt.datetime) -> None:
        """Decide those away from their window: A by their grace, B by their colleagues."""
        for person in people.values():
            if person.status is not None or person.gone is None:
                continue
            if person.config.post == "A":
                self._away(person, person.gone, at, on_post=True)
                continue
            window = person.config.window
            colleagues = [
                people[c.id] for c in self._window_staff.get(window or "", ()) if c.id in people
            ]
            colleagues = [c for c in colleagues if c.config.id != person.config.id]
            if any(self._covers(c, window) for c in colleagues):
                person.status, person.since = "standby", None
                continue
            # uncovered since the last colleague stopped covering, or since it left itself
            left = [c.absent_since for c in colleagues if c.absent_since is not None]
            start = max([person.gone, *left])
            self._away(person, start, at, on_post=start == person.gone)
            person.gone = start

    def _covers(self, colleague: _Person, window: str | None) -> bool:
        """At the window (and not out), or an A within the grace of a short absence."""
        staff_id = colleague.config.id
        if self._present.get(staff_id) == window and colleague.outing is None:
            return True
        return colleague.config.post == "A" and colleague.gone is not None and colleague.there

    def _away(self, person: _Person, start: dt.datetime, at: dt.datetime, *, on_post: bool) -> None:
        if at - start >= self._grace:
            person.status, person.since = "off_post", start
        else:
            person.status = "on_post" if on_post else "standby"

    def _set_staff(
        self,
        staff_id: str,
        status: StaffStatus,
        since: dt.datetime,
        outing: Outing | None,
        flags: tuple[str, ...],
    ) -> None:
        held = self._staff_views.get(staff_id)
        if held is not None and held.status == status:
            since = held.since
        view = StaffView(staff_id, status, since, outing, flags)
        if held != view:
            self._staff_views[staff_id] = view
            self.changes.staff.add(staff_id)

    def _set_window(
        self, window_id: str, at: dt.datetime, people: dict[str, _Person], index: _WindowIndex
    ) -> None:
        staff = self._window_staff.get(window_id, [])
        caller = self._callers.get(window_id)
        ticket = caller.ticket if caller is not None else None
        working = (
            any(people[s.id].interval is not None for s in staff if s.id in people)
            if staff
            else self._interval(self._hall_timetable, at) is not None
        )
        at_window = index.present.get(window_id, [])
        unknown = window_id in index.unknown
        paused = window_id in index.paused
        status: WindowStatus
        who: str | None = None
        if not working:
            status = "closed"
        elif (at_window or unknown) and not paused:
            who = min(at_window, key=lambda s: self._post_rank(s, window_id), default=None)
            serving = caller is not None and caller.status == "serving" and ticket is not None
            status = "serving" if serving else "idle"
        elif paused:
            status = "paused"
            who = next(
                (
                    p.staff_id
                    for p in self._pads.values()
                    if p.window_id == window_id and p.logged_in and p.paused
                ),
                caller.staff_id if caller is not None else None,
            )
        elif caller is not None and caller.status == "closed":
            status = "closed"
        else:
            status = "unattended"
        person = self.staff.get(who) if who is not None else None
        covering = person.post if person is not None and person.window == window_id else None
        held = self._window_views.get(window_id)
        since = held.since if held is not None and held.status == status else at
        view = WindowView(window_id, status, since, who, covering, ticket)
        if held != view:
            self._window_views[window_id] = view
            self.changes.windows.add(window_id)

    def _post_rank(self, staff_id: str, window_id: str) -> int:
        person = self.staff.get(staff_id)
        if person is None or person.window != window_id:
            return 2
        return 0 if person.post == "A" else 1

    def _update_conditions(self, at: dt.datetime) -> None:
        seen: set[tuple[str, str]] = set()
        for window in self.window_views():
            if window.status == "unattended":
                name = self.windows[window.window_id].name or window.window_id
                self._raise(
                    Condition(
                        "window_unattended",
                        ("window_id", window.window_id),
                        active=True,
                        since=window.since,
                        summary=f"{name}空岗 (A、B岗均不在岗)",
                    ),
                    seen,
                )
        for view in self.staff_views():
            outing = view.outing
            if outing is None:
                continue
            name = self.staff[view.staff_id].name
            if outing.overdue:
                self._raise(
                    Condition(
                        "outing_overdue",
                        ("staff_id", view.staff_id),
                        active=True,
                        since=outing.expected_back,
                        summary=f"{name}外出超时 (应于{outing.expected_back:%H:%M}返回)",
                        outing_id=outing.outing_id,
                    ),
                    seen,
                )
            if outing.rule_flags:
                self._raise(
                    Condition(
                        "outing_rule",
                        ("staff_id", view.staff_id),
                        active=True,
                        since=outing.started_at,
                        summary=f"{name}外出未按规定 ({'、'.join(outing.rule_flags)})",
                        outing_id=outing.outing_id,
                    ),
                    seen,
                )
        for key, condition in list(self._conditions.items()):
            if key not in seen and condition.active:
                ended = dataclasses.replace(condition, active=False)
                del self._conditions[key]
                self._notify(ended)

    def _raise(self, condition: Condition, seen: set[tuple[str, str]]) -> None:
        key = (condition.rule, condition.subject[1])
        seen.add(key)
        if self._conditions.get(key) != condition:
            self._conditions[key] = condition
            self._notify(condition)

    def _notify(self, condition: Condition) -> None:
        for listener in self._listeners:
            listener(condition)

    # -- time helpers --------------------------------------------------------------------------

    def _day(self, when: dt.datetime) -> dt.date:
        return when.astimezone(self.zone).date()

    def _intervals_of(self, timetable: str | None, day: dt.date) -> tuple[Interval, ...]:
        """Working intervals of a day: the periods, split by breaks unless breaks count."""
        key = (timetable, day)
        found = self._intervals.get(key)
        if found is None:
            result: list[Interval] = []
            for period in self.calendar.periods(day, timetable) if timetable else ():
                if self._breaks_count:
                    result.append(Interval(period.start, period.end))
                    continue
                start = period.start
                for pause in sorted(period.breaks, key=lambda b: b.start):
                    if pause.start > start:
                        result.append(Interval(start, pause.start))
                    start = max(start, pause.end)
                if start < period.end:
                    result.append(Interval(start, period.end))
            if len(self._intervals) > 1024:
                self._intervals.clear()
            found = self._intervals[key] = tuple(result)
        return found

    def _interval(self, timetable: str | None, at: dt.datetime) -> Interval | None:
        for interval in self._intervals_of(timetable, self._day(at)):
            if interval.contains(at):
                return interval
        return None

    def _arrived_at(self, staff_id: str, at: dt.datetime) -> dt.datetime | None:
        """The first sign of arrival in the attendance window of the period running at `at`."""
        start = None
        for window in self._attendance.windows(staff_id, self._day(at)):
            if window.contains(at):
                start = window.start
        if start is None:
            return None
        signs = [p for p in self._punches.get(staff_id, ()) if start <= p <= at]
        signs.extend(
            max(stretch.start, start)
            for stretch in self._stretches.get(staff_id, ())
            if stretch.start <= at and (stretch.end is None or stretch.end > start)
        )
        return min(signs, default=None)

    def _ends_before(self, staff_id: str, at: dt.datetime) -> list[dt.datetime]:
        """When outings and leave of the day ended: the person is expected back from then."""
        day = self._day(at)
        ends = [
            o.ended_at
            for o in self._outings.values()
            if o.staff_id == staff_id
            and o.ended_at is not None
            and o.ended_at <= at
            and self._day(o.ended_at) == day
        ]
        ends.extend(
            lv.end
            for lv in self.leave()
            if lv.staff_id == staff_id and lv.end <= at and self._day(lv.end) == day
        )
        return ends

    def _leave_at(self, staff_id: str, at: dt.datetime) -> Leave | None:
        return next((lv for lv in self.leave() if lv.staff_id == staff_id and lv.covers(at)), None)

    def _boundaries(self, at: dt.datetime) -> list[dt.datetime]:
        day = self._day(at)
        marks: list[dt.datetime] = [_start_of_day(day + _DAY, self.zone)]
        for timetable in {*self._timetables.values(), self._hall_timetable}:
            for interval in self._intervals_of(timetable, day):
                marks.extend((interval.start, interval.end))
        marks.extend(o.expected_back for o in self._outings.values() if o.ended_at is None)
        for leave in self.leave():
            marks.extend((leave.start, leave.end))
        return marks

    def _forget_before(self, day: dt.date) -> None:
        horizon = _start_of_day(day, self.zone)
        for staff_id, punches in self._punches.items():
            if punches and punches[0] < horizon:
                self._punches[staff_id] = [p for p in punches if p >= horizon]
        for outing_id in [
            o.outing_id
            for o in self._outings.values()
            if o.ended_at is not None and o.ended_at < horizon
        ]:
            del self._outings[outing_id]


def _by_since(view: StaffView) -> dt.datetime:
    return view.since


def _start_of_day(day: dt.date, zone: ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=zone)
