"""The board beyond the page: masked names, the news on the LED strips, `hallgw board
--snapshot` against a running gateway, the board's server-sent events and the gauges."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import aiohttp

from gateway.app import Gateway
from gateway.board import HEARTBEAT_S, LED_SOURCE, print_snapshot
from gateway.clock import FakeClock
from gateway.topics import mask_name
from tests.support.harness import api_secrets, running_gateway, to_config, write_config
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import Recorder
from tests.support.presence import Inputs, api, at, presence, presence_hall


def test_masking_keeps_the_family_name() -> None:
    assert [mask_name(n) for n in ("张三", "欧阳娜娜", "李", "")] == ["张*", "欧***", "李", ""]


async def test_masked_names_led_lines_snapshot_and_events(
    tmp_path: Path, broker: Mosquitto
) -> None:
    clock = FakeClock(at("08:50:00"))
    data = presence_hall(tmp_path, mqtt_port=broker.port, windows=4, board={"mask_names": True})
    config = to_config(data)
    async with (
        Recorder(broker.port, ["hall/test-hall/#"]) as mqtt,
        running_gateway(config, gateway=Gateway(config, api_secrets(), clock=clock)) as gw,
    ):
        inputs = Inputs(presence(gw), clock)
        for staff_id in ("s001", "s002", "s003", "s101", "s102", "s103"):
            await inputs.punch(staff_id)
        for n in (1, 2, 3):
            await inputs.pad(n, "login", f"s{n:03d}")
        clock.set(at("09:30:00"))
        await inputs.pad(1, "logout")
        status, _ = await api(
            gw,
            "POST",
            "/api/v1/outings",
            {"staff_id": "s001", "reason": "private", "expected_minutes": 15},
        )
        assert status == 201
        clock.set(at("09:50:00"))
        presence(gw).wake()
        await presence(gw).sync()

        board = presence(gw).board()
        assert [(i["name"], i["overdue"]) for i in board["out"]] == [("员****", True)]
        presence_payload = await mqtt.wait_for(
            lambda: (
                (mqtt.last("staff/s001/presence") or {}).get("outing")
                and mqtt.last("staff/s001/presence")
            ),
            what="s001 out",
        )
        assert presence_payload["name"] == "员****"
        assert presence_payload["outing"]["outing_id"] == "s001-20261120-1"
        assert {i["name"] for i in board["off_post"]} == {"员****"}

        contents = gw.gateway.screens.contents()
        assert [c.source for c in contents] == [LED_SOURCE]
        # s101 should cover w01 while its A is out; w04's staff have not arrived
        assert list(contents[0].lines) == [
            "外出超时 员**** 1号窗口 应09:45返回",
            "离岗 员**** 1号窗口",
            "空岗 1号窗口",
            "空岗 4号窗口",
        ]

        out = io.StringIO()
        path = write_config(tmp_path / "hall.yaml", data)
        assert await asyncio.to_thread(print_snapshot, str(path), out) == 0
        text = out.getvalue()
        assert "测试政务服务中心  2026-11-20 09:50:00" in text
        assert "员****  1号窗口  因私  09:30  09:45     超时" in text
        assert "空岗窗口 (2)" in text

        # the event stream: the board at once, then on a change
        async with (
            aiohttp.ClientSession() as session,
            session.get(gw.base_url + "/board/events") as resp,
        ):
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            events: list[tuple[str, str]] = []
            name = ""
            async with asyncio.timeout(HEARTBEAT_S / 2):
                while len([e for e in events if e[0] == "board"]) < 2:
                    line = (await resp.content.readline()).decode().rstrip("\n")
                    if line.startswith("event: "):
                        name = line.removeprefix("event: ")
                    elif line.startswith("data: "):
                        events.append((name, line.removeprefix("data: ")))
                        if len(events) == 2:  # windows, then board: now change something
                            await inputs.pad(1, "login", "s001")
            kinds = [kind for kind, _ in events]
            assert kinds[:2] == ["windows", "board"]
            last_board = json.loads(next(d for k, d in reversed(events) if k == "board"))
            assert last_board["out"] == []
        assert await gw.metric("hallgw_windows") == 4
        assert await gw.metric("hallgw_staff") == 8

    # a gateway that is not running: a clear message, exit 1
    err = io.StringIO()
    assert await asyncio.to_thread(print_snapshot, str(path), err) == 1
