"""Device event → MQTT subscriber latency, at 200 and 2,000 events per second.

The events are punches: simulated ZKTeco clocks in realtime mode push each record as it happens
(the HTTP PUSH of the device contract), the gateway stores it, answers `OK` and publishes it. A
punch's latency runs from the moment the simulated clock takes it to the moment a subscriber
(a paho client in this process) receives its `punch` event. Baseline: a raw paho publisher
sending payloads of the same size to a paho subscriber at the same rate, through the same
broker, in the same run: what the broker and the network alone cost.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import Figure
from bench.hall_run import HallRun, working_day
from simulators.hall import HallShape

SHAPE: Final = HallShape(windows=24, floors=2, clocks=4, kiosks=2, leds=1)
RATES: Final = (200, 2000)
SECONDS: Final = 10.0
GOAL_P99_MS: Final = 50.0  # issue 8: p99 under 50 ms at 200 events/s
FIRST_PIN: Final = 900_000  # PINs no one on the roster has: each punch is told apart by its PIN


class Arrivals:
    """A paho subscriber that notes when each message arrives, keyed by what `key` reads."""

    def __init__(self, port: int, topic: str, key: str) -> None:
        self.times: dict[str, float] = {}
        self._key = key
        self._ready = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{key}")
        self._topic = topic
        self._client.on_connect = self._connected
        self._client.on_subscribe = self._subscribed
        self._client.on_message = self._arrived
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        if not self._ready.wait(10):
            raise RuntimeError("the bench's subscriber could not connect")

    def _connected(self, client: paho.Client, *_: Any) -> None:
        client.subscribe(self._topic, qos=1)

    def _subscribed(self, *_: Any) -> None:
        self._ready.set()  # the broker has the subscription: nothing published from now is missed

    def _arrived(self, _c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        now = time.perf_counter()
        body = json.loads(message.payload)
        self.times.setdefault(str(body[self._key]), now)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def quantiles(values: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(values, n=100)
    return cuts[49], cuts[98]


async def punches(run: HallRun, rate: int, first_pin: int) -> list[float]:
    """Punch at `rate` for SECONDS over every clock; each punch's latency, in ms."""
    assert run.hall is not None
    clocks = list(run.hall.clocks.values())
    arrivals = Arrivals(run.broker.port, f"{run.root}/events/punch/#", "pin")
    try:
        sent: dict[str, float] = {}
        started = time.perf_counter()
        count = int(rate * SECONDS)
        for n in range(count):
            await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
            pin = str(first_pin + n)
            sent[pin] = time.perf_counter()
            clocks[n % len(clocks)].punch(pin)
        async with asyncio.timeout(120):
            # the arrivals are noted in paho's thread; look every 50 ms
            while len(arrivals.times) < count:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        arrivals.close()
    return [1000 * (arrivals.times[pin] - at) for pin, at in sent.items()]


def raw(port: int, rate: int, payload_size: int) -> list[float]:
    """Raw paho publisher → subscriber latencies, in ms."""
    arrivals = Arrivals(port, "bench/raw/#", "n")
    publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw-pub")
    publisher.connect("127.0.0.1", port)
    publisher.loop_start()
    try:
        sent: dict[str, float] = {}
        started = time.perf_counter()
        count = int(rate * SECONDS)
        padding = "x" * max(0, payload_size - 20)
        for n in range(count):
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent[str(n)] = time.perf_counter()
            publisher.publish(f"bench/raw/{n % 50}", json.dumps({"n": n, "p": padding}), qos=1)
        deadline = time.monotonic() + 60
        while len(arrivals.times) < count and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        arrivals.close()
    return [1000 * (arrivals.times[key] - at) for key, at in sent.items() if key in arrivals.times]


async def run() -> list[Figure]:
    figures: list[Figure] = []
    async with HallRun(SHAPE, start=working_day(10)) as hall:
        await hall.devices_online()
        for index, rate in enumerate(RATES):
            ours = await punches(hall, rate, FIRST_PIN + index * 1_000_000)
            theirs = await asyncio.to_thread(raw, hall.broker.port, rate, 300)
            (p50, p99), (raw50, raw99) = quantiles(ours), quantiles(theirs)
            checked = rate == RATES[0]  # the goal is set at 200 events/s
            figures += [
                Figure(f"punch → MQTT p50 at {rate}/s", p50, "ms", "raw paho p50", raw50),
                Figure(
                    f"punch → MQTT p99 at {rate}/s",
                    p99,
                    "ms",
                    "raw paho p99",
                    raw99,
                    goal=f"p99 < {GOAL_P99_MS:g} ms" if checked else "",
                    met=p99 < GOAL_P99_MS if checked else None,
                ),
            ]
    return figures
