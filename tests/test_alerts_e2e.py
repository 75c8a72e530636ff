"""Alerts end to end: simulated devices → gateway → real Mosquitto and a local webhook robot.

A kiosk going dark fires `device_offline` after its `for`, the robot gets one WeCom message, the
kiosk comes back, the alert resolves (event, then the retained topic cleared) and the robot gets
the resolution; firing alerts survive a restart; a whole pad bus unplugged is one alert; a
flapping kiosk is one alert."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.alerts import Phase
from gateway.alertservice import AlertService
from gateway.config import Config, Secret, Secrets
from gateway.runner import OFFLINE_POLL_S
from simulators.ff68_pad import PadBus
from simulators.kiosk_http import KioskAgent
from tests.support.harness import (
    API_TOKEN,
    RunningGateway,
    pad_hall,
    running_gateway,
    to_config,
    wait_metric,
)
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import Recorder
from tests.support.polling import until
from tests.support.webhook import WebhookReceiver

ROOT = "hall/test-hall"
KIOSK = "kiosk-01"
KIOSK_ALERT = f"device_offline-{KIOSK}"
KIOSK_TOKEN = "kiosk-token-3b9c"
BUS_ALERT = "bus_down-pads-1f"
PADS = 6  # pads on the `padbus` fixture's bus (tests/conftest.py)
# small enough that a test runs in seconds, as long as the rules they stand for in a real hall
FOR_S = 1.0
FLAP_S = 0.5


@pytest.fixture
async def robot() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as receiver:
        yield receiver


def kiosk_hall(
    tmp_path: Path,
    broker: Mosquitto,
    agent: KioskAgent,
    *,
    webhook_format: str = "wecom",
    **alerts: Any,
) -> Config:
    data = pad_hall(tmp_path, mqtt_port=broker.port, bus_url="unused", pads=0, buses=[])
    data["devices"] = [
        {
            "id": KIOSK,
            "profile": "kiosk_http",
            "base_url": agent.base_url,
            "poll_s": 0.2,
            "token_env": "HALLGW_KIOSK_TOKEN",
        }
    ]
    data["alerts"] = {
        "device_offline_for_s": FOR_S,
        "flap_window_s": FLAP_S,
        "webhooks": [{"url_env": "HALLGW_WECOM_URL", "format": webhook_format}],
        **alerts,
    }
    return to_config(data)


def secrets(robot: WebhookReceiver) -> Secrets:
    return Secrets(
        api_token=Secret(API_TOKEN),
        device_tokens={KIOSK: Secret(KIOSK_TOKEN)},
        webhook_urls={0: Secret(robot.url)},
    )


def service(running: RunningGateway) -> AlertService:
    found = [s for s in running.gateway.services if isinstance(s, AlertService)]
    assert len(found) == 1
    return found[0]


def alert_events(mqtt: Recorder, status: str | None = None) -> list[dict[str, Any]]:
    return [e for e in mqtt.events("alert") if status is None or e["status"] == status]


def availability(mqtt: Recorder, device_id: str = KIOSK) -> dict[str, Any]:
    return mqtt.last(f"devices/{device_id}/availability") or {}


def seconds(iso_time: str) -> dt.datetime:
    return dt.datetime.fromisoformat(iso_time)


async def test_a_dark_kiosk_fires_after_for_pages_once_and_resolves_when_back(
    tmp_path: Path, broker: Mosquitto, agent: KioskAgent, robot: WebhookReceiver
) -> None:
    config = kiosk_hall(tmp_path, broker, agent)
    async with (
        Recorder(broker.port, [f"{ROOT}/#"]) as mqtt,
        running_gateway(config, secrets(robot)) as running,
    ):
        await mqtt.wait_for(lambda: availability(mqtt).get("state") == "online", what="online")
        await agent.crash()  # switched off
        offline = await mqtt.wait_for(
            lambda: availability(mqtt).get("state") == "offline" and availability(mqtt),
            what="offline",
        )
        firing = await mqtt.wait_for(lambda: mqtt.last(f"alerts/{KIOSK_ALERT}"), what="alert")
        assert firing == {
            "v": 1,
            "alert_id": KIOSK_ALERT,
            "rule": "device_offline",
            "severity": "critical",
            "status": "firing",
            "subject": {"device_id": KIOSK},
            "summary": f"自助终端 {KIOSK} 离线",
            "started_at": offline["since"],
        }
        [event] = alert_events(mqtt)
        assert {k: event[k] for k in firing} == firing
        assert event["kind"] == "alert"
        assert event["device_id"] is None
        assert len(event["event_id"]) == 24
        assert seconds(event["ts"]) - seconds(offline["since"]) >= dt.timedelta(seconds=FOR_S)

        await robot.wait_for(lambda: robot.bodies, what="the WeCom message")
        [message] = robot.bodies
        assert message["msgtype"] == "markdown"
        content = message["markdown"]["content"]
        assert content.startswith("## 【告警】测试政务服务中心\n")
        assert f"自助终端 {KIOSK} 离线" in content
        assert f"编号:{KIOSK_ALERT}" in content
        assert robot.received[0].content_type == "application/json"

        assert (await running.get("/api/v1/alerts")) == (200, [firing])
        await wait_metric(running, "hallgw_alerts_firing", 1, rule="device_offline")
        assert await running.metric("hallgw_alerts_firing", severity="critical") == 1

        await agent.start()  # switched back on
        resolved = await mqtt.wait_for(lambda: alert_events(mqtt, "resolved"), what="resolved")
        cleared = await mqtt.wait_for(
            lambda: [m for m in mqtt.on(f"alerts/{KIOSK_ALERT}") if m.payload == b""],
            what="the retained topic cleared",
        )
        assert mqtt.messages.index(cleared[0]) > mqtt.messages.index(
            next(m for m in mqtt.on(f"events/alert/{KIOSK_ALERT}") if b'"resolved"' in m.payload)
        ), "the resolution event first, then the topic cleared"
        back = availability(mqtt)
        assert back["state"] == "online"
        assert resolved[0]["ended_at"] == back["since"]
        assert {k: resolved[0][k] for k in ("alert_id", "rule", "subject", "started_at")} == {
            k: firing[k] for k in ("alert_id", "rule", "subject", "started_at")
        }
        assert resolved[0]["event_id"] != event["event_id"]

        await robot.wait_for(lambda: len(robot.bodies) >= 2, what="the resolution message")
        assert robot.bodies[1]["markdown"]["content"].startswith("## 【告警恢复】测试政务服务中心")
        assert (await running.get("/api/v1/alerts")) == (200, [])
        assert await running.metric("hallgw_alerts_firing") == 0
        assert len(robot.bodies) == 2, "one message each way"
        assert len(alert_events(mqtt)) == 2

    async with Recorder(broker.port, [f"{ROOT}/alerts/#", f"{ROOT}/gateway/state"]) as late:
        await late.wait_for(lambda: late.on("gateway/state"), what="a retained message")
        assert late.on(f"alerts/{KIOSK_ALERT}") == [], "nothing retained once resolved"


async def test_a_firing_alert_survives_a_restart_as_the_same_alert(
    tmp_path: Path, broker: Mosquitto, agent: KioskAgent, robot: WebhookReceiver
) -> None:
    config = kiosk_hall(tmp_path, broker, agent)
    async with Recorder(broker.port, [f"{ROOT}/#"]) as mqtt:
        async with running_gateway(config, secrets(robot)):
            await mqtt.wait_for(lambda: availability(mqtt).get("state") == "online")
            await agent.crash()
            await mqtt.wait_for(lambda: alert_events(mqtt, "firing"), what="firing")
        firing = mqtt.last(f"alerts/{KIOSK_ALERT}")
        await broker.restart()  # and the broker forgot it (no persistence)
        async with running_gateway(config, secrets(robot)) as running:
            alerts = service(running)
            await until(
                lambda: (a := alerts.engine.get(KIOSK_ALERT)) is not None and a.confirmed,
                "the restored alert re-evaluated",
            )
            assert alerts.engine.get(KIOSK_ALERT).phase is Phase.FIRING  # type: ignore[union-attr]
            async with Recorder(broker.port, [f"{ROOT}/alerts/#"]) as late:
                again = await late.wait_for(lambda: late.last(f"alerts/{KIOSK_ALERT}"))
                assert late.messages[0].retain
            assert again == firing, "re-published as it was, its start kept"
            assert (await running.get("/api/v1/alerts")) == (200, [firing])
            await agent.start()
            await mqtt.wait_for(lambda: alert_events(mqtt, "resolved"), what="resolved")
        assert [e["status"] for e in alert_events(mqtt)] == ["firing", "resolved"]
        await robot.wait_for(lambda: len(robot.bodies) >= 2, what="the resolution")
        assert len(robot.bodies) == 2


async def test_a_flapping_kiosk_is_one_alert(
    tmp_path: Path, broker: Mosquitto, agent: KioskAgent, robot: WebhookReceiver
) -> None:
    # back for less than the flap window, three times over: still the same outage
    config = kiosk_hall(tmp_path, broker, agent, flap_window_s=30)
    async with (
        Recorder(broker.port, [f"{ROOT}/#"]) as mqtt,
        running_gateway(config, secrets(robot)) as running,
    ):
        await mqtt.wait_for(lambda: availability(mqtt).get("state") == "online")
        await agent.crash()
        await mqtt.wait_for(lambda: alert_events(mqtt, "firing"), what="firing")
        for _ in range(3):
            await agent.start()
            await mqtt.wait_for(lambda: availability(mqtt).get("state") == "online")
            await agent.crash()
            await mqtt.wait_for(lambda: availability(mqtt).get("state") == "offline")
        alerts = service(running)
        await until(
            lambda: (
                (a := alerts.engine.get(KIOSK_ALERT)) is not None
                and a.cleared_at is None
                and alerts.engine.evaluated_at is not None
                and alerts.engine.evaluated_at > seconds(availability(mqtt)["since"])
            ),
            "the last outage evaluated",
        )
        assert [e["status"] for e in alert_events(mqtt)] == ["firing"]
        await robot.wait_for(lambda: robot.bodies, what="the first message")
        assert len(robot.bodies) == 1, "paged once"
        assert (await running.get("/api/v1/alerts"))[1][0]["alert_id"] == KIOSK_ALERT


async def test_a_pad_bus_unplugged_is_one_bus_alert_not_one_per_pad(
    tmp_path: Path, broker: Mosquitto, padbus: PadBus, robot: WebhookReceiver
) -> None:
    link = tmp_path / "pads-1f"
    data = pad_hall(tmp_path, mqtt_port=broker.port, bus_url=str(link), pads=PADS)
    data["alerts"] = {
        "device_offline_for_s": FOR_S,
        # the bus is back before its pads are (an offline pad is polled every 5 s): the bus
        # alert holds until they are, so that they never fire on their own
        "flap_window_s": OFFLINE_POLL_S + 1,
        "webhooks": [{"url_env": "HALLGW_HOOK_URL", "format": "generic"}],
    }
    config = to_config(data)
    pads = [f"pad-w{n:02d}" for n in range(1, PADS + 1)]
    async with (
        Recorder(broker.port, [f"{ROOT}/#"]) as mqtt,
        running_gateway(config, Secrets(webhook_urls={0: Secret(robot.url)})) as running,
    ):
        await mqtt.wait_for(
            lambda: all(availability(mqtt, p).get("state") == "online" for p in pads),
            what="every pad online",
        )
        await padbus.vanish()  # the USB adapter pulled out
        await mqtt.wait_for(
            lambda: all(availability(mqtt, p).get("state") == "offline" for p in pads),
            timeout=20,
            what="every pad offline",
        )
        firing = await mqtt.wait_for(lambda: mqtt.last(f"alerts/{BUS_ALERT}"), what="bus alert")
        assert firing["subject"] == {"bus_id": "pads-1f"}
        assert firing["summary"] == f"串口总线 pads-1f 中断:串口无法打开({PADS} 台设备)"
        engine = service(running).engine

        def pads_held_past_their_for() -> bool:
            held = [engine.get(f"device_offline-{p}") for p in pads]
            evaluated = engine.evaluated_at
            return evaluated is not None and all(
                a is not None
                and a.phase is Phase.PENDING
                and a.inhibited_by == BUS_ALERT
                and (evaluated - a.active_since).total_seconds() >= FOR_S
                for a in held
            )

        await until(pads_held_past_their_for, "every pad's alert due and inhibited", timeout=10)
        await robot.wait_for(lambda: robot.bodies, what="the bus alert's webhook")

        await padbus.open_pty(link)  # plugged back in
        await mqtt.wait_for(lambda: alert_events(mqtt, "resolved"), timeout=20, what="resolved")
        await robot.wait_for(lambda: len(robot.bodies) >= 2, what="the resolution")
        assert [(e["alert_id"], e["status"]) for e in alert_events(mqtt)] == [
            (BUS_ALERT, "firing"),
            (BUS_ALERT, "resolved"),
        ]
        assert {m.topic for m in mqtt.messages if "/alerts/" in m.topic} == {
            f"{ROOT}/alerts/{BUS_ALERT}"
        }
        assert [[a["alert_id"] for a in body["alerts"]] for body in robot.bodies] == [
            [BUS_ALERT],
            [BUS_ALERT],
        ]
        assert robot.bodies[0]["alerts"][0]["status"] == "firing"
        assert robot.bodies[1]["alerts"][0]["status"] == "resolved"
        assert robot.bodies[0]["site"] == "test-hall"
        assert all(p.get("state") == "online" for p in (availability(mqtt, x) for x in pads))
