"""`hallgw demo`: a simulated hall on this machine.

A private Mosquitto on a free port, simulators for every device of `config/demo.yaml` on real
ptys, and the gateway itself, until Ctrl-C. Nothing is installed or left behind (the state
directory is removed at the end unless `--keep`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets as token_source
import shutil
import socket
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Final

import yaml

from gateway.app import Gateway
from gateway.config import Config, ConfigError, parse_config, resolve_secrets
from gateway.errors import GatewayError
from simulators.broker import Mosquitto, free_port
from simulators.ff68_pad import PadBus, SimPad
from simulators.kiosk_http import KioskAgent
from simulators.led_text import LedController, SimScreen
from simulators.modbus_queue import DayScript, QueueController, QueueEngine, run_day
from simulators.zk_push import SimClock


class DemoError(GatewayError):
    """The demo cannot run on this machine (a program it needs is missing)."""


DEMO_CONFIG: Final = Path(__file__).resolve().parents[1] / "config" / "demo.yaml"
# the demo's pace: lively enough to watch, calm enough to read
PAD_EVENTS_PER_MIN: Final = 3.0
PUNCHES_PER_MIN: Final = 4.0
KIOSK_CHANGES_PER_MIN: Final = 1.0
# the queue controller plays a round (tickets issued, callers calling, finishing) this often
QUEUE_ROUND_S: Final = 3.0
QUEUE_SERVICES: Final = 4


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_port(wanted: int) -> int:
    return wanted if wanted and _port_free(wanted) else free_port()


def _login_cards(data: dict[str, Any]) -> dict[str, str]:
    """The card of each window's A post: who logs in at the pad when the demo starts."""
    return {
        person["window"]: person["card"]
        for person in data.get("staff", [])
        if person.get("post", "A") == "A" and person.get("card") and person.get("window")
    }


async def run_demo(*, http_port: int, keep: bool) -> None:
    if not DEMO_CONFIG.exists():
        raise ConfigError([f"{DEMO_CONFIG}: the demo hall's config is missing"])
    data: dict[str, Any] = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    state = Path(tempfile.mkdtemp(prefix="hallgw-demo-"))
    async with contextlib.AsyncExitStack() as stack:
        if not keep:
            stack.callback(shutil.rmtree, state, ignore_errors=True)
        broker = Mosquitto(state / "mosquitto")
        try:
            await broker.start()
        except RuntimeError as err:  # mosquitto missing or unable to start
            raise DemoError(f"cannot start the demo's broker: {err}") from err
        stack.push_async_callback(broker.stop)

        data["mqtt"]["port"] = broker.port
        data["store"]["path"] = str(state / "hallgw.db")
        data["http"]["port"] = _pick_port(http_port)
        data["http"]["device_port"] = _pick_port(data["http"].get("device_port", 8081))
        cards = _login_cards(data)
        pad_buses: list[tuple[PadBus, dict[int, str], dict[int, list[int]]]] = []
        for bus in data.get("buses", []):
            members = [d for d in data["devices"] if d.get("bus") == bus["id"]]
            simulator = PadBus(
                [SimPad(d["address"]) for d in members], baudrate=bus.get("baudrate", 9600)
            )
            link = state / bus["id"]
            await simulator.open_pty(link)
            stack.push_async_callback(simulator.close)
            bus["url"] = str(link)
            logins = {d["address"]: cards[d["window"]] for d in members if d["window"] in cards}
            keys = {d["address"]: sorted(d["key_map"]) for d in members if "key_map" in d}
            pad_buses.append((simulator, logins, keys))

        runs: list[tuple[str, Coroutine[Any, Any, None]]] = [
            (
                f"demo-pads-{index}",
                simulator.run_random(
                    events_per_pad_per_min=PAD_EVENTS_PER_MIN, cards=logins, keys=keys
                ),
            )
            for index, (simulator, logins, keys) in enumerate(pad_buses)
        ]
        runs += await _start_other_devices(data, stack)

        config = parse_config(yaml.safe_dump(data, allow_unicode=True), source=str(DEMO_CONFIG))
        token = os.environ.setdefault("HALLGW_API_TOKEN", token_source.token_urlsafe(18))
        os.environ.setdefault("HALLGW_DEMO_KIOSK_TOKEN", token_source.token_urlsafe(18))
        secrets, _missing = resolve_secrets(config)
        gateway = Gateway(config, secrets)
        ready = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(gateway.run(ready.set), name="gateway")
            for name, work in runs:
                group.create_task(work, name=name)
            await ready.wait()
            _banner(config, broker.port, token, state if keep else None)


