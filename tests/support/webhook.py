"""A webhook endpoint for tests: a local aiohttp server that records what is POSTed and answers
like a WeCom or DingTalk group robot (`{"errcode":0,"errmsg":"ok"}`), or fails on demand."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

from aiohttp import web


@dataclass(frozen=True)
class Received:
    path: str
    body: Any
    content_type: str


class WebhookReceiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.attempts = 0
        # the next answers, one per request: an HTTP status, or a robot errcode with HTTP 200
        self.answers: list[int | tuple[str, int]] = []
        self.port: int | None = None
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port}/cgi-bin/webhook/send?key=secret-key-4c1d"

    @property
    def bodies(self) -> list[Any]:
        return [r.body for r in self.received]

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._post)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(
        self, condition: Callable[[], Any], timeout: float = 10.0, what: str = "webhook"
    ) -> Any:
        try:
            async with asyncio.timeout(timeout):
                while not (result := condition()):
                    self._arrived.clear()
                    await self._arrived.wait()
                return result
        except TimeoutError:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; got {self.bodies}"
            ) from None

    async def _post(self, request: web.Request) -> web.Response:
        self.attempts += 1
        raw = await request.read()
        answer: int | tuple[str, int] = self.answers.pop(0) if self.answers else 200
        try:
            if answer == 200:
                with contextlib.suppress(ValueError):
                    body = json.loads(raw)
                    self.received.append(Received(request.path_qs, body, request.content_type))
                return web.json_response({"errcode": 0, "errmsg": "ok"})
            if isinstance(answer, tuple):
                return web.json_response({"errcode": answer[1], "errmsg": answer[0]})
            return web.Response(status=answer, text="failing on purpose")
        finally:
            self._arrived.set()
