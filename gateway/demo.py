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
from pathlib import Path
from typing import Any, Final

import yaml

from gateway.app import Gateway
from gateway.config import Config, ConfigError, parse_config, resolve_secrets
from gateway.errors import GatewayError
from simulators.broker import Mosquitto, free_port
from simulators.ff68_pad import PadBus, SimPad


class DemoError(GatewayError):
    """The demo cannot run on this machine (a program it needs is missing)."""


DEMO_CONFIG: Final = Path(__file__).resolve().parents[1] / "config" / "demo.yaml"
# ratings per pad per minute in the demo: lively enough to watch, calm enough to read
PAD_EVENTS_PER_MIN: Final = 3.0


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
        pad_buses: list[tuple[PadBus, dict[int, str]]] = []
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
            pad_buses.append((simulator, logins))

        config = parse_config(yaml.safe_dump(data, allow_unicode=True), source=str(DEMO_CONFIG))
        token = os.environ.setdefault("HALLGW_API_TOKEN", token_source.token_urlsafe(18))
        secrets, _missing = resolve_secrets(config)
        gateway = Gateway(config, secrets)
        ready = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(gateway.run(ready.set), name="gateway")
            for index, (simulator, logins) in enumerate(pad_buses):
                group.create_task(
                    simulator.run_random(events_per_pad_per_min=PAD_EVENTS_PER_MIN, cards=logins),
                    name=f"demo-pads-{index}",
                )
            await ready.wait()
            _banner(config, broker.port, token, state if keep else None)


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
