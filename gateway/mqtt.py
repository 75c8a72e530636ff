"""The MQTT publisher: the only part of the gateway that talks to the broker.

Events come from the store's outbox, in order, and leave it only when the broker has
acknowledged them (QoS 1), so they survive broker outages and gateway restarts. Retained state
(gateway, devices, and what later sinks register) is held in memory and published again in full
after every (re)connect, so a broker restarted without persistence loses nothing consumers need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import aiomqtt

from gateway.clock import Clock
from gateway.config import Config, Secrets
from gateway.metrics import Metrics
from gateway.runner import Backoff
from gateway.store import OutboxRow, Store
from gateway.topics import (
    GATEWAY_HEALTH,
    GATEWAY_OFFLINE,
    GATEWAY_STATE,
    dumps,
    gateway_online,
)

log = logging.getLogger(__name__)

QOS: Final = 1  # mqtt.md: QoS 1 for everything the gateway publishes
# messages on the wire awaiting PUBACK; enough to fill a LAN round trip, few enough to resend
MAX_INFLIGHT: Final = 256
# outbox rows read per query while draining
FETCH_BATCH: Final = 500
# acknowledged rows are deleted in groups, at most this long after their PUBACK
ACK_FLUSH_S: Final = 0.05
ACK_FLUSH_ROWS: Final = 1000
# mqtt.md: health within 5 s of each connect, then every 30 s
HEALTH_EVERY_S: Final = 30.0
# a lost broker is retried fast at first, then every half minute at most
RECONNECT_INITIAL_S: Final = 1.0
RECONNECT_MAX_S: Final = 30.0
# how long one publish may wait for its PUBACK before the connection counts as broken
PUBACK_TIMEOUT_S: Final = 30.0
# a broker that takes the TCP connection but sends no CONNACK is treated as down
CONNECT_TIMEOUT_S: Final = 10.0
# a stopping gateway waits this long for the broker to take its `offline` state
GOODBYE_TIMEOUT_S: Final = 2.0
# commands handled at once; the rest wait in aiomqtt's queue
COMMANDS_IN_PARALLEL: Final = 32

CommandSink = Callable[[str, bytes], Awaitable[None]]
HealthSource = Callable[[], Mapping[str, Any]]


class _TlsContext(ssl.SSLContext):
    """paho does not close the socket it wrapped when the TLS handshake fails (the socket is a
    local variable of its `_ssl_wrap_socket`); remembering every socket this context wraps lets
    the publisher close it after a failed connect."""

    wrapped: list[ssl.SSLSocket]

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        sock = super().wrap_socket(*args, **kwargs)
        self.wrapped.append(sock)
        return sock

    def close_wrapped(self) -> None:
        for sock in self.wrapped:
            sock.close()
        self.wrapped.clear()


class MqttPublisher:
    def __init__(
        self,
        config: Config,
        secrets: Secrets,
        store: Store,
        metrics: Metrics,
        clock: Clock,
        *,
        health: HealthSource,
        started_at: str,
    ) -> None:
        self.root = config.mqtt_root
        self._config = config
        self._secrets = secrets
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._health = health
        self._started_at = started_at
        self._retained: dict[str, bytes] = {}
        self._dirty: dict[str, None] = {}
        self._dirty_signal = asyncio.Event()
        self._command_filters: list[str] = []
        self._command_sink: CommandSink | None = None
        self.connected = asyncio.Event()
        # set once the first connection has published the start-up state, or has failed
        self.first_attempt = asyncio.Event()

    def set_retained(self, topic: str, payload: bytes) -> None:
        """Hold `payload` as the retained state of `topic` (relative to the root) and publish it.

        An empty payload clears the topic at the broker.
        """
        if self._retained.get(topic) == payload:
            return
        self._retained[topic] = payload
        self._dirty[topic] = None
        self._dirty_signal.set()

    def retained(self, topic: str) -> bytes | None:
        return self._retained.get(topic)

    def on_commands(self, topic_filters: list[str], sink: CommandSink) -> None:
        """Subscribe to `topic_filters` (relative) and hand every message to `sink`."""
        self._command_filters = topic_filters
        self._command_sink = sink

    async def run(self) -> None:
        """Stay connected until cancelled."""
        backoff = Backoff(RECONNECT_INITIAL_S, RECONNECT_MAX_S)
        while True:
            client, tls = self._client()
            try:
                async with contextlib.AsyncExitStack() as stack:
                    await self._connect(stack, client)
                    backoff.reset()
                    await self._session(client)
            except* aiomqtt.MqttError as group:
                self.first_attempt.set()
                log.warning(
                    "MQTT %s:%d: %s",
                    self._config.mqtt.host,
                    self._config.mqtt.port,
                    "; ".join(str(e) for e in group.exceptions),
                )
            finally:
                self.connected.clear()
                self._metrics.mqtt_connected.set(0)
                if tls is not None:
                    tls.close_wrapped()
            await asyncio.sleep(backoff.next())

    def _client(self) -> tuple[aiomqtt.Client, _TlsContext | None]:
        mqtt = self._config.mqtt
        password = self._secrets.mqtt_password.value if self._secrets.mqtt_password else None
        tls_context = None
        if mqtt.tls.enabled:
            tls_context = _TlsContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies peer and host name
            tls_context.wrapped = []
            if mqtt.tls.ca_file is not None:
                tls_context.load_verify_locations(cafile=mqtt.tls.ca_file)
            else:
                tls_context.load_default_certs()
            if mqtt.tls.cert_file is not None:
                tls_context.load_cert_chain(mqtt.tls.cert_file, mqtt.tls.key_file)
        client = aiomqtt.Client(
            mqtt.host,
            mqtt.port,
            identifier=self._config.mqtt_client_id,
            username=mqtt.username,
            password=password,
            keepalive=mqtt.keepalive_s,
            will=aiomqtt.Will(
                f"{self.root}/{GATEWAY_STATE}", GATEWAY_OFFLINE, qos=QOS, retain=True
            ),
            tls_context=tls_context,
            clean_session=True,
            max_inflight_messages=MAX_INFLIGHT,
            # aiomqtt waits with asyncio.wait_for, which on Python 3.11 can swallow a
            # cancellation that coincides with the answer (fixed in 3.12); with no timeout it
            # is a plain await, and our own asyncio.timeout bounds every wait instead
            timeout=math.inf,
        )
        # aiomqtt warns past 10 pending calls; a full in-flight window is our normal state
        client.pending_calls_threshold = MAX_INFLIGHT * 4
        return client, tls_context

    async def _session(self, client: aiomqtt.Client) -> None:
        log.info("MQTT connected to %s:%d", self._config.mqtt.host, self._config.mqtt.port)
        self._metrics.mqtt_connected.set(1)
        try:
            await self._publish(
                client, GATEWAY_STATE, gateway_online(self._started_at), retain=True
            )
            for topic in self._command_filters:
                try:
                    async with asyncio.timeout(PUBACK_TIMEOUT_S):
                        await client.subscribe(f"{self.root}/{topic}", qos=QOS, timeout=math.inf)
                except TimeoutError as err:
                    raise aiomqtt.MqttError(f"no SUBACK for {topic}") from err
            self._dirty.clear()
            await asyncio.gather(
                *(self._publish_retained(client, topic) for topic in list(self._retained))
            )
            self.first_attempt.set()
            self.connected.set()
            async with asyncio.TaskGroup() as group:
                group.create_task(self._drain_outbox(client), name="mqtt-outbox")
                group.create_task(self._flush_retained(client), name="mqtt-retained")
                group.create_task(self._publish_health(client), name="mqtt-health")
                group.create_task(self._listen(client), name="mqtt-commands")
        except asyncio.CancelledError:
            # a clean stop: say so ourselves, the broker sends the last will only when we vanish
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                    await self._publish(client, GATEWAY_STATE, GATEWAY_OFFLINE, retain=True)
            raise

    async def _connect(self, stack: contextlib.AsyncExitStack, client: aiomqtt.Client) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await stack.enter_async_context(client)
        except TimeoutError as err:
            raise aiomqtt.MqttError(f"no CONNACK within {CONNECT_TIMEOUT_S:.0f} s") from err

    async def _publish(
        self, client: aiomqtt.Client, topic: str, payload: bytes, *, retain: bool = False
    ) -> None:
        try:
            async with asyncio.timeout(PUBACK_TIMEOUT_S):
                await client.publish(
                    f"{self.root}/{topic}", payload, qos=QOS, retain=retain, timeout=math.inf
                )
        except TimeoutError as err:
            raise aiomqtt.MqttError(f"no PUBACK within {PUBACK_TIMEOUT_S:.0f} s") from err
        self._metrics.mqtt_published.inc()

    async def _drain_outbox(self, client: aiomqtt.Client) -> None:
        window = asyncio.Semaphore(MAX_INFLIGHT)
        acked: list[int] = []
        last_id = 0  # after a reconnect everything still in the outbox is sent again, in order
        async with asyncio.TaskGroup() as group:
            group.create_task(self._delete_acked(acked), name="mqtt-outbox-acks")
            while True:
                rows = await self._next_rows(last_id)
                for row in rows:
                    await window.acquire()
                    # a task starts in creation order and hands its message to paho before its
                    # first await, so messages leave in outbox order
                    group.create_task(self._publish_row(client, row, window, acked))
                    last_id = row.id

    async def _next_rows(self, last_id: int) -> list[OutboxRow]:
        while True:
            rows = await self._store.outbox_after(last_id, FETCH_BATCH)
            if rows:
                return rows
            self._store.outbox_signal.clear()
            rows = await self._store.outbox_after(last_id, FETCH_BATCH)
            if rows:
                return rows
            await self._store.outbox_signal.wait()

    async def _publish_row(
        self,
        client: aiomqtt.Client,
        row: OutboxRow,
        window: asyncio.Semaphore,
        acked: list[int],
    ) -> None:
        try:
            await self._publish(client, row.topic, row.payload, retain=row.retain)
        finally:
            window.release()
        acked.append(row.id)
        if row.event_id is not None:
            latency = self._clock.timestamp() - row.received_at
            self._metrics.event_publish_latency.observe(max(0.0, latency))

    async def _delete_acked(self, acked: list[int]) -> None:
        try:
            while True:
                await asyncio.sleep(ACK_FLUSH_S)
                while acked:
                    batch = acked[:ACK_FLUSH_ROWS]
                    del acked[: len(batch)]
                    await self._store.outbox_remove(batch)
        finally:
            if acked:
                # the connection is gone but these were acknowledged: forget them, best effort
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._store.outbox_remove(list(acked)))

    async def _flush_retained(self, client: aiomqtt.Client) -> None:
        window = asyncio.Semaphore(MAX_INFLIGHT)
        async with asyncio.TaskGroup() as group:
            while True:
                await self._dirty_signal.wait()
                self._dirty_signal.clear()
                while self._dirty:
                    topic = next(iter(self._dirty))
                    del self._dirty[topic]
                    await window.acquire()
                    group.create_task(self._publish_retained(client, topic, window))

    async def _publish_retained(
        self, client: aiomqtt.Client, topic: str, window: asyncio.Semaphore | None = None
    ) -> None:
        payload = self._retained.get(topic, b"")
        try:
            await self._publish(client, topic, payload, retain=True)
        except aiomqtt.MqttError:
            self._dirty[topic] = None  # the next connection publishes it
            raise
        finally:
            if window is not None:
                window.release()
        if payload == b"" and self._retained.get(topic) == b"":
            del self._retained[topic]  # cleared at the broker; nothing left to re-publish

    async def _publish_health(self, client: aiomqtt.Client) -> None:
        while True:
            await self._publish(client, GATEWAY_HEALTH, dumps(self._health()), retain=True)
            await asyncio.sleep(HEALTH_EVERY_S)

    async def _listen(self, client: aiomqtt.Client) -> None:
        prefix = f"{self.root}/"
        async for message in client.messages:
            topic = message.topic.value
            if self._command_sink is None or not topic.startswith(prefix):
                continue
            payload = message.payload if isinstance(message.payload, bytes) else b""
            await self._command_sink(topic[len(prefix) :], payload)
