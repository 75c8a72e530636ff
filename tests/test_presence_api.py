"""The outings and leave API, cmd/outing, the leave file and the alert hook: tokens, each hall
rule (enforce and warn), malformed bodies and commands, and that a refusal changes nothing."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.clock import FakeClock
from gateway.presence import Condition
from tests.support.harness import (
    RunningGateway,
    api_secrets,
    running_gateway,
    to_config,
)
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import Recorder, publish
from tests.support.presence import Inputs, api, at, presence, presence_hall

ROOT = "hall/test-hall"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(at("09:30:00"))


@contextlib.asynccontextmanager
async def start(
    tmp_path: Path, broker: Mosquitto, clock: FakeClock, **overrides: Any
) -> AsyncIterator[RunningGateway]:
    config = to_config(presence_hall(tmp_path, mqtt_port=broker.port, windows=4, **overrides))
    async with running_gateway(config, gateway=Gateway(config, api_secrets(), clock=clock)) as gw:
        yield gw


@pytest.fixture
async def gw(tmp_path: Path, broker: Mosquitto, clock: FakeClock) -> AsyncIterator[RunningGateway]:
    async with start(tmp_path, broker, clock) as running:
        yield running


def body(staff_id: str = "s001", reason: str = "private", minutes: int = 10, **extra: Any) -> Any:
    return {"staff_id": staff_id, "reason": reason, "expected_minutes": minutes, **extra}


async def outings(gw: RunningGateway) -> list[Any]:
    status, found = await gw.get("/api/v1/outings")
    assert status == 200
    assert isinstance(found, list)
    return found


async def test_writes_need_the_token_and_a_refused_one_changes_nothing(
    gw: RunningGateway,
) -> None:
    for token in (None, "wrong-token"):
        status, answer = await api(gw, "POST", "/api/v1/outings", body(), token=token)
        assert status == 401, answer
        assert "token" in answer["error"]
        status, _ = await api(
            gw,
            "POST",
            "/api/v1/leave",
            {"staff_id": "s001", "from": "2026-11-20", "to": "2026-11-20"},
            token=token,
        )
        assert status == 401
    status, started = await api(gw, "POST", "/api/v1/outings", body())
    assert status == 201
    status, _ = await api(gw, "POST", f"/api/v1/outings/{started['outing_id']}/end", {}, token=None)
    assert status == 401
    assert [o["ended_at"] for o in await outings(gw)] == [None]
    assert await gw.metric("hallgw_presence_rejected_total", reason="unauthorized") == 5
    # the journal holds the one outing that was let in
    store = gw.gateway.store
    assert store is not None
    assert len(await store.journal(kinds=["outing"])) == 1


@pytest.mark.parametrize(
    ("request_body", "rule"),
    [
        (body(reason="private", minutes=30), "private_approval"),
        (body(reason="official", minutes=90), "replacement"),
        (body(reason="private", minutes=61, approved_by="督查股"), "replacement"),
    ],
)
async def test_each_duration_rule_refuses_with_its_name(
    gw: RunningGateway, request_body: Any, rule: str
) -> None:
    status, answer = await api(gw, "POST", "/api/v1/outings", request_body)
    assert status == 409, answer
    assert answer["rule"] == rule
    assert answer["error"]
    assert await outings(gw) == []
    assert (await gw.get("/api/v1/staff"))[1][0]["status"] != "out"


async def test_approval_and_replacement_let_long_outings_through(gw: RunningGateway) -> None:
    status, first = await api(gw, "POST", "/api/v1/outings", body(minutes=30, approved_by="王科长"))
    assert (status, first["flags"]) == (201, [])
    status, second = await api(
        gw, "POST", "/api/v1/outings", body("s002", "official", 120, replacement_staff_id="s102")
    )
    assert (status, second["flags"]) == (201, [])
    assert second["replacement_staff_id"] == "s102"
    status, again = await api(gw, "POST", "/api/v1/outings", body("s002"))
    assert (status, again["rule"]) == (409, "already_out")


async def test_the_daily_limits_count_outings_and_minutes(
    gw: RunningGateway, clock: FakeClock
) -> None:
    for minutes in (5, 5, 5):
        status, started = await api(gw, "POST", "/api/v1/outings", body(minutes=minutes))
        assert status == 201, started
        clock.advance(60)
        status, _ = await api(
            gw, "POST", f"/api/v1/outings/{started['outing_id']}/end", {"ended_by": "督查股"}
        )
        assert status == 200
    status, answer = await api(gw, "POST", "/api/v1/outings", body(minutes=5))
    assert (status, answer["rule"]) == (409, "max_per_day")
    status, long = await api(gw, "POST", "/api/v1/outings", body("s002", minutes=20))
    assert status == 201
    clock.advance(60)
    await api(gw, "POST", f"/api/v1/outings/{long['outing_id']}/end", {})
    status, answer = await api(
        gw, "POST", "/api/v1/outings", body("s002", minutes=20, approved_by="王科长")
    )
    assert status == 201, answer
    status, answer = await api(gw, "POST", "/api/v1/outings", body("s003", minutes=20))
    assert status == 201
    status, answer = await api(gw, "POST", "/api/v1/outings", body("s004", "official", 60))
    assert status == 201, "official business does not count against the daily limits"
    ended = [o for o in await outings(gw) if o["ended_at"] is not None]
    assert {o["ended_by"] for o in ended} == {"督查股", "api"}


async def test_minutes_per_day(gw: RunningGateway, clock: FakeClock) -> None:
    status, first = await api(gw, "POST", "/api/v1/outings", body(minutes=50, approved_by="王科长"))
    assert status == 201
    clock.advance(50 * 60)
    await api(gw, "POST", f"/api/v1/outings/{first['outing_id']}/end", {})
    status, answer = await api(gw, "POST", "/api/v1/outings", body(minutes=15))
    assert (status, answer["rule"]) == (409, "max_minutes_per_day")
    assert "50 min" in answer["error"]


async def test_warn_accepts_flags_and_raises_a_condition(
    tmp_path: Path, broker: Mosquitto, clock: FakeClock
) -> None:
    rules = {"outing": {"mode": "enforce", "modes": {"private_approval": "warn"}}}
    async with start(tmp_path, broker, clock, rules=rules) as gw:
        heard: list[Condition] = []
        presence(gw).add_listener(heard.append)

        def outing_conditions() -> list[Condition]:
            return [c for c in heard if c.subject[0] == "staff_id"]

        status, answer = await api(gw, "POST", "/api/v1/outings", body(minutes=30))
        assert status == 201, answer
        assert answer["flags"] == ["private_approval"]
        status, refused = await api(gw, "POST", "/api/v1/outings", body("s002", "official", 90))
        assert (status, refused["rule"]) == (409, "replacement"), "other rules still enforce"
        staff = {s["staff_id"]: s for s in (await gw.get("/api/v1/staff"))[1]}
        assert staff["s001"]["status"] == "out"
        assert staff["s001"]["flags"] == ["private_approval"]
        assert [(c.rule, c.subject, c.active) for c in outing_conditions()] == [
            ("outing_rule", ("staff_id", "s001"), True)
        ]
        clock.advance(31 * 60)
        await presence(gw).sync()
        assert [(c.rule, c.active) for c in outing_conditions()][1:] == [("outing_overdue", True)]
        assert {c.rule for c in presence(gw).engine.conditions() if c.subject[0] == "staff_id"} == {
            "outing_rule",
            "outing_overdue",
        }
        status, _ = await api(gw, "POST", f"/api/v1/outings/{answer['outing_id']}/end", {})
        assert status == 200
        assert sorted((c.rule, c.active) for c in outing_conditions()[2:]) == [
            ("outing_overdue", False),
            ("outing_rule", False),
        ]


@pytest.mark.parametrize(
    ("raw", "status", "names"),
    [
        (b"{not json", 400, "not JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b"", 400, "not JSON"),
        (json.dumps({"staff_id": "s001", "reason": "private"}).encode(), 422, "expected_minutes"),
        (json.dumps(body(reason="holiday")).encode(), 422, "reason"),
        (json.dumps(body(minutes=0)).encode(), 422, "expected_minutes"),
        (json.dumps(body("s999")).encode(), 422, "staff_id"),
        (json.dumps(body("../x")).encode(), 422, "staff_id"),
        (json.dumps(body(colour="red")).encode(), 422, "colour"),
        (json.dumps(body(replacement_staff_id="nobody")).encode(), 422, "replacement_staff_id"),
    ],
)
async def test_malformed_bodies_name_the_field(
    gw: RunningGateway, raw: bytes, status: int, names: str
) -> None:
    got, answer = await api(gw, "POST", "/api/v1/outings", raw=raw)
    assert got == status, answer
    assert names in answer["error"]
    assert await outings(gw) == []
    assert await gw.metric("hallgw_presence_rejected_total", reason="malformed") == 1


async def test_a_body_over_a_mebibyte_is_413(gw: RunningGateway) -> None:
    raw = json.dumps(body(approved_by="x" * (1024 * 1024))).encode()
    status, answer = await api(gw, "POST", "/api/v1/outings", raw=raw)
    assert status == 413, answer
    assert "error" in answer
    assert await outings(gw) == []


async def test_ending_an_unknown_or_ended_outing(gw: RunningGateway) -> None:
    status, answer = await api(gw, "POST", "/api/v1/outings/s001-20261120-9/end", {})
    assert status == 404, answer
    status, started = await api(gw, "POST", "/api/v1/outings", body())
    oid = started["outing_id"]
    status, answer = await api(gw, "POST", f"/api/v1/outings/{oid}/end", {"ended_by": 5})
    assert status == 422, answer
    assert "ended_by" in answer["error"]
    assert (await api(gw, "POST", f"/api/v1/outings/{oid}/end", raw=b""))[0] == 200
    status, answer = await api(gw, "POST", f"/api/v1/outings/{oid}/end", {})
    assert status == 409, answer


async def test_outing_commands_are_answered_once_and_malformed_ones_name_the_field(
    gw: RunningGateway, broker: Mosquitto
) -> None:
    async with Recorder(broker.port, [f"{ROOT}/cmd/reply/#", f"{ROOT}/events/outing/#"]) as mqtt:

        async def send(command: dict[str, Any]) -> Any:
            await publish(broker.port, f"{ROOT}/cmd/outing", json.dumps(command))
            rid = command["request_id"]
            return await mqtt.wait_for(lambda: mqtt.last(f"cmd/reply/{rid}"), what=rid)

        reply = await send(
            {"request_id": "m1", "staff_id": "s001", "action": "start", "reason": "private"}
        )
        assert not reply["ok"]
        assert "expected_minutes" in reply["error"]
        reply = await send({"request_id": "m2", "staff_id": "s001", "action": "leave"})
        assert not reply["ok"]
        assert "action" in reply["error"]
        reply = await send(
            {
                "request_id": "m3",
                "staff_id": "s001",
                "action": "start",
                "reason": "private",
                "expected_minutes": 30,
            }
        )
        assert not reply["ok"]
        assert "private_approval" in reply["error"]
        reply = await send({"request_id": "m4", "staff_id": "s001", "action": "end"})
        assert not reply["ok"]
        assert "no outing" in reply["error"]
        start = {
            "request_id": "m5",
            "staff_id": "s001",
            "action": "start",
            "reason": "official",
            "expected_minutes": 30,
        }
        assert (await send(start))["ok"]
        await publish(broker.port, f"{ROOT}/cmd/outing", json.dumps(start))  # delivered twice
        await mqtt.wait_for(lambda: len(mqtt.on("cmd/reply/m5")) == 2, what="the second reply")
        assert all(m.json()["ok"] for m in mqtt.on("cmd/reply/m5"))
        starts = await mqtt.wait_for(lambda: mqtt.events("outing"), what="the start event")
        assert [(e["action"], e["reason"], e["device_id"]) for e in starts] == [
            ("start", "official", None)
        ]
        assert len(await outings(gw)) == 1
    assert await gw.metric("hallgw_mqtt_commands_total", command="outing", result="malformed") == 2
    assert await gw.metric("hallgw_mqtt_commands_total", command="outing", result="rejected") == 2


async def test_leave_from_the_api_and_from_a_file(
    tmp_path: Path, broker: Mosquitto, clock: FakeClock
) -> None:
    leave_file = tmp_path / "leave.yaml"
    leave_file.write_text(
        "- {staff_id: s002, from: 2026-11-20, to: 2026-11-21, note: 年假}\n"
        '- {staff_id: s003, from: "2026-11-20T09:00", to: "2026-11-20T12:00"}\n',
        encoding="utf-8",
    )
    async with start(tmp_path, broker, clock, leave={"path": str(leave_file)}) as gw:
        inputs = Inputs(presence(gw), clock)
        for staff_id in ("s001", "s002", "s003", "s004"):
            await inputs.punch(staff_id)
        status, given = await api(
            gw,
            "POST",
            "/api/v1/leave",
            {"staff_id": "s004", "from": "2026-11-20", "to": "2026-11-20"},
        )
        assert status == 201, given
        status, bad = await api(
            gw,
            "POST",
            "/api/v1/leave",
            {"staff_id": "s004", "from": "2026-11-21", "to": "2026-11-20"},
        )
        assert (status, "to" in bad["error"]) == (422, True)
        await presence(gw).sync()

        def statuses() -> dict[str, str]:
            return {v.staff_id: v.status for v in presence(gw).engine.staff_views()}

        assert [statuses()[s] for s in ("s002", "s003", "s004")] == ["on_leave"] * 3
        board = presence(gw).board()
        assert [i["staff_id"] for i in board["on_leave"]] == ["s002", "s003", "s004"]

        # a bad edit is refused whole: the leave in force stays
        leave_file.write_text(
            "- {staff_id: s002, from: 2026-11-20, to: 2026-11-19}\n- {staff_id: s404, from: 2026-11-20, to: 2026-11-20}\n",
            encoding="utf-8",
        )
        presence(gw).reload(gw.config)
        await presence(gw).sync()
        assert statuses()["s002"] == "on_leave"
        assert await gw.metric("hallgw_presence_rejected_total", input="leave_file") == 1

        # CSV, with a byte order mark, replaces it once it is right
        csv_file = tmp_path / "leave.csv"
        csv_file.write_text(
            "\ufeffstaff_id,from,to,note\ns001,2026-11-20,2026-11-20,病假\n", encoding="utf-8"
        )
        config = gw.config.model_copy(
            update={"leave": gw.config.leave.model_copy(update={"path": str(csv_file)})}
        )
        presence(gw).reload(config)
        await presence(gw).sync()
        assert statuses()["s001"] == "on_leave"
        assert statuses()["s002"] != "on_leave"

        status, cancelled = await api(gw, "DELETE", f"/api/v1/leave/{given['leave_id']}")
        assert status == 200, cancelled
        status, listed = await api(gw, "GET", "/api/v1/leave")
        assert [(lv["staff_id"], lv["source"]) for lv in listed] == [("s001", "file")]
        status, refused = await api(gw, "DELETE", f"/api/v1/leave/{listed[0]['leave_id']}")
        assert status == 409, refused


async def test_a_wall_clock_stepped_back_leaves_the_board_at_its_own_time(
    gw: RunningGateway, clock: FakeClock
) -> None:
    status, started = await api(gw, "POST", "/api/v1/outings", body(minutes=10))
    assert status == 201
    clock.advance(15 * 60)  # an NTP step forward: the outing is overdue
    await presence(gw).sync()
    clock.advance(-60 * 60)  # and back, to before the outing began
    await presence(gw).sync()
    status, board = await gw.get("/api/v1/board")
    assert status == 200
    assert board["out"][0]["overdue"]
    assert board["ts"] >= board["out"][0]["expected_back"] > started["started_at"]
