"""Outage detection: from the moment a device stops to its `offline` on MQTT, per device kind,
beside the bound its config sets (offline after 3 failed polls: 3 x its poll interval).

Goal (issue 8): detection within the bound plus one poll interval. The hall's intervals are
shortened from their defaults so that the run takes minutes, not an hour; the bound moves with
them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import Figure
from bench.hall_run import HallRun, working_day
from simulators.hall import HallShape

SHAPE: Final = HallShape(windows=8, floors=1, clocks=1, kiosks=1, leds=1)
KIOSK_POLL_S: Final = 3.0
LED_POLL_S: Final = 2.0
CLOCK_DELAY_S: Final = 2.0
QUEUE_POLL_S: Final = 1.0
PAD_SWEEP_S: Final = 1.0
FAILURES: Final = 3  # devices.md: offline after 3 failed polls


def tweak(data: dict[str, Any]) -> None:
    for bus in data["buses"]:
        bus["sweep_interval_ms"] = int(PAD_SWEEP_S * 1000)
    for device in data["devices"]:
        match device["profile"]:
            case "kiosk_http":
                device["poll_s"] = KIOSK_POLL_S
                device["hours"] = "always"
            case "led_text":
                device["status_poll_s"] = LED_POLL_S
            case "zk_push":
                device["delay_s"] = CLOCK_DELAY_S
            case "modbus_queue":
                device["poll_s"] = QUEUE_POLL_S


class Availability:
    """When each device was last seen going offline, from `…/devices/+/availability`."""

    def __init__(self, port: int, root: str) -> None:
        self.offline_at: dict[str, float] = {}
        self.online: dict[str, bool] = {}
        self._topic = f"{root}/devices/+/availability"
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-availability")
        self._client.on_connect = lambda client, *_: client.subscribe(self._topic, qos=1)
        self._client.on_message = self._arrived
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()

    def _arrived(self, _c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        body = json.loads(message.payload)
        self.online[body["device_id"]] = body["state"] == "online"
        if body["state"] == "offline":
            self.offline_at[body["device_id"]] = time.perf_counter()

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


async def detect(watch: Availability, device_id: str, stop: Callable[[], Awaitable[None]]) -> float:
    """Seconds from `stop()` to the device's offline on MQTT."""
    async with asyncio.timeout(60):
        while not watch.online.get(device_id):  # noqa: ASYNC110  # paho's thread updates it
            await asyncio.sleep(0.05)
    watch.offline_at.pop(device_id, None)
    stopped = time.perf_counter()
    await stop()
    async with asyncio.timeout(120):
        while device_id not in watch.offline_at:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    return watch.offline_at[device_id] - stopped


async def run() -> list[Figure]:
    figures: list[Figure] = []
    async with HallRun(SHAPE, start=working_day(10), tweak=tweak) as run:
        assert run.hall is not None
        hall = run.hall
        watch = Availability(run.broker.port, run.root)
        try:
            await run.devices_online()
            pad_id = next(d["id"] for d in run.data["devices"] if d["profile"] == "ff68_pad")
            pad = hall.pads[pad_id.removeprefix("pad-")]
            kiosk_id, agent = next(iter(hall.kiosks.items()))
            led_id, led = next(iter(hall.leds.items()))
            clock_id = next(iter(hall.clocks))
            assert hall.queue is not None
            controller = hall.queue[1]

            async def silence_pad() -> None:
                pad.silent = True

            async def stop_clock() -> None:
                for task in run.tasks(f"sim-{clock_id}"):
                    task.cancel()

            cases: list[tuple[str, str, Callable[[], Awaitable[None]], float]] = [
                ("rating pad", pad_id, silence_pad, PAD_SWEEP_S),
                ("kiosk", kiosk_id, agent.crash, KIOSK_POLL_S),
                ("LED screen", led_id, led.refuse, LED_POLL_S),
                ("queue controller", "queue-main", controller.stop, QUEUE_POLL_S),
                ("punch clock", clock_id, stop_clock, CLOCK_DELAY_S),
            ]
            for kind, device_id, stop, interval in cases:
                seconds = await detect(watch, device_id, stop)
                bound = FAILURES * interval
                figures.append(
                    Figure(
                        f"outage detection: {kind}",
                        seconds,
                        "s",
                        "configured bound",
                        bound,
                        goal=f"<= bound + {interval:g} s",
                        met=seconds <= bound + interval,
                    )
                )
        finally:
            watch.close()
    return figures
