"""`hallgw demo` and `hallgw simulate hall`: a simulated hall on this machine.

Both start a private Mosquitto on a free port, a simulator for every device of the hall on real
transports (ptys, TCP, HTTP), and the gateway, until Ctrl-C. Nothing is installed or left behind
(the state directory is removed at the end unless `--keep`).

- `demo` runs the hall of `config/demo.yaml` in real time, its devices doing random things,
  and the gateway in this process.
- `simulate hall` generates a hall of N windows on F floors, runs the gateway as its own process
  (`hallgw run`) on a hall clock that runs `--speed` times faster, and plays working days.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import secrets as token_source
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import aiohttp
import yaml

from gateway.app import Gateway
from gateway.clock import ScaledClock
from gateway.config import Config, ConfigError, parse_config, resolve_secrets
from gateway.errors import GatewayError
from gateway.worktime import WorkCalendar
from simulators.broker import Mosquitto, free_port
from simulators.hall import HallDay, HallShape, SimulatedHall, shape_config


class DemoError(GatewayError):
    """The demo cannot run on this machine (a program it needs is missing)."""


DEMO_CONFIG: Final = Path(__file__).resolve().parents[1] / "config" / "demo.yaml"
# a gateway process that is not answering its health check by then has failed to start
GATEWAY_START_S: Final = 30.0
# the demo's hall time runs this much faster than real time: a working day in under an hour
DEMO_SPEED: Final = 10.0
# the demo starts shortly before the hall opens, so that arrivals are seen
DEMO_OPENING: Final = dt.time(8, 45)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_port(wanted: int) -> int:
    return wanted if wanted and _port_free(wanted) else free_port()


async def _broker(state: Path, stack: contextlib.AsyncExitStack) -> tuple[str, int]:
    """A private Mosquitto on a free loopback port, stopped with the hall; its address."""
    broker = Mosquitto(state / "mosquitto")
    try:
        await broker.start()
    except RuntimeError as err:  # mosquitto missing or unable to start
        raise DemoError(f"cannot start the hall's broker: {err}") from err
    stack.push_async_callback(broker.stop)
    return "127.0.0.1", broker.port


def _prepare(data: dict[str, Any], state: Path, broker: tuple[str, int], http_port: int) -> None:
    data["mqtt"]["host"], data["mqtt"]["port"] = broker
    data["store"] = {**data.get("store", {}), "path": str(state / "hallgw.db")}
    data["http"]["port"] = _pick_port(http_port)
    data["http"]["device_port"] = _pick_port(data["http"].get("device_port", 8081))


async def run_demo(
    *,
    http_port: int,
    keep: bool,
    speed: float = DEMO_SPEED,
    start: dt.datetime | None = None,
    mqtt: tuple[str, int] | None = None,
) -> None:
    """The demo hall's working days on a hall clock (by default the next working day from
    08:45, at DEMO_SPEED), every device simulated, the gateway in this process."""
    if not DEMO_CONFIG.exists():
        raise ConfigError([f"{DEMO_CONFIG}: the demo hall's config is missing"])
    data: dict[str, Any] = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    state = Path(tempfile.mkdtemp(prefix="hallgw-demo-"))
    async with contextlib.AsyncExitStack() as stack:
        if not keep:
            stack.callback(shutil.rmtree, state, ignore_errors=True)
        broker = mqtt or await _broker(state, stack)
        _prepare(data, state, broker, http_port)
        config = parse_config(yaml.safe_dump(data, allow_unicode=True), source=str(DEMO_CONFIG))
        zone = config.zone
        opening = start.replace(tzinfo=zone) if start else _next_opening(config)
        clock = ScaledClock(opening, speed)
        hall = SimulatedHall(data, state, time_source=clock.now)
        await hall.start()
        stack.push_async_callback(hall.close)

        config = parse_config(yaml.safe_dump(data, allow_unicode=True), source=str(DEMO_CONFIG))
        token = os.environ.setdefault("HALLGW_API_TOKEN", token_source.token_urlsafe(18))
        os.environ.setdefault("HALLGW_DEMO_KIOSK_TOKEN", token_source.token_urlsafe(18))
        secrets, _missing = resolve_secrets(config)
        gateway = Gateway(config, secrets, clock=clock)
        ready = asyncio.Event()
        api = f"http://127.0.0.1:{config.http.port}"
        async with asyncio.TaskGroup() as group:
            group.create_task(gateway.run(ready.set), name="gateway")
            for name, work in [*hall.clock_runs(), *hall.kiosk_runs()]:
                group.create_task(work, name=name)
            await ready.wait()
            _banner(config, token, state if keep else None)
            print(f"  hall time: {clock.now():%Y-%m-%d %H:%M} at {speed:g}x", flush=True)  # noqa: T201
            days = _play_days(hall, clock, WorkCalendar(config), api, token, days=0)
            group.create_task(days, name="hall-days")


def _next_opening(config: Config) -> dt.datetime:
    """08:45 on the next working day (today's if the hall works today): the hall opens."""
    calendar = WorkCalendar(config)
    day = dt.datetime.now(config.zone).date()
    while not calendar.is_working_day(day):
        day += dt.timedelta(days=1)
    return dt.datetime.combine(day, DEMO_OPENING, tzinfo=config.zone)


async def _play_days(
    hall: SimulatedHall,
    clock: ScaledClock,
    calendar: WorkCalendar,
    api: str,
    token: str,
    *,
    days: int,
) -> None:
    """Working days one after the other (`days` of them; 0: without end); days off pass."""
    played = 0
    while days == 0 or played < days:
        if calendar.is_working_day(clock.now().date()):
            await HallDay(hall, clock, api=api, token=token, seed=played + 1).run()
            played += 1
        if days == 0 or played < days:
            await _until_next_day(clock)


async def simulate_hall(
    shape: HallShape,
    *,
    speed: float,
    start: dt.datetime | None,
    days: int,
    http_port: int,
    keep: bool,
) -> None:
    """A generated hall, its gateway as a process of its own, and `days` working days played
    at `speed` (0 days: until Ctrl-C)."""
    state = Path(tempfile.mkdtemp(prefix="hallgw-sim-"))
    async with contextlib.AsyncExitStack() as stack:
        if not keep:
            stack.callback(shutil.rmtree, state, ignore_errors=True)
        broker = await _broker(state, stack)
        data = shape_config(shape)
        _prepare(data, state, broker, http_port)
        zone = ZoneInfo(data["timezone"])
        clock = ScaledClock(start.replace(tzinfo=zone) if start else dt.datetime.now(zone), speed)
        hall = SimulatedHall(data, state, time_source=clock.now)
        await hall.start()
        stack.push_async_callback(hall.close)
        path = state / "hall.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        config = parse_config(path.read_text(encoding="utf-8"), source=str(path))
        token = os.environ.setdefault("HALLGW_API_TOKEN", token_source.token_urlsafe(18))

        gateway = await asyncio.create_subprocess_exec(
            *gateway_command(path, clock), stdin=asyncio.subprocess.DEVNULL
        )
        stack.push_async_callback(stop_process, gateway)
        await wait_healthy(f"http://127.0.0.1:{config.http.port}/healthz", gateway)
        _banner(config, token, state if keep else None)
        print(f"  hall time: {clock.now():%Y-%m-%d %H:%M} at {speed:g}x", flush=True)  # noqa: T201
        runs = [*hall.clock_runs(), *hall.kiosk_runs()]
        tasks = [asyncio.create_task(work, name=name) for name, work in runs]
        try:
            api = f"http://127.0.0.1:{config.http.port}"
            await _play_days(hall, clock, WorkCalendar(config), api, token, days=days)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _until_next_day(clock: ScaledClock) -> None:
    tomorrow = dt.datetime.combine(
        clock.now().date() + dt.timedelta(days=1), dt.time(7, 30), tzinfo=clock.zone
    )
    await asyncio.sleep(max(0.0, (tomorrow - clock.now()).total_seconds()) / clock.speed)


def gateway_command(config_path: Path, clock: ScaledClock) -> list[str]:
    """`hallgw run` as a child process of this Python, on the hall clock `clock` (the same
    start, speed and anchor, so that the simulators and the gateway agree on the hall's time)."""
    return [
        sys.executable,
        "-m",
        "gateway",
        "run",
        "-c",
        str(config_path),
        "--clock-start",
        clock.start.replace(tzinfo=None).isoformat(timespec="seconds"),
        "--clock-speed",
        str(clock.speed),
        "--clock-anchor",
        repr(clock.anchor),
    ]


async def wait_healthy(
    url: str, process: asyncio.subprocess.Process, *, within_s: float = GATEWAY_START_S
) -> None:
    """Until the gateway child answers `url` (its /healthz) with 200; DemoError if it exits or
    does not within `within_s`."""
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise DemoError(f"the gateway exited with status {process.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise DemoError(f"the gateway did not answer {url} within {within_s:.0f} s")


async def stop_process(
    process: asyncio.subprocess.Process, *, within_s: float = GATEWAY_START_S
) -> int:
    """SIGTERM, then SIGKILL if it is still running `within_s` later; its exit status."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(within_s):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
    return process.returncode if process.returncode is not None else -1


def _banner(config: Config, token: str, kept: Path | None) -> None:
    base = f"http://127.0.0.1:{config.http.port}"
    root = config.mqtt_root
    lines = [
        f"hall-gateway: {config.display_name} (every device simulated)",
        f"  board:    {base}/board",
        f"  metrics:  {base}/metrics",
        f"  devices:  {base}/api/v1/devices",
        f"  health:   {base}/healthz",
        f"  watch:    mosquitto_sub -h {config.mqtt.host} -p {config.mqtt.port} -t '{root}/#' -v",
        f"  API token (for writes): {token}",
    ]
    if kept is not None:
        lines.append(f"  state directory (kept): {kept}")
    lines.append("Ctrl-C stops everything.")
    print("\n".join(lines), flush=True)  # noqa: T201
