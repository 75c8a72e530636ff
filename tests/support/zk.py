"""Halls with punch clocks, and plain HTTP exchanges with the device listener, for tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from tests.support.mosquitto import free_port

TIMETABLES: dict[str, Any] = {
    "standard": {
        "periods": [{"start": "09:00", "end": "12:00"}, {"start": "13:30", "end": "17:30"}],
        "breaks": [{"start": "10:30", "end": "10:50"}, {"start": "15:30", "end": "15:50"}],
    },
    "early": {
        "periods": [
            {"start": "08:30", "end": "12:00", "clock_in_by": "08:40"},
            {"start": "14:30", "end": "17:30", "clock_in_by": "14:40"},
        ]
    },
}


def clock_hall(
    tmp_path: Path,
    *,
    mqtt_port: int,
    clocks: Sequence[str] = ("CK0001",),
    staff: int = 4,
    delay_s: float = 0.2,
    clock_options: Mapping[str, Any] | None = None,
    site: str = "test-hall",
    **overrides: Any,
) -> dict[str, Any]:
    """A hall with punch clocks `clock-1`… (serial numbers `clocks`) and `staff` people with
    PINs 1001…; odd-numbered people follow the `early` timetable."""
    people = [
        {
            "id": f"s{n:03d}",
            "name": f"员工{n}",
            "department": "市场监管局",
            "pin": str(1000 + n),
            **({"timetable": "early"} if n % 2 else {}),
        }
        for n in range(1, staff + 1)
    ]
    data: dict[str, Any] = {
        "site": site,
        "name": "测试政务服务中心",
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "keepalive_s": 5},
        "http": {"port": free_port(), "device_port": free_port(), "token_env": "HALLGW_TEST_TOKEN"},
        "store": {"path": str(tmp_path / "hallgw.db")},
        "devices": [
            {
                "id": f"clock-{index}",
                "profile": "zk_push",
                "serial_number": sn,
                "delay_s": delay_s,
                "error_delay_s": delay_s,
                **(clock_options or {}),
            }
            for index, sn in enumerate(clocks, start=1)
        ],
        "timetables": TIMETABLES,
        "calendar": {"holidays": ["2026-10-01", "2026-10-02"], "workdays": ["2026-10-10"]},
        "staff": people,
    }
    data.update(overrides)
    return data


@dataclass(frozen=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    text: str


async def exchange(
    method: str, url: str, *, params: Mapping[str, str] | None = None, data: Any = None
) -> Reply:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, params=params, data=data) as resp,
    ):
        return Reply(resp.status, resp.headers, await resp.text())


def device_url(config: Any) -> str:
    return f"http://127.0.0.1:{config.http.device_port}"
