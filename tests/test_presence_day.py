"""A whole working day of a 24-window hall on a fake clock, through the real bus, store, HTTP
API and Mosquitto: arrivals, a late arrival, an absence covered by the B post, leave, outings
(one overdue, one refused by the 3-a-day rule, ended by the API, by cmd/outing and by coming
back to the window), a break, the lunch gap, a window whose A and B both leave, and a restart at
10:38 that shows the same board. The statuses published at each checkpoint equal a timeline
written by hand below."""

from __future__ import annotations

import json
from typing import Any

from gateway.app import Gateway
from gateway.clock import FakeClock
from gateway.config import Config
from tests.support.harness import RunningGateway, api_secrets, running_gateway, to_config
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import Recorder, publish
from tests.support.presence import (
    WINDOWS,
    Inputs,
    a_post,
    api,
    at,
    b_post,
    presence,
    presence_hall,
)

ROOT = "hall/test-hall"
ALL_WINDOWS = range(1, WINDOWS + 1)


class Day:
    """The hand-written timeline: what every person and window should be, changed as the
    script goes; `check` compares it with what the gateway has published."""

    def __init__(self, clock: FakeClock, mqtt: Recorder) -> None:
        self.clock = clock
        self.mqtt = mqtt
        self.staff: dict[str, str] = {}
        self.windows: dict[str, tuple[str, str | None]] = {}
        self.gw: RunningGateway | None = None
        self.inputs: Inputs | None = None

    def attach(self, gw: RunningGateway) -> None:
        self.gw = gw
        self.inputs = Inputs(presence(gw), self.clock)

    @property
    def do(self) -> Inputs:
        assert self.inputs is not None
        return self.inputs

    def at(self, time: str) -> None:
        self.clock.set(at(time))

    def expect(self, **staff: str) -> None:
        self.staff.update(staff)

    def expect_windows(self, **windows: tuple[str, str | None]) -> None:
        self.windows.update(windows)

    def everyone(self, a: str, b: str, window: tuple[str, str | None]) -> None:
        for n in ALL_WINDOWS:
            self.staff[a_post(n)] = a
            self.staff[b_post(n)] = b
            self.windows[f"w{n:02d}"] = window

    def published(self) -> tuple[dict[str, Any], dict[str, Any]]:
        staff = {s: (self.mqtt.last(f"staff/{s}/presence") or {}).get("status") for s in self.staff}
        windows = {
            w: (
                (self.mqtt.last(f"windows/{w}/state") or {}).get("status"),
                (self.mqtt.last(f"windows/{w}/state") or {}).get("covering"),
            )
            for w in self.windows
        }
        return staff, windows

    async def check(self, time: str) -> None:
        assert self.gw is not None
        self.at(time)
        service = presence(self.gw)
        service.wake()
        await service.sync()
        try:
            await self.mqtt.wait_for(
                lambda: self.published() == (self.staff, self.windows), what=f"statuses at {time}"
            )
        except AssertionError:
            staff, windows = self.published()
            wrong = {s: (got, self.staff[s]) for s, got in staff.items() if got != self.staff[s]}
            wrong_w = {
                w: (got, self.windows[w]) for w, got in windows.items() if got != self.windows[w]
            }
            raise AssertionError(f"at {time}, (published, expected): {wrong} {wrong_w}") from None
        expected_board = _content(service.board())
        await self.mqtt.wait_for(
            lambda: _content(self.board()) == expected_board, what=f"the board at {time}"
        )

    def since(self, topic: str) -> str:
        return str((self.mqtt.last(topic) or {}).get("since"))

    def board(self) -> dict[str, Any]:
        return self.mqtt.last("test-hall/board") or {}


def _content(board: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in board.items() if k != "ts"}


async def snapshot(gw: RunningGateway) -> dict[str, Any]:
    return {
        path: (await gw.get(path))[1]
        for path in ("/api/v1/board", "/api/v1/windows", "/api/v1/staff", "/api/v1/outings")
    }


def gateway(config: Config, clock: FakeClock) -> Gateway:
    return Gateway(config, api_secrets(), clock=clock)


async def outing(day: Day, staff_id: str, reason: str, minutes: int, **extra: Any) -> Any:
    assert day.gw is not None
    body = {"staff_id": staff_id, "reason": reason, "expected_minutes": minutes, **extra}
    return await api(day.gw, "POST", "/api/v1/outings", body)


