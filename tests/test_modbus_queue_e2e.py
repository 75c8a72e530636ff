"""Queue-call controllers end to end: the simulated controller served by pymodbus on real TCP
sockets and ptys → gateway → real Mosquitto.

The engine's ground truth is the reference. In lockstep tests the controller applies the next
round of the day at every header read, so every poll sees exactly one round: a whole day runs in
seconds, and each window changes at most once between two polls (or several times, on purpose).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from drivers.ff68_pad import codec as pad_codec
from drivers.modbus_queue import rtu
from drivers.modbus_queue.config import RegisterMap
from gateway.config import Config
from simulators.ff68_pad import PadBus, SimPad
from simulators.modbus_queue import (
    DayScript,
    QueueController,
    QueueEngine,
    Rs485Line,
    Truth,
    pad_frames,
    rtu_frames,
)
from tests.support.harness import RunningGateway, pad_hall, running_gateway, to_config
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import Recorder
from tests.support.queue import VENDOR_MAP

DEVICE = "queue-main"
EVENT_KEYS = {"v", "event_id", "kind", "ts", "received_at", "device_id", "window_id", "action"}
EVENT_KEYS |= {"ticket", "service", "waiting"}
# a whole scripted day, however slow the machine, stays well inside this
DAY_TIMEOUT_S = 90.0


def queue_hall(
    tmp_path: Path,
    broker: Mosquitto,
    device: dict[str, Any],
    *,
    windows: int = 12,
    pads: int = 0,
    bus_url: str = "unused",
) -> Config:
    """pad_hall's windows and staff (A staff of window n has queue_no 100+n), plus the controller."""
    data = pad_hall(tmp_path, mqtt_port=broker.port, bus_url=bus_url, pads=windows)
    for number, window in enumerate(data["windows"], start=1):
        window["queue_window"] = number
    data["devices"] = [*data["devices"][:pads], {"id": DEVICE, "profile": "modbus_queue", **device}]
    if not pads and "bus" not in device:
        data["buses"] = []
    return to_config(data)


class Lockstep:
    """Apply `rounds_per_poll` rounds of the day at every header read, sealing the last ones."""

    def __init__(self, controller: QueueController, script: DayScript, rounds_per_poll: int = 1):
        self.controller = controller
        self.script = script
        self.rounds_per_poll = rounds_per_poll
        self.done = asyncio.Event()
        controller.on_header_read = self

    def __call__(self) -> None:
        engine = self.script.engine
        engine.seal()  # the gateway's last poll read the state as it is now
        for _ in range(self.rounds_per_poll):
            if not self.script.round():
                engine.seal()
                self.controller.on_header_read = None
                self.done.set()
                return

    async def finished(self) -> None:
        async with asyncio.timeout(DAY_TIMEOUT_S):
            await self.done.wait()


def availability(mqtt: Recorder, device: str = DEVICE) -> list[dict[str, Any]]:
    return mqtt.payloads(f"devices/{device}/availability")


async def wait_availability(
    mqtt: Recorder, state: str, reason: str | None = None, *, timeout: float = 15.0
) -> None:
    def reached() -> bool:
        latest = availability(mqtt)
        return (
            bool(latest)
            and latest[-1]["state"] == state
            and (reason is None or latest[-1]["reason"] == reason)
        )

    await mqtt.wait_for(reached, timeout=timeout, what=f"{DEVICE} {state} ({reason})")


def queue_events(mqtt: Recorder) -> list[dict[str, Any]]:
    return mqtt.payloads(f"events/queue/{DEVICE}")


async def settled(mqtt: Recorder, gw: RunningGateway, engine: QueueEngine) -> list[dict[str, Any]]:
    """Wait until the gateway holds the engine's current state and MQTT has every stored event."""

    def holds_state() -> bool:
        values = gw.gateway.hub.get(DEVICE).values
        windows = values.get("windows", {})
        seen = [(w["status"], w["served_today"], w["ticket"]) for w in windows.values()]
        real = [(w.status, w.served, engine.label(w)) for w in engine.windows]
        waiting = [s["waiting"] for s in values.get("services", {}).values()]
        return seen == real and waiting == [len(s.queue) for s in engine.services]

    await mqtt.wait_for(holds_state, timeout=30, what="the gateway to hold the engine's state")
    store = gw.gateway.store
    assert store is not None
    stored = len(await store.journal(kinds=["queue"], device_id=DEVICE))
    await mqtt.wait_for(
        lambda: len(queue_events(mqtt)) >= stored, timeout=30, what=f"{stored} queue events"
    )
    return queue_events(mqtt)


