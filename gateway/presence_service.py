"""The presence service: feeds the presence engine, journals outings and leave, publishes the
hall's live picture, and serves the outings, leave and board APIs.

Inputs come from the event bus (punches, pad events, queue events), from the queue
controllers' state values (the staff number at each caller) and from the API and `cmd/outing`.
Every input is applied at the time the gateway learned it. Outings are journaled as `outing`
events; leave from the API and each caller's state as notes; a restart replays the journal of
today (and yesterday, for logins that may still hold) through the same engine, so the board
after a restart is the board before it.

Publishes `windows/{id}/state`, `staff/{id}/presence` and `board` (retained), the
`hallgw_windows` and `hallgw_staff` gauges, the board's server-sent events and the same news on
the LED strips.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hmac
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final, Literal

from aiohttp import web
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.board import BoardFeed, BoardScreens, install_board
from gateway.bus import EventBus
from gateway.clock import iso
from gateway.commands import CommandModel, CommandRejected
from gateway.config import Config
from gateway.context import GatewayParts, ServiceBase
from gateway.devices import Change, DeviceStatus
from gateway.errors import StoreError
from gateway.events import Event, OutingEvent, PadEvent, PunchEvent, QueueEvent
from gateway.http import json_error
from gateway.ids import stable_id
from gateway.leave import (
    Leave,
    LeaveError,
    LeaveRequest,
    load_leave_file,
    make_leave,
    validation_messages,
)
from gateway.outings import Outing, OutingEnd, OutingRequest, judge, outing_id
from gateway.presence import (
    STAFF_STATUSES,
    WINDOW_STATUSES,
    ConditionListener,
    OutingFact,
    PresenceEngine,
)
from gateway.roster import Roster
from gateway.store import JournalEntry, JournalRow
from gateway.topics import (
    BOARD,
    board_payload,
    dumps,
    staff_presence,
    staff_topic,
    window_state,
    window_topic,
)

log = logging.getLogger(__name__)

# a wait for the next status change is cut short this often: the wall clock can jump (NTP)
RECHECK_S: Final = 30.0
# the leave file is looked at this often; an edit is in force within this long, no SIGHUP
LEAVE_CHECK_S: Final = 30.0
# inputs this close together are evaluated and published together (the board: within 2 s)
COALESCE_S: Final = 0.05
# derived outing facts (an overdue, a return) whose commit failed are tried again after this
RETRY_AFTER_ERROR_S: Final = 10.0
# caller notes waiting for the journal; a controller flapping every window fits many times
NOTE_QUEUE_MAX: Final = 10_000
# request ids of outing commands remembered, so a command delivered twice (QoS 1) acts once
COMMANDS_REMEMBERED: Final = 1000
# caller notes wait this long to share a commit: a busy controller changes many times a second,
# and a note lost in a crash only delays the caller's state until the controller's next poll
NOTE_FLUSH_S: Final = 1.0
# caller notes journaled in one commit at most
NOTE_BATCH: Final = 500
CALLER_NOTE: Final = "queue_window"  # journal kind of a caller's state (not published)
LEAVE_NOTE: Final = "leave"  # journal kind of leave given or cancelled through the API
# queue events that show someone works the window's caller
_ACTIVITY: Final = frozenset({"called", "recalled", "finished", "skipped", "resumed", "opened"})
_QUEUE_STATUSES: Final = frozenset({"closed", "idle", "serving", "paused"})

Input = Literal["outings_api", "leave_api", "outing_command", "leave_file"]


class RequestRefused(Exception):
    """A well-formed request that the state or a hall rule refuses (409)."""

    def __init__(self, message: str, rule: str | None = None, status: int = 409) -> None:
        super().__init__(message)
        self.rule = rule
        self.status = status


class OutingCommandAction(BaseModel):
    model_config = ConfigDict(extra="allow")

    action: Literal["start", "end"]


class StartOutingCommand(CommandModel):
    action: Literal["start"]
    staff_id: str
    reason: Any = None
    expected_minutes: Any = None
    approved_by: Any = None
    replacement_staff_id: Any = None


class EndOutingCommand(CommandModel):
    action: Literal["end"]
    staff_id: str = Field(max_length=64)
    ended_by: str | None = Field(default=None, min_length=1, max_length=64)


class PresenceService(ServiceBase):
    name = "presence"

    def __init__(self, parts: GatewayParts) -> None:
        context = parts.context
        self.config = context.config
        self._site = context.site
        self._clock = context.clock
        self._bus: EventBus = context.bus
        self._store = context.store
        self._publisher = parts.publisher
        self._secrets = context.secrets
        self._roster = Roster(self.config)
        self.engine = PresenceEngine(self.config, start=self._clock.now())
        self._events = context.bus.subscribe("presence")
        self._seen: dict[str, None] = {}  # event ids applied (own outings come back by the bus)
        self._callers: dict[tuple[str, str], tuple[str, str | None, str | None]] = {}
        self._notes: asyncio.Queue[JournalEntry] = asyncio.Queue(NOTE_QUEUE_MAX)
        self._lock = asyncio.Lock()  # one outing or leave change at a time: rules see the last
        self._commands: dict[str, str] = {}  # request id → outing id
        self._wake = asyncio.Event()
        self._rounds = asyncio.Condition()
        self._rounds_started = 0
        self._rounds_done = 0
        self._restored = False
        self._leave_stamp: tuple[float, int] | None = None
        self.rejected = Counter(
            "hallgw_presence_rejected_total",
            "Outing and leave input refused: unauthorized, malformed, or by a hall rule",
            ["input", "reason"],
            registry=context.metrics.registry,
        )
        self._metrics = context.metrics
        for window_status in WINDOW_STATUSES:
            self._metrics.windows.labels(window_status).set(0)
        for staff_status in STAFF_STATUSES:
            self._metrics.staff.labels(staff_status).set(0)
        self._board_content: dict[str, Any] | None = None
        self.feed = BoardFeed()
        self.screens = BoardScreens(context.screens)
        context.hub.add_listener(self._device_changed)
        parts.commands.register("outing", self._outing_command)

    @property
    def bus(self) -> EventBus:
        """Where the inputs come from (tests drive the engine through it)."""
        return self._bus

    # -- the alert engine's hook -----------------------------------------------------------

    def add_listener(self, listener: ConditionListener) -> None:
        """Hear of every window that goes unattended or back, and of every outing that becomes
        overdue or was let through a rule under `warn` (and of their ends). Synchronous; see
        `presence.Condition`. `engine.conditions()` lists those active now."""
        self.engine.add_listener(listener)

    # -- Service ----------------------------------------------------------------------------

    def install_routes(self, main: web.Application) -> None:
        install_board(main, self)
        main.router.add_get("/api/v1/windows", self._get_windows)
        main.router.add_get("/api/v1/staff", self._get_staff)
        main.router.add_get("/api/v1/outings", self._get_outings)
        main.router.add_post("/api/v1/outings", self._post_outing)
        main.router.add_post("/api/v1/outings/{outing_id}/end", self._post_outing_end)
        main.router.add_get("/api/v1/leave", self._get_leave)
        main.router.add_post("/api/v1/leave", self._post_leave)
        main.router.add_delete("/api/v1/leave/{leave_id}", self._delete_leave)

    async def restore(self) -> None:
        """Replay the journal of today and yesterday through the engine, then publish."""
        now = self._clock.now()
        day = now.astimezone(self.config.zone).date()
        horizon = dt.datetime.combine(day - dt.timedelta(days=1), dt.time(0), self.config.zone)
        self.engine = PresenceEngine(self.config, start=horizon)
        rows = await self._store.journal(
            kinds=["punch", "pad", "queue", CALLER_NOTE, "outing"],
            since_epoch=horizon.timestamp(),
        )
        leave_rows = await self._store.journal(kinds=[LEAVE_NOTE])
        self._load_leave_file(horizon, quiet=False)
        # in the order the gateway learned them (caller notes are journaled in batches, late)
        for row in sorted([*rows, *leave_rows], key=_learned):
            try:
                self._replay(row)
            except (ValidationError, ValueError, KeyError) as err:
                log.warning(
                    "presence: journal row %d (%s) not replayed: %s", row.seq, row.kind, err
                )
        self.engine.advance(now)
        self._restored = True
        self._publish_changes(initial=True)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._consume(), name="presence-inputs")
            group.create_task(self._journal_notes(), name="presence-notes")
            group.create_task(self._watch_leave_file(), name="presence-leave-file")
            group.create_task(self._tick(), name="presence-tick")

    def reload(self, config: Config) -> None:
        self.config = config
        self._roster = Roster(config)
        self.engine.configure(config)
        self._leave_stamp = None
        self._load_leave_file(self._clock.now(), quiet=False)
        self.wake()

    # -- for tests and the board --------------------------------------------------------------

    def wake(self) -> None:
        """Look at the clock again now (a test moved its fake clock)."""
        self._wake.set()

    async def sync(self) -> None:
        """Return once every input handed over so far is applied, the engine has evaluated at
        the clock's time and everything is handed to the publisher."""
        while True:
            async with self._rounds:
                target = self._rounds_started + 1
                self._wake.set()
                await self._rounds.wait_for(functools.partial(self._rounds_reached, target))
            if self._events.empty():
                return

    def _rounds_reached(self, target: int) -> bool:
        return self._rounds_done >= target

    def board(self) -> dict[str, Any]:
        """The board as of now (what `/api/v1/board` and the board's events send)."""
        return self._board(self._now())

    def window_grid(self) -> list[dict[str, Any]]:
        """Every window with its floor and status, for the board page's grid."""
        return [
            {
                "window_id": view.window_id,
                "name": self.engine.windows[view.window_id].name or view.window_id,
                "floor": self.engine.windows[view.window_id].floor,
                "status": view.status,
            }
            for view in self.engine.window_views()
        ]

    # -- inputs ------------------------------------------------------------------------------

    async def _consume(self) -> None:
        while True:
            event = await self._events.get()
            try:
                self._apply(event)
            except (ValueError, KeyError) as err:
                log.warning("presence: %s %s not applied: %s", event.kind, event.event_id, err)
            self._wake.set()

    def _apply(self, event: Event) -> None:
        if event.event_id in self._seen:
            return
        self._remember(event.event_id)
        at = event.received_at
        if isinstance(event, PadEvent):
            self.engine.pad(
                event.device_id or "", event.window_id, event.action, event.staff_id, at
            )
        elif isinstance(event, PunchEvent):
            staff_id = event.staff_id
            if staff_id is None:
                person = self._roster.by_pin(event.pin)
                staff_id = person.id if person is not None else None
            if staff_id is not None:
                self.engine.punch(staff_id, event.ts, at)
        elif isinstance(event, QueueEvent):
            if event.action in _ACTIVITY:
                self.engine.caller_activity(event.window_id, at)
        elif isinstance(event, OutingEvent):
            self._apply_outing(event, "", at)

    def _remember(self, event_id: str) -> None:
        self._seen[event_id] = None
        if len(self._seen) > 50_000:
            for old in list(self._seen)[:10_000]:
                del self._seen[old]

    def _apply_outing(self, event: OutingEvent, flags: str, at: dt.datetime) -> None:
        marks = _parse_flags(flags)
        if event.action == "start":
            day = event.ts.astimezone(self.config.zone).date()
            number = len(self.engine.outings_of_day(day, event.staff_id)) + 1
            new_id = marks.get("outing_id") or outing_id(event.staff_id, day, number)
            if self.engine.outing(new_id) is not None:
                return
            self.engine.start_outing(
                Outing(
                    outing_id=new_id,
                    staff_id=event.staff_id,
                    window_id=event.window_id,
                    reason=event.reason,
                    started_at=event.ts,
                    expected_back=event.expected_back or event.ts,
                    approved_by=event.approved_by,
                    replacement_staff_id=event.replacement_staff_id,
                    flags=tuple(marks.get("rules", "").split("+")) if marks.get("rules") else (),
                )
            )
            return
        oid = marks.get("outing_id")
        running = self.engine.running_outing(event.staff_id, at)
        if oid is None and running is not None:
            oid = running.outing_id
        if oid is None:
            return
        if event.action == "end":
            self.engine.end_outing(oid, event.ts, marks.get("ended_by"))
        else:
            self.engine.flag_outing(oid, "overdue")

    def _replay(self, row: JournalRow) -> None:
        at = dt.datetime.fromisoformat(row.received_at)
        if row.kind == CALLER_NOTE:
            note = json.loads(row.payload)
            status = note["status"]
            if status not in _QUEUE_STATUSES:
                raise ValueError(f"unknown caller status {status!r}")
            self._callers[(row.device_id or "", note["window_id"])] = (
                status,
                note.get("staff_id"),
                note.get("ticket"),
            )
            self.engine.caller(
                note["window_id"], status, note.get("staff_id"), note.get("ticket"), at
            )
            return
        if row.kind == LEAVE_NOTE:
            note = json.loads(row.payload)
            if note["action"] == "add":
                request = LeaveRequest.model_validate(note["leave"])
                self.engine.add_leave(make_leave(request, self.config.zone, "api", self._site), at)
            else:
                self.engine.cancel_leave(note["leave_id"], at)
            return
        if not row.published:
            return  # a punch with an implausible time: attendance's business, not presence's
        event: Event
        if row.kind == "pad":
            event = PadEvent.model_validate_json(row.payload)
        elif row.kind == "punch":
            event = PunchEvent.model_validate_json(row.payload)
        elif row.kind == "queue":
            event = QueueEvent.model_validate_json(row.payload)
        else:
            outing = OutingEvent.model_validate_json(row.payload)
            self._remember(outing.event_id)
            self._apply_outing(outing, row.flags, at)
            return
        self._apply(event)

    def _device_changed(self, status: DeviceStatus, change: Change) -> None:
        if status.kind == "queue" and change is Change.VALUES:
            self.queue_values(status.device_id, status.values)

    def queue_values(self, device_id: str, values: Mapping[str, Any]) -> None:
        """A queue controller's state values (`{"windows": {window_id: {"status", "ticket",
        "staff_id", …}}}`): who is at each caller, and whether the window is open."""
        windows = values.get("windows")
        if not isinstance(windows, Mapping):
            return
        now = self._clock.now()
        for window_id, value in windows.items():
            if not isinstance(value, Mapping) or window_id not in self.engine.windows:
                continue
            status = value.get("status")
            if status not in _QUEUE_STATUSES:
                continue
            staff_id = value.get("staff_id")
            staff_id = staff_id if isinstance(staff_id, str) else None
            ticket = value.get("ticket")
            ticket = ticket if isinstance(ticket, str) else None
            key = (device_id, window_id)
            before = self._callers.get(key)
            state = (status, staff_id, ticket)
            if before == state:
                continue
            self._callers[key] = state
            self.engine.caller(window_id, status, staff_id, ticket, now, evaluate=False)
            # the journal keeps who is at the caller and its status; the ticket comes back
            # with the controller's first poll after a restart
            if before is None or before[:2] != state[:2]:
                self._note_caller(device_id, window_id, state, now)
        self._wake.set()

    def _note_caller(
        self,
        device_id: str,
        window_id: str,
        state: tuple[str, str | None, str | None],
        now: dt.datetime,
    ) -> None:
        status, staff_id, ticket = state
        payload = json.dumps(
            {"window_id": window_id, "status": status, "staff_id": staff_id, "ticket": ticket}
        )
        entry = JournalEntry(
            event_id=stable_id(self._site, CALLER_NOTE, device_id, window_id, iso(now), payload),
            kind=CALLER_NOTE,
            subject=window_id,
            device_id=device_id,
            ts=iso(now),
            ts_epoch=now.timestamp(),
            received_at=iso(now),
            payload=payload,
            published=False,
        )
        try:
            self._notes.put_nowait(entry)
        except asyncio.QueueFull:
            self._metrics.sink_dropped.labels("presence_notes").inc()

    async def _journal_notes(self) -> None:
        batch: list[JournalEntry] = []
        try:
            while True:
                batch.append(await self._notes.get())
                await asyncio.sleep(NOTE_FLUSH_S)
                await self._write_notes(batch)
                batch = []
        finally:  # stopping: what is waiting goes to the journal first (a restart replays it)
            await self._write_notes(batch)

    async def _write_notes(self, batch: list[JournalEntry]) -> None:
        while not self._notes.empty() and len(batch) < NOTE_BATCH:
            batch.append(self._notes.get_nowait())
        if not batch:
            return
        try:  # one commit for a burst: a busy controller changes many times a second
            await self._store.record_many([(entry, ()) for entry in batch])
        except StoreError as err:  # the controller's next change is noted again
            log.warning("presence: %d caller states not journaled: %s", len(batch), err)

    # -- time and publishing -----------------------------------------------------------------

    async def _tick(self) -> None:
        retry: list[OutingFact] = []
        while True:
            async with self._rounds:
                self._wake.clear()
                self._rounds_started += 1
            self.engine.advance(self._clock.now())
            now = self._now()
            self._publish_changes()
            retry = await self._publish_facts([*retry, *self.engine.take_pending()], now)
            async with self._rounds:
                self._rounds_done += 1
                self._rounds.notify_all()
            wait = RETRY_AFTER_ERROR_S if retry else RECHECK_S
            upcoming = self.engine.next_change()
            if upcoming is not None:
                # hall seconds to real ones: a simulated hall's clock runs `speed` times faster
                speed = float(getattr(self._clock, "speed", 1.0))
                wait = min(wait, max(0.0, (upcoming - now).total_seconds()) / speed)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
                # inputs come in bursts (a controller polled many times a second, the morning
                # rush): evaluate and publish a burst once
                await asyncio.sleep(COALESCE_S)

    async def _publish_facts(self, facts: list[OutingFact], now: dt.datetime) -> list[OutingFact]:
        """Journal and publish what the engine decided; the ones not stored, to retry."""
        failed = []
        for fact in facts:
            flags = f"outing_id={fact.outing.outing_id}"
            if fact.action == "end":
                flags += f",ended_by={_flag_text(fact.outing.ended_by or '')}"
            event = self._outing_event(fact.outing, fact.action, fact.at, now)
            try:
                await self._bus.publish(event, flags=flags)
            except StoreError as err:
                log.error(
                    "presence: outing %s %s not stored: %s", fact.outing.outing_id, fact.action, err
                )
                failed.append(fact)
            else:
                self._remember(event.event_id)
        return failed

    def _outing_event(
        self,
        outing: Outing,
        action: Literal["start", "end", "overdue"],
        ts: dt.datetime,
        now: dt.datetime,
    ) -> OutingEvent:
        return OutingEvent(
            event_id=stable_id(self._site, "outing", outing.outing_id, action),
            ts=ts,
            received_at=now,
            device_id=None,
            staff_id=outing.staff_id,
            window_id=outing.window_id,
            action=action,
            reason=outing.reason,
            expected_back=outing.expected_back,
            approved_by=outing.approved_by,
            replacement_staff_id=outing.replacement_staff_id,
        )

    def _publish_changes(self, *, initial: bool = False) -> None:
        if not self._restored:
            return
        changes = self.engine.take_changes()
        mask = self.config.board.mask_names
        staff_ids = set(self.engine.staff) if initial else changes.staff
        window_ids = set(self.engine.windows) if initial else changes.windows
        for staff_id in staff_ids:
            if staff_id in self.engine.staff:
                payload = staff_presence(
                    self.engine.staff_view(staff_id), self.engine.staff[staff_id], mask=mask
                )
                self._publisher.set_retained(staff_topic(staff_id), dumps(payload))
        for window_id in window_ids:
            if window_id in self.engine.windows:
                payload = window_state(
                    self.engine.window_view(window_id), self.engine.windows[window_id]
                )
                self._publisher.set_retained(window_topic(window_id), dumps(payload))
        for staff_id in changes.removed_staff:
            self._publisher.set_retained(staff_topic(staff_id), b"")
        for window_id in changes.removed_windows:
            self._publisher.set_retained(window_topic(window_id), b"")
        if window_ids or changes.removed_windows:
            self.feed.changed()  # the page's grid
        board = self._board(self._now())
        content = {k: v for k, v in board.items() if k != "ts"}
        if content == self._board_content and not initial:
            return
        self._board_content = content
        self._publisher.set_retained(BOARD, dumps(board))
        counts = board["counts"]
        for window_status in WINDOW_STATUSES:
            self._metrics.windows.labels(window_status).set(counts[window_status])
        for staff_status in STAFF_STATUSES:
            self._metrics.staff.labels(staff_status).set(counts[staff_status])
        self.feed.changed()
        self.screens.show(board)

    def _now(self) -> dt.datetime:
        """The time the picture is of: the clock's, or the engine's if the wall clock was
        stepped back (the engine never goes back, so the board's `ts` does not either)."""
        return max(self._clock.now(), self.engine.at)

    def _board(self, ts: dt.datetime) -> dict[str, Any]:
        return board_payload(
            self.engine.board(),
            self.engine.staff,
            self.engine.windows,
            mask=self.config.board.mask_names,
            ts=ts,
        )

    # -- leave file ---------------------------------------------------------------------------

    async def _watch_leave_file(self) -> None:
        while True:
            await asyncio.sleep(LEAVE_CHECK_S)
            if self._load_leave_file(self._clock.now(), quiet=True):
                self._wake.set()

    def _load_leave_file(self, at: dt.datetime, *, quiet: bool) -> bool:
        """Read the leave file if it changed; True if the leave in force changed."""
        path = self.config.leave.path
        if path is None:
            if self._leave_stamp is None and not self.engine.leave():
                return False
            self._leave_stamp = None
            self.engine.set_file_leave([], at)
            return True
        try:
            stat = os.stat(path)  # noqa: PTH116  # one call, the mtime and size together
            stamp = (stat.st_mtime, stat.st_size)
        except OSError as err:
            stamp = (-1.0, -1)
            if stamp != self._leave_stamp or not quiet:
                log.error(
                    "presence: leave file %s: %s; the leave in force stays", path, err.strerror
                )
                self.rejected.labels("leave_file", "unreadable").inc()
            self._leave_stamp = stamp
            return False
        if stamp == self._leave_stamp:
            return False
        self._leave_stamp = stamp
        try:
            entries = load_leave_file(Path(path), self.config.zone, self.engine.staff, self._site)
        except LeaveError as err:
            self.rejected.labels("leave_file", "malformed").inc()
            for line in err.errors:
                log.error("presence: leave file refused, the leave in force stays: %s", line)
            return False
        self.engine.set_file_leave(entries, max(at, self.engine.at))
        log.info("presence: %d leave entries from %s", len(entries), path)
        return True

    # -- HTTP --------------------------------------------------------------------------------

    async def _get_windows(self, _request: web.Request) -> web.Response:
        return _json(
            [window_state(v, self.engine.windows[v.window_id]) for v in self.engine.window_views()]
        )

    async def _get_staff(self, _request: web.Request) -> web.Response:
        mask = self.config.board.mask_names
        return _json(
            [
                staff_presence(v, self.engine.staff[v.staff_id], mask=mask)
                for v in self.engine.staff_views()
            ]
        )

    async def _get_outings(self, _request: web.Request) -> web.Response:
        day = self._clock.now().astimezone(self.config.zone).date()
        return _json([o.payload() for o in self.engine.outings_of_day(day)])

    async def _get_leave(self, _request: web.Request) -> web.Response:
        today = dt.datetime.combine(
            self._clock.now().astimezone(self.config.zone).date(), dt.time(0), self.config.zone
        )
        return _json([lv.payload() for lv in self.engine.leave() if lv.end > today])

    async def _post_outing(self, request: web.Request) -> web.Response:
        async def act(body: Any) -> web.Response:
            outing = await self.start_outing(OutingRequest.model_validate(body), None)
            return _json(outing.payload(), status=201)

        return await self._write(request, "outings_api", act)

    async def _post_outing_end(self, request: web.Request) -> web.Response:
        oid = request.match_info["outing_id"]

        async def act(body: Any) -> web.Response:
            end = OutingEnd.model_validate(body)
            outing = await self.end_outing(oid, end.ended_by or "api")
            return _json(outing.payload())

        return await self._write(request, "outings_api", act, body_required=False)

    async def _post_leave(self, request: web.Request) -> web.Response:
        async def act(body: Any) -> web.Response:
            leave = await self.give_leave(LeaveRequest.model_validate(body))
            return _json(leave.payload(), status=201)

        return await self._write(request, "leave_api", act)

    async def _delete_leave(self, request: web.Request) -> web.Response:
        leave_id = request.match_info["leave_id"]

        async def act(_body: Any) -> web.Response:
            leave = await self.cancel_leave(leave_id)
            return _json(leave.payload())

        return await self._write(request, "leave_api", act, body_required=False)

    async def _write(  # noqa: PLR0911  # each refusal answers at once, nothing changed
        self,
        request: web.Request,
        source: Input,
        act: Callable[[Any], Awaitable[web.Response]],
        *,
        body_required: bool = True,
    ) -> web.Response:
        """Token, then body, then the change: a refused request changes nothing."""
        if not self._authorized(request):
            self.rejected.labels(source, "unauthorized").inc()
            response = json_error(401, "missing or wrong API token (Authorization: Bearer …)")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self.rejected.labels(source, "too_large").inc()
            raise
        body: Any = {}
        if raw.strip() or body_required:
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                self.rejected.labels(source, "malformed").inc()
                return json_error(400, f"body is not JSON: {err}")
            if not isinstance(body, dict):
                self.rejected.labels(source, "malformed").inc()
                return json_error(400, "body must be a JSON object")
        try:
            return await act(body)
        except ValidationError as err:
            self.rejected.labels(source, "malformed").inc()
            return json_error(422, "; ".join(validation_messages(err)))
        except RequestRefused as err:
            self.rejected.labels(source, "refused").inc()
            extra = {} if err.rule is None else {"rule": err.rule}
            return json_error(err.status, str(err), **extra)
        except StoreError as err:
            log.error("presence: %s not stored: %s", source, err)
            return json_error(503, f"not stored, nothing changed: {err}")

    def _authorized(self, request: web.Request) -> bool:
        token = self._secrets.api_token
        header = request.headers.get("Authorization", "")
        if token is None or not header.startswith("Bearer "):
            return False
        given = header.removeprefix("Bearer ").strip().encode("utf-8")
        return hmac.compare_digest(given, token.value.encode("utf-8"))

    # -- outings and leave (the API and cmd/outing) ---------------------------------------------

    async def start_outing(self, request: OutingRequest, request_id: str | None) -> Outing:
        """Judge and register an outing; RequestRefused names the rule or state refusing it."""
        async with self._lock:
            if request_id is not None and request_id in self._commands:
                known = self.engine.outing(self._commands[request_id])
                if known is not None:
                    return known  # the same command, delivered again
            person = self.engine.staff.get(request.staff_id)
            if person is None:
                raise _unknown("staff_id", request.staff_id)
            if (
                request.replacement_staff_id is not None
                and request.replacement_staff_id not in self.engine.staff
            ):
                raise _unknown("replacement_staff_id", request.replacement_staff_id)
            now = max(self._clock.now(), self.engine.at)
            self.engine.advance(now)
            running = self.engine.running_outing(person.id, now)
            if running is not None:
                raise RequestRefused(
                    f"{person.id} is out already (outing {running.outing_id})", "already_out"
                )
            day = now.astimezone(self.config.zone).date()
            today = self.engine.outings_of_day(day, person.id)
            judgement = judge(request, today, self.config.rules.outing, now)
            refusal = judgement.refusal
            if refusal is not None:
                raise RequestRefused(refusal.message, refusal.rule)
            outing = Outing(
                outing_id=outing_id(person.id, day, len(today) + 1),
                staff_id=person.id,
                window_id=person.window,
                reason=request.reason,
                started_at=now,
                expected_back=now + dt.timedelta(minutes=request.expected_minutes),
                approved_by=request.approved_by,
                replacement_staff_id=request.replacement_staff_id,
                flags=judgement.flags,
            )
            event = self._outing_event(outing, "start", now, now)
            flags = f"outing_id={outing.outing_id}"
            if outing.flags:
                flags += f",rules={'+'.join(outing.flags)}"
            await self._bus.publish(event, flags=flags)
            self._remember(event.event_id)
            self.engine.start_outing(outing)
            if request_id is not None:
                self._commands[request_id] = outing.outing_id
                while len(self._commands) > COMMANDS_REMEMBERED:
                    del self._commands[next(iter(self._commands))]
            log.info("presence: outing %s started (%s)", outing.outing_id, ",".join(outing.flags))
        self._wake.set()
        return self.engine.outing(outing.outing_id) or outing

    async def end_outing(self, oid: str, ended_by: str) -> Outing:
        async with self._lock:
            outing = self.engine.outing(oid)
            if outing is None:
                raise RequestRefused(f"no outing {oid!r} (today's and running ones)", status=404)
            if outing.ended_at is not None:
                raise RequestRefused(f"outing {oid} ended at {iso(outing.ended_at)}")
            now = max(self._clock.now(), self.engine.at)
            ended = outing.ended(now, ended_by)
            event = self._outing_event(ended, "end", now, now)
            await self._bus.publish(event, flags=f"outing_id={oid},ended_by={_flag_text(ended_by)}")
            self._remember(event.event_id)
            result = self.engine.end_outing(oid, now, ended_by) or ended
        self._wake.set()
        return result

    async def give_leave(self, request: LeaveRequest) -> Leave:
        if request.staff_id not in self.engine.staff:
            raise _unknown("staff_id", request.staff_id)
        async with self._lock:
            leave = make_leave(request, self.config.zone, "api", self._site)
            if self.engine.api_leave(leave.leave_id) is not None:
                return leave
            now = max(self._clock.now(), self.engine.at)
            note = {
                "action": "add",
                "leave_id": leave.leave_id,
                "leave": request.model_dump(mode="json", by_alias=True),
            }
            await self._note_leave(leave.leave_id, note, now)
            self.engine.add_leave(leave, now)
        self._wake.set()
        return leave

    async def cancel_leave(self, leave_id: str) -> Leave:
        async with self._lock:
            leave = self.engine.api_leave(leave_id)
            if leave is None:
                in_file = any(lv.leave_id == leave_id for lv in self.engine.leave())
                if in_file:
                    raise RequestRefused(f"leave {leave_id} is in the leave file: edit the file")
                raise RequestRefused(f"no leave {leave_id!r}", status=404)
            now = max(self._clock.now(), self.engine.at)
            await self._note_leave(leave_id, {"action": "cancel", "leave_id": leave_id}, now)
            self.engine.cancel_leave(leave_id, now)
        self._wake.set()
        return leave

    def _running_id(self, staff_id: str) -> str:
        running = self.engine.running_outing(staff_id, max(self._clock.now(), self.engine.at))
        if running is None:
            raise RequestRefused(f"{staff_id} has no outing running")
        return running.outing_id

    async def _note_leave(self, leave_id: str, note: dict[str, Any], now: dt.datetime) -> None:
        entry = JournalEntry(
            event_id=stable_id(self._site, LEAVE_NOTE, leave_id, note["action"], iso(now)),
            kind=LEAVE_NOTE,
            subject=leave_id,
            device_id=None,
            ts=iso(now),
            ts_epoch=now.timestamp(),
            received_at=iso(now),
            payload=json.dumps(note, ensure_ascii=False),
            published=False,
        )
        await self._bus.note(entry)

    async def _outing_command(self, _subject: str | None, body: dict[str, Any]) -> None:
        action = OutingCommandAction.model_validate(body).action
        try:
            if action == "start":
                command = StartOutingCommand.model_validate(body)
                fields = command.model_dump(exclude={"request_id", "action"}, exclude_none=True)
                await self.start_outing(OutingRequest.model_validate(fields), command.request_id)
                return
            end = EndOutingCommand.model_validate(body)
            await self.end_outing(self._running_id(end.staff_id), end.ended_by or "command")
        except RequestRefused as err:
            rule = f" (rule {err.rule})" if err.rule else ""
            raise CommandRejected(f"{err}{rule}") from err
        except StoreError as err:
            raise CommandRejected(f"not stored, nothing changed: {err}") from err


def _learned(row: JournalRow) -> tuple[float, int]:
    return dt.datetime.fromisoformat(row.received_at).timestamp(), row.seq


def _unknown(field: str, value: str) -> ValidationError:
    return ValidationError.from_exception_data(
        "OutingRequest",
        [
            {
                "type": "value_error",
                "loc": (field,),
                "input": value,
                "ctx": {"error": ValueError(f"no staff {value!r} in the roster")},
            }
        ],
    )


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(
        value, status=status, dumps=lambda v: json.dumps(v, ensure_ascii=False)
    )


def _flag_text(text: str) -> str:
    """Free text kept in the journal's flags column, which separates with `,` and `=`."""
    return text.replace(",", " ").replace("=", " ")[:64]


def _parse_flags(flags: str) -> dict[str, str]:
    marks = {}
    for part in flags.split(","):
        key, _, value = part.partition("=")
        if key and value:
            marks[key] = value
    return marks
