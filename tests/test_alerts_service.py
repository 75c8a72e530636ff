"""The alerts service in a running gateway: presence's conditions (window unattended, outings)
through its API, and a store that cannot commit an alert."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gateway.alertservice import AlertService
from gateway.app import Gateway
from gateway.clock import FakeClock
from gateway.store import JournalEntry
from tests.support.harness import RunningGateway, api_secrets, pad_hall, running_gateway, to_config
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import Recorder
from tests.support.polling import until
from tests.support.presence import api, at, presence, presence_hall

ROOT = "hall/test-hall"


def hall(tmp_path: Path, broker: Mosquitto, **board: Any) -> dict[str, Any]:
    data = pad_hall(tmp_path, mqtt_port=broker.port, bus_url="unused", pads=3, buses=[])
    data["devices"] = []
    data["alerts"] = {"window_unattended_for_s": 60, "flap_window_s": 0.2}
    data["board"] = board
    return data


def alerts_of(running: RunningGateway) -> AlertService:
    [service] = [s for s in running.gateway.services if isinstance(s, AlertService)]
    return service


async def test_presence_reports_windows_and_outings_through_the_alerts_api(
    tmp_path: Path, broker: Mosquitto
) -> None:
    async with (
        Recorder(broker.port, [f"{ROOT}/alerts/#", f"{ROOT}/events/alert/#"]) as mqtt,
        running_gateway(to_config(hall(tmp_path, broker))) as running,
    ):
        alerts = alerts_of(running)
        now = running.gateway.clock.now()
        alerts.window_unattended("w02", unattended=True, since=now - dt.timedelta(seconds=90))
        window = await mqtt.wait_for(lambda: mqtt.last("alerts/window_unattended-w02"))
        assert window["summary"] == "2号窗口(w02)无人值守"
        assert window["subject"] == {"window_id": "w02"}
        assert window["severity"] == "warning"

        back = now.replace(hour=10, minute=30, second=0, microsecond=0)
        alerts.outing_overdue("s001", overdue=True, expected_back=back)
        alerts.outing_rule("s002", breaches=["max_per_day", "replacement"])
        overdue = await mqtt.wait_for(lambda: mqtt.last("alerts/outing_overdue-s001"))
        assert overdue["summary"] == "员工1(s001) 外出超时,应于 10:30 返回"
        rule = await mqtt.wait_for(lambda: mqtt.last("alerts/outing_rule-s002"))
        assert (
            rule["summary"]
            == "员工2(s002) 外出违反规定:当日外出超过 3 次、外出超过 60 分钟未安排代班"
        )

        status, listed = await running.get("/api/v1/alerts")
        assert status == 200
        assert {a["alert_id"] for a in listed} == {
            "window_unattended-w02",
            "outing_overdue-s001",
            "outing_rule-s002",
        }
        alerts.window_unattended("w02", unattended=False)
        alerts.outing_rule("s002", breaches=[])
        await mqtt.wait_for(
            lambda: len([e for e in mqtt.events("alert") if e["status"] == "resolved"]) == 2,
            what="two resolved",
        )
        assert [a["alert_id"] for a in (await running.get("/api/v1/alerts"))[1]] == [
            "outing_overdue-s001"
        ]


async def test_names_are_masked_where_the_board_masks_them(
    tmp_path: Path, broker: Mosquitto
) -> None:
    config = to_config(hall(tmp_path, broker, mask_names=True))
    async with (
        Recorder(broker.port, [f"{ROOT}/alerts/#"]) as mqtt,
        running_gateway(config) as running,
    ):
        alerts_of(running).outing_overdue("s003", overdue=True)
        overdue = await mqtt.wait_for(lambda: mqtt.last("alerts/outing_overdue-s003"))
        assert overdue["summary"] == "员*(s003) 外出超时"


async def fill_the_disk(running: RunningGateway) -> None:
    """SQLite's own full disk: no page may be added, and every page is filled up."""
    store = running.gateway.store
    assert store is not None
    pages = await store._write(lambda conn, _c: conn.execute("PRAGMA page_count").fetchone()[0])
    await store._write(lambda conn, _c: conn.execute(f"PRAGMA max_page_count = {pages}"))
    filler = JournalEntry("f", "filler", "f", None, "t", 0.0, "t", "x")
    for size in (4000, 1000, 250, 60):
        n = 0
        while True:
            n += 1
            entry = dataclasses.replace(filler, event_id=f"fill-{size}-{n}", payload="x" * size)
            try:
                await store.record(entry)
            except Exception:  # noqa: BLE001  # the StoreError of a full disk is the point
                break


async def room_on_the_disk(running: RunningGateway) -> None:
    store = running.gateway.store
    assert store is not None
    await store._write(lambda conn, _c: conn.execute("PRAGMA max_page_count = 1073741823"))


