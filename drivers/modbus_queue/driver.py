"""Queue-call controllers over Modbus: window states and queue events (devices.md §3).

A poll reads the header; while the change counter stands still that is all it reads. When the
counter moves, the plan's reads fetch every window and service, the new snapshot is compared
with the last one, and the events are stored in one commit with the new baseline before it
becomes the baseline (a failed commit leaves the baseline, so the next poll finds the same
changes again). The baseline is restored from the store at start-up, so what the controller
did while the gateway was down (or killed between a read and its commit) is found by the first
poll, as after a lost connection, and nothing is counted twice.
The device's state values then carry every window's live state and every service's queue.

Over TCP the device has a link of its own, driven by `DeviceRunner.run`; over RTU it is a member
of a serial bus, which it may share with other devices (rating pads), polled at its own interval.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol, TypeVar

from drivers.modbus_queue import rtu
from drivers.modbus_queue.changes import Baseline, Change, RowTexts, compare
from drivers.modbus_queue.config import ModbusQueueConfig
from drivers.modbus_queue.registers import (
    Header,
    MapError,
    Read,
    RegisterLayout,
    ServiceState,
    Snapshot,
    WindowState,
    ticket_label,
)
from drivers.modbus_queue.tcp import TcpLink
from gateway.clock import Clock
from gateway.config import BusConfig
from gateway.context import DriverContext, Mounted
from gateway.devices import DeviceHub
from gateway.errors import BadResponse, StoreError
from gateway.events import Event, QueueEvent
from gateway.ids import stable_id
from gateway.roster import Roster
from gateway.runner import DeviceRunner
from gateway.serialbus import BusLink, SerialBus, wire_time

log = logging.getLogger(__name__)

R = TypeVar("R")

# a controller on a serial port of its own (`url:`) gets one retry per request, like a bus
SERIAL_RETRIES: Final = 1


class RegisterReader(Protocol):
    """Read one request and decode its registers; raise DeviceError (counted) on failure."""

    async def __call__(self, request: Read, decode: Callable[[Sequence[int]], R], /) -> R: ...


class EventSink(Protocol):
    async def publish_many(
        self, events: Sequence[tuple[Event, str]], *, cursor: tuple[str, str] | None = None
    ) -> list[bool]: ...


class QueuePoller:
    """What a poll does, whatever the link: header, reads, snapshot, events, state values."""

    def __init__(
        self,
        config: ModbusQueueConfig,
        *,
        site: str,
        clock: Clock,
        bus: EventSink,
        hub: DeviceHub,
        roster: Roster,
    ) -> None:
        self.device_id = config.id
        self.cursor_key = f"modbus_queue:{config.id}:baseline"
        self.layout = RegisterLayout(config.register_map)
        self._site = site
        self._clock = clock
        self._bus = bus
        self._hub = hub
        self._roster = roster
        self._baseline: Baseline | None = None
        self._baseline_texts = RowTexts()
        self._window_ids: dict[int, str] = {}
        self._window_values: dict[int, tuple[WindowState, dict[str, Any]]] = {}
        self._service_values: tuple[tuple[ServiceState, ...], dict[str, Any]] | None = None
        self._windows_value: tuple[tuple[WindowState, ...], dict[str, Any]] | None = None

    @property
    def snapshot(self) -> Snapshot | None:
        return None if self._baseline is None else self._baseline.snapshot

    def restore(self, stored: str | None) -> None:
        """The baseline kept with the last events stored (None: the first run)."""
        if stored is None:
            return
        try:
            self._baseline = Baseline.loads(stored)
        except ValueError as err:
            log.warning("%s: stored baseline unusable (%s); starting afresh", self.device_id, err)

    async def poll(self, read: RegisterReader) -> None:
        layout = self.layout
        if layout.header_read is None:
            header = layout.fixed_header()
        else:
            header = await read(layout.header_read, layout.decode_header)
        baseline = self._baseline
        if baseline is not None and _unchanged(baseline.snapshot.header, header):
            return
        plan = layout.plan(header.windows, header.services)
        parts = [
            await read(request, decode)
            for request, decode in zip(plan.reads, plan.decoders, strict=True)
        ]
        try:
            snapshot = plan.snapshot(header, parts)
        except MapError as err:
            raise BadResponse(f"{self.device_id}: {err}") from err
        if baseline is None:
            changes: list[Change] = []
            following = Baseline.first(snapshot)
            await self._keep_first(following)
        else:
            changes, following = compare(baseline, snapshot)
        if changes and not await self._publish(changes, snapshot, following):
            return
        self._baseline = following
        self._hub.update_values(self.device_id, self.values(snapshot))

    def window_id(self, number: int) -> str:
        """The configured window with `queue_window: number`, or a stand-in id (and a warning)."""
        window_id = self._window_ids.get(number)
        if window_id is None:
            window = self._roster.window_by_queue_number(number)
            if window is None:
                window_id = f"{self.device_id}-w{number}"
                log.warning(
                    "%s: controller window %d is no configured window's queue_window; "
                    "its events carry window_id %s",
                    self.device_id,
                    number,
                    window_id,
                )
            else:
                window_id = window.id
            self._window_ids[number] = window_id
        return window_id

    def values(self, snapshot: Snapshot) -> dict[str, Any]:
        """The device's state values (README: queue controllers, for the presence engine)."""
        # what did not change keeps its dict: the hub then compares it by identity
        if self._windows_value is not None and self._windows_value[0] == snapshot.windows:
            windows = self._windows_value[1]
        else:
            windows = {}
            cache = self._window_values
            for number, window in enumerate(snapshot.windows, start=1):
                cached = cache.get(number)
                if cached is None or cached[0] != window:
                    cached = cache[number] = (window, self._window_value(number, window))
                windows[self.window_id(number)] = cached[1]
            self._windows_value = (snapshot.windows, windows)
        if self._service_values is None or self._service_values[0] != snapshot.services:
            services = {
                str(number): {
                    "waiting": service.waiting,
                    "longest_wait_s": service.longest_wait_s,
                    "last_issued": None
                    if service.last_issued is None
                    else ticket_label(service.prefix, service.last_issued),
                }
                for number, service in enumerate(snapshot.services, start=1)
            }
            self._service_values = (snapshot.services, services)
        services = self._service_values[1]
        return {
            "windows": windows,
            "services": services,
            "waiting_total": snapshot.waiting_total,
            "issued_today": snapshot.header.issued_today,
        }

    def _window_value(self, number: int, window: WindowState) -> dict[str, Any]:
        staff = self._roster.by_queue_no(window.staff) if window.staff else None
        return {
            "queue_window": number,
            "status": window.status,
            "ticket": window.label,
            "service": window.service or None,
            "call_count": window.call_count or None,
            "staff_no": window.staff or None,
            "staff_id": staff.id if staff is not None else None,
            "served_today": window.served_today,
        }

    async def _keep_first(self, baseline: Baseline) -> None:
        """Store the first baseline ever seen; without it, a restart takes its own first."""
        try:
            kept = baseline.dumps(self._baseline_texts)
            await self._bus.publish_many([], cursor=(self.cursor_key, kept))
        except StoreError as err:
            log.warning("%s: first baseline not stored: %s", self.device_id, err)

    async def _publish(
        self, changes: list[Change], snapshot: Snapshot, following: Baseline
    ) -> bool:
        now = self._clock.now()
        stamp = now.isoformat()
        counter = snapshot.header.change_counter
        events = [
            (
                QueueEvent(
                    event_id=stable_id(self._site, self.device_id, stamp, counter, index),
                    ts=now,
                    received_at=now,
                    device_id=self.device_id,
                    window_id=self.window_id(change.window),
                    action=change.action,
                    ticket=change.ticket,
                    service=change.service,
                    waiting=change.waiting,
                ),
                "",
            )
            for index, change in enumerate(changes)
        ]
        kept = following.dumps(self._baseline_texts)
        try:
            await self._bus.publish_many(events, cursor=(self.cursor_key, kept))
        except StoreError as err:
            # the baseline stays: the next poll finds these changes again
            log.error("%s: %d queue events not stored: %s", self.device_id, len(events), err)
            return False
        return True