async def command(day: Day, broker: Mosquitto, body: dict[str, Any]) -> dict[str, Any]:
    request_id = body["request_id"]
    await publish(broker.port, f"{ROOT}/cmd/outing", json.dumps(body))
    reply: dict[str, Any] = await day.mqtt.wait_for(
        lambda: day.mqtt.last(f"cmd/reply/{request_id}"), what=f"the reply to {request_id}"
    )
    return reply


async def test_a_working_day_of_a_24_window_hall(tmp_path: Any, broker: Mosquitto) -> None:
    clock = FakeClock(at("08:00:00"))
    config = to_config(presence_hall(tmp_path, mqtt_port=broker.port))
    async with Recorder(broker.port, [f"{ROOT}/#"]) as mqtt:
        day = Day(clock, mqtt)
        async with running_gateway(config, gateway=gateway(config, clock)) as gw:
            day.attach(gw)
            await morning(day, broker)
            before = await snapshot(gw)
        async with running_gateway(config, gateway=gateway(config, clock)) as gw:
            day.attach(gw)
            after = await snapshot(gw)
            for path, items in before.items():  # a restart at 10:38 shows the same board
                if isinstance(items, list):
                    changed = [(b, a) for b, a in zip(items, after[path], strict=True) if a != b]
                    assert not changed, (path, json.dumps(changed, ensure_ascii=False))
                assert after[path] == items, (path, json.dumps(items), json.dumps(after[path]))
            await rest_of_day(day, broker)


