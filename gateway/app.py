"""The gateway: builds every part from the config and runs them as one task tree.

device ⇄ driver → EventBus → Store (journal + outbox) → MqttPublisher → broker
              ↘ DeviceHub (availability, values) ↗ retained state
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Final

from gateway.alertservice import AlertService
from gateway.bus import EventBus
from gateway.clock import Clock, SystemClock, iso
from gateway.commands import CommandRouter
from gateway.config import Config, Secrets
from gateway.context import Display, DriverContext, GatewayParts, Mounted, Service
from gateway.devices import PROFILE_KINDS, Change, DeviceHub, DeviceStatus
from gateway.displays import DisplayCommands
from gateway.errors import StoreError
from gateway.http import HttpServer, device_app, main_app
from gateway.ids import stable_id
from gateway.loop_errors import handle_loop_error
from gateway.metrics import Metrics
from gateway.mqtt import MqttPublisher
from gateway.presence_service import PresenceService
from gateway.registry import DRIVERS
from gateway.roster import Roster
from gateway.screens import Screens
from gateway.serialbus import SerialBus
from gateway.store import JournalEntry, Store
from gateway.topics import availability, device_state, event_messages

log = logging.getLogger(__name__)

# how often the store is written to when nothing else writes, to notice a full or lost disk
STORE_PROBE_S: Final = 10.0
# availability changes waiting to be journaled; a burst (a whole bus lost) fits many times
AVAILABILITY_QUEUE_MAX: Final = 10_000
# devices start once the broker has the start-up state (every device `not_seen`), so that
# consumers see it first; a broker that does not answer by then does not hold the devices back
FIRST_CONNECT_WAIT_S: Final = 5.0


class Gateway:
    def __init__(self, config: Config, secrets: Secrets, *, clock: Clock | None = None) -> None:
        self.config = config
        self.secrets = secrets
        self.clock = clock or SystemClock(config.zone)
        self.metrics = Metrics()
        self.started_monotonic = time.monotonic()
        self.started_at = self.clock.now()
        self.hub = DeviceHub(
            [(d.id, PROFILE_KINDS[d.profile]) for d in config.devices], self.clock, self.metrics
        )
        # what the hall's text screens show; engines push content, LED drivers subscribe
        self.screens = Screens(self.clock)
        self.displays: dict[str, Display] = {}
        self.mounted: dict[str, Mounted] = {}
        self.store: Store | None = None
        self.publisher: MqttPublisher | None = None
        self.services: list[Service] = []
        self._availability: asyncio.Queue[JournalEntry] = asyncio.Queue(AVAILABILITY_QUEUE_MAX)

    async def run(self, ready: Callable[[], None] | None = None) -> None:
        """Run until cancelled. `ready` is called once every listener is bound."""
        loop = asyncio.get_running_loop()
        previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(handle_loop_error)
        try:
            await self._run(ready)
        finally:
            loop.set_exception_handler(previous_handler)

    async def _run(self, ready: Callable[[], None] | None) -> None:
        config = self.config
        async with contextlib.AsyncExitStack() as stack:
            store = await stack.enter_async_context(
                Store(
                    config.store.path,
                    outbox_max_messages=config.store.outbox_max_messages,
                    on_outbox_dropped=self.metrics.outbox_dropped.labels("overflow").inc,
                )
            )
            self.store = store
            self.metrics.watch_outbox(lambda: store.outbox_depth)
            self.metrics.watch_store(lambda: store.healthy)
            bus = EventBus(store, event_messages, self.metrics)
            publisher = MqttPublisher(
                config,
                self.secrets,
                store,
                self.metrics,
                self.clock,
                health=self.health_payload,
                started_at=iso(self.started_at),
            )
            self.publisher = publisher
            self.hub.add_listener(self._on_device_change)
            for status in self.hub.statuses():
                self._on_device_change(status, Change.AVAILABILITY)

            buses = {b.id: SerialBus(b, self.metrics) for b in config.buses}
            self.metrics.declare_buses(buses)
            devices_http = device_app()
            context = DriverContext(
                site=config.site,
                config=config,
                secrets=self.secrets,
                clock=self.clock,
                bus=bus,
                hub=self.hub,
                store=store,
                roster=Roster(config),
                metrics=self.metrics,
                buses=buses,
                device_http=devices_http,
                screens=self.screens,
            )
            for device in config.devices:
                mounted = DRIVERS[device.profile](device, context)
                self.mounted[device.id] = mounted
                if mounted.display is not None:
                    self.displays[device.id] = mounted.display
                if mounted.close is not None:
                    stack.push_async_callback(mounted.close)
            for mounted in self.mounted.values():
                if mounted.restore is not None:
                    await mounted.restore()

            commands = CommandRouter(store, self.metrics, self.clock)
            commands.register(
                "display", DisplayCommands(self.hub, self.displays).handle, with_subject=True
            )
            stack.push_async_callback(commands.close)
            main = main_app(config, self.hub, self.metrics, self.health_problem)
            parts = GatewayParts(context, publisher, commands, self.mounted, self.started_at)
            self.services = build_services(parts)
            for service in self.services:
                service.install_routes(main)
                await service.restore()
            publisher.on_commands(commands.topic_filters(), commands.receive)

            await stack.enter_async_context(HttpServer(config, main, devices_http))
            async with asyncio.TaskGroup() as group:
                group.create_task(publisher.run(), name="mqtt")
                for service in self.services:
                    group.create_task(service.run(), name=f"service-{service.name}")
                group.create_task(self._journal_availability(store), name="availability-journal")
                group.create_task(self._probe_store(store), name="store-probe")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(FIRST_CONNECT_WAIT_S):
                        await publisher.first_attempt.wait()
                for bus_id, serial_bus in buses.items():
                    group.create_task(serial_bus.run(), name=f"bus-{bus_id}")
                for device_id, mounted in self.mounted.items():
                    if mounted.task is not None:
                        group.create_task(mounted.task(), name=f"device-{device_id}")
                log.info(
                    "gateway %s running: %d devices, %d buses",
                    config.site,
                    len(config.devices),
                    len(buses),
                )
                if ready is not None:
                    ready()

    def health_problem(self) -> str | None:
        """Why the gateway is unhealthy (store not writable), or None (http.md /healthz)."""
        if self.store is None:
            return "starting"
        if not self.store.healthy:
            return f"store not writable: {self.store.last_error}"
        return None

    def health_payload(self) -> dict[str, Any]:
        return {
            "v": 1,
            "uptime_s": int(time.monotonic() - self.started_monotonic),
            "rss_bytes": _rss_bytes(),
            "outbox_depth": self.store.outbox_depth if self.store else 0,
            "devices_online": self.hub.online_count(),
            "devices_total": len(self.hub.statuses()),
        }

    def _on_device_change(self, status: DeviceStatus, change: Change) -> None:
        assert self.publisher is not None
        topic, payload = availability(status)
        self.publisher.set_retained(topic, payload)
        state = device_state(status)
        if state is not None:
            self.publisher.set_retained(*state)
        if change is Change.AVAILABILITY:
            entry = JournalEntry(
                event_id=stable_id(
                    self.config.site,
                    status.device_id,
                    status.state,
                    status.since.isoformat(),
                    status.reason,
                ),
                kind="availability",
                subject=status.device_id,
                device_id=status.device_id,
                ts=iso(status.since),
                ts_epoch=status.since.timestamp(),
                received_at=iso(self.clock.now()),
                payload=payload.decode("utf-8"),
                published=False,
            )
            try:
                self._availability.put_nowait(entry)
            except asyncio.QueueFull:
                self.metrics.sink_dropped.labels("availability_journal").inc()

    async def _journal_availability(self, store: Store) -> None:
        while True:
            entry = await self._availability.get()
            try:
                await store.record(entry)
            except StoreError as err:
                log.warning("availability of %s not journaled: %s", entry.subject, err)

    async def _probe_store(self, store: Store) -> None:
        while True:
            with contextlib.suppress(StoreError):
                await store.probe()
            await asyncio.sleep(STORE_PROBE_S)


def build_services(parts: GatewayParts) -> list[Service]:
    """The gateway-level services, in the order they restore and run."""
    return [PresenceService(parts), AlertService(parts)]


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:  # noqa: PTH123
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
