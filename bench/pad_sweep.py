"""Pad bus sweep: 32 pads at 9600 baud with byte pacing, against the bus's wire-time floor.

The simulator runs in its own process and paces every byte at the baud rate (a request takes its
wire time to arrive, each answer byte its own), so the floor is the contract's: a poll and an
empty answer are 9 bytes each, 18.75 ms at 9600 8N1, so a sweep of N pads takes at least
N x 18.75 ms (the simulated pads answer with no turnaround of their own).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Final

import yaml

from bench.common import Figure
from gateway.app import Gateway
from gateway.config import Secret, Secrets, parse_config
from simulators.broker import Mosquitto, free_port

PADS: Final = 32
BAUDRATE: Final = 9600
FRAME_BYTES: Final = 9  # devices.md: a poll and an empty answer are 9 bytes each
WARM_UP_S: Final = 5.0  # the first sweeps also read every pad's status
MEASURE_S: Final = 20.0


def floor_s(pads: int = PADS, baudrate: int = BAUDRATE) -> float:
    return pads * 2 * FRAME_BYTES * 10 / baudrate


async def sweep_totals(gateway: Gateway) -> tuple[float, float]:
    samples = next(iter(gateway.metrics.bus_sweep.collect())).samples
    total = next(s.value for s in samples if s.name.endswith("_sum"))
    count = next(s.value for s in samples if s.name.endswith("_count"))
    return total, count


async def run() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="hallgw-bench-") as tmp:
        state = Path(tmp)
        broker = Mosquitto(state / "mosquitto")
        await broker.start()
        link = state / "pads"
        simulator = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "simulators.ff68_pad",
            "--link",
            str(link),
            "--addresses",
            f"1-{PADS}",
            "--pace",
            "--baudrate",
            str(BAUDRATE),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            assert simulator.stdout is not None
            await simulator.stdout.readline()  # "pads on …": the pty is ready
            config = parse_config(
                yaml.safe_dump(
                    {
                        "site": "bench",
                        "mqtt": {"port": broker.port},
                        "http": {"port": free_port(), "device_port": free_port(), "token_env": "X"},
                        "store": {"path": str(state / "bench.db")},
                        "buses": [{"id": "pads", "url": str(link), "baudrate": BAUDRATE}],
                        "windows": [{"id": f"w{n}"} for n in range(1, PADS + 1)],
                        "devices": [
                            {
                                "id": f"pad-{n}",
                                "profile": "ff68_pad",
                                "bus": "pads",
                                "address": n,
                                "window": f"w{n}",
                            }
                            for n in range(1, PADS + 1)
                        ],
                    }
                )
            )
            gateway = Gateway(config, Secrets(api_token=Secret("bench")))
            task = asyncio.create_task(gateway.run(), name="gateway")
            try:
                await asyncio.sleep(WARM_UP_S)
                assert gateway.hub.online_count() == PADS, "every pad answers"
                total_0, count_0 = await sweep_totals(gateway)
                await asyncio.sleep(MEASURE_S)
                total_1, count_1 = await sweep_totals(gateway)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        finally:
            simulator.terminate()
            await simulator.wait()
            await broker.stop()
    sweep = (total_1 - total_0) / (count_1 - count_0)
    floor = floor_s()
    return [
        Figure(
            name=f"pad bus sweep, {PADS} pads at {BAUDRATE} baud",
            value=sweep * 1000,
            unit="ms",
            baseline_name="wire-time floor",
            baseline=floor * 1000,
            goal="ratio <= 1.25",
            met=sweep / floor <= 1.25,
        )
    ]