def _unchanged(before: Header, now: Header) -> bool:
    return (
        now.change_counter is not None
        and now.change_counter == before.change_counter
        and now.windows == before.windows
        and now.services == before.services
    )


class TcpQueueDevice:
    """A controller on Modbus TCP. Implements gateway.runner.PolledDevice."""

    def __init__(self, poller: QueuePoller, link: TcpLink, poll_interval_s: float) -> None:
        self.poll_interval_s = poll_interval_s
        self.poller = poller
        self.link = link

    async def connect(self) -> None:
        await self.link.connect()

    async def poll(self) -> None:
        await self.poller.poll(self.link.read)

    async def disconnect(self) -> None:
        self.link.close()


class RtuQueueMember:
    """A controller on Modbus RTU, one member of a serial bus. Implements BusMember."""

    def __init__(self, poller: QueuePoller, runner: DeviceRunner, unit: int) -> None:
        self.poller = poller
        self.runner = runner
        self.unit = unit
        self._requests: dict[Read, bytes] = {}

    async def poll(self, link: BusLink) -> None:
        async def read(request: Read, decode: Callable[[Sequence[int]], R], /) -> R:
            return await self.read(link, request, decode)

        await self.poller.poll(read)

    async def read(self, link: BusLink, request: Read, decode: Callable[[Sequence[int]], R]) -> R:
        frame = self._requests.get(request)
        if frame is None:
            frame = self._requests[request] = rtu.read_request(
                self.unit, request.address, request.count
            )

        def match(answer: rtu.RtuFrame) -> R | None:
            if answer.unit != self.unit:
                return None  # another unit's answer (a late one): not ours
            name = self.poller.device_id
            if answer.is_exception:
                raise BadResponse(f"{name}: exception response {answer.exception_code}")
            if answer.function_code != rtu.READ_HOLDING_REGISTERS:
                raise BadResponse(f"{name}: answer with function 0x{answer.function_code:02x}")
            if len(answer.registers) != request.count:
                raise BadResponse(
                    f"{name}: {len(answer.registers)} registers for a read of {request.count}"
                )
            try:
                return decode(answer.registers)
            except MapError as err:
                raise BadResponse(f"{name}: {err}") from err

        # the bus's answer time, plus the answer's own time on the wire: a read of 125
        # registers is 255 bytes, 266 ms at 9600 baud, longer than a pad's whole timeout
        on_wire = wire_time(rtu.answer_size(request.count), link.port.baudrate)
        return await link.exchange(
            frame,
            rtu.decode_answer,
            match,
            self.runner.count_request,
            timeout_s=link.timeout_s + on_wire,
        )


