"""Queue controller polls: CPU seconds per 1,000 polls of a 12-window controller over Modbus TCP,
idle (the change counter stands still) and busy (it moved: every window and service is read, the
snapshot compared, events and state values built), each beside a bare pymodbus client loop that
reads the same registers in the same run.

The controller is the simulator in its own process (`--idle` or `--busy`), so only the polling
side's CPU is counted. The driver's events go to a sink that keeps them (the store's commit is
the publish path's benchmark); state values go to a real DeviceHub. The two loops take turns in
blocks so that a noisy neighbour on the machine weighs on both alike.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import yaml
from pymodbus.client import AsyncModbusTcpClient

from bench.common import Figure, machine, save, table
from drivers.modbus_queue.config import ModbusQueueConfig, RegisterMap
from drivers.modbus_queue.driver import QueuePoller
from drivers.modbus_queue.registers import RegisterLayout
from drivers.modbus_queue.tcp import TcpLink
from gateway.clock import SystemClock
from gateway.config import parse_config
from gateway.devices import DeviceHub
from gateway.events import Event
from gateway.metrics import Metrics
from gateway.roster import Roster
from gateway.runner import DeviceRunner

WINDOWS: Final = 12
SERVICES: Final = 4
POLLS: Final = 3000
BLOCK: Final = 50  # polls per turn of each loop
WARM_UP: Final = 100
BUSY_GOAL: Final = 1.5  # issue 4: busy polls at most 1.5 x the bare loop

Loop = Callable[[int], Awaitable[None]]


class KeptEvents:
    """An EventSink that keeps the events (their count) instead of storing them."""

    def __init__(self) -> None:
        self.count = 0

    async def publish_many(
        self, events: Sequence[tuple[Event, str]], *, cursor: tuple[str, str] | None = None
    ) -> list[bool]:
        self.count += len(events)
        return [True] * len(events)


async def start_controller(mode: str) -> tuple[asyncio.subprocess.Process, int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators.modbus_queue",
        "--tcp",
        "0",
        f"--{mode}",
        "--windows",
        str(WINDOWS),
        "--services",
        str(SERVICES),
        "--seed",
        "4",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    line = (await process.stdout.readline()).decode()  # "… on Modbus TCP 127.0.0.1:PORT, unit 1"
    port = int(line.split("127.0.0.1:")[1].split(",")[0])
    return process, port


def hall(port: int) -> tuple[ModbusQueueConfig, Roster, DeviceHub, SystemClock, Metrics]:
    config = parse_config(
        yaml.safe_dump(
            {
                "site": "bench",
                "windows": [{"id": f"w{n:02d}", "queue_window": n} for n in range(1, WINDOWS + 1)],
                "staff": [
                    {
                        "id": f"s{n:03d}",
                        "name": f"员工{n}",
                        "window": f"w{n:02d}",
                        "queue_no": 100 + n,
                    }
                    for n in range(1, WINDOWS + 1)
                ],
                "devices": [
                    {"id": "queue", "profile": "modbus_queue", "host": "127.0.0.1", "port": port}
                ],
            }
        )
    )
    device = config.devices[0]
    assert isinstance(device, ModbusQueueConfig)
    clock = SystemClock(config.zone)
    metrics = Metrics()
    hub = DeviceHub([(device.id, "queue")], clock, metrics)
    return device, Roster(config), hub, clock, metrics


async def driver_loop(port: int) -> tuple[Loop, Callable[[], None], dict[str, Any]]:
    """The driver's poll over its TCP link, as the gateway runs it, minus the store."""
    device, roster, hub, clock, metrics = hall(port)
    sink = KeptEvents()
    runner = DeviceRunner(device.id, "queue", hub, metrics)  # counts requests as in the gateway
    poller = QueuePoller(device, site="bench", clock=clock, bus=sink, hub=hub, roster=roster)
    link = TcpLink(
        "127.0.0.1", port, device.unit, timeout_s=1.0, count=runner.count_request, name=device.id
    )
    await link.connect()
    stats: dict[str, Any] = {"snapshots": 0, "sink": sink}

    async def loop(polls: int) -> None:
        for _ in range(polls):
            before = poller.snapshot
            await poller.poll(link.read)
            stats["snapshots"] += poller.snapshot is not before

    return loop, link.close, stats


