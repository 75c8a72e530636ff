"""What a driver is given when it is mounted: hall time, where facts go, device state, the
roster, the serial buses, the device listener and what the hall's screens should show."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from gateway.bus import EventBus
from gateway.clock import Clock
from gateway.commands import CommandRouter
from gateway.config import Config, Secrets
from gateway.devices import PROFILE_KINDS, DeviceHub
from gateway.metrics import Metrics
from gateway.mqtt import MqttPublisher
from gateway.roster import Roster
from gateway.runner import DeviceRunner
from gateway.screens import Screens
from gateway.serialbus import SerialBus
from gateway.store import Store


class Display(Protocol):
    """A device that can show a text message for a while (`cmd/display/{device_id}`)."""

    async def show_message(self, text: str, seconds: float) -> None:
        """Show `text` for `seconds`, then what was shown before; raise DeviceError on failure."""


@dataclass(frozen=True)
class DriverContext:
    site: str
    config: Config
    secrets: Secrets
    clock: Clock
    bus: EventBus
    hub: DeviceHub
    store: Store
    roster: Roster
    metrics: Metrics
    buses: Mapping[str, SerialBus]
    device_http: web.Application
    screens: Screens

    def runner(self, device_id: str, profile: str, **options: Any) -> DeviceRunner:
        return DeviceRunner(device_id, PROFILE_KINDS[profile], self.hub, self.metrics, **options)


@dataclass
class Mounted:
    """A driver mounted in the gateway: what to run, restore and close, and what it offers."""

    device_id: str
    restore: Callable[[], Awaitable[None]] | None = None
    task: Callable[[], Coroutine[Any, Any, None]] | None = None
    close: Callable[[], Awaitable[None]] | None = None
    display: Display | None = None
    # when the device is supposed to be on (None: always); a kiosk watched only in service
    # hours is not an outage at night, and alerts ask this before firing
    expected_on: Callable[[dt.datetime], bool] | None = None
    # takes a new roster and rules (SIGHUP) for what the driver copied from the config at mount
    # (the Roster itself is updated in place); the config is already validated
    reload: Callable[[Config], None] | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GatewayParts:
    """What a gateway-level service (presence, alerts) is built from."""

    context: DriverContext
    publisher: MqttPublisher
    commands: CommandRouter
    mounted: Mapping[str, Mounted]
    started_at: dt.datetime


class Service(Protocol):
    """A part of the gateway beside the drivers: presence, alerts. Built once the drivers are
    mounted; every hook is optional (`ServiceBase` gives the defaults)."""

    name: str

    def install_routes(self, main: web.Application) -> None:
        """Add this service's endpoints to the main listener."""

    async def restore(self) -> None:
        """Rebuild state from the store, before anything runs."""

    async def run(self) -> None:
        """Run until cancelled."""

    def reload(self, config: Config) -> None:
        """Take a new roster and rules (SIGHUP); `config` is already validated."""


class ServiceBase:
    name = "service"

    def install_routes(self, main: web.Application) -> None:
        return

    async def restore(self) -> None:
        return

    async def run(self) -> None:
        return

    def reload(self, config: Config) -> None:
        return
