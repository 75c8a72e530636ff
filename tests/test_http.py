"""The main listener: health, Prometheus metrics with the contract's names, the device list."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.errors import StoreError
from simulators.ff68_pad import PadBus, SimPad
from tests.support.harness import RunningGateway, pad_hall, running_gateway, to_config
from tests.support.mosquitto import Mosquitto

CONTRACT_METRICS = {
    "hallgw_build_info": "gauge",
    "hallgw_device_up": "gauge",
    "hallgw_device_last_seen_timestamp_seconds": "gauge",
    "hallgw_device_requests_total": "counter",
    "hallgw_device_request_duration_seconds": "histogram",
    "hallgw_bus_sweep_seconds": "histogram",
    "hallgw_events_total": "counter",
    "hallgw_mqtt_connected": "gauge",
    "hallgw_mqtt_published_total": "counter",
    "hallgw_outbox_messages": "gauge",
    "hallgw_outbox_dropped_total": "counter",
    "hallgw_event_publish_latency_seconds": "histogram",
}


@pytest.fixture
async def hall(tmp_path: Path, broker: Mosquitto) -> AsyncIterator[RunningGateway]:
    bus = PadBus([SimPad(1), SimPad(2)])
    await bus.open_pty(tmp_path / "pads-1f")
    data = pad_hall(tmp_path, mqtt_port=broker.port, bus_url=str(tmp_path / "pads-1f"), pads=2)
    try:
        async with running_gateway(to_config(data)) as running:
            yield running
    finally:
        await bus.close()


async def test_healthz_reports_a_store_that_cannot_write(tmp_path: Path, broker: Mosquitto) -> None:
    # no devices: nothing else writes while the disk is "full", so the answer is deterministic
    data = pad_hall(tmp_path, mqtt_port=broker.port, bus_url="socket://127.0.0.1:9", pads=0)
    async with running_gateway(to_config(data)) as hall:
        await check_health_follows_the_store(hall)


async def check_health_follows_the_store(hall: RunningGateway) -> None:
    assert await hall.get("/healthz") == (200, {"status": "ok"})
    store = hall.gateway.store
    assert store is not None
    await store._write(
        lambda conn, _c: conn.execute(  # a full disk, as SQLite sees it
            "PRAGMA max_page_count = " + str(conn.execute("PRAGMA page_count").fetchone()[0])
        )
    )
    with pytest.raises(StoreError):
        await store.set_cursor("filler", "x" * 100_000)
    status, body = await hall.get("/healthz")
    assert status == 503
    assert body["status"] == "error"
    assert "store not writable" in body["reason"]
    assert "full" in body["reason"]
    assert await hall.metric("hallgw_store_writable") == 0
    await store._write(lambda conn, _c: conn.execute("PRAGMA max_page_count = 1073741823"))
    await store.probe()
    assert await hall.get("/healthz") == (200, {"status": "ok"})


async def test_metrics_carry_the_contracts_names_and_types(hall: RunningGateway) -> None:
    async with aiohttp.ClientSession() as session, session.get(hall.base_url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
    declared = {
        line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE")
    }
    for name, kind in CONTRACT_METRICS.items():
        assert declared.get(name) == kind, f"{name} is a {kind} on /metrics"
    assert 'hallgw_build_info{version="0.1.0"} 1.0' in text
    assert 'hallgw_device_up{device_id="pad-w01",kind="rating_pad"}' in text
    assert 'hallgw_outbox_dropped_total{reason="overflow"} 0.0' in text
    assert await hall.metric("hallgw_bus_sweep_seconds_count", bus="pads-1f") >= 0


async def test_the_device_list_has_every_configured_device(hall: RunningGateway) -> None:
    status, devices = await hall.get("/api/v1/devices")
    assert status == 200
    assert [d["device_id"] for d in devices] == ["pad-w01", "pad-w02"]
    assert set(devices[0]) == {"device_id", "kind", "state", "since", "reason", "values"}
    assert devices[0]["kind"] == "rating_pad"


async def test_unknown_paths_answer_json_errors(hall: RunningGateway) -> None:
    status, body = await hall.get("/api/v1/nothing")
    assert status == 404
    assert body == {"error": "Not Found"}


def test_listeners_bind_to_loopback_unless_configured() -> None:
    config = to_config({"site": "a"})
    assert config.http.bind == "127.0.0.1"
