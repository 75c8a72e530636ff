"""Punch clock uploads: records per second accepted (HTTP in, committed, `OK` out) with 20
clocks each pushing batches of 100 records, beside a baseline measured in the same run: a bare
aiohttp server that answers `OK: n` without parsing or storing anything.

Both servers run as child processes; the clocks run here and behave like firmware: one upload
at a time, the next only after the `OK`. The gateway runs with its real store (SQLite, WAL,
synchronous=FULL), attendance engine and, when Mosquitto is installed, a real broker draining
the outbox. Prints both rates and their ratio, and writes bench/results/zk_push.json.

    .venv/bin/python -m bench.zk_push [--clocks 20] [--batch 100] [--batches 25] [--no-mqtt]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import aiohttp
import yaml
from aiohttp import web

from bench.common import Figure
from drivers.zk_push import codec
from drivers.zk_push.codec import AttRecord
from simulators.broker import Mosquitto, find_program, free_port

REPO: Final = Path(__file__).resolve().parents[1]
RESULTS: Final = REPO / "bench" / "results" / "zk_push.json"
ZONE: Final = ZoneInfo("Asia/Shanghai")
STAFF: Final = 50
# a server that is not up this long after its start has failed
START_TIMEOUT_S: Final = 30.0
# the baseline is fast enough to run several times; its median is reported
BASELINE_RUNS: Final = 5
# one upload; firmware gives up after about this long
REQUEST_TIMEOUT_S: Final = 30.0


def hall_config(directory: Path, clocks: int, mqtt_port: int) -> dict[str, Any]:
    return {
        "site": "bench",
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port},
        "http": {"port": free_port(), "device_port": free_port(), "token_env": "HALLGW_BENCH"},
        "store": {"path": str(directory / "hallgw.db")},
        "devices": [
            {"id": f"clock-{n:02d}", "profile": "zk_push", "serial_number": f"BENCH{n:04d}"}
            for n in range(clocks)
        ],
        "timetables": {
            "standard": {
                "periods": [{"start": "09:00", "end": "12:00"}, {"start": "13:30", "end": "17:30"}]
            }
        },
        "staff": [
            {"id": f"s{n:03d}", "name": f"员工{n}", "pin": str(1000 + n)}
            for n in range(1, STAFF + 1)
        ],
    }


def bodies(sn_index: int, batches: int, batch: int, base: dt.datetime) -> list[bytes]:
    """Unique records: each clock's PIN and second differ from every other record."""
    result = []
    for b in range(batches):
        records = []
        for r in range(batch):
            n = b * batch + r
            stamp = base + dt.timedelta(seconds=n)
            records.append(AttRecord(str(1001 + (n + sn_index) % STAFF), stamp, 0, 1, "0"))
        result.append(codec.att_body(records).encode())
    return result


async def push(
    url: str, clocks: int, batches: int, batch: int, base: dt.datetime, *, warm: bool
) -> float:
    """Every clock uploads its batches one after another; seconds from first send to last OK."""
    work = [bodies(c, batches, batch, base) for c in range(clocks)]
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=clocks)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def clock(index: int) -> None:
            sn = f"BENCH{index:04d}"
            async with session.get(f"{url}/iclock/cdata", params={"SN": sn, "options": "all"}) as r:
                r.raise_for_status()
            for stamp, body in enumerate(work[index]):
                params = {"SN": sn, "table": "ATTLOG", "Stamp": str(stamp)}
                async with session.post(f"{url}/iclock/cdata", params=params, data=body) as r:
                    text = await r.text()
                if r.status != 200 or codec.parse_ok(text) != batch:
                    raise RuntimeError(f"{sn}: upload answered {r.status} {text[:60]!r}")

        if warm:
            await asyncio.gather(*(clock(c) for c in range(clocks)))
            return 0.0
        started = time.perf_counter()
        await asyncio.gather(*(clock(c) for c in range(clocks)))
        return time.perf_counter() - started


