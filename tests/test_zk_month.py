"""A month of punches for 50 staff through three simulated clocks, against a ground truth that
is generated from known behaviour (on time, k minutes late, k minutes early, a missing punch,
absent), not computed by the code under test. October 2026 has a holiday (the 1st and 2nd) and a
make-up Saturday (the 10th). The attendance events on MQTT and the `hallgw attendance` ledger
must both match the truth exactly, the monthly half-day rule included."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway.app import Gateway
from gateway.attendance import AttendanceEngine
from gateway.cli import main
from gateway.clock import FakeClock
from gateway.config import load_config
from gateway.ledger import print_ledger
from simulators.zk_push import SimClock, running
from tests.support.harness import api_secrets, running_gateway, write_config
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import Recorder
from tests.support.zk import clock_hall, device_url

ZONE = ZoneInfo("Asia/Shanghai")
STAFF = 50
CLOCKS = ("CK0001", "CK0002", "CK0003")
OCTOBER = [dt.date(2026, 10, d) for d in range(1, 32)]
HOLIDAYS = {dt.date(2026, 10, 1), dt.date(2026, 10, 2)}
MAKE_UP = dt.date(2026, 10, 10)
HALF_DAY_AFTER = 4
# (start, end, clock_in_by) per timetable, as tests/support/zk.py configures them
PERIODS = {
    "standard": [((9, 0), (12, 0), (9, 0)), ((13, 30), (17, 30), (13, 30))],
    "early": [((8, 30), (12, 0), (8, 40)), ((14, 30), (17, 30), (14, 40))],
}
HALF_DAY_MINUTES = {"standard": (180 + 240) // 2, "early": (210 + 180) // 2}

Fact = tuple[str, str, int | None, str]  # staff_id, action, minutes, ts


@dataclass
class Truth:
    punches: list[tuple[str, dt.datetime]] = field(default_factory=list)  # (pin, naive local)
    facts: list[Fact] = field(default_factory=list)
    late_marks: dict[tuple[str, str], int] = field(default_factory=dict)  # (pin, time) → minutes
    early_marks: dict[tuple[str, str], int] = field(default_factory=dict)
    # (staff_id, day) → late minutes, early minutes, no_punch, absent periods
    days: dict[tuple[str, dt.date], list[int]] = field(default_factory=dict)
    half_days: Counter[str] = field(default_factory=Counter)


def timetable(n: int) -> str:
    return "early" if n % 2 else "standard"


def working(day: dt.date) -> bool:
    return day == MAKE_UP or (day.weekday() < 5 and day not in HOLIDAYS)


def at(day: dt.date, hm: tuple[int, int], seconds: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, *hm) + dt.timedelta(seconds=seconds)


def iso(local: dt.datetime) -> str:
    return local.replace(tzinfo=ZONE).isoformat(timespec="seconds")


def ground_truth(seed: int = 20261001) -> Truth:
    rng = random.Random(seed)
    truth = Truth()
    behaviours = ["ok"] * 14 + [
        "late",
        "early",
        "late_early",
        "no_out",
        "no_in",
        "absent",
        "double_in",
    ]
    for n in range(1, STAFF + 1):
        staff_id, pin, table = f"s{n:03d}", str(1000 + n), timetable(n)
        occurrences: list[tuple[dt.datetime, int]] = []  # late/early times, for the monthly rule

        for day in OCTOBER:
            if not working(day):
                if rng.random() < 0.05 or (day in HOLIDAYS and n <= 5):
                    truth.punches.append((pin, at(day, (9, 30), rng.randint(0, 3000))))
                continue
            row = truth.days.setdefault((staff_id, day), [0, 0, 0, 0])
            for start, end, by in PERIODS[table]:
                behaviour = rng.choice(behaviours)
                if day == MAKE_UP and n <= 6:
                    behaviour = "late"  # the make-up Saturday counts like any working day
                deadline, finish = at(day, by), at(day, end)
                arrive = deadline - dt.timedelta(seconds=rng.randint(60, 1200))
                leave = finish + dt.timedelta(seconds=rng.randint(0, 900))
                if behaviour in ("late", "late_early"):
                    k = rng.randint(1, 45)
                    arrive = deadline + dt.timedelta(seconds=(k - 1) * 60 + rng.randint(1, 59))
                    truth.facts.append((staff_id, "late", k, iso(arrive)))
                    truth.late_marks[pin, iso(arrive)] = k
                    occurrences.append((arrive, HALF_DAY_MINUTES[table]))
                    row[0] += k
                if behaviour in ("early", "late_early"):
                    k = rng.randint(1, 60)
                    leave = finish - dt.timedelta(seconds=k * 60 - rng.randint(0, 59))
                    truth.facts.append((staff_id, "early_leave", k, iso(leave)))
                    truth.early_marks[pin, iso(leave)] = k
                    occurrences.append((leave, HALF_DAY_MINUTES[table]))
                    row[1] += k
                if behaviour == "absent":
                    minutes = (finish - at(day, start)).seconds // 60
                    truth.facts.append((staff_id, "absent", minutes, iso(at(day, start))))
                    row[3] += 1
                    continue
                if behaviour == "no_out":
                    truth.facts.append((staff_id, "no_punch", None, iso(finish)))
                    truth.punches.append((pin, arrive))
                    row[2] += 1
                    continue
                if behaviour == "no_in":
                    truth.facts.append((staff_id, "no_punch", None, iso(deadline)))
                    truth.punches.append((pin, leave))
                    row[2] += 1
                    continue
                truth.punches.append((pin, arrive))
                if behaviour == "double_in":
                    truth.punches.append((pin, arrive + dt.timedelta(seconds=20)))
                truth.punches.append((pin, leave))
        occurrences.sort()
        for k in range(HALF_DAY_AFTER, len(occurrences) + 1, HALF_DAY_AFTER):
            when, minutes = occurrences[k - 1]
            truth.facts.append((staff_id, "absent", minutes, iso(when)))
            truth.half_days[staff_id] += 1
    return truth


class Tally:
    """How many messages so far have `needle` in their topic; each message is looked at once."""

    def __init__(self, mqtt: Recorder, needle: str) -> None:
        self._mqtt = mqtt
        self._needle = needle
        self._seen = 0
        self._count = 0

    def __call__(self) -> int:
        fresh = self._mqtt.messages[self._seen :]
        self._seen += len(fresh)
        self._count += sum(1 for m in fresh if self._needle in m.topic)
        return self._count


async def test_a_month_of_punches_matches_the_ground_truth(
    tmp_path: Path, broker: Mosquitto
) -> None:
    truth = ground_truth()
    data = clock_hall(tmp_path, mqtt_port=broker.port, clocks=CLOCKS, staff=STAFF, delay_s=0.1)
    config_path = write_config(tmp_path / "hall.yaml", data)
    config = load_config(config_path)
    clock = FakeClock(dt.datetime(2026, 10, 1, tzinfo=ZONE))
    gateway = Gateway(config, api_secrets(), clock=clock)
    by_day: dict[dt.date, list[tuple[str, dt.datetime]]] = {}
    for pin, local in truth.punches:
        by_day.setdefault(local.date(), []).append((pin, local))
    rng = random.Random(7)
    url = device_url(config)

    async with (
        Recorder(broker.port, ["hall/test-hall/events/attendance/#"]) as mqtt,
        running_gateway(config, gateway=gateway) as gateway_under_test,
        running(
            [SimClock(sn, url, time_source=clock.now, error_delay_s=0.1) for sn in CLOCKS]
        ) as sims,
    ):
        for day in OCTOBER:
            # the day's punches are uploaded as it starts, so no fact of the day can be final
            # before all of its punches are in; the previous day settles meanwhile
            clock.set(dt.datetime.combine(day, dt.time(0, 6), tzinfo=ZONE))
            for pin, local in by_day.get(day, []):
                rng.choice(sims).punch(pin, at=local, verify=rng.choice([1, 15, 2]))
            async with asyncio.timeout(20):
                for sim in sims:
                    await sim.flushed()
        clock.set(dt.datetime(2026, 11, 1, 0, 6, tzinfo=ZONE))

        engine = gateway.mounted["clock-1"].extras["attendance"]
        assert isinstance(engine, AttendanceEngine)
        await mqtt.wait_for(
            lambda: not engine.due(clock.now()) and not engine.holding,
            timeout=60,
            what="the engine to publish everything final",
        )
        store = gateway_under_test.gateway.store
        assert store is not None
        punch_rows = await store.journal(kinds=["punch"])
        facts_stored = len(await store.journal(kinds=["attendance"]))
        attendance_count = Tally(mqtt, "/events/attendance/")
        await mqtt.wait_for(
            lambda: attendance_count() >= facts_stored, timeout=60, what="every stored fact on MQTT"
        )

    def attendance() -> list[dict[str, Any]]:
        return [m.json() for m in mqtt.messages if "/events/attendance/" in m.topic]

    published = Counter((e["staff_id"], e["action"], e["minutes"], e["ts"]) for e in attendance())
    expected = Counter(truth.facts)
    assert published - expected == Counter(), "published but not true"
    assert expected - published == Counter(), "true but not published"
    assert len({e["event_id"] for e in attendance()}) == len(attendance())
    assert sum(truth.half_days.values()) >= STAFF // 2  # the rule is exercised
    assert sum(1 for f in truth.facts if f[3].startswith("2026-10-10") and f[1] == "late") >= 6

    punches = [json.loads(row.payload) for row in punch_rows if row.published]
    assert len({p["event_id"] for p in punches}) == len(truth.punches)
    for punch in punches:
        key = (punch["pin"], punch["ts"])
        assert punch["late_minutes"] == truth.late_marks.get(key), punch
        assert punch["early_minutes"] == truth.early_marks.get(key), punch

    # the ledger, computed again from the journal, gives the same answer
    out = io.StringIO()
    ledger_csv = tmp_path / "october.csv"
    status = await asyncio.to_thread(
        print_ledger,
        str(config_path),
        month=dt.date(2026, 10, 1),
        csv_path=str(ledger_csv),
        out=out,
        now=dt.datetime(2026, 11, 2, tzinfo=ZONE),
    )
    assert status == 0
    with ledger_csv.open(encoding="utf-8-sig", newline="") as file:
        rows = list(csv.DictReader(file))
    working_rows = {(r["staff_id"], r["date"]): r for r in rows if r["working_day"] == "1"}
    assert len(working_rows) == STAFF * sum(1 for d in OCTOBER if working(d))
    for (staff_id, day), (late, early, no_punch, absent) in truth.days.items():
        row = working_rows[staff_id, day.isoformat()]
        got = [int(row[c]) for c in ("late_minutes", "early_minutes", "no_punch", "absent_periods")]
        assert got == [late, early, no_punch, absent], (staff_id, day)
    last_rows = {r["staff_id"]: r for r in rows if r["date"] <= "2026-10-31"}
    for n in range(1, STAFF + 1):
        staff_id = f"s{n:03d}"
        assert int(last_rows[staff_id]["month_half_days"]) == truth.half_days[staff_id], staff_id
    text = out.getvalue()
    assert text.count("考勤 2026-10: s") == STAFF

    # `hallgw attendance --date` prints one row per person
    assert (
        await asyncio.to_thread(
            main, ["attendance", "-c", str(config_path), "--date", "2026-10-10"]
        )
        == 0
    )
