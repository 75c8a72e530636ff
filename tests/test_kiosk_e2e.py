"""Kiosks end to end: simulated kiosk agents (real aiohttp servers) → gateway → real Mosquitto.
Peripheral events and state, failures and offline, pushes and their refusals, service hours on a
fake clock."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from gateway.app import Gateway
from gateway.clock import FakeClock
from gateway.config import Config, Secret, Secrets
from simulators.kiosk_http import KioskAgent
from tests.support.harness import API_TOKEN, pad_hall, running_gateway, to_config
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.mqtt import Recorder
from tests.support.polling import until

ROOT = "hall/test-hall"
KIOSK = "kiosk-01"
TOKEN = "kiosk-token-3b9c"
ZONE = ZoneInfo("Asia/Shanghai")


def kiosk(device_id: str, base_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": device_id,
        "profile": "kiosk_http",
        "base_url": base_url,
        "poll_s": 0.3,
        "token_env": "HALLGW_KIOSK_TOKEN",
        **extra,
    }


def hall(tmp_path: Path, broker: Mosquitto, devices: list[dict[str, Any]]) -> Config:
    data = pad_hall(tmp_path, mqtt_port=broker.port, bus_url="unused", pads=0, buses=[])
    data["devices"] = devices
    return to_config(data)


def secrets(*device_ids: str) -> Secrets:
    return Secrets(
        api_token=Secret(API_TOKEN),
        device_tokens={device_id: Secret(TOKEN) for device_id in device_ids or (KIOSK,)},
    )


def state(mqtt: Recorder, device_id: str = KIOSK) -> dict[str, Any]:
    payloads = mqtt.payloads(f"devices/{device_id}/state")
    return payloads[-1]["values"] if payloads else {}


def availability(mqtt: Recorder, device_id: str = KIOSK) -> dict[str, Any]:
    payloads = mqtt.payloads(f"devices/{device_id}/availability")
    return payloads[-1] if payloads else {}


async def post(url: str, body: bytes, token: str | None = TOKEN) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=io.BytesIO(body), headers=headers) as resp,
    ):
        text = await resp.text()
        return resp.status, json.loads(text) if text else None


async def test_paper_out_is_a_kiosk_event_and_the_state_within_one_poll(
    tmp_path: Path, broker: Mosquitto, agent: KioskAgent
) -> None:
    config = hall(tmp_path, broker, [kiosk(KIOSK, agent.base_url)])
    async with Recorder(broker.port, [f"{ROOT}/#"]) as mqtt, running_gateway(config, secrets()):
        await mqtt.wait_for(
            lambda: state(mqtt).get("peripherals", {}).get("printer") == "ok", what="state"
        )
        await mqtt.wait_for(lambda: availability(mqtt).get("state") == "online", what="online")
        assert state(mqtt)["state"] == "ready"
        assert state(mqtt)["hours"] == "always"
        assert mqtt.payloads(f"events/kiosk/{KIOSK}") == []  # the first status is the baseline

        before = agent.requests
        agent.peripherals["printer"] = "paper_out"
        seen_after: list[int] = []

        def event_seen() -> list[Any]:
            events = mqtt.payloads(f"events/kiosk/{KIOSK}")
            if events and not seen_after:
                seen_after.append(agent.requests)
            return events

        events = await mqtt.wait_for(event_seen, what="kiosk event")
        assert seen_after[0] <= before + 2  # the poll after the change (one may be in flight)
        event = events[0]
        assert {
            k: event[k] for k in ("v", "kind", "device_id", "peripheral", "from", "to", "raw")
        } == {
            "v": 1,
            "kind": "kiosk",
            "device_id": KIOSK,
            "peripheral": "printer",
            "from": "ok",
            "to": "paper_out",
            "raw": None,
        }
        assert event["ts"].endswith("+08:00")
        assert len(event["event_id"]) == 24
        await mqtt.wait_for(
            lambda: state(mqtt)["peripherals"]["printer"] == "paper_out", what="state"
        )

        agent.peripherals["scanner"] = "Lamp-Fail"
        agent.state = "Sleeping"
        events = await mqtt.wait_for(
            lambda: (
                len(mqtt.payloads(f"events/kiosk/{KIOSK}")) >= 2
                and mqtt.payloads(f"events/kiosk/{KIOSK}")
            ),
            what="unknown value",
        )
        assert (events[1]["from"], events[1]["to"], events[1]["raw"]) == (
            "ok",
            "unknown",
            "Lamp-Fail",
        )
        values = await mqtt.wait_for(
            lambda: state(mqtt).get("state") == "unknown" and state(mqtt), what="state"
        )
        assert values["state_raw"] == "Sleeping"
        assert values["peripherals"]["scanner"] == "unknown"
        assert values["peripherals_raw"] == {"scanner": "Lamp-Fail"}
        assert len(mqtt.payloads(f"events/kiosk/{KIOSK}")) == 2  # nothing repeated by later polls


async def test_changes_are_neither_repeated_nor_lost_across_a_restart(
    tmp_path: Path, broker: Mosquitto, agent: KioskAgent
) -> None:
    config = hall(tmp_path, broker, [kiosk(KIOSK, agent.base_url)])
    async with Recorder(broker.port, [f"{ROOT}/events/#"]) as mqtt:
        async with running_gateway(config, secrets()) as gw:
            await until(lambda: "peripherals" in gw.gateway.hub.get(KIOSK).values, "first status")
            agent.peripherals["printer"] = "paper_low"
            await mqtt.wait_for(lambda: mqtt.payloads(f"events/kiosk/{KIOSK}"), what="first event")
        agent.peripherals["printer"] = "paper_out"  # while the gateway is down
        async with running_gateway(config, secrets()):
            events = await mqtt.wait_for(
                lambda: (
                    len(mqtt.payloads(f"events/kiosk/{KIOSK}")) >= 2
                    and mqtt.payloads(f"events/kiosk/{KIOSK}")
                ),
                what="the change made while down",
            )
            polls = agent.requests
            await until(lambda: agent.requests >= polls + 3, "three more polls")
        assert [(e["from"], e["to"]) for e in mqtt.payloads(f"events/kiosk/{KIOSK}")] == [
            ("ok", "paper_low"),
            ("paper_low", "paper_out"),
        ]
        assert events[0]["event_id"] != events[1]["event_id"]


async def test_a_kiosk_that_fails_is_offline_after_3_polls_and_never_crashes_the_gateway(
    tmp_path: Path, broker: Mosquitto, agent: KioskAgent
) -> None:
    config = hall(tmp_path, broker, [kiosk(KIOSK, agent.base_url)])
    async with (
        Recorder(broker.port, [f"{ROOT}/#"]) as mqtt,
        running_gateway(config, secrets()) as gw,
    ):
        await mqtt.wait_for(lambda: availability(mqtt).get("state") == "online", what="online")

        agent.garbage = b'{"state": "ready", "peripherals": "none"}'
        down = await mqtt.wait_for(
            lambda: availability(mqtt).get("state") == "offline" and availability(mqtt),
            what="bad body",
        )
        assert down["reason"] == "bad_response"
        assert (
            await gw.metric("hallgw_device_requests_total", device_id=KIOSK, result="bad_response")
            >= 3
        )
        agent.garbage = None
        await mqtt.wait_for(lambda: availability(mqtt).get("state") == "online", what="back")

        agent.http_status = 500
        await mqtt.wait_for(lambda: availability(mqtt).get("state") == "offline", what="HTTP 500")
        agent.http_status = 200
        await mqtt.wait_for(lambda: availability(mqtt).get("state") == "online", what="back")

        await agent.crash()
        failed_before = await gw.metric(
            "hallgw_device_requests_total", device_id=KIOSK, result="io_error"
        )
        down = await mqtt.wait_for(
            lambda: availability(mqtt).get("state") == "offline" and availability(mqtt),
            what="offline",
        )
        assert down["reason"] == "io_error"
        assert (
            await gw.metric("hallgw_device_requests_total", device_id=KIOSK, result="io_error")
            >= failed_before + 3
        )

        await agent.start()
        await mqtt.wait_for(lambda: availability(mqtt).get("state") == "online", what="back again")


async def test_a_slow_kiosk_times_out_after_3_s(
    tmp_path: Path, broker: Mosquitto, agent: KioskAgent
) -> None:
    config = hall(tmp_path, broker, [kiosk(KIOSK, agent.base_url)])
    async with running_gateway(config, secrets()) as gw:
        registry = gw.gateway.metrics.registry
        labels = {"device_id": KIOSK, "kind": "kiosk", "result": "timeout"}
        await until(lambda: gw.gateway.hub.get(KIOSK).online, "online")
        agent.slow_s = 3.5
        await until(
            lambda: registry.get_sample_value("hallgw_device_requests_total", labels),
            "a timeout",
            timeout=8,
        )
        agent.slow_s = 0.0
        assert gw.gateway.hub.get(KIOSK).online  # one timeout is not an outage
        await agent.crash()  # ends the request still asleep in the agent, within the test


async def test_pushes_need_the_kiosks_token_and_a_status_body(
    tmp_path: Path, broker: Mosquitto
) -> None:
    pushing = KioskAgent("K07")  # not serving: the gateway's polls fail, its pushes arrive
    unreachable = f"http://127.0.0.1:{free_port()}"
    config = hall(tmp_path, broker, [kiosk(KIOSK, unreachable, poll_s=3600)])
    url = f"http://127.0.0.1:{config.http.device_port}/ingest/kiosk/{KIOSK}"
    async with (
        Recorder(broker.port, [f"{ROOT}/#"]) as mqtt,
        running_gateway(config, secrets()) as gw,
    ):
        assert await pushing.push(url, TOKEN) == 204
        await mqtt.wait_for(lambda: state(mqtt).get("via") == "push", what="pushed state")
        await mqtt.wait_for(
            lambda: availability(mqtt).get("state") == "online", what="a push is contact"
        )

        pushing.peripherals["printer"] = "jam"
        for wrong in ("not-the-token", None):
            assert await pushing.push(url, wrong) == 401
        status, body = await post(url, json.dumps(pushing.status()).encode(), token=None)
        assert (status, body) == (401, {"error": "wrong or missing token"})
        assert await pushing.push(url.replace(KIOSK, "kiosk-99"), TOKEN) == 404
        assert (
            await gw.metric(
                "hallgw_device_requests_total",
                device_id="unknown",
                kind="kiosk",
                result="unknown_device",
            )
            == 1
        )

        bad_before = await gw.metric(
            "hallgw_device_requests_total", device_id=KIOSK, result="bad_response"
        )
        for garbage in (
            b"not json",
            b"[]",
            b'{"state": "ready"}',
            b'{"state": "ready", "peripherals": {"a b": "ok"}}',
        ):
            status, body = await post(url, garbage)
            assert status == 400
            assert body["error"].startswith("not a kiosk status: ")
        assert (
            await gw.metric("hallgw_device_requests_total", device_id=KIOSK, result="bad_response")
            == bad_before + 4
        )
        status, body = await post(url, b"{" + b" " * (1024 * 1024 + 10) + b"}")
        assert status == 413
        assert "error" in body

        assert state(mqtt)["peripherals"]["printer"] == "ok"  # nothing refused changed anything
        assert mqtt.payloads(f"events/kiosk/{KIOSK}") == []
        assert await pushing.push(url, TOKEN) == 204
        events = await mqtt.wait_for(lambda: mqtt.payloads(f"events/kiosk/{KIOSK}"), what="event")
        assert (events[0]["from"], events[0]["to"]) == ("ok", "jam")
        await mqtt.wait_for(lambda: state(mqtt)["peripherals"]["printer"] == "jam", what="state")


async def test_a_service_hours_kiosk_switched_off_at_night_is_not_an_outage(
    tmp_path: Path, broker: Mosquitto
) -> None:
    night_agent = KioskAgent("K02")
    night_url = f"http://127.0.0.1:{free_port()}"  # switched off: nothing listens
    always_url = f"http://127.0.0.1:{free_port()}"
    config = hall(
        tmp_path,
        broker,
        [kiosk("kiosk-svc", night_url, hours="service"), kiosk("kiosk-24h", always_url)],
    )
    clock = FakeClock(dt.datetime(2026, 11, 20, 22, 0, tzinfo=ZONE))  # Friday night
    gateway = Gateway(config, secrets("kiosk-svc", "kiosk-24h"), clock=clock)
    async with (
        Recorder(broker.port, [f"{ROOT}/#"]) as mqtt,
        running_gateway(config, gateway=gateway) as gw,
    ):
        # the 7x24 kiosk is watched at night: it is an outage
        await mqtt.wait_for(
            lambda: availability(mqtt, "kiosk-24h").get("reason") == "io_error", what="24h down"
        )
        night = availability(mqtt, "kiosk-svc")
        assert (night["state"], night["reason"]) == ("offline", "off_hours")
        assert (
            await gw.metric("hallgw_device_requests_total", device_id="kiosk-svc") == 0
        )  # not polled
        assert gateway.mounted["kiosk-svc"].expected_on is not None
        assert gateway.mounted["kiosk-svc"].expected_on(clock.now()) is False
        assert gateway.mounted["kiosk-24h"].expected_on is None

        # what it pushes at night is recorded, but it is not watched
        url = f"http://127.0.0.1:{config.http.device_port}/ingest/kiosk/kiosk-svc"
        assert await night_agent.push(url, TOKEN) == 204
        await mqtt.wait_for(lambda: state(mqtt, "kiosk-svc").get("via") == "push", what="pushed")
        assert availability(mqtt, "kiosk-svc")["reason"] == "off_hours"

        # Monday 09:00: the hall opens, the kiosk is on
        night_agent.port = int(night_url.rsplit(":", 1)[1])
        await night_agent.start()
        try:
            clock.set(dt.datetime(2026, 11, 23, 9, 0, tzinfo=ZONE))
            await mqtt.wait_for(
                lambda: availability(mqtt, "kiosk-svc").get("state") == "online", what="morning"
            )
            assert gateway.mounted["kiosk-svc"].expected_on(clock.now()) is True
            assert state(mqtt, "kiosk-svc")["via"] == "poll"

            # Monday 17:30: closed again, and switched off: still no outage
            clock.set(dt.datetime(2026, 11, 23, 17, 30, tzinfo=ZONE))
            await night_agent.crash()
            evening = await mqtt.wait_for(
                lambda: (
                    availability(mqtt, "kiosk-svc").get("state") == "offline"
                    and availability(mqtt, "kiosk-svc")
                ),
                what="evening",
            )
            assert evening["reason"] == "off_hours"
        finally:
            await night_agent.crash()
