"""Rating pads end to end: simulated pads on a real pty (or socket://) → gateway → real Mosquitto."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from simulators.ff68_pad import PadBus, SimPad
from tests.support.harness import (
    RunningGateway,
    pad_hall,
    running_gateway,
    to_config,
    wait_metric,
)
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import Recorder, publish

PADS = 4  # pads on the `padbus` fixture's bus (tests/conftest.py)
ROOT = "hall/test-hall"
EVENT_FIELDS = {"v", "event_id", "kind", "ts", "received_at", "device_id"}


@pytest.fixture
async def mqtt(broker: Mosquitto) -> AsyncIterator[Recorder]:
    async with Recorder(broker.port, [f"{ROOT}/#"]) as recorder:
        yield recorder


@pytest.fixture
async def hall(
    tmp_path: Path, broker: Mosquitto, padbus: PadBus, mqtt: Recorder
) -> AsyncIterator[RunningGateway]:
    data = pad_hall(tmp_path, mqtt_port=broker.port, bus_url=str(tmp_path / "pads-1f"), pads=PADS)
    async with running_gateway(to_config(data)) as running:
        await mqtt.wait_for(lambda: online(mqtt) == PADS, what="every pad online")
        yield running


def online(mqtt: Recorder) -> int:
    return sum(
        1
        for n in range(1, PADS + 1)
        if (mqtt.last(f"devices/pad-w{n:02d}/availability") or {}).get("state") == "online"
    )


def availability(mqtt: Recorder, device_id: str) -> dict[str, Any]:
    return mqtt.last(f"devices/{device_id}/availability") or {}


async def test_pad_events_arrive_on_their_topics_with_contract_payloads(
    hall: RunningGateway, padbus: PadBus, mqtt: Recorder
) -> None:
    pad = padbus.pad(2)
    pad.login("0000000502")  # s502, the B post of w02
    pad.press(1)
    pad.pause()
    pad.resume()
    pad.press(5)
    pad.fault(7)
    pad.logout()
    pad.press(3)
    await mqtt.wait_for(lambda: len(mqtt.events("pad")) == 5, what="five pad events")
    ratings = await mqtt.wait_for(lambda: len(mqtt.events("rating")) == 3 and mqtt.events("rating"))

    assert all(m.topic == f"{ROOT}/events/rating/pad-w02" for m in mqtt.on("events/rating/pad-w02"))
    first = ratings[0]
    assert set(first) == EVENT_FIELDS | {"window_id", "staff_id", "level", "label", "ticket"}
    assert (first["kind"], first["device_id"], first["window_id"]) == ("rating", "pad-w02", "w02")
    assert (first["staff_id"], first["level"], first["label"]) == ("s502", 5, "非常满意")
    assert first["ts"].endswith("+08:00")
    assert (ratings[1]["level"], ratings[1]["label"]) == (1, "非常不满意")
    assert ratings[2]["staff_id"] is None, "nobody is logged in after the logout"
    assert ratings[2]["label"] == "基本满意"

    actions = [(e["action"], e["staff_id"], e["code"]) for e in mqtt.events("pad")]
    assert actions == [
        ("login", "s502", None),
        ("pause", "s502", None),
        ("resume", "s502", None),
        ("fault", "s502", 7),
        ("logout", "s502", None),
    ]
    assert len({e["event_id"] for e in mqtt.events("pad") + ratings}) == 8
    assert all(not m.retain for m in mqtt.messages if "/events/" in m.topic)
    assert pad.displayed == ["员工502", ""], (
        "the name is shown after login and cleared after logout"
    )
    # an event is published once stored, which can be before its ACK has reached the pad
    await mqtt.wait_for(lambda: not pad.queue, what="every event acknowledged")
    assert len(pad.acked) == 8

    state = await mqtt.wait_for(lambda: (mqtt.last("devices/pad-w02/state") or {}).get("values"))
    assert state["window_id"] == "w02"
    assert state["staff_id"] is None
    assert state["fw"] == "1.2"
    assert await hall.metric("hallgw_events_total", kind="rating") == 3


async def test_every_pad_starts_offline_not_seen_then_goes_online(
    hall: RunningGateway, mqtt: Recorder, broker: Mosquitto
) -> None:
    for n in range(1, PADS + 1):
        history = mqtt.payloads(f"devices/pad-w{n:02d}/availability")
        assert history[0]["state"] == "offline"
        assert history[0]["reason"] == "not_seen"
        assert history[-1] == {
            "v": 1,
            "device_id": f"pad-w{n:02d}",
            "kind": "rating_pad",
            "state": "online",
            "since": history[-1]["since"],
            "reason": None,
        }
    async with Recorder(broker.port, [f"{ROOT}/devices/+/availability"]) as late:
        retained = await late.wait_for(lambda: len(late.messages) == PADS and late.messages)
        assert all(m.retain and m.json()["state"] == "online" for m in retained)
    status, devices = await hall.get("/api/v1/devices")
    assert status == 200
    assert {d["device_id"]: d["state"] for d in devices} == {
        f"pad-w{n:02d}": "online" for n in range(1, PADS + 1)
    }


async def test_a_silent_pad_goes_offline_after_three_polls_and_comes_back(
    hall: RunningGateway, padbus: PadBus, mqtt: Recorder
) -> None:
    silent = padbus.pad(3)
    silent.silent = True
    offline = await mqtt.wait_for(
        lambda: (
            availability(mqtt, "pad-w03").get("state") == "offline"
            and availability(mqtt, "pad-w03")
        ),
        what="pad-w03 offline",
    )
    assert offline["reason"] == "timeout"
    # 3 failed polls, each with its retry
    assert (
        await hall.metric("hallgw_device_requests_total", device_id="pad-w03", result="timeout")
        >= 6
    )
    assert await hall.metric("hallgw_device_up", device_id="pad-w03") == 0
    # the rest of the bus keeps working meanwhile
    padbus.pad(1).press(2)
    await mqtt.wait_for(lambda: len(mqtt.events("rating")) == 1, what="a rating from pad 1")

    # an offline pad is polled (a poll and its retry) only every 5 s
    before = len(silent.requests)
    await mqtt.wait_for(
        lambda: len(silent.requests) >= before + 4, timeout=15, what="two more offline polls"
    )
    attempts = silent.requests[before:]
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert max(gaps) >= 4.5, f"offline polls came every {gaps}"
    assert min(gaps) < 1.0, f"a poll and its retry go together: {gaps}"

    silent.silent = False
    await mqtt.wait_for(
        lambda: availability(mqtt, "pad-w03").get("state") == "online",
        timeout=15,
        what="pad-w03 back online",
    )
    assert await hall.metric("hallgw_device_up", device_id="pad-w03") == 1


async def test_corrupt_frames_are_counted_and_crash_nothing(
    hall: RunningGateway, padbus: PadBus, mqtt: Recorder
) -> None:
    padbus.pad(4).corrupt_checksum = True
    padbus.pad(4).press(1)
    gone = await mqtt.wait_for(
        lambda: (
            availability(mqtt, "pad-w04").get("state") == "offline"
            and availability(mqtt, "pad-w04")
        ),
        what="pad-w04 offline",
    )
    assert gone["reason"] == "crc_errors"
    assert (
        await hall.metric("hallgw_device_requests_total", device_id="pad-w04", result="bad_frame")
        >= 6
    )
    assert not mqtt.events("rating"), "a corrupt frame is never taken for an event"
    padbus.pad(1).press(4)
    await mqtt.wait_for(lambda: len(mqtt.events("rating")) == 1, what="pad 1 still heard")
    padbus.pad(4).corrupt_checksum = False
    await mqtt.wait_for(
        lambda: len(mqtt.events("rating")) == 2,
        timeout=15,
        what="pad 4's rating once its frames are good again",
    )
    assert hall.task.done() is False


async def test_a_lost_ack_is_acknowledged_again_but_published_once(
    hall: RunningGateway, padbus: PadBus, mqtt: Recorder
) -> None:
    pad = padbus.pad(1)
    pad.ignore_acks = 2  # the ACK and its retry are both lost
    pad.press(2)
    await mqtt.wait_for(lambda: pad.acked, timeout=15, what="the pad's event acknowledged")
    await mqtt.wait_for(lambda: mqtt.events("rating"), what="the rating")
    pad.press(3)
    await mqtt.wait_for(lambda: len(mqtt.events("rating")) == 2, what="the next rating")
    assert [r["level"] for r in mqtt.events("rating")] == [4, 3]


async def test_unmapped_keys_are_journaled_not_published(
    tmp_path: Path, broker: Mosquitto, padbus: PadBus, mqtt: Recorder
) -> None:
    data = pad_hall(tmp_path, mqtt_port=broker.port, bus_url=str(tmp_path / "pads-1f"), pads=PADS)
    data["devices"][0]["key_map"] = {0: 2, 2: 4, 3: 5}  # a four-key pad
    async with running_gateway(to_config(data)) as running:
        pad = padbus.pad(1)
        pad.press(0)
        pad.press(9)
        pad.press(3)
        await mqtt.wait_for(lambda: len(mqtt.events("rating")) == 2, what="two mapped ratings")
        assert [(r["level"], r["label"]) for r in mqtt.events("rating")] == [
            (2, "不满意"),
            (5, "非常满意"),
        ]
        assert running.gateway.store is not None
        kept = await running.gateway.store.journal(kinds=["pad_unmapped_key"])
        assert [json.loads(row.payload)["key"] for row in kept] == [9]
        await mqtt.wait_for(lambda: not pad.queue, what="all three acknowledged")
        assert len(pad.acked) == 3


@pytest.mark.parametrize("mode", ["byte_at_a_time", "slow"])
async def test_answers_in_pieces_or_late_do_not_confuse_the_bus(
    tmp_path: Path, broker: Mosquitto, mqtt: Recorder, mode: str
) -> None:
    bus = PadBus([SimPad(n) for n in range(1, PADS + 1)], byte_at_a_time=mode == "byte_at_a_time")
    if mode == "slow":
        # later than a poll and its retry: its answers land in other pads' exchanges or in the
        # pause between sweeps; it is a broken pad and must be said to be one, and its frames
        # must never be taken for another pad's
        bus.pad(2).slow_s = 0.3
    healthy = [1, 3, 4] if mode == "slow" else [1, 2, 3, 4]
    await bus.open_pty(tmp_path / "pads-1f")
    data = pad_hall(tmp_path, mqtt_port=broker.port, bus_url=str(tmp_path / "pads-1f"), pads=PADS)
    try:
        async with running_gateway(to_config(data)) as running:
            for n in range(1, PADS + 1):
                bus.pad(n).press(n)
            await mqtt.wait_for(
                lambda: all(not bus.pad(n).queue for n in healthy),
                timeout=30,
                what="every healthy pad's event acknowledged",
            )
            await mqtt.wait_for(
                lambda: len(mqtt.events("rating")) >= len(healthy), what="their ratings"
            )
            ratings = {e["event_id"]: e for e in mqtt.events("rating")}
            assert sorted((e["device_id"], e["level"]) for e in ratings.values()) == [
                (f"pad-w{n:02d}", 6 - n) for n in healthy
            ], "one fact per event, each from its own pad"
            if mode == "slow":
                await mqtt.wait_for(
                    lambda: availability(mqtt, "pad-w02").get("reason") == "timeout",
                    what="the slow pad offline",
                )
                assert bus.pad(2).queue, "its event was never stored as someone else's"
            for n in healthy:
                bad = await running.metric(
                    "hallgw_device_requests_total", device_id=f"pad-w{n:02d}", result="bad_frame"
                )
                assert bad == 0
    finally:
        await bus.close()


async def test_pads_behind_a_serial_server_over_socket_url(
    tmp_path: Path, broker: Mosquitto, mqtt: Recorder
) -> None:
    bus = PadBus([SimPad(n) for n in range(1, PADS + 1)])
    port = await bus.open_tcp()
    data = pad_hall(
        tmp_path, mqtt_port=broker.port, bus_url=f"socket://127.0.0.1:{port}", pads=PADS
    )
    try:
        async with running_gateway(to_config(data)):
            bus.pad(4).login("0000000004")
            bus.pad(4).press(2)
            rating = await mqtt.wait_for(lambda: mqtt.events("rating"), what="a rating")
            assert (rating[0]["device_id"], rating[0]["staff_id"], rating[0]["level"]) == (
                "pad-w04",
                "s004",
                4,
            )
    finally:
        await bus.close()


async def test_display_commands_show_a_message_then_the_name_again(
    hall: RunningGateway, padbus: PadBus, mqtt: Recorder, broker: Mosquitto
) -> None:
    pad = padbus.pad(1)
    pad.login("0000000001")
    await mqtt.wait_for(lambda: pad.display_text == "员工1", what="the name on the pad")
    await publish(
        broker.port,
        f"{ROOT}/cmd/display/pad-w01",
        json.dumps({"request_id": "r-1", "text": "请稍候", "seconds": 1}),
    )
    reply = await mqtt.wait_for(lambda: mqtt.last("cmd/reply/r-1"), what="reply r-1")
    assert reply == {"v": 1, "request_id": "r-1", "ok": True}
    assert "请稍候" in pad.displayed
    await mqtt.wait_for(lambda: pad.display_text == "员工1", what="the name back after 1 s")

    await publish(
        broker.port, f"{ROOT}/cmd/display/pad-w99", json.dumps({"request_id": "r-2", "text": "x"})
    )
    refused = await mqtt.wait_for(lambda: mqtt.last("cmd/reply/r-2"), what="reply r-2")
    assert refused["ok"] is False
    assert "unknown device pad-w99" in refused["error"]

    await publish(
        broker.port,
        f"{ROOT}/cmd/display/pad-w01",
        json.dumps({"request_id": "r-3", "text": "x", "seconds": -5}),
    )
    invalid = await mqtt.wait_for(lambda: mqtt.last("cmd/reply/r-3"), what="reply r-3")
    assert invalid["ok"] is False
    assert "seconds" in invalid["error"]

    await publish(broker.port, f"{ROOT}/cmd/display/pad-w01", b"\xff not json")
    await publish(broker.port, f"{ROOT}/cmd/display/pad-w01", json.dumps({"request_id": "a/b"}))
    await wait_metric(hall, "hallgw_mqtt_commands_total", 3, command="display", result="malformed")
    replies = [m.topic for m in mqtt.messages if "/cmd/reply/" in m.topic]
    assert replies == [f"{ROOT}/cmd/reply/r-{n}" for n in (1, 2, 3)], (
        "only commands with a usable request_id are answered, each once"
    )
