"""The MQTT publisher against real Mosquitto: gateway state and last will, health, retained state
after a broker restart, passwords and TLS."""

from __future__ import annotations

import signal
from pathlib import Path

from gateway import CONTRACT_VERSION, __version__
from gateway.config import Secret
from simulators.ff68_pad import PadBus
from tests.support.harness import (
    GatewayProcess,
    api_secrets,
    pad_hall,
    running_gateway,
    to_config,
    wait_metric,
    write_config,
)
from tests.support.mosquitto import Mosquitto, make_tls_files
from tests.support.mqtt import Recorder

ROOT = "hall/test-hall"


async def test_gateway_state_is_retained_with_a_last_will(
    tmp_path: Path, broker: Mosquitto, padbus: PadBus
) -> None:
    data = pad_hall(tmp_path, mqtt_port=broker.port, bus_url=str(tmp_path / "pads-1f"), pads=2)
    gateway = GatewayProcess(write_config(tmp_path / "hall.yaml", data), tmp_path / "gw.log")
    async with Recorder(broker.port, [f"{ROOT}/gateway/#"]) as mqtt:
        await gateway.start()
        online = await mqtt.wait_for(lambda: mqtt.last("gateway/state"), timeout=20)
        assert online == {
            "v": 1,
            "state": "online",
            "version": __version__,
            "contract": CONTRACT_VERSION,
            "started_at": online["started_at"],
        }
        health = await mqtt.wait_for(
            lambda: mqtt.last("gateway/health"), timeout=5, what="health within 5 s of the connect"
        )
        assert set(health) == {
            "v",
            "uptime_s",
            "rss_bytes",
            "outbox_depth",
            "devices_online",
            "devices_total",
        }
        assert health["devices_total"] == 2
        assert health["rss_bytes"] > 10_000_000

        gateway.kill()
        await gateway.wait()
        will = await mqtt.wait_for(
            lambda: mqtt.last("gateway/state")["state"] == "offline" and mqtt.last("gateway/state"),
            timeout=30,
            what="the last will",  # the broker notices after 1.5 keepalives
        )
        assert will == {"v": 1, "state": "offline"}

        await gateway.start()
        await mqtt.wait_for(lambda: mqtt.last("gateway/state")["state"] == "online", timeout=20)
        assert await gateway.stop(signal.SIGTERM) == 0
        await mqtt.wait_for(
            lambda: mqtt.last("gateway/state")["state"] == "offline",
            what="offline published on a clean stop",
        )
    async with Recorder(broker.port, [f"{ROOT}/gateway/state"]) as late:
        retained = await late.wait_for(lambda: late.messages)
        assert retained[0].retain
        assert retained[0].json() == {"v": 1, "state": "offline"}


async def test_retained_state_comes_back_after_a_broker_restart_without_persistence(
    tmp_path: Path, broker: Mosquitto, padbus: PadBus
) -> None:
    data = pad_hall(tmp_path, mqtt_port=broker.port, bus_url=str(tmp_path / "pads-1f"), pads=2)
    async with running_gateway(to_config(data)) as running:
        await running.gateway.publisher.connected.wait()  # type: ignore[union-attr]
        padbus.pad(1).login("0000000001")
        async with Recorder(broker.port, [f"{ROOT}/devices/pad-w01/state"]) as mqtt:
            await mqtt.wait_for(
                lambda: (
                    (mqtt.last("pad-w01/state") or {}).get("values", {}).get("staff_id") == "s001"
                )
            )
        await broker.restart()  # persistence is off: the broker forgets every retained message
        await wait_metric(running, "hallgw_mqtt_connected", 1, timeout=30)
        expected = {
            "gateway/state",
            "gateway/health",
            "devices/pad-w01/availability",
            "devices/pad-w02/availability",
            "devices/pad-w01/state",
        }

        def seen(recorder: Recorder, *, retained: bool) -> bool:
            topics = {
                m.topic.removeprefix(f"{ROOT}/")
                for m in recorder.messages
                if m.retain or not retained
            }
            return expected <= topics

        async with Recorder(broker.port, [f"{ROOT}/#"]) as watcher:
            await watcher.wait_for(
                lambda: seen(watcher, retained=False),
                timeout=15,
                what="every retained topic published again",
            )
        async with Recorder(broker.port, [f"{ROOT}/#"]) as late:
            await late.wait_for(lambda: seen(late, retained=True), what="all of it retained")
            assert late.last("pad-w01/state")["values"]["staff_id"] == "s001"
            assert late.last("pad-w01/availability")["state"] == "online"


async def test_the_gateway_logs_in_with_a_password_from_the_environment(
    tmp_path: Path, padbus: PadBus
) -> None:
    broker = Mosquitto(tmp_path / "mosquitto", users={"hallgw": "pw-9d2", "board": "pw-b0a"})
    await broker.start()
    try:
        data = pad_hall(tmp_path, mqtt_port=broker.port, bus_url=str(tmp_path / "pads-1f"), pads=2)
        data["mqtt"].update(username="hallgw", password_env="HALLGW_MQTT_PASSWORD")
        config = to_config(data)
        auth = {"username": "board", "password": "pw-b0a"}
        async with Recorder(broker.port, [f"{ROOT}/#"], **auth) as mqtt:
            secrets = api_secrets(mqtt_password=Secret("pw-9d2"))
            async with running_gateway(config, secrets):
                padbus.pad(2).press(1)
                await mqtt.wait_for(lambda: mqtt.events("rating"), what="a rating")
            wrong = api_secrets(mqtt_password=Secret("not-it"))
            async with running_gateway(config, wrong) as refused:
                padbus.pad(2).press(2)
                await wait_metric(
                    refused, "hallgw_device_requests_total", 4, device_id="pad-w02", result="ok"
                )
                assert await refused.metric("hallgw_mqtt_connected") == 0
                assert refused.gateway.store is not None
                await mqtt.wait_for(
                    lambda: refused.gateway.store.outbox_depth >= 1,  # type: ignore[union-attr]
                    what="the rating kept in the outbox",
                )
            assert len(mqtt.events("rating")) == 1
    finally:
        await broker.stop()


async def test_the_gateway_talks_tls_to_a_listener_with_a_private_ca(
    tmp_path: Path, padbus: PadBus
) -> None:
    tls = await make_tls_files(tmp_path / "tls")
    broker = Mosquitto(tmp_path / "mosquitto", tls=tls)
    await broker.start()
    try:
        data = pad_hall(tmp_path, mqtt_port=broker.port, bus_url=str(tmp_path / "pads-1f"), pads=2)
        data["mqtt"].update(host="localhost", tls={"enabled": True, "ca_file": str(tls.ca)})
        async with Recorder(broker.port, [f"{ROOT}/#"], tls_ca=str(tls.ca)) as mqtt:
            async with running_gateway(to_config(data)) as running:
                padbus.pad(1).press(3)
                rating = await mqtt.wait_for(lambda: mqtt.events("rating"), what="a rating")
                assert rating[0]["level"] == 3
                assert await running.metric("hallgw_mqtt_connected") == 1
            # a gateway that does not trust the broker's certificate does not connect
            data["mqtt"]["tls"] = {"enabled": True}
            async with running_gateway(to_config(data)) as untrusting:
                # devices start only after the first connection attempt has ended
                await wait_metric(untrusting, "hallgw_device_requests_total", 1, result="ok")
                assert await untrusting.metric("hallgw_mqtt_connected") == 0
    finally:
        await broker.stop()
