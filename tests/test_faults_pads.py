"""Faults around the pad path: the broker down, the gateway killed, the serial port gone."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from simulators.ff68_pad import PadBus
from tests.support.harness import (
    GatewayProcess,
    pad_hall,
    running_gateway,
    to_config,
    write_config,
)
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import Recorder

pytestmark = pytest.mark.fault

ROOT = "hall/test-hall"
PADS = 4  # pads on the `padbus` fixture's bus (tests/conftest.py)
# mqtt.md's scenario: the broker is away this long while pads keep producing
BROKER_OUTAGE_S = 10.0


def one_fact_per_id(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Events by event_id, checking that a repeated id always carries the same fact."""
    by_id: dict[str, dict[str, Any]] = {}
    for event in events:
        known = by_id.setdefault(event["event_id"], event)
        assert known == event, f"event_id {event['event_id']} names two different facts"
    return by_id


async def keep_pressing(bus: PadBus, every_s: float) -> None:
    key = 0
    while True:
        for pad in bus.pads.values():
            pad.press(key % 5 + 1)
            key += 1
        await asyncio.sleep(every_s)


async def test_every_event_arrives_across_a_broker_outage(tmp_path: Path, padbus: PadBus) -> None:
    broker = Mosquitto(tmp_path / "mosquitto", persistence=True)
    await broker.start()
    data = pad_hall(tmp_path, mqtt_port=broker.port, bus_url=str(tmp_path / "pads-1f"), pads=PADS)
    try:
        async with (
            Recorder(broker.port, [f"{ROOT}/events/#"], persistent_id="witness") as mqtt,
            running_gateway(to_config(data)) as running,
        ):
            presses = asyncio.create_task(keep_pressing(padbus, 0.2), name="presses")
            try:
                await mqtt.wait_for(lambda: len(mqtt.events("rating")) >= 20, what="traffic")
                await broker.stop()
                acked_before = sum(len(pad.acked) for pad in padbus.pads.values())
                await asyncio.sleep(BROKER_OUTAGE_S)  # the outage itself, not a wait for a state
                assert running.gateway.store is not None
                assert running.gateway.store.outbox_depth > 0, "events wait in the outbox"
                await broker.start()
            finally:
                presses.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await presses
            await mqtt.wait_for(
                lambda: not any(p.queue for p in padbus.pads.values()),
                timeout=30,
                what="every pad's events acknowledged",
            )
            acked = sum(len(pad.acked) for pad in padbus.pads.values())
            assert acked > acked_before + 20, "pads were answered all through the outage"
            await mqtt.wait_for(
                lambda: len(one_fact_per_id(mqtt.events("rating"))) >= acked,
                timeout=60,
                what=f"all {acked} acknowledged ratings",
            )
            for n in range(1, PADS + 1):
                heard = {
                    e["event_id"]
                    for e in mqtt.events("rating")
                    if e["device_id"] == f"pad-w{n:02d}"
                }
                assert len(heard) == len(padbus.pad(n).acked), f"pad {n}: one fact per event"
            store = running.gateway.store
            await mqtt.wait_for(lambda: store.outbox_depth == 0, what="the outbox drained")
    finally:
        await broker.stop()


async def start_process(tmp_path: Path, broker: Mosquitto) -> tuple[GatewayProcess, int]:
    data = pad_hall(tmp_path, mqtt_port=broker.port, bus_url=str(tmp_path / "pads-1f"), pads=PADS)
    gateway = GatewayProcess(write_config(tmp_path / "hall.yaml", data), tmp_path / "gw.log")
    await gateway.start()
    port = data["http"]["port"]
    await gateway.wait_healthy(port)
    return gateway, port