async def morning(day: Day, broker: Mosquitto) -> None:
    assert day.gw is not None
    day.everyone("off_duty", "off_duty", ("closed", None))
    await day.check("08:00:00")

    day.at("08:30:00")
    status, leave = await api(
        day.gw,
        "POST",
        "/api/v1/leave",
        {"staff_id": "s106", "from": "2026-11-20", "to": "2026-11-20", "note": "年假"},
    )
    assert status == 201, leave
    await day.check("08:30:00")
    assert [i["staff_id"] for i in day.board()["on_leave"]] == ["s106"]

    # arrivals: everyone but s005 (late) and s024 (absent all day); s106 is on leave
    day.at("08:50:00")
    for n in ALL_WINDOWS:
        for staff_id in (a_post(n), b_post(n)):
            if staff_id not in ("s005", "s024", "s106"):
                await day.do.punch(staff_id)
    day.at("08:55:00")
    for n in ALL_WINDOWS:
        if n not in (5, 10, 24):
            await day.do.pad(n, "login", a_post(n))
    day.at("08:56:00")
    day.do.caller(9, "idle", "s109")  # the B of w09 works at the caller all day
    day.do.caller(10, "idle", "s010")  # the A of w10 logs in at the caller, not the pad
    await day.check("08:58:00")  # logged in, but not yet working time

    day.everyone("on_post", "standby", ("idle", "A"))
    day.expect(s005="not_arrived", s024="not_arrived", s106="on_leave", s109="on_post")
    # the A of w05 and w24 are not here: their B is expected at once, within the grace
    day.expect(s105="on_post", s124="on_post")
    day.expect_windows(w05=("unattended", None), w24=("unattended", None))
    await day.check("09:00:00")

    day.at("09:02:00")
    await day.do.pad(5, "login", "s105")
    day.expect_windows(w05=("idle", "B"))
    await day.check("09:04:59")
    day.expect(s124="off_post")  # never came to w24, whose A is absent
    await day.check("09:05:00")
    assert day.since("staff/s124/presence") == "2026-11-20T09:00:00+08:00"
    assert [i["staff_id"] for i in day.board()["off_post"]] == ["s124"]
    assert [i["window_id"] for i in day.board()["unattended_windows"]] == ["w24"]

    # s009's first outing, ended through the API; the B at w09's caller covers
    day.at("09:10:00")
    status, first = await outing(day, "s009", "private", 10)
    assert status == 201, first
    assert first["outing_id"] == "s009-20261120-1"
    assert first["expected_back"] == "2026-11-20T09:20:00+08:00"
    assert first["flags"] == []
    day.expect(s009="out")
    day.expect_windows(w09=("idle", "B"))
    await day.check("09:12:00")
    day.at("09:18:00")
    status, ended = await api(day.gw, "POST", "/api/v1/outings/s009-20261120-1/end", {})
    assert status == 200, ended
    assert ended["ended_at"] == "2026-11-20T09:18:00+08:00"
    day.expect(s009="on_post")  # still logged in at the pad: back at once
    day.expect_windows(w09=("idle", "A"))
    await day.check("09:18:00")

    # s005 arrives late and takes over from the B
    day.at("09:20:00")
    await day.do.punch("s005")
    day.at("09:22:00")
    await day.do.pad(5, "login", "s005")
    day.expect(s005="on_post", s105="standby")
    day.expect_windows(w05=("idle", "A"))
    await day.check("09:25:00")
    day.at("09:30:00")
    await day.do.pad(24, "login", "s124")
    day.expect(s124="on_post")
    day.expect_windows(w24=("idle", "B"))
    await day.check("09:30:00")

    # two outings at once: s003 official (its B comes to the window), s007 private (its B
    # covers at the caller) who comes back late
    day.at("10:00:00")
    await day.do.pad(3, "logout")
    status, official = await outing(day, "s003", "official", 30)
    assert status == 201, official
    day.at("10:02:00")
    await day.do.pad(3, "login", "s103")
    day.at("10:05:00")
    await day.do.pad(7, "logout")
    status, private = await outing(day, "s007", "private", 15)
    assert status == 201, private
    day.at("10:06:00")
    day.do.caller(7, "idle", "s107")
    await day.do.queue(7, "called", "A001")
    day.do.caller(7, "serving", "s107", "A001")
    day.expect(s003="out", s103="on_post", s007="out", s107="on_post")
    day.expect_windows(w03=("idle", "B"), w07=("serving", "B"))
    await day.check("10:06:00")
    assert day.since("staff/s007/presence") == "2026-11-20T10:05:00+08:00"
    assert [(i["staff_id"], i["overdue"]) for i in day.board()["out"]] == [
        ("s003", False),
        ("s007", False),
    ]

    await day.check("10:20:00")  # s007 is due back now
    overdue = await day.mqtt.wait_for(
        lambda: [e for e in day.mqtt.events("outing") if e["action"] == "overdue"],
        what="the overdue event",
    )
    assert [(e["staff_id"], e["ts"]) for e in overdue] == [("s007", "2026-11-20T10:20:00+08:00")]
    assert [(i["staff_id"], i["overdue"]) for i in day.board()["out"]] == [
        ("s003", False),
        ("s007", True),
    ]
    assert "overdue" in day.mqtt.last("staff/s007/presence")["flags"]

    day.at("10:25:00")
    await day.do.pad(3, "login", "s003")  # back at the pad: the outing ends by itself
    day.expect(s003="on_post", s103="standby")
    day.expect_windows(w03=("idle", "A"))
    await day.check("10:26:00")
    end = await day.mqtt.wait_for(
        lambda: [
            e for e in day.mqtt.events("outing") if e["action"] == "end" and e["staff_id"] == "s003"
        ],
        what="s003's return",
    )
    assert [e["ts"] for e in end] == ["2026-11-20T10:25:00+08:00"]

    # the break counts as working time: leaving the window in it is leaving the post
    day.at("10:31:00")
    await day.do.pad(11, "logout")
    day.expect_windows(w11=("unattended", None))
    await day.check("10:35:59")
    day.expect(s011="off_post", s111="off_post")
    await day.check("10:36:00")
    assert day.since("staff/s111/presence") == "2026-11-20T10:31:00+08:00"
    assert day.since("windows/w11/state") == "2026-11-20T10:31:00+08:00"
    await day.check("10:38:00")
    assert (await day.gw.metric("hallgw_windows")) == WINDOWS
    assert (await day.gw.metric("hallgw_staff")) == 2 * WINDOWS
    assert (await day.gw.metric("hallgw_windows", status="unattended")) == 1
    assert (await day.gw.metric("hallgw_staff", status="off_post")) == 2


