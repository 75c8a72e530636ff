"""The presence engine as a pure function of its inputs and the time: edge cases the day
scenario does not walk through."""

from __future__ import annotations

import datetime as dt

from gateway.config import Config, parse_config
from gateway.leave import LeaveRequest, make_leave
from gateway.outings import Outing, OutingRequest, judge
from gateway.presence import PresenceEngine
from tests.support.presence import ZONE, at

HALL = """
site: h
timetables:
  standard:
    periods: [{start: "09:00", end: "12:00"}, {start: "13:30", end: "17:30"}]
    breaks: [{start: "10:30", end: "10:50"}]
windows:
  - {id: w01, name: 1号窗口}
  - {id: w02, name: 2号窗口}
staff:
  - {id: a1, name: 张三, window: w01, post: A}
  - {id: b1, name: 李四, window: w01, post: B}
  - {id: b2, name: 王五, window: w01, post: B}
  - {id: a2, name: 赵六, window: w02, post: A}
  - {id: g1, name: 导办员, post: A}
"""


def engine(extra: str = "", start: str = "08:00:00") -> PresenceEngine:
    e = PresenceEngine(parse_config(HALL + extra), start=at(start))
    e.advance(at(start))
    return e


def statuses(e: PresenceEngine, time: str) -> dict[str, str]:
    e.advance(at(time))
    return {v.staff_id: v.status for v in e.staff_views()}


def windows(e: PresenceEngine, time: str) -> dict[str, tuple[str, str | None]]:
    e.advance(at(time))
    return {v.window_id: (v.status, v.covering) for v in e.window_views()}


def arrive(e: PresenceEngine, *staff: str, time: str = "08:50:00") -> None:
    for staff_id in staff:
        e.punch(staff_id, at(time), at(time))


def test_a_b_stands_by_while_another_b_covers() -> None:
    e = engine()
    arrive(e, "a1", "b1", "b2", "a2", "g1")
    e.pad("p1", "w01", "login", "b1", at("09:00:00"))
    # a1 never comes to the window: b1 covers, so b2 stands by; the guide has no window
    assert statuses(e, "09:10:00") == {
        "a1": "off_post",
        "b1": "on_post",
        "b2": "standby",
        "a2": "off_post",
        "g1": "on_post",
    }
    e.pad("p1", "w01", "logout", None, at("09:20:00"))
    assert statuses(e, "09:24:59")["b2"] == "standby"
    assert statuses(e, "09:25:00")["b2"] == "off_post"
    assert e.staff_view("b2").since == at("09:20:00")
    assert e.staff_view("b1").since == at("09:20:00")


def test_breaks_can_excuse_absence() -> None:
    e = engine("rules: {breaks_excuse_absence: true}\n")
    arrive(e, "a1", "b1", "b2", "a2")
    e.pad("p1", "w01", "login", "a1", at("09:00:00"))
    e.pad("p1", "w01", "logout", None, at("10:29:00"))
    assert statuses(e, "10:40:00")["a1"] == "off_duty"
    assert windows(e, "10:40:00")["w01"] == ("closed", None)
    assert statuses(e, "10:54:59")["a1"] == "on_post"  # the grace runs from the break's end
    assert statuses(e, "10:55:00")["a1"] == "off_post"
    assert e.staff_view("a1").since == at("10:50:00")


def test_a_login_left_overnight_is_not_presence_the_next_morning() -> None:
    e = engine()
    arrive(e, "a1", "b1", "b2")
    e.pad("p1", "w01", "login", "a1", at("09:00:00"))
    e.caller("w02", "idle", "a2", None, at("09:00:00"))
    next_day = at("09:00:00", dt.date(2026, 11, 23))  # Monday
    e.advance(next_day)
    assert e.staff_view("a1").status == "not_arrived"
    assert e.window_view("w01").status == "unattended"
    assert e.window_view("w02").status == "unattended"
    # the caller is used today: whoever it shows is there
    e.caller_activity("w02", next_day + dt.timedelta(minutes=1))
    assert e.window_view("w02").status == "idle"
    assert e.staff_view("a2").status == "on_post"


