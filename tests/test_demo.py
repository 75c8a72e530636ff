"""`hallgw demo` end to end: it starts a hall, prints where to look, and stops cleanly."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp

from tests.support.harness import REPO
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import Recorder


async def stop(process: asyncio.subprocess.Process) -> None:
    """A demo a failing test leaves running is stopped: with Ctrl-C, then for good."""
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        async with asyncio.timeout(20):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()


async def test_the_demo_runs_a_hall_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
    env.pop("HALLGW_API_TOKEN", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "demo",
        "--http-port",
        "0",
        # a working Monday, mid-morning: the day is caught up (arrivals, logins) and under way
        "--start",
        "2026-11-23T09:10",
        "--speed",
        "20",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        banner = ""
        async with asyncio.timeout(60):
            while "Ctrl-C" not in banner:
                line = await process.stdout.readline()
                assert line, f"the demo ended early: {(await process.stderr.read()).decode()}"
                banner += line.decode()
        board = re.search(r"board: +(http://127\.0\.0\.1:\d+)/board", banner)
        watch = re.search(r"mosquitto_sub -h 127\.0\.0\.1 -p (\d+) -t '([^']+)'", banner)
        assert board is not None, banner
        assert watch is not None, banner
        assert "API token (for writes): " in banner

        async with aiohttp.ClientSession() as session:
            async with session.get(board.group(1) + "/api/v1/devices") as resp:
                devices = await resp.json()
            async with session.get(board.group(1) + "/board") as resp:
                assert resp.status == 200
                assert "示范政务服务中心" in await resp.text()
        assert {d["kind"] for d in devices} == {
            "rating_pad",
            "punch_clock",
            "queue",
            "kiosk",
            "display",
        }
        async with Recorder(int(watch.group(1)), [watch.group(2)]) as mqtt:
            await mqtt.wait_for(lambda: mqtt.events("rating"), timeout=60, what="a demo rating")
            await mqtt.wait_for(lambda: mqtt.events("punch"), timeout=60, what="a demo punch")
            await mqtt.wait_for(lambda: mqtt.events("queue"), timeout=60, what="a demo call")
            # every device is heard from (a kiosk watched only in service hours may be off_hours)
            await mqtt.wait_for(
                lambda: all(
                    (mqtt.last(f"{d['device_id']}/availability") or {}).get("state") == "online"
                    or (mqtt.last(f"{d['device_id']}/availability") or {}).get("reason")
                    == "off_hours"
                    for d in devices
                ),
                timeout=30,
                what="every demo device heard from",
            )

            board = await mqtt.wait_for(
                lambda: (
                    (mqtt.last("board") or {}).get("counts", {}).get("on_post", 0) > 0
                    and mqtt.last("board")
                ),
                timeout=30,
                what="staff on post on the board",
            )
            assert board["counts"]["windows_total"] == 8

        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            code = await process.wait()
        errors = (await process.stderr.read()).decode()
        assert code == 0, errors
        assert "Traceback" not in errors
        left = await asyncio.to_thread(lambda: list(tmp_path.glob("hallgw-demo-*")))
        assert not left, "the demo leaves nothing behind"
    finally:
        await stop(process)


async def test_the_demo_uses_a_broker_it_is_given(tmp_path: Path, broker: Mosquitto) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
    async with Recorder(broker.port, ["hall/demo/gateway/state"]) as mqtt:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "demo",
            "--http-port",
            "0",
            "--mqtt",
            f"127.0.0.1:{broker.port}",
            "--start",
            "2026-11-23T10:00",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=REPO,
        )
        try:
            online = await mqtt.wait_for(lambda: mqtt.last("gateway/state"), timeout=60)
            assert online["state"] == "online"
            private = await asyncio.to_thread(
                lambda: list(tmp_path.glob("hallgw-demo-*/mosquitto"))
            )
            assert not private, "no broker of its own when one is given"
            process.send_signal(signal.SIGINT)
            async with asyncio.timeout(20):
                assert await process.wait() == 0
        finally:
            await stop(process)
