"""Device event → hall board (SSE client) latency.

A window's A logs out at the pad (the window goes unattended) or back in (it is attended again);
the latency runs from that moment at the simulated pad to the moment a client of
`/board/events` receives a board that shows it. Baseline: the same pad event's arrival on MQTT
(`…/events/pad/{device_id}`), in the same run; both include the wait for the bus's next sweep
(`sweep_interval_ms`, 1 s by default), so the ratio is what presence and the board add.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import statistics
import time
from typing import Any, Final

import aiohttp

from bench.common import Figure
from bench.event_latency import Arrivals
from bench.hall_run import HallRun, working_day
from simulators.hall import HallShape

SHAPE: Final = HallShape(windows=24, floors=2, clocks=1, kiosks=1, leds=1)
CHANGES: Final = 40
SWEEP_S: Final = 1.0  # the buses' default sweep_interval_ms


class BoardStream:
    """A client of /board/events: the time each board arrived, and the last one."""

    def __init__(self) -> None:
        self.boards: list[tuple[float, dict[str, Any]]] = []
        self.arrived = asyncio.Event()

    async def follow(self, url: str) -> None:
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            event = ""
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event == "board":
                    self.boards.append((time.perf_counter(), json.loads(line[5:])))
                    self.arrived.set()

    async def until(self, shows: Any, within_s: float = 30.0) -> float:
        """When the first board after now for which `shows(board)` is true arrived."""
        start = len(self.boards)
        async with asyncio.timeout(within_s):
            while True:
                for at, board in self.boards[start:]:
                    if shows(board):
                        return at
                start = len(self.boards)
                self.arrived.clear()
                await self.arrived.wait()


def pads_only(data: dict[str, Any]) -> None:
    """No queue controller: a caller showing the person would keep the window attended, and
    this measures what a pad event does to the board."""
    data["devices"] = [d for d in data["devices"] if d["profile"] != "modbus_queue"]


def unattended(board: dict[str, Any]) -> set[str]:
    return {w["window_id"] for w in board.get("unattended_windows", [])}


async def run() -> list[Figure]:
    board_ms: list[float] = []
    mqtt_ms: list[float] = []
    async with HallRun(SHAPE, start=working_day(10), tweak=pads_only) as run:
        assert run.hall is not None
        staff = {p["window"]: p for p in run.data["staff"] if p["post"] == "A"}
        clock = next(iter(run.hall.clocks.values()))
        for person in staff.values():  # everyone has arrived and sits at the window
            clock.punch(person["pin"], at=working_day(8, 50))
        for window, person in staff.items():
            run.hall.pads[window].login(person["card"])
        stream = BoardStream()
        follower = asyncio.create_task(stream.follow(run.api + "/board/events"), name="sse")
        pads = Arrivals(run.broker.port, f"{run.root}/events/pad/#", "event_id")
        try:
            await stream.until(
                lambda b: b["counts"].get("idle", 0) + b["counts"].get("serving", 0) == len(staff),
                within_s=60,
            )
            for n in range(CHANGES // 2):
                window = sorted(staff)[n % len(staff)]
                pad = run.hall.pads[window]
                for leaves in (True, False):
                    # at a random moment of the bus's sweep, not locked to the last one
                    await asyncio.sleep(random.uniform(0, SWEEP_S))
                    seen = len(pads.times)
                    started = time.perf_counter()
                    if leaves:
                        pad.logout()
                        at = await stream.until(lambda b, w=window: w in unattended(b))
                    else:
                        pad.login(staff[window]["card"])
                        at = await stream.until(lambda b, w=window: w not in unattended(b))
                    board_ms.append(1000 * (at - started))
                    async with asyncio.timeout(30):
                        # the pad event's arrival is noted in paho's thread
                        while len(pads.times) == seen:  # noqa: ASYNC110
                            await asyncio.sleep(0.01)
                    mqtt_ms.append(1000 * (max(pads.times.values()) - started))
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            pads.close()
    p99 = statistics.quantiles(board_ms, n=100)[98]
    base99 = statistics.quantiles(mqtt_ms, n=100)[98]
    return [
        Figure(
            "pad event → board SSE p50",
            statistics.median(board_ms),
            "ms",
            "pad event → MQTT p50",
            statistics.median(mqtt_ms),
        ),
        Figure("pad event → board SSE p99", p99, "ms", "pad event → MQTT p99", base99),
    ]
