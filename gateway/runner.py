"""One runner per device: its link state, its backoff, its availability and the reasons for it.

A device on a shared serial bus is driven by the bus's scheduler, which asks the runner whether
the device is due and tells it how each poll went. A device with a link of its own (Modbus TCP, an
LED controller on TCP, a kiosk agent) is driven by `DeviceRunner.run`, which connects, polls at the
device's interval and backs off when the link fails.
"""

from __future__ import annotations

import asyncio
import logging
import random
from enum import Enum
from typing import Final, Protocol

from prometheus_client import Counter

from gateway.devices import DeviceHub, DeviceKind
from gateway.errors import DeviceError, RequestResult
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

# devices.md: every profile is offline after 3 failed polls in a row
FAILURES_BEFORE_OFFLINE: Final = 3
# devices.md: an offline pad is polled only every 5 s, so it cannot slow its bus
OFFLINE_POLL_S: Final = 5.0
# reconnecting a link: start fast (a blip), back off to a minute (a device switched off)
BACKOFF_INITIAL_S: Final = 1.0
BACKOFF_MAX_S: Final = 60.0
# spread reconnects so that devices that failed together do not retry in lockstep
BACKOFF_JITTER: Final = 0.1

# availability reasons (mqtt.md) for each failed request result
_REASONS: Final[dict[RequestResult, str]] = {
    "timeout": "timeout",
    "io_error": "io_error",
    "bad_frame": "crc_errors",
    "bad_response": "bad_response",
    "unknown_device": "refused",
}


class LinkState(Enum):
    NOT_SEEN = "not_seen"  # configured, never answered since start-up
    ONLINE = "online"
    FAILING = "failing"  # was online; its last polls failed, fewer than the limit
    OFFLINE = "offline"


class Backoff:
    """Capped exponential backoff with jitter; `reset()` after a success."""

    def __init__(
        self,
        initial: float = BACKOFF_INITIAL_S,
        maximum: float = BACKOFF_MAX_S,
        jitter: float = BACKOFF_JITTER,
    ) -> None:
        self._initial = initial
        self._maximum = maximum
        self._jitter = jitter
        self._next = initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self._maximum)
        return delay * (1 + random.uniform(-self._jitter, self._jitter))  # noqa: S311

    def reset(self) -> None:
        self._next = self._initial


class PolledDevice(Protocol):
    """A driver with a link of its own, for `DeviceRunner.run`."""

    poll_interval_s: float

    async def connect(self) -> None:
        """Open the link; raise DeviceError when it cannot be opened."""

    async def poll(self) -> None:
        """One poll; raise DeviceError on failure (with `reconnect=True` if the link is lost)."""

    async def disconnect(self) -> None:
        """Close the link; never raises."""


