"""The hall board in a real browser: Debian's headless Chromium (driven by Playwright, which
never downloads a browser here) opens /board, sees an outing registered through the API within
2 s, survives a gateway restart on the same port without a reload, and leaves a screenshot in
tests/artifacts/board.png."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from gateway.app import Gateway
from gateway.clock import FakeClock
from gateway.config import Config
from tests.support.harness import RunningGateway, api_secrets, running_gateway, to_config
from tests.support.mosquitto import Mosquitto
from tests.support.presence import WINDOWS, Inputs, a_post, api, at, b_post, presence, presence_hall

CHROMIUM = "/usr/bin/chromium"
# the network here is closed: nothing in the browser may try to reach out
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# the issue: the out list updates within 2 s of an outing registered through the API
UPDATE_WITHIN_S = 2.0
# a restarted gateway: the page's EventSource reconnects after its retry (2 s) and a start-up
RECONNECT_WITHIN_S = 15.0


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


def gateway(config: Config, clock: FakeClock) -> Gateway:
    return Gateway(config, api_secrets(), clock=clock)


async def busy_morning(gw: RunningGateway, clock: FakeClock) -> None:
    """A hall at 10:12: most at their windows, two out (one overdue), one window with nobody,
    two off-post, one on leave, one not arrived."""
    inputs = Inputs(presence(gw), clock)
    clock.set(at("08:50:00"))
    status, _ = await api(
        gw,
        "POST",
        "/api/v1/leave",
        {"staff_id": "s115", "from": "2026-11-20", "to": "2026-11-20", "note": "年假"},
    )
    assert status == 201
    for n in range(1, WINDOWS + 1):
        for staff_id in (a_post(n), b_post(n)):
            if staff_id not in ("s018", "s115"):
                await inputs.punch(staff_id)
    clock.set(at("08:55:00"))
    for n in range(1, WINDOWS + 1):
        if n != 18:
            await inputs.pad(n, "login", a_post(n))
    await inputs.pad(18, "login", "s118")
    clock.set(at("09:40:00"))
    await inputs.pad(6, "pause")
    clock.set(at("09:50:00"))
    await inputs.pad(4, "logout")
    status, _ = await api(
        gw,
        "POST",
        "/api/v1/outings",
        {"staff_id": "s004", "reason": "private", "expected_minutes": 15},
    )
    assert status == 201
    clock.set(at("09:58:00"))
    await inputs.pad(4, "login", "s104")
    clock.set(at("10:00:00"))
    await inputs.pad(9, "logout")
    for n in (2, 3, 13, 20):
        inputs.caller(n, "serving", a_post(n), f"A{n:03d}")
    clock.set(at("10:12:00"))
    presence(gw).wake()
    await presence(gw).sync()


async def out_names(page: Page) -> list[str]:
    names: list[str] = await page.locator("#out-rows td.name").all_inner_texts()
    return names


async def test_the_board_updates_live_and_survives_a_restart(
    tmp_path: Path, broker: Mosquitto, browser: Browser
) -> None:
    clock = FakeClock(at("08:40:00"))
    config = to_config(presence_hall(tmp_path, mqtt_port=broker.port))
    page = await browser.new_page(viewport={"width": 1920, "height": 1080})
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"error: {error}"))
    async with running_gateway(config, gateway=gateway(config, clock)) as gw:
        await busy_morning(gw, clock)
        await page.goto(gw.base_url + "/board")
        await page.locator("#live[data-state=live]").wait_for(timeout=10_000)
        assert await out_names(page) == ["员工004"]
        assert await page.locator("#time").inner_text() == "10:12:00"
        assert "测试政务服务中心" in await page.locator(".hall").inner_text()
        await page.evaluate("window.__notReloaded = true")

        started = time.monotonic()
        status, _ = await api(
            gw,
            "POST",
            "/api/v1/outings",
            {"staff_id": "s011", "reason": "official", "expected_minutes": 40},
        )
        assert status == 201
        await page.locator("#out-rows td.name", has_text="员工011").wait_for(
            timeout=UPDATE_WITHIN_S * 1000
        )
        assert time.monotonic() - started < UPDATE_WITHIN_S
        assert await out_names(page) == ["员工004", "员工011"]
        overdue = page.locator("#out-rows tr.overdue")
        assert await overdue.count() == 1
        assert "超时" in await overdue.inner_text()

    await page.locator("#live[data-state=lost]").wait_for(timeout=10_000)
    async with running_gateway(config, gateway=gateway(config, clock)) as gw:
        await page.locator("#live[data-state=live]").wait_for(timeout=RECONNECT_WITHIN_S * 1000)
        clock.set(at("10:15:00"))
        status, _ = await api(
            gw,
            "POST",
            "/api/v1/outings",
            {"staff_id": "s022", "reason": "private", "expected_minutes": 10},
        )
        assert status == 201
        await page.locator("#out-rows td.name", has_text="员工022").wait_for(
            timeout=UPDATE_WITHIN_S * 1000
        )
        assert await page.evaluate("window.__notReloaded === true"), "the page was not reloaded"
        assert await out_names(page) == ["员工004", "员工011", "员工022"]
        unattended: Any = await page.locator("#un-chips .chip").all_inner_texts()
        # w09's A left without registering; the A of w11 and w22 are out and their B not there
        assert [chip.split("号")[0] for chip in unattended] == ["9", "11", "22"]
        assert await page.locator("#floors .tile").count() == WINDOWS
        assert await page.locator("#floors .tile.unattended").count() == 3
        assert await page.locator("#floors .tile.serving").count() == 4
        assert await page.locator("#floors .tile.paused").count() == 1
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "board.png"))
    assert not [line for line in console if line.startswith("error")], console