async def rest_of_day(day: Day, broker: Mosquitto) -> None:
    assert day.gw is not None
    await day.check("10:39:00")  # after the restart, nothing has moved
    day.at("10:40:00")
    await day.do.pad(7, "login", "s007")
    day.at("10:41:00")
    day.do.caller(7, "idle", None)
    day.expect(s007="on_post", s107="standby")
    day.expect_windows(w07=("idle", "A"))
    await day.check("10:41:00")
    assert day.board()["out"] == []
    day.at("10:49:00")
    await day.do.pad(11, "login", "s011")
    day.expect(s011="on_post", s111="standby")
    day.expect_windows(w11=("idle", "A"))
    await day.check("10:50:00")

    # s009's second outing, over MQTT, started and ended by command
    day.at("11:00:00")
    reply = await command(
        day,
        broker,
        {
            "request_id": "r-2",
            "staff_id": "s009",
            "action": "start",
            "reason": "private",
            "expected_minutes": 10,
        },
    )
    assert reply == {"v": 1, "request_id": "r-2", "ok": True}
    day.expect(s009="out")
    day.expect_windows(w09=("idle", "B"))
    await day.check("11:01:00")
    day.at("11:08:00")
    reply = await command(day, broker, {"request_id": "r-3", "staff_id": "s009", "action": "end"})
    assert reply["ok"], reply
    day.expect(s009="on_post")
    day.expect_windows(w09=("idle", "A"))
    await day.check("11:08:00")

    # lunch: two leave their window before noon
    day.at("11:58:00")
    await day.do.pad(1, "logout")
    day.at("11:59:00")
    await day.do.pad(2, "logout")
    day.expect_windows(w01=("unattended", None), w02=("unattended", None))
    await day.check("11:59:30")
    day.everyone("off_duty", "off_duty", ("closed", None))
    await day.check("12:00:00")
    await day.check("12:45:00")
    day.at("13:20:00")  # the afternoon's clock-in (by 13:30)
    for n in ALL_WINDOWS:
        for staff_id in (a_post(n), b_post(n)):
            if staff_id not in ("s024", "s106"):
                await day.do.punch(staff_id)
    day.at("13:25:00")
    await day.do.pad(1, "login", "s001")

    day.everyone("on_post", "standby", ("idle", "A"))
    day.expect(s024="not_arrived", s106="on_leave", s109="on_post", s124="on_post")
    day.expect_windows(w02=("unattended", None), w24=("idle", "B"))
    await day.check("13:30:00")
    day.expect(s002="off_post", s102="off_post")
    await day.check("13:35:00")
    assert day.since("staff/s002/presence") == "2026-11-20T13:30:00+08:00"

    # s009's third outing: accepted (the third of the day), ended by coming back to the pad
    day.at("13:40:00")
    await day.do.pad(2, "login", "s002")
    await day.do.pad(9, "logout")
    status, third = await outing(day, "s009", "private", 10)
    assert status == 201, third
    assert third["outing_id"] == "s009-20261120-3"
    day.expect(s002="on_post", s102="standby", s009="out")
    day.expect_windows(w02=("idle", "A"), w09=("idle", "B"))
    await day.check("13:40:00")
    day.at("13:48:00")
    await day.do.pad(9, "login", "s009")
    day.expect(s009="on_post")
    day.expect_windows(w09=("idle", "A"))
    await day.check("13:48:00")

    # the A and the B of w12 both leave
    day.at("14:00:00")
    await day.do.pad(12, "logout")
    day.expect_windows(w12=("unattended", None))
    await day.check("14:00:00")
    day.expect(s012="off_post", s112="off_post")
    await day.check("14:05:00")
    assert [i["window_id"] for i in day.board()["unattended_windows"]] == ["w12"]
    assert {i["staff_id"] for i in day.board()["off_post"]} == {"s012", "s112"}
    day.at("14:20:00")
    await day.do.pad(12, "login", "s112")
    day.expect(s112="on_post")
    day.expect_windows(w12=("idle", "B"))
    await day.check("14:25:00")

    # a fourth outing is refused by the 3-a-day rule, and changes nothing
    day.at("14:30:00")
    status, refused = await outing(day, "s009", "private", 10)
    assert status == 409, refused
    assert refused["rule"] == "max_per_day"
    await day.check("14:30:00")
    status, outings = await api(day.gw, "GET", "/api/v1/outings")
    assert status == 200
    assert [(o["outing_id"], o["ended_by"]) for o in outings] == [
        ("s009-20261120-1", "api"),
        ("s003-20261120-1", "returned"),
        ("s007-20261120-1", "returned"),
        ("s009-20261120-2", "command"),
        ("s009-20261120-3", "returned"),
    ]
    assert outings[2]["flags"] == ["overdue"]

    day.everyone("off_duty", "off_duty", ("closed", None))
    await day.check("17:30:00")
    board = day.board()
    assert board["counts"]["off_duty"] == 2 * WINDOWS
    assert board["counts"]["closed"] == WINDOWS
    assert board["counts"]["staff_total"] == 2 * WINDOWS
    assert board["counts"]["windows_total"] == WINDOWS
    starts = [e["staff_id"] for e in day.mqtt.events("outing") if e["action"] == "start"]
    assert starts == ["s009", "s003", "s007", "s009", "s009"]
