"""config/mosquitto: the hall broker's own config and ACL, run by a real Mosquitto (only its
paths and port changed for the test). The gateway works with its password; the board reads but
cannot send commands or pose as the gateway; the desk sends commands; nobody gets in without a
password; retained state survives a broker restart; the commented bridge feeds a city broker."""

from __future__ import annotations

import asyncio
import getpass
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from gateway.config import Secret
from simulators.broker import find_program
from tests.support.harness import REPO, api_secrets, pad_hall, running_gateway, to_config
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import Recorder, publish

SHIPPED = REPO / "config" / "mosquitto"
ROOT = "hall/test-hall"
PASSWORDS = {
    "hallgw": "gw-pw-51a",
    "board": "board-pw-0c2",
    "platform": "platform-pw-77d",
    "desk": "desk-pw-9e7",
}
_DIRECTIVE = re.compile(r"^#([a-z_]+) ")


def write_hall_config(directory: Path, port: int, bridge_to: int | None) -> None:
    """The shipped config and ACL with this test's paths and port; the bridge uncommented (and
    pointed at `bridge_to`) if given."""
    local = {
        "pid_file": None,
        "user": f"user {getpass.getuser()}",
        "persistence_location": f"persistence_location {directory}/",
        "log_dest": f"log_dest file {directory}/mosquitto.log",
        "listener": f"listener {port} 127.0.0.1",
        "password_file": f"password_file {directory}/passwd",
        "acl_file": f"acl_file {directory}/acl",
        "address": f"address 127.0.0.1:{bridge_to}",
        "bridge_cafile": None,  # the test's city broker speaks plain MQTT
    }
    lines: list[str] = []
    replaced: set[str] = set()
    in_bridge = False
    for shipped in (SHIPPED / "mosquitto.conf").read_text().splitlines():
        in_bridge = (in_bridge or shipped.startswith("# >>> bridge")) and not shipped.startswith(
            "# <<< bridge"
        )
        line = shipped
        if in_bridge and bridge_to is not None and _DIRECTIVE.match(shipped):
            line = shipped[1:]
        key = line.split(" ", 1)[0]
        if key in local:
            replaced.add(key)
            if local[key] is None:
                continue
            line = str(local[key])
        lines.append(line)
    expected = set(local) - ({"address", "bridge_cafile"} if bridge_to is None else set())
    assert replaced == expected, f"the shipped config changed shape: {expected - replaced}"
    directory.mkdir(parents=True)
    (directory / "mosquitto.conf").write_text("\n".join(lines) + "\n")
    (directory / "acl").write_text((SHIPPED / "acl").read_text())
    (directory / "passwd").write_text("")
    (directory / "passwd").chmod(0o600)


async def hall_broker(directory: Path, *, bridge_to: int | None = None) -> Mosquitto:
    """A Mosquitto running the shipped config and ACL, with every account of PASSWORDS."""
    broker = Mosquitto(directory, config_file=directory / "mosquitto.conf")
    write_hall_config(directory, broker.port, bridge_to)
    for user, password in PASSWORDS.items():
        process = await asyncio.create_subprocess_exec(
            find_program("mosquitto_passwd"), "-b", str(directory / "passwd"), user, password
        )
        assert await process.wait() == 0
    await broker.start()
    return broker


