"""Simulated LED text controllers, speaking the `led_text` protocol over TCP or a pty.

Built on the driver's own codec. Each screen keeps what it displays per area (tests read it
back), its power and brightness, and answers status with settable temperature and fault bits.
Fault modes per screen: busy, silent, corrupt CRC, slow answers, drop the connection on the next
request; per controller: refuse connections (switched off) and accept them again.

    python -m simulators.led_text --tcp 5200 --addresses 1
    python -m simulators.led_text --link /tmp/led-1f --addresses 1-4
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from drivers.led_text import codec
from drivers.led_text.codec import Command, Frame, LedFrameError, LedPayloadError, LedStatus, Result
from simulators.pty import SimPty, parse_addresses

log = logging.getLogger(__name__)

ENCODING: Final = "gbk"
_READ_CHUNK: Final = 4096

_Writer = Callable[[bytes], None]
_COMMANDS: Final = frozenset(int(c) for c in Command)


@dataclass
class Shown:
    area: int
    text: str  # "" for a clear
    color: int = 0
    effect: int = 0
    seconds: int = 0


@dataclass
class SimScreen:
    """One controller address: what it shows and its fault switches."""

    address: int = 1
    power: bool = True
    brightness: int = 80
    temperature_c: int = 35
    fault_bits: int = 0
    busy: bool = False
    silent: bool = False
    corrupt_crc: bool = False
    drop_next: bool = False  # close the connection instead of answering the next request
    slow_s: float = 0.0
    areas: dict[int, str] = field(default_factory=dict)
    history: list[Shown] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)

    def text(self, area: int = 1) -> str:
        return self.areas.get(area, "")

    def texts(self, area: int = 1) -> list[str]:
        """Every text `area` has shown, in order (a clear is "")."""
        return [s.text for s in self.history if s.area == area]

    def answer(self, request: Frame) -> Frame | None:
        """The controller's answer to a request addressed to it (None: it does not answer)."""
        self.requests.append(request.command)
        if self.silent:
            return None
        if self.busy:
            return codec.answer(self.address, request.command, Result.BUSY)
        try:
            result, data = self._apply(request)
        except LedPayloadError:
            result, data = Result.BAD_ARGUMENT, b""
        return codec.answer(self.address, request.command, result, data)

    def _apply(self, request: Frame) -> tuple[Result, bytes]:
        handlers = {
            Command.SHOW: self._show,
            Command.CLEAR: self._clear,
            Command.STATUS: self._status,
            Command.BRIGHTNESS: self._brightness,
            Command.POWER: self._power,
        }
        handler = handlers.get(Command(request.command)) if request.command in _COMMANDS else None
        if handler is None:
            return Result.UNKNOWN_COMMAND, b""
        return handler(request.data)

    def _show(self, data: bytes) -> tuple[Result, bytes]:
        show = codec.parse_show(data)
        text = show.text.decode(ENCODING, errors="replace")
        self.areas[show.area] = text
        self.history.append(Shown(show.area, text, show.color, show.effect, show.seconds))
        return Result.OK, b""

    def _clear(self, data: bytes) -> tuple[Result, bytes]:
        if len(data) != 1:
            return Result.BAD_ARGUMENT, b""
        self.areas.pop(data[0], None)
        self.history.append(Shown(data[0], ""))
        return Result.OK, b""

    def _status(self, data: bytes) -> tuple[Result, bytes]:
        if data:
            return Result.BAD_ARGUMENT, b""
        status = LedStatus(self.power, self.brightness, self.temperature_c, self.fault_bits)
        return Result.OK, codec.status_data(status)

    def _brightness(self, data: bytes) -> tuple[Result, bytes]:
        if len(data) != 1 or data[0] > 100:
            return Result.BAD_ARGUMENT, b""
        self.brightness = data[0]
        return Result.OK, b""

    def _power(self, data: bytes) -> tuple[Result, bytes]:
        if len(data) != 1 or data[0] not in (0, 1):
            return Result.BAD_ARGUMENT, b""
        self.power = data[0] == 1
        return Result.OK, b""


