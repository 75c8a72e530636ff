"""Rating pads end to end: simulated pads on a real pty → gateway → real Mosquitto."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from simulators.ff68_pad import PadBus, SimPad
from tests.support.harness import pad_hall, running_gateway, to_config
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import Recorder

PADS = 4


@pytest.fixture
async def padbus(tmp_path: Path) -> AsyncIterator[PadBus]:
    bus = PadBus([SimPad(n) for n in range(1, PADS + 1)])
    await bus.open_pty(tmp_path / "pads-1f")
    try:
        yield bus
    finally:
        await bus.close()


async def test_pad_events_reach_their_topics_with_contract_payloads(
    tmp_path: Path, broker: Mosquitto, padbus: PadBus
) -> None:
    config = to_config(
        pad_hall(tmp_path, mqtt_port=broker.port, bus_url=str(tmp_path / "pads-1f"), pads=PADS)
    )
    async with Recorder(broker.port, ["hall/test-hall/#"]) as mqtt, running_gateway(config):
        await mqtt.wait_for(
            lambda: len(mqtt.payloads("/availability")) >= PADS, what="availability"
        )
        pad = padbus.pad(2)
        pad.login("0000000002")
        pad.press(1)
        pad.press(5)
        ratings = await mqtt.wait_for(
            lambda: (
                len(mqtt.payloads("events/rating/pad-w02")) == 2
                and mqtt.payloads("events/rating/pad-w02")
            )
        )
        print(ratings)
        print(mqtt.payloads("events/pad/pad-w02"))
        print(mqtt.payloads("devices/pad-w02/availability"))
        print(mqtt.payloads("devices/pad-w02/state"))
        print(mqtt.payloads("gateway/state"), mqtt.payloads("gateway/health"))
        print(pad.displayed)
