"""Commands over MQTT (`…/cmd/…`): parsed, validated, dispatched, and answered exactly once.

Every command gets one answer on `…/cmd/reply/{request_id}`. A malformed command is answered
when it carries a usable `request_id`, counted, and changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.clock import Clock
from gateway.errors import StoreError
from gateway.metrics import Metrics
from gateway.store import OutboxMessage, Store
from gateway.topics import command_reply

log = logging.getLogger(__name__)

REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# commands that may run at once; a flood waits rather than spawning without bound
IN_PARALLEL: Final = 32
# a command body larger than this is refused unread (a display text is a few hundred bytes)
MAX_COMMAND_BYTES: Final = 64 * 1024


class CommandRejected(Exception):
    """The command is well-formed but cannot be carried out; the message goes in the reply."""


class CommandModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str = Field(pattern=REQUEST_ID.pattern)


class DisplayCommand(CommandModel):
    text: str = Field(min_length=1, max_length=2000)
    seconds: float = Field(default=60, gt=0, le=86_400)


Handler = Callable[[str | None, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class _Route:
    handler: Handler
    with_subject: bool  # `cmd/display/{device_id}` carries a subject; `cmd/outing` does not


class CommandRouter:
    def __init__(self, store: Store, metrics: Metrics, clock: Clock) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._routes: dict[str, _Route] = {}
        self._slots = asyncio.Semaphore(IN_PARALLEL)
        self._tasks: set[asyncio.Task[None]] = set()

    def register(self, name: str, handler: Handler, *, with_subject: bool = False) -> None:
        self._routes[name] = _Route(handler, with_subject)

    def topic_filters(self) -> list[str]:
        return [
            f"cmd/{name}/+" if route.with_subject else f"cmd/{name}"
            for name, route in sorted(self._routes.items())
        ]

    async def receive(self, topic: str, payload: bytes) -> None:
        """Take one message from the broker; handling runs in its own task."""
        await self._slots.acquire()
        task = asyncio.create_task(self._handle(topic, payload), name=f"command {topic}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _handle(self, topic: str, payload: bytes) -> None:
        try:
            await self._dispatch(topic, payload)
        except StoreError as err:
            log.error("command at %s: reply not queued: %s", topic, err)

    async def _dispatch(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        name = parts[1] if len(parts) >= 2 and parts[0] == "cmd" else ""
        route = self._routes.get(name)
        label = name if route is not None else "unknown"
        if route is None or len(parts) != (3 if route.with_subject else 2):
            await self._refuse(label, _request_id_of(payload), f"no command at topic {topic}")
            return
        subject = parts[2] if route.with_subject else None
        if len(payload) > MAX_COMMAND_BYTES:
            await self._refuse(label, None, f"body over {MAX_COMMAND_BYTES} bytes")
            return
        try:
            body = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            await self._refuse(label, None, f"body is not JSON: {err}")
            return
        if not isinstance(body, dict):
            await self._refuse(label, None, "body must be a JSON object")
            return
        request_id = body.get("request_id")
        if not isinstance(request_id, str) or not REQUEST_ID.match(request_id):
            await self._refuse(label, None, "request_id must match [A-Za-z0-9_-]{1,64}")
            return
        try:
            await route.handler(subject, body)
        except ValidationError as err:
            await self._refuse(label, request_id, _validation_message(err))
        except CommandRejected as err:
            self._metrics.commands.labels(label, "rejected").inc()
            await self._reply(request_id, str(err))
        except Exception:  # a bug in one handler must not take the command listener down
            log.exception("command %s %s failed", label, request_id)
            self._metrics.commands.labels(label, "error").inc()
            await self._reply(request_id, "internal error; see the gateway's log")
        else:
            self._metrics.commands.labels(label, "ok").inc()
            await self._reply(request_id, None)

    async def _refuse(self, command: str, request_id: str | None, error: str) -> None:
        self._metrics.commands.labels(command, "malformed").inc()
        log.info("command %s refused: %s", command, error)
        if request_id is not None:
            await self._reply(request_id, error)

    async def _reply(self, request_id: str, error: str | None) -> None:
        topic, payload = command_reply(request_id, error)
        await self._store.enqueue(
            [OutboxMessage(topic=topic, payload=payload, received_at=self._clock.timestamp())]
        )


def _request_id_of(payload: bytes) -> str | None:
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    request_id = body.get("request_id") if isinstance(body, dict) else None
    return request_id if isinstance(request_id, str) and REQUEST_ID.match(request_id) else None


def _validation_message(err: ValidationError) -> str:
    parts = []
    for error in err.errors():
        field = ".".join(str(p) for p in error["loc"]) or "body"
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{field}: {message}")
    return "; ".join(parts)