async def wait_up(url: str, process: asyncio.subprocess.Process, log: Path) -> None:
    async with asyncio.timeout(START_TIMEOUT_S), aiohttp.ClientSession() as session:
        while True:
            if process.returncode is not None:
                tail = await asyncio.to_thread(log.read_text)
                raise RuntimeError(f"server exited: {tail[-2000:]}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as resp:
                    if resp.status < 500:
                        return
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def child(args: Sequence[str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {**os.environ, "HALLGW_BENCH": "bench-token", "PYTHONPATH": str(REPO)}
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *args, stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
            async with asyncio.timeout(30):
                await process.wait()


def stored_punches(db: Path) -> int:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM journal WHERE kind = 'punch'").fetchone()[0])
    finally:
        conn.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    records = args.clocks * args.batches * args.batch
    base = dt.datetime.now(ZONE).replace(tzinfo=None, microsecond=0) - dt.timedelta(hours=12)
    with tempfile.TemporaryDirectory(prefix="hallgw-bench-") as tmp:
        directory = Path(tmp)
        broker: Mosquitto | None = None
        mqtt_port = free_port()
        if args.mqtt:
            broker = Mosquitto(directory / "mosquitto")
            await broker.start()
            mqtt_port = broker.port
        try:
            data = hall_config(directory, args.clocks, mqtt_port)
            config = directory / "hall.yaml"
            config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
            port = free_port()
            baseline_url = f"http://127.0.0.1:{port}"
            async with child(
                ["-m", "bench.zk_push", "--serve-baseline", str(port)], directory / "b.log"
            ) as p:
                await wait_up(f"{baseline_url}/", p, directory / "b.log")
                await push(baseline_url, args.clocks, 1, args.batch, base, warm=True)
                # a run takes a fraction of a second: the median of several is steadier
                runs = [
                    await push(
                        baseline_url, args.clocks, args.batches, args.batch, base, warm=False
                    )
                    for _ in range(BASELINE_RUNS)
                ]
                baseline_s = statistics.median(runs)
            gateway_url = f"http://127.0.0.1:{data['http']['device_port']}"
            run_args = ["-m", "gateway", "--log-level", "ERROR", "run", "-c", str(config)]
            async with child(run_args, directory / "g.log") as p:
                await wait_up(
                    f"http://127.0.0.1:{data['http']['port']}/healthz", p, directory / "g.log"
                )
                warm_base = base - dt.timedelta(hours=1)
                await push(gateway_url, args.clocks, 1, args.batch, warm_base, warm=True)
                gateway_s = await push(
                    gateway_url, args.clocks, args.batches, args.batch, base, warm=False
                )
            stored = stored_punches(directory / "hallgw.db")
            expected = records + args.clocks * args.batch
            if stored != expected:
                raise RuntimeError(f"{stored} punches in the journal, {expected} acknowledged")
        finally:
            if broker is not None:
                await broker.stop()
    baseline = records / baseline_s
    gateway = records / gateway_s
    return {
        "benchmark": "zk_push",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "clocks": args.clocks,
        "batch": args.batch,
        "batches_per_clock": args.batches,
        "records": records,
        "mqtt_broker": args.mqtt,
        "gateway_records_per_s": round(gateway),
        "baseline_records_per_s": round(baseline),
        "ratio": round(gateway / baseline, 3),
        "gateway_s": round(gateway_s, 3),
        "baseline_s": round(baseline_s, 3),
        "baseline_runs": BASELINE_RUNS,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_1min": round(os.getloadavg()[0], 2),
        },
    }


async def figures() -> list[Figure]:
    """For `python -m bench`: the default run (20 clocks, batches of 100, a broker)."""
    result = await run(argparse.Namespace(clocks=20, batch=100, batches=25, mqtt=True))
    return [
        Figure(
            "punch clocks: records accepted (20 clocks, batches of 100)",
            result["gateway_records_per_s"],
            "records/s",
            "aiohttp answering OK, no storage",
            result["baseline_records_per_s"],
        )
    ]


def serve_baseline(port: int) -> None:
    """aiohttp answering an upload `OK: n` without parsing or storing it."""

    async def cdata_get(_request: web.Request) -> web.Response:
        return web.Response(text="GET OPTION FROM: BENCH\r\n")

    async def cdata_post(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(text=codec.ok(body.count(b"\n")))

    async def root(_request: web.Request) -> web.Response:
        return web.Response(text="up")

    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_get("/", root)
    app.router.add_get("/iclock/cdata", cdata_get)
    app.router.add_post("/iclock/cdata", cdata_post)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clocks", type=int, default=20)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--batches", type=int, default=25, help="batches per clock")
    parser.add_argument("--no-mqtt", dest="mqtt", action="store_false", help="no broker")
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline)
        return
    if args.mqtt:
        try:
            find_program("mosquitto")
        except RuntimeError:
            args.mqtt = False
    result = asyncio.run(run(args))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    gateway, baseline = result["gateway_records_per_s"], result["baseline_records_per_s"]
    print(
        f"zk_push: {result['records']} records from {args.clocks} clocks in batches of"
        f" {args.batch}{' (MQTT broker draining the outbox)' if args.mqtt else ''}\n"
        f"  gateway  (parse, journal, commit, OK): {gateway:>8} records/s\n"
        f"  baseline (aiohttp, OK, no storage):    {baseline:>8} records/s\n"
        f"  ratio gateway/baseline: {result['ratio']:.3f}"
        f"   ({result['machine']['cpus']} CPUs, load {result['machine']['load_1min']})"
    )


if __name__ == "__main__":
    main()
