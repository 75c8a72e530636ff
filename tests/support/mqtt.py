"""An MQTT client for tests: records what arrives and waits for conditions, with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

import aiomqtt


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Recorder:
    """Subscribes to `topics` and keeps every message; `wait_for` polls until a condition holds."""

    def __init__(
        self,
        port: int,
        topics: list[str],
        *,
        username: str | None = None,
        password: str | None = None,
        tls_ca: str | None = None,
        persistent_id: str | None = None,
    ) -> None:
        """`persistent_id`: keep a broker session under this client id, so that messages sent
        while the recorder reconnects (a broker restart with persistence) are not missed."""
        self.messages: list[Received] = []
        self._persistent_id = persistent_id
        self._port = port
        self._topics = topics
        self._username = username
        self._password = password
        self._tls_ca = tls_ca
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._arrived = asyncio.Event()

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._listen(), name="test-recorder")
        async with asyncio.timeout(10):
            await self._subscribed.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def on(self, topic_suffix: str) -> list[Received]:
        return [m for m in self.messages if m.topic.endswith(topic_suffix)]

    def payloads(self, topic_suffix: str) -> list[Any]:
        return [m.json() for m in self.on(topic_suffix) if m.payload]

    def last(self, topic_suffix: str) -> Any:
        """The newest payload on a topic ending in `topic_suffix`, or None."""
        found = self.payloads(topic_suffix)
        return found[-1] if found else None

    def events(self, kind: str) -> list[Any]:
        return [m.json() for m in self.messages if f"/events/{kind}/" in m.topic]

    async def wait_for(
        self, condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition"
    ) -> Any:
        """Wait until `condition()` is truthy (checked on every message and every 50 ms)."""
        try:
            async with asyncio.timeout(timeout):
                while not (result := condition()):
                    self._arrived.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.05):
                            await self._arrived.wait()
                return result
        except TimeoutError:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; "
                f"{len(self.messages)} messages, last: {self.messages[-5:]}"
            ) from None

    async def _listen(self) -> None:
        tls_context = ssl.create_default_context(cafile=self._tls_ca) if self._tls_ca else None
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1",
                    self._port,
                    username=self._username,
                    password=self._password,
                    tls_context=tls_context,
                    identifier=self._persistent_id,
                    clean_session=False if self._persistent_id is not None else None,
                ) as client:
                    for topic in self._topics:
                        await client.subscribe(topic, qos=1)
                    self._subscribed.set()
                    async for message in client.messages:
                        payload = message.payload if isinstance(message.payload, bytes) else b""
                        self.messages.append(
                            Received(message.topic.value, payload, bool(message.retain))
                        )
                        self._arrived.set()
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)  # the broker is being restarted by the test


async def publish(port: int, topic: str, payload: bytes | str, **auth: Any) -> None:
    async with aiomqtt.Client("127.0.0.1", port, **auth) as client:
        await client.publish(topic, payload, qos=1)
