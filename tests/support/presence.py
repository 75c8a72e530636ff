"""A 24-window hall for the presence tests, and inputs driven through the gateway's real bus."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from gateway.clock import FakeClock
from gateway.events import PadEvent, PunchEvent, QueueEvent
from gateway.presence_service import PresenceService
from tests.support.harness import API_TOKEN, RunningGateway
from tests.support.mosquitto import free_port
from tests.support.zk import TIMETABLES

ZONE = ZoneInfo("Asia/Shanghai")
DAY = dt.date(2026, 11, 20)  # a Friday
WINDOWS = 24


def at(time: str, day: dt.date = DAY) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day.isoformat()}T{time}").replace(tzinfo=ZONE)


def a_post(n: int) -> str:
    return f"s{n:03d}"


def b_post(n: int) -> str:
    return f"s{100 + n:03d}"


def presence_hall(
    tmp_path: Path, *, mqtt_port: int, windows: int = WINDOWS, **overrides: Any
) -> dict[str, Any]:
    """`windows` windows on two floors, each with an A and a B post; the standard timetable
    with its breaks and lunch gap; no devices (inputs go through the bus)."""
    half = (windows + 1) // 2
    window_list = [
        {
            "id": f"w{n:02d}",
            "name": f"{n}号窗口",
            "department": "市场监管局" if n <= half else "税务局",
            "floor": 1 if n <= half else 2,
            "queue_window": n,
        }
        for n in range(1, windows + 1)
    ]
    staff = []
    for n in range(1, windows + 1):
        for post, staff_id in (("A", a_post(n)), ("B", b_post(n))):
            number = int(staff_id[1:])
            staff.append(
                {
                    "id": staff_id,
                    "name": f"员工{number:03d}",
                    "window": f"w{n:02d}",
                    "post": post,
                    "card": f"{number:010d}",
                    "pin": str(1000 + number),
                    "queue_no": 100 + number,
                }
            )
    data: dict[str, Any] = {
        "site": "test-hall",
        "name": "测试政务服务中心",
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "keepalive_s": 5},
        "http": {"port": free_port(), "device_port": free_port(), "token_env": "HALLGW_TEST_TOKEN"},
        "store": {"path": str(tmp_path / "hallgw.db")},
        "timetables": {"standard": TIMETABLES["standard"]},
        "windows": window_list,
        "staff": staff,
    }
    data.update(overrides)
    return data


def presence(running: RunningGateway) -> PresenceService:
    service = running.gateway.services[0]
    assert isinstance(service, PresenceService)
    return service


class Inputs:
    """Facts as the drivers would publish them, stamped with the fake clock's time."""

    def __init__(self, service: PresenceService, clock: FakeClock) -> None:
        self.service = service
        self.clock = clock
        self._ids = itertools.count(1)

    def _common(self, device_id: str) -> dict[str, Any]:
        now = self.clock.now()
        return {
            "event_id": f"test-{now:%H%M%S}-{next(self._ids)}",
            "ts": now,
            "received_at": now,
            "device_id": device_id,
        }

    async def punch(self, staff_id: str) -> None:
        number = int(staff_id[1:])
        await self.service.bus.publish(
            PunchEvent(
                **self._common("clock-1"),
                staff_id=staff_id,
                pin=str(1000 + number),
                direction="in",
                verify="fingerprint",
            )
        )

    async def pad(self, window: int, action: str, staff_id: str | None = None) -> None:
        await self.service.bus.publish(
            PadEvent(
                **self._common(f"pad-w{window:02d}"),
                window_id=f"w{window:02d}",
                action=action,
                staff_id=staff_id,
            )
        )

    async def queue(self, window: int, action: str, ticket: str | None = None) -> None:
        await self.service.bus.publish(
            QueueEvent(
                **self._common("queue-main"),
                window_id=f"w{window:02d}",
                action=action,
                ticket=ticket,
                service=1 if ticket else None,
                waiting=0 if ticket else None,
            )
        )

    def caller(
        self, window: int, status: str, staff_id: str | None = None, ticket: str | None = None
    ) -> None:
        """The queue controller's state values for one window, as its driver sets them."""
        self.service.queue_values(
            "queue-main",
            {
                "windows": {
                    f"w{window:02d}": {
                        "queue_window": window,
                        "status": status,
                        "ticket": ticket,
                        "staff_id": staff_id,
                        "staff_no": None,
                        "served_today": 0,
                    }
                }
            },
        )


async def api(
    running: RunningGateway,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = API_TOKEN,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    data: Any = raw if raw is not None else (None if body is None else json.dumps(body))
    if isinstance(data, bytes) and len(data) > 64 * 1024:
        data = io.BytesIO(data)  # aiohttp warns about large raw bodies
    if data is not None:
        headers["Content-Type"] = "application/json"
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, running.base_url + path, data=data, headers=headers) as resp,
    ):
        text = await resp.text()
        return resp.status, json.loads(text) if text else None