class _Stream:
    """Frames in from one connection (or the pty), answers out."""

    def __init__(self, controller: LedController, write: _Writer) -> None:
        self._controller = controller
        self._write = write
        self._rx = bytearray()

    async def feed(self, data: bytes) -> bool:
        """Take bytes; False when the connection is to be dropped."""
        self._rx += data
        while self._rx:
            try:
                consumed, frame = codec.decode(self._rx)
            except LedFrameError as err:
                self._controller.bad_requests += 1
                del self._rx[: max(1, err.consumed)]
                continue
            del self._rx[:consumed]
            if frame is None:
                if consumed == 0:
                    break
                continue
            if not await self._answer(frame):
                return False
        return True

    async def _answer(self, request: Frame) -> bool:
        screen = self._controller.screens.get(request.address)
        if screen is None:
            return True
        if screen.drop_next:
            screen.drop_next = False
            return False
        answer = screen.answer(request)
        if answer is None:
            return True
        wire = codec.encode(answer)
        if screen.corrupt_crc:
            wire = _corrupt(answer)
        if screen.slow_s:
            await asyncio.sleep(screen.slow_s)
        self._write(wire)
        return True


class LedController:
    """One or more screens behind one TCP port or one pty."""

    def __init__(self, screens: Iterable[SimScreen]) -> None:
        self.screens = {screen.address: screen for screen in screens}
        self.bad_requests = 0
        self.connections = 0
        self.port: int | None = None
        self.path: str | None = None
        self._host = "127.0.0.1"
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pty: SimPty | None = None
        self._pty_stream: _Stream | None = None
        self._pty_queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._pty_task: asyncio.Task[None] | None = None

    def screen(self, address: int = 1) -> SimScreen:
        return self.screens[address]

    async def open_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._host = host
        self._server = await asyncio.start_server(self._serve_client, host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def refuse(self) -> None:
        """Stop listening and close every connection: the controller is switched off."""
        if self._server is not None:
            self._server.close()
            await self.drop()
            await self._server.wait_closed()
            self._server = None

    async def accept(self) -> None:
        """Listen again on the same port: the controller is back."""
        if self._server is None and self.port is not None:
            self._server = await asyncio.start_server(
                self._serve_client, self._host, self.port, reuse_address=True
            )

    async def drop(self) -> None:
        """Close the open connections (a controller that reboots), keep listening."""
        for writer in list(self._writers):
            writer.close()
        for writer in list(self._writers):
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def open_pty(self, link: Path | None = None) -> str:
        self._pty = SimPty(link, self._pty_readable)
        self.path = self._pty.path
        self._pty_stream = _Stream(self, self._pty.write)
        self._pty_task = asyncio.create_task(self._pty_forever(), name="led-sim-pty")
        return self._pty.name

    async def close(self) -> None:
        await self.refuse()
        if self._pty is not None:
            self._pty.close()
            self._pty = None
        if self._pty_task is not None:
            self._pty_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pty_task
            self._pty_task = None

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        self._writers.add(writer)
        stream = _Stream(self, writer.write)
        try:
            while data := await reader.read(_READ_CHUNK):
                if not await stream.feed(data):
                    break
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _pty_readable(self) -> None:
        if self._pty is not None and (data := self._pty.read()):
            self._pty_queue.put_nowait(data)

    async def _pty_forever(self) -> None:
        assert self._pty_stream is not None
        while True:
            await self._pty_stream.feed(await self._pty_queue.get())


def _corrupt(frame: Frame) -> bytes:
    body = bytes([frame.address, frame.command, len(frame.data) >> 8, len(frame.data) & 0xFF])
    body += frame.data
    crc = codec.crc16_modbus(body) ^ 0x0100
    return b"\xa5" + codec.escape(body + bytes([crc & 0xFF, crc >> 8])) + b"\x5a"


async def _main(args: argparse.Namespace) -> None:
    controller = LedController(SimScreen(address) for address in parse_addresses(args.addresses))
    if args.link is not None:
        path = await controller.open_pty(Path(args.link))
        print(f"LED controller on {path}", flush=True)  # noqa: T201
    else:
        port = await controller.open_tcp(args.host, args.tcp)
        print(f"LED controller on {args.host}:{port}", flush=True)  # noqa: T201
    try:
        while True:
            await asyncio.sleep(5)
            for screen in controller.screens.values():
                log.info("screen %d shows %r", screen.address, screen.areas)
    finally:
        await controller.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addresses", default="1", help="controller addresses, e.g. 1 or 1-4")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--tcp", type=int, default=5200, help="TCP port (devices.md: 5200)")
    parser.add_argument("--link", help="serve on a pty and point this symlink at it instead")
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
