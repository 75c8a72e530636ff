"""`python -m bench.soak`: 24 simulated hours of a generated hall against the gateway process.

A 60-window hall on 2 floors (every device simulated on real transports, `simulators.hall`),
its gateway as a `hallgw run` child process on a hall clock running `--speed` times faster, and
the hall's working days played (`HallDay`: arrivals, logins, the queue and ratings, breaks,
outings, lunch, departures, faults), then its night. Meanwhile the gateway's RSS, open file
descriptors and CPU time are sampled. At the end, when every device has handed over what it
holds, the outbox must be empty and every fact the journal published must have reached a
persistent MQTT subscriber exactly once by `event_id`.

Prints a short report and writes `bench/results/soak.json`. Not part of CI: at the default speed
it takes about 12 minutes.

    python -m bench.soak [--windows 60] [--floors 2] [--speed 120] [--hours 24]
                         [--start 2026-11-23T06:00] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import aiohttp
import aiomqtt
import yaml

from bench.common import RESULTS, Figure, machine, table
from gateway.clock import ScaledClock
from gateway.config import parse_config
from gateway.demo import gateway_command, stop_process, wait_healthy
from gateway.worktime import WorkCalendar
from simulators.broker import Mosquitto, free_port
from simulators.hall import HallDay, HallShape, SimulatedHall, shape_config

ZONE: Final = ZoneInfo("Asia/Shanghai")
# a working Monday, before the hall opens: the day is played from its first arrival
DEFAULT_START: Final = "2026-11-23T06:00"
SAMPLE_EVERY_S: Final = 5.0  # real seconds between two samples of the gateway process
# the first simulated hour is the warm-up (caches, the first day's sessions); slopes and the
# "flat" figures are measured from its end
WARM_UP_HALL_S: Final = 3600.0
# how long the end may take: every device hands over what it holds, the outbox drains
SETTLE_S: Final = 180.0
START_S: Final = 60.0
# "flat": the end is within this ratio of the value after the warm-up
FLAT_RATIO: Final = 1.10
FD_SLACK: Final = 8  # connections come and go (kiosk polls, clocks, HTTP): a few either way
TOKEN_ENV: Final = "HALLGW_SOAK_TOKEN"


@dataclass
class Sample:
    real_s: float
    hall: str
    hall_s: float  # simulated seconds since the start
    rss_bytes: int
    fds: int
    cpu_s: float
    outbox: float | None


@dataclass
class Witness:
    """A persistent MQTT session on the hall's events: every copy of every event, by id."""

    port: int
    root: str
    copies: collections.Counter[str] = field(default_factory=collections.Counter)
    kinds: dict[str, str] = field(default_factory=dict)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.port, identifier="soak-witness", clean_session=False
                ) as client:
                    await client.subscribe(f"{self.root}/events/#", qos=1)
                    self.subscribed.set()
                    async for message in client.messages:
                        if not isinstance(message.payload, bytes) or not message.payload:
                            continue
                        event = json.loads(message.payload)
                        self.copies[event["event_id"]] += 1
                        self.kinds[event["event_id"]] = event["kind"]
            except aiomqtt.MqttError:
                await asyncio.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--windows", type=int, default=60)
    parser.add_argument("--floors", type=int, default=2)
    parser.add_argument("--speed", type=float, default=120.0, help="hall time x real time")
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours")
    parser.add_argument("--start", default=DEFAULT_START, help="hall time to start at")
    parser.add_argument("--keep", action="store_true", help="keep the state directory")
    args = parser.parse_args()
    report = asyncio.run(soak(args))
    print(f"machine: {machine()}")
    print(report["summary"])
    print(table([Figure(**f) for f in report["figures"]]))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "soak.json"
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"written: {path}")
    return 0 if report["passed"] else 1


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="hallgw-soak-"))
    os.environ.setdefault(TOKEN_ENV, "soak-token")
    try:
        return await _soak(args, state)
    finally:
        if args.keep:
            print(f"state kept in {state}", file=sys.stderr)
        else:
            shutil.rmtree(state, ignore_errors=True)


