"""A bus of simulated rating pads, speaking the `ff68_pad` protocol over a pty or `socket://`.

Built on the driver's own codec. Pads answer polls with their oldest unacknowledged event, drop
it on ACK (and remember it as acknowledged, for tests), keep what the host displayed, and report
status. Fault modes per pad: silent, corrupt checksum, slow answers; per bus: byte at a time, and
pacing every byte at the bus's baud rate so that timing is realistic.

    python -m simulators.ff68_pad --link /tmp/pads-1f --addresses 1-32 --pace --random 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from drivers.ff68_pad import codec
from drivers.ff68_pad.codec import Command, Frame, PadFrameError, PadReport
from simulators.pty import SimPty, parse_addresses

log = logging.getLogger(__name__)

BITS_PER_BYTE: Final = 10  # 8N1
# pause between bytes in byte-at-a-time mode: long enough for the reader to see them apart
BYTE_GAP_S: Final = 0.001


@dataclass
class SimPad:
    """One pad: its event queue, what it displayed, and its fault switches."""

    address: int
    fw: tuple[int, int] = (1, 2)
    fault_bits: int = 0
    silent: bool = False
    corrupt_checksum: bool = False
    slow_s: float = 0.0
    # the next N ACKs are lost on the wire: the pad neither drops its event nor answers
    ignore_acks: int = 0
    # called with each event the host acknowledges, at the moment its ACK arrives
    on_ack: Callable[[PadReport], None] | None = None
    next_seq: int = 0
    queue: deque[PadReport] = field(default_factory=deque)
    acked: list[PadReport] = field(default_factory=list)
    displayed: list[str] = field(default_factory=list)
    polls: int = 0
    requests: list[float] = field(default_factory=list)  # loop time of every request heard

    def report(
        self,
        command: Command,
        *,
        key: int | None = None,
        card: str | None = None,
        code: int | None = None,
    ) -> PadReport:
        report = PadReport(command, self.next_seq, key=key, card=card, code=code)
        self.next_seq = (self.next_seq + 1) % 256
        self.queue.append(report)
        return report

    def press(self, key: int) -> PadReport:
        return self.report(Command.KEY, key=key)

    def login(self, card: str) -> PadReport:
        return self.report(Command.LOGIN, card=card)

    def logout(self) -> PadReport:
        return self.report(Command.LOGOUT)

    def pause(self) -> PadReport:
        return self.report(Command.PAUSE)

    def resume(self) -> PadReport:
        return self.report(Command.RESUME)

    def fault(self, code: int) -> PadReport:
        return self.report(Command.FAULT, code=code)

    @property
    def display_text(self) -> str:
        return self.displayed[-1] if self.displayed else ""

    def answer(self, request: Frame) -> Frame | None:  # noqa: PLR0911  # one return a command
        """The pad's answer to a request addressed to it (None: it does not answer)."""
        if request.command == Command.POLL:
            self.polls += 1
            if self.queue:
                return codec.report_frame(self.address, self.queue[0])
            return Frame(self.address, Command.POLL)
        if request.command == Command.ACK and len(request.data) == 1:
            if self.ignore_acks > 0:
                self.ignore_acks -= 1
                if self.on_ack is not None and self.queue:
                    self.on_ack(self.queue[0])
                return None
            if self.queue and self.queue[0].seq == request.data[0]:
                self.acked.append(self.queue.popleft())
                if self.on_ack is not None:
                    self.on_ack(self.acked[-1])
            return Frame(self.address, Command.ACK, request.data)
        if request.command == Command.DISPLAY:
            self.displayed.append(request.data.decode(codec.TEXT_ENCODING, errors="replace"))
            return Frame(self.address, Command.DISPLAY, b"\x00")
        if request.command == Command.STATUS:
            data = bytes([*self.fw, min(len(self.queue), 255), self.fault_bits])
            return Frame(self.address, Command.STATUS, data)
        return None


