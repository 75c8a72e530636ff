"""Self-service kiosks (`kiosk_http`, devices.md §5): a status agent the gateway polls over HTTP,
which may also push its status (`POST /ingest/kiosk/{device_id}` on the device listener).

Every status, polled or pushed, becomes the device's state. A peripheral whose state changed
(printer `ok` → `paper_out`) is a `kiosk` event, stored together with the kiosk's peripherals as
they now stand (one commit), so a restart neither repeats a change nor misses one that happened
while the gateway was down. The first status ever seen only sets that baseline: there is no
`from` to report, and the state shows any peripheral that is not ok.

`hours: service` kiosks are watched only in the hall's service hours (timetables and calendar).
Outside them the gateway does not poll; the kiosk is `offline` with reason `off_hours` (not an
outage: `expected_on` is false, so alerts stay quiet), and the next opening starts a fresh count
of failed polls. What such a kiosk pushes after hours is still recorded (state and events) but
does not make it `online`, since nobody watches whether it stays so.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import json
import logging
from typing import Any, Final, cast

import aiohttp
from aiohttp import hdrs, web

from drivers.kiosk_http.config import KioskConfig
from drivers.kiosk_http.status import (
    KioskPayloadError,
    KioskStatus,
    Peripheral,
    PeripheralState,
    parse_status,
)
from gateway import __version__
from gateway.clock import iso
from gateway.context import DriverContext, Mounted
from gateway.errors import BadResponse, DeviceError, DeviceIOError, DeviceTimeout, StoreError
from gateway.events import KioskEvent
from gateway.http import json_error
from gateway.ids import stable_id
from gateway.metrics import Metrics
from gateway.runner import DeviceRunner
from gateway.worktime import WorkCalendar

log = logging.getLogger(__name__)

# devices.md: a kiosk agent answers within 3 s
REQUEST_TIMEOUT_S: Final = 3.0
# a status is a few hundred bytes; a longer answer is not one, and is not read to the end
MAX_STATUS_BYTES: Final = 64 * 1024
STATUS_PATH: Final = "/api/v1/status"
INGEST_ROUTE: Final = "/ingest/kiosk/{device_id}"
# availability reason of a service-hours kiosk outside service hours: not watched, not an outage
OFF_HOURS: Final = "off_hours"
_KIND: Final = "kiosk"


class KioskDriver:
    """One kiosk. Implements gateway.runner.PolledDevice; pushes come through KioskIngest."""

    def __init__(self, config: KioskConfig, context: DriverContext, runner: DeviceRunner) -> None:
        self.config = config
        self.runner = runner
        self.poll_interval_s = config.poll_s
        self._context = context
        self._url = config.base_url.rstrip("/") + STATUS_PATH
        self._calendar = WorkCalendar(context.config)
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()  # a push and a poll take their turns
        self._baseline: dict[str, Peripheral] | None = None
        self._cursor_key = f"kiosk_http:{config.id}:peripherals"
        token = context.secrets.device_tokens.get(config.id)
        self._authorization = f"Bearer {token.value}".encode() if token is not None else None
        if config.hours == "service" and not self._calendar.timetable_names:
            log.warning(
                "%s: hours is service but the hall has no timetables: it is never watched",
                config.id,
            )

    @property
    def device_id(self) -> str:
        return self.config.id

    def expected_on(self, when: dt.datetime) -> bool:
        return self.config.hours == "always" or self._calendar.in_service_hours(when)

    async def restore(self) -> None:
        """The peripherals as they stood at the last stored status (after a restart)."""
        text = await self._context.store.cursor(self._cursor_key)
        if text is None:
            return
        try:
            data = json.loads(text)
            self._baseline = {
                name: Peripheral(cast(PeripheralState, state), raw)
                for name, (state, raw) in data.items()
            }
        except (ValueError, TypeError, AttributeError) as err:
            log.warning(
                "%s: stored peripherals unreadable (%s); starting afresh", self.device_id, err
            )

    async def run(self) -> None:
        """Poll until cancelled; a service-hours kiosk only while the hall is open."""
        if self.config.hours == "always":
            await self.runner.run(self)
            return
        watch: asyncio.Task[None] | None = None
        try:
            while True:
                if watch is not None and watch.done():
                    watch.result()  # a bug in the poll loop surfaces here, not silently
                if self.expected_on(self._context.clock.now()):
                    if watch is None:
                        self.runner = self._context.runner(self.device_id, self.config.profile)
                        watch = asyncio.create_task(
                            self.runner.run(self), name=f"kiosk-watch-{self.device_id}"
                        )
                else:
                    if watch is not None:
                        await _stop(watch)
                        watch = None
                        log.info("%s: service hours are over; not watched", self.device_id)
                    self._context.hub.mark(self.device_id, online=False, reason=OFF_HOURS)
                await asyncio.sleep(self.poll_interval_s)
        finally:
            if watch is not None:
                await _stop(watch)

    async def connect(self) -> None:
        self._session = aiohttp.ClientSession(
            headers={hdrs.USER_AGENT: f"hallgw/{__version__}", hdrs.ACCEPT: "application/json"}
        )

    async def disconnect(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def poll(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            status = await self._fetch()
        except DeviceError as err:
            self.runner.count_request(err.result, loop.time() - started)
            raise
        self.runner.count_request("ok", loop.time() - started)
        try:
            await self.take(status, via="poll")
        except StoreError as err:  # the kiosk answered; its changes are found again next poll
            log.error("%s: status not stored: %s", self.device_id, err)

    def authorized(self, header: str) -> bool:
        if self._authorization is None:
            return False
        return hmac.compare_digest(header.encode("utf-8", "replace"), self._authorization)

    async def pushed(self, status: KioskStatus) -> None:
        """A status the kiosk pushed: an exchange like a poll; raises StoreError."""
        await self.take(status, via="push")
        self.runner.count_request("ok")
        if self.expected_on(self._context.clock.now()):
            self.runner.contact()

    async def take(self, status: KioskStatus, *, via: str) -> None:
        """Make `status` the device's state, and store an event for each changed peripheral."""
        async with self._lock:
            now = self._context.clock.now()
            ts = self._hall_time(status.ts) if status.ts is not None else now
            self._context.hub.update_values(self.device_id, self._values(status, ts, via))
            if self._baseline is not None:
                current = dict(self._baseline)
                for name, new in status.peripherals.items():
                    old = current.get(name)
                    if old is None or old == new:
                        continue
                    current[name] = new
                    event = self._event(name, old, new, ts, now)
                    await self._context.bus.publish(
                        event, cursor=(self._cursor_key, _dump(current))
                    )
                    self._baseline = dict(current)
            latest = dict(status.peripherals)
            if latest != self._baseline:  # the first status, or peripherals added or gone
                await self._context.store.set_cursor(self._cursor_key, _dump(latest))
                self._baseline = latest

    async def _fetch(self) -> KioskStatus:
        session = self._session
        if session is None:
            raise DeviceIOError("not connected", reconnect=True)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S), session.get(self._url) as response:
                if response.status != 200:
                    raise BadResponse(f"GET {STATUS_PATH}: HTTP {response.status}")
                body = await response.content.read(MAX_STATUS_BYTES + 1)
        except TimeoutError as err:
            raise DeviceTimeout(f"no answer from {self._url} in {REQUEST_TIMEOUT_S:.0f} s") from err
        except (aiohttp.ClientError, OSError) as err:
            message = str(err) or type(err).__name__
            raise DeviceIOError(f"{self._url}: {message}", reconnect=False) from err
        if len(body) > MAX_STATUS_BYTES:
            raise BadResponse(f"status over {MAX_STATUS_BYTES} bytes")
        try:
            return parse_status(body)
        except KioskPayloadError as err:
            raise BadResponse(f"not a kiosk status: {err}") from err

    def _event(
        self, name: str, old: Peripheral, new: Peripheral, ts: dt.datetime, now: dt.datetime
    ) -> KioskEvent:
        event_id = stable_id(
            self._context.site,
            self.device_id,
            _KIND,
            name,
            old.state,
            old.raw,
            new.state,
            new.raw,
            iso(ts),
        )
        return KioskEvent(
            event_id=event_id,
            ts=ts,
            received_at=now,
            device_id=self.device_id,
            peripheral=name,
            from_=old.state,
            to=new.state,
            raw=new.raw,
        )

    def _hall_time(self, when: dt.datetime) -> dt.datetime:
        zone = self._context.clock.zone
        return when.replace(tzinfo=zone) if when.tzinfo is None else when.astimezone(zone)

    def _values(self, status: KioskStatus, ts: dt.datetime, via: str) -> dict[str, Any]:
        return {
            "state": status.state,
            "state_raw": status.state_raw,
            "peripherals": {name: p.state for name, p in status.peripherals.items()},
            "peripherals_raw": {
                name: p.raw for name, p in status.peripherals.items() if p.raw is not None
            },
            "kiosk_id": status.kiosk_id,
            "app_version": status.app_version,
            "uptime_s": status.uptime_s,
            "kiosk_ts": iso(ts),
            "hours": self.config.hours,
            "via": via,
        }


