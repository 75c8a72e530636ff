"""A simulated hall and its gateway, as a process of its own, for the whole-hall benchmarks.

The simulators run in the benchmark's process (their CPU is not the gateway's); the gateway is
`hallgw run` in a child process, so its CPU time, RSS and open files are read from /proc alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Self
from zoneinfo import ZoneInfo

import aiohttp
import yaml

from gateway.clock import ScaledClock
from simulators.broker import Mosquitto, free_port
from simulators.hall import HallShape, SimulatedHall, shape_config

TOKEN: Final = "bench-token"
START_TIMEOUT_S: Final = 60.0
TICKS: Final = os.sysconf("SC_CLK_TCK")
PAGE: Final = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def open_files(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


class HallRun:
    """`async with HallRun(shape, ...) as run:` a hall, its broker and its gateway process."""

    def __init__(
        self,
        shape: HallShape,
        *,
        start: dt.datetime,
        speed: float = 1.0,
        tweak: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.shape = shape
        self.start = start
        self.speed = speed
        self.tweak = tweak
        self.state = Path(tempfile.mkdtemp(prefix="hallgw-bench-"))
        self.broker = Mosquitto(self.state / "mosquitto")
        self.data: dict[str, Any] = {}
        self.hall: SimulatedHall | None = None
        self.clock: ScaledClock | None = None
        self.gateway: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def pid(self) -> int:
        assert self.gateway is not None
        return self.gateway.pid

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.data['http']['port']}"

    @property
    def root(self) -> str:
        return f"hall/{self.data['site']}"

    async def __aenter__(self) -> Self:
        await self.broker.start()
        data = shape_config(self.shape)
        data["mqtt"]["port"] = self.broker.port
        data["store"]["path"] = str(self.state / "hallgw.db")
        data["http"]["port"] = free_port()
        data["http"]["device_port"] = free_port()
        if self.tweak is not None:
            self.tweak(data)
        self.data = data
        zone = ZoneInfo(data["timezone"])
        self.clock = ScaledClock(self.start.replace(tzinfo=zone), self.speed)
        self.hall = SimulatedHall(data, self.state, time_source=self.clock.now)
        await self.hall.start()
        path = self.state / "hall.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        env = {**os.environ, "HALLGW_API_TOKEN": TOKEN}
        self.gateway = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "--log-level",
            "WARNING",
            "run",
            "-c",
            str(path),
            "--clock-start",
            self.clock.start.replace(tzinfo=None).isoformat(),
            "--clock-speed",
            str(self.speed),
            "--clock-anchor",
            repr(self.clock.anchor),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stderr=(self.state / "gateway.log").open("wb"),
        )
        self._tasks = [asyncio.create_task(w, name=n) for n, w in self.hall.clock_runs()]
        await self._wait_healthy()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.gateway is not None and self.gateway.returncode is None:
            self.gateway.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await self.gateway.wait()
            except TimeoutError:
                self.gateway.kill()
                await self.gateway.wait()
        if self.hall is not None:
            await self.hall.close()
        await self.broker.stop()
        shutil.rmtree(self.state, ignore_errors=True)

    def tasks(self, name: str) -> list[asyncio.Task[None]]:
        """The running simulated behaviour of that name (e.g. `sim-clock-1`)."""
        return [task for task in self._tasks if task.get_name() == name]

    def spawn(self, name: str, work: Any) -> None:
        """Keep simulated behaviour running for the rest of the run."""
        self._tasks.append(asyncio.create_task(work, name=name))

    async def devices_online(self, within_s: float = 60.0) -> None:
        """Wait until every device the hall expects on is online."""
        async with aiohttp.ClientSession() as session, asyncio.timeout(within_s):
            while True:
                async with session.get(self.api + "/api/v1/devices") as resp:
                    devices = await resp.json()
                if all(d["state"] == "online" or d["reason"] == "off_hours" for d in devices):
                    return
                await asyncio.sleep(0.5)

    async def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.gateway is not None
                if self.gateway.returncode is not None:
                    log = (self.state / "gateway.log").read_text(errors="replace")
                    raise RuntimeError(f"the gateway exited: {log[-2000:]}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(self.api + "/healthz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise RuntimeError("the gateway did not become healthy")


def working_day(hour: int, minute: int = 0) -> dt.datetime:
    """Naive hall time on a Monday that is a working day in the generated hall's calendar."""
    return dt.datetime(2026, 11, 23, hour, minute)