def by_window(rows: list[tuple[Any, ...]]) -> dict[Any, list[tuple[Any, ...]]]:
    grouped: dict[Any, list[tuple[Any, ...]]] = {}
    for row in rows:
        grouped.setdefault(row[0], []).append(row[1:])
    return grouped


def truth_rows(
    truth: list[Truth], keep: Callable[[Truth], bool] = lambda _t: True
) -> list[tuple[Any, ...]]:
    return [
        (f"w{t.window:02d}", t.action, t.ticket, t.service, t.waiting) for t in truth if keep(t)
    ]


def event_rows(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["window_id"], e["action"], e["ticket"], e["service"], e["waiting"]) for e in events]


def requests(gw: RunningGateway, result: str) -> float:
    """Requests to the controller with `result` so far (read in process, for wait conditions)."""
    labels = {"device_id": DEVICE, "kind": "queue", "result": result}
    value = gw.gateway.metrics.registry.get_sample_value("hallgw_device_requests_total", labels)
    return value or 0.0


@pytest.fixture
async def tcp_controller() -> AsyncIterator[QueueController]:
    controller = QueueController(QueueEngine(12, 4))
    await controller.serve_tcp()
    try:
        yield controller
    finally:
        await controller.stop()


def tcp_device(controller: QueueController, **extra: Any) -> dict[str, Any]:
    port = controller.listening_port
    return {"transport": "tcp", "host": "127.0.0.1", "port": port, **extra}


async def test_a_scripted_day_of_2000_tickets_on_mqtt_equals_the_engines_ground_truth(
    tmp_path: Path, broker: Mosquitto, tcp_controller: QueueController
) -> None:
    controller, engine = tcp_controller, tcp_controller.engine
    config = queue_hall(tmp_path, broker, tcp_device(controller, poll_s=0.002))
    async with Recorder(broker.port, ["hall/test-hall/#"]) as mqtt, running_gateway(config) as gw:
        await wait_availability(mqtt, "online")
        script = DayScript(engine, tickets=2000, seed=20261121, issue_per_round=6.0)
        await Lockstep(controller, script).finished()
        events = await settled(mqtt, gw, engine)

        assert script.issued == 2000
        assert {t.action for t in engine.truth} == {
            "opened", "called", "recalled", "finished", "skipped", "paused", "resumed", "closed",
        }  # fmt: skip
        assert by_window(event_rows(events)) == by_window(truth_rows(engine.truth))
        assert len(events) == len(engine.truth)
        assert all(set(e) == EVENT_KEYS and e["kind"] == "queue" for e in events)
        assert len({e["event_id"] for e in events}) == len(events)

        # the windows' live state and the queues, as device state values
        states = [s["values"] for s in mqtt.payloads(f"devices/{DEVICE}/state")]
        serving = [
            v["windows"]["w01"] for v in states if v["windows"]["w01"]["status"] == "serving"
        ]
        assert serving, "window 1 served during the day"
        assert {(w["staff_no"], w["staff_id"]) for w in serving} == {(101, "s001")}
        assert all(w["ticket"] and w["service"] and w["call_count"] for w in serving)
        final = states[-1]
        assert final["issued_today"] == 2000
        assert final["waiting_total"] == 0
        assert sum(w["served_today"] for w in final["windows"].values()) == sum(
            w.served for w in engine.windows
        )
        assert final["services"]["1"]["last_issued"] == f"A{engine.services[0].issued:03d}"

        # idle polls read the header and nothing else
        reads, headers = controller.reads, controller.header_reads
        await mqtt.wait_for(lambda: controller.header_reads >= headers + 20, what="20 idle polls")
        assert controller.reads - reads == controller.header_reads - headers


async def test_changes_faster_than_the_poll_still_count_every_finish_and_recall(
    tmp_path: Path, broker: Mosquitto, tcp_controller: QueueController
) -> None:
    controller, engine = tcp_controller, tcp_controller.engine
    config = queue_hall(tmp_path, broker, tcp_device(controller, poll_s=0.002))
    async with Recorder(broker.port, ["hall/test-hall/#"]) as mqtt, running_gateway(config) as gw:
        await wait_availability(mqtt, "online")
        script = DayScript(engine, tickets=600, seed=7, issue_per_round=6.0)
        await Lockstep(controller, script, rounds_per_poll=4).finished()
        events = await settled(mqtt, gw, engine)

        def count(rows: list[tuple[Any, ...]], action: str) -> Counter[Any]:
            return Counter(row[0] for row in rows if row[1] == action)

        mine, truth = event_rows(events), truth_rows(engine.truth)
        assert count(mine, "finished") == count(truth, "finished")
        # a recall shows in the call count while its ticket is on display at the next poll
        assert count(mine, "recalled") == count(
            truth_rows(engine.truth, lambda t: t.seen), "recalled"
        )
        # several finishes did fall into one poll interval: they have no ticket to show
        assert any(e["action"] == "finished" and e["ticket"] is None for e in events)
        assert any(not t.seen for t in engine.truth), "some recalls were replaced unseen"
        assert len(count(mine, "called")) == 12


