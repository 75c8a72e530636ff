"""A whole simulated hall: every device of a hall's config on real transports, and its day.

- `HallShape` and `shape_config` make the config of a hall of N windows on F floors (pure):
  a roster with A and B posts, a pad per window on serial buses of up to 30 pads, punch clocks,
  a queue controller, kiosks (some in the 7x24 area) and LED strips.
- `SimulatedHall` starts a simulator for every device of any hall config (generated, or the demo
  hall's) and points the config at them: ptys behind by-id style links for the pad buses, TCP for
  the queue controller and the LED controllers, HTTP for the kiosk agents, and punch clocks that
  call the gateway's device port.
- `HallDay` plays a working day on hall time (a `ScaledClock` shared with the gateway): arrivals
  and punches, logins at the pads and callers, the queue, ratings after each finished ticket,
  breaks, outings, lunch, departures, and a few faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
import logging
import random
import zlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

from drivers.modbus_queue.config import RegisterMap
from gateway.clock import Clock
from simulators.ff68_pad import PadBus, SimPad
from simulators.kiosk_http import KioskAgent
from simulators.led_text import LedController, SimScreen
from simulators.modbus_queue import DayScript, QueueController, QueueEngine, run_day
from simulators.zk_push import SimClock

log = logging.getLogger(__name__)

Work = tuple[str, Coroutine[Any, Any, None]]

QUEUE_SERVICES: Final = 4  # ticket kinds the simulated queue controller issues
PADS_PER_BUS: Final = 30  # a 9600-baud bus sweeps 30 pads in well under a second
V1_MAX_WINDOWS: Final = 90  # devices.md §3: windows from 100, services from 1000, 10 a window
BIG_HALL_WINDOWS_BASE: Final = 2000
# when outings and absences of the simulated day happen (each ± 25 min)
OUTING_HOURS: Final = (
    "09:40",
    "10:15",
    "11:00",
    "14:10",
    "15:00",
    "16:10",
)
SURNAMES: Final = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘"
GIVEN_NAMES: Final = "伟芳娜敏静丽强磊军洋勇艳杰涛明超秀霞平刚桂英华玉兰萍红建文辉力"
DEPARTMENTS: Final = (
    "市场监管局",
    "税务局",
    "公安局",
    "人社局",
    "不动产登记中心",
    "医保局",
    "公积金中心",
    "民政局",
)
# the demo's pace when no day is played: lively enough to watch, calm enough to read
RANDOM_PAD_EVENTS_PER_MIN: Final = 3.0
RANDOM_PUNCHES_PER_MIN: Final = 4.0
RANDOM_KIOSK_CHANGES_PER_MIN: Final = 1.0
RANDOM_QUEUE_ROUND_S: Final = 3.0


@dataclass(frozen=True)
class HallShape:
    windows: int = 24
    floors: int = 2
    clocks: int = 2
    kiosks: int = 4
    leds: int = 2
    services: int = 4
    site: str = "sim"
    name: str = "模拟政务服务中心"


def staff_name(number: int) -> str:
    return SURNAMES[number % len(SURNAMES)] + GIVEN_NAMES[(number * 7) % len(GIVEN_NAMES)]


def shape_config(shape: HallShape) -> dict[str, Any]:
    """The config of a hall of `shape` (addresses of simulated devices are filled in later)."""
    windows, staff, devices, buses = [], [], [], []
    per_floor = -(-shape.windows // shape.floors)
    for index in range(shape.windows):
        number = index + 1
        floor = index // per_floor + 1
        department = DEPARTMENTS[(index // 4) % len(DEPARTMENTS)]
        window_id = f"w{number:03d}"
        windows.append(
            {
                "id": window_id,
                "name": f"{number}号窗口",
                "department": department,
                "floor": floor,
                "queue_window": number,
            }
        )
        for post, offset in (("A", 0), ("B", 1)):
            person = 2 * index + offset + 1
            staff.append(
                {
                    "id": f"s{person:04d}",
                    "name": staff_name(person),
                    "department": department,
                    "window": window_id,
                    "post": post,
                    "card": f"{person:010d}",
                    "pin": str(10000 + person),
                    "queue_no": person,
                }
            )
    for floor in range(1, shape.floors + 1):
        on_floor = [w for w in windows if w["floor"] == floor]
        for part in range(0, len(on_floor), PADS_PER_BUS):
            bus_id = f"pads-{floor}f-{part // PADS_PER_BUS + 1}"
            buses.append(
                {
                    "id": bus_id,
                    "url": f"/dev/serial/by-id/sim-{bus_id}",
                    "baudrate": 9600,
                    "timeout_ms": 100,
                    "retries": 1,
                }
            )
            for address, window in enumerate(on_floor[part : part + PADS_PER_BUS], start=1):
                devices.append(
                    {
                        "id": f"pad-{window['id']}",
                        "profile": "ff68_pad",
                        "bus": bus_id,
                        "address": address,
                        "window": window["id"],
                    }
                )
    devices += [
        {"id": f"clock-{n}", "profile": "zk_push", "serial_number": f"CKSIM{n:05d}", "delay_s": 10}
        for n in range(1, shape.clocks + 1)
    ]
    queue: dict[str, Any] = {
        "id": "queue-main",
        "profile": "modbus_queue",
        "transport": "tcp",
        "host": "127.0.0.1",
        "port": 502,
        "unit": 1,
        "poll_s": 1.0,
    }
    if shape.windows > V1_MAX_WINDOWS:
        # map v1 has room for 90 windows before its services; a bigger hall's controller keeps
        # its windows further up: another register map, in config like any vendor's
        queue["register_map"] = {
            "windows": {"base": BIG_HALL_WINDOWS_BASE, "max_count": shape.windows}
        }
    devices.append(queue)
    devices += [
        {
            "id": f"kiosk-{n:02d}",
            "profile": "kiosk_http",
            "base_url": "http://127.0.0.1:8090",
            "poll_s": 15,
            "hours": "always" if n <= (shape.kiosks + 1) // 2 else "service",
        }
        for n in range(1, shape.kiosks + 1)
    ]
    devices += [
        {
            "id": f"led-{n}",
            "profile": "led_text",
            "transport": "tcp",
            "host": "127.0.0.1",
            "port": 5200,
            "address": 1,
        }
        for n in range(1, shape.leds + 1)
    ]
    return {
        "site": shape.site,
        "name": shape.name,
        "timezone": "Asia/Shanghai",
        "mqtt": {"host": "127.0.0.1", "port": 1883},
        "http": {
            "bind": "127.0.0.1",
            "port": 8080,
            "device_port": 8081,
            "token_env": "HALLGW_API_TOKEN",
        },
        "store": {"path": "/var/lib/hallgw/sim.db"},
        "buses": buses,
        "devices": devices,
        "timetables": {
            "standard": {
                "periods": [{"start": "09:00", "end": "12:00"}, {"start": "13:30", "end": "17:30"}],
                "breaks": [{"start": "10:30", "end": "10:50"}, {"start": "15:30", "end": "15:50"}],
            }
        },
        "calendar": {
            "holidays": ["2026-10-01", "2026-10-02", "2027-01-01"],
            "workdays": ["2026-09-27", "2026-10-10"],
        },
        "windows": windows,
        "staff": staff,
    }


@dataclass
class SimulatedHall:
    """Simulators for every device of a hall config; `start` points the config at them."""

    data: dict[str, Any]
    state: Path
    time_source: Callable[[], dt.datetime] | None = None  # aware hall time for the clocks
    pad_buses: dict[str, PadBus] = field(default_factory=dict)
    pads: dict[str, SimPad] = field(default_factory=dict)  # by window id
    clocks: dict[str, SimClock] = field(default_factory=dict)
    queue: tuple[QueueEngine, QueueController, DayScript] | None = None
    kiosks: dict[str, KioskAgent] = field(default_factory=dict)
    leds: dict[str, LedController] = field(default_factory=dict)
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def start(self) -> None:
        """Open every simulated device; the config now names their real addresses."""
        await self._stack.__aenter__()
        devices = self.data.get("devices", [])
        device_url = f"http://127.0.0.1:{self.data['http']['device_port']}"
        for bus in self.data.get("buses", []):
            members = [
                d for d in devices if d.get("bus") == bus["id"] and d["profile"] == "ff68_pad"
            ]
            simulator = PadBus(
                [SimPad(d["address"]) for d in members], baudrate=bus.get("baudrate", 9600)
            )
            bus["url"] = await simulator.open_pty(self.state / bus["id"])
            self._stack.push_async_callback(simulator.close)
            self.pad_buses[bus["id"]] = simulator
            for device in members:
                self.pads[device["window"]] = simulator.pad(device["address"])
        for device in devices:
            profile = device["profile"]
            if profile == "zk_push":
                # the clocks may start before the gateway listens: retry soon, not after 30 s
                clock = SimClock(device["serial_number"], device_url, error_delay_s=2.0)
                if self.time_source is not None:
                    clock.time_source = self._utc  # the hall's (scaled) time, not the machine's
                self.clocks[device["id"]] = clock
            elif profile == "modbus_queue":
                await self._start_queue(device)
            elif profile == "kiosk_http":
                agent = KioskAgent(device["id"].upper())
                await agent.start()
                self._stack.push_async_callback(agent.crash)
                device["base_url"] = agent.base_url
                self.kiosks[device["id"]] = agent
            elif profile == "led_text":
                controller = LedController([SimScreen(device.get("address", 1))])
                device["port"] = await controller.open_tcp()
                self._stack.push_async_callback(controller.close)
                self.leds[device["id"]] = controller

    async def close(self) -> None:
        await self._stack.aclose()

    def clock_runs(self) -> list[Work]:
        """The punch clocks' own loops (handshake, uploads, heartbeats)."""
        return [(f"sim-{device_id}", clock.run()) for device_id, clock in self.clocks.items()]

    def kiosk_runs(self) -> list[Work]:
        """Kiosks' peripherals change now and then (paper runs low, a reader goes offline)."""
        return [
            (f"sim-{device_id}", agent.run_random(changes_per_min=RANDOM_KIOSK_CHANGES_PER_MIN))
            for device_id, agent in self.kiosks.items()
        ]

    def random_runs(self) -> list[Work]:
        """Random behaviour of every device, for a demo that plays no scripted day."""
        runs: list[Work] = []
        cards = {
            p["window"]: p["card"]
            for p in self.data.get("staff", [])
            if p.get("post", "A") == "A" and p.get("card") and p.get("window")
        }
        pins = [p["pin"] for p in self.data.get("staff", []) if p.get("pin")]
        for bus_id, simulator in self.pad_buses.items():
            members = [
                d
                for d in self.data["devices"]
                if d.get("bus") == bus_id and d["profile"] == "ff68_pad"
            ]
            logins = {d["address"]: cards[d["window"]] for d in members if d["window"] in cards}
            keys = {d["address"]: sorted(d["key_map"]) for d in members if "key_map" in d}
            runs.append(
                (
                    f"sim-{bus_id}",
                    simulator.run_random(
                        events_per_pad_per_min=RANDOM_PAD_EVENTS_PER_MIN, cards=logins, keys=keys
                    ),
                )
            )
        for device_id, clock in self.clocks.items():
            runs.append(
                (
                    f"sim-{device_id}-punches",
                    clock.run_random(pins, punches_per_min=RANDOM_PUNCHES_PER_MIN),
                )
            )
        if self.queue is not None:
            runs.append(("sim-queue", run_day(self.queue[2], RANDOM_QUEUE_ROUND_S)))
        for device_id, agent in self.kiosks.items():
            runs.append(
                (f"sim-{device_id}", agent.run_random(changes_per_min=RANDOM_KIOSK_CHANGES_PER_MIN))
            )
        return runs

    async def _start_queue(self, device: dict[str, Any]) -> None:
        windows = [w for w in self.data.get("windows", []) if w.get("queue_window")]
        engine = QueueEngine(
            max((w["queue_window"] for w in windows), default=1),
            QUEUE_SERVICES,
            register_map=RegisterMap.model_validate(device.get("register_map", {})),
        )
        staff = {
            window["queue_window"]: person["queue_no"]
            for window in windows
            for person in self.data.get("staff", [])
            if person.get("window") == window["id"]
            and person.get("post", "A") == "A"
            and person.get("queue_no")
        }
        controller = QueueController(engine, unit=device.get("unit", 1))
        device["port"] = await controller.serve_tcp()
        self._stack.push_async_callback(controller.stop)
        self.queue = (engine, controller, DayScript(engine, tickets=None, seed=None, staff=staff))

    def _utc(self) -> dt.datetime:
        assert self.time_source is not None
        return self.time_source().astimezone(dt.UTC)


