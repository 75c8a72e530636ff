"""The attendance engine on a real store and bus with a fake clock: when facts go out (at once,
after a start-up grace, held while a clock that may hold punches is silent, at the latest after
MAX_SETTLE_HOLD), that a restart publishes nothing twice and catches up, and that a first run
in the middle of a day does not judge that day."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.attendance import (
    BACKLOG_GRACE,
    MAX_SETTLE_HOLD,
    SINCE_CURSOR,
    AttendanceEngine,
    AttendanceRules,
    Punch,
)
from gateway.bus import EventBus
from gateway.clock import FakeClock
from gateway.config import parse_config
from gateway.events import PunchEvent
from gateway.metrics import Metrics
from gateway.roster import Roster
from gateway.store import Store
from gateway.topics import event_messages
from tests.support.polling import until_async

ZONE = ZoneInfo("Asia/Shanghai")
HALL = """
site: h
timetables:
  standard:
    periods:
      - {start: "09:00", end: "12:00"}
      - {start: "13:30", end: "17:30"}
staff:
  - {id: a, name: 张三, pin: "1"}
"""
FRIDAY = dt.date(2026, 11, 20)


def at(time: str, day: dt.date = FRIDAY) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day.isoformat()}T{time}").replace(tzinfo=ZONE)


class Hall:
    """An engine over a store in `path`, a fake clock, and one punch clock's last contact."""

    def __init__(self, store: Store, clock: FakeClock) -> None:
        config = parse_config(HALL)
        self.store = store
        self.clock = clock
        self.bus = EventBus(store, event_messages, Metrics())
        self.contacts: dict[str, dt.datetime | None] = {"c1": None, "c2": None}
        self.engine = AttendanceEngine(
            AttendanceRules(config),
            roster=Roster(config),
            clock=clock,
            bus=self.bus,
            store=store,
            contacts=lambda: list(self.contacts.values()),
        )

    async def punch(self, when: dt.datetime) -> None:
        event = PunchEvent(
            event_id=f"p-{when.isoformat()}",
            ts=when,
            received_at=when,
            device_id="c1",
            staff_id="a",
            pin="1",
            direction="in",
            verify="face",
        )
        await self.bus.publish(event)
        self.engine.stored([Punch("a", when, event.event_id)])

    def heard(self, *clocks: str) -> None:
        for name in clocks or ("c1",):
            self.contacts[name] = self.clock.now()

    def due(self) -> list[tuple[str, int | None]]:
        return [(f.action, f.minutes) for f in self.engine.due(self.clock.now())]


@contextlib.asynccontextmanager
async def hall(path: Path, clock: FakeClock) -> AsyncIterator[Hall]:
    async with Store(path, outbox_max_messages=10_000) as store:
        result = Hall(store, clock)
        await result.engine.restore()
        yield result


