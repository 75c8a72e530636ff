"""Punch clocks end to end: the PUSH endpoints against devices.md §1, over real HTTP, into the
real store and out to a real Mosquitto; simulated clocks built on the driver's own codec."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import logging
import sqlite3
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from drivers.zk_push.driver import ClockDriver
from gateway.app import Gateway
from gateway.attendance import AttendanceEngine
from gateway.clock import FakeClock
from gateway.config import Config
from gateway.store import Store
from simulators.zk_push import SimClock
from tests.support.harness import RunningGateway, api_secrets, running_gateway, to_config
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import Recorder
from tests.support.zk import clock_hall, device_url, exchange

ZONE = ZoneInfo("Asia/Shanghai")
FRIDAY_0907 = dt.datetime(2026, 11, 20, 9, 7, 30, tzinfo=ZONE)
ROOT = "hall/test-hall"


def driver_of(gateway: RunningGateway, device_id: str = "clock-1") -> ClockDriver:
    driver = gateway.gateway.mounted[device_id].extras["driver"]
    assert isinstance(driver, ClockDriver)
    return driver


def store_of(gateway: RunningGateway) -> Store:
    assert gateway.gateway.store is not None
    return gateway.gateway.store


def engine_of(gateway: RunningGateway) -> AttendanceEngine:
    engine = gateway.gateway.mounted["clock-1"].extras["attendance"]
    assert isinstance(engine, AttendanceEngine)
    return engine


def recorder(broker: Mosquitto) -> Recorder:
    return Recorder(broker.port, [f"{ROOT}/#"])


def hall(tmp_path: Path, broker: Mosquitto, **options: Any) -> Config:
    return to_config(clock_hall(tmp_path, mqtt_port=broker.port, **options))


def faked(config: Config, start: dt.datetime) -> tuple[Gateway, FakeClock]:
    clock = FakeClock(start)
    return Gateway(config, api_secrets(), clock=clock), clock


def punches(mqtt: Recorder) -> list[dict[str, Any]]:
    return mqtt.payloads("events/punch/clock-1")


async def test_every_endpoint_answers_as_the_contract_says_with_the_hall_clocks_date(
    tmp_path: Path, broker: Mosquitto
) -> None:
    config = hall(tmp_path, broker, delay_s=10)
    gateway, _clock = faked(config, FRIDAY_0907)
    url = device_url(config)
    async with running_gateway(config, gateway=gateway) as running:
        replies = {
            "handshake": await exchange(
                "GET",
                f"{url}/iclock/cdata",
                params={"SN": "CK0001", "options": "all", "pushver": "2.4.1", "language": "69"},
            ),
            "attlog": await exchange(
                "POST",
                f"{url}/iclock/cdata",
                params={"SN": "CK0001", "table": "ATTLOG", "Stamp": "9999"},
                data="1001\t2026-11-20 09:01:00\t0\t1\t0\t0\t0\n1002\t2026-11-20 09:02:00\t0\t15\n",
            ),
            "operlog": await exchange(
                "POST",
                f"{url}/iclock/cdata",
                params={"SN": "CK0001", "table": "OPERLOG", "Stamp": "12"},
                data="OPLOG 4\t0\t2026-11-20 09:03:00\t0\t0\t0\t0\n",
            ),
            "getrequest": await exchange(
                "GET", f"{url}/iclock/getrequest", params={"SN": "CK0001"}
            ),
            "devicecmd": await exchange(
                "POST",
                f"{url}/iclock/devicecmd",
                params={"SN": "CK0001"},
                data="ID=5&Return=0&CMD=CHECK\n",
            ),
            "no table": await exchange(
                "POST", f"{url}/iclock/cdata", params={"SN": "CK0001"}, data="x"
            ),
            "unknown": await exchange("GET", f"{url}/iclock/getrequest", params={"SN": "NOT-OURS"}),
            "too large": await exchange(
                "POST",
                f"{url}/iclock/cdata",
                params={"SN": "CK0001", "table": "ATTLOG", "Stamp": "1"},
                data=io.BytesIO(b"1001\t2026-11-20 09:01:00\n" * 45_000),
            ),
        }
        assert replies["handshake"].text == (
            "GET OPTION FROM: CK0001\r\nATTLOGStamp=None\r\nOPERLOGStamp=None\r\n"
            "ATTPHOTOStamp=None\r\nErrorDelay=10\r\nDelay=10\r\nTransTimes=00:00;14:05\r\n"
            "TransInterval=1\r\nTransFlag=TransData AttLog OpLog\r\nTimeZone=8\r\nRealtime=1\r\n"
            "Encrypt=None\r\n"
        )
        assert replies["handshake"].headers["Content-Type"].startswith("text/plain")
        assert replies["attlog"].text == "OK: 2"
        assert replies["operlog"].text == "OK: 1"
        assert replies["getrequest"].text == "OK"
        assert replies["devicecmd"].text == "OK"
        statuses = {name: reply.status for name, reply in replies.items()}
        assert statuses == {
            "handshake": 200,
            "attlog": 200,
            "operlog": 200,
            "getrequest": 200,
            "devicecmd": 200,
            "no table": 400,
            "unknown": 403,
            "too large": 413,
        }
        for name, reply in replies.items():
            # the hall clock's time (a fake one here), not the machine's: clocks set theirs by it
            assert parsedate_to_datetime(reply.headers["Date"]) == FRIDAY_0907, name
        kinds = [row.kind for row in await store_of(running).journal(device_id="clock-1")]
        assert kinds.count("punch") == 2
        assert kinds.count("operlog") == 1
        assert kinds.count("punch_clock_command") == 1


async def test_unknown_serial_numbers_get_403_are_counted_and_never_journaled(
    tmp_path: Path, broker: Mosquitto
) -> None:
    config = hall(tmp_path, broker)
    url = device_url(config)
    gateway, _clock = faked(config, FRIDAY_0907)
    async with running_gateway(config, gateway=gateway) as running:
        calls = [
            ("GET", "/iclock/cdata", {"SN": "CK9999", "options": "all"}, None),
            (
                "POST",
                "/iclock/cdata",
                {"SN": "CK9999", "table": "ATTLOG"},
                "1001\t2026-11-20 09:01:00\n",
            ),
            ("POST", "/iclock/cdata", {"table": "ATTLOG"}, "1001\t2026-11-20 09:01:00\n"),
            ("GET", "/iclock/getrequest", {"SN": "ck0001"}, None),
            ("POST", "/iclock/devicecmd", {"SN": ""}, "ID=1&Return=0&CMD=INFO\n"),
        ]
        for method, path, params, data in calls:
            reply = await exchange(method, url + path, params=params, data=data)
            assert reply.status == 403, (path, params)
            assert "Date" in reply.headers
        refused = await running.metric(
            "hallgw_device_requests_total",
            device_id="unknown",
            kind="punch_clock",
            result="unknown_device",
        )
        assert refused == len(calls)
        assert await store_of(running).journal(kinds=["punch"]) == []


async def test_a_body_over_one_mebibyte_gets_413_with_or_without_a_length(
    tmp_path: Path, broker: Mosquitto
) -> None:
    config = hall(tmp_path, broker)
    url = f"{device_url(config)}/iclock/cdata"
    params = {"SN": "CK0001", "table": "ATTLOG", "Stamp": "1"}
    line = b"1001\t2026-11-20 09:01:00\t0\t1\t0\t0\t0\n"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(1024 * 1024 // len(line) + 10):
            yield line

    gateway, _clock = faked(config, FRIDAY_0907)

    async with running_gateway(config, gateway=gateway) as running:
        with_length = await exchange("POST", url, params=params, data=io.BytesIO(line * 40_000))
        chunked = await exchange("POST", url, params=params, data=chunks())
        just_fits = await exchange(
            "POST", url, params=params, data=io.BytesIO(line * (1024 * 1024 // len(line)))
        )
        assert (with_length.status, chunked.status) == (413, 413)
        assert just_fits.status == 200
        # n counts the well-formed records of the body, already stored or not (devices.md)
        assert just_fits.text == f"OK: {1024 * 1024 // len(line)}"
        assert len(await store_of(running).journal(kinds=["punch"])) == 1


async def test_punches_are_published_normalized_and_a_resent_batch_is_no_new_fact(
    tmp_path: Path, broker: Mosquitto
) -> None:
    config = hall(tmp_path, broker, clock_options={"timezone": "Asia/Tokyo"})
    url = device_url(config)
    gateway, clock = faked(config, FRIDAY_0907)
    async with recorder(broker) as mqtt, running_gateway(config, gateway=gateway) as running:
        async with SimClock(
            "CK0001", url, zone="Asia/Tokyo", error_delay_s=0.2, time_source=clock.now
        ) as sim:
            await mqtt.wait_for(lambda: sim.handshakes >= 1, what="handshake")
            assert sim.options["TimeZone"] == "9"
            tokyo = dt.datetime(2026, 11, 20, 10, 0, 5)  # 09:00:05 in the hall's zone
            sim.punch("1002", at=tokyo, status=0, verify=15)
            sim.punch("4711", at=tokyo, status=1, verify=2)
            sim.punch("1003", at=tokyo, status=2, verify=99)
            await mqtt.wait_for(lambda: len(punches(mqtt)) == 3, what="three punches")
        by_pin = {p["pin"]: p for p in punches(mqtt)}
        known = by_pin["1002"]
        assert known["staff_id"] == "s002"
        assert (known["direction"], known["verify"]) == ("in", "face")
        assert known["ts"] == "2026-11-20T09:00:05+08:00"
        assert known["device_id"] == "clock-1"
        assert (known["kind"], known["v"]) == ("punch", 1)
        assert set(known) == {
            "v", "event_id", "kind", "ts", "received_at", "device_id",
            "staff_id", "pin", "direction", "verify", "late_minutes", "early_minutes",
        }  # fmt: skip
        assert (by_pin["4711"]["staff_id"], by_pin["4711"]["direction"]) == (None, "out")
        assert (by_pin["4711"]["verify"], by_pin["1003"]["verify"]) == ("card", "other")
        assert by_pin["1003"]["direction"] == "break_out"
        assert await running.metric("hallgw_punch_unknown_pin_total", device_id="clock-1") == 1

        # the clock never saw the OK and sends the same batch again
        again = await exchange(
            "POST",
            f"{url}/iclock/cdata",
            params={"SN": "CK0001", "table": "ATTLOG", "Stamp": "2"},
            data="1002\t2026-11-20 10:00:05\t0\t15\t0\t0\t0\n4711\t2026-11-20 10:00:05\t1\t2\n",
        )
        assert again.text == "OK: 2"
        sentinel = await exchange(
            "POST",
            f"{url}/iclock/cdata",
            params={"SN": "CK0001", "table": "ATTLOG", "Stamp": "3"},
            data="1004\t2026-11-20 10:30:00\t0\t1\n",
        )
        assert sentinel.text == "OK: 1"
        await mqtt.wait_for(lambda: len(punches(mqtt)) == 4, what="the sentinel punch")
        ids = [p["event_id"] for p in punches(mqtt)]
        assert len(set(ids)) == 4
        assert (
            await running.metric(
                "hallgw_punch_clock_lines_total", device_id="clock-1", result="duplicate"
            )
            == 2
        )


async def test_malformed_lines_are_skipped_and_counted_and_the_good_ones_count(
    tmp_path: Path, broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    config = hall(tmp_path, broker)
    url = device_url(config)
    body = (
        "1001\t2026-11-20 09:01:00\t0\t1\t0\t0\t0\n"
        "1002 2026-11-20 09:01:00 0 1\n"
        "1003\t2026-11-20 25:01:00\t0\t1\n"
        "1004\t2026-11-20 09:04:00\n"
    )
    caplog.set_level(logging.WARNING, logger="drivers.zk_push.driver")
    gateway, clock = faked(config, FRIDAY_0907)
    async with recorder(broker) as mqtt, running_gateway(config, gateway=gateway) as running:
        reply = await exchange(
            "POST", f"{url}/iclock/cdata", params={"SN": "CK0001", "table": "ATTLOG"}, data=body
        )
        assert reply.text == "OK: 2"
        async with SimClock("CK0001", url, malformed=True, time_source=clock.now) as sim:
            sim.punch("1002")
            await mqtt.wait_for(lambda: len(punches(mqtt)) == 3, what="punches")
        assert sim.ok_counts == [1]
        malformed = await running.metric(
            "hallgw_punch_clock_lines_total",
            device_id="clock-1",
            table="ATTLOG",
            result="malformed",
        )
        assert malformed == 2 + sim.malformed_sent
        assert (
            await running.metric(
                "hallgw_device_requests_total", device_id="clock-1", result="bad_frame"
            )
            == 2
        )
    assert (
        "ATTLOG body: 2 malformed lines skipped; line 2: needs at least PIN and time" in caplog.text
    )


async def test_implausible_times_are_journaled_flagged_reported_and_not_published(
    tmp_path: Path, broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    config = hall(tmp_path, broker)
    gateway, _clock = faked(config, FRIDAY_0907)
    url = device_url(config)
    caplog.set_level(logging.WARNING, logger="drivers.zk_push.driver")
    async with recorder(broker) as mqtt, running_gateway(config, gateway=gateway) as running:
        body = (
            "1001\t2000-01-01 00:00:07\t0\t1\n"  # a clock whose battery died
            "1002\t2026-11-22 09:00:00\t0\t1\n"  # two days ahead
            "1003\t2026-11-19 09:10:00\t0\t1\n"  # yesterday: within a day
            "1004\t2026-11-20 09:05:00\t255\t1\n"  # a status the profile does not map
        )
        reply = await exchange(
            "POST", f"{url}/iclock/cdata", params={"SN": "CK0001", "table": "ATTLOG"}, data=body
        )
        assert reply.text == "OK: 4"
        await mqtt.wait_for(lambda: len(punches(mqtt)) == 1, what="the plausible punch")
        assert punches(mqtt)[0]["pin"] == "1003"
        rows = await store_of(running).journal(kinds=["punch", "punch_unmapped"])
        flagged = {(r.kind, r.flags, r.published) for r in rows if r.flags}
        assert flagged == {
            ("punch", "implausible_time", False),
            ("punch_unmapped", "unmapped_status", False),
        }
        assert len(rows) == 4
        assert (
            await running.metric(
                "hallgw_punch_clock_lines_total", device_id="clock-1", result="implausible"
            )
            == 2
        )
    assert "2 records stamped far from the gateway's time" in caplog.text
    assert "1 records with a status not in status_map" in caplog.text


async def test_the_operation_log_is_journaled_and_not_published(
    tmp_path: Path, broker: Mosquitto
) -> None:
    config = hall(tmp_path, broker)
    url = device_url(config)
    gateway, clock = faked(config, FRIDAY_0907)
    async with recorder(broker) as mqtt, running_gateway(config, gateway=gateway) as running:
        async with SimClock("CK0001", url, time_source=clock.now) as sim:
            sim.operate(sim.oplog_line(code=4))
            sim.operate("USER PIN=1001\tName=员工1\tPasswd=8888\tCard=0012345678")
            sim.punch("1001")
            await mqtt.wait_for(lambda: len(punches(mqtt)) == 1, what="the punch after the log")
            async with asyncio.timeout(5):
                await sim.flushed()
        rows = await store_of(running).journal(kinds=["operlog"])
        assert [r.published for r in rows] == [False, False]
        assert "Passwd=***" in rows[1].payload
        assert "8888" not in rows[1].payload
        assert not [m for m in mqtt.messages if "operlog" in m.topic]


async def test_heartbeats_carry_queued_commands_and_results_come_back(
    tmp_path: Path, broker: Mosquitto
) -> None:
    config = hall(tmp_path, broker)
    url = device_url(config)
    gateway, clock = faked(config, FRIDAY_0907)
    async with (
        recorder(broker) as mqtt,
        running_gateway(config, gateway=gateway) as running,
        SimClock("CK0001", url, time_source=clock.now) as sim,
    ):
        driver = driver_of(running)
        await mqtt.wait_for(lambda: sim.heartbeats >= 1, what="a heartbeat")
        info = driver.queue_command("INFO")
        check = driver.queue_command("CHECK")
        async with asyncio.timeout(5):
            result = await info.result
            await check.result
        assert sim.commands == [(info.id, "INFO"), (check.id, "CHECK")]
        assert (result.code, result.command) == (0, "INFO")
        assert result.details["FWVersion"] == "Ver 8.0.4.2-20191015"
        state = await mqtt.wait_for(
            lambda: [
                p for p in mqtt.payloads("devices/clock-1/state") if "firmware" in p["values"]
            ],
            what="state from INFO",
        )
        assert state[-1]["values"]["firmware"] == "Ver 8.0.4.2-20191015"
        assert state[-1]["values"]["serial_number"] == "CK0001"
        rows = await store_of(running).journal(kinds=["punch_clock_command"])
        assert len(rows) == 2


async def test_a_silent_clock_goes_offline_after_three_delays_and_comes_back(
    tmp_path: Path, broker: Mosquitto
) -> None:
    config = hall(tmp_path, broker, delay_s=0.2)
    url = device_url(config)

    def states() -> list[tuple[str, str | None]]:
        return [(p["state"], p["reason"]) for p in mqtt.payloads("devices/clock-1/availability")]

    gateway, clock = faked(config, FRIDAY_0907)

    async with recorder(broker) as mqtt, running_gateway(config, gateway=gateway):
        await mqtt.wait_for(lambda: states() == [("offline", "not_seen")], what="not seen")
        async with SimClock("CK0001", url, time_source=clock.now):
            await mqtt.wait_for(lambda: states()[-1] == ("online", None), what="online")
        await mqtt.wait_for(lambda: states()[-1] == ("offline", "timeout"), what="offline")
        async with SimClock("CK0001", url, time_source=clock.now):
            await mqtt.wait_for(lambda: states()[-1] == ("online", None), what="online again")
    assert states() == [
        ("offline", "not_seen"),
        ("online", None),
        ("offline", "timeout"),
        ("online", None),
    ]


async def test_clock_skew_is_a_state_value_and_a_synced_clock_has_none(
    tmp_path: Path, broker: Mosquitto
) -> None:
    config = hall(tmp_path, broker, clocks=["CK0001", "CK0002"])
    url = device_url(config)

    def skew(device_id: str) -> int | None:
        states = [p["values"] for p in mqtt.payloads(f"devices/{device_id}/state")]
        values = [s["clock_skew_s"] for s in states if "clock_skew_s" in s]
        return values[-1] if values else None

    gateway, clock = faked(config, FRIDAY_0907)

    async with recorder(broker) as mqtt, running_gateway(config, gateway=gateway):
        ahead = SimClock("CK0001", url, offset_s=125, sync_time=False, time_source=clock.now)
        synced = SimClock("CK0002", url, offset_s=-3600, time_source=clock.now)
        async with ahead, synced:
            await mqtt.wait_for(lambda: ahead.handshakes and synced.handshakes, what="handshakes")
            ahead.punch("1001")
            synced.punch("1002")
            await mqtt.wait_for(
                lambda: skew("clock-1") is not None and skew("clock-2") is not None,
                what="skew values",
            )
    assert skew("clock-1") in (124, 125)
    assert skew("clock-2") in (-1, 0)


async def test_a_late_clock_in_is_published_at_once_with_the_punch(
    tmp_path: Path, broker: Mosquitto
) -> None:
    config = hall(tmp_path, broker)
    gateway, clock = faked(config, FRIDAY_0907.replace(hour=7))  # before the hall opens
    url = device_url(config)
    async with recorder(broker) as mqtt, running_gateway(config, gateway=gateway) as running:
        clock.set(FRIDAY_0907)  # past the engine's start-up grace
        async with SimClock("CK0001", url, time_source=clock.now) as sim:
            sim.punch("1002")  # s002 follows `standard`: in by 09:00
            sim.punch("1004", at=dt.datetime(2026, 11, 20, 8, 58))
            events = await mqtt.wait_for(
                lambda: mqtt.payloads("events/attendance/s002"), what="attendance"
            )
            await mqtt.wait_for(lambda: len(punches(mqtt)) == 2, what="punches")
        assert [(e["action"], e["minutes"], e["ts"]) for e in events] == [
            ("late", 8, "2026-11-20T09:07:30+08:00")
        ]
        assert events[0]["device_id"] is None
        by_pin = {p["pin"]: p for p in punches(mqtt)}
        assert by_pin["1002"]["late_minutes"] == 8
        assert by_pin["1004"]["late_minutes"] is None
        # nothing else is final yet: the morning is not over
        assert engine_of(running).due(clock.now()) == []
        assert mqtt.payloads("events/attendance/s004") == []


async def test_no_ok_without_a_commit_and_the_clock_sends_again(
    tmp_path: Path, broker: Mosquitto
) -> None:
    config = hall(tmp_path, broker)
    gateway, clock = faked(config, FRIDAY_0907)
    url = device_url(config)
    db = tmp_path / "hallgw.db"

    def alter(sql: str) -> None:
        conn = sqlite3.connect(db)
        try:
            conn.execute(sql)
            conn.commit()
        finally:
            conn.close()

    # a real SQLite failure inside the real store: the commit of any punch is refused
    refuse = (
        "CREATE TRIGGER refuse_punch BEFORE INSERT ON journal"
        " WHEN NEW.kind = 'punch' BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
    )

    async with recorder(broker) as mqtt, running_gateway(config, gateway=gateway) as running:
        await asyncio.to_thread(alter, refuse)
        refused = await exchange(
            "POST",
            f"{url}/iclock/cdata",
            params={"SN": "CK0001", "table": "ATTLOG"},
            data="1001\t2026-11-20 09:01:00\t0\t1\n",
        )
        assert (refused.status, refused.text) == (503, "store unavailable")
        assert "Date" in refused.headers
        async with SimClock("CK0001", url, time_source=clock.now, error_delay_s=0.1) as sim:
            sim.punch("1002")
            await mqtt.wait_for(lambda: sim.failures >= 2, what="refused uploads")
            assert sim.acknowledged == []
            await asyncio.to_thread(alter, "DROP TRIGGER refuse_punch")
            async with asyncio.timeout(10):
                await sim.flushed()
            await mqtt.wait_for(lambda: len(punches(mqtt)) == 1, what="the punch, once")
        assert punches(mqtt)[0]["pin"] == "1002"
        assert (
            await running.metric(
                "hallgw_device_requests_total", device_id="clock-1", result="io_error"
            )
            >= 3
        )
        assert [r.kind for r in await store_of(running).journal(kinds=["punch"])] == ["punch"]