Action = Callable[[], Coroutine[Any, Any, None]]


@dataclass(order=True)
class _Due:
    at: dt.datetime
    order: float
    name: str = field(compare=False)
    action: Action = field(compare=False)


class HallDay:
    """A working day of the hall, on hall time. Outings go through the gateway's API."""

    def __init__(
        self,
        hall: SimulatedHall,
        clock: Clock,
        *,
        api: str,
        token: str,
        seed: int = 1,
        queue_round_s: float = 20.0,
    ) -> None:
        self.hall = hall
        self.clock = clock
        self.api = api.rstrip("/")
        self.token = token
        self.queue_round_s = queue_round_s
        self.log: list[tuple[dt.datetime, str]] = []  # what the day did, for tests and reports
        self._rng = random.Random(seed)
        self._agenda: list[_Due] = []
        self._order = 0
        staff = hall.data.get("staff", [])
        self._by_window: dict[str, dict[str, dict[str, Any]]] = {}
        for person in staff:
            if person.get("window"):
                self._by_window.setdefault(person["window"], {})[person.get("post", "A")] = person
        self._clock_ids = list(hall.clocks)

    async def run(self, day: dt.date | None = None) -> None:
        """Play `day` (default: hall today) from now until its end, then return."""
        day = day or self.clock.now().date()
        self._plan(day)
        queue = asyncio.create_task(self._queue_rounds(day), name="hall-day-queue")
        try:
            while self._agenda:
                due = self._agenda[0]
                wait = (due.at - self.clock.now()).total_seconds()
                if wait > 0:
                    await asyncio.sleep(min(wait / self._speed(), 1.0))
                    continue
                heapq.heappop(self._agenda)
                self.log.append((self.clock.now(), due.name))
                try:
                    await due.action()
                except (aiohttp.ClientError, TimeoutError) as err:
                    log.warning("hall day: %s failed: %s", due.name, err)
        finally:
            queue.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await queue

    def _speed(self) -> float:
        return float(getattr(self.clock, "speed", 1.0))

    def _at(self, day: dt.date, hhmm: str, jitter_min: float = 0.0) -> dt.datetime:
        base = dt.datetime.combine(day, dt.time.fromisoformat(hhmm), tzinfo=self.clock.zone)
        return base + dt.timedelta(minutes=self._rng.uniform(-jitter_min, jitter_min))

    def _do(self, at: dt.datetime, name: str, action: Action, *, catch_up: bool = False) -> None:
        """Plan `action` at `at`. A day joined late plays what makes the hall's state (punches,
        logins, logouts: `catch_up`) at once, in their order, and skips the rest."""
        now = self.clock.now()
        if at < now:
            if catch_up:
                heapq.heappush(self._agenda, _Due(now, at.timestamp(), name, action))
            return
        self._order += 1
        heapq.heappush(self._agenda, _Due(at, self._order, name, action))

    def _plan(self, day: dt.date) -> None:
        windows = list(self._by_window)
        for window_id, posts in self._by_window.items():
            pad = self.hall.pads.get(window_id)
            for post, person in posts.items():
                late = self._rng.random() < 0.05
                arrive = self._at(day, "09:12" if late else "08:50", 8.0)
                self._punch_at(arrive, person, 0, f"{person['id']} punches in")
                self._punch_at(
                    self._at(day, "12:01", 1.0), person, 1, f"{person['id']} punches out"
                )
                self._punch_at(self._at(day, "13:22", 5.0), person, 0, f"{person['id']} punches in")
                leave = self._at(day, "17:25" if self._rng.random() < 0.05 else "17:33", 2.0)
                self._punch_at(leave, person, 1, f"{person['id']} punches out")
                if post == "A" and pad is not None:
                    self._do(
                        arrive + dt.timedelta(minutes=3),
                        f"{person['id']} logs in",
                        self._pad(pad.login, person["card"]),
                        catch_up=True,
                    )
                    self._do(
                        self._at(day, "12:00", 0.5),
                        f"{person['id']} logs out",
                        self._pad(pad.logout),
                        catch_up=True,
                    )
                    self._do(
                        self._at(day, "13:28", 1.0),
                        f"{person['id']} logs in",
                        self._pad(pad.login, person["card"]),
                        catch_up=True,
                    )
                    self._do(
                        self._at(day, "17:30", 0.5),
                        f"{person['id']} logs out",
                        self._pad(pad.logout),
                        catch_up=True,
                    )
                    if self._rng.random() < 0.3:  # a short pause at the morning break
                        self._do(
                            self._at(day, "10:35", 3.0), f"{window_id} pauses", self._pad(pad.pause)
                        )
                        self._do(
                            self._at(day, "10:45", 2.0),
                            f"{window_id} resumes",
                            self._pad(pad.resume),
                        )
        # a quarter of the windows see an outing, an eighth an absence nobody registered
        chosen = self._rng.sample(windows, min(len(windows), max(2, len(windows) // 4)))
        for window_id in chosen:
            self._plan_outing(day, window_id, self._at(day, self._rng.choice(OUTING_HOURS), 25))
        others = [w for w in windows if w not in chosen]
        for window_id in self._rng.sample(others, min(len(others), max(1, len(windows) // 8))):
            self._plan_absence(day, window_id)
        self._plan_faults(day)

    def _plan_absence(self, day: dt.date, window_id: str) -> None:
        """The A leaves the pad without registering and comes back later: off-post, and the
        window unattended while nobody covers it."""
        person, pad = self._by_window[window_id].get("A"), self.hall.pads.get(window_id)
        if person is None or pad is None:
            return
        leaves = self._at(day, self._rng.choice(OUTING_HOURS), 25)
        back = leaves + dt.timedelta(minutes=self._rng.uniform(12, 25))
        self._do(leaves, f"{person['id']} leaves the window unregistered", self._pad(pad.logout))
        self._do(
            back, f"{person['id']} is back at the window", self._pad(pad.login, person["card"])
        )

    def _plan_outing(self, day: dt.date, window_id: str, start: dt.datetime) -> None:
        posts = self._by_window[window_id]
        person, cover = posts.get("A"), posts.get("B")
        if person is None:
            return
        minutes = self._rng.choice([15, 25, 40])
        reason = self._rng.choice(["official", "private"])
        body: dict[str, Any] = {
            "staff_id": person["id"],
            "reason": reason,
            "expected_minutes": minutes,
        }
        if reason == "private" and minutes > 20:
            body["approved_by"] = "督查科"
        pad = self.hall.pads.get(window_id)
        self._do(start, f"{person['id']} goes out", self._outing(body))
        if pad is not None and cover is not None:
            self._do(
                start + dt.timedelta(minutes=1),
                f"{cover['id']} covers {window_id}",
                self._pad(pad.login, cover["card"]),
            )
            back = start + dt.timedelta(minutes=minutes + self._rng.uniform(-5, 8))
            self._do(back, f"{person['id']} is back", self._pad(pad.login, person["card"]))

    def _plan_faults(self, day: dt.date) -> None:
        if self.hall.kiosks:
            agent = self._rng.choice(list(self.hall.kiosks.values()))
            self._do(
                self._at(day, "10:10", 10),
                f"{agent.kiosk_id} printer out of paper",
                self._set(agent.peripherals, "printer", "paper_out"),
            )
            self._do(
                self._at(day, "11:00", 10),
                f"{agent.kiosk_id} printer refilled",
                self._set(agent.peripherals, "printer", "ok"),
            )
        if self.hall.pads:
            pad = self._rng.choice(list(self.hall.pads.values()))
            self._do(
                self._at(day, "14:00", 10),
                f"pad {pad.address} goes silent",
                self._attr(pad, "silent", value=True),
            )
            self._do(
                self._at(day, "14:20", 5),
                f"pad {pad.address} answers again",
                self._attr(pad, "silent", value=False),
            )
        if self.hall.leds:
            screen = next(iter(next(iter(self.hall.leds.values())).screens.values()))
            self._do(
                self._at(day, "15:00", 5),
                "an LED module fails",
                self._attr(screen, "fault_bits", value=1),
            )
            self._do(
                self._at(day, "15:15", 5),
                "the LED module is replaced",
                self._attr(screen, "fault_bits", value=0),
            )

    async def _queue_rounds(self, day: dt.date) -> None:
        """The queue in working time: a round every `queue_round_s` of hall time, and a rating
        at the window's pad for most finished tickets."""
        if self.hall.queue is None:
            return
        engine, _controller, script = self.hall.queue
        windows = {
            w["queue_window"]: w["id"]
            for w in self.hall.data.get("windows", [])
            if w.get("queue_window")
        }
        seen = len(engine.truth)
        while True:
            await asyncio.sleep(self.queue_round_s / self._speed())
            now = self.clock.now()
            if now.date() != day or not (
                dt.time(9) <= now.time() < dt.time(12)
                or dt.time(13, 30) <= now.time() < dt.time(17, 30)
            ):
                continue
            script.round()
            for truth in engine.truth[seen:]:
                pad = self.hall.pads.get(windows.get(truth.window, ""))
                if truth.action == "finished" and pad is not None and self._rng.random() < 0.7:
                    pad.press(self._rng.choices([1, 2, 3, 4, 5], weights=[70, 20, 6, 3, 1])[0])
            seen = len(engine.truth)

    def _punch_at(self, at: dt.datetime, person: dict[str, Any], status: int, name: str) -> None:
        self._do(at, name, self._punch(person, status, at), catch_up=True)

    def _punch(self, person: dict[str, Any], status: int, at: dt.datetime) -> Action:
        stamp = at.astimezone(self.clock.zone).replace(tzinfo=None)  # the clock's local time

        async def act() -> None:
            if not self.hall.clocks:
                return
            # everyone has a usual clock (a stable choice: hash() differs from run to run)
            usual = zlib.crc32(person["id"].encode()) % len(self._clock_ids)
            clock = self.hall.clocks[self._clock_ids[usual]]
            clock.punch(person["pin"], at=stamp, status=status, verify=self._rng.choice([1, 1, 15]))

        return act

    def _pad(self, do: Callable[..., object], *args: Any) -> Action:
        async def act() -> None:
            do(*args)

        return act

    def _set(self, target: dict[str, Any], key: str, value: Any) -> Action:
        async def act() -> None:
            target[key] = value

        return act

    def _attr(self, target: object, name: str, *, value: Any) -> Action:
        async def act() -> None:
            setattr(target, name, value)

        return act

    def _outing(self, body: dict[str, Any]) -> Action:
        async def act() -> None:
            headers = {"Authorization": f"Bearer {self.token}"}
            async with (
                asyncio.timeout(10),
                aiohttp.ClientSession() as session,
                session.post(f"{self.api}/api/v1/outings", json=body, headers=headers) as resp,
            ):
                if resp.status not in (201, 404, 409):
                    log.warning("outing %s answered %d", body, resp.status)

        return act
