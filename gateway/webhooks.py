"""Alert notifications over webhooks: a WeCom (企业微信) or DingTalk (钉钉) group robot's markdown
message, or a generic JSON body for any HTTP endpoint.

Each webhook has its own bounded queue and sender task, so a slow or unreachable endpoint never
holds up the gateway: a notification that finds the queue full pushes out the oldest, counted.
What is waiting when the sender is free goes out in one message (as much as fits), at most
`ROBOT_MAX_PER_MINUTE` messages a minute; a failed message is retried with capped exponential
backoff, then given up, counted and logged. Webhook addresses are secrets: they are never logged,
not even in an error (aiohttp names the URL in some of its errors, so only the error's type is).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from gateway import __version__
from gateway.alerts import AlertView
from gateway.config import Secret, WebhookConfig
from gateway.runner import Backoff

log = logging.getLogger(__name__)

Format = Literal["generic", "wecom", "dingtalk"]

# notifications waiting for one webhook; an endpoint down for hours sheds the oldest
QUEUE_MAX: Final = 1000
# WeCom and DingTalk robots take 20 messages a minute; DingTalk blocks a robot for 10 minutes
# past that. Generic endpoints get the same pace: nobody reads more than that.
ROBOT_MAX_PER_MINUTE: Final = 20
RATE_WINDOW_S: Final = 60.0
# a robot's markdown is at most 4096 bytes (WeCom's limit; DingTalk's is larger)
MARKDOWN_MAX_BYTES: Final = 4096
# alerts in one generic JSON body
GENERIC_BATCH_MAX: Final = 50
# a summary longer than this is cut in a robot message (a summary is a line, not a report)
SUMMARY_MAX_CHARS: Final = 300
# what a DingTalk chat list shows of a message
TITLE_MAX_CHARS: Final = 64
# an endpoint that has not answered in this long has failed this attempt
REQUEST_TIMEOUT_S: Final = 10.0
# a failed message is tried again after 1 s, doubling to a minute, 8 times in all (~4 min)
RETRY_INITIAL_S: Final = 1.0
RETRY_MAX_S: Final = 60.0
MAX_ATTEMPTS: Final = 8
# answers that will not get better by asking again: the address or the message is wrong
_PERMANENT_HTTP: Final = frozenset({400, 401, 403, 404, 405, 410, 413, 422})

_SEVERITY_NAMES: Final = {"critical": "严重", "warning": "警告", "info": "提示"}
# WeCom's markdown knows three font colours: info (green), comment (grey), warning (orange-red)
_WECOM_COLOURS: Final = {"critical": "warning", "warning": "warning", "info": "comment"}


@dataclass(frozen=True)
class Notification:
    """An alert fired (again, if `repeat`) or resolved (its view then has `ended_at`)."""

    alert: AlertView
    repeat: bool = False

    @property
    def resolved(self) -> bool:
        return self.alert.ended_at is not None


@dataclass(frozen=True)
class Hall:
    site: str
    name: str


class WebhookError(Exception):
    """One attempt failed; `permanent` when asking again will not help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


# -- message formats (pure) -------------------------------------------------------------------


def render(format_: Format, batch: Sequence[Notification], hall: Hall) -> tuple[bytes, int]:
    """The body of one message for the first notifications of `batch`, and how many it carries
    (at least one; the rest did not fit)."""
    if format_ == "generic":
        taken = list(batch[:GENERIC_BATCH_MAX])
        return _json(generic(taken, hall)), len(taken)
    text = _wecom_text if format_ == "wecom" else _dingtalk_text
    count = 1
    while (
        count < len(batch)
        and len(text(batch[: count + 1], hall).encode("utf-8")) <= MARKDOWN_MAX_BYTES
    ):
        count += 1
    build = wecom if format_ == "wecom" else dingtalk
    return _json(build(batch[:count], hall)), count


def generic(batch: Sequence[Notification], hall: Hall) -> dict[str, Any]:
    """`{"v":1,"site","hall","alerts":[…]}`: each alert as mqtt.md publishes it, plus `repeat`."""
    return {
        "v": 1,
        "site": hall.site,
        "hall": hall.name,
        "alerts": [{**n.alert.fields(), "repeat": n.repeat} for n in batch],
    }


def wecom(batch: Sequence[Notification], hall: Hall) -> dict[str, Any]:
    """A WeCom group robot's markdown message: `{"msgtype":"markdown","markdown":{"content"}}`."""
    return {"msgtype": "markdown", "markdown": {"content": _fit(_wecom_text(batch, hall))}}


def dingtalk(batch: Sequence[Notification], hall: Hall) -> dict[str, Any]:
    """A DingTalk custom robot's markdown message:
    `{"msgtype":"markdown","markdown":{"title","text"}}` (the title is what the chat list shows).
    Every title says 告警, so a robot secured with that keyword takes them all."""
    title = f"{_title(batch, hall)} {_summary(batch[0].alert)}"
    return {
        "msgtype": "markdown",
        "markdown": {"title": title[:TITLE_MAX_CHARS], "text": _fit(_dingtalk_text(batch, hall))},
    }


