"""LED strips and window screens (`led_text`, devices.md §4), over TCP or on a serial bus.

What a screen shows is decided in one place, the presenter task: a `cmd/display` message while it
lasts; else nothing while the power schedule has the screen off; else the best content that the
content API (gateway.screens) holds for the screen; else a blank screen. The presenter sends only
what differs from what the controller last accepted, turns the pages of a long text every
`page_seconds`, and sends everything again when the link comes back (a controller that rebooted
has forgotten it). Status is polled every `status_poll_s`: power, brightness, temperature and
fault bits are the device's state; after 3 failed polls the screen is offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

from drivers.led_text import codec
from drivers.led_text.codec import Answer, Color, Command, Effect, Frame, LedPayloadError, LedStatus
from drivers.led_text.config import LedTextConfig
from drivers.led_text.tcp import ANSWER_TIMEOUT_S, TcpLink
from drivers.led_text.text import join_lines, paginate, to_gbk
from gateway.codec import Decoder
from gateway.config import BusConfig
from gateway.context import DriverContext, Mounted
from gateway.errors import BadFrame, BadResponse, DeviceError, DeviceIOError, DeviceTimeout
from gateway.runner import DeviceRunner
from gateway.serialbus import AttemptCounter, BusLink, SerialBus
from gateway.worktime import WorkCalendar

log = logging.getLogger(__name__)

T = TypeVar("T")
F = TypeVar("F")

# a screen that refused or missed what it should show is sent it again this soon; slow enough
# that a sick controller on a shared bus does not crowd out the other devices
APPLY_RETRY_S: Final = 5.0
# hall-time deadlines (content expiry, the power schedule) are read again at least this often, so
# a step of the clock (NTP, a test's fake clock) is noticed within a second
CLOCK_RECHECK_S: Final = 1.0
# a display command is answered as failed if the screen has not taken it by then
MESSAGE_TIMEOUT_S: Final = 10.0
# the `source` a display command's message shows under in the device state
MESSAGE_SOURCE: Final = "display_command"
# a screen's own serial port (`url:`) is a bus of one; its answers take up to 1 s (devices.md)
OWN_PORT_TIMEOUT_MS: Final = int(ANSWER_TIMEOUT_S * 1000)
OWN_PORT_RETRIES: Final = 1

_COLORS: Final = {"red": Color.RED, "green": Color.GREEN, "yellow": Color.YELLOW}
_EFFECTS: Final = {"static": Effect.STATIC, "scroll": Effect.SCROLL, "flash": Effect.FLASH}


class Exchanger(Protocol):
    """A link that pairs a request with its answer: a serial BusLink or a TcpLink."""

    async def exchange(
        self,
        request: bytes,
        decode: Decoder[F],
        match: Callable[[F], T | None],
        count: AttemptCounter,
        *,
        retries: int | None = None,
        timeout_s: float | None = None,
    ) -> T: ...


Operation = Callable[[Exchanger], Awaitable[T]]


@dataclass(eq=False)
class _Message:
    text: str
    until: float  # loop time
    applied: asyncio.Future[None]


@dataclass(frozen=True)
class _Target:
    power: bool | None  # None: power is not the gateway's business
    text: str | None  # None: a blank screen
    source: str | None
    message: _Message | None = None


@dataclass
class _Sent:
    """What the controller accepted since the link (re)started; None/False: not known."""

    power: bool | None = None
    page_known: bool = False
    page: bytes | None = None
    brightness: bool = False


@dataclass
class _Pages:
    text: str | None = None
    readable: str | None = None  # `text` as the screen shows it (what GBK cannot encode as ?)
    source: str | None = None
    pages: list[bytes] = field(default_factory=list)
    index: int = 0
    since: float = 0.0

    @property
    def current(self) -> bytes | None:
        return self.pages[self.index] if self.pages else None


class LedDriver:
    """One screen. Subclasses say how operations reach it (a TCP link, a serial bus)."""

    def __init__(self, config: LedTextConfig, context: DriverContext, runner: DeviceRunner) -> None:
        self.config = config
        self.runner = runner
        self._context = context
        self._calendar = WorkCalendar(context.config)
        self._wake = asyncio.Event()
        self._message: _Message | None = None
        self._shown: _Pages | None = None
        self._sent = _Sent()
        self._wrote = False  # has the gateway ever sent this screen text since start-up?
        self._page_bytes = min(config.max_bytes, codec.MAX_SHOW_TEXT)
        context.screens.register(config.id, self._wake.set)
        if config.power_schedule == "service" and not self._calendar.timetable_names:
            log.warning(
                "%s: power_schedule is service but the hall has no timetables: it stays off",
                config.id,
            )

    @property
    def device_id(self) -> str:
        return self.config.id

    async def run(self) -> None:
        """The presenter, until cancelled (subclasses add their link)."""
        await self.present()

    async def show_message(self, text: str, seconds: float) -> None:
        """Show `text` for `seconds` (paged if long), then what the screen showed before."""
        if not self._can_send():
            raise DeviceIOError("the screen is offline", reconnect=False)
        loop = asyncio.get_running_loop()
        message = _Message(text, loop.time() + seconds, loop.create_future())
        previous, self._message = self._message, message
        if previous is not None and not previous.applied.done():
            previous.applied.set_exception(DeviceError("replaced by a newer message"))
        self._wake.set()
        try:
            async with asyncio.timeout(MESSAGE_TIMEOUT_S):
                await message.applied
        except TimeoutError as err:
            self._take_back(message)
            raise DeviceTimeout(
                f"the message was not shown within {MESSAGE_TIMEOUT_S:.0f} s"
            ) from err
        except BaseException:
            self._take_back(message)
            raise

    async def present(self) -> None:
        """Keep the screen showing what it should, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            target = self._target(loop.time())
            self._turn_pages(target, loop.time())
            try:
                if self._needs_sending(target):
                    if not self._can_send():
                        raise DeviceIOError("the screen is offline", reconnect=False)
                    await self._submit(functools.partial(self._apply, target=target))
            except DeviceError as err:
                self._settle(target.message, err)
                log.debug("%s: not shown yet: %s", self.device_id, err)
                timeout = APPLY_RETRY_S
            else:
                self._settle(target.message, None)
                self._report_shown(target)
                timeout = self._next_deadline(target, loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    def link_restarted(self) -> None:
        """The controller may have forgotten everything: send it all again."""
        self._sent = _Sent()
        self._wake.set()

    async def refresh_status(self, link: Exchanger) -> None:
        def match(frame: Frame) -> LedStatus | None:
            answer = self._answer_of(frame, Command.STATUS)
            if answer is None:
                return None
            try:
                return codec.parse_status(answer.data)
            except LedPayloadError as err:
                raise BadResponse(str(err)) from err

        status = await link.exchange(
            codec.encode(codec.status_request(self.config.address)),
            codec.decode,
            match,
            self.runner.count_request,
            timeout_s=ANSWER_TIMEOUT_S,
        )
        if self._sent.power is not None and status.power != self._sent.power:
            log.info("%s: power is %s, not as sent; sending again", self.device_id, status.power)
            self._sent.power = None
            self._wake.set()
        self._context.hub.update_values(self.device_id, self._status_values(status))

    # how operations reach the screen -------------------------------------------------------

    async def _submit(self, operation: Operation[T]) -> T:
        raise NotImplementedError

    def _can_send(self) -> bool:
        raise NotImplementedError

    # what the screen should show -----------------------------------------------------------

    def _target(self, now: float) -> _Target:
        message = self._message
        if message is not None and now >= message.until:
            self._message = message = None
        scheduled = self._scheduled_power(self._context.clock.now())
        if message is not None:
            return _Target(
                power=None if scheduled is None else True,
                text=message.text,
                source=MESSAGE_SOURCE,
                message=message,
            )
        if scheduled is False:
            return _Target(power=False, text=None, source=None)
        content = self._context.screens.current(self.device_id)
        if content is None:
            return _Target(power=scheduled, text=None, source=None)
        return _Target(
            power=scheduled, text=join_lines(content.lines) or None, source=content.source
        )

    def _scheduled_power(self, now: dt.datetime) -> bool | None:
        if self.config.power_schedule == "none":
            return None
        hours = self._calendar.service_hours(now.astimezone(self._calendar.zone).date())
        if hours is None:
            return False
        on = hours.start - dt.timedelta(minutes=self.config.power_on_before_min)
        off = hours.end + dt.timedelta(minutes=self.config.power_off_after_min)
        return on <= now < off

    def _turn_pages(self, target: _Target, now: float) -> None:
        shown = self._shown
        if shown is None or shown.text != target.text or shown.source != target.source:
            pages: list[bytes] = []
            text: str | None = None
            if target.text is not None:
                gbk = to_gbk(target.text)
                if gbk.replaced:
                    log.warning(
                        "%s: %d character(s) GBK cannot encode are shown as '?'",
                        self.device_id,
                        gbk.replaced,
                    )
                pages = paginate(gbk, self._page_bytes)
                text = gbk.text
            self._shown = _Pages(target.text, text, target.source, pages, 0, now)
        elif (
            len(shown.pages) > 1
            and target.power is not False
            and now >= shown.since + self.config.page_seconds
        ):
            shown.index = (shown.index + 1) % len(shown.pages)
            shown.since = now

    def _report_shown(self, target: _Target) -> None:
        """What the screen shows, as device state, once the controller has taken it."""
        shown = self._shown
        blank = target.power is False or shown is None or shown.readable is None
        self._context.hub.update_values(
            self.device_id,
            {
                "text": None if blank or shown is None else shown.readable,
                "source": None if blank else target.source,
                "pages": 0 if blank or shown is None else len(shown.pages),
            },
        )

    def _needs_sending(self, target: _Target) -> bool:
        return (
            (self.config.brightness is not None and not self._sent.brightness)
            or (target.power is not None and target.power != self._sent.power)
            or (target.power is not False and self._text_due())
        )

    def _text_due(self) -> bool:
        """Does the page to show differ from what the controller holds? A screen the gateway
        never wrote to keeps its own program until there is something to show."""
        sent = self._sent
        page = self._shown.current if self._shown is not None else None
        if sent.page_known:
            return sent.page != page
        return page is not None or self._wrote

    def _next_deadline(self, target: _Target, now: float) -> float:
        deadlines = [now + CLOCK_RECHECK_S]
        if target.message is not None:
            deadlines.append(target.message.until)
        shown = self._shown
        if shown is not None and len(shown.pages) > 1 and target.power is not False:
            deadlines.append(shown.since + self.config.page_seconds)
        return max(0.0, min(deadlines) - now)

    def _settle(self, message: _Message | None, error: DeviceError | None) -> None:
        if message is None or message.applied.done():
            return
        if error is None:
            message.applied.set_result(None)
        else:
            message.applied.set_exception(error)

    def _take_back(self, message: _Message) -> None:
        """A message that could not be shown leaves the screen as it was."""
        if self._message is message:
            self._message = None
            self._wake.set()

    # exchanges -------------------------------------------------------------------------------

    async def _apply(self, link: Exchanger, target: _Target) -> None:
        sent = self._sent
        if self.config.brightness is not None and not sent.brightness:
            await self._command(link, codec.brightness(self.config.address, self.config.brightness))
            sent.brightness = True
        if target.power is not None and target.power != sent.power:
            await self._command(link, codec.power(self.config.address, on=target.power))
            sent.power = target.power
        if target.power is False:
            return
        if not self._text_due():
            return
        page = self._shown.current if self._shown is not None else None
        if page is None:
            frame = codec.clear(self.config.address, self.config.area)
        else:
            frame = codec.show(
                self.config.address,
                page,
                area=self.config.area,
                color=_COLORS[self.config.color],
                effect=_EFFECTS[self.config.effect],
            )
        sent.page_known = False  # until the controller says it took it
        self._wrote = True
        await self._command(link, frame)
        sent.page_known, sent.page = True, page

    async def _command(self, link: Exchanger, frame: Frame) -> None:
        def match(answer_frame: Frame) -> Answer | None:
            return self._answer_of(answer_frame, frame.command)

        await link.exchange(
            codec.encode(frame),
            codec.decode,
            match,
            self.runner.count_request,
            timeout_s=ANSWER_TIMEOUT_S,
        )

    def _answer_of(self, frame: Frame, command: int) -> Answer | None:
        """The controller's answer to `command`, raised as an error unless it is ok."""
        if not codec.is_answer_to(frame, self.config.address, command):
            return None
        try:
            answer = codec.parse_answer(frame)
        except LedPayloadError as err:
            raise BadResponse(str(err)) from err
        name = _command_name(command)
        if answer.result == codec.Result.BAD_CRC:
            raise BadFrame(f"the controller got {name} with a bad CRC")
        if not answer.ok:
            raise BadResponse(f"{name} refused: {answer.describe()}")
        return answer

    def _status_values(self, status: LedStatus) -> dict[str, Any]:
        over = (
            bool(status.fault_bits >> codec.OVER_TEMPERATURE_BIT & 1)
            or status.temperature_c >= self.config.max_temperature_c
        )
        return {
            "power_on": status.power,
            "brightness": status.brightness,
            "temperature_c": status.temperature_c,
            "fault_bits": status.fault_bits,
            "faults": list(status.faults),
            "over_temperature": over,
        }


class TcpLedDriver(LedDriver):
    """A screen with a TCP link of its own, driven by DeviceRunner.run (a PolledDevice)."""

    def __init__(
        self, config: LedTextConfig, context: DriverContext, runner: DeviceRunner, link: TcpLink
    ) -> None:
        super().__init__(config, context, runner)
        self.poll_interval_s = config.status_poll_s
        self._link = link
        self._lock = asyncio.Lock()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.present(), name=f"led-present-{self.device_id}")
            group.create_task(self.runner.run(self), name=f"led-link-{self.device_id}")

    async def connect(self) -> None:
        async with self._lock:
            try:
                await self._link.open()
            except DeviceError as err:
                self.runner.count_request(err.result)  # a refused connection is a failed exchange
                raise
        self.link_restarted()

    async def poll(self) -> None:
        async with self._lock:
            await self.refresh_status(self._link)

    async def disconnect(self) -> None:
        async with self._lock:
            await self._link.close()

    async def _submit(self, operation: Operation[T]) -> T:
        async with self._lock:
            return await operation(self._link)

    def _can_send(self) -> bool:
        return self._link.is_open