async def _soak(args: argparse.Namespace, state: Path) -> dict[str, Any]:
    shape = HallShape(windows=args.windows, floors=args.floors)
    start = dt.datetime.fromisoformat(args.start).replace(tzinfo=ZONE)
    end = start + dt.timedelta(hours=args.hours)
    async with contextlib.AsyncExitStack() as stack:
        broker = Mosquitto(state / "mosquitto")
        await broker.start()
        stack.push_async_callback(broker.stop)
        data = shape_config(shape)
        data["mqtt"]["port"] = broker.port
        data["http"] = {
            "bind": "127.0.0.1",
            "port": free_port(),
            "device_port": free_port(),
            "token_env": TOKEN_ENV,
        }
        data["store"] = {"path": str(state / "hallgw.db")}
        clock = ScaledClock(start, args.speed)
        hall = SimulatedHall(data, state, time_source=clock.now)
        stack.push_async_callback(hall.close)
        await hall.start()
        config_path = state / "hall.yaml"
        config_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        root = f"hall/{data['site']}"

        witness = Witness(broker.port, root)
        witness_task = asyncio.create_task(witness.run(), name="soak-witness")
        stack.push_async_callback(_cancel, [witness_task])
        async with asyncio.timeout(10):
            await witness.subscribed.wait()

        log = (state / "gateway.log").open("ab")
        stack.callback(log.close)
        gateway = await asyncio.create_subprocess_exec(
            *gateway_command(config_path, clock),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        stack.push_async_callback(stop_process, gateway)
        base = f"http://127.0.0.1:{data['http']['port']}"
        await wait_healthy(f"{base}/healthz", gateway, within_s=START_S)
        print(
            f"soak: {shape.windows} windows, {args.hours:g} h of hall time from"
            f" {start:%Y-%m-%d %H:%M} at {args.speed:g}x"
            f" (about {args.hours * 3600 / args.speed / 60:.0f} min)",
            file=sys.stderr,
            flush=True,
        )
        began = time.monotonic()
        samples: list[Sample] = []
        work = [*hall.clock_runs(), *hall.kiosk_runs()]
        tasks = [asyncio.create_task(w, name=name) for name, w in work]
        tasks.append(asyncio.create_task(_days(hall, clock, data, base, end), name="soak-days"))
        tasks.append(
            asyncio.create_task(
                _sample(gateway.pid, base, clock, start=start, began=began, into=samples),
                name="soak-sampler",
            )
        )
        try:
            await asyncio.sleep(max(0.0, (end - clock.now()).total_seconds()) / args.speed)
        finally:
            await _cancel(tasks)
        hall_run_s = time.monotonic() - began
        samples.append(await _one_sample(gateway.pid, base, clock, start=start, began=began))

        # the end: what the devices still hold is handed over, the outbox drains
        settled = await _settle(hall, base, state / "hallgw.db", witness)
        journal = _published(state / "hallgw.db")
        outbox_rows = _outbox_rows(state / "hallgw.db")
        last = await _one_sample(gateway.pid, base, clock, start=start, began=began)
        samples.append(last)
        code = await stop_process(gateway)
    return _report(
        args,
        shape,
        samples,
        End(journal, witness, outbox_rows, settled, code, hall_run_s),
    )


async def _days(
    hall: SimulatedHall, clock: ScaledClock, data: dict[str, Any], base: str, end: dt.datetime
) -> None:
    """Working days played one after the other until `end`; days off and nights pass."""
    calendar = WorkCalendar(parse_config(yaml.safe_dump(data, allow_unicode=True)))
    token = os.environ[TOKEN_ENV]
    played = 0
    while clock.now() < end:
        today = clock.now().date()
        if calendar.is_working_day(today):
            played += 1
            await HallDay(hall, clock, api=base, token=token, seed=played).run(today)
        tomorrow = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(6), tzinfo=ZONE)
        await asyncio.sleep(
            max(0.0, (min(tomorrow, end) - clock.now()).total_seconds()) / clock.speed
        )


async def _sample(
    pid: int, base: str, clock: ScaledClock, *, start: dt.datetime, began: float, into: list[Sample]
) -> None:
    while True:
        into.append(await _one_sample(pid, base, clock, start=start, began=began))
        await asyncio.sleep(SAMPLE_EVERY_S)


