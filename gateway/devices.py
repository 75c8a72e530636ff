"""What the gateway knows of each configured device: availability, its reason, latest values."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from types import MappingProxyType
from typing import Any, Literal

from gateway.clock import Clock
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

DeviceKind = Literal["punch_clock", "queue", "rating_pad", "display", "kiosk"]
PROFILE_KINDS: Mapping[str, DeviceKind] = MappingProxyType(
    {
        "zk_push": "punch_clock",
        "modbus_queue": "queue",
        "ff68_pad": "rating_pad",
        "led_text": "display",
        "kiosk_http": "kiosk",
    }
)
NOT_SEEN = "not_seen"  # mqtt.md: every device is offline with this reason until it first answers


class Change(Enum):
    AVAILABILITY = "availability"
    VALUES = "values"


@dataclass(frozen=True)
class DeviceStatus:
    device_id: str
    kind: DeviceKind
    online: bool
    since: dt.datetime
    reason: str | None
    values: Mapping[str, Any] = field(default_factory=dict)
    values_ts: dt.datetime | None = None

    @property
    def state(self) -> Literal["online", "offline"]:
        return "online" if self.online else "offline"


Listener = Callable[[DeviceStatus, Change], None]


class DeviceHub:
    """The registry of device statuses. Listeners hear every change, synchronously."""

    def __init__(
        self, devices: Iterable[tuple[str, DeviceKind]], clock: Clock, metrics: Metrics
    ) -> None:
        self._clock = clock
        now = clock.now()
        self._statuses: dict[str, DeviceStatus] = {
            device_id: DeviceStatus(device_id, kind, online=False, since=now, reason=NOT_SEEN)
            for device_id, kind in devices
        }
        self._listeners: list[Listener] = []
        metrics.declare_devices((s.device_id, s.kind) for s in self._statuses.values())
        self._last_seen = {
            s.device_id: metrics.device_last_seen.labels(s.device_id, s.kind)
            for s in self._statuses.values()
        }
        self._up = {
            s.device_id: metrics.device_up.labels(s.device_id, s.kind)
            for s in self._statuses.values()
        }

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def get(self, device_id: str) -> DeviceStatus:
        return self._statuses[device_id]

    def statuses(self) -> list[DeviceStatus]:
        return list(self._statuses.values())

    def online_count(self) -> int:
        return sum(1 for s in self._statuses.values() if s.online)

    def mark(self, device_id: str, *, online: bool, reason: str | None = None) -> None:
        """Record availability; listeners hear only real changes (or a new offline reason)."""
        current = self._statuses[device_id]
        if online:
            # every good exchange comes here: the common case (still online) stays cheap
            self._last_seen[device_id].set(self._clock.timestamp())
            if current.online:
                return
        reason = None if online else (reason or "unknown")
        if current.online == online and current.reason == reason:
            return
        now = self._clock.now()
        since = current.since if current.online == online else now
        updated = replace(current, online=online, reason=reason, since=since)
        self._statuses[device_id] = updated
        self._up[device_id].set(1 if online else 0)
        if current.online != online:
            log.info(
                "device %s is %s%s", device_id, updated.state, f" ({reason})" if reason else ""
            )
        self._notify(updated, Change.AVAILABILITY)

    def update_values(self, device_id: str, values: Mapping[str, Any]) -> None:
        """Merge new readings into the device's state; listeners hear it if anything changed."""
        current = self._statuses[device_id]
        merged = {**current.values, **values}
        if merged == current.values:
            return
        updated = replace(current, values=merged, values_ts=self._clock.now())
        self._statuses[device_id] = updated
        self._notify(updated, Change.VALUES)

    def _notify(self, status: DeviceStatus, change: Change) -> None:
        for listener in self._listeners:
            listener(status, change)