def test_a_paused_window_and_a_closed_caller() -> None:
    e = engine()
    arrive(e, "a1", "b1", "b2", "a2")
    e.pad("p1", "w01", "login", "a1", at("09:00:00"))
    e.pad("p1", "w01", "pause", "a1", at("09:30:00"))
    assert windows(e, "09:31:00")["w01"] == ("paused", "A")
    assert e.window_view("w01").staff_id == "a1"
    assert statuses(e, "09:35:00")["a1"] == "off_post"  # paused past the grace
    e.caller("w02", "closed", None, None, at("09:40:00"))
    assert windows(e, "09:41:00")["w02"] == ("closed", None)
    e.caller("w02", "serving", "a2", "B017", at("09:42:00"))
    assert windows(e, "09:42:00")["w02"] == ("serving", "A")
    assert e.window_view("w02").ticket == "B017"


def test_leave_and_outings_through_the_day() -> None:
    e = engine()
    arrive(e, "a1", "b1", "b2", "a2")
    request = LeaveRequest.model_validate(
        {"staff_id": "a2", "from": "2026-11-20T09:00", "to": "2026-11-20T10:00"}
    )
    e.add_leave(make_leave(request, ZONE, "api", "h"), at("08:55:00"))
    assert statuses(e, "09:30:00")["a2"] == "on_leave"
    assert statuses(e, "10:04:00")["a2"] == "on_post"  # back from leave: the grace runs
    assert statuses(e, "10:05:00")["a2"] == "off_post"
    assert e.staff_view("a2").since == at("10:00:00")
    outing = Outing("a1-1", "a1", "w01", "official", at("11:30:00"), at("13:40:00"), None, None)
    e.start_outing(outing)
    assert statuses(e, "12:30:00")["a1"] == "out", "an outing shows over the lunch gap"
    e.advance(at("13:40:00"))
    facts = e.take_pending()
    assert [(f.action, f.at) for f in facts] == [("overdue", at("13:40:00"))]
    e.advance(at("00:00:00", dt.date(2026, 11, 21)))
    facts = e.take_pending()
    assert [(f.action, f.outing.ended_by) for f in facts] == [("end", "day_end")]


def test_reload_keeps_state_of_ids_that_remain() -> None:
    e = engine()
    arrive(e, "a1", "b1", "b2", "a2")
    e.pad("p1", "w01", "login", "a1", at("09:00:00"))
    e.advance(at("09:10:00"))
    since = e.staff_view("a1").since
    config: Config = parse_config(
        HALL.replace("  - {id: a2, name: 赵六, window: w02, post: A}\n", "")
    )
    e.configure(config)
    changes = e.take_changes()
    assert "a2" in changes.removed_staff
    assert e.staff_view("a1").since == since
    assert [v.staff_id for v in e.staff_views()] == ["a1", "b1", "b2", "g1"]


def test_rules_judge_a_request() -> None:
    rules = parse_config("site: h\nrules: {outing: {modes: {max_per_day: warn}}}\n").rules.outing
    done = [
        Outing(
            f"x-{n}",
            "x",
            None,
            "private",
            at("09:00:00"),
            at("09:05:00"),
            None,
            None,
            ended_at=at("09:05:00"),
        )
        for n in range(3)
    ]
    request = OutingRequest(staff_id="x", reason="private", expected_minutes=5)
    judgement = judge(request, done, rules, at("10:00:00"))
    assert judgement.refusal is None
    assert judgement.flags == ("max_per_day",)
    long = OutingRequest(staff_id="x", reason="private", expected_minutes=50)
    refusal = judge(long, done, rules, at("10:00:00")).refusal
    assert refusal is not None
    assert refusal.rule == "private_approval"
    official = OutingRequest(staff_id="x", reason="official", expected_minutes=50)
    assert judge(official, done, rules, at("10:00:00")).breaches == ()