async def _one_sample(
    pid: int, base: str, clock: ScaledClock, *, start: dt.datetime, began: float
) -> Sample:
    rss, fds, cpu_s = _process_stats(pid)
    now = clock.now()
    return Sample(
        real_s=round(time.monotonic() - began, 2),
        hall=now.isoformat(timespec="seconds"),
        hall_s=round((now - start).total_seconds(), 1),
        rss_bytes=rss,
        fds=fds,
        cpu_s=cpu_s,
        outbox=await _metric(base, "hallgw_outbox_messages"),
    )


def _process_stats(pid: int) -> tuple[int, int, float]:
    """The process's resident memory (bytes), open file descriptors and CPU seconds so far."""
    proc = Path(f"/proc/{pid}")
    status = (proc / "status").read_text()
    rss_kib = next(
        int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")
    )
    fds = sum(1 for _ in (proc / "fd").iterdir())
    fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return rss_kib * 1024, fds, cpu_s


async def _metric(base: str, name: str) -> float | None:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{base}/metrics", timeout=aiohttp.ClientTimeout(total=10)) as resp,
        ):
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None


async def _settle(hall: SimulatedHall, base: str, db: Path, witness: Witness) -> dict[str, float]:
    """Wait (bounded) until the devices hold nothing, the outbox is empty and the witness has
    every published fact; how long each took."""
    took: dict[str, float] = {}
    began = time.monotonic()
    deadline = began + SETTLE_S

    async def until(name: str, done: Any) -> None:
        while time.monotonic() < deadline:
            if await done():
                took[name] = round(time.monotonic() - began, 1)
                return
            await asyncio.sleep(0.5)
        took[name] = float("nan")

    async def devices_empty() -> bool:
        return all(not p.queue for p in hall.pads.values()) and all(
            not c.pending for c in hall.clocks.values()
        )

    async def outbox_empty() -> bool:
        return await _metric(base, "hallgw_outbox_messages") == 0

    async def witnessed() -> bool:
        return set(_published(db)) <= set(witness.copies)

    await until("devices", devices_empty)
    await until("outbox", outbox_empty)
    await until("witness", witnessed)
    return took