@pytest.fixture
async def hall_mqtt(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    broker = await hall_broker(tmp_path / "hall-broker")
    try:
        yield broker
    finally:
        await broker.stop()


def gateway_config(tmp_path: Path, port: int) -> dict[str, object]:
    data = pad_hall(tmp_path, mqtt_port=port, bus_url="unused", pads=0, buses=[])
    data["mqtt"] = {
        "host": "127.0.0.1",
        "port": port,
        "username": "hallgw",
        "password_env": "HALLGW_MQTT_PASSWORD",
    }
    return data


def login(user: str) -> dict[str, str]:
    return {"username": user, "password": PASSWORDS[user]}


def command(request_id: str) -> bytes:
    return json.dumps({"request_id": request_id, "text": "暂停服务", "seconds": 10}).encode()


async def test_the_gateway_works_with_its_password_and_the_acl_keeps_the_board_reading(
    tmp_path: Path, hall_mqtt: Mosquitto
) -> None:
    config = to_config(gateway_config(tmp_path, hall_mqtt.port))
    secrets = api_secrets(mqtt_password=Secret(PASSWORDS["hallgw"]))
    async with (
        Recorder(hall_mqtt.port, [f"{ROOT}/#"], **login("board")) as board,
        running_gateway(config, secrets),
    ):
        state = await board.wait_for(lambda: board.last("gateway/state"), what="read by board")
        assert state["state"] == "online"

        # the board may not command anything, nor pose as the gateway
        await publish(
            hall_mqtt.port, f"{ROOT}/cmd/display/led-1", command("from-board"), **login("board")
        )
        await publish(
            hall_mqtt.port,
            f"{ROOT}/gateway/state",
            json.dumps({"v": 1, "state": "offline"}),
            **login("board"),
        )
        # the desk may: its command comes after the board's, and so would its answer
        await publish(
            hall_mqtt.port, f"{ROOT}/cmd/display/led-1", command("from-desk"), **login("desk")
        )
        reply = await board.wait_for(lambda: board.last("cmd/reply/from-desk"), what="desk reply")
        assert reply["ok"] is False  # no led-1 in this hall: answered all the same
        assert board.on("cmd/reply/from-board") == [], "the board's command never arrived"
        assert [m.json()["state"] for m in board.on("gateway/state")] == ["online"]


async def test_nobody_gets_in_without_a_password(hall_mqtt: Mosquitto) -> None:
    with pytest.raises(aiomqtt.MqttError):
        await publish(hall_mqtt.port, f"{ROOT}/cmd/outing", b"{}")
    with pytest.raises(aiomqtt.MqttError):
        await publish(hall_mqtt.port, f"{ROOT}/cmd/outing", b"{}", username="desk", password="x")


async def test_retained_state_survives_a_restart_of_the_hall_broker(
    tmp_path: Path, hall_mqtt: Mosquitto
) -> None:
    config = to_config(gateway_config(tmp_path, hall_mqtt.port))
    secrets = api_secrets(mqtt_password=Secret(PASSWORDS["hallgw"]))
    async with Recorder(hall_mqtt.port, [f"{ROOT}/gateway/state"], **login("board")) as board:
        async with running_gateway(config, secrets):
            await board.wait_for(
                lambda: (board.last("gateway/state") or {}).get("state") == "online"
            )
        await board.wait_for(lambda: board.last("gateway/state")["state"] == "offline")
    await hall_mqtt.restart()  # persistence on: saved on the clean stop, read back on start
    async with Recorder(hall_mqtt.port, [f"{ROOT}/gateway/state"], **login("platform")) as late:
        retained = await late.wait_for(lambda: late.messages, what="the retained state")
        assert retained[0].retain
        assert retained[0].json() == {"v": 1, "state": "offline"}


async def test_the_commented_bridge_feeds_a_city_broker(tmp_path: Path) -> None:
    city = Mosquitto(tmp_path / "city")
    await city.start()
    hall = await hall_broker(tmp_path / "hall-broker", bridge_to=city.port)
    try:
        config = to_config(gateway_config(tmp_path, hall.port))
        secrets = api_secrets(mqtt_password=Secret(PASSWORDS["hallgw"]))
        async with (
            Recorder(city.port, [f"{ROOT}/#"]) as platform,
            running_gateway(config, secrets),
        ):
            state = await platform.wait_for(
                lambda: platform.last("gateway/state"),
                timeout=20,
                what="the hall on the city broker",
            )
            assert state["state"] == "online"
    finally:
        await hall.stop()
        await city.stop()