async def eventually(condition: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    await until_async(condition, "the facts in the store", timeout)


async def test_late_goes_out_at_once_and_settled_facts_wait_for_the_clock(tmp_path: Path) -> None:
    clock = FakeClock(at("07:30:00"))
    async with hall(tmp_path / "db", clock) as h:
        await h.punch(at("09:10:00"))
        clock.set(at("09:10:02"))
        h.heard()
        assert h.due() == [("late", 10)]
        # the morning window closes at 12:45 and settles 5 minutes later; the clock was last
        # heard at 09:10, so it may still hold punches: the no_punch waits for it
        clock.set(at("12:51:00"))
        assert h.due() == [("late", 10)]
        assert h.engine.holding
        h.heard()
        assert sorted(h.due()) == [("late", 10), ("no_punch", None)]
        assert not h.engine.holding
        # one silent clock holds the ledger while another works, at most MAX_SETTLE_HOLD
        h.contacts = {"c1": at("12:40:00"), "c2": at("12:40:00")}
        clock.set(at("13:00:00"))
        h.heard("c2")
        assert h.due() == [("late", 10)]
        clock.set(at("12:50:00") + MAX_SETTLE_HOLD)
        h.heard("c2")
        assert sorted(h.due()) == [("late", 10), ("no_punch", None)]
        # but while no clock at all has been heard from, nothing is settled: no evidence
        h.contacts = {"c1": at("12:40:00"), "c2": None}
        assert h.due() == [("late", 10)]
        assert h.engine.holding


async def test_nothing_goes_out_before_the_clocks_had_time_to_upload_after_a_start(
    tmp_path: Path,
) -> None:
    clock = FakeClock(at("07:00:00"))
    async with hall(tmp_path / "db", clock) as h:
        await h.punch(at("09:05:00"))
    clock.set(at("09:30:00"))
    async with hall(tmp_path / "db", clock) as h:
        h.heard()
        assert h.due() == []
        clock.set(at("09:30:00") + BACKLOG_GRACE)
        assert h.due() == []  # heard before the grace ended: it may not have uploaded yet
        h.heard()
        assert h.due() == [("late", 5)]


async def test_a_restart_publishes_nothing_twice_and_catches_up_on_missed_days(
    tmp_path: Path,
) -> None:
    clock = FakeClock(at("07:00:00"))
    async with hall(tmp_path / "db", clock) as h:
        await h.punch(at("09:05:00"))
        clock.set(at("09:06:00"))
        h.heard()
        task = asyncio.create_task(h.engine.run(), name="engine-under-test")
        try:
            h.engine.wake()

            async def one_fact() -> bool:
                return len(await h.store.journal(kinds=["attendance"])) == 1

            await eventually(one_fact)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    # down over the weekend; back on Monday morning
    monday = FRIDAY + dt.timedelta(days=3)
    clock.set(at("08:00:00", monday))
    async with hall(tmp_path / "db", clock) as h:
        clock.set(at("08:02:00", monday))
        h.heard()
        missed = sorted(h.due())
        assert missed == [("absent", 240), ("no_punch", None)]  # Friday; not the late again
        task = asyncio.create_task(h.engine.run(), name="engine-under-test")
        try:
            h.engine.wake()

            async def three_facts() -> bool:
                return len(await h.store.journal(kinds=["attendance"])) == 3

            await eventually(three_facts)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert h.due() == []


async def test_a_first_run_after_opening_does_not_judge_that_day(tmp_path: Path) -> None:
    clock = FakeClock(at("10:00:00"))
    async with hall(tmp_path / "db", clock) as h:
        assert await h.store.cursor(SINCE_CURSOR) == "2026-11-21"
        clock.set(at("09:00:00", FRIDAY + dt.timedelta(days=3)))
        h.heard()
        assert h.due() == []  # no punches on Friday, but Friday was not watched whole
    async with hall(tmp_path / "db", clock) as h:
        assert await h.store.cursor(SINCE_CURSOR) == "2026-11-21"
    early = FakeClock(at("08:00:00"))
    async with hall(tmp_path / "fresh", early) as h:
        assert await h.store.cursor(SINCE_CURSOR) == "2026-11-20"


async def test_the_punches_taken_are_forgotten_with_their_month(tmp_path: Path) -> None:
    """A gateway runs for months: what it remembers of punches stays two months deep."""
    clock = FakeClock(at("10:00"))
    async with hall(tmp_path / "store.db", clock) as h:
        for day in range(1, 21):
            await h.punch(at("08:55", dt.date(2026, 11, day)))
        assert len(h.engine._seen) == 20
        clock.set(at("10:00", dt.date(2027, 1, 5)))  # November is now the month before last
        await h.punch(at("08:55", dt.date(2027, 1, 5)))
        h.engine.due(clock.now())
        assert list(h.engine._seen.values()) == [dt.date(2027, 1, 5)]
        await h.punch(at("08:55", dt.date(2027, 1, 5)))  # the same punch again: known
        assert len(h.engine._seen) == 1