def _wecom_text(batch: Sequence[Notification], hall: Hall) -> str:
    blocks = [
        f'**<font color="{_wecom_colour(n)}">[{_state(n)}]</font> {_summary(n.alert)}**\n'
        + "\n".join(f"> {line}" for line in _details(n))
        for n in batch
    ]
    return "\n".join([f"## {_title(batch, hall)}", *blocks])


def _dingtalk_text(batch: Sequence[Notification], hall: Hall) -> str:
    blocks = [
        f"**[{_state(n)}] {_summary(n.alert)}**\n\n"
        + "\n\n".join(f"> {line}" for line in _details(n))
        for n in batch
    ]
    return "\n\n".join([f"### {_title(batch, hall)}", *blocks])


def _title(batch: Sequence[Notification], hall: Hall) -> str:
    resolved = sum(1 for n in batch if n.resolved)
    firing = len(batch) - resolved
    name = hall.name or hall.site
    if resolved == 0:
        what = "告警" if firing == 1 else f"告警 {firing} 条"
    elif firing == 0:
        what = "告警恢复" if resolved == 1 else f"告警恢复 {resolved} 条"
    else:
        what = f"告警 {firing} 条 · 恢复 {resolved} 条"
    return f"【{what}】{name}"


def _wecom_colour(n: Notification) -> str:
    return "info" if n.resolved else _WECOM_COLOURS.get(n.alert.severity, "warning")


def _state(n: Notification) -> str:
    if n.resolved:
        return "已恢复"
    severity = _SEVERITY_NAMES.get(n.alert.severity, n.alert.severity)
    return f"{severity}·重复提醒" if n.repeat else severity


def _summary(alert: AlertView) -> str:
    text = alert.summary or alert.alert_id
    if len(text) > SUMMARY_MAX_CHARS:
        text = text[: SUMMARY_MAX_CHARS - 1] + "…"
    return text


def _details(n: Notification) -> list[str]:
    a = n.alert
    lines = [f"规则:{a.rule} · 编号:{a.alert_id}", f"开始:{_when(a.started_at)}"]
    if a.ended_at is not None:
        lines.append(f"结束:{_when(a.ended_at)}(持续 {_duration(a.ended_at - a.started_at)})")
    return lines


