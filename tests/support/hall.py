"""A whole simulated hall under test, for fault injection: a Mosquitto, every device of a
generated hall simulated on real transports (`simulators.hall`), the gateway as a child process
on a hall clock (or in this process, on a clock the test may step), a witness with a persistent
session on everything the gateway publishes, steady load on every kind of device, and the checks
each fault case ends with.

What "no acknowledged fact is lost" means here, device by device:
- a rating pad: every event the pad got an ACK for (`SimPad.acked`) is in the journal, in the
  pad's order, exactly once (a repeat after a lost ACK is one fact);
- a punch clock: every record an upload of which was answered `OK` (`SimClock.acknowledged`) is
  in the journal under its id (SN, PIN, time), published;
- the queue controller: every ticket finished at a window (its served-today register) is one
  `finished` event: nothing the gateway read is lost, nothing is counted twice;
- a kiosk: each peripheral's events form one chain (each `from` is the previous `to`) ending in
  the agent's state;
and on MQTT every published journal row arrives at least once with the journal's own payload,
every event that arrives is in the journal, and one event_id never names two different facts.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import aiohttp

from drivers.ff68_pad.codec import Command, PadReport
from gateway.app import Gateway
from gateway.clock import Clock, ScaledClock
from gateway.config import load_config
from gateway.ids import stable_id
from simulators.hall import HallShape, SimulatedHall, shape_config
from tests.support import polling
from tests.support.harness import (
    API_TOKEN,
    GatewayProcess,
    RunningGateway,
    api_secrets,
    running_gateway,
    scrape,
    write_config,
)
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.mqtt import Recorder
from tests.support.polling import until

ZONE: Final = ZoneInfo("Asia/Shanghai")
# a working Monday, mid-morning: every kiosk is watched, the queue is open
HALL_START: Final = dt.datetime(2026, 11, 23, 10, 0, tzinfo=ZONE)
SHAPE: Final = HallShape(windows=24, floors=2, clocks=2, kiosks=4, leds=2)
SITE: Final = SHAPE.site
ROOT: Final = f"hall/{SITE}"
# the pads' default five-key map (devices.md §2)
KEY_LEVELS: Final = {1: 5, 2: 4, 3: 3, 4: 2, 5: 1}
PAD_ACTIONS: Final = {
    Command.LOGIN: "login",
    Command.LOGOUT: "logout",
    Command.PAUSE: "pause",
    Command.RESUME: "resume",
    Command.FAULT: "fault",
}
# kinds of fact a device reports (other kinds, such as alerts, need not be journaled)
DEVICE_KINDS: Final = frozenset({"rating", "pad", "punch", "queue", "kiosk"})
# what the witness subscribes to: everything the gateway publishes (not the commands it gets)
WITNESSED: Final = (
    "gateway/#",
    "devices/#",
    "events/#",
    "windows/#",
    "staff/#",
    "board",
    "alerts/#",
    "cmd/reply/#",
)
# how long the slow parts may take on a busy 2-core machine: a gateway (re)start, the broker's
# reconnect backoff (up to 30 s), a whole hall settling
START_S: Final = 30.0
SETTLE_S: Final = 60.0
PUNCH_CLOCK_DELAY_S: Final = 2  # a clock heard from every 2 s is offline after 6 s of silence


def rig_config(state: Path, broker_port: int, store: Path) -> dict[str, Any]:
    """The generated hall's config, with devices that show a fault within seconds."""
    data = shape_config(SHAPE)
    data["mqtt"].update(port=broker_port, keepalive_s=5)
    data["http"] = {
        "bind": "127.0.0.1",
        "port": free_port(),
        "device_port": free_port(),
        "token_env": "HALLGW_TEST_TOKEN",
    }
    data["store"] = {"path": str(store)}
    data["alerts"] = {"flap_window_s": 0}  # an alert resolves as soon as its cause is gone
    for device in data["devices"]:
        if device["profile"] == "kiosk_http":
            device["poll_s"] = 1
        elif device["profile"] == "led_text":
            device["status_poll_s"] = 1
        elif device["profile"] == "zk_push":
            device["delay_s"] = PUNCH_CLOCK_DELAY_S
    state.mkdir(parents=True, exist_ok=True)
    return data