class SerialLedDriver(LedDriver):
    """A screen on a serial bus: a member of the bus's scheduler, which polls its status in turn
    and runs its commands between two polls."""

    def __init__(
        self,
        config: LedTextConfig,
        context: DriverContext,
        runner: DeviceRunner,
        bus: SerialBus,
        *,
        own_bus: bool,
    ) -> None:
        super().__init__(config, context, runner)
        self._bus = bus
        self._own_bus = own_bus

    async def run(self) -> None:
        if not self._own_bus:
            await self.present()
            return
        async with asyncio.TaskGroup() as group:
            group.create_task(self.present(), name=f"led-present-{self.device_id}")
            group.create_task(self._bus.run(), name=f"led-port-{self.device_id}")

    async def poll(self, link: BusLink) -> None:
        came_back = not self.runner.online
        await self.refresh_status(link)
        if came_back:
            self.link_restarted()

    async def _submit(self, operation: Operation[T]) -> T:
        return await self._bus.submit(operation)

    def _can_send(self) -> bool:
        return self._bus.up and self.runner.online


def _command_name(command: int) -> str:
    try:
        return Command(command).name.lower()
    except ValueError:
        return f"command 0x{command:02x}"


def mount(config: LedTextConfig, context: DriverContext) -> Mounted:
    driver: LedDriver
    if config.transport == "tcp":
        assert config.host is not None  # the config model requires it with tcp
        runner = context.runner(config.id, config.profile)
        driver = TcpLedDriver(config, context, runner, TcpLink(config.host, config.port))
    else:
        runner = context.runner(config.id, config.profile, poll_interval_s=config.status_poll_s)
        if config.bus is not None:
            bus, own = context.buses[config.bus], False
        else:
            assert config.url is not None  # the config model requires bus or url
            bus_config = BusConfig(
                id=config.id,
                url=config.url,
                baudrate=config.baudrate,
                timeout_ms=OWN_PORT_TIMEOUT_MS,
                retries=OWN_PORT_RETRIES,
            )
            bus, own = SerialBus(bus_config, context.metrics), True
        serial = SerialLedDriver(config, context, runner, bus, own_bus=own)
        bus.add(serial)
        driver = serial
    return Mounted(config.id, task=driver.run, display=driver)