async def _start_other_devices(
    data: dict[str, Any], stack: contextlib.AsyncExitStack
) -> list[tuple[str, Coroutine[Any, Any, None]]]:
    """Start a simulator for every punch clock, queue controller, kiosk and LED screen of the
    demo hall, point the config at it, and return the work that keeps them busy."""
    runs: list[tuple[str, Coroutine[Any, Any, None]]] = []
    device_url = f"http://127.0.0.1:{data['http']['device_port']}"
    pins = [person["pin"] for person in data.get("staff", []) if person.get("pin")]
    for device in data["devices"]:
        profile = device["profile"]
        if profile == "zk_push":
            # the clocks may start before the gateway listens: retry soon, not after 30 s
            clock = SimClock(device["serial_number"], device_url, error_delay_s=2.0)
            runs.append((f"demo-{device['id']}", clock.run()))
            runs.append(
                (
                    f"demo-{device['id']}-punches",
                    clock.run_random(pins, punches_per_min=PUNCHES_PER_MIN),
                )
            )
        elif profile == "kiosk_http":
            agent = KioskAgent(device["id"].upper())
            await agent.start()
            stack.push_async_callback(agent.crash)
            device["base_url"] = agent.base_url
            runs.append(
                (f"demo-{device['id']}", agent.run_random(changes_per_min=KIOSK_CHANGES_PER_MIN))
            )
        elif profile == "modbus_queue":
            windows = [w for w in data.get("windows", []) if w.get("queue_window")]
            engine = QueueEngine(max(w["queue_window"] for w in windows), QUEUE_SERVICES)
            staff = {
                window["queue_window"]: person["queue_no"]
                for window in windows
                for person in data.get("staff", [])
                if person.get("window") == window["id"]
                and person.get("post", "A") == "A"
                and person.get("queue_no")
            }
            queue = QueueController(engine, unit=device.get("unit", 1))
            device["port"] = await queue.serve_tcp()
            stack.push_async_callback(queue.stop)
            script = DayScript(engine, tickets=None, seed=None, staff=staff)
            runs.append((f"demo-{device['id']}", run_day(script, QUEUE_ROUND_S)))
        elif profile == "led_text":
            controller = LedController([SimScreen(device.get("address", 1))])
            device["port"] = await controller.open_tcp()
            stack.push_async_callback(controller.close)
    return runs


def _banner(config: Config, mqtt_port: int, token: str, kept: Path | None) -> None:
    base = f"http://127.0.0.1:{config.http.port}"
    root = config.mqtt_root
    lines = [
        f"hall-gateway demo: {config.display_name} (every device simulated)",
        f"  board:    {base}/board",
        f"  metrics:  {base}/metrics",
        f"  devices:  {base}/api/v1/devices",
        f"  health:   {base}/healthz",
        f"  watch:    mosquitto_sub -h 127.0.0.1 -p {mqtt_port} -t '{root}/#' -v",
        f"  API token (for writes): {token}",
    ]
    if kept is not None:
        lines.append(f"  state directory (kept): {kept}")
    lines.append("Ctrl-C stops everything.")
    print("\n".join(lines), flush=True)  # noqa: T201
