"""A 300-window hall (300 pads on 10 buses, 2 clocks, 1 queue controller, 20 kiosks, 6 LED
screens): the gateway's CPU and RSS at idle and under the day's peak.

- Idle: a working day at 10:00, every device online, nobody doing anything; the gateway polls.
  Baseline: a bare poller (bench/bare_poller.py) polling the same 300 pads at the same cadence
  over the same ptys, in the same run: the cost of the wire conversation alone.
- RSS. Baseline: a Python process that has imported what the gateway imports, doing nothing.
- Peak: the morning rush (08:40-09:20: 600 staff punch in, log in, the queue opens, ratings
  begin) played at 10x, so ten times a real hall's peak rate.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Final

from bench.common import Figure
from bench.hall_run import HallRun, cpu_seconds, rss_bytes, working_day
from simulators.hall import HallDay, HallShape

SHAPE: Final = HallShape(windows=300, floors=10, clocks=2, kiosks=20, leds=6)
WARM_UP_S: Final = 20.0
IDLE_S: Final = 60.0
PEAK_SPEED: Final = 10.0
PEAK_S: Final = 240.0  # 08:40-09:20 of hall time at 10x
IMPORTS: Final = (
    "import gateway.app, gateway.presence_service, drivers.zk_push.driver, "
    "drivers.modbus_queue.driver, drivers.kiosk_http.driver, drivers.led_text.driver"
)
IDLE_GOAL_PERCENT: Final = 3.0
RSS_GOAL_MB: Final = 150.0


async def cpu_percent(pid: int, seconds: float) -> float:
    before, started = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - started)


async def runtime_floor_rss() -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", f"{IMPORTS}; import time; time.sleep(30)"
    )
    await asyncio.sleep(8)
    rss = rss_bytes(process.pid)
    process.kill()
    await process.wait()
    return rss


async def idle() -> tuple[float, float, int]:
    """(gateway CPU %, bare poller CPU %, gateway RSS) at idle."""
    async with HallRun(SHAPE, start=working_day(10)) as run:
        await run.devices_online(within_s=120)
        await asyncio.sleep(WARM_UP_S)
        gateway = await cpu_percent(run.pid, IDLE_S)
        rss = rss_bytes(run.pid)
        assert run.gateway is not None
        run.gateway.terminate()
        await run.gateway.wait()
        assert run.hall is not None
        buses = [
            f"{bus['url']}:{sum(1 for d in run.data['devices'] if d.get('bus') == bus['id'])}"
            for bus in run.data["buses"]
        ]
        interval = run.data["buses"][0].get("sweep_interval_ms", 1000) / 1000
        bare = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.bare_poller", str(interval), *buses
        )
        await asyncio.sleep(WARM_UP_S / 2)
        baseline = await cpu_percent(bare.pid, IDLE_S)
        bare.terminate()
        await bare.wait()
    return gateway, baseline, rss


async def peak() -> tuple[float, int]:
    """(gateway CPU %, max RSS) during the morning rush at PEAK_SPEED."""
    async with HallRun(SHAPE, start=working_day(8, 40), speed=PEAK_SPEED) as run:
        assert run.hall is not None
        assert run.clock is not None
        day = HallDay(run.hall, run.clock, api=run.api, token="bench-token")
        run.spawn("hall-day", day.run())
        samples, rss = [], 0
        for _ in range(int(PEAK_S // 10)):
            samples.append(await cpu_percent(run.pid, 10))
            rss = max(rss, rss_bytes(run.pid))
    return statistics.fmean(samples), rss


async def run() -> list[Figure]:
    gateway, bare, rss = await idle()
    floor = await runtime_floor_rss()
    peak_cpu, peak_rss = await peak()
    mb = 1024 * 1024
    return [
        Figure(
            "300-window hall idle: gateway CPU",
            gateway,
            "% of a core",
            "bare poller, same pads",
            bare,
            goal=f"< {IDLE_GOAL_PERCENT:g}%",
            met=gateway < IDLE_GOAL_PERCENT,
        ),
        Figure(
            "300-window hall idle: gateway RSS",
            rss / mb,
            "MB",
            "Python with the same imports",
            floor / mb,
            goal=f"< {RSS_GOAL_MB:g} MB",
            met=rss / mb < RSS_GOAL_MB,
        ),
        Figure(
            "300-window hall peak (08:40-09:20 at 10x): CPU",
            peak_cpu,
            "% of a core",
            "the same hall idle",
            gateway,
        ),
        Figure(
            "300-window hall peak: max RSS",
            peak_rss / mb,
            "MB",
            "the same hall idle",
            rss / mb,
            goal=f"< {RSS_GOAL_MB:g} MB",
            met=peak_rss / mb < RSS_GOAL_MB,
        ),
    ]