class DeviceRunner:
    def __init__(
        self,
        device_id: str,
        kind: DeviceKind,
        hub: DeviceHub,
        metrics: Metrics,
        *,
        failures_before_offline: int = FAILURES_BEFORE_OFFLINE,
        offline_poll_s: float = OFFLINE_POLL_S,
        poll_interval_s: float | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.device_id = device_id
        self.kind = kind
        self.state = LinkState.NOT_SEEN
        self._hub = hub
        self._metrics = metrics
        self._failures_before_offline = failures_before_offline
        self._offline_poll_s = offline_poll_s
        # on a shared bus: poll only this often (an LED status every 10 s), not every sweep
        self._poll_interval_s = poll_interval_s
        self._backoff = backoff or Backoff()
        self._failures = 0
        self._last_attempt: float | None = None
        self._last_contact: float | None = None
        self._contact = asyncio.Event()
        # labels() takes a lock and builds a key on every call: look each child up once
        self._requests: dict[RequestResult, Counter] = {}
        self._request_duration = metrics.device_request_duration.labels(kind)

    @property
    def online(self) -> bool:
        return self.state in (LinkState.ONLINE, LinkState.FAILING)

    def count_request(self, result: RequestResult, duration_s: float | None = None) -> None:
        """One exchange (a request and its answer, or its failure), for the metrics."""
        counter = self._requests.get(result)
        if counter is None:
            counter = self._requests[result] = self._metrics.device_requests.labels(
                self.device_id, self.kind, result
            )
        counter.inc()
        if duration_s is not None:
            self._request_duration.observe(duration_s)

    def poll_ok(self) -> None:
        self._failures = 0
        self._backoff.reset()
        self.state = LinkState.ONLINE
        self._hub.mark(self.device_id, online=True)  # also refreshes last-seen

    def poll_failed(self, result: RequestResult, detail: str = "") -> None:
        self._failures += 1
        log.debug("%s: poll failed (%s) %s", self.device_id, result, detail)
        if self._failures >= self._failures_before_offline:
            if self.state is not LinkState.OFFLINE:
                log.warning(
                    "%s: %d failed polls in a row (%s)%s",
                    self.device_id,
                    self._failures,
                    result,
                    f": {detail}" if detail else "",
                )
            self.state = LinkState.OFFLINE
            self._hub.mark(self.device_id, online=False, reason=_REASONS.get(result, result))
        elif self.state is LinkState.ONLINE:
            self.state = LinkState.FAILING

    def contact(self) -> None:
        """A device that calls in (a punch clock, a pushing kiosk) was heard from just now."""
        self._last_contact = asyncio.get_running_loop().time()
        self._contact.set()
        self.poll_ok()

    async def expect_contact_every(self, silence_s: float) -> None:
        """Mark the device offline (reason `timeout`) whenever `silence_s` pass without contact.

        Runs until cancelled; from start-up the device stays `not_seen` until its first contact.
        """
        loop = asyncio.get_running_loop()
        while True:
            if self._last_contact is None:
                await self._contact.wait()
            assert self._last_contact is not None
            remaining = self._last_contact + silence_s - loop.time()
            if remaining > 0:
                await asyncio.sleep(remaining)
                continue
            self._failures = self._failures_before_offline
            if self.state is not LinkState.OFFLINE:
                log.warning("%s: nothing heard for %.0f s", self.device_id, silence_s)
                self.state = LinkState.OFFLINE
                self._hub.mark(self.device_id, online=False, reason="timeout")
            self._contact.clear()
            await self._contact.wait()

    @property
    def has_own_interval(self) -> bool:
        """Polled at an interval of its own, not at its bus's sweep cadence."""
        return self._poll_interval_s is not None

    def due(self, now: float) -> bool:
        """For a bus scheduler: poll this device in the sweep starting at loop time `now`?"""
        interval = self._interval()
        if interval is None or self._last_attempt is None:
            return True
        return now - self._last_attempt >= interval

    def attempted(self, now: float) -> None:
        self._last_attempt = now

    def next_due(self) -> float | None:
        """Loop time at which the device is next due (None: due in every sweep)."""
        interval = self._interval()
        if interval is None or self._last_attempt is None:
            return None
        return self._last_attempt + interval

    def _interval(self) -> float | None:
        """Least time between two polls on a bus; None: every sweep."""
        if self.state is LinkState.OFFLINE:
            return max(self._offline_poll_s, self._poll_interval_s or 0.0)
        return self._poll_interval_s

    async def run(self, device: PolledDevice) -> None:
        """Drive a device with its own link until cancelled."""
        while True:
            try:
                await device.connect()
            except DeviceError as err:
                self.poll_failed(err.result, str(err))
                await asyncio.sleep(self._backoff.next())
                continue
            try:
                await self._poll_until_link_lost(device)
            finally:
                await device.disconnect()
            await asyncio.sleep(self._backoff.next())

    async def _poll_until_link_lost(self, device: PolledDevice) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await device.poll()
            except DeviceError as err:
                self.poll_failed(err.result, str(err))
                if err.reconnect:
                    return
            else:
                self.poll_ok()
            await asyncio.sleep(max(0.0, started + device.poll_interval_s - loop.time()))
