"""The two HTTP listeners of the contract (shared/contract/http.md): main and device.

The main listener serves operators and the hall screen (health, metrics, the board, the API);
the device listener serves devices that push (punch clocks, kiosks). Both bind to loopback
unless configured otherwise.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.config import Config
from gateway.devices import DeviceHub
from gateway.metrics import Metrics
from gateway.topics import device_list

log = logging.getLogger(__name__)

# http.md: request bodies over 1 MiB get 413
MAX_BODY_BYTES: Final = 1024 * 1024

HealthCheck = Callable[[], str | None]  # None when healthy, else the reason
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as JSON `{"error": …}`, except on /iclock, where clocks expect plain text."""
    try:
        return await handler(request)
    except web.HTTPException as err:
        if request.path.startswith("/iclock") or err.status < 400:
            raise
        return json_error(err.status, err.reason)


def main_app(
    config: Config,
    hub: DeviceHub,
    metrics: Metrics,
    health: HealthCheck,
) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_json_errors])

    async def healthz(_request: web.Request) -> web.Response:
        problem = health()
        if problem is not None:
            return web.json_response({"status": "error", "reason": problem}, status=503)
        return web.json_response({"status": "ok"})

    async def prometheus(_request: web.Request) -> web.Response:
        response = web.Response(body=metrics.exposition())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response

    async def devices(_request: web.Request) -> web.Response:
        return web.json_response(device_list(hub.statuses()), dumps=_dumps)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/api/v1/devices", devices)
    return app


def device_app() -> web.Application:
    """The device listener; drivers add their routes (`/iclock/…`, `/ingest/…`) to it."""
    return web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_json_errors])


class HttpServer:
    """Both listeners, as one async context manager."""

    def __init__(self, config: Config, main: web.Application, devices: web.Application) -> None:
        self._config = config
        self._apps = {
            "main": (main, config.http.port),
            "device": (devices, config.http.device_port),
        }
        self._runners: list[web.AppRunner] = []

    async def __aenter__(self) -> HttpServer:
        try:
            for name, (app, port) in self._apps.items():
                runner = web.AppRunner(app, access_log=None, handle_signals=False)
                await runner.setup()
                self._runners.append(runner)
                site = web.TCPSite(runner, self._config.http.bind, port, reuse_address=True)
                await site.start()
                log.info("%s listener on http://%s:%d", name, self._config.http.bind, port)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