@dataclass(frozen=True)
class JournalRow:
    seq: int
    event_id: str
    kind: str
    device_id: str | None
    published: bool
    flags: str
    payload: dict[str, Any]


def read_journal(db: Path) -> list[JournalRow]:
    """Every fact in the store, in the order it was learned (read-only; the gateway may run)."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT seq, event_id, kind, device_id, published, flags, payload"
            " FROM journal ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    result = []
    for seq, event_id, kind, device_id, published, flags, payload in rows:
        try:
            body = json.loads(payload)
        except ValueError:
            body = {"raw": payload}
        result.append(JournalRow(seq, event_id, kind, device_id, bool(published), flags, body))
    return result


def outbox_depth(db: Path) -> int:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    finally:
        conn.close()


class EventIndex:
    """The witness's events by event_id, indexed as they arrive (cheap to refresh)."""

    def __init__(self, witness: Recorder) -> None:
        self.witness = witness
        self.by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.count = 0
        self._seen = 0

    def refresh(self) -> EventIndex:
        messages = self.witness.messages
        for message in messages[self._seen :]:
            if "/events/" in message.topic and message.payload:
                event = json.loads(message.payload)
                self.by_id[event["event_id"]].append(event)
                self.count += 1
        self._seen = len(messages)
        return self

    def of(self, kind: str, device_id: str | None = None) -> list[dict[str, Any]]:
        """The first copy of every event of `kind` (from `device_id`), in arrival order."""
        self.refresh()
        return [
            copies[0]
            for copies in self.by_id.values()
            if copies[0]["kind"] == kind
            and (device_id is None or copies[0].get("device_id") == device_id)
        ]


def pad_fact(report: PadReport) -> tuple[str, object]:
    """What the journal holds for a pad's event: ("rating", level) or ("pad", action)."""
    if report.command is Command.KEY:
        assert report.key is not None
        return ("rating", KEY_LEVELS[report.key])
    return ("pad", PAD_ACTIONS[report.command])


def journal_pad_fact(row: JournalRow) -> tuple[str, object]:
    if row.kind == "rating":
        return ("rating", row.payload["level"])
    return ("pad", row.payload["action"])


