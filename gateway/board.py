"""The hall board: the page for the hall's screen, its server-sent events, the same news on the
LED strips, and `hallgw board --snapshot` for a terminal at the desk.

The page (`GET /board`, `gateway/static/`) needs nothing from outside the gateway: it opens
`GET /board/events` with `EventSource`, which the browser reopens by itself after a gateway
restart (and the page reopens it itself if the browser gives up), so it never needs a reload.
The stream sends `event: board` (the board JSON, as MQTT `…/board`) on every change and every
HEARTBEAT_S, and `event: windows` (every window's floor and status, for the page's grid; the
board lists only unattended ones) whenever a window changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from html import escape
from importlib import resources
from typing import Any, Final, Protocol, TextIO

from aiohttp import web

from gateway.config import Config, load_config_or_report
from gateway.ledger import display_width
from gateway.screens import ContentError, Screens

log = logging.getLogger(__name__)

# http.md: an event at least every 15 s; this leaves room for a slow network
HEARTBEAT_S: Final = 10.0
# EventSource reconnects this long after the gateway went away (its default is ~3 s)
RETRY_MS: Final = 2000
LED_SOURCE: Final = "presence"
# routine news: an operator's notice at a higher priority outranks it on the strips
LED_PRIORITY: Final = 0
# an LED strip pages through its lines; past this many the news is summarised
LED_MAX_LINES: Final = 20
# the desk's terminal asks the running gateway; a gateway that does not answer by then is down
SNAPSHOT_TIMEOUT_S: Final = 5.0
STATIC_FILES: Final = {
    "board.css": "text/css",
    "board.js": "application/javascript",
}
STAFF_LABELS: Final = {
    "on_post": "在岗",
    "standby": "待岗",
    "out": "外出",
    "off_post": "离岗",
    "on_leave": "请假",
    "not_arrived": "未到岗",
    "off_duty": "非工作时间",
}
WINDOW_LABELS: Final = {
    "serving": "办理中",
    "idle": "空闲",
    "paused": "暂停服务",
    "unattended": "空岗",
    "closed": "关闭",
}
REASON_LABELS: Final = {"official": "因公", "private": "因私"}


class BoardSource(Protocol):
    config: Config
    feed: BoardFeed

    def board(self) -> dict[str, Any]: ...

    def window_grid(self) -> list[dict[str, Any]]: ...


class BoardFeed:
    """Tells every open event stream that the board may have changed."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()
        self._closing = False

    def changed(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def close(self, _app: web.Application) -> None:
        """The gateway stops: end every stream now (aiohttp waits for open handlers)."""
        self._closing = True
        self.changed()

    async def stream(self, request: web.Request, source: BoardSource) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        sent_windows = ""
        try:
            await response.write(f"retry: {RETRY_MS}\n\n".encode())
            while not self._closing:
                changed = self._changed
                windows = _compact(source.window_grid())
                if windows != sent_windows:
                    await response.write(_event("windows", windows))
                    sent_windows = windows
                await response.write(_event("board", _compact(source.board())))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(HEARTBEAT_S):
                        await changed.wait()
        except ConnectionResetError:  # the screen went away; aiohttp's own error subclasses it
            pass
        return response


class BoardScreens:
    """The board's news as short lines on every LED strip (gateway.screens)."""

    def __init__(self, screens: Screens) -> None:
        self._screens = screens
        self._shown: list[str] | None = None

    def show(self, board: dict[str, Any]) -> None:
        lines = led_lines(board)
        if lines == self._shown:
            return
        self._shown = lines
        if not lines:
            self._screens.withdraw(LED_SOURCE)
            return
        try:
            self._screens.show(LED_SOURCE, lines, priority=LED_PRIORITY)
        except ContentError as err:  # too much for the strips: say so, keep the board
            self._screens.withdraw(LED_SOURCE)
            log.warning("board news not shown on the LED strips: %s", err)


def led_lines(board: dict[str, Any]) -> list[str]:
    """One short line per fact: who is out (and until when), who is off-post, which windows
    have nobody."""
    lines = []
    for item in board["out"]:
        back = _hhmm(item["expected_back"])
        where = item["window_name"] or ""
        if item["overdue"]:
            lines.append(f"外出超时 {item['name']} {where} 应{back}返回".replace("  ", " "))
        else:
            lines.append(f"外出 {item['name']} {where} {back}前返回".replace("  ", " "))
    lines.extend(
        f"离岗 {item['name']} {item['window_name'] or ''}".strip() for item in board["off_post"]
    )
    lines.extend(f"空岗 {item['name']}" for item in board["unattended_windows"])
    if len(lines) > LED_MAX_LINES:
        rest = len(lines) - (LED_MAX_LINES - 1)
        lines = [*lines[: LED_MAX_LINES - 1], f"另有{rest}条 详见大厅显示屏"]
    return lines


def install_board(app: web.Application, source: BoardSource) -> None:
    static = resources.files("gateway").joinpath("static")
    page = static.joinpath("board.html").read_text(encoding="utf-8")
    assets = {name: static.joinpath(name).read_bytes() for name in STATIC_FILES}

    async def board_page(_request: web.Request) -> web.Response:
        html = page.replace("{{hall_name}}", escape(source.config.display_name))
        return web.Response(
            text=html,
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in assets:
            raise web.HTTPNotFound(reason=f"no board asset {name}")
        return web.Response(
            body=assets[name],
            content_type=STATIC_FILES[name],
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    async def events(request: web.Request) -> web.StreamResponse:
        return await source.feed.stream(request, source)

    async def board_json(_request: web.Request) -> web.Response:
        return web.json_response(source.board(), dumps=_compact)

    app.router.add_get("/board", board_page)
    app.router.add_get("/board/static/{name}", asset)
    app.router.add_get("/board/events", events)
    app.router.add_get("/api/v1/board", board_json)
    app.on_shutdown.append(source.feed.close)


# -- hallgw board --snapshot -------------------------------------------------------------------


def print_snapshot(config_path: str, out: TextIO | None = None) -> int:
    """Ask the running gateway for its board and print it as tables; the exit status."""
    out = out or sys.stdout
    config = load_config_or_report(config_path)
    if config is None:
        return 2  # DEVELOPERS.md: config errors exit 2
    host = config.http.bind
    if host in ("", "0.0.0.0", "::"):  # noqa: S104  # a wildcard bind is reached on loopback
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{config.http.port}/api/v1/board"
    try:
        with urllib.request.urlopen(url, timeout=SNAPSHOT_TIMEOUT_S) as response:
            board = json.loads(response.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError) as err:
        print(f"cannot read the board from {url}: {err}", file=sys.stderr)  # noqa: T201
        print("is the gateway running (hallgw run -c …)?", file=sys.stderr)  # noqa: T201
        return 1
    out.write(snapshot_text(board, config.display_name))
    return 0


def snapshot_text(board: dict[str, Any], title: str) -> str:
    ts = str(board.get("ts", ""))
    lines = [f"{title}  {ts[:10]} {ts[11:19]}", ""]
    out = board["out"]
    lines.append(f"外出 ({len(out)})")
    lines.extend(
        _table(
            ["姓名", "窗口", "事由", "外出", "预计返回", ""],
            [
                [
                    i["name"],
                    i["window_name"] or "",
                    REASON_LABELS.get(i["reason"], i["reason"]),
                    _hhmm(i["since"]),
                    _hhmm(i["expected_back"]),
                    "超时" if i["overdue"] else "",
                ]
                for i in out
            ],
        )
    )
    off_post = board["off_post"]
    lines.append(f"离岗 ({len(off_post)})")
    lines.extend(
        _table(
            ["姓名", "窗口", "离岗起"],
            [[i["name"], i["window_name"] or "", _hhmm(i["since"])] for i in off_post],
        )
    )
    unattended = board["unattended_windows"]
    lines.append(f"空岗窗口 ({len(unattended)})")
    lines.extend(
        _table(
            ["窗口", "空岗起"],
            [[i["name"] or i["window_id"], _hhmm(i["since"])] for i in unattended],
        )
    )
    leave = board["on_leave"]
    lines.append(
        f"请假 ({len(leave)})" + (": " + " ".join(i["name"] for i in leave) if leave else "")
    )
    lines.append("")
    counts = board["counts"]
    lines.append(
        "人员: "
        + "  ".join(f"{label} {counts.get(key, 0)}" for key, label in STAFF_LABELS.items())
        + f"  (共 {counts.get('staff_total', 0)})"
    )
    lines.append(
        "窗口: "
        + "  ".join(f"{label} {counts.get(key, 0)}" for key, label in WINDOW_LABELS.items())
        + f"  (共 {counts.get('windows_total', 0)})"
    )
    return "\n".join(lines) + "\n"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    if not rows:
        return ["  (无)", ""]
    widths = [max(display_width(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return (
            "  "
            + "  ".join(
                c + " " * (w - display_width(c)) for c, w in zip(cells, widths, strict=True)
            ).rstrip()
        )

    return [line(header), *(line(r) for r in rows), ""]


def _hhmm(stamp: str | None) -> str:
    return "" if not stamp else stamp[11:16]


def _event(name: str, data: str) -> bytes:
    return f"event: {name}\ndata: {data}\n\n".encode()


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
