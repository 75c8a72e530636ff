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
from gateway.config import Config, ConfigError, Secrets, load_config, resolve_secrets
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
from gateway.sdnotify import SystemdNotifier
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
# systemd's watchdog is fed twice per WatchdogSec (sd_watchdog_enabled(3)): one late feed is
# not yet a kill
WATCHDOG_FEEDS_PER_INTERVAL: Final = 2
# what a reload (SIGHUP) may change: the roster and the rules. Anything else (devices, buses,
# the broker, the listeners, the store, timetables and calendar that drivers copied at start)
# needs a restart; a reload that changes it is refused as a whole, never half-applied
RELOADABLE: Final = frozenset({"staff", "windows", "rules", "board", "leave", "alerts"})


class Gateway:
    def __init__(
        self,
        config: Config,
        secrets: Secrets,
        *,
        clock: Clock | None = None,
        config_path: str | None = None,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.config = config
        self.secrets = secrets
        self.clock = clock or SystemClock(config.zone)
        # where SIGHUP reloads the config from (None: a reload is refused)
        self.config_path = config_path
        self.notifier = notifier or SystemdNotifier()
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
        self.roster = Roster(config)
        self._availability: asyncio.Queue[JournalEntry] = asyncio.Queue(AVAILABILITY_QUEUE_MAX)
        self._reload_requested = asyncio.Event()

    async def run(self, ready: Callable[[], None] | None = None) -> None:
        """Run until cancelled. `ready` is called once every listener is bound."""
        loop = asyncio.get_running_loop()
        previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(handle_loop_error)
        try:
            await self._run(ready)
        finally:
            self.notifier.notify("STOPPING=1")
            self.notifier.close()
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
                roster=self.roster,
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
                self._start_housekeeping(group, store)
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
                self.notifier.notify("READY=1", f"STATUS={self._status()}")
                if ready is not None:
                    ready()

    def _start_housekeeping(self, group: asyncio.TaskGroup, store: Store) -> None:
        group.create_task(self._journal_availability(store), name="availability-journal")
        group.create_task(self._probe_store(store), name="store-probe")
        if self.notifier.watchdog_s is not None:
            group.create_task(self._feed_watchdog(self.notifier.watchdog_s), name="watchdog")
        group.create_task(self._reload_on_request(), name="config-reload")

    def request_reload(self) -> None:
        """SIGHUP: reload the config file (the roster and the rules) as soon as possible."""
        self._reload_requested.set()

    async def reload_from(self, path: str) -> bool:
        """Read, validate and apply `path`; a bad config is refused whole, and logged with every
        field path, and the running config stays. True if applied."""
        try:
            config = await asyncio.to_thread(load_config, path)
        except ConfigError as err:
            return self._refuse(err.errors)
        secrets, missing = await asyncio.to_thread(resolve_secrets, config)
        if missing:
            return self._refuse(missing)
        return self.reload(config, secrets)

    def reload(self, config: Config, secrets: Secrets) -> bool:
        """Apply a validated config's roster and rules without stopping anything: the roster
        in place (drivers hold it), then drivers and services. Refused if it changes what only a
        restart can (`RELOADABLE`). True if applied."""
        changed = [
            f"{name}: changed; restart hallgw to apply it"
            for name in type(config).model_fields
            if name not in RELOADABLE and getattr(config, name) != getattr(self.config, name)
        ]
        changed += [
            f"{name}: changed; restart hallgw to apply it"
            for name, old, new in (
                ("mqtt.password", self.secrets.mqtt_password, secrets.mqtt_password),
                ("http.token", self.secrets.api_token, secrets.api_token),
                ("devices: a token", self.secrets.device_tokens, secrets.device_tokens),
            )
            if old != new
        ]
        if changed:
            return self._refuse(changed)
        self.config = config
        self.secrets = secrets
        self.roster.update(config)
        for mounted in self.mounted.values():
            if mounted.reload is not None:
                mounted.reload(config)
        for service in self.services:
            service.reload(config)
        self.metrics.config_reloads.labels("ok").inc()
        log.info(
            "config reloaded: %d staff, %d windows; devices kept their connections",
            len(config.staff),
            len(config.windows),
        )
        return True

    def _refuse(self, errors: list[str]) -> bool:
        self.metrics.config_reloads.labels("refused").inc()
        for line in errors:
            log.error("config reload refused (the running config is kept): %s", line)
        return False

    async def _reload_on_request(self) -> None:
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            if self.config_path is None:
                log.warning("reload requested, but the gateway was not started from a file")
                continue
            self.notifier.notify("RELOADING=1")
            await self.reload_from(self.config_path)
            self.notifier.notify("READY=1", f"STATUS={self._status()}")

    async def _feed_watchdog(self, watchdog_s: float) -> None:
        """systemd restarts the gateway if this stops: it runs on the loop (a stuck loop stops
        it) and feeds only while the store commits."""
        while True:
            problem = self.health_problem()
            if problem is None:
                self.notifier.notify("WATCHDOG=1")
            else:
                self.notifier.status(f"unhealthy: {problem}")
            await asyncio.sleep(watchdog_s / WATCHDOG_FEEDS_PER_INTERVAL)

    def _status(self) -> str:
        return (
            f"{self.config.site}: {self.hub.online_count()}/{len(self.hub.statuses())} "
            "devices online"
        )

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
    presence = PresenceService(parts)
    alerts = AlertService(parts)
    alerts.follow(presence)  # alerts restore after presence: they listen to its new engine
    return [presence, alerts]


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:  # noqa: PTH123
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
