"""Faults against a whole simulated hall (24 windows on 2 floors, every kind of device, the
gateway as a child process, a real Mosquitto): each case checks that no acknowledged fact is
lost and that the gateway recovers without a restart (see tests/support/hall.py)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import json
import logging
import os
import random
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from drivers.zk_push import codec
from gateway.clock import ScaledClock
from gateway.ids import stable_id
from tests.support.hall import (
    HALL_START,
    ROOT,
    SITE,
    Hall,
    hall_under_test,
    mount_tmpfs,
    offline,
    read_journal,
    unmount,
)
from tests.support.mosquitto import free_port
from tests.support.polling import until
from tests.support.zk import exchange

pytestmark = pytest.mark.fault

# the scenario of issue 8: the broker is away this long while the hall keeps working
BROKER_OUTAGE_S = 60.0
KILLS = 10
SEED = 8


def acknowledged(hall: Hall) -> tuple[int, int]:
    """Pad events and clock records acknowledged so far."""
    pads = sum(len(p.acked) for p in hall.sim.pads.values())
    clocks = sum(len(c.acknowledged) for c in hall.sim.clocks.values())
    return pads, clocks


async def test_the_broker_down_for_a_minute_under_load(tmp_path: Path) -> None:
    async with hall_under_test(tmp_path, persistence=True) as hall:
        pid = hall.gateway.pid
        hall.start_load(seed=SEED)
        await until(lambda: hall.events.refresh().count >= 50, "traffic before the outage", 30)
        await hall.broker.stop()
        pads, clocks = acknowledged(hall)
        await asyncio.sleep(BROKER_OUTAGE_S)  # the outage itself, not a wait for a state
        assert await hall.metric("hallgw_mqtt_connected") == 0
        assert await hall.metric("hallgw_outbox_messages") > 100, "facts wait in the outbox"
        status, body = await hall.get("/healthz")
        assert status == 200, body
        pads_after, clocks_after = acknowledged(hall)
        assert pads_after > pads + 100, "pads were answered all through the outage"
        assert clocks_after > clocks + 20, "clocks were answered all through the outage"
        offline = [d for d, v in (await hall.devices()).items() if v["state"] != "online"]
        assert not offline, f"devices offline during the outage: {offline}"

        await hall.broker.start()
        await hall.check_recovered(pid)
        await hall.stop_load()
        await hall.check_nothing_lost()
    hall.check_log()


async def retained_state(port: int) -> dict[str, bytes]:
    """What a new subscriber to the hall is handed: the broker's retained messages, by topic.
    A marker published after subscribing arrives after the last of them."""
    marker = f"{ROOT}/test/marker-{uuid.uuid4().hex}"
    found: dict[str, bytes] = {}
    async with asyncio.timeout(10), aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(f"{ROOT}/#", qos=1)
        await client.publish(marker, b"", qos=1)
        async for message in client.messages:
            if message.topic.value == marker:
                return found
            if message.retain and isinstance(message.payload, bytes) and message.payload:
                found[message.topic.value] = message.payload
    raise AssertionError("the marker never came back")


def state_topics(hall: Hall) -> set[str]:
    """Every retained topic the gateway holds for this hall (no alert fires here)."""
    data = hall.data
    return {
        f"{ROOT}/gateway/state",
        f"{ROOT}/gateway/health",
        f"{ROOT}/board",
        *(
            f"{ROOT}/devices/{d['id']}/{t}"
            for d in data["devices"]
            for t in ("availability", "state")
        ),
        *(f"{ROOT}/windows/{w['id']}/state" for w in data["windows"]),
        *(f"{ROOT}/staff/{p['id']}/presence" for p in data["staff"]),
    }


async def test_a_broker_restarted_without_persistence_gets_the_retained_state_back(
    tmp_path: Path,
) -> None:
    async with hall_under_test(tmp_path) as hall:
        pid = hall.gateway.pid
        # every A post arrives and signs in at the window's pad: a rich board to lose
        a_posts = [p for p in hall.data["staff"] if p["post"] == "A"]
        for index, person in enumerate(a_posts):
            clocks = list(hall.sim.clocks.values())
            clocks[index % len(clocks)].punch(person["pin"], verify=1)
            hall.sim.pads[person["window"]].login(person["card"])

        def on_post() -> bool:
            board = hall.witness.last("/board") or {}
            return bool(board.get("counts", {}).get("on_post") == len(a_posts))

        await hall.witness.wait_for(on_post, timeout=30, what="every A post on post")
        topics = state_topics(hall)
        held: dict[str, bytes] = {}

        async def all_retained() -> bool:
            """The broker holds every state topic, as the gateway's API shows it now."""
            nonlocal held
            held = await retained_state(hall.broker.port)
            if not topics <= set(held):
                return False
            _, windows = await hall.get("/api/v1/windows")
            _, staff = await hall.get("/api/v1/staff")
            views = {f"{ROOT}/windows/{w['window_id']}/state": w for w in windows}
            views |= {f"{ROOT}/staff/{p['staff_id']}/presence": p for p in staff}
            return all(json.loads(held[topic]) == view for topic, view in views.items())

        await hall.until_async(all_retained, 30, lambda: f"retained {topics - set(held)}")
        before = held

        await hall.broker.restart()  # no persistence: the broker knows nothing now
        await hall.until_async(all_retained, 60, lambda: f"retained again {topics - set(held)}")
        now = held
        assert json.loads(now[f"{ROOT}/gateway/state"])["state"] == "online"
        availability = [t for t in topics if t.endswith("/availability")]
        changed = [t for t in availability if now[t] != before[t]]
        assert not changed, f"availability changed: {changed}"
        board = json.loads(now[f"{ROOT}/board"])
        assert board["counts"]["on_post"] == len(a_posts)
        assert set(now) <= topics | {t for t in now if "/alerts/" in t}
        await hall.check_recovered(pid)
    hall.check_log()


