"""LED screens end to end: simulated controllers on real TCP sockets and ptys → gateway → real
Mosquitto. Display commands, the content API, paging, status and faults, offline and back, the
power schedule (on a fake clock)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.app import Gateway
from gateway.clock import FakeClock
from gateway.config import Config
from simulators.led_text import LedController, SimScreen
from tests.support.harness import api_secrets, pad_hall, running_gateway, to_config
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import Recorder, publish
from tests.support.polling import until

ROOT = "hall/test-hall"
LED = "led-hall"
ZONE = ZoneInfo("Asia/Shanghai")


@pytest.fixture
async def controller() -> AsyncIterator[LedController]:
    sim = LedController([SimScreen(1, power=False)])
    await sim.open_tcp()
    try:
        yield sim
    finally:
        await sim.close()


def led(port: int | None, **extra: Any) -> dict[str, Any]:
    device = {
        "id": LED,
        "profile": "led_text",
        "transport": "tcp",
        "host": "127.0.0.1",
        "port": port,
        "status_poll_s": 0.2,
        "page_seconds": 0.3,
        **extra,
    }
    return {k: v for k, v in device.items() if v is not None}


def hall(tmp_path: Path, broker: Mosquitto, devices: list[dict[str, Any]], **extra: Any) -> Config:
    data = pad_hall(tmp_path, mqtt_port=broker.port, bus_url="unused", pads=0, buses=[], **extra)
    data["devices"] = devices
    return to_config(data)


def state(mqtt: Recorder, device_id: str = LED) -> dict[str, Any]:
    payloads = mqtt.payloads(f"devices/{device_id}/state")
    return payloads[-1]["values"] if payloads else {}


def availability(mqtt: Recorder, device_id: str = LED) -> dict[str, Any]:
    payloads = mqtt.payloads(f"devices/{device_id}/availability")
    return payloads[-1] if payloads else {}


async def display(broker: Mosquitto, request_id: str, text: str, seconds: float) -> None:
    body = {"request_id": request_id, "text": text, "seconds": seconds}
    await publish(broker.port, f"{ROOT}/cmd/display/{LED}", json.dumps(body, ensure_ascii=False))


async def test_a_display_command_shows_gbk_text_and_the_screen_goes_back_to_its_content(
    tmp_path: Path, broker: Mosquitto, controller: LedController
) -> None:
    config = hall(tmp_path, broker, [led(controller.port)])
    screen = controller.screen(1)
    async with Recorder(broker.port, [f"{ROOT}/#"]) as mqtt, running_gateway(config) as gw:
        await mqtt.wait_for(lambda: availability(mqtt).get("state") == "online", what="online")
        gw.gateway.screens.show("board", ["今日办件", "128 件"])
        await until(lambda: screen.text() == "今日办件\u3000128 件", "the board's content")

        await display(broker, "msg-1", "请 张三 到 3号窗口 😀", 1.0)
        reply = await mqtt.wait_for(lambda: mqtt.payloads("cmd/reply/msg-1"), what="reply")
        assert reply == [{"v": 1, "request_id": "msg-1", "ok": True}]
        assert screen.text() == "请 张三 到 3号窗口 ?"  # the emoji is replaced, not dropped
        await mqtt.wait_for(lambda: state(mqtt).get("source") == "display_command", what="state")

        await until(lambda: screen.text() == "今日办件\u3000128 件", "the content again")
        assert screen.texts()[-3:] == [
            "今日办件\u3000128 件",
            "请 张三 到 3号窗口 ?",
            "今日办件\u3000128 件",
        ]
        await mqtt.wait_for(lambda: state(mqtt).get("source") == "board", what="state back")
        assert screen.history[-1].effect == 1  # scroll, the profile's default
        assert screen.history[-1].seconds == 0  # until replaced: the gateway times pages itself


async def test_content_by_priority_and_expiry_and_a_blank_screen_when_none_is_left(
    tmp_path: Path, broker: Mosquitto, controller: LedController
) -> None:
    config = hall(tmp_path, broker, [led(controller.port)])
    screen = controller.screen(1)
    async with running_gateway(config) as gw:
        screens = gw.gateway.screens
        await until(lambda: gw.gateway.hub.get(LED).online, "online")
        assert screen.history == []  # nothing to show: the controller keeps its own program
        screens.show("board", ["外出 2 人"])
        await until(lambda: screen.text() == "外出 2 人", "board content")
        soon = gw.gateway.clock.now() + dt.timedelta(seconds=1)
        screens.show("ops", ["消防演练"], priority=5, expires_at=soon)
        await until(lambda: screen.text() == "消防演练", "urgent content")
        await until(lambda: screen.text() == "外出 2 人", "back after expiry")
        screens.withdraw("board")
        await until(lambda: screen.areas == {}, "a blank screen")
        assert screen.history[-1].text == ""  # a clear, not an empty show


async def test_a_long_text_is_paged_in_order_and_the_pages_cycle(
    tmp_path: Path, broker: Mosquitto, controller: LedController
) -> None:
    config = hall(tmp_path, broker, [led(controller.port, max_bytes=16, area=2)])
    screen = controller.screen(1)
    async with running_gateway(config) as gw:
        await until(lambda: gw.gateway.hub.get(LED).online, "online")
        gw.gateway.screens.show("board", ["一二三四五六七八九十a"])
        await until(lambda: len(screen.texts(2)) >= 4, "three pages and the first again")
        assert screen.texts(2)[:4] == [
            "一二三四五 (1/3)",
            "六七八九十 (2/3)",
            "a (3/3)",
            "一二三四五 (1/3)",
        ]
        assert all(len(text.encode("gbk")) <= 16 for text in screen.texts(2))


async def test_status_faults_and_over_temperature_are_device_state(
    tmp_path: Path, broker: Mosquitto, controller: LedController
) -> None:
    config = hall(tmp_path, broker, [led(controller.port, brightness=60)])
    screen = controller.screen(1)
    async with Recorder(broker.port, [f"{ROOT}/#"]) as mqtt, running_gateway(config):
        await mqtt.wait_for(lambda: state(mqtt).get("brightness") == 60, what="brightness set")
        assert state(mqtt)["faults"] == []
        screen.fault_bits = 0b0010
        screen.temperature_c = 71
        values = await mqtt.wait_for(
            lambda: state(mqtt).get("fault_bits") == 2 and state(mqtt), what="faults"
        )
        assert values["faults"] == ["power_supply"]
        assert values["over_temperature"] is True  # over max_temperature_c, bit 2 clear
        assert values["temperature_c"] == 71
        screen.fault_bits = 0b1100
        screen.temperature_c = -5
        values = await mqtt.wait_for(
            lambda: state(mqtt).get("fault_bits") == 12 and state(mqtt), what="bit 2"
        )
        assert values["faults"] == ["over_temperature", "storage"]
        assert values["over_temperature"] is True  # the controller's own flag
        assert values["temperature_c"] == -5


async def test_a_screen_is_offline_after_3_failures_and_shows_its_content_again_when_back(
    tmp_path: Path, broker: Mosquitto, controller: LedController
) -> None:
    config = hall(tmp_path, broker, [led(controller.port)])
    screen = controller.screen(1)
    async with Recorder(broker.port, [f"{ROOT}/#"]) as mqtt, running_gateway(config) as gw:
        gw.gateway.screens.show("board", ["欢迎"])
        await until(lambda: screen.text() == "欢迎", "content")
        await mqtt.wait_for(lambda: availability(mqtt).get("state") == "online", what="online")
        await controller.refuse()
        offline = await mqtt.wait_for(
            lambda: availability(mqtt).get("state") == "offline" and availability(mqtt),
            timeout=15,
            what="offline",
        )
        assert offline["reason"] in ("io_error", "timeout")
        assert (
            await gw.metric("hallgw_device_requests_total", device_id=LED, result="io_error") >= 3
        )

        await display(broker, "while-down", "测试", 5)
        reply = await mqtt.wait_for(lambda: mqtt.payloads("cmd/reply/while-down"), what="reply")
        assert reply[0]["ok"] is False
        assert "offline" in reply[0]["error"]

        screen.areas.clear()  # it rebooted and forgot
        await controller.accept()
        await mqtt.wait_for(
            lambda: availability(mqtt).get("state") == "online", timeout=80, what="online again"
        )
        await until(lambda: screen.text() == "欢迎", "content sent again")


async def test_a_refusing_or_silent_controller_fails_the_command_with_a_reason(
    tmp_path: Path, broker: Mosquitto, controller: LedController
) -> None:
    config = hall(tmp_path, broker, [led(controller.port)])
    screen = controller.screen(1)
    async with Recorder(broker.port, [f"{ROOT}/#"]) as mqtt, running_gateway(config) as gw:
        await mqtt.wait_for(lambda: availability(mqtt).get("state") == "online", what="online")
        screen.busy = True
        await display(broker, "busy-1", "忙", 5)
        reply = await mqtt.wait_for(lambda: mqtt.payloads("cmd/reply/busy-1"), what="reply")
        assert reply[0] == {"v": 1, "request_id": "busy-1", "ok": False, "error": reply[0]["error"]}
        assert "show refused: busy" in reply[0]["error"]
        assert screen.text() == ""
        assert (
            await gw.metric("hallgw_device_requests_total", device_id=LED, result="bad_response")
            >= 1
        )
        screen.busy = False
        screen.corrupt_crc = True
        await mqtt.wait_for(
            lambda: availability(mqtt).get("reason") == "crc_errors", timeout=10, what="crc"
        )
        screen.corrupt_crc = False
        await mqtt.wait_for(lambda: availability(mqtt).get("state") == "online", what="back")
        await display(broker, "ok-1", "好", 0.5)
        reply = await mqtt.wait_for(lambda: mqtt.payloads("cmd/reply/ok-1"), what="reply")
        assert reply[0]["ok"] is True
        assert screen.text() == "好"


@pytest.mark.parametrize("link_field", ["bus", "url"])
async def test_a_screen_on_serial_takes_its_protocols_answer_time(
    tmp_path: Path, broker: Mosquitto, link_field: str
) -> None:
    sim = LedController([SimScreen(3)])
    link = tmp_path / "led-bus"
    await sim.open_pty(link)
    screen = sim.screen(3)
    screen.slow_s = 0.3  # over the shared bus's 100 ms, within the LED's 1 s
    try:
        bus = {"id": "bus-2f", "url": str(link), "timeout_ms": 100, "retries": 0}
        device = {
            "id": LED,
            "profile": "led_text",
            "transport": "serial",
            "address": 3,
            "status_poll_s": 0.3,
            **({"bus": "bus-2f"} if link_field == "bus" else {"url": str(link)}),
        }
        buses = [bus] if link_field == "bus" else []
        data = pad_hall(tmp_path, mqtt_port=broker.port, bus_url=str(link), pads=0, buses=buses)
        data["devices"] = [device]
        config = to_config(data)
        async with Recorder(broker.port, [f"{ROOT}/#"]) as mqtt, running_gateway(config) as gw:
            await mqtt.wait_for(lambda: availability(mqtt).get("state") == "online", what="online")
            await display(broker, "serial-1", "窗口暂停服务", 30)
            reply = await mqtt.wait_for(lambda: mqtt.payloads("cmd/reply/serial-1"), what="reply")
            assert reply[0]["ok"] is True
            assert screen.text() == "窗口暂停服务"
            polls = screen.requests.count(0x20)
            await until(lambda: screen.requests.count(0x20) >= polls + 2, "two more polls")
            assert (
                await gw.metric("hallgw_device_requests_total", device_id=LED, result="timeout")
                == 0
            )
    finally:
        await sim.close()


async def test_a_dropped_connection_is_opened_again_and_the_screen_told_again(
    tmp_path: Path, broker: Mosquitto, controller: LedController
) -> None:
    config = hall(tmp_path, broker, [led(controller.port)])
    screen = controller.screen(1)
    async with running_gateway(config) as gw:
        gw.gateway.screens.show("board", ["办事大厅"])
        await until(lambda: screen.text() == "办事大厅", "content")
        assert controller.connections == 1
        shows = len(screen.texts())
        screen.drop_next = True  # the controller reboots on the next request
        await until(lambda: controller.connections == 2, "a new connection", timeout=10)
        await until(lambda: len(screen.texts()) > shows, "the content sent again")
        assert screen.text() == "办事大厅"
        assert gw.gateway.hub.get(LED).online  # one lost poll is not an outage


async def test_the_power_schedule_turns_screens_off_after_hours_and_on_before_opening(
    tmp_path: Path, broker: Mosquitto, controller: LedController
) -> None:
    config = hall(
        tmp_path,
        broker,
        [led(controller.port, power_schedule="service", power_on_before_min=15)],
    )
    # Friday 17:40: the hall closed at 17:30, screens stay on 15 minutes more
    clock = FakeClock(dt.datetime(2026, 11, 20, 17, 40, tzinfo=ZONE))
    screen = controller.screen(1)
    gateway = Gateway(config, api_secrets(), clock=clock)
    async with (
        Recorder(broker.port, [f"{ROOT}/#"]) as mqtt,
        running_gateway(config, gateway=gateway),
    ):
        gateway.screens.show("board", ["明天见"])
        await until(lambda: screen.power and screen.text() == "明天见", "on, with content")

        clock.set(dt.datetime(2026, 11, 20, 17, 46, tzinfo=ZONE))
        await until(lambda: not screen.power, "off after hours")
        await mqtt.wait_for(lambda: state(mqtt).get("power_on") is False, what="state: off")

        await display(broker, "night-1", "紧急通知", 0.5)
        reply = await mqtt.wait_for(lambda: mqtt.payloads("cmd/reply/night-1"), what="reply")
        assert reply[0]["ok"] is True
        assert screen.power
        assert screen.text() == "紧急通知"
        await until(lambda: not screen.power, "off again after the message")

        clock.set(dt.datetime(2026, 11, 21, 9, 0, tzinfo=ZONE))  # Saturday: no service
        polls = screen.requests.count(0x20)
        # eight status polls of 0.2 s: the presenter has read the clock again at least once
        await until(lambda: screen.requests.count(0x20) >= polls + 8, "eight more polls")
        assert not screen.power
        clock.set(dt.datetime(2026, 11, 23, 8, 45, tzinfo=ZONE))  # Monday, 15 min before 09:00
        await until(lambda: screen.power and screen.text() == "明天见", "on before opening")
