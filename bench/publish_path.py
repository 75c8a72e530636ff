"""The publish path: events from the driver layer to the broker's PUBACK, against raw paho.

Ours: `EventBus.publish` (the journal and the outbox committed, fsync'd) from 64 concurrent
producers, drained by `MqttPublisher` at QoS 1 until every event is acknowledged. Baseline: a
raw paho-mqtt client publishing the same payloads to the same topics at QoS 1 with the same
in-flight window, to the same broker, in the same run. Then latency at a steady 500 events/s,
from `received_at` to PUBACK, beside raw paho's publish-to-PUBACK latency at the same rate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import Figure
from gateway.bus import EventBus
from gateway.clock import SystemClock
from gateway.config import Config, Secrets, parse_config
from gateway.events import RatingEvent
from gateway.ids import stable_id
from gateway.metrics import Metrics
from gateway.mqtt import MAX_INFLIGHT, MqttPublisher
from gateway.store import Store
from gateway.topics import event_messages
from simulators.broker import Mosquitto

EVENTS: Final = 20_000
PRODUCERS: Final = 64  # drivers storing at once: pads on many buses, clocks, the queue
RATE: Final = 500  # events per second for the latency run
RATE_SECONDS: Final = 10
ROUNDS: Final = 3  # each side's best of three alternating runs: the machine is shared
ZONE: Final = ZoneInfo("Asia/Shanghai")


def make_events(count: int, tag: str) -> list[RatingEvent]:
    now = dt.datetime.now(ZONE)
    return [
        RatingEvent(
            event_id=stable_id("bench", tag, n),
            ts=now,
            received_at=now,
            device_id=f"pad-w{n % 300:03d}",
            window_id=f"w{n % 300:03d}",
            staff_id=f"s{n % 600:03d}",
            level=5,
            label="非常满意",
        )
        for n in range(count)
    ]


def raw_paho(
    port: int, messages: list[tuple[str, bytes]], rate: float | None
) -> tuple[float, list[float]]:
    """Publish `messages` at QoS 1 (as fast as possible, or at `rate`): the seconds until the
    last PUBACK, and each message's publish→PUBACK latency."""
    done = threading.Event()
    sent: dict[int, float] = {}
    acked: dict[int, float] = {}

    def on_publish(_c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        # paho calls this holding its own lock: no lock of ours here, or publish() deadlocks
        acked[mid] = time.perf_counter()
        if len(acked) == len(messages):
            done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw-paho")
    client.max_inflight_messages_set(MAX_INFLIGHT)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        start = time.perf_counter()
        for index, (topic, payload) in enumerate(messages):
            if rate is not None:
                delay = start + index / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            before = time.perf_counter()
            sent[client.publish(topic, payload, qos=1).mid] = before
        if not done.wait(120):
            raise RuntimeError("raw paho: not every PUBACK arrived")
        elapsed = time.perf_counter() - start
    finally:
        client.loop_stop()
        client.disconnect()
    return elapsed, [acked[mid] - sent[mid] for mid in sent]


async def ours(
    config: Config, state: Path, events: list[RatingEvent], rate: float | None
) -> tuple[float, list[float]]:
    """Seconds until every event is acknowledged, and the received_at→PUBACK latencies."""
    metrics = Metrics()
    latencies: list[float] = []
    observe = metrics.event_publish_latency.observe

    def record(value: float, exemplar: dict[str, str] | None = None) -> None:
        latencies.append(value)
        observe(value, exemplar)

    # the bench reads every latency the publisher measures, not only the histogram buckets
    metrics.event_publish_latency.observe = record  # type: ignore[method-assign,assignment]
    clock = SystemClock(ZONE)
    # a store of its own: the same events stored again would be known facts, never published
    path = Path(tempfile.mkdtemp(dir=state)) / "bench.db"
    async with Store(path, outbox_max_messages=10_000_000) as store:
        bus = EventBus(store, event_messages, metrics)
        publisher = MqttPublisher(
            config, Secrets(), store, metrics, clock, health=lambda: {"v": 1}, started_at="now"
        )
        task = asyncio.create_task(publisher.run(), name="publisher")
        try:
            await publisher.connected.wait()
            fresh = [e.model_copy(update={"received_at": dt.datetime.now(ZONE)}) for e in events]
            started = time.perf_counter()
            if rate is None:

                async def producer(first: int) -> None:
                    for event in fresh[first::PRODUCERS]:
                        await bus.publish(event)

                await asyncio.gather(*(producer(k) for k in range(PRODUCERS)))
            else:
                pending = []
                for index, event in enumerate(fresh):
                    await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
                    stamped = event.model_copy(update={"received_at": dt.datetime.now(ZONE)})
                    pending.append(asyncio.create_task(bus.publish(stamped)))
                await asyncio.gather(*pending)
            # the PUBACKs arrive in the publisher's own tasks; look every millisecond
            while len(latencies) < len(events):  # noqa: ASYNC110
                await asyncio.sleep(0.001)
            return time.perf_counter() - started, latencies
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1]


async def run() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="hallgw-bench-") as tmp:
        state = Path(tmp)
        broker = Mosquitto(state / "mosquitto")
        await broker.start()
        try:
            config = parse_config(
                yaml.safe_dump(
                    {
                        "site": "bench",
                        "mqtt": {"port": broker.port},
                        "store": {"path": str(state)},
                    }
                )
            )
            events = make_events(EVENTS, "throughput")
            messages = [
                (f"hall/bench/{m.topic}", m.payload) for e in events for m in event_messages(e)
            ]
            raw_rates, our_rates = [], []
            for round_ in range(ROUNDS):  # alternate, keep each side's best
                raw_elapsed, _ = await asyncio.to_thread(raw_paho, broker.port, messages, None)
                raw_rates.append(len(messages) / raw_elapsed)
                elapsed, _ = await ours(config, state, make_events(EVENTS, f"round{round_}"), None)
                our_rates.append(len(events) / elapsed)
            steady = make_events(RATE * RATE_SECONDS, "latency")
            steady_messages = [
                (f"hall/bench/{m.topic}", m.payload) for e in steady for m in event_messages(e)
            ]
            _, raw_latency = await asyncio.to_thread(raw_paho, broker.port, steady_messages, RATE)
            _, our_latency = await ours(config, state, steady, RATE)
        finally:
            await broker.stop()
    best_raw, best_ours = max(raw_rates), max(our_rates)
    return [
        Figure(
            "publish path, driver → PUBACK",
            best_ours,
            "events/s",
            "raw paho QoS 1",
            best_raw,
            goal="ratio >= 0.5",
            met=best_ours / best_raw >= 0.5,
        ),
        Figure(
            f"event → PUBACK p50 at {RATE}/s",
            quantile(our_latency, 0.5) * 1000,
            "ms",
            "raw paho p50",
            quantile(raw_latency, 0.5) * 1000,
        ),
        Figure(
            f"event → PUBACK p99 at {RATE}/s",
            quantile(our_latency, 0.99) * 1000,
            "ms",
            "raw paho p99",
            quantile(raw_latency, 0.99) * 1000,
        ),
    ]