async def test_the_gateway_killed_ten_times_under_load(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    async with hall_under_test(tmp_path) as hall:
        hall.start_load(seed=SEED)
        for kill in range(1, KILLS + 1):
            await asyncio.sleep(rng.uniform(0.0, 3.0))  # a random point of the working day
            await hall.kill_gateway()
            journal = await asyncio.to_thread(read_journal, hall.db)
            try:
                hall.check_acknowledged_stored(journal, exact=False)
            except AssertionError as err:
                raise AssertionError(f"kill {kill} (seed {SEED}): {err}") from err
            await asyncio.sleep(rng.uniform(0.0, 1.0))  # down a moment; devices keep working
            await hall.start_gateway()
        await hall.check_recovered()
        await hall.stop_load()
        await hall.check_nothing_lost()
    hall.check_log()


# a small real filesystem for the store: the hall's first minute fits many times
STORE_FS_SIZE = "16m"
DEGRADED_STORE = "gateway_degraded-store"  # the alert of a store that does not commit


def fill(path: Path) -> int:
    """Write `path` until the filesystem has no block left; the bytes written."""
    written = 0
    with path.open("wb", buffering=0) as filler:
        for chunk in (1 << 20, 1 << 12, 1):
            block = b"\0" * chunk
            while True:
                try:
                    written += filler.write(block) or 0
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        raise
                    break
    return written


async def test_the_stores_disk_full_then_freed(tmp_path: Path) -> None:
    store = tmp_path / "store"
    await mount_tmpfs(store, STORE_FS_SIZE)
    try:
        async with hall_under_test(tmp_path, store_dir=store) as hall:
            pid = hall.gateway.pid
            hall.start_load(seed=SEED)
            await until(lambda: hall.events.refresh().count >= 30, "traffic", 30)
            filler = store / "filler"
            await asyncio.to_thread(fill, filler)
            health: tuple[int, Any] = (0, None)

            async def degraded() -> bool:
                nonlocal health
                health = await hall.get("/healthz")
                return health[0] == 503

            await hall.until_async(degraded, 30, lambda: f"/healthz 503, got {health}")
            assert "store not writable" in health[1]["reason"]
            assert await hall.metric("hallgw_store_writable") == 0
            alert = await hall.witness.wait_for(
                lambda: hall.witness.last(f"alerts/{DEGRADED_STORE}"),
                timeout=60,
                what="the gateway_degraded alert for the store",
            )
            assert (alert["rule"], alert["status"], alert["severity"]) == (
                "gateway_degraded",
                "firing",
                "critical",
            )
            assert alert["subject"] == {"component": "store"}
            # devices are still answered: pads polled, clocks answered (503: they keep their
            # records), every device online; an event that cannot be stored is not acknowledged
            pad = hall.sim.pads["w005"]
            pad.press(4)
            held, polls = pad.queue[0], pad.polls
            await until(lambda: pad.polls >= polls + 5, "the pad polled on", 30)
            assert pad.queue, "the pad keeps what was not stored"
            assert pad.queue[0] == held
            clock = hall.sim.clocks["clock-1"]
            failures = clock.failures
            await until(lambda: clock.failures > failures, "an upload refused", 30)
            assert clock.pending, "the clock keeps what was not stored"
            offline_now = offline(await hall.devices())
            assert not offline_now, f"devices offline while the disk is full: {offline_now}"
            assert await hall.metric("hallgw_mqtt_connected") == 1

            await asyncio.to_thread(filler.unlink)  # space again

            async def healthy() -> bool:
                nonlocal health
                health = await hall.get("/healthz")
                return health[0] == 200

            await hall.until_async(healthy, 30, lambda: f"/healthz 200, got {health}")
            assert await hall.metric("hallgw_store_writable") == 1
            await until(
                lambda: [
                    e
                    for e in hall.events.of("alert")
                    if e["alert_id"] == DEGRADED_STORE and e["status"] == "resolved"
                ],
                "the alert resolved",
                60,
            )
            cleared = hall.witness.on(f"alerts/{DEGRADED_STORE}")
            assert cleared[-1].payload == b"", "the alert's retained topic is cleared"
            await until(lambda: held in pad.acked, "the held event acknowledged", 30)
            await hall.stop_load()
            await hall.check_nothing_lost()
            await hall.check_recovered(pid)
        hall.check_log()
    finally:
        await unmount(store)


def pads_of(hall: Hall, bus_id: str) -> list[str]:
    return [d["id"] for d in hall.data["devices"] if d.get("bus") == bus_id]


async def test_a_pad_bus_unplugged_and_back_under_another_tty_behind_its_by_id_link(
    tmp_path: Path,
) -> None:
    async with hall_under_test(tmp_path) as hall:
        pid = hall.gateway.pid
        gone_id, other_id = sorted(hall.sim.pad_buses)
        gone, link = hall.sim.pad_buses[gone_id], hall.root / "devices" / gone_id
        hall.start_load(seed=SEED)
        await until(lambda: hall.events.refresh().count >= 30, "traffic", 30)
        tty = link.readlink()
        await gone.vanish()  # the USB adapter is pulled: its tty and its by-id link are gone

        async def states(bus_id: str, state: str, reason: str | None = None) -> bool:
            devices = await hall.devices()
            return all(
                devices[d]["state"] == state and reason in (None, devices[d]["reason"])
                for d in pads_of(hall, bus_id)
            )

        await hall.until_async(
            lambda: states(gone_id, "offline", "io_error"), 30, lambda: f"{gone_id} offline"
        )
        assert await states(other_id, "online"), "the other bus is not disturbed"
        heard = len(hall.events.of("rating"))
        await until(
            lambda: len(hall.events.of("rating")) > heard + 10, "ratings from the other bus", 30
        )
        with contextlib.ExitStack() as stack:
            # the kernel gives the lowest free pty number: hold the old one, so the adapter
            # comes back as another tty, as a USB adapter re-plugged often does
            for _ in range(64):
                master, slave = os.openpty()
                stack.callback(os.close, master)
                stack.callback(os.close, slave)
                if os.ttyname(slave) == str(tty):
                    break
            await gone.open_pty(link)
            assert link.readlink() != tty, "the link now names another tty"
            await hall.until_async(
                lambda: states(gone_id, "online"), 30, lambda: f"{gone_id} back online"
            )
            assert await hall.metric("hallgw_device_requests_total", result="io_error") >= len(
                pads_of(hall, gone_id)
            )
            await hall.stop_load()
            await hall.check_nothing_lost()  # what the pads held while unplugged arrives
            await hall.check_recovered(pid)
    hall.check_log()


async def test_devices_answering_garbage_are_counted_and_recover(tmp_path: Path) -> None:
    async with hall_under_test(tmp_path) as hall:
        pid = hall.gateway.pid
        hall.start_load(seed=SEED)
        await until(lambda: hall.events.refresh().count >= 30, "traffic", 30)
        pad = hall.sim.pads["w003"]
        kiosk = hall.sim.kiosks["kiosk-01"]
        assert hall.sim.queue is not None
        controller = hall.sim.queue[1]
        screen = hall.sim.leds["led-1"].screen(1)
        pad.press(2)  # it holds an event while it answers garbage
        pad.corrupt_checksum = True
        kiosk.garbage = b'{"kiosk_id": "KIOSK-01", "state": "rea\x00\xff'
        controller.fault = "exception"
        screen.corrupt_crc = True
        faulty = {
            "pad-w003": ("crc_errors", "bad_frame"),
            "kiosk-01": ("bad_response", "bad_response"),
            "queue-main": ("bad_response", "bad_response"),
            "led-1": ("crc_errors", "bad_frame"),
        }
        devices: dict[str, dict[str, Any]] = {}

        async def all_offline() -> bool:
            nonlocal devices
            devices = await hall.devices()
            return all(
                devices[d]["state"] == "offline" and devices[d]["reason"] == reason
                for d, (reason, _result) in faulty.items()
            )

        await hall.until_async(all_offline, 30, lambda: f"offline: {offline(devices)}")
        assert sorted(offline(devices)) == sorted(f"{d}:{r}" for d, (r, _) in faulty.items()), (
            "only the devices answering garbage are offline"
        )
        for device_id, (_reason, result) in faulty.items():
            counted = await hall.metric(
                "hallgw_device_requests_total", device_id=device_id, result=result
            )
            assert counted >= 3, f"{device_id}: {counted} {result} answers counted"
        heard = len(hall.events.of("rating"))
        await until(
            lambda: len(hall.events.of("rating")) > heard + 10, "ratings from the other pads", 30
        )
        assert pad.queue, "the pad keeps what the gateway could not read"

        pad.corrupt_checksum = False
        kiosk.garbage = None
        controller.fault = None
        screen.corrupt_crc = False
        await hall.wait_online(what="every device answering sense again")
        await hall.stop_load()
        await hall.check_nothing_lost()  # the queue's changes during the fault are found too
        await hall.check_recovered(pid)
    hall.check_log()


async def test_a_clock_pushing_the_same_batch_again_adds_no_fact(tmp_path: Path) -> None:
    async with hall_under_test(tmp_path) as hall:
        clock = hall.sim.clocks["clock-1"]
        pins = [p["pin"] for p in hall.data["staff"][:5]]
        at = HALL_START.replace(tzinfo=None) + dt.timedelta(minutes=-3)
        batch = [
            clock.punch(pin, at=at + dt.timedelta(seconds=i), verify=1)
            for i, pin in enumerate(pins)
        ]
        ids = {stable_id(SITE, clock.sn, r.pin, r.stamp) for r in batch}
        await until(lambda: not clock.pending, "the batch answered OK", 30)
        await until(lambda: ids <= set(hall.events.refresh().by_id), "the batch on MQTT", 30)
        punches = await hall.metric("hallgw_events_total", kind="punch")

        clock.add_records(batch)  # the clock never saw the OK: the same records again
        body = codec.att_body(batch).encode()
        url = f"http://127.0.0.1:{hall.data['http']['device_port']}/iclock/cdata"
        params = {"SN": clock.sn, "table": "ATTLOG", "Stamp": "9999"}
        replies = await asyncio.gather(  # and twice more at once (a retry racing the first)
            *(exchange("POST", url, params=params, data=body) for _ in range(2))
        )
        assert [(r.status, r.text.strip()) for r in replies] == [(200, "OK: 5")] * 2
        await until(lambda: not clock.pending, "the repeat answered OK", 30)
        assert clock.ok_counts[-1] == len(batch), "every record counted in the answer"
        probe = clock.punch("99999", verify=1)  # a fresh record after the repeats
        probe_id = stable_id(SITE, clock.sn, probe.pin, probe.stamp)
        await until(lambda: probe_id in hall.events.refresh().by_id, "the next record", 30)

        assert await hall.metric("hallgw_events_total", kind="punch") == punches + 1
        assert await hall.metric(
            "hallgw_punch_clock_lines_total", device_id="clock-1", result="duplicate"
        ) == 3 * len(batch)
        journal = await asyncio.to_thread(read_journal, hall.db)
        assert Counter(r.event_id for r in journal if r.event_id in ids) == dict.fromkeys(ids, 1)
        assert {i: len(hall.events.by_id[i]) for i in ids} == dict.fromkeys(ids, 1)
        await hall.check_nothing_lost()
    hall.check_log()


MALFORMED = 10_000
# what a gateway may grow by while it answers a flood of bad commands (it keeps none of them)
FLOOD_RSS_GROWTH_MAX = 16 * 1024 * 1024
PUBLISH_IN_FLIGHT = 100  # commands the flooding client has on the wire at once


def malformed_command(n: int) -> tuple[str, bytes, str | None]:  # noqa: PLR0911  # a case each
    """The n-th bad command: (topic below the root, payload, the request_id it must be answered
    on, or None when it carries no usable one)."""
    rid = f"bad-{n}"
    body: dict[str, Any]
    match n % 16:
        case 0:
            return "cmd/outing", b"\xff\xfe not UTF-8", None
        case 1:
            return "cmd/outing", b'{"request_id": "' + rid.encode(), None  # cut short
        case 2:
            return "cmd/display/led-1", b"[1, 2, 3]", None
        case 3:
            return "cmd/display/led-2", b'"a string"', None
        case 4:
            body = {"action": "start", "staff_id": "s0001"}  # no request_id
            return "cmd/outing", json.dumps(body).encode(), None
        case 5:
            body = {"request_id": f"{rid}/../x", "action": "end", "staff_id": "s0001"}
            return "cmd/outing", json.dumps(body).encode(), None
        case 6:
            return "cmd/display/led-1", json.dumps({"request_id": "x" * 65}).encode(), None
        case 7:
            if n % 512 == 7:  # now and then a body over the limit, unread
                big = {"request_id": rid, "text": "长" * 30_000}
                return "cmd/display/led-1", json.dumps(big, ensure_ascii=False).encode(), None
            return "cmd/outing", json.dumps({"request_id": n, "action": "start"}).encode(), None
        case 8:
            body = {"request_id": rid, "text": ""}
            return "cmd/display/led-1", json.dumps(body).encode(), rid
        case 9:
            body = {"request_id": rid, "text": "x", "seconds": -5}
            return "cmd/display/led-2", json.dumps(body).encode(), rid
        case 10:
            body = {"request_id": rid, "text": "x", "colour": "red"}
            return "cmd/display/pad-w001", json.dumps(body).encode(), rid
        case 11:
            body = {"request_id": rid, "action": "dance", "staff_id": "s0001"}
            return "cmd/outing", json.dumps(body).encode(), rid
        case 12:
            return "cmd/outing", json.dumps({"request_id": rid}).encode(), rid
        case 13:
            body = {"request_id": rid, "action": "start"}  # whose outing?
            return "cmd/outing", json.dumps(body).encode(), rid
        case 14:
            body = {"request_id": rid, "action": "end", "staff_id": "s" * 100}
            return "cmd/outing", json.dumps(body).encode(), rid
        case _:
            body = {"request_id": rid, "action": "start", "staff_id": "s0001", "reason": 7}
            return "cmd/outing", json.dumps(body).encode(), rid


def flood(port: int, commands: list[tuple[str, bytes, str | None]]) -> None:
    """Publish every command (QoS 1) as fast as the broker takes them, from a thread."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"flood-{uuid.uuid4().hex}")
    client.max_inflight_messages_set(PUBLISH_IN_FLIGHT)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        sent = [client.publish(f"{ROOT}/{topic}", payload, qos=1) for topic, payload, _ in commands]
        for info in sent:
            info.wait_for_publish(timeout=60)
            assert info.is_published(), "the broker took every command"
    finally:
        client.disconnect()
        client.loop_stop()


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(kib) * 1024


async def test_ten_thousand_malformed_commands_are_answered_counted_and_forgotten(
    tmp_path: Path,
) -> None:
    async with hall_under_test(tmp_path) as hall:
        pid = hall.gateway.pid
        hall.start_load(seed=SEED)
        await until(lambda: hall.events.refresh().count >= 30, "traffic", 30)
        rss_before = rss_bytes(pid)
        commands = [malformed_command(n) for n in range(MALFORMED)]
        answered = {rid for _t, _p, rid in commands if rid is not None}
        await asyncio.to_thread(flood, hall.broker.port, commands)

        found: dict[str, list[dict[str, Any]]] = {}
        seen = 0

        def replies() -> dict[str, list[dict[str, Any]]]:
            nonlocal seen
            messages = hall.witness.messages
            for message in messages[seen:]:
                if message.topic.startswith(f"{ROOT}/cmd/reply/"):
                    found.setdefault(message.topic.rsplit("/", 1)[1], []).append(message.json())
            seen = len(messages)
            return found

        async def counted() -> bool:
            return await hall.metric("hallgw_mqtt_commands_total", result="malformed") >= MALFORMED

        await hall.until_async(counted, 120, lambda: f"{MALFORMED} malformed commands counted")
        await until(lambda: answered <= set(replies()), f"{len(answered)} answers", 60)
        assert await hall.metric("hallgw_mqtt_commands_total", result="malformed") == MALFORMED
        assert await hall.metric("hallgw_mqtt_commands_total", result="dropped") == 0
        assert await hall.metric("hallgw_mqtt_commands_total", result="ok") == 0
        got = replies()
        assert set(got) == answered, "an answer exactly for the commands with a usable request_id"
        assert all(len(r) == 1 for r in got.values()), "one answer each"
        assert all(not r[0]["ok"] and r[0]["error"] for r in got.values())
        assert {r[0]["request_id"] for r in got.values()} == answered
        growth = rss_bytes(pid) - rss_before
        assert growth < FLOOD_RSS_GROWTH_MAX, f"RSS grew by {growth / 2**20:.1f} MiB"

        # real commands work as ever
        screen = hall.sim.leds["led-1"].screen(1)
        show = {"request_id": "real-display", "text": "请 A023 到 3 号窗口", "seconds": 30}
        person = hall.data["staff"][0]
        outing = {
            "request_id": "real-outing",
            "action": "start",
            "staff_id": person["id"],
            "reason": "official",
            "expected_minutes": 15,
        }
        async with aiomqtt.Client("127.0.0.1", hall.broker.port) as client:
            await client.publish(f"{ROOT}/cmd/display/led-1", json.dumps(show), qos=1)
            await client.publish(f"{ROOT}/cmd/outing", json.dumps(outing), qos=1)
        await until(
            lambda: {"real-display", "real-outing"} <= set(replies()), "the real answers", 30
        )
        assert replies()["real-display"] == [{"v": 1, "request_id": "real-display", "ok": True}]
        assert replies()["real-outing"] == [{"v": 1, "request_id": "real-outing", "ok": True}]
        await until(lambda: show["text"] in screen.texts(1), "the text on the screen", 10)
        await until(
            lambda: any(e["staff_id"] == person["id"] for e in hall.events.of("outing")),
            "the outing on MQTT",
            10,
        )
        await hall.stop_load()
        await hall.check_nothing_lost()
        await hall.check_recovered(pid)
    hall.check_log()


class SteppedClock(ScaledClock):
    """The machine's wall clock as an NTP daemon steps it: hall time, plus every step so far."""

    def step(self, seconds: float) -> None:
        self.start += dt.timedelta(seconds=seconds)


def board_makes_sense(board: dict[str, Any]) -> bool:
    """Nothing on the board began after the board's own time; an overdue outing's expected
    return is past it."""
    ts = dt.datetime.fromisoformat(board["ts"])
    items = [*board["out"], *board["off_post"], *board["unattended_windows"]]
    return all(dt.datetime.fromisoformat(item["since"]) <= ts for item in items) and all(
        dt.datetime.fromisoformat(o["expected_back"]) <= ts for o in board["out"] if o["overdue"]
    )


STEP_FORWARD_S = 45 * 60  # past the end of a 30-minute outing
STEP_BACK_S = -90 * 60  # to before that outing began
OUTING_MINUTES = 30


async def test_the_wall_clock_stepped_forward_and_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = SteppedClock(HALL_START, 1.0)
    async with hall_under_test(tmp_path, in_process_clock=clock) as hall:
        a_posts = [p for p in hall.data["staff"] if p["post"] == "A"]
        for index, person in enumerate(a_posts):
            clocks = list(hall.sim.clocks.values())
            clocks[index % len(clocks)].punch(person["pin"], verify=1)
            hall.sim.pads[person["window"]].login(person["card"])
        await until(lambda: all(not pad.queue for pad in hall.sim.pads.values()), "signed in", 30)
        out, window = a_posts[0]["id"], a_posts[0]["window"]
        hall.sim.pads[window].logout()  # and leaves the window: nobody else signs in there,
        cover = next(p for p in hall.data["staff"] if p["window"] == window and p["post"] == "B")
        assert hall.sim.queue is not None
        hall.sim.queue[2].staff[1] = cover["queue_no"]  # and the B post works its caller
        await until(lambda: not hall.sim.pads[window].queue, "signed out", 30)
        status, outing = await hall.post(
            "/api/v1/outings",
            {"staff_id": out, "reason": "official", "expected_minutes": OUTING_MINUTES},
        )
        assert status == 201, outing
        hall.start_load(seed=SEED, paused_pads={window})
        await until(lambda: hall.events.refresh().count >= 60, "traffic", 30)

        def events_after(count: int) -> Callable[[], bool]:
            return lambda: hall.events.refresh().count >= count

        def overdue() -> list[dict[str, Any]]:
            return [e for e in hall.events.of("outing") if e["action"] == "overdue"]

        clock.step(STEP_FORWARD_S)
        await until(overdue, "the outing overdue after the step forward", 30)
        await until(events_after(hall.events.count + 60), "facts after the step forward", 30)
        clock.step(STEP_BACK_S)
        await until(events_after(hall.events.count + 60), "facts after the step back", 30)

        # device timeouts run on the loop's monotonic clock: a punch clock that falls silent
        # after the step back is offline after 3 Delay, not 90 minutes later
        silent = hall.sim.clocks["clock-2"]
        url, silent.base_url = silent.base_url, f"http://127.0.0.1:{free_port()}"

        async def timed_out() -> bool:
            state = (await hall.devices())["clock-2"]
            return bool(state["state"] == "offline" and state["reason"] == "timeout")

        await hall.until_async(timed_out, 30, lambda: "clock-2 offline after its silence")
        silent.base_url = url
        await hall.stop_load()
        journal = await hall.check_nothing_lost()
        await hall.check_recovered()

        # nothing else went offline; one overdue, no end; the picture stays consistent
        went_offline = {
            r.device_id
            for r in journal
            if r.kind == "availability"
            and r.payload["state"] == "offline"
            and r.payload["reason"] != "not_seen"
        }
        assert went_offline == {"clock-2"}
        outings = [e for e in hall.events.of("outing") if e["staff_id"] == out]
        assert [e["action"] for e in outings] == ["start", "overdue"]
        _, board = await hall.get("/api/v1/board")
        counts = board["counts"]
        assert counts["staff_total"] == len(hall.data["staff"])
        assert counts["windows_total"] == len(hall.data["windows"])
        assert [o["staff_id"] for o in board["out"]] == [out]
        nonsense = [b for b in hall.witness.payloads("/board") if not board_makes_sense(b)]
        assert not nonsense, f"{len(nonsense)} boards of another time, first: {nonsense[0]}"
        assert board_makes_sense(board)
    errors = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.split(".")[0] in ("gateway", "drivers")
    ]
    assert not errors