@dataclass
class Load:
    """Steady work for every kind of device, every `every_s`: ratings and now and then a login,
    logout, pause or resume at random pads; a punch at a clock; a queue round each second; now
    and then a kiosk's peripheral changing. Seeded: a failure names its seed."""

    sim: SimulatedHall
    seed: int
    every_s: float = 0.25
    pads_per_step: int = 3
    steps: int = 0
    paused_pads: set[str] = field(default_factory=set)  # windows whose pads get no new events
    _rng: random.Random = field(init=False)
    _pins: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._pins = [p["pin"] for p in self.sim.data["staff"]]

    async def run(self) -> None:
        while True:
            self.step()
            await asyncio.sleep(self.every_s)

    def step(self) -> None:
        rng = self._rng
        self.steps += 1
        windows = [w for w in sorted(self.sim.pads) if w not in self.paused_pads]
        for window in rng.sample(windows, min(self.pads_per_step, len(windows))):
            pad = self.sim.pads[window]
            roll = rng.random()
            if roll < 0.85:
                pad.press(rng.randint(1, 5))
            elif roll < 0.9:
                pad.login(self._card(window))
            elif roll < 0.94:
                pad.logout()
            elif roll < 0.97:
                pad.pause()
            else:
                pad.resume()
        if self.steps % 2 == 0 and self.sim.clocks:
            # every PIN in turn, the clocks alternating: no (clock, PIN, second) twice
            pin = self._pins[(self.steps // 2) % len(self._pins)]
            clocks = list(self.sim.clocks.values())
            clocks[(self.steps // 2) % len(clocks)].punch(pin, verify=rng.choice([1, 15]))
        if self.steps % 4 == 0 and self.sim.queue is not None:
            self.sim.queue[2].round()
        if self.steps % 20 == 0 and self.sim.kiosks:
            agent = rng.choice(list(self.sim.kiosks.values()))
            name = rng.choice(["printer", "id_reader", "scanner"])
            agent.peripherals[name] = rng.choice(["ok", "paper_low", "offline", "error"])

    def _card(self, window: str) -> str:
        posts = [p for p in self.sim.data["staff"] if p.get("window") == window]
        return str(self._rng.choice(posts)["card"])


@dataclass
class Hall:
    """The hall and its gateway; see `hall_under_test`."""

    root: Path
    broker: Mosquitto
    data: dict[str, Any]
    sim: SimulatedHall
    clock: ScaledClock  # the devices' time; the gateway's unless it runs in process
    witness: Recorder
    events: EventIndex
    db: Path
    process: GatewayProcess | None = None  # the gateway as a child process,
    running: RunningGateway | None = None  # or in this one (a clock the test steps)
    load: Load | None = None
    _load_task: asyncio.Task[None] | None = None
    _probes: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.data['http']['port']}"

    @property
    def gateway(self) -> GatewayProcess:
        assert self.process is not None, "the gateway runs in this process"
        return self.process

    @property
    def log(self) -> Path:
        return self.gateway.log_path

    # -- the gateway ----------------------------------------------------------------------------

    async def start_gateway(self) -> None:
        await self.gateway.start()
        await self.gateway.wait_healthy(self.data["http"]["port"], timeout=START_S)

    async def kill_gateway(self) -> None:
        self.gateway.kill()
        code = await self.gateway.wait()
        assert code == -9, f"the gateway exited with {code} before the kill"

    async def get(self, path: str) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.base_url + path, timeout=aiohttp.ClientTimeout(total=10)) as resp,
        ):
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.base_url + path,
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp,
        ):
            return resp.status, await resp.json()

    async def metric(self, name: str, **labels: str) -> float:
        samples = await scrape(self.base_url)
        return sum(
            value
            for (sample, sample_labels), value in samples.items()
            if sample == name and set(labels.items()) <= set(sample_labels)
        )

    async def devices(self) -> dict[str, dict[str, Any]]:
        status, devices = await self.get("/api/v1/devices")
        assert status == 200, devices
        return {d["device_id"]: d for d in devices}

    async def wait_online(self, timeout: float = SETTLE_S, what: str = "every device") -> None:
        """Until the gateway says every device is online."""
        last: dict[str, dict[str, Any]] = {}

        async def check() -> bool:
            nonlocal last
            last = await self.devices()
            return all(d["state"] == "online" for d in last.values())

        await self.until_async(check, timeout, lambda: f"{what} online; offline: {offline(last)}")

    async def until_async(
        self, condition: Callable[[], Any], timeout: float, what: Callable[[], str]
    ) -> None:
        """Poll an async `condition` every 0.2 s until it holds (a scrape or an HTTP request
        is the only way to ask the gateway process)."""
        await polling.until_async(condition, what, timeout, every_s=0.2)

    # -- load -----------------------------------------------------------------------------------

    def start_load(self, seed: int, **options: Any) -> Load:
        self.load = Load(self.sim, seed, **options)
        self._load_task = asyncio.create_task(self.load.run(), name="hall-load")
        return self.load

    async def stop_load(self) -> None:
        if self._load_task is not None:
            self._load_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._load_task
            self._load_task = None

    # -- the checks -----------------------------------------------------------------------------

    async def settle(self, timeout: float = SETTLE_S) -> list[JournalRow]:
        """Load stopped: wait until every device has handed over what it holds, the gateway has
        read the queue controller's last state, the outbox is empty and the witness has every
        published fact; then return the journal."""
        await until(
            lambda: all(not p.queue for p in self.sim.pads.values()),
            "every pad's events acknowledged",
            timeout,
        )
        await until(
            lambda: all(not c.pending for c in self.sim.clocks.values()),
            "every clock's records acknowledged",
            timeout,
        )

        async def queue_read() -> bool:
            assert self.sim.queue is not None
            values = (await self.devices())["queue-main"]["values"]
            served = {w["queue_window"]: w["served_today"] for w in values["windows"].values()}
            return all(served.get(w.number) == w.served for w in self.sim.queue[0].windows)

        await self.until_async(queue_read, timeout, lambda: "the queue controller's last state")

        async def drained() -> bool:
            return await self.metric("hallgw_outbox_messages") == 0

        await self.until_async(drained, timeout, lambda: "the outbox drained")
        journal: list[JournalRow] = []

        async def witnessed() -> bool:
            nonlocal journal
            journal = await asyncio.to_thread(read_journal, self.db)
            self.events.refresh()
            return all(r.event_id in self.events.by_id for r in journal if r.published)

        def missing() -> str:
            gone = [r for r in journal if r.published and r.event_id not in self.events.by_id]
            return f"every published fact on MQTT; {len(gone)} missing, first {gone[:3]}"

        await self.until_async(witnessed, timeout, missing)
        return journal

    def check_acknowledged_stored(self, journal: list[JournalRow], *, exact: bool) -> None:
        """Every acknowledged pad event and clock record is in the journal. `exact` (all is
        quiet): nothing else either. Else a device may hold one stored but unacknowledged
        event (the gateway died between commit and ACK), never more."""
        pad_rows: dict[str, list[tuple[str, object]]] = defaultdict(list)
        for row in journal:
            if row.kind in ("rating", "pad") and row.device_id is not None:
                pad_rows[row.device_id].append(journal_pad_fact(row))
        for window, pad in self.sim.pads.items():
            device_id = f"pad-{window}"
            acked = [pad_fact(report) for report in pad.acked]
            stored = pad_rows.get(device_id, [])
            assert stored[: len(acked)] == acked, (
                f"{device_id}: the journal {stored} does not begin with the {len(acked)} "
                f"events the pad was acknowledged for {acked}"
            )
            extra = len(stored) - len(acked)
            assert extra == 0 if exact else extra in (0, 1), (
                f"{device_id}: {extra} stored facts beyond what the pad was acknowledged for"
            )
        punches: dict[str, set[str]] = defaultdict(set)
        for row in journal:
            if row.kind == "punch" and row.device_id is not None:
                punches[row.device_id].add(row.event_id)
        published = {r.event_id for r in journal if r.published}
        for device_id, clock in self.sim.clocks.items():
            acked_ids = {
                stable_id(SITE, clock.sn, record.pin, record.stamp) for record in clock.acknowledged
            }
            lost = acked_ids - punches[device_id]
            assert not lost, f"{device_id}: {len(lost)} records answered OK are not in the journal"
            assert acked_ids <= published, f"{device_id}: acknowledged records not published"
            if exact:
                assert punches[device_id] == acked_ids, (
                    f"{device_id}: the journal holds punches the clock never sent"
                )

    def check_queue(self, journal: list[JournalRow]) -> None:
        """Every ticket finished at a window is one `finished` event (served today, counted by
        the controller, against the events in the journal)."""
        assert self.sim.queue is not None
        engine = self.sim.queue[0]
        finished: Counter[str] = Counter(
            r.payload["window_id"]
            for r in journal
            if r.kind == "queue" and r.payload["action"] == "finished"
        )
        windows = {w["queue_window"]: w["id"] for w in self.data["windows"]}
        wrong = {
            windows[w.number]: (w.served, finished[windows[w.number]])
            for w in engine.windows
            if w.served != finished[windows[w.number]]
        }
        assert not wrong, f"tickets served vs finished events, by window: {wrong}"

    def check_kiosks(self, journal: list[JournalRow]) -> None:
        """Each peripheral's events chain without a gap or a repeat, to the agent's state."""
        chains: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for row in journal:
            if row.kind == "kiosk" and row.device_id is not None:
                chains[row.device_id, row.payload["peripheral"]].append(row.payload)
        for (device_id, peripheral), chain in chains.items():
            for before, after in itertools.pairwise(chain):
                assert before["to"] == after["from"], (
                    f"{device_id} {peripheral}: {before['to']} then from {after['from']}"
                )
            agent = self.sim.kiosks[device_id]
            assert chain[-1]["to"] == agent.peripherals[peripheral], (
                f"{device_id} {peripheral}: last event to {chain[-1]['to']}, "
                f"agent {agent.peripherals[peripheral]}"
            )

    def check_mqtt(self, journal: list[JournalRow]) -> None:
        """Each published fact arrived with the journal's payload; nothing arrived that the
        journal lacks; an event_id never names two different facts."""
        self.events.refresh()
        for event_id, copies in self.events.by_id.items():
            assert all(c == copies[0] for c in copies), (
                f"event_id {event_id} names different facts: {copies}"
            )
        rows = {r.event_id: r for r in journal}
        for row in journal:
            if row.published:
                assert self.events.by_id[row.event_id][0] == row.payload, (
                    f"{row.event_id}: MQTT {self.events.by_id[row.event_id][0]} vs journal "
                    f"{row.payload}"
                )
        for event_id, copies in self.events.by_id.items():
            if copies[0]["kind"] in DEVICE_KINDS:
                assert event_id in rows, f"{copies[0]} arrived but is not in the journal"

    async def check_nothing_lost(self) -> list[JournalRow]:
        """Load stopped: settle, then every check of the module's docstring."""
        journal = await self.settle()
        self.check_acknowledged_stored(journal, exact=True)
        self.check_queue(journal)
        self.check_kiosks(journal)
        self.check_mqtt(journal)
        return journal

    async def check_recovered(self, pid: int | None = None) -> None:
        """The same gateway process (if `pid`), healthy, connected, every device online, and
        fresh facts from every pad bus and every clock reach MQTT."""
        if self.running is not None:
            assert not self.running.task.done(), "the gateway stopped"
        else:
            if pid is not None:
                assert self.gateway.pid == pid, "the gateway was restarted"
            assert self.gateway.process is not None
            assert self.gateway.process.returncode is None, "the gateway is not running"
        status, body = await self.get("/healthz")
        assert status == 200, body

        async def connected() -> bool:
            return await self.metric("hallgw_mqtt_connected") == 1

        await self.until_async(connected, START_S + SETTLE_S, lambda: "the broker connection")
        await self.wait_online()
        self.events.refresh()
        before = {e for e, c in self.events.by_id.items() if c[0]["kind"] in ("rating", "punch")}
        probes: list[str] = []
        for bus in self.sim.pad_buses.values():
            pad = next(iter(bus.pads.values()))
            pad.press(1)
            probes.append(next(w for w, p in self.sim.pads.items() if p is pad))
        for clock in self.sim.clocks.values():
            self._probes += 1
            clock.punch(f"9{self._probes:04d}", verify=1)  # a PIN of no one: a new fact

        def fresh() -> bool:
            new = [
                c[0]
                for e, c in self.events.refresh().by_id.items()
                if e not in before and c[0]["kind"] in ("rating", "punch")
            ]
            devices = {e["device_id"] for e in new}
            return {f"pad-{w}" for w in probes} | set(self.sim.clocks) <= devices

        await until(fresh, "a fresh fact from every pad bus and every clock", SETTLE_S)

    def check_log(self) -> None:
        text = self.log.read_text(errors="replace")
        assert "Traceback" not in text, text[text.index("Traceback") - 2000 :][:6000]


