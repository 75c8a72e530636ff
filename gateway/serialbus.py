"""Serial buses: the transport that moves bytes, the link that pairs requests with answers, and
the scheduler that owns a bus and gives every device on it its turn.

One scheduler per serial port carries polls and writes alike, so a write never collides with a
poll, and a dead device costs its bus only its own timeouts (an offline device is polled every
5 s, not every sweep).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final, Protocol, TypeVar

import serial
import serial_asyncio_fast

from gateway.codec import Decoder, scan
from gateway.config import BusConfig
from gateway.errors import BadFrame, DeviceError, DeviceIOError, DeviceTimeout, RequestResult
from gateway.metrics import Metrics
from gateway.runner import OFFLINE_POLL_S, Backoff, DeviceRunner

log = logging.getLogger(__name__)

T = TypeVar("T")
F = TypeVar("F")

# 8N1: a start bit, 8 data bits and a stop bit on the wire for every byte
BITS_PER_BYTE: Final = 10
# a port that vanished (USB re-plug, serial server reboot) is usually back within seconds
REOPEN_INITIAL_S: Final = 0.5
REOPEN_MAX_S: Final = 5.0
# writes waiting for their turn on one bus; past this a write is refused, not queued forever
PENDING_WRITES_MAX: Final = 64


def wire_time(nbytes: int, baudrate: int) -> float:
    return nbytes * BITS_PER_BYTE / baudrate


class _Receiver(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.arrived = asyncio.Event()
        self.lost: BaseException | None = None
        self.closed = False

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.lost = exc
        self.arrived.set()


class SerialPort:
    """Moves bytes to and from one serial port: a device, a by-id link, or `socket://`."""

    def __init__(self, url: str, baudrate: int) -> None:
        self.url = url
        self.baudrate = baudrate
        self._transport: asyncio.BaseTransport | None = None
        self._receiver: _Receiver | None = None

    @property
    def is_open(self) -> bool:
        return self._receiver is not None and not self._receiver.closed

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, receiver = await serial_asyncio_fast.create_serial_connection(
                loop, _Receiver, self.url, baudrate=self.baudrate
            )
        except (serial.SerialException, OSError, ValueError) as err:
            raise DeviceIOError(f"cannot open {self.url}: {err}") from err
        self._transport = transport
        assert isinstance(receiver, _Receiver)
        self._receiver = receiver

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._transport = None
        self._receiver = None

    def write(self, data: bytes) -> None:
        receiver = self._live()
        assert isinstance(self._transport, asyncio.WriteTransport)
        try:
            self._transport.write(data)
        except (serial.SerialException, OSError) as err:
            raise DeviceIOError(f"cannot write to {self.url}: {err}") from err
        if receiver.closed:
            raise DeviceIOError(f"{self.url} closed while writing")

    def discard_input(self) -> None:
        self._live().buffer.clear()

    async def receive(self, deadline: float) -> bytes:
        """Whatever has arrived, waiting until loop time `deadline` for at least one byte."""
        receiver = self._live()
        if not receiver.buffer and not receiver.closed:
            # one timer handle wakes the wait: every poll comes here, and a timeout context
            # (a Timeout object, a reschedule, a cancel) costs several times as much
            receiver.arrived.clear()
            timer = asyncio.get_running_loop().call_at(deadline, receiver.arrived.set)
            try:
                await receiver.arrived.wait()
            finally:
                timer.cancel()
        if not receiver.buffer:
            if receiver.closed:
                raise DeviceIOError(f"{self.url} was closed ({receiver.lost or 'end of file'})")
            raise DeviceTimeout(f"no answer on {self.url}")
        data = bytes(receiver.buffer)
        receiver.buffer.clear()
        return data

    def _live(self) -> _Receiver:
        if self._receiver is None:
            raise DeviceIOError(f"{self.url} is not open")
        if self._receiver.closed and not self._receiver.buffer:
            raise DeviceIOError(f"{self.url} was closed ({self._receiver.lost or 'end of file'})")
        return self._receiver


AttemptCounter = Callable[[RequestResult, float], None]


class BusLink:
    """Request/answer exchanges on one open port. The bus scheduler makes them one at a time."""

    def __init__(self, port: SerialPort, *, timeout_s: float, retries: int) -> None:
        self.port = port
        self.timeout_s = timeout_s
        self.retries = retries
        self._rx = bytearray()

    async def exchange(
        self,
        request: bytes,
        decode: Decoder[F],
        match: Callable[[F], T | None],
        count: AttemptCounter,
        *,
        retries: int | None = None,
        timeout_s: float | None = None,
    ) -> T:
        """Send `request` and return `match(frame)` for the first frame it does not return None
        for (a frame of another device, or a late answer, is skipped), retrying on failure.

        `match` raises BadResponse for an answer that is the device's but unusable. Every attempt
        is counted with its result. The answer's wait starts when the request has left the wire,
        so a slow bus does not eat into the device's own answer time. `retries` and `timeout_s`
        replace the bus's own for a device whose protocol sets them (an LED controller: 1 s).
        """
        attempts = 1 + (self.retries if retries is None else retries)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        for attempt in range(attempts):
            started = loop.time()
            try:
                answer = await self._attempt(request, decode, match, started, timeout)
            except DeviceError as err:
                count(err.result, loop.time() - started)
                if err.reconnect or attempt == attempts - 1:
                    raise
                continue
            count("ok", loop.time() - started)
            return answer
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def send(self, data: bytes) -> None:
        """Write without waiting for an answer (a broadcast); returns when it has left the wire."""
        self.port.write(data)
        await asyncio.sleep(wire_time(len(data), self.port.baudrate))

    async def _attempt(
        self,
        request: bytes,
        decode: Decoder[F],
        match: Callable[[F], T | None],
        started: float,
        timeout_s: float,
    ) -> T:
        self._rx.clear()
        self.port.discard_input()  # late bytes of an earlier answer must not pass for this one
        self.port.write(request)
        deadline = started + wire_time(len(request), self.port.baudrate) + timeout_s
        while True:
            answer, bad = scan(self._rx, decode, match)
            if answer is not None:
                return answer
            if bad:
                # the device answered, badly: retry now rather than wait out the timeout
                raise BadFrame(f"{len(bad)} bad frame(s) on {self.port.url}: {bad[0]}")
            self._rx += await self.port.receive(deadline)


class BusMember(Protocol):
    """A device on a shared bus. The scheduler calls `poll` in the device's turn."""

    runner: DeviceRunner

    async def poll(self, link: BusLink) -> None:
        """One poll; raise DeviceError when it fails."""


