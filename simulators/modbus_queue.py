"""A simulated queue-call controller, served by pymodbus: Modbus TCP, or RTU over a pty or TCP.

A small queue engine keeps tickets per service and windows that call, recall, skip, finish,
pause and resume; it writes its state into holding registers laid out by a register map (the
driver's own config model, v1 of devices.md by default) and logs the ground truth of every
change. `DayScript` drives the engine one round at a time, each window changing at most once a
round: in lockstep with the gateway's polls (one round per header read) for tests, or on a timer
for the demo. Fault modes: exception responses, no answer, corrupt RTU frames, dropped
connections, the controller switched off and on.

`Rs485Line` stands in for an RS-485 line on a pty: it hands the master's frames to the device
behind them by protocol (FF 68 frames to a pad bus, Modbus RTU frames to this controller), so a
queue controller and rating pads share one serial port as they do in a hall.

    python -m simulators.modbus_queue --tcp 5020 --windows 12 --services 4 --round-s 2
    python -m simulators.modbus_queue --rtu-link /tmp/queue-rtu --unit 1 --round-s 2
    python -m simulators.modbus_queue --tcp 0 --busy     # every poll finds one change (benchmark)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, Literal

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus_queue import rtu
from drivers.modbus_queue.config import RegisterMap, WindowStatus
from drivers.modbus_queue.registers import RegisterLayout, ticket_label
from gateway.codec import Decoder, FrameError
from gateway.events import QueueAction
from simulators.pty import SimPty

log = logging.getLogger(__name__)

# ticket letters of services 1, 2, 3 … (A for the first service, as on most ticket machines)
PREFIXES: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ"
# staff numbers at the callers: window n is staffed by number STAFF_BASE + n
STAFF_BASE: Final = 100
# the change counter is one register: it wraps at 65536 (devices.md)
COUNTER_MODULO: Final = 65536
# a read from the pty master that returns more than this is split, never lost
_PTY_READ: Final = 4096

Fault = Literal["exception", "silent", "corrupt"]


@dataclass(frozen=True, slots=True)
class Truth:
    """One change as it really happened. `waiting` is the service's queue when it was sealed
    (when the gateway's next poll read the registers); `seen` says whether a recall's ticket was
    still on display then (a recall of a ticket replaced before the next poll leaves no trace)."""

    window: int
    action: QueueAction
    ticket: str | None = None
    service: int | None = None
    waiting: int | None = None
    seen: bool = True


@dataclass
class SimService:
    number: int
    prefix: str
    issued: int = 0  # the last number issued today
    queue: deque[tuple[int, float]] = field(default_factory=deque)  # (number, issued at)


@dataclass
class SimWindow:
    number: int
    services: tuple[int, ...]
    status: WindowStatus = "closed"
    ticket: int = 0
    prefix: str = ""
    service: int = 0
    served: int = 0
    staff: int = 0
    calls: int = 0


def _default_services(window: int, services: int) -> tuple[int, ...]:
    """Window n serves service n (cyclically) first and helps with the next one."""
    own = (window - 1) % services + 1
    return (own,) if services == 1 else (own, own % services + 1)


class QueueEngine:
    """Tickets, services and windows; every change bumps the change counter and is logged."""

    def __init__(
        self,
        windows: int = 12,
        services: int = 4,
        *,
        register_map: RegisterMap | None = None,
        serves: Mapping[int, tuple[int, ...]] | None = None,
    ) -> None:
        self.map = register_map or RegisterMap()
        self.services = [
            SimService(n, PREFIXES[(n - 1) % len(PREFIXES)]) for n in range(1, services + 1)
        ]
        self.windows = [
            SimWindow(n, (serves or {}).get(n, _default_services(n, services)))
            for n in range(1, windows + 1)
        ]
        self.change_counter = 0
        self.now = 0.0  # engine seconds: what longest waits are measured in
        self.truth: list[Truth] = []
        self._unsealed = 0  # truth[_unsealed:] have no `waiting` yet
        self._codes = {status: code for code, status in self.map.status_codes.items()}
        self._prefixed = self.map.windows.fields.prefix is not None
        self._image: list[int] | None = None
        wmap, smap = self.map.windows, self.map.services
        self.size = 1 + max(
            *self.map.header.registers().values(),
            wmap.base + wmap.stride * windows,
            smap.base + smap.stride * services,
        )

    # -- what a caller and a ticket machine do --------------------------------------------------
    def issue(self, service: int) -> str:
        svc = self.services[service - 1]
        svc.issued += 1
        svc.queue.append((svc.issued, self.now))
        self._changed()
        return ticket_label(ord(svc.prefix), svc.issued) or ""

    def open(self, window: int, staff: int | None = None) -> None:
        w = self._window(window)
        w.status, w.staff = "idle", STAFF_BASE + window if staff is None else staff
        self._log(window, "opened")

    def close(self, window: int) -> None:
        w = self._window(window)
        w.status, w.staff = "closed", 0
        self._log(window, "closed")

    def pause(self, window: int) -> None:
        self._window(window).status = "paused"
        self._log(window, "paused")

    def resume(self, window: int) -> None:
        w = self._window(window)
        w.status = "serving" if w.ticket else "idle"
        self._log(window, "resumed")

    def waiting_for(self, window: int) -> int:
        return sum(len(self.services[s - 1].queue) for s in self._window(window).services)

    def call(self, window: int) -> bool:
        """Call the oldest ticket of the window's services; False if none is waiting."""
        w = self._window(window)
        queues = [self.services[s - 1] for s in w.services if self.services[s - 1].queue]
        if not queues:
            return False
        svc = min(queues, key=lambda s: (s.queue[0][1], s.number))
        number, _issued_at = svc.queue.popleft()
        w.ticket, w.prefix, w.service, w.calls, w.status = (
            number,
            svc.prefix,
            svc.number,
            1,
            "serving",
        )
        self._log(window, "called", w)
        return True

    def recall(self, window: int) -> None:
        w = self._window(window)
        w.calls += 1
        self._log(window, "recalled", w)

    def finish(self, window: int) -> None:
        w = self._window(window)
        w.served += 1
        self._log(window, "finished", w)
        self._clear(w)

    def skip(self, window: int) -> None:
        w = self._window(window)
        self._log(window, "skipped", w)
        self._clear(w)

    def seal(self) -> None:
        """The gateway reads the registers now: fill in `waiting` and `seen` of what is logged."""
        for index in range(self._unsealed, len(self.truth)):
            entry = self.truth[index]
            if entry.service is None:
                continue
            w = self.windows[entry.window - 1]
            seen = entry.action != "recalled" or self.label(w) == entry.ticket
            waiting = len(self.services[entry.service - 1].queue)
            self.truth[index] = replace(entry, waiting=waiting, seen=seen)
        self._unsealed = len(self.truth)

    def label(self, window: SimWindow) -> str | None:
        """The ticket on display as the gateway reads it (no letter if the map has no prefix)."""
        prefix = ord(window.prefix) if self._prefixed and window.prefix else 0
        return ticket_label(prefix, window.ticket)

    # -- the registers ---------------------------------------------------------------------------
    def registers(self) -> list[int]:
        if self._image is None:
            self._image = self._build()
        return self._image

    def _build(self) -> list[int]:
        image = [0] * self.size
        header = self.map.header
        waiting = [len(s.queue) for s in self.services]
        values = {
            "version": self.map.version or 0,
            "windows": len(self.windows),
            "waiting_total": sum(waiting),
            "issued_today": sum(s.issued for s in self.services),
            "change_counter": self.change_counter,
            "services": len(self.services),
        }
        for name, register in header.registers().items():
            image[register] = values[name]
        wmap = self.map.windows
        for w in self.windows:
            base = wmap.base + wmap.stride * (w.number - 1)
            fields = {
                "status": self._codes[w.status],
                "ticket": w.ticket,
                "prefix": ord(w.prefix) if w.ticket else 0,
                "served_today": w.served,
                "staff": w.staff,
                "call_count": w.calls,
                "service": w.service,
            }
            for name, offset in wmap.fields.offsets().items():
                image[base + offset] = fields[name]
        smap = self.map.services
        for s in self.services:
            base = smap.base + smap.stride * (s.number - 1)
            oldest = s.queue[0][1] if s.queue else self.now
            fields = {
                "waiting": len(s.queue),
                "longest_wait_s": int(self.now - oldest),
                "last_issued": s.issued,
                "prefix": ord(s.prefix),
            }
            for name, offset in smap.fields.offsets().items():
                image[base + offset] = fields[name]
        return image

    def _window(self, window: int) -> SimWindow:
        return self.windows[window - 1]

    def _clear(self, w: SimWindow) -> None:
        w.ticket, w.prefix, w.service, w.calls = 0, "", 0, 0
        if w.status == "serving":
            w.status = "idle"

    def _log(self, window: int, action: QueueAction, ticket_of: SimWindow | None = None) -> None:
        if ticket_of is None:
            self.truth.append(Truth(window, action))
        else:
            self.truth.append(Truth(window, action, self.label(ticket_of), ticket_of.service))
        self._changed()

    def _changed(self) -> None:
        self.change_counter = (self.change_counter + 1) % COUNTER_MODULO
        self._image = None


class DayScript:
    """A hall's day, one round at a time: every window changes at most once per round.

    Deterministic for a seed. Opens every window, issues `tickets` tickets (None: without end),
    serves them with recalls, skips and pauses, and closes the windows when all are served.
    """

    def __init__(
        self,
        engine: QueueEngine,
        *,
        tickets: int | None,
        seed: int | None = 1,
        issue_per_round: float = 1.5,
        round_s: float = 20.0,
        staff: Mapping[int, int] | None = None,
    ) -> None:
        self.engine = engine
        self.tickets = tickets
        # window → the staff number at its caller when it opens (default STAFF_BASE + window)
        self.staff = dict(staff or {})
        self.rounds = 0
        self._rng = random.Random(seed)
        self._issue_per_round = issue_per_round
        self._round_s = round_s

    @property
    def issued(self) -> int:
        return sum(s.issued for s in self.engine.services)

    def round(self) -> bool:
        """Apply one round; False once the day is over (then nothing changes any more)."""
        engine, rng = self.engine, self._rng
        windows = engine.windows
        if all(w.status == "closed" for w in windows) and self.rounds:
            return False
        self.rounds += 1
        engine.now += self._round_s
        if self.rounds == 1:
            for w in windows:
                engine.open(w.number, self.staff.get(w.number))
            return True
        more = self.tickets is None or self.issued < self.tickets
        while more and rng.random() < self._issue_per_round / (1 + self._issue_per_round):
            engine.issue(rng.randint(1, len(engine.services)))
            more = self.tickets is None or self.issued < self.tickets
        day_over = not more and all(not s.queue for s in engine.services)
        for w in rng.sample(windows, len(windows)):
            self._act(w, day_over=day_over)
        return True

    def step(self) -> None:
        """One change, however long it takes to find one: a window acts, or a ticket is issued
        (an endless day; the windows open on the first step)."""
        engine, rng = self.engine, self._rng
        before = engine.change_counter
        if not self.rounds:
            self.rounds = 1
            for w in engine.windows:
                engine.open(w.number, self.staff.get(w.number))
        while engine.change_counter == before:
            if rng.random() < 0.3:
                engine.issue(rng.randint(1, len(engine.services)))
            else:
                self._act(rng.choice(engine.windows), day_over=False)

    def _act(self, w: SimWindow, *, day_over: bool) -> None:
        engine, roll = self.engine, self._rng.random()
        if w.status == "closed":
            return
        if w.status == "paused":
            if roll < 0.3 or day_over:
                engine.resume(w.number)
        elif w.ticket:
            if roll < 0.08 and w.calls < 3:
                engine.recall(w.number)
            elif roll < 0.12:
                engine.skip(w.number)
            elif roll < 0.6:
                engine.finish(w.number)
        elif day_over:
            engine.close(w.number)
        elif roll < 0.03:
            engine.pause(w.number)
        elif engine.waiting_for(w.number):
            engine.call(w.number)


async def run_day(script: DayScript, round_s: float) -> None:
    """Random mode (the demo): a round every `round_s` seconds, without end, until cancelled."""
    while True:
        await asyncio.sleep(round_s)
        script.round()


ReadHook = Callable[[], None]


class QueueController:
    """Serves a QueueEngine's registers with pymodbus, over TCP and as Modbus RTU."""

    def __init__(self, engine: QueueEngine, *, unit: int = 1) -> None:
        self.engine = engine
        self.unit = unit
        self.fault: Fault | None = None
        # every answer waits this long (a slow controller, still within the gateway's timeout)
        self.answer_delay_s = 0.0
        self.reads = 0
        self.header_reads = 0
        # called on every header read before it is answered: a test's lockstep with the polls
        self.on_header_read: ReadHook | None = None
        layout = RegisterLayout(engine.map)
        self._header_address = -1 if layout.header_read is None else layout.header_read.address
        self.listening_port = 0  # the port of the latest server started
        self._servers: list[ModbusTcpServer | ModbusSerialServer] = []
        self._lines: list[Rs485Line] = []

    def device(self) -> SimDevice:
        regs = SimData(0, count=self.engine.size, values=0, datatype=DataType.REGISTERS)
        return SimDevice(id=self.unit, simdata=[regs], action=self._action)

    async def serve_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Modbus TCP on `port` (0: any free port); returns the port."""
        server = ModbusTcpServer(self.device(), address=(host, port), trace_packet=self._trace)
        return await self._start(server)

    async def serve_rtu_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Modbus RTU frames over TCP, like an RS-485-to-Ethernet serial server."""
        server = ModbusSerialServer(
            self.device(),
            framer=FramerType.RTU,
            port=f"socket://{host}:{port}",
            trace_packet=self._trace,
        )
        return await self._start(server)

    async def open_pty(self, link: Path | None = None) -> str:
        """Modbus RTU on a pty of its own (the gateway opens the returned path)."""
        port = await self.serve_rtu_tcp()
        line = Rs485Line()
        await line.attach(rtu_frames, rtu.decode_request, "127.0.0.1", port)
        self._lines.append(line)
        return await line.open_pty(link)

    def drop_connections(self) -> int:
        """Close every client connection (a flaky network); returns how many were open."""
        dropped = 0
        for server in self._servers:
            for handler in list(server.active_connections.values()):
                handler.close()
                dropped += 1
        return dropped

    async def stop(self) -> None:
        """Switch the controller off: stop listening and close every connection."""
        for line in self._lines:
            await line.close()
        self._lines.clear()
        for server in self._servers:
            await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it untyped
        self._servers.clear()

    async def _start(self, server: ModbusTcpServer | ModbusSerialServer) -> int:
        await server.serve_forever(background=True)
        self._servers.append(server)
        listener = server.transport
        assert isinstance(listener, asyncio.Server)  # a TCP listener, also for RTU over TCP
        self.listening_port = int(listener.sockets[0].getsockname()[1])
        return self.listening_port

    async def _action(
        self,
        _function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        _values: Sequence[int] | Sequence[bool] | None,
    ) -> ExcCodes | None:
        self.reads += 1
        if address == self._header_address:
            self.header_reads += 1
            if self.on_header_read is not None:
                self.on_header_read()
        if self.answer_delay_s:
            await asyncio.sleep(self.answer_delay_s)
        if self.fault == "exception":
            return ExcCodes.DEVICE_FAILURE
        image = self.engine.registers()
        offset = address - start_address
        registers[offset : offset + count] = image[address : address + count]
        return None

    def _trace(self, sending: bool, data: bytes) -> bytes:  # noqa: FBT001  # pymodbus's callback
        if not sending:
            return data
        if self.fault == "silent":
            return b""
        if self.fault == "corrupt" and data:
            return data[:-1] + bytes([data[-1] ^ 0xFF])
        return data


def rtu_frames(first: int) -> bool:
    """Route test of an RS-485 line: a Modbus RTU request starts with its unit id (1…247)."""
    return 1 <= first <= 247


def pad_frames(first: int) -> bool:
    """Route test of an RS-485 line: an FF 68 pad frame starts with FF."""
    return first == 0xFF


@dataclass
class _Backend:
    accepts: Callable[[int], bool]
    decode: Decoder[object]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    task: asyncio.Task[None] | None = None


class Rs485Line:
    """A pty the gateway opens as its serial port, standing in for a shared RS-485 line.

    The master's frames are handed to the device behind them by their first byte (devices sit
    behind TCP, as behind serial servers); whatever a device answers comes back on the pty.
    """

    def __init__(self) -> None:
        self.path: str | None = None
        self.unrouted = 0
        self._backends: list[_Backend] = []
        self._pty: SimPty | None = None
        self._rx = bytearray()

    async def attach(
        self, accepts: Callable[[int], bool], decode: Decoder[object], host: str, port: int
    ) -> None:
        """Hand the frames `decode` finds, when their first byte `accepts`, to host:port."""
        reader, writer = await asyncio.open_connection(host, port)
        backend = _Backend(accepts, decode, reader, writer)
        backend.task = asyncio.create_task(self._answers(backend), name=f"rs485-line-{port}")
        self._backends.append(backend)

    async def open_pty(self, link: Path | None = None) -> str:
        self._pty = SimPty(link, self._readable)
        self.path = self._pty.path
        return self._pty.name

    async def close(self) -> None:
        if self._pty is not None:
            self._pty.close()
            self._pty = None
        for backend in self._backends:
            if backend.task is not None:
                backend.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await backend.task
            backend.writer.close()
            with contextlib.suppress(OSError):
                await backend.writer.wait_closed()
        self._backends.clear()

    def _readable(self) -> None:
        if self._pty is not None and (data := self._pty.read()):
            self._rx += data
            self._route()

    def _route(self) -> None:
        while self._rx:
            backend = next((b for b in self._backends if b.accepts(self._rx[0])), None)
            if backend is None:
                del self._rx[:1]
                self.unrouted += 1
                continue
            try:
                consumed, frame = backend.decode(self._rx)
            except FrameError as err:
                del self._rx[: max(1, err.consumed)]
                self.unrouted += 1
                continue
            if frame is None:
                if consumed == 0:
                    return  # a partial frame: wait for the rest
                del self._rx[:consumed]
                continue
            backend.writer.write(bytes(self._rx[:consumed]))
            del self._rx[:consumed]

    async def _answers(self, backend: _Backend) -> None:
        while data := await backend.reader.read(_PTY_READ):
            if self._pty is not None:
                self._pty.write(data)


async def _main(args: argparse.Namespace) -> None:
    engine = QueueEngine(args.windows, args.services)
    controller = QueueController(engine, unit=args.unit)
    if args.tcp is not None:
        port = await controller.serve_tcp(port=args.tcp)
        where = f"Modbus TCP 127.0.0.1:{port}, unit {args.unit}"
    elif args.rtu_tcp is not None:
        port = await controller.serve_rtu_tcp(port=args.rtu_tcp)
        where = f"Modbus RTU socket://127.0.0.1:{port}, unit {args.unit}"
    else:
        path = await controller.open_pty(Path(args.rtu_link) if args.rtu_link else None)
        where = f"Modbus RTU {path}, unit {args.unit}"
    print(f"queue controller on {where}", flush=True)  # noqa: T201
    script = DayScript(engine, tickets=None, seed=args.seed)
    if args.busy or args.rounds:
        script.step()  # the windows open

        def change_on_every_poll() -> None:
            if args.busy:
                script.step()
                return
            before = engine.change_counter
            while engine.change_counter == before:
                script.round()

        controller.on_header_read = change_on_every_poll
    try:
        if args.busy or args.rounds or args.idle:
            await asyncio.Event().wait()
        else:
            await run_day(script, args.round_s)
    finally:
        await controller.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=12)
    parser.add_argument("--services", type=int, default=4)
    parser.add_argument("--unit", type=int, default=1)
    parser.add_argument("--tcp", type=int, help="serve Modbus TCP on this port")
    parser.add_argument("--rtu-tcp", type=int, help="serve Modbus RTU over TCP on this port")
    parser.add_argument("--rtu-link", help="symlink to create to the RTU pty")
    parser.add_argument("--round-s", type=float, default=2.0, help="seconds between rounds")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--busy", action="store_true", help="one change before every header read")
    mode.add_argument("--rounds", action="store_true", help="a round before every header read")
    mode.add_argument("--idle", action="store_true", help="no change ever (benchmarks)")
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
