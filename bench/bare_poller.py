"""The irreducible cost of talking to the pads: poll every pad of the given buses once per
`interval` over pyserial-asyncio, with nothing else (no store, no events, no metrics).

    python -m bench.bare_poller INTERVAL_S LINK:PADS [LINK:PADS …]
"""

from __future__ import annotations

import asyncio
import sys

import serial_asyncio_fast

from drivers.ff68_pad import codec

ANSWER_TIMEOUT_S = 0.1


class _Answers(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.arrived = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.arrived.set()


async def poll_bus(link: str, pads: int, interval: float) -> None:
    loop = asyncio.get_running_loop()
    transport, answers = await serial_asyncio_fast.create_serial_connection(
        loop, _Answers, link, baudrate=9600
    )
    assert isinstance(answers, _Answers)
    frames = [codec.encode(codec.poll(address)) for address in range(1, pads + 1)]
    while True:
        started = loop.time()
        for frame in frames:
            answers.buffer.clear()
            answers.arrived.clear()
            transport.write(frame)
            try:
                async with asyncio.timeout(ANSWER_TIMEOUT_S):
                    while len(answers.buffer) < 9:
                        answers.arrived.clear()
                        await answers.arrived.wait()
            except TimeoutError:
                pass
        await asyncio.sleep(max(0.0, started + interval - loop.time()))


async def main() -> None:
    interval = float(sys.argv[1])
    buses = [arg.rsplit(":", 1) for arg in sys.argv[2:]]
    await asyncio.gather(*(poll_bus(link, int(pads), interval) for link, pads in buses))


if __name__ == "__main__":
    asyncio.run(main())