async def test_an_alert_the_store_cannot_take_is_still_on_mqtt_and_stored_later(
    tmp_path: Path, broker: Mosquitto
) -> None:
    config = to_config(hall(tmp_path, broker))
    async with (
        Recorder(broker.port, [f"{ROOT}/alerts/#", f"{ROOT}/events/alert/#"]) as mqtt,
        running_gateway(config, api_secrets()) as running,
    ):
        await fill_the_disk(running)
        alerts = alerts_of(running)
        alerts.outing_overdue("s001", overdue=True)
        firing = await mqtt.wait_for(lambda: mqtt.last("alerts/outing_overdue-s001"))
        assert firing["status"] == "firing"
        assert mqtt.events("alert") == [], "the event waits for the store"
        await room_on_the_disk(running)
        event = await mqtt.wait_for(lambda: mqtt.events("alert"), timeout=10, what="the event")
        assert event[0]["alert_id"] == "outing_overdue-s001"
        assert event[0]["started_at"] == firing["started_at"]
        store = running.gateway.store
        assert store is not None
        stored = await store.cursor("alerts:active")
        assert stored is not None
        assert "outing_overdue-s001" in stored
    db = sqlite3.connect(tmp_path / "hallgw.db")
    try:
        kinds = [row[0] for row in db.execute("SELECT kind FROM journal WHERE kind = 'alert'")]
    finally:
        db.close()
    assert kinds == ["alert"]


# -- presence's own conditions, through the real presence service ------------------------------


@contextlib.asynccontextmanager
async def presence_gateway(
    tmp_path: Path, broker: Mosquitto, clock: FakeClock
) -> AsyncIterator[RunningGateway]:
    data = presence_hall(tmp_path, mqtt_port=broker.port, windows=2)
    data["alerts"] = {"flap_window_s": 0}
    config = to_config(data)
    async with running_gateway(config, gateway=Gateway(config, api_secrets(), clock=clock)) as gw:
        yield gw


async def test_presence_conditions_become_alerts_and_survive_a_restart(
    tmp_path: Path, broker: Mosquitto
) -> None:
    clock = FakeClock(at("09:30:00"))  # a Friday morning; nobody has come to the windows
    async with Recorder(broker.port, [f"{ROOT}/alerts/#", f"{ROOT}/events/alert/#"]) as mqtt:
        async with presence_gateway(tmp_path, broker, clock) as gw:
            await presence(gw).sync()
            alerts = alerts_of(gw)
            pending = {a.alert_id for a in alerts.engine.alerts() if a.rule != "gateway_degraded"}
            # unattended since the gateway started: pending for alerts.window_unattended_for_s
            assert pending == {"window_unattended-w01", "window_unattended-w02"}
            clock.advance(121)
            windows = await mqtt.wait_for(
                lambda: (
                    mqtt.last("alerts/window_unattended-w01")
                    and mqtt.last("alerts/window_unattended-w02")
                ),
                what="both windows unattended for 2 minutes",
            )
            assert windows["summary"] == "2号窗口(w02)无人值守"
            assert windows["started_at"] == "2026-11-20T09:30:00+08:00"

            status, outing = await api(
                gw,
                "POST",
                "/api/v1/outings",
                {"staff_id": "s001", "reason": "private", "expected_minutes": 10},
            )
            assert status == 201, outing
            clock.advance(11 * 60)
            await presence(gw).sync()
            overdue = await mqtt.wait_for(lambda: mqtt.last("alerts/outing_overdue-s001"))
            assert overdue["summary"] == "员工001(s001) 外出超时,应于 09:42 返回"
            assert overdue["started_at"] == "2026-11-20T09:42:01+08:00"
        firing = [e["alert_id"] for e in mqtt.events("alert") if e["status"] == "firing"]

        async with presence_gateway(tmp_path, broker, clock) as gw:
            alerts = alerts_of(gw)
            assert {a.alert_id for a in alerts.engine.firing()} == set(firing)
            await until(
                lambda: all(a.confirmed for a in alerts.engine.alerts()), "confirmed by presence"
            )
            status, _ = await api(gw, "POST", f"/api/v1/outings/{outing['outing_id']}/end", {})
            assert status == 200
            resolved = await mqtt.wait_for(
                lambda: [e for e in mqtt.events("alert") if e["status"] == "resolved"],
                what="the outing's alert resolved",
            )
            assert [e["alert_id"] for e in resolved] == ["outing_overdue-s001"]
        assert sorted(e["alert_id"] for e in mqtt.events("alert") if e["status"] == "firing") == [
            "outing_overdue-s001",
            "window_unattended-w01",
            "window_unattended-w02",
        ], "nothing fired twice across the restart"