def offline(devices: dict[str, dict[str, Any]]) -> list[str]:
    return [f"{k}:{v['reason']}" for k, v in devices.items() if v["state"] != "online"]


@contextlib.asynccontextmanager
async def hall_under_test(
    tmp_path: Path,
    *,
    persistence: bool = False,
    store_dir: Path | None = None,
    in_process_clock: Clock | None = None,
) -> AsyncIterator[Hall]:
    """The hall, its devices and the gateway running, every device online; torn down after.

    The gateway is a `hallgw run` child process on the hall clock, unless `in_process_clock`:
    then it runs in this process on that clock (which a test may step)."""
    clock = ScaledClock(HALL_START, 1.0)
    async with contextlib.AsyncExitStack() as stack:
        broker = Mosquitto(tmp_path / "mosquitto", persistence=persistence)
        await broker.start()
        stack.push_async_callback(broker.stop)
        state = tmp_path / "devices"
        db = (store_dir or tmp_path) / "hallgw.db"
        data = rig_config(state, broker.port, db)
        sim = SimulatedHall(data, state, time_source=clock.now)
        stack.push_async_callback(sim.close)
        await sim.start()
        config_path = write_config(tmp_path / "hall.yaml", data)
        witness = await stack.enter_async_context(
            Recorder(
                broker.port,
                [f"{ROOT}/{topic}" for topic in WITNESSED],
                persistent_id=f"witness-{os.getpid()}-{id(sim)}",
            )
        )
        hall = Hall(tmp_path, broker, data, sim, clock, witness, EventIndex(witness), db)
        if in_process_clock is None:
            args = [
                "--clock-start",
                HALL_START.replace(tzinfo=None).isoformat(timespec="seconds"),
                "--clock-speed",
                "1",
                "--clock-anchor",
                repr(clock.anchor),
            ]
            hall.process = GatewayProcess(config_path, tmp_path / "gateway.log", args)
            stack.push_async_callback(hall.process.stop, signal.SIGKILL)  # if SIGTERM failed
            stack.push_async_callback(hall.process.stop)
            await hall.start_gateway()
        else:
            config = load_config(config_path)
            gateway = Gateway(config, api_secrets(), clock=in_process_clock)
            hall.running = await stack.enter_async_context(running_gateway(config, gateway=gateway))
        tasks = [asyncio.create_task(work, name=name) for name, work in sim.clock_runs()]
        stack.push_async_callback(_cancel, tasks)
        stack.push_async_callback(hall.stop_load)
        await hall.wait_online()
        yield hall


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def mount_tmpfs(path: Path, size: str) -> None:
    """A real small filesystem at `path`, owned by whoever runs the tests: mount needs root, so a
    user who set up with sudo has it mounted through `sudo -n` (the setup's sudo is still
    fresh; without it the test says why it cannot run)."""
    path.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240  # a local tmp dir, instant
    options = f"size={size},mode=0700,uid={os.getuid()},gid={os.getgid()}"
    await _as_root("mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path))


async def unmount(path: Path) -> None:
    with contextlib.suppress(AssertionError):
        await _as_root("umount", str(path))
        return
    await _as_root("umount", "-l", str(path))  # still busy: detach it now, freed when let go


async def _as_root(*command: str) -> None:
    if os.geteuid() == 0:
        await _run(*command)
        return
    try:
        await _run("sudo", "-n", *command)
    except (AssertionError, FileNotFoundError) as err:
        raise AssertionError(
            f"this test mounts a small tmpfs to fill it, which needs root: run the suite as root "
            f"or with sudo's credentials fresh (`sudo -v` first); {err}"
        ) from err


async def _run(*command: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed: {output.decode(errors='replace')}")
