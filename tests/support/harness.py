"""Run the gateway in a test: in this process (a task) or as a `hallgw run` child process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import Gateway
from gateway.config import Config, Secret, Secrets, parse_config
from tests.support.mosquitto import free_port
from tests.support.polling import until_async

REPO = Path(__file__).resolve().parents[2]
API_TOKEN = "test-token-7f3a"


def pad_hall(
    tmp_path: Path,
    *,
    mqtt_port: int,
    bus_url: str,
    pads: int = 4,
    site: str = "test-hall",
    bus_timeout_ms: int = 100,
    **overrides: Any,
) -> dict[str, Any]:
    """A hall with `pads` windows, each with a pad on one bus and an A and a B staff member."""
    windows = [
        {"id": f"w{n:02d}", "name": f"{n}号窗口", "department": "市场监管局", "floor": 1}
        for n in range(1, pads + 1)
    ]
    staff = []
    for n in range(1, pads + 1):
        for post, offset in (("A", 0), ("B", 500)):
            number = n + offset
            staff.append(
                {
                    "id": f"s{number:03d}",
                    "name": f"员工{number}",
                    "window": f"w{n:02d}",
                    "post": post,
                    "card": f"{number:010d}",
                    "pin": str(1000 + number),
                    "queue_no": 100 + number,
                }
            )
    data: dict[str, Any] = {
        "site": site,
        "name": "测试政务服务中心",
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "keepalive_s": 5},
        "http": {"port": free_port(), "device_port": free_port(), "token_env": "HALLGW_TEST_TOKEN"},
        "store": {"path": str(tmp_path / "hallgw.db")},
        "buses": [
            {
                "id": "pads-1f",
                "url": bus_url,
                "baudrate": 9600,
                "timeout_ms": bus_timeout_ms,
                "retries": 1,
            }
        ],
        "devices": [
            {
                "id": f"pad-w{n:02d}",
                "profile": "ff68_pad",
                "bus": "pads-1f",
                "address": n,
                "window": f"w{n:02d}",
            }
            for n in range(1, pads + 1)
        ],
        "timetables": {
            "standard": {
                "periods": [{"start": "09:00", "end": "12:00"}, {"start": "13:30", "end": "17:30"}]
            }
        },
        "windows": windows,
        "staff": staff,
    }
    data.update(overrides)
    return data


def to_config(data: dict[str, Any]) -> Config:
    return parse_config(yaml.safe_dump(data, allow_unicode=True))


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def api_secrets(**extra: Any) -> Secrets:
    return Secrets(api_token=Secret(API_TOKEN), **extra)


@dataclass
class RunningGateway:
    gateway: Gateway
    config: Config
    task: asyncio.Task[None]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.config.http.port}"

    async def get(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session, session.get(self.base_url + path) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return await scrape(self.base_url)

    async def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels`."""
        samples = await self.metrics()
        return sum(
            value
            for (sample, sample_labels), value in samples.items()
            if sample == name and set(labels.items()) <= set(sample_labels)
        )


async def wait_metric(
    running: RunningGateway, name: str, value: float, timeout: float = 10.0, **labels: str
) -> None:
    """Wait until the metric (summed over matching series) reaches `value`."""
    current = 0.0

    async def reached() -> bool:
        nonlocal current
        current = await running.metric(name, **labels)  # a scrape is the only way to look
        return current >= value

    await until_async(
        reached, lambda: f"{name}{labels} to reach {value} (stayed at {current})", timeout, 0.05
    )


async def scrape(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as session, session.get(base_url + "/metrics") as resp:
        text = await resp.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@contextlib.asynccontextmanager
async def running_gateway(
    config: Config, secrets: Secrets | None = None, gateway: Gateway | None = None
) -> AsyncIterator[RunningGateway]:
    gateway = gateway or Gateway(config, secrets or api_secrets())
    ready = asyncio.Event()
    task = asyncio.create_task(gateway.run(ready.set), name="gateway-under-test")
    try:
        async with asyncio.timeout(15):
            waiter = asyncio.create_task(ready.wait())
            done, _pending = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                waiter.cancel()
                task.result()
                raise AssertionError("the gateway stopped while starting")
        yield RunningGateway(gateway, config, task)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class GatewayProcess:
    """`hallgw run -c FILE` as a child process (for SIGKILL and restart tests).

    Every process started is remembered until it has exited, so that a failing test cannot
    leave a gateway running (see `kill_leftovers`, run after every test).
    """

    live: ClassVar[set[asyncio.subprocess.Process]] = set()

    def __init__(
        self,
        config_path: Path,
        log_path: Path,
        args: Sequence[str] = (),
        *,
        env: dict[str, str] | None = None,
    ) -> None:
        """`args`: more options for `hallgw run` (a simulated hall's `--clock-*`)."""
        self.config_path = config_path
        self.log_path = log_path
        self.args = tuple(args)
        self.extra_env = env or {}
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        env = {
            **os.environ,
            "HALLGW_TEST_TOKEN": API_TOKEN,
            "PYTHONPATH": str(REPO),
            **self.extra_env,
        }
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway",
                "run",
                "-c",
                str(self.config_path),
                *self.args,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=str(REPO),
            )
        GatewayProcess.live.add(self.process)

    async def wait_healthy(self, port: int, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout), aiohttp.ClientSession() as session:
            while True:
                assert self.process is not None
                if self.process.returncode is not None:
                    raise AssertionError(f"gateway exited: {self.log_path.read_text()}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)

    def send(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process is None:
            return 0
        if self.process.returncode is not None:
            return self.process.returncode
        self.process.send_signal(sig)
        async with asyncio.timeout(15):
            return await self.wait()

    async def wait(self) -> int:
        assert self.process is not None
        code = await self.process.wait()
        GatewayProcess.live.discard(self.process)
        return code

    @classmethod
    def kill_leftovers(cls) -> list[int]:
        """SIGKILL every process a test left running; their pids."""
        killed = []
        for process in list(cls.live):
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                    killed.append(process.pid)
        cls.live.clear()
        return killed