class KioskIngest:
    """`POST /ingest/kiosk/{device_id}` (http.md): one route for every kiosk of the hall."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._kiosks: dict[str, KioskDriver] = {}

    @classmethod
    def on(cls, app: web.Application, metrics: Metrics) -> KioskIngest:
        """The device listener's ingest route, added with the first kiosk."""
        existing = app.get(_INGEST)
        if existing is not None:
            return existing
        ingest = cls(metrics)
        app[_INGEST] = ingest
        app.router.add_post(INGEST_ROUTE, ingest.handle)
        return ingest

    def add(self, driver: KioskDriver) -> None:
        self._kiosks[driver.device_id] = driver

    async def handle(self, request: web.Request) -> web.StreamResponse:
        device_id = request.match_info["device_id"]
        driver = self._kiosks.get(device_id)
        if driver is None:
            self._metrics.device_requests.labels("unknown", _KIND, "unknown_device").inc()
            return json_error(404, f"no kiosk {device_id[:64]!r} in this hall's config")
        if not driver.authorized(request.headers.get(hdrs.AUTHORIZATION, "")):
            log.warning("%s: push refused: wrong or missing token (%s)", device_id, request.remote)
            response = json_error(401, "wrong or missing token")
            response.headers[hdrs.WWW_AUTHENTICATE] = "Bearer"
            return response
        body = await request.read()  # over 1 MiB: 413 from the listener
        try:
            status = parse_status(body)
        except KioskPayloadError as err:
            driver.runner.count_request("bad_response")
            log.info("%s: pushed body refused: %s", device_id, err)
            return json_error(400, f"not a kiosk status: {err}")
        try:
            await driver.pushed(status)
        except StoreError as err:
            log.error("%s: pushed status not stored: %s", device_id, err)
            return json_error(503, "the gateway cannot store it now; push again")
        return web.Response(status=204)


_INGEST: Final = web.AppKey("kiosk_ingest", KioskIngest)


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait for it, without swallowing a cancellation of the caller."""
    task.cancel()
    await asyncio.wait([task])


def _dump(peripherals: dict[str, Peripheral]) -> str:
    return json.dumps({name: [p.state, p.raw] for name, p in peripherals.items()})


def mount(config: KioskConfig, context: DriverContext) -> Mounted:
    driver = KioskDriver(config, context, context.runner(config.id, config.profile))
    KioskIngest.on(context.device_http, context.metrics).add(driver)
    return Mounted(
        config.id,
        restore=driver.restore,
        task=driver.run,
        expected_on=driver.expected_on if config.hours == "service" else None,
    )
