"""A simulated self-service kiosk's status agent (`kiosk_http`), a real aiohttp server.

Answers `GET /api/v1/status` with the devices.md §5 JSON. Tests (or the random mode) change its
state and peripherals; fault modes: crash (the agent is gone: connection refused), HTTP errors,
slow answers, garbage bodies. It can also push its status to the gateway.

    python -m simulators.kiosk_http --port 8090 --random 2
    python -m simulators.kiosk_http --port 8090 --push http://127.0.0.1:8081/ingest/kiosk/kiosk-01 \
        --token-env HALLGW_KIOSK_TOKEN
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import random
import time
from typing import Any, Final
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web

log = logging.getLogger(__name__)

ZONE: Final = ZoneInfo("Asia/Shanghai")
PERIPHERALS: Final = ("printer", "id_reader", "card_reader", "scanner", "camera", "touch")
# a push that gets no answer this fast is given up (the gateway's device listener is local)
PUSH_TIMEOUT_S: Final = 5.0
# a crash waits this long for answers in progress (a slow one is woken up at once)
CRASH_GRACE_S: Final = 1.0
# the random mode: how a printer runs out of paper, and everything else fails now and then
_PRINTER_STEPS: Final = {
    "ok": "paper_low",
    "paper_low": "paper_out",
    "paper_out": "ok",
    "jam": "ok",
}


class KioskAgent:
    """One kiosk's agent. Mutate `state`, `peripherals` and the fault fields freely."""

    def __init__(self, kiosk_id: str = "K01", *, app_version: str = "3.2.1") -> None:
        self.kiosk_id = kiosk_id
        self.app_version = app_version
        self.state = "ready"
        self.peripherals: dict[str, Any] = dict.fromkeys(PERIPHERALS, "ok")
        self.slow_s = 0.0  # answer this late
        self.http_status = 200  # answer with this status (500: the agent is crashing)
        self.garbage: bytes | None = None  # answer this instead of the status
        self.requests = 0
        self.port: int | None = None
        self._host = "127.0.0.1"
        self._started = time.monotonic()
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()

    def status(self) -> dict[str, Any]:
        return {
            "kiosk_id": self.kiosk_id,
            "state": self.state,
            "uptime_s": int(time.monotonic() - self._started),
            "app_version": self.app_version,
            "ts": dt.datetime.now(ZONE).isoformat(timespec="seconds"),
            "peripherals": dict(self.peripherals),
        }

    @property
    def base_url(self) -> str:
        assert self.port is not None, "start the agent first"
        return f"http://{self._host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int | None = None) -> int:
        """Serve (again, on the same port after a crash, unless told another)."""
        self._host = host
        app = web.Application()
        app.router.add_get("/api/v1/status", self._status)
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=CRASH_GRACE_S
        )
        await runner.setup()
        site = web.TCPSite(
            runner, host, port if port is not None else self.port or 0, reuse_address=True
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._stopping = asyncio.Event()
        self._started = time.monotonic()
        address = runner.addresses[0]
        self.port = int(address[1])
        return self.port

    async def crash(self) -> None:
        """The agent is gone (crashed, kiosk switched off): connections are refused."""
        if self._runner is not None:
            self._stopping.set()
            await self._runner.cleanup()
            self._runner = None

    async def push(self, url: str, token: str | None, body: bytes | None = None) -> int:
        """POST the status (or `body`) to the gateway; the HTTP status it answered."""
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = body if body is not None else json.dumps(self.status()).encode()
        async with (
            asyncio.timeout(PUSH_TIMEOUT_S),
            aiohttp.ClientSession() as session,
            session.post(url, data=data, headers=headers) as response,
        ):
            await response.read()
            return response.status

    async def run_random(self, *, changes_per_min: float) -> None:
        """Peripherals change over time: the printer runs out of paper, now and then a jam."""
        rate = changes_per_min / 60.0
        while True:
            await asyncio.sleep(random.expovariate(rate) if rate > 0 else 3600)
            roll = random.random()
            if roll < 0.6:
                self.peripherals["printer"] = _PRINTER_STEPS.get(self.peripherals["printer"], "ok")
            elif roll < 0.7:
                self.peripherals["printer"] = "jam"
            elif roll < 0.9:
                name = random.choice(PERIPHERALS[1:])
                self.peripherals[name] = "offline" if self.peripherals[name] == "ok" else "ok"
            else:
                self.state = random.choice(["ready", "busy", "ready", "maintenance"])
            log.info("%s: %s %s", self.kiosk_id, self.state, self.peripherals)

    async def _status(self, _request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.slow_s:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.slow_s):
                    await self._stopping.wait()
        if self.garbage is not None:
            return web.Response(body=self.garbage, content_type="application/json")
        if self.http_status != 200:
            return web.Response(status=self.http_status, text="<html>internal error</html>")
        return web.json_response(self.status())


async def _main(args: argparse.Namespace) -> None:
    agent = KioskAgent(args.kiosk_id)
    port = await agent.start(args.host, args.port)
    print(f"kiosk agent {args.kiosk_id} on http://{args.host}:{port}", flush=True)  # noqa: T201
    token = os.environ.get(args.token_env) if args.token_env else None
    tasks: set[asyncio.Task[None]] = set()
    try:
        if args.random > 0:
            tasks.add(asyncio.create_task(agent.run_random(changes_per_min=args.random)))
        while True:
            await asyncio.sleep(args.push_every)
            if args.push:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    log.info("push: HTTP %d", await agent.push(args.push, token))
    finally:
        for task in tasks:
            task.cancel()
        await agent.crash()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kiosk-id", default="K01")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--random", type=float, default=0.0, help="changes per minute")
    parser.add_argument("--push", help="the gateway's /ingest/kiosk/{device_id} URL")
    parser.add_argument("--push-every", type=float, default=15.0, help="seconds between pushes")
    parser.add_argument("--token-env", help="environment variable holding the kiosk's token")
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
