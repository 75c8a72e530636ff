"""Webhook notifications: the three message formats, and the sender against a real local HTTP
endpoint (retries with backoff, permanent failures, robot error codes, a full queue, pacing,
secrets never logged)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry

from gateway import webhooks
from gateway.alerts import AlertView, Severity
from gateway.config import Secret, WebhookConfig
from gateway.webhooks import (
    MARKDOWN_MAX_BYTES,
    Format,
    Hall,
    Notification,
    Webhooks,
    WebhookSender,
    dingtalk,
    generic,
    render,
    wecom,
)
from tests.support.polling import until
from tests.support.webhook import WebhookReceiver

ZONE = ZoneInfo("Asia/Shanghai")
HALL = Hall("wanzhou-main", "万州区政务服务中心")
T0 = dt.datetime(2026, 11, 23, 9, 3, 12, tzinfo=ZONE)


def view(n: int = 1, *, severity: Severity = "critical", ended: bool = False) -> AlertView:
    return AlertView(
        alert_id=f"device_offline-kiosk-{n:02d}",
        rule="device_offline",
        subject={"device_id": f"kiosk-{n:02d}"},
        severity=severity,
        summary=f"自助终端 kiosk-{n:02d} 离线",
        started_at=T0,
        ended_at=T0 + dt.timedelta(minutes=6, seconds=48) if ended else None,
    )


def firing(n: int = 1, *, severity: Severity = "critical") -> Notification:
    return Notification(view(n, severity=severity))


def resolved(n: int = 1) -> Notification:
    return Notification(view(n, ended=True))


# -- formats ----------------------------------------------------------------------------------


def test_wecom_is_a_group_robot_markdown_message() -> None:
    body = wecom([firing()], HALL)
    assert body == {
        "msgtype": "markdown",
        "markdown": {
            "content": (
                "## 【告警】万州区政务服务中心\n"
                '**<font color="warning">[严重]</font> 自助终端 kiosk-01 离线**\n'
                "> 规则:device_offline · 编号:device_offline-kiosk-01\n"
                "> 开始:2026-11-23 09:03:12"
            )
        },
    }
    content = wecom([resolved()], HALL)["markdown"]["content"]
    assert content == (
        "## 【告警恢复】万州区政务服务中心\n"
        '**<font color="info">[已恢复]</font> 自助终端 kiosk-01 离线**\n'
        "> 规则:device_offline · 编号:device_offline-kiosk-01\n"
        "> 开始:2026-11-23 09:03:12\n"
        "> 结束:2026-11-23 09:10:00(持续 6 分 48 秒)"
    )


def test_dingtalk_is_a_custom_robot_markdown_message_whose_title_says_the_keyword() -> None:
    body = dingtalk([firing(), resolved(2)], HALL)
    assert body["msgtype"] == "markdown"
    markdown = body["markdown"]
    assert set(markdown) == {"title", "text"}
    assert markdown["title"] == "【告警 1 条 · 恢复 1 条】万州区政务服务中心 自助终端 kiosk-01 离线"
    assert markdown["text"] == (
        "### 【告警 1 条 · 恢复 1 条】万州区政务服务中心\n\n"
        "**[严重] 自助终端 kiosk-01 离线**\n\n"
        "> 规则:device_offline · 编号:device_offline-kiosk-01\n\n"
        "> 开始:2026-11-23 09:03:12\n\n"
        "**[已恢复] 自助终端 kiosk-02 离线**\n\n"
        "> 规则:device_offline · 编号:device_offline-kiosk-02\n\n"
        "> 开始:2026-11-23 09:03:12\n\n"
        "> 结束:2026-11-23 09:10:00(持续 6 分 48 秒)"
    )
    assert "告警" in dingtalk([resolved()], HALL)["markdown"]["title"]


def test_generic_is_json_with_the_contracts_alert_fields() -> None:
    body = generic(
        [firing(), Notification(view(2, ended=True)), Notification(view(3), repeat=True)], HALL
    )
    assert body["v"] == 1
    assert (body["site"], body["hall"]) == ("wanzhou-main", "万州区政务服务中心")
    first, second, third = body["alerts"]
    assert first == {
        "v": 1,
        "alert_id": "device_offline-kiosk-01",
        "rule": "device_offline",
        "severity": "critical",
        "status": "firing",
        "subject": {"device_id": "kiosk-01"},
        "summary": "自助终端 kiosk-01 离线",
        "started_at": "2026-11-23T09:03:12+08:00",
        "repeat": False,
    }
    assert (second["status"], second["ended_at"]) == ("resolved", "2026-11-23T09:10:00+08:00")
    assert third["repeat"] is True


@pytest.mark.parametrize("format_", ["wecom", "dingtalk"])
def test_a_robot_message_takes_what_fits_its_limit_and_leaves_the_rest(format_: Format) -> None:
    batch = [firing(n) for n in range(1, 100)]
    body, count = render(format_, batch, HALL)
    assert 1 < count < 99
    markdown = json.loads(body)["markdown"]
    text = markdown.get("content") or markdown["text"]
    assert len(text.encode("utf-8")) <= MARKDOWN_MAX_BYTES
    assert f"kiosk-{count:02d}" in text
    assert f"kiosk-{count + 1:02d}" not in text
    assert f"告警 {count} 条" in text


def test_a_huge_summary_is_cut_to_a_line() -> None:
    huge = Notification(
        AlertView("a-b", "device_fault", {"device_id": "b"}, "warning", "故" * 5000, T0)
    )
    body, count = render("wecom", [huge, firing()], HALL)
    assert count == 2
    content = json.loads(body)["markdown"]["content"]
    assert "故" * (webhooks.SUMMARY_MAX_CHARS - 1) + "…" in content
    assert "故" * webhooks.SUMMARY_MAX_CHARS not in content


# -- sending ----------------------------------------------------------------------------------


@pytest.fixture
async def robot() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """A retry waits 10 ms, doubling, instead of a second (the backoff's shape is the same)."""
    monkeypatch.setattr(webhooks, "RETRY_INITIAL_S", 0.01)
    monkeypatch.setattr(webhooks, "RETRY_MAX_S", 0.04)


@contextlib.asynccontextmanager
async def sending(
    robot: WebhookReceiver, format_: str = "wecom", **config: object
) -> AsyncIterator[tuple[Webhooks, CollectorRegistry]]:
    registry = CollectorRegistry()
    hooks = Webhooks(registry)
    hook = WebhookConfig.model_validate({"url_env": "X", "format": format_, **config})
    hooks.configure([(0, hook, Secret(robot.url))], HALL)
    task = asyncio.create_task(hooks.run(), name="webhooks-under-test")
    try:
        yield hooks, registry
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def counted(registry: CollectorRegistry, result: str) -> float:
    value = registry.get_sample_value(
        "hallgw_webhook_notifications_total", {"webhook": "0", "result": result}
    )
    return value or 0.0


async def test_a_failing_endpoint_is_retried_until_it_takes_the_message(
    robot: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    robot.answers = [500, 503, ("rate limited", 45009)]
    async with sending(robot) as (hooks, registry):
        hooks.offer(firing())
        await robot.wait_for(lambda: robot.bodies, what="the message after three failures")
        await until_counted(registry, "sent", 1)
        assert robot.attempts == 4
    warnings = [r.getMessage() for r in caplog.records if r.name == "gateway.webhooks"]
    assert warnings[:3] == [
        "webhook 0 (wecom): HTTP 500; trying again in 0 s",
        "webhook 0 (wecom): HTTP 503; trying again in 0 s",
        "webhook 0 (wecom): errcode 45009: rate limited; trying again in 0 s",
    ]


async def test_a_permanent_refusal_is_given_up_at_once_and_counted(
    robot: WebhookReceiver,
) -> None:
    robot.answers = [404]
    async with sending(robot) as (hooks, registry):
        hooks.offer(firing(1))
        await robot.wait_for(lambda: robot.attempts == 1, what="one attempt")
        hooks.offer(firing(2))  # the next message goes out as usual
        await robot.wait_for(lambda: robot.bodies, what="the next message")
        await until_counted(registry, "sent", 1)
        assert counted(registry, "failed") == 1
        assert "kiosk-02" in robot.bodies[0]["markdown"]["content"]
        assert robot.attempts == 2


async def test_an_endpoint_that_never_recovers_is_given_up_after_the_last_attempt(
    robot: WebhookReceiver,
) -> None:
    robot.answers = [500] * webhooks.MAX_ATTEMPTS
    async with sending(robot) as (hooks, registry):
        hooks.offer(firing())
        await robot.wait_for(lambda: robot.attempts == webhooks.MAX_ATTEMPTS, what="every try")
        await until_counted(registry, "failed", 1)
        assert robot.bodies == []


async def until_counted(registry: CollectorRegistry, result: str, value: float) -> None:
    await until(lambda: counted(registry, result) >= value, f"{value} {result} counted")


async def test_a_full_queue_sheds_the_oldest_and_counts_it(robot: WebhookReceiver) -> None:
    registry = CollectorRegistry()
    hooks = Webhooks(registry)
    hook = WebhookConfig(url_env="X", format="generic")
    hooks.configure([(0, hook, Secret(robot.url))], HALL)
    for n in range(webhooks.QUEUE_MAX + 5):  # the sender is not running: the endpoint is away
        hooks.offer(Notification(replace_id(view(1), n)))
    assert hooks.senders[0].queued == webhooks.QUEUE_MAX
    assert counted(registry, "dropped") == 5
    task = asyncio.create_task(hooks.run(), name="webhooks-under-test")
    try:
        await robot.wait_for(
            lambda: sum(len(b["alerts"]) for b in robot.bodies) == webhooks.QUEUE_MAX,
            what="everything kept",
        )
        first = robot.bodies[0]["alerts"][0]["alert_id"]
        assert first == "device_offline-k5", "the oldest were shed"
        assert len(robot.bodies) == webhooks.QUEUE_MAX // webhooks.GENERIC_BATCH_MAX
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def replace_id(alert: AlertView, n: int) -> AlertView:
    return AlertView(f"device_offline-k{n}", alert.rule, {"device_id": f"k{n}"}, "critical", "", T0)


async def test_only_the_configured_severities_are_sent(robot: WebhookReceiver) -> None:
    async with sending(robot, severities=["critical"]) as (hooks, _registry):
        hooks.offer(firing(1, severity="warning"))
        hooks.offer(firing(2, severity="info"))
        hooks.offer(firing(3, severity="critical"))
        await robot.wait_for(lambda: robot.bodies, what="the critical one")
        content = robot.bodies[0]["markdown"]["content"]
        assert "kiosk-03" in content
        assert "kiosk-01" not in content
        assert "kiosk-02" not in content


async def test_messages_are_paced_to_the_robots_limit(
    robot: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhooks, "ROBOT_MAX_PER_MINUTE", 2)
    monkeypatch.setattr(webhooks, "RATE_WINDOW_S", 0.3)
    loop = asyncio.get_running_loop()
    async with sending(robot) as (hooks, _registry):
        before_first = loop.time()
        for n in range(1, 4):  # one at a time: each goes out alone
            hooks.offer(firing(n))
            await robot.wait_for(lambda: len(robot.bodies) >= n, what=f"message {n}")  # noqa: B023
        third = loop.time()
    assert third - before_first >= 0.3, "the third waited for the first to leave the window"
    assert len(robot.bodies) == 3


async def test_the_address_is_never_logged(
    robot: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    registry = CollectorRegistry()
    hooks = Webhooks(registry)
    unreachable = Secret("http://127.0.0.1:9/cgi-bin/webhook/send?key=secret-key-4c1d")
    hooks.configure([(0, WebhookConfig(url_env="X", format="wecom"), unreachable)], HALL)
    robot.answers = [500]
    sender = WebhookSender(1, WebhookConfig(url_env="Y"), Secret(robot.url), HALL, hooks.metrics)
    task = asyncio.create_task(hooks.run(), name="webhooks-under-test")
    other = asyncio.create_task(sender.run(), name="webhook-1-under-test")
    try:
        hooks.offer(firing())
        sender.offer(firing())
        await robot.wait_for(lambda: robot.bodies, what="the retried message")
        await until(
            lambda: any("cannot post" in r.getMessage() for r in caplog.records),
            "the 'cannot post' log line",
        )
    finally:
        for t in (task, other):
            t.cancel()
        await asyncio.gather(task, other, return_exceptions=True)
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("gateway"))
    assert "webhook 0 (wecom): cannot post: Connection refused; trying again" in text
    assert "webhook 1 (generic): HTTP 500; trying again" in text
    assert "secret-key-4c1d" not in text
    assert "127.0.0.1:9" not in text
    assert str(robot.port) not in text


async def test_a_reload_keeps_the_queue_of_an_unchanged_webhook_and_drops_a_removed_one(
    robot: WebhookReceiver,
) -> None:
    registry = CollectorRegistry()
    hooks = Webhooks(registry)
    kept = WebhookConfig(url_env="X", format="wecom")
    gone = WebhookConfig(url_env="Y", format="generic")
    hooks.configure([(0, kept, Secret(robot.url)), (1, gone, Secret(robot.url + "&b"))], HALL)
    hooks.offer(firing())
    first = hooks.senders[0]
    hooks.configure([(0, kept, Secret(robot.url))], Hall("wanzhou-main", "新名字"))
    assert hooks.senders == [first]
    assert first.queued == 1
    assert (
        registry.get_sample_value(
            "hallgw_webhook_notifications_total", {"webhook": "1", "result": "failed"}
        )
        == 1
    )
    task = asyncio.create_task(hooks.run(), name="webhooks-under-test")
    try:
        await robot.wait_for(lambda: robot.bodies, what="the kept notification")
        assert robot.bodies[0]["markdown"]["content"].startswith("## 【告警】新名字")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