BusJob = Callable[[BusLink], Awaitable[T]]


class SerialBus:
    """Owns one serial port and sweeps its members in turn; writes run between two polls."""

    def __init__(self, config: BusConfig, metrics: Metrics) -> None:
        self.id = config.id
        self.url = config.url
        self.baudrate = config.baudrate
        self.up = False
        self._port = SerialPort(config.url, config.baudrate)
        self._link = BusLink(self._port, timeout_s=config.timeout_ms / 1000, retries=config.retries)
        self._metrics = metrics
        self._members: list[BusMember] = []
        self._writes: asyncio.Queue[tuple[BusJob[object], asyncio.Future[object]]] = asyncio.Queue(
            PENDING_WRITES_MAX
        )
        self._write_waiting = asyncio.Event()
        self._reopen = Backoff(REOPEN_INITIAL_S, REOPEN_MAX_S)
        self._sweep_interval_s = config.sweep_interval_ms / 1000
        self._sweep_seconds = metrics.bus_sweep.labels(config.id)

    @property
    def members(self) -> tuple[BusMember, ...]:
        return tuple(self._members)

    def add(self, member: BusMember) -> None:
        self._members.append(member)

    async def submit(self, job: BusJob[T]) -> T:
        """Run `job` with the link in the next gap between two polls and return its result."""
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        try:
            self._writes.put_nowait((job, future))
        except asyncio.QueueFull:
            message = f"bus {self.id}: {PENDING_WRITES_MAX} writes already waiting"
            raise DeviceError(message) from None
        self._write_waiting.set()
        return await future  # type: ignore[return-value]  # the job's own result

    async def run(self) -> None:
        """Open the port, sweep, and reopen it whenever it is lost, until cancelled."""
        try:
            while True:
                try:
                    await self._port.open()
                except DeviceIOError as err:
                    self._everyone_failed(err)
                    await self._idle(self._reopen.next())
                    continue
                self._reopen.reset()
                self.up = True
                log.info("bus %s: %s open", self.id, self.url)
                try:
                    await self._sweep_forever()
                except DeviceIOError as err:
                    log.warning("bus %s: lost %s: %s", self.id, self.url, err)
                finally:
                    self.up = False
                    self._port.close()
        finally:
            self._fail_waiting_writes(DeviceIOError(f"bus {self.id} stopped"))

    async def _sweep_forever(self) -> None:
        """Sweeps at the bus's cadence: every member that is due. A member with a poll interval
        of its own (a queue controller, an LED's status) is also polled between two sweeps
        whenever it comes due; the others (the pads) wait for the next sweep."""
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        while True:
            started = loop.time()
            sweep = started >= next_sweep
            polled = 0
            for member in self._members:
                await self._run_writes()
                now = loop.time()
                if not (sweep or member.runner.has_own_interval) or not member.runner.due(now):
                    continue
                member.runner.attempted(now)
                polled += 1
                try:
                    await member.poll(self._link)
                except DeviceError as err:
                    member.runner.poll_failed(err.result, str(err))
                    if err.reconnect:
                        raise DeviceIOError(str(err)) from err
                else:
                    member.runner.poll_ok()
            await self._run_writes()
            now = loop.time()
            if sweep:
                next_sweep = started + self._sweep_interval_s
                if polled:
                    self._sweep_seconds.observe(now - started)
            await self._idle(
                self._until_next_turn(now, next_sweep, idle_sweep=sweep and not polled)
            )

    async def _run_writes(self) -> None:
        while not self._writes.empty():
            job, future = self._writes.get_nowait()
            if future.cancelled():
                continue
            try:
                result = await job(self._link)
            except DeviceError as err:
                if not future.done():
                    future.set_exception(err)
                if err.reconnect:
                    raise DeviceIOError(str(err)) from err
            else:
                if not future.done():
                    future.set_result(result)

    async def _idle(self, seconds: float) -> None:
        """Wait, but wake early for a write, which can run as soon as the port is open."""
        self._write_waiting.clear()
        if not self._writes.empty():
            return
        try:
            async with asyncio.timeout(seconds):
                await self._write_waiting.wait()
        except TimeoutError:
            pass

    def _until_next_turn(self, now: float, next_sweep: float, *, idle_sweep: bool) -> float:
        """Until the next sweep, or sooner a member with an interval of its own comes due.

        After a sweep that found nobody due (every pad offline, polled every 5 s), the next sweep
        waits until somebody is, rather than sweeping for nothing."""
        if idle_sweep:
            dues = [d for m in self._members if (d := m.runner.next_due()) is not None]
            next_sweep = max(next_sweep, min(dues) if dues else now + OFFLINE_POLL_S)
        own = [
            d
            for m in self._members
            if m.runner.has_own_interval and (d := m.runner.next_due()) is not None
        ]
        return max(0.0, min([*own, next_sweep]) - now)

    def _everyone_failed(self, err: DeviceError) -> None:
        """The port itself cannot be opened: every member due now fails with the port's error."""
        loop_now = asyncio.get_running_loop().time()
        for member in self._members:
            if member.runner.due(loop_now):
                member.runner.attempted(loop_now)
                member.runner.count_request(err.result)
                member.runner.poll_failed(err.result, str(err))
        self._fail_waiting_writes(err)

    def _fail_waiting_writes(self, err: DeviceError) -> None:
        while not self._writes.empty():
            _job, future = self._writes.get_nowait()
            if not future.done():
                future.set_exception(err)