def _when(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S")


def _duration(span: dt.timedelta) -> str:
    seconds = max(0, int(span.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} 小时 {minutes} 分"
    if minutes:
        return f"{minutes} 分 {seconds} 秒"
    return f"{seconds} 秒"


def _fit(text: str) -> str:
    """Cut markdown to the robot's limit (a single alert's block never reaches it in practice)."""
    data = text.encode("utf-8")
    if len(data) <= MARKDOWN_MAX_BYTES:
        return text
    return data[: MARKDOWN_MAX_BYTES - 3].decode("utf-8", errors="ignore") + "…"


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# -- sending ----------------------------------------------------------------------------------


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.notifications = Counter(
            "hallgw_webhook_notifications_total",
            "Alert notifications by webhook (its index in alerts.webhooks) and what became of "
            "them: sent, failed (given up after retries), dropped (the queue was full)",
            ["webhook", "result"],
            registry=registry,
        )

    def declare(self, index: int) -> None:
        for result in ("sent", "failed", "dropped"):
            self.notifications.labels(str(index), result)


class WebhookSender:
    """One webhook: its queue and the task that sends it (`run`)."""

    def __init__(
        self,
        index: int,
        config: WebhookConfig,
        url: Secret,
        hall: Hall,
        metrics: WebhookMetrics,
    ) -> None:
        self.index = index
        self.config = config
        self.name = f"webhook {index} ({config.format})"
        self._url = url
        self._hall = hall
        self._metrics = metrics
        self._queue: collections.deque[Notification] = collections.deque()
        self._waiting = asyncio.Event()
        self._sent_at: collections.deque[float] = collections.deque(maxlen=ROBOT_MAX_PER_MINUTE)
        metrics.declare(index)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def same_target(self, config: WebhookConfig, url: Secret) -> bool:
        return config.format == self.config.format and url == self._url

    def retarget(self, config: WebhookConfig, hall: Hall) -> None:
        """The same endpoint with new severities or a new hall name (a reload)."""
        self.config = config
        self._hall = hall

    def give_up(self) -> None:
        """This webhook is no longer configured: what it still holds is counted as failed."""
        self._count("failed", len(self._queue))
        self._queue.clear()

    def offer(self, notification: Notification) -> None:
        """Queue a notification if this webhook takes its severity; never waits."""
        if notification.alert.severity not in self.config.severities:
            return
        if len(self._queue) >= QUEUE_MAX:
            self._queue.popleft()
            self._count("dropped", 1)
            log.warning("%s: %d notifications waiting; dropped the oldest", self.name, QUEUE_MAX)
        self._queue.append(notification)
        self._waiting.set()

    async def run(self) -> None:
        """Send what is queued until cancelled."""
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        headers = {"User-Agent": f"hallgw/{__version__}", "Content-Type": "application/json"}
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            while True:
                while not self._queue:
                    self._waiting.clear()
                    await self._waiting.wait()
                await self._pace()
                body, count = render(self.config.format, list(self._queue), self._hall)
                batch = [self._queue.popleft() for _ in range(count)]
                delivered = await self._deliver(session, body)
                self._count("sent" if delivered else "failed", len(batch))

    async def _deliver(self, session: aiohttp.ClientSession, body: bytes) -> bool:
        backoff = Backoff(RETRY_INITIAL_S, RETRY_MAX_S)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            self._sent_at.append(asyncio.get_running_loop().time())
            try:
                await self._post(session, body)
            except WebhookError as err:
                if err.permanent or attempt == MAX_ATTEMPTS:
                    log.error("%s: %s; message given up after %d attempts", self.name, err, attempt)
                    return False
                delay = backoff.next()
                log.warning("%s: %s; trying again in %.0f s", self.name, err, delay)
                await asyncio.sleep(delay)
            else:
                return True
        return False  # pragma: no cover  # the loop returns on its last attempt

    async def _post(self, session: aiohttp.ClientSession, body: bytes) -> None:
        try:
            async with session.post(self._url.value, data=body) as response:
                text = await response.text(errors="replace")
                status = response.status
        except TimeoutError:
            raise WebhookError(f"no answer in {REQUEST_TIMEOUT_S:.0f} s") from None
        except (aiohttp.ClientError, OSError) as err:
            # aiohttp's messages carry the URL or its host, a secret: say what failed, not where
            errno = err.errno if isinstance(err, OSError) else None
            why = os.strerror(errno) if errno else type(err).__name__
            raise WebhookError(f"cannot post: {why}") from None
        if not 200 <= status < 300:
            raise WebhookError(f"HTTP {status}", permanent=status in _PERMANENT_HTTP)
        if self.config.format != "generic":
            _check_robot_answer(text)

    async def _pace(self) -> None:
        """At most ROBOT_MAX_PER_MINUTE messages (attempts included) in any minute."""
        if len(self._sent_at) < ROBOT_MAX_PER_MINUTE:
            return
        wait = (
            self._sent_at[-ROBOT_MAX_PER_MINUTE] + RATE_WINDOW_S - asyncio.get_running_loop().time()
        )
        if wait > 0:
            await asyncio.sleep(wait)

    def _count(self, result: str, n: int) -> None:
        self._metrics.notifications.labels(str(self.index), result).inc(n)


def _check_robot_answer(text: str) -> None:
    """WeCom and DingTalk answer HTTP 200 with `{"errcode":0,"errmsg":"ok"}`, or another errcode
    (rate limited, keyword missing, bad key…), which is a failure."""
    try:
        answer = json.loads(text)
    except ValueError:
        raise WebhookError("the robot's answer is not JSON") from None
    code = answer.get("errcode") if isinstance(answer, dict) else None
    if code != 0:
        message = str(answer.get("errmsg", ""))[:120] if isinstance(answer, dict) else ""
        raise WebhookError(f"errcode {code}: {message}")


class Webhooks:
    """Every configured webhook; `offer` hands a notification to each that takes its severity."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.metrics = WebhookMetrics(registry)
        self.senders: list[WebhookSender] = []
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._group: asyncio.TaskGroup | None = None

    def configure(
        self,
        hooks: Iterable[tuple[int, WebhookConfig, Secret]],
        hall: Hall,
    ) -> None:
        """Use these webhooks from now on. Notifications still queued for one that stays (same
        index, format and address) keep their place; the others' are given up."""
        previous = {s.index: s for s in self.senders}
        senders: list[WebhookSender] = []
        for index, config, url in hooks:
            old = previous.pop(index, None)
            if old is not None and old.same_target(config, url):
                old.retarget(config, hall)
                senders.append(old)
                continue
            if old is not None:
                previous[index] = old
            senders.append(WebhookSender(index, config, url, hall, self.metrics))
        for gone in previous.values():
            gone.give_up()
            task = self._tasks.pop(gone.index, None)
            if task is not None:
                task.cancel()
        self.senders = senders
        if self._group is not None:
            self._start_missing(self._group)

    def offer(self, notification: Notification) -> None:
        for sender in self.senders:
            sender.offer(notification)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            try:
                self._start_missing(group)
                await asyncio.Event().wait()
            finally:
                self._group = None

    def _start_missing(self, group: asyncio.TaskGroup) -> None:
        for sender in self.senders:
            task = self._tasks.get(sender.index)
            if task is None or task.done():
                # a sender cancelled by `configure` ends alone: a task group takes a cancelled
                # child as done, not as a failure
                self._tasks[sender.index] = group.create_task(
                    sender.run(), name=f"webhook-{sender.index}"
                )