async def test_exceptions_timeouts_and_dropped_connections_are_counted_and_recovered(
    tmp_path: Path, broker: Mosquitto, tcp_controller: QueueController
) -> None:
    controller, engine = tcp_controller, tcp_controller.engine
    device = tcp_device(controller, poll_s=0.02, timeout_s=0.2)
    config = queue_hall(tmp_path, broker, device)
    async with Recorder(broker.port, ["hall/test-hall/#"]) as mqtt, running_gateway(config) as gw:
        await wait_availability(mqtt, "online")
        engine.open(1)
        engine.issue(1)
        engine.call(1)
        await mqtt.wait_for(lambda: len(queue_events(mqtt)) == 2, what="opened and called")

        controller.fault = "exception"
        await wait_availability(mqtt, "offline", "bad_response")
        assert requests(gw, "bad_response") >= 3
        engine.finish(1)  # while the controller answers with exceptions
        controller.fault = None
        await wait_availability(mqtt, "online")
        await mqtt.wait_for(lambda: len(queue_events(mqtt)) == 3, what="the finish")
        assert queue_events(mqtt)[-1]["action"] == "finished"

        controller.fault = "silent"
        await wait_availability(mqtt, "offline", "timeout")
        assert requests(gw, "timeout") >= 3
        controller.fault = None
        await wait_availability(mqtt, "online")

        io_errors = requests(gw, "io_error")
        assert controller.drop_connections() == 1
        engine.issue(2)
        engine.call(1)
        await mqtt.wait_for(lambda: len(queue_events(mqtt)) == 4, what="the call after the drop")
        assert queue_events(mqtt)[-1]["ticket"] == "B001"
        assert requests(gw, "io_error") > io_errors
        assert controller.drop_connections() == 1, "the gateway connected again"


async def test_after_the_controller_restarts_the_gateway_reconnects_and_counts_what_happened(
    tmp_path: Path, broker: Mosquitto, tcp_controller: QueueController
) -> None:
    controller, engine = tcp_controller, tcp_controller.engine
    port = controller.listening_port
    config = queue_hall(tmp_path, broker, tcp_device(controller, poll_s=0.02))
    async with Recorder(broker.port, ["hall/test-hall/#"]) as mqtt, running_gateway(config) as gw:
        await wait_availability(mqtt, "online")
        for window in (1, 2):
            engine.open(window)
            engine.issue(window)
            engine.call(window)
        await mqtt.wait_for(lambda: len(queue_events(mqtt)) == 4, what="two windows serving")

        io_errors = requests(gw, "io_error")
        await controller.stop()
        engine.finish(1)
        engine.issue(1)
        engine.call(1)
        engine.finish(1)
        engine.recall(2)
        # the lost connection, then a reconnect refused while the controller is off
        await mqtt.wait_for(
            lambda: requests(gw, "io_error") >= io_errors + 2, what="the refused reconnect"
        )
        await controller.serve_tcp(port=port)
        await settled(mqtt, gw, engine)
        assert event_rows(queue_events(mqtt))[4:] == [
            ("w01", "finished", "A001", 1, 0),
            ("w01", "finished", None, None, None),
            ("w02", "recalled", "B001", 2, 0),
        ]