def mount(config: ModbusQueueConfig, context: DriverContext) -> Mounted:
    poller = QueuePoller(
        config,
        site=context.site,
        clock=context.clock,
        bus=context.bus,
        hub=context.hub,
        roster=context.roster,
    )

    async def restore() -> None:
        poller.restore(await context.store.cursor(poller.cursor_key))

    if config.transport == "tcp":
        assert config.host is not None  # the config demands it for tcp
        runner = context.runner(config.id, config.profile)
        link = TcpLink(
            config.host,
            config.port,
            config.unit,
            timeout_s=config.timeout_s,
            count=runner.count_request,
            name=config.id,
        )
        device = TcpQueueDevice(poller, link, config.poll_s)
        return Mounted(config.id, restore=restore, task=lambda: runner.run(device))
    runner = context.runner(config.id, config.profile, poll_interval_s=config.poll_s)
    member = RtuQueueMember(poller, runner, config.unit)
    if config.bus is not None:
        context.buses[config.bus].add(member)
        return Mounted(config.id, restore=restore)
    assert config.url is not None  # the config demands bus or url for rtu
    own = BusConfig(
        id=config.id,
        url=config.url,
        baudrate=config.baudrate,
        timeout_ms=round(config.timeout_s * 1000),
        retries=SERIAL_RETRIES,
    )
    serial_bus = SerialBus(own, context.metrics)
    serial_bus.add(member)
    return Mounted(config.id, restore=restore, task=serial_bus.run)
