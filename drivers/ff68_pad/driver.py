"""Window rating pads on a polled FF 68 bus: ratings, staff login/logout, pause, faults.

Each pad is a member of its bus's scheduler. In its turn it is polled; an event it reports is
stored (journal and outbox, one commit) and only then acknowledged, so the pad never drops an
event the gateway does not hold. A repeat of the last stored event (its ACK was lost, or the
gateway died between commit and ACK) is acknowledged again and not stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Final

from drivers.ff68_pad import codec
from drivers.ff68_pad.codec import Command, Frame, PadPayloadError, PadReport
from drivers.ff68_pad.config import PadConfig
from gateway.clock import iso
from gateway.context import DriverContext, Mounted
from gateway.errors import BadResponse, DeviceError, StoreError
from gateway.events import RATING_LABELS, Event, PadAction, PadEvent, RatingEvent
from gateway.ids import stable_id
from gateway.runner import DeviceRunner
from gateway.serialbus import BusLink, SerialBus
from gateway.store import JournalEntry

log = logging.getLogger(__name__)

# fault bits and queue depth change rarely; a status request costs a slot in the sweep
STATUS_EVERY_S: Final = 60.0
# events taken from one pad in one turn; the rest wait for its next turn, so that a pad with a
# long queue cannot hold up the other pads of its bus
EVENTS_PER_TURN: Final = 8
# how far back the journal is read at start-up to learn who is logged in at the pad
RESTORE_LOOKBACK: Final = 200
# what a pad shows after a login whose card is not on the roster
UNKNOWN_CARD_TEXT: Final = "卡号未登记"

_ACTIONS: Final[dict[Command, PadAction]] = {
    Command.LOGIN: "login",
    Command.LOGOUT: "logout",
    Command.PAUSE: "pause",
    Command.RESUME: "resume",
    Command.FAULT: "fault",
}
_IDLE: Final = "idle"


class PadDriver:
    """One rating pad. Implements gateway.serialbus.BusMember."""

    def __init__(
        self,
        config: PadConfig,
        context: DriverContext,
        runner: DeviceRunner,
        bus: SerialBus,
    ) -> None:
        self.config = config
        self.runner = runner
        self._context = context
        self._bus = bus
        self._cursor_key = f"ff68_pad:{config.id}:last"
        self._last_stored: str | None = None
        self._staff_id: str | None = None
        self._paused = False
        self._status_due = 0.0
        self._resting_text = ""
        self._restore_task: asyncio.Task[None] | None = None
        self._warned_keys: set[int] = set()

    @property
    def device_id(self) -> str:
        return self.config.id

    async def restore(self) -> None:
        """Learn the last stored event and who is logged in from the store (after a restart)."""
        store = self._context.store
        self._last_stored = await store.cursor(self._cursor_key)
        rows = await store.journal(
            kinds=["pad"], device_id=self.device_id, limit=RESTORE_LOOKBACK, newest_first=True
        )
        seen_pause = False
        for row in rows:
            event = PadEvent.model_validate_json(row.payload)
            if event.action in ("pause", "resume") and not seen_pause:
                seen_pause = True
                self._paused = event.action == "pause"
            if event.action in ("login", "logout"):
                self._staff_id = event.staff_id if event.action == "login" else None
                if event.action == "logout":
                    self._paused = False
                break
        self._resting_text = self._name_of(self._staff_id)
        self._context.hub.update_values(self.device_id, self._values())

    async def poll(self, link: BusLink) -> None:
        # a pad reports one event per poll: while it has more, poll it again in the same turn,
        # so a burst (a login, a pause, a rating) arrives at once and not one per sweep
        for _ in range(EVENTS_PER_TURN):
            answer = await link.exchange(
                codec.encode(codec.poll(self.config.address)),
                codec.decode,
                self._match_poll,
                self.runner.count_request,
            )
            if not isinstance(answer, PadReport) or not await self._take(link, answer):
                break
        loop_now = asyncio.get_running_loop().time()
        if loop_now >= self._status_due:
            self._status_due = loop_now + STATUS_EVERY_S
            await self._refresh_status(link)

    async def show_message(self, text: str, seconds: float) -> None:
        """Show `text` for `seconds`, then what the pad showed before (the staff member's name)."""
        await self._bus.submit(lambda link: self._display(link, text))
        if self._restore_task is not None:
            self._restore_task.cancel()
        self._restore_task = asyncio.create_task(
            self._restore_after(seconds), name=f"pad-restore-{self.device_id}"
        )

    async def close(self) -> None:
        if self._restore_task is not None:
            self._restore_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restore_task

    def _match_poll(self, frame: Frame) -> PadReport | str | None:
        if frame.address != self.config.address:
            return None
        if frame.command == Command.POLL:
            if frame.data:
                raise BadResponse(f"{self.device_id}: empty poll answer carries data")
            return _IDLE
        try:
            return codec.parse_report(frame)
        except PadPayloadError as err:
            raise BadResponse(f"{self.device_id}: {err}") from err

    async def _take(self, link: BusLink, report: PadReport) -> bool:
        """Store and acknowledge an event; False if it could not be stored (not acknowledged)."""
        mark = f"{report.seq}:{codec.report_frame(self.config.address, report).data.hex()}"
        if mark == self._last_stored:
            await self._ack(link, report.seq)  # its ACK was lost: the pad still holds it
            return True
        now = self._context.clock.now()
        fact = self._normalize(report, now)
        try:
            if isinstance(fact, Event):
                await self._context.bus.publish(fact, cursor=(self._cursor_key, mark))
            else:
                await self._context.bus.note(fact, cursor=(self._cursor_key, mark))
        except StoreError as err:
            # not acknowledged: the pad keeps the event and reports it again next poll
            log.error(
                "%s: event seq %d not stored, not acknowledged: %s", self.device_id, report.seq, err
            )
            return False
        self._last_stored = mark
        self._apply(report, fact.staff_id if isinstance(fact, PadEvent) else None)
        await self._ack(link, report.seq)
        if report.command in (Command.LOGIN, Command.LOGOUT):
            # the pad shows who serves at the window, and nothing once they have left
            if report.command is Command.LOGOUT:
                self._resting_text = ""
            elif self._staff_id is not None:
                self._resting_text = self._name_of(self._staff_id)
            else:
                self._resting_text = UNKNOWN_CARD_TEXT
            await self._display(link, self._resting_text)
        return True

    def _normalize(self, report: PadReport, now: dt.datetime) -> Event | JournalEntry:
        event_id = stable_id(
            self._context.site, self.device_id, report.seq, report.command, now.isoformat()
        )
        common = {
            "event_id": event_id,
            "ts": now,
            "received_at": now,
            "device_id": self.device_id,
            "window_id": self.config.window,
        }
        if report.command is Command.KEY:
            assert report.key is not None
            level = self.config.key_map.get(report.key)
            if level is None:
                if report.key not in self._warned_keys:
                    self._warned_keys.add(report.key)
                    log.warning(
                        "%s: key code %d is not in key_map; kept in the journal only",
                        self.device_id,
                        report.key,
                    )
                return JournalEntry(
                    event_id=event_id,
                    kind="pad_unmapped_key",
                    subject=self.device_id,
                    device_id=self.device_id,
                    ts=iso(now),
                    ts_epoch=now.timestamp(),
                    received_at=iso(now),
                    payload=f'{{"key":{report.key},"seq":{report.seq}}}',
                    published=False,
                )
            return RatingEvent(
                **common,
                staff_id=self._staff_id,
                level=level,
                label=RATING_LABELS[level],
            )
        action = _ACTIONS[report.command]
        staff_id = self._staff_id
        if report.command is Command.LOGIN:
            assert report.card is not None
            person = self._context.roster.by_card(report.card)
            staff_id = person.id if person is not None else None
            if person is None:
                log.warning(
                    "%s: login with card %s, which is not on the roster",
                    self.device_id,
                    report.card,
                )
        return PadEvent(**common, action=action, staff_id=staff_id, code=report.code)

    def _apply(self, report: PadReport, login_staff_id: str | None) -> None:
        if report.command is Command.LOGIN:
            self._staff_id = login_staff_id
            self._paused = False
        elif report.command is Command.LOGOUT:
            self._staff_id = None
            self._paused = False
        elif report.command is Command.PAUSE:
            self._paused = True
        elif report.command is Command.RESUME:
            self._paused = False
        self._context.hub.update_values(self.device_id, self._values())

    async def _ack(self, link: BusLink, seq: int) -> None:
        def match(frame: Frame) -> bool | None:
            if frame.address != self.config.address or frame.command != Command.ACK:
                return None
            if frame.data != bytes([seq]):
                raise BadResponse(f"{self.device_id}: ACK answered for another seq")
            return True

        await link.exchange(
            codec.encode(codec.ack(self.config.address, seq)),
            codec.decode,
            match,
            self.runner.count_request,
        )

    async def _display(self, link: BusLink, text: str) -> None:
        def match(frame: Frame) -> bool | None:
            if frame.address != self.config.address or frame.command != Command.DISPLAY:
                return None
            if frame.data != b"\x00":
                code = frame.data[0] if frame.data else -1
                raise BadResponse(f"{self.device_id}: display refused with code {code}")
            return True

        await link.exchange(
            codec.encode(codec.display(self.config.address, text)),
            codec.decode,
            match,
            self.runner.count_request,
        )

    async def _refresh_status(self, link: BusLink) -> None:
        def match(frame: Frame) -> codec.PadStatus | None:
            if frame.address != self.config.address or frame.command != Command.STATUS:
                return None
            try:
                return codec.parse_status(frame)
            except PadPayloadError as err:
                raise BadResponse(f"{self.device_id}: {err}") from err

        status = await link.exchange(
            codec.encode(codec.status_request(self.config.address)),
            codec.decode,
            match,
            self.runner.count_request,
        )
        self._context.hub.update_values(
            self.device_id,
            {
                "fw": f"{status.fw_major}.{status.fw_minor}",
                "queue_depth": status.queue_depth,
                "fault_bits": status.fault_bits,
            },
        )

    async def _restore_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        try:
            await self._bus.submit(lambda link: self._display(link, self._resting_text))
        except DeviceError as err:  # the next login shows the name again anyway
            log.warning("%s: could not restore the display: %s", self.device_id, err)

    def _name_of(self, staff_id: str | None) -> str:
        if staff_id is None:
            return ""
        person = self._context.roster.staff.get(staff_id)
        return person.name if person is not None else ""

    def _values(self) -> dict[str, object]:
        return {
            "window_id": self.config.window,
            "address": self.config.address,
            "staff_id": self._staff_id,
            "paused": self._paused,
        }


def mount(config: PadConfig, context: DriverContext) -> Mounted:
    bus = context.buses[config.bus]
    driver = PadDriver(config, context, context.runner(config.id, config.profile), bus)
    bus.add(driver)
    return Mounted(config.id, restore=driver.restore, close=driver.close, display=driver)