async def bare_loop(
    port: int, *, busy: bool, obliged: bool = False
) -> tuple[Loop, Callable[[], None]]:
    """pymodbus alone, reading what the driver reads: the header, and when busy the plan.

    `obliged`: plus what every request owes the house rules and the metrics contract, done the
    plain way (an asyncio.timeout per read, beside pymodbus's own timer; its count and duration
    in hallgw_device_requests_total and the histogram). The driver bounds its reads with one
    watchdog per link instead, so what is left between the two is the driver's own work less
    what the watchdog saves.
    """
    layout = RegisterLayout(RegisterMap())
    assert layout.header_read is not None
    reads = [layout.header_read]
    if busy:
        reads += list(layout.plan(WINDOWS, SERVICES).reads)
    client = AsyncModbusTcpClient("127.0.0.1", port=port, reconnect_delay=0, retries=0)
    await client.connect()
    _device, _roster, hub, _clock, metrics = hall(port)
    runner = DeviceRunner("queue", "queue", hub, metrics)
    clock = asyncio.get_running_loop().time

    async def loop(polls: int) -> None:
        for _ in range(polls):
            for read in reads:
                answer = await client.read_holding_registers(
                    read.address, count=read.count, device_id=1
                )
                assert not answer.isError()

    async def obliged_loop(polls: int) -> None:
        for _ in range(polls):
            for read in reads:
                started = clock()
                async with asyncio.timeout(1.0):
                    answer = await client.read_holding_registers(
                        read.address, count=read.count, device_id=1
                    )
                assert not answer.isError()
                runner.count_request("ok", clock() - started)

    return (obliged_loop if obliged else loop), client.close


async def cpu_per_1000(loops: dict[str, Loop]) -> dict[str, float]:
    """CPU seconds per 1,000 polls of each loop: the median of blocks taken in turns, so that a
    block a neighbour on the machine disturbed does not count."""
    for loop in loops.values():
        await loop(WARM_UP)
    blocks: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(POLLS // BLOCK):
        for name, loop in loops.items():
            started = time.process_time()
            await loop(BLOCK)
            blocks[name].append(time.process_time() - started)
    return {name: statistics.median(spent) * 1000 / BLOCK for name, spent in blocks.items()}


async def measure(mode: str) -> tuple[dict[str, float], dict[str, Any]]:
    process, port = await start_controller(mode)
    try:
        driver, close_driver, stats = await driver_loop(port)
        bare, close_bare = await bare_loop(port, busy=mode != "idle")
        obliged, close_obliged = await bare_loop(port, busy=mode != "idle", obliged=True)
        try:
            figures = await cpu_per_1000({"driver": driver, "bare": bare, "obliged": obliged})
        finally:
            close_driver()
            close_bare()
            close_obliged()
    finally:
        process.terminate()
        await process.wait()
    polls = WARM_UP + POLLS
    events = stats["sink"].count
    return figures, {"busy_share": stats["snapshots"] / polls, "events_per_poll": events / polls}


async def run() -> list[Figure]:
    idle, idle_stats = await measure("idle")
    busy, busy_stats = await measure("busy")
    rounds, rounds_stats = await measure("rounds")
    print(
        f"idle: {idle_stats['busy_share']:.0%} of polls read past the header; busy: "
        f"{busy_stats['busy_share']:.0%} did, {busy_stats['events_per_poll']:.2f} events per "
        f"poll; rounds: {rounds_stats['events_per_poll']:.2f} events per poll",
        file=sys.stderr,
    )
    assert idle_stats["busy_share"] <= 1 / (WARM_UP + POLLS), "idle polls read the header alone"
    assert busy_stats["busy_share"] == 1.0, "every busy poll found a change"
    assert rounds_stats["busy_share"] == 1.0, "every poll found a round of changes"
    ratio = busy["driver"] / busy["bare"]
    return [
        Figure(
            name=f"queue idle polls, {WINDOWS} windows, CPU per 1000",
            value=idle["driver"],
            unit="s",
            baseline_name="bare pymodbus, header",
            baseline=idle["bare"],
        ),
        Figure(
            name=f"queue busy polls (1 change each), {WINDOWS} windows, CPU per 1000",
            value=busy["driver"],
            unit="s",
            baseline_name="bare pymodbus, same reads",
            baseline=busy["bare"],
            goal=f"ratio <= {BUSY_GOAL}",
            met=ratio <= BUSY_GOAL,
        ),
        Figure(
            name=f"queue busy polls (1 change each), {WINDOWS} windows, CPU per 1000",
            value=busy["driver"],
            unit="s",
            baseline_name="pymodbus + timeout + request metrics",
            baseline=busy["obliged"],
        ),
        Figure(
            name=(
                f"queue busy polls (every window may change, "
                f"{rounds_stats['events_per_poll']:.1f} events each), CPU per 1000"
            ),
            value=rounds["driver"],
            unit="s",
            baseline_name="bare pymodbus, same reads",
            baseline=rounds["bare"],
        ),
    ]


if __name__ == "__main__":  # alone: python -m bench.modbus_queue
    found = asyncio.run(run())
    save("modbus_queue", found)
    print(f"machine: {machine()}")
    print(table(found))