async def test_an_event_acknowledged_just_before_sigkill_is_published_after_restart(
    tmp_path: Path, broker: Mosquitto, padbus: PadBus
) -> None:
    gateway, port = await start_process(tmp_path, broker)
    async with Recorder(broker.port, [f"{ROOT}/#"]) as mqtt:
        await mqtt.wait_for(
            lambda: (mqtt.last("pad-w01/availability") or {}).get("state") == "online", timeout=20
        )
    await broker.stop()  # so the event cannot leave before the kill
    pad = padbus.pad(1)
    pad.on_ack = lambda _report: gateway.kill()
    pad.press(1)
    assert await gateway.wait() == -9
    assert len(pad.acked) == 1, "the pad got its ACK"
    pad.on_ack = None

    await broker.start()
    async with Recorder(broker.port, [f"{ROOT}/events/#"]) as mqtt:
        await gateway.start()
        await gateway.wait_healthy(port)
        rating = await mqtt.wait_for(
            lambda: mqtt.events("rating"), timeout=20, what="the rating stored before the kill"
        )
        assert rating[0]["level"] == 5
        assert rating[0]["device_id"] == "pad-w01"
    assert await gateway.stop() == 0


async def test_a_kill_between_commit_and_ack_publishes_the_event_once(
    tmp_path: Path, broker: Mosquitto, padbus: PadBus
) -> None:
    async with Recorder(broker.port, [f"{ROOT}/#"], persistent_id="witness2") as mqtt:
        gateway, port = await start_process(tmp_path, broker)
        await mqtt.wait_for(
            lambda: (mqtt.last("pad-w02/availability") or {}).get("state") == "online", timeout=20
        )
        pad = padbus.pad(2)
        pad.ignore_acks = 1  # the gateway has stored the event and sends its ACK: it dies now
        pad.on_ack = lambda _report: gateway.kill()
        pad.press(2)
        assert await gateway.wait() == -9
        assert pad.queue, "the pad never saw an ACK and still holds its event"
        pad.on_ack = None

        await gateway.start()
        await gateway.wait_healthy(port)
        await mqtt.wait_for(lambda: not pad.queue, timeout=20, what="the repeat acknowledged")
        pad.press(3)
        await mqtt.wait_for(
            lambda: any(e["level"] == 3 for e in mqtt.events("rating")),
            timeout=20,
            what="the next rating",
        )
        assert await gateway.stop() == 0
    by_id = one_fact_per_id(mqtt.events("rating"))
    assert sorted(e["level"] for e in by_id.values()) == [3, 4], (
        "the repeated event is one fact, and it is published"
    )
    log = (tmp_path / "gw.log").read_text()
    assert "Traceback" not in log


async def test_a_vanished_serial_port_is_reopened_when_it_comes_back(
    tmp_path: Path, broker: Mosquitto, padbus: PadBus
) -> None:
    link = tmp_path / "pads-1f"
    data = pad_hall(tmp_path, mqtt_port=broker.port, bus_url=str(link), pads=PADS)
    async with (
        Recorder(broker.port, [f"{ROOT}/#"]) as mqtt,
        running_gateway(to_config(data)) as running,
    ):

        def states(reason: str | None = None) -> bool:
            payloads = [mqtt.last(f"pad-w{n:02d}/availability") or {} for n in range(1, PADS + 1)]
            if reason is None:
                return all(p.get("state") == "online" for p in payloads)
            return all(p.get("state") == "offline" and p.get("reason") == reason for p in payloads)

        await mqtt.wait_for(states, what="all pads online")
        await padbus.vanish()  # the USB adapter is unplugged: the pty and its link are gone
        await mqtt.wait_for(lambda: states("io_error"), timeout=20, what="all pads offline")
        assert await running.metric("hallgw_device_requests_total", result="io_error") >= PADS

        await padbus.open_pty(link)  # plugged back in: a new tty behind the same link
        await mqtt.wait_for(states, timeout=20, what="all pads back online")
        padbus.pad(3).press(1)
        rating = await mqtt.wait_for(lambda: mqtt.events("rating"), what="a rating after recovery")
        assert rating[0]["device_id"] == "pad-w03"
        assert not running.task.done(), "recovered without a restart"