async def test_what_happened_while_the_gateway_was_down_is_found_after_its_restart(
    tmp_path: Path, broker: Mosquitto, tcp_controller: QueueController
) -> None:
    engine = tcp_controller.engine
    config = queue_hall(tmp_path, broker, tcp_device(tcp_controller, poll_s=0.02))
    async with Recorder(broker.port, ["hall/test-hall/#"]) as mqtt:
        async with running_gateway(config) as gw:
            await wait_availability(mqtt, "online")
            engine.open(1)
            engine.issue(1)
            engine.call(1)
            await settled(mqtt, gw, engine)
        # the gateway is away while window 1 finishes, calls, finishes again and window 2 opens
        engine.finish(1)
        engine.issue(1)
        engine.call(1)
        engine.finish(1)
        engine.open(2)
        async with running_gateway(config) as gw:
            events = await settled(mqtt, gw, engine)
            assert event_rows(events) == [
                ("w01", "opened", None, None, None),
                ("w01", "called", "A001", 1, 0),
                ("w01", "finished", "A001", 1, 0),
                ("w01", "finished", None, None, None),
                ("w02", "opened", None, None, None),
            ]
        async with running_gateway(config) as gw:  # a restart with nothing new: no event
            engine.pause(2)
            events = await settled(mqtt, gw, engine)
            assert event_rows(events)[5:] == [("w02", "paused", None, None, None)]


async def test_an_rtu_controller_and_rating_pads_share_one_serial_line(
    tmp_path: Path, broker: Mosquitto
) -> None:
    pads = PadBus([SimPad(n) for n in range(1, 5)])
    engine = QueueEngine(4, 2)
    controller = QueueController(engine, unit=5)
    line = Rs485Line()
    try:
        await line.attach(pad_frames, pad_codec.decode, "127.0.0.1", await pads.open_tcp())
        await line.attach(
            rtu_frames, rtu.decode_request, "127.0.0.1", await controller.serve_rtu_tcp()
        )
        path = await line.open_pty(tmp_path / "line-1f")
        device = {"transport": "rtu", "bus": "pads-1f", "unit": 5, "poll_s": 0.01}
        config = queue_hall(tmp_path, broker, device, windows=4, pads=4, bus_url=path)
        async with (
            Recorder(broker.port, ["hall/test-hall/#"]) as mqtt,
            running_gateway(config) as gw,
        ):
            await wait_availability(mqtt, "online")
            pads.pad(1).login("0000000001")
            for key in (1, 2, 3):
                pads.pad(1).press(key)
            script = DayScript(engine, tickets=120, seed=5, issue_per_round=2.0)
            await Lockstep(controller, script).finished()
            events = await settled(mqtt, gw, engine)
            assert by_window(event_rows(events)) == by_window(truth_rows(engine.truth))
            ratings = await mqtt.wait_for(
                lambda: len(r := mqtt.payloads("events/rating/pad-w01")) == 3 and r,
                what="three ratings from the pad on the same line",
            )
            assert [(r["level"], r["staff_id"]) for r in ratings] == [
                (5, "s001"),
                (4, "s001"),
                (3, "s001"),
            ]
            assert line.unrouted == 0

            # corrupt RTU answers are bad frames; the pads on the line do not notice
            bad_frames = requests(gw, "bad_frame")
            controller.fault = "corrupt"
            await wait_availability(mqtt, "offline", "crc_errors")
            assert requests(gw, "bad_frame") >= bad_frames + 3
            pads.pad(2).press(5)
            await mqtt.wait_for(
                lambda: len(mqtt.payloads("events/rating/pad-w02")) == 1, what="a rating"
            )
            assert availability(mqtt, "pad-w02")[-1]["state"] == "online"
    finally:
        await line.close()
        await controller.stop()
        await pads.close()


async def test_another_vendors_controller_on_a_serial_port_of_its_own_is_a_yaml_block(
    tmp_path: Path, broker: Mosquitto
) -> None:
    engine = QueueEngine(6, 3, register_map=RegisterMap.model_validate(VENDOR_MAP))
    controller = QueueController(engine, unit=3)
    try:
        path = await controller.open_pty(tmp_path / "queue-rtu")
        device = {
            "transport": "rtu",
            "url": path,
            "unit": 3,
            "poll_s": 0.005,
            "register_map": VENDOR_MAP,
        }
        config = queue_hall(tmp_path, broker, device, windows=6)
        async with (
            Recorder(broker.port, ["hall/test-hall/#"]) as mqtt,
            running_gateway(config) as gw,
        ):
            await wait_availability(mqtt, "online")
            script = DayScript(engine, tickets=80, seed=11, issue_per_round=2.0)
            await Lockstep(controller, script).finished()
            events = await settled(mqtt, gw, engine)
            assert by_window(event_rows(events)) == by_window(truth_rows(engine.truth))
            called = [e["ticket"] for e in events if e["action"] == "called"]
            assert called
            assert all(ticket.isdigit() and len(ticket) == 3 for ticket in called)
            final = mqtt.payloads(f"devices/{DEVICE}/state")[-1]["values"]
            assert final["waiting_total"] == 0
            assert final["issued_today"] == 80
    finally:
        await controller.stop()
