"""Reloading (SIGHUP) and stopping (SIGTERM): a new roster and rules without dropping a device
connection, a bad config refused whole with its field paths and the running one kept, a clean
stop that keeps what the broker has not taken."""

from __future__ import annotations

import copy
import logging
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.alertservice import AlertService
from simulators.ff68_pad import PadBus
from tests.support.harness import (
    GatewayProcess,
    api_secrets,
    pad_hall,
    running_gateway,
    scrape,
    to_config,
    write_config,
)
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import Recorder
from tests.support.polling import until, until_async

ROOT = "hall/test-hall"
NEW_CARD = "0000000900"


def hall(tmp_path: Path, broker: Mosquitto) -> dict[str, Any]:
    data = pad_hall(tmp_path, mqtt_port=broker.port, bus_url=str(tmp_path / "pads-1f"), pads=2)
    data["devices"].append({"id": "clock-1", "profile": "zk_push", "serial_number": "CK0001"})
    return data


def with_new_staff(data: dict[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(data)
    changed["staff"].append(
        {"id": "s900", "name": "新同事", "window": "w01", "post": "B", "card": NEW_CARD}
    )
    changed["alerts"] = {"device_offline_for_s": 90}
    return changed


def logins(mqtt: Recorder) -> list[dict[str, Any]]:
    return [e for e in mqtt.events("pad") if e["action"] == "login"]


async def test_a_reload_takes_new_staff_and_rules_without_touching_a_device(
    tmp_path: Path, broker: Mosquitto, padbus: PadBus
) -> None:
    data = hall(tmp_path, broker)
    async with (
        Recorder(broker.port, [f"{ROOT}/#"]) as mqtt,
        running_gateway(to_config(data)) as running,
    ):
        await mqtt.wait_for(
            lambda: (mqtt.last("pad-w01/availability") or {}).get("state") == "online"
        )
        gateway = running.gateway
        roster = gateway.roster
        polls = padbus.pad(1).polls
        assert gateway.reload(to_config(with_new_staff(data)), api_secrets())

        assert gateway.roster is roster, "updated in place: the drivers hold this one"
        assert roster.by_card(NEW_CARD) is not None
        attendance = gateway.mounted["clock-1"].extras["attendance"]
        assert "s900" in attendance.rules.staff
        [alerts] = [s for s in gateway.services if isinstance(s, AlertService)]
        assert alerts.engine.config.device_offline_for_s == 90

        padbus.pad(1).login(NEW_CARD)
        login = await mqtt.wait_for(lambda: logins(mqtt), what="the login")
        assert login[0]["staff_id"] == "s900"
        assert padbus.pad(1).polls > polls
        states = [m.json()["state"] for m in mqtt.on("pad-w01/availability")]
        assert states == ["offline", "online"], "not_seen, then online, and never offline since"
        assert await running.metric("hallgw_config_reloads_total", result="ok") == 1


async def test_a_reload_that_needs_a_restart_is_refused_whole(
    tmp_path: Path, broker: Mosquitto, padbus: PadBus, caplog: pytest.LogCaptureFixture
) -> None:
    data = hall(tmp_path, broker)
    async with (
        Recorder(broker.port, [f"{ROOT}/events/#"]) as mqtt,
        running_gateway(to_config(data)) as running,
    ):
        changed = with_new_staff(data)
        changed["devices"][1]["address"] = 9  # a device moved: only a restart re-mounts it
        changed["mqtt"]["keepalive_s"] = 60
        caplog.set_level(logging.ERROR, logger="gateway.app")
        assert not running.gateway.reload(to_config(changed), api_secrets())
        refused = [r.getMessage() for r in caplog.records if r.name == "gateway.app"]
        assert refused == [
            "config reload refused (the running config is kept): "
            "mqtt: changed; restart hallgw to apply it",
            "config reload refused (the running config is kept): "
            "devices: changed; restart hallgw to apply it",
        ]
        assert running.gateway.roster.by_card(NEW_CARD) is None, "nothing half-applied"
        padbus.pad(1).login(NEW_CARD)
        login = await mqtt.wait_for(lambda: logins(mqtt), what="the login")
        assert login[0]["staff_id"] is None
        assert await running.metric("hallgw_config_reloads_total", result="refused") == 1
        assert await running.metric("hallgw_config_reloads_total", result="ok") == 0


async def wait_reloads(port: int, result: str, value: float) -> None:
    async def counted() -> bool:  # a scrape is the only way to see the counter
        samples = await scrape(f"http://127.0.0.1:{port}")
        return samples.get(("hallgw_config_reloads_total", (("result", result),)), 0) >= value

    await until_async(counted, f"{value} reloads with result {result}", 10, 0.05)


async def test_sighup_refuses_a_bad_file_with_its_paths_then_takes_a_good_one(
    tmp_path: Path, broker: Mosquitto, padbus: PadBus
) -> None:
    data = hall(tmp_path, broker)
    path = write_config(tmp_path / "hall.yaml", data)
    port = data["http"]["port"]
    gateway = GatewayProcess(path, tmp_path / "gw.log")
    async with Recorder(broker.port, [f"{ROOT}/#"]) as mqtt:
        await gateway.start()
        try:
            await gateway.wait_healthy(port)
            await mqtt.wait_for(
                lambda: (mqtt.last("pad-w01/availability") or {}).get("state") == "online"
            )
            bad = with_new_staff(data)
            bad["devices"][0]["address"] = 300
            bad["staff"][0]["window"] = "w99"
            write_config(path, bad)
            gateway.send(signal.SIGHUP)
            await wait_reloads(port, "refused", 1)
            log = (tmp_path / "gw.log").read_text()
            assert "config reload refused (the running config is kept): devices[0].address:" in log
            assert "staff[0].window: unknown window 'w99' (not in windows)" in log

            write_config(path, with_new_staff(data))
            gateway.send(signal.SIGHUP)
            await wait_reloads(port, "ok", 1)
            padbus.pad(2).login(NEW_CARD)
            login = await mqtt.wait_for(lambda: logins(mqtt), what="the login")
            assert login[0]["staff_id"] == "s900"
            assert [m.json()["state"] for m in mqtt.on("pad-w02/availability")][-1] == "online"
            assert await gateway.stop(signal.SIGTERM) == 0
        finally:
            await gateway.stop(signal.SIGKILL)
    log = (tmp_path / "gw.log").read_text()
    assert log.count("bus pads-1f: ") == 1, "the bus was opened once: no device dropped"
    assert "Traceback" not in log


async def test_sigterm_stops_cleanly_and_keeps_what_the_broker_has_not_taken(
    tmp_path: Path, broker: Mosquitto, padbus: PadBus
) -> None:
    data = hall(tmp_path, broker)
    port = data["http"]["port"]
    gateway = GatewayProcess(write_config(tmp_path / "hall.yaml", data), tmp_path / "gw.log")
    await gateway.start()
    try:
        await gateway.wait_healthy(port)
        await broker.stop()  # the broker is away: ratings wait in the outbox
        for key in (1, 2, 3):
            padbus.pad(1).press(key)
        # a pad hears its acknowledgement only once the rating is committed
        await until(lambda: len(padbus.pad(1).acked) >= 3, "3 ratings acknowledged", 10)
        assert await gateway.stop(signal.SIGTERM) == 0
    finally:
        await gateway.stop(signal.SIGKILL)
    db = sqlite3.connect(tmp_path / "hallgw.db")
    try:
        kept = [row[0] for row in db.execute("SELECT topic FROM outbox ORDER BY id")]
    finally:
        db.close()
    assert kept.count("events/rating/pad-w01") == 3, kept
    log = (tmp_path / "gw.log").read_text()
    assert "stopped" in log
    assert "Traceback" not in log

    await broker.start()
    async with Recorder(broker.port, [f"{ROOT}/events/#"]) as mqtt:
        await gateway.start()
        try:
            ratings = await mqtt.wait_for(
                lambda: len(mqtt.events("rating")) >= 3 and mqtt.events("rating"), timeout=20
            )
            assert [r["level"] for r in ratings] == [5, 4, 3]
        finally:
            assert await gateway.stop(signal.SIGTERM) == 0