def _published(db: Path) -> dict[str, str]:
    """event_id → kind of every fact the journal published."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT event_id, kind FROM journal WHERE published = 1").fetchall()
    finally:
        conn.close()
    return dict(rows)


def _outbox_rows(db: Path) -> int:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    finally:
        conn.close()


def _slope_per_hall_hour(samples: list[Sample], value: str) -> float:
    """Least-squares slope of `value` per simulated hour, after the warm-up."""
    points = [(s.hall_s / 3600, float(getattr(s, value))) for s in samples]
    if len(points) < 3:
        return float("nan")
    xs, ys = zip(*points, strict=True)
    return statistics.linear_regression(xs, ys).slope


@dataclass(frozen=True)
class End:
    """How the soak ended."""

    journal: dict[str, str]  # published facts: event_id → kind
    witness: Witness
    outbox_rows: int
    settled: dict[str, float]
    exit_code: int
    hall_run_s: float


def _report(
    args: argparse.Namespace, shape: HallShape, samples: list[Sample], end: End
) -> dict[str, Any]:
    journal, witness, outbox_rows = end.journal, end.witness, end.outbox_rows
    settled, exit_code, hall_run_s = end.settled, end.exit_code, end.hall_run_s
    steady = [s for s in samples if s.hall_s >= WARM_UP_HALL_S] or samples
    first, after_warm_up, last = samples[0], steady[0], samples[-1]
    mib = 1024 * 1024
    rss_max = max(s.rss_bytes for s in samples)
    fds_max = max(s.fds for s in samples)
    rss_slope = _slope_per_hall_hour(steady, "rss_bytes") / mib
    fd_slope = _slope_per_hall_hour(steady, "fds")
    published = set(journal)
    received = set(witness.copies)
    missing = sorted(published - received)
    duplicates = {e: n for e, n in witness.copies.items() if n > 1}
    unexpected = sorted(received - published)
    cpu_s = last.cpu_s - first.cpu_s
    real_s = last.real_s - first.real_s
    figures = [
        Figure(
            "gateway RSS at the end",
            last.rss_bytes / mib,
            "MiB",
            "after the warm-up",
            after_warm_up.rss_bytes / mib,
            goal=f"ratio <= {FLAT_RATIO}",
            met=last.rss_bytes <= after_warm_up.rss_bytes * FLAT_RATIO,
        ),
        Figure(
            "gateway open fds at the end",
            last.fds,
            "fds",
            "after the warm-up",
            after_warm_up.fds,
            goal=f"at most {FD_SLACK} more",
            met=last.fds <= after_warm_up.fds + FD_SLACK,
        ),
        Figure(
            "outbox rows at the end",
            outbox_rows,
            "rows",
            "none",
            0,
            goal="0",
            met=outbox_rows == 0,
        ),
        Figure(
            "published facts received more than once",
            len(duplicates),
            "facts",
            "facts published",
            len(published),
            goal="0",
            met=not duplicates,
        ),
        Figure(
            "published facts never received",
            len(missing),
            "facts",
            "facts published",
            len(published),
            goal="0",
            met=not missing,
        ),
    ]
    passed = all(f.met for f in figures) and not unexpected and exit_code == 0
    kinds = collections.Counter(journal.values())
    summary = "\n".join(
        [
            f"soak: {shape.windows} windows on {shape.floors} floors, {args.hours:g} simulated h"
            f" at {args.speed:g}x: {hall_run_s / 60:.1f} min real"
            f" ({(last.real_s) / 60:.1f} min with the end)",
            f"  RSS MiB   first {first.rss_bytes / mib:.1f}  after warm-up"
            f" {after_warm_up.rss_bytes / mib:.1f}  last {last.rss_bytes / mib:.1f}"
            f"  max {rss_max / mib:.1f}  slope {rss_slope:+.3f} MiB/simulated h",
            f"  open fds  first {first.fds}  after warm-up {after_warm_up.fds}  last {last.fds}"
            f"  max {fds_max}  slope {fd_slope:+.3f} /simulated h",
            f"  CPU       {cpu_s:.0f} s over {real_s:.0f} s: {100 * cpu_s / max(real_s, 1):.1f}%"
            " of one core on average",
            f"  facts     {len(published)} published ({dict(sorted(kinds.items()))});"
            f" received {sum(witness.copies.values())} copies of {len(received)}",
            f"  exactly once: missing {len(missing)}, duplicates {len(duplicates)},"
            f" not in the journal {len(unexpected)}; outbox at the end {outbox_rows} rows",
            f"  the end settled in {settled}; gateway exit status {exit_code}",
            f"  verdict: {'PASS' if passed else 'FAIL'}",
        ]
    )
    return {
        "machine": machine(),
        "passed": passed,
        "summary": summary,
        "windows": shape.windows,
        "floors": shape.floors,
        "speed": args.speed,
        "hall_hours": args.hours,
        "start": args.start,
        "real_minutes": round(last.real_s / 60, 2),
        "rss_mib": {
            "first": first.rss_bytes / mib,
            "after_warm_up": after_warm_up.rss_bytes / mib,
            "last": last.rss_bytes / mib,
            "max": rss_max / mib,
            "slope_per_hall_hour": rss_slope,
        },
        "fds": {
            "first": first.fds,
            "after_warm_up": after_warm_up.fds,
            "last": last.fds,
            "max": fds_max,
            "slope_per_hall_hour": fd_slope,
        },
        "cpu_percent_of_one_core": 100 * cpu_s / max(real_s, 1),
        "facts_published": len(published),
        "facts_by_kind": dict(kinds),
        "copies_received": sum(witness.copies.values()),
        "missing": missing[:100],
        "duplicates": dict(list(duplicates.items())[:100]),
        "not_in_journal": unexpected[:100],
        "outbox_rows_at_end": outbox_rows,
        "settled_s": settled,
        "gateway_exit": exit_code,
        "figures": [asdict(f) for f in figures],
        "samples": [asdict(s) for s in samples],
    }


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    sys.exit(main())