class PadBus:
    """Serves a set of pads on one port: a pty (optionally behind a symlink) or a TCP socket."""

    def __init__(
        self,
        pads: Iterable[SimPad],
        *,
        baudrate: int = 9600,
        pace: bool = False,
        byte_at_a_time: bool = False,
        turnaround_s: float = 0.0,
    ) -> None:
        self.pads = {pad.address: pad for pad in pads}
        self.baudrate = baudrate
        self.pace = pace
        self.byte_at_a_time = byte_at_a_time
        self.turnaround_s = turnaround_s
        self.requests = 0
        self.bad_requests = 0
        self.path: str | None = None
        self._pty: SimPty | None = None
        self._rx = bytearray()
        self._incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self._writer: asyncio.StreamWriter | None = None
        self._server: asyncio.Server | None = None
        self._worker: asyncio.Task[None] | None = None
        self._answering: set[asyncio.Task[None]] = set()

    def pad(self, address: int) -> SimPad:
        return self.pads[address]

    async def open_pty(self, link: Path | None = None) -> str:
        """Create a pty for the gateway to open; point `link` at it (like a by-id link)."""
        self._pty = SimPty(link, self._pty_readable)
        self.path = self._pty.path
        self._start_worker()
        return self._pty.name

    async def open_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen like an RS-485-to-Ethernet serial server; the gateway uses socket://host:port."""
        self._server = await asyncio.start_server(self._serve_client, host, port)
        self._start_worker()
        return int(self._server.sockets[0].getsockname()[1])

    async def vanish(self) -> None:
        """The port disappears (a USB adapter unplugged): close it and remove its link."""
        if self._pty is not None:
            self._pty.close()
            self._pty = None
        if self._server is not None:
            self._server.close()
            if self._writer is not None:
                self._writer.close()
            await self._server.wait_closed()
            self._server = None

    async def close(self) -> None:
        await self.vanish()
        tasks = [t for t in (self._worker, *self._answering) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._worker = None

    async def run_random(
        self,
        *,
        events_per_pad_per_min: float,
        cards: dict[int, str],
        keys: dict[int, list[int]] | None = None,
    ) -> None:
        """Random behaviour for the demo: logins, ratings, now and then a pause. `keys` gives
        the key codes of a pad that is not the common five-key one."""
        for address, card in cards.items():
            if address in self.pads:
                self.pads[address].login(card)
        rate = events_per_pad_per_min / 60.0 * max(1, len(self.pads))
        while True:
            await asyncio.sleep(random.expovariate(rate) if rate > 0 else 3600)
            pad = random.choice(list(self.pads.values()))
            roll = random.random()
            if roll < 0.85:
                pad.press(random.choice((keys or {}).get(pad.address, [1, 1, 1, 2, 2, 3, 4, 5])))
            elif roll < 0.93:
                pad.pause()
            else:
                pad.resume()

    def _start_worker(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._answer_forever(), name="padbus-sim")

    def _pty_readable(self) -> None:
        if self._pty is not None and (data := self._pty.read()):
            self._incoming.put_nowait(data)

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self._writer is not None:
            self._writer.close()  # a serial server has one client: the newest wins
        self._writer = writer
        try:
            while data := await reader.read(4096):
                self._incoming.put_nowait(data)
        except ConnectionError:
            pass
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()

    async def _answer_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await self._incoming.get()
            received = loop.time()
            self._rx += data
            while self._rx:
                try:
                    consumed, request = codec.decode(self._rx)
                except PadFrameError as err:
                    self.bad_requests += 1
                    del self._rx[: err.consumed]
                    continue
                del self._rx[:consumed]
                if request is None:
                    if consumed == 0:
                        break
                    continue
                self.requests += 1
                # every pad answers on its own: a slow pad does not hold up the others
                answering = asyncio.create_task(
                    self._answer(request, received), name=f"pad-{request.address}-answer"
                )
                self._answering.add(answering)
                answering.add_done_callback(self._answering.discard)

    async def _answer(self, request: Frame, received: float) -> None:
        pad = self.pads.get(request.address)
        if pad is None:
            return
        pad.requests.append(received)
        if pad.silent:
            return
        answer = pad.answer(request)
        if answer is None:
            return
        wire = codec.encode(answer)
        if pad.corrupt_checksum:
            wire = wire[:-2] + bytes([(wire[-2] + 1) & 0xFF]) + wire[-1:]
        loop = asyncio.get_running_loop()
        start = received + self.turnaround_s + pad.slow_s
        if self.pace:
            # the request took its wire time to arrive, and each answer byte takes its own
            start += self._byte_time * len(codec.encode(request))
        await asyncio.sleep(max(0.0, start - loop.time()))
        if self.pace:
            for index in range(len(wire)):
                await asyncio.sleep(max(0.0, start + (index + 1) * self._byte_time - loop.time()))
                self._write(wire[index : index + 1])
        elif self.byte_at_a_time:
            for index in range(len(wire)):
                self._write(wire[index : index + 1])
                await asyncio.sleep(BYTE_GAP_S)
        else:
            self._write(wire)

    @property
    def _byte_time(self) -> float:
        return BITS_PER_BYTE / self.baudrate

    def _write(self, data: bytes) -> None:
        if self._pty is not None:
            self._pty.write(data)
        elif self._writer is not None:
            self._writer.write(data)


async def _main(args: argparse.Namespace) -> None:
    bus = PadBus(
        [SimPad(address) for address in parse_addresses(args.addresses)],
        baudrate=args.baudrate,
        pace=args.pace,
    )
    if args.tcp is not None:
        port = await bus.open_tcp(port=args.tcp)
        print(f"pads on socket://127.0.0.1:{port}", flush=True)  # noqa: T201
    else:
        path = await bus.open_pty(Path(args.link) if args.link else None)
        print(f"pads on {path}", flush=True)  # noqa: T201
    try:
        if args.random > 0:
            await bus.run_random(events_per_pad_per_min=args.random, cards={})
        else:
            await asyncio.Event().wait()
    finally:
        await bus.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addresses", default="1-8", help="pad addresses, e.g. 1-32 or 1,2,5")
    parser.add_argument("--baudrate", type=int, default=9600)
    parser.add_argument("--pace", action="store_true", help="pace bytes at the baud rate")
    parser.add_argument("--link", help="symlink to create to the pty (like /dev/serial/by-id/…)")
    parser.add_argument("--tcp", type=int, help="listen on this TCP port instead of a pty")
    parser.add_argument("--random", type=float, default=0.0, help="events per pad per minute")
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
