"""The MQTT publisher: the only part of the gateway that talks to the broker.

paho-mqtt runs its network loop in its own thread (its threaded mode): it connects, reconnects
with capped backoff, keeps the session alive, and re-sends whatever QoS 1 message it holds that
the broker has not acknowledged. The publisher hands it messages from the store's outbox, in
order, and deletes a row only when its PUBACK arrives, so events survive broker outages and
gateway restarts. Acknowledgements come back to the event loop in batches.

Retained state (gateway, devices, and what later sinks register) is held in memory and handed
to paho again in full on every (re)connect, so a broker restarted without persistence loses
nothing consumers need.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from gateway.clock import Clock
from gateway.config import Config, Secrets
from gateway.errors import StoreError
from gateway.metrics import Metrics
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
# outbox rows handed to paho and not yet acknowledged; bounds paho's memory while it waits
MAX_HANDED: Final = 2048
# outbox rows read per query while draining
FETCH_BATCH: Final = 500
# committed rows kept in memory for the publisher while it keeps up; past this it reads the store
FRESH_MAX: Final = 20_000
# acknowledged rows are deleted in groups, at most this long after their PUBACK
ACK_FLUSH_S: Final = 0.05
# a deletion the store refused (a full disk) is tried again this much later, not 20 times a second
ACK_RETRY_S: Final = 1.0
# mqtt.md: health within 5 s of each connect, then every 30 s
HEALTH_EVERY_S: Final = 30.0
# a lost broker is retried after 1 s at first, doubling to every 30 s at most
RECONNECT_MIN_S: Final = 1
RECONNECT_MAX_S: Final = 30
# a broker that takes the TCP connection but sends no CONNACK is treated as down
CONNECT_TIMEOUT_S: Final = 10.0
# a stopping gateway waits this long for the broker to take its `offline` state
GOODBYE_TIMEOUT_S: Final = 2.0
# commands waiting for the router; a flood past this is dropped and counted
COMMAND_INBOX_MAX: Final = 10_000

CommandSink = Callable[[str, bytes], Awaitable[None]]
HealthSource = Callable[[], Mapping[str, Any]]


class _TlsContext(ssl.SSLContext):
    """paho does not close the socket it wrapped when the TLS handshake fails (the socket is a
    local variable of its `_ssl_wrap_socket`); remembering every socket this context wraps lets
    the publisher close those of failed attempts."""

    wrapped: list[ssl.SSLSocket]

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        sock = super().wrap_socket(*args, **kwargs)
        self.wrapped.append(sock)
        return sock

    def close_unused(self, in_use: object) -> None:
        for sock in [s for s in self.wrapped if s is not in_use]:
            sock.close()
            self.wrapped.remove(sock)


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
        self._inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(COMMAND_INBOX_MAX)
        self.connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        # set once the first connection has handed paho the start-up state, or has failed
        self.first_attempt = asyncio.Event()
        # what paho holds for us, by message id: outbox rows, retained topics, awaited publishes
        self._handed_rows: dict[int, OutboxRow] = {}
        self._handed_topics: dict[int, str] = {}
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._last_handed = 0
        # while caught up, every row committed past `_last_handed` is in `_fresh`, in id order,
        # so the drain need not read back what the store has just written
        self._fresh: collections.deque[OutboxRow] = collections.deque()
        self._caught_up = False
        store.follow_outbox(self._rows_committed)
        self._room = asyncio.Event()
        self._acked_rows: list[int] = []
        self._acks: collections.deque[int] = collections.deque()
        self._acks_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: paho.Client | None = None
        self._tls: _TlsContext | None = None
        self._stopping = False

    def set_retained(self, topic: str, payload: bytes) -> None:
        """Hold `payload` as the retained state of `topic` (relative to the root) and publish it.

        An empty payload clears the topic at the broker.
        """
        if self._retained.get(topic) == payload:
            return
        self._retained[topic] = payload
        self._dirty[topic] = None
        self._dirty_signal.set()

    def hold_retained(self, topic: str, payload: bytes | None) -> None:
        """Hold `payload` as `topic`'s retained state for every (re)connect, without publishing
        it now (None: forget the topic). For state whose changes reach the broker through the
        outbox, in order with their events (alerts), and that must still come back after a
        broker restart without persistence."""
        self._dirty.pop(topic, None)
        if payload is None:
            self._retained.pop(topic, None)
        else:
            self._retained[topic] = payload

    def retained(self, topic: str) -> bytes | None:
        return self._retained.get(topic)

    def on_commands(self, topic_filters: list[str], sink: CommandSink) -> None:
        """Subscribe to `topic_filters` (relative) and hand every message to `sink`."""
        self._command_filters = topic_filters
        self._command_sink = sink

    async def run(self) -> None:
        """Stay connected until cancelled; on a clean stop, publish `offline` first."""
        self._loop = asyncio.get_running_loop()
        client = self._client = self._make_client()
        mqtt = self._config.mqtt
        client.connect_async(mqtt.host, mqtt.port, keepalive=mqtt.keepalive_s)
        client.loop_start()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._drain_outbox(), name="mqtt-outbox")
                group.create_task(self._delete_acked(), name="mqtt-outbox-acks")
                group.create_task(self._flush_retained(), name="mqtt-retained")
                group.create_task(self._publish_health(), name="mqtt-health")
                group.create_task(self._dispatch_commands(), name="mqtt-commands")
        finally:
            await self._say_goodbye(client)
            await asyncio.to_thread(client.loop_stop)
            await self._forget_acknowledged()
            if self._tls is not None:
                self._tls.close_unused(None)
            self.connected.clear()
            self._metrics.mqtt_connected.set(0)

    def _make_client(self) -> paho.Client:
        mqtt = self._config.mqtt
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._config.mqtt_client_id,
            clean_session=True,
        )
        if mqtt.username is not None:
            password = self._secrets.mqtt_password.value if self._secrets.mqtt_password else None
            client.username_pw_set(mqtt.username, password)
        if mqtt.tls.enabled:
            tls = _TlsContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the peer and its host name
            tls.wrapped = []
            if mqtt.tls.ca_file is not None:
                tls.load_verify_locations(cafile=mqtt.tls.ca_file)
            else:
                tls.load_default_certs()
            if mqtt.tls.cert_file is not None:
                tls.load_cert_chain(mqtt.tls.cert_file, mqtt.tls.key_file)
            client.tls_set_context(tls)
            self._tls = tls
        client.connect_timeout = CONNECT_TIMEOUT_S
        client.will_set(f"{self.root}/{GATEWAY_STATE}", GATEWAY_OFFLINE, qos=QOS, retain=True)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.on_connect = self._paho_connected
        client.on_connect_fail = self._paho_connect_failed
        client.on_disconnect = self._paho_disconnected
        client.on_publish = self._paho_published
        client.on_message = self._paho_message
        return client

    # -- paho's network thread: hand everything to the event loop ------------------------------

    def _paho_connected(
        self, client: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any
    ) -> None:
        if reason.is_failure:
            self._from_paho(self._connect_refused, str(reason))
            return
        for topic in self._command_filters:
            client.subscribe(f"{self.root}/{topic}", qos=QOS)
        if self._tls is not None:
            self._tls.close_unused(client.socket())
        self._from_paho(self._on_connected)

    def _paho_connect_failed(self, client: paho.Client, _u: Any) -> None:
        if self._tls is not None:
            self._tls.close_unused(client.socket())
        self._from_paho(self._connect_refused, "no connection")

    def _paho_disconnected(
        self, _c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any
    ) -> None:
        self._from_paho(self._on_disconnected, str(reason))

    def _paho_published(self, _c: paho.Client, _u: Any, mid: int, _r: Any, _p: Any) -> None:
        # called with paho's lock held, once per PUBACK: queue it, wake the loop once a batch
        self._acks.append(mid)
        if not self._acks_scheduled:
            self._acks_scheduled = True
            self._from_paho(self._take_acks)

    def _paho_message(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        self._from_paho(self._queue_command, message.topic, bytes(message.payload))

    def _from_paho(self, callback: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop has closed: we are stopping anyway
            self._loop.call_soon_threadsafe(callback, *args)

    # -- the event loop ------------------------------------------------------------------------

    def _on_connected(self) -> None:
        mqtt = self._config.mqtt
        log.info("MQTT connected to %s:%d", mqtt.host, mqtt.port)
        self._metrics.mqtt_connected.set(1)
        self._hand(GATEWAY_STATE, gateway_online(self._started_at), retain=True)
        self._dirty.clear()
        for topic in list(self._retained):
            self._hand_retained(topic)
        self.first_attempt.set()
        self._disconnected.clear()
        self.connected.set()
        self._room.set()

    def _connect_refused(self, why: str) -> None:
        mqtt = self._config.mqtt
        log.warning(
            "MQTT %s:%d: %s; retrying (every %d s at most)",
            mqtt.host,
            mqtt.port,
            why,
            RECONNECT_MAX_S,
        )
        self.first_attempt.set()

    def _on_disconnected(self, why: str) -> None:
        if self._stopping:
            log.info("MQTT disconnected (stopping)")
        elif self.connected.is_set():
            log.warning("MQTT disconnected: %s", why)
        self.connected.clear()
        self._disconnected.set()
        self._metrics.mqtt_connected.set(0)

    def _take_acks(self) -> None:
        self._acks_scheduled = False
        now = self._clock.timestamp()
        while self._acks:
            mid = self._acks.popleft()
            self._metrics.mqtt_published.inc()
            row = self._handed_rows.pop(mid, None)
            if row is not None:
                self._acked_rows.append(row.id)
                if row.event_id is not None:
                    self._metrics.event_publish_latency.observe(max(0.0, now - row.received_at))
            topic = self._handed_topics.pop(mid, None)
            if topic is not None and self._retained.get(topic) == b"":
                del self._retained[topic]  # cleared at the broker; nothing left to re-publish
            waiter = self._waiters.pop(mid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        if len(self._handed_rows) < MAX_HANDED:
            self._room.set()

    def _queue_command(self, topic: str, payload: bytes) -> None:
        try:
            self._inbox.put_nowait((topic, payload))
        except asyncio.QueueFull:
            self._metrics.commands.labels("unknown", "dropped").inc()
            log.warning("%d commands waiting: %s dropped", COMMAND_INBOX_MAX, topic)

    def _hand(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        """Give paho a message; it keeps it until the broker has acknowledged it."""
        assert self._client is not None
        return self._client.publish(f"{self.root}/{topic}", payload, qos=QOS, retain=retain).mid

    def _hand_retained(self, topic: str) -> None:
        self._handed_topics[self._hand(topic, self._retained.get(topic, b""), retain=True)] = topic

    def _rows_committed(self, rows: list[OutboxRow]) -> None:
        if not self._caught_up:
            return  # the drain reads them from the store
        if len(self._fresh) + len(rows) > FRESH_MAX:
            self._caught_up = False  # too far behind (the broker is away): back to the store
            self._fresh.clear()
            return
        self._fresh.extend(rows)

    async def _drain_outbox(self) -> None:
        while True:
            await self.connected.wait()
            if len(self._handed_rows) >= MAX_HANDED:
                self._room.clear()
                await self._room.wait()
                continue
            rows = await self._next_rows()
            if not rows:
                self._store.outbox_signal.clear()
                if not self._fresh or not self._caught_up:
                    await self._store.outbox_signal.wait()
                continue
            for row in rows:
                if not self.connected.is_set() or len(self._handed_rows) >= MAX_HANDED:
                    break
                mid = self._hand(row.topic, row.payload, retain=row.retain)
                self._handed_rows[mid] = row
                self._last_handed = row.id
            if self._caught_up:  # what was not handed goes back, in order
                self._fresh.extendleft(reversed([r for r in rows if r.id > self._last_handed]))

    async def _next_rows(self) -> list[OutboxRow]:
        """The next rows to hand over: from memory while caught up, else from the store."""
        if self._caught_up:
            rows: list[OutboxRow] = []
            while self._fresh and len(rows) < FETCH_BATCH:
                row = self._fresh.popleft()
                if row.id > self._last_handed:
                    rows.append(row)
            return rows
        # from now on every commit also lands in `_fresh`; rows seen both ways are skipped by id
        self._caught_up = True
        self._fresh.clear()
        rows = await self._store.outbox_after(self._last_handed, FETCH_BATCH)
        if len(rows) == FETCH_BATCH:
            self._caught_up = False  # more wait in the store: read it again next time
            self._fresh.clear()
        return rows

    async def _delete_acked(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(ACK_RETRY_S if failing else ACK_FLUSH_S)
            if not self._acked_rows:
                continue
            batch, self._acked_rows = self._acked_rows, []
            try:
                await self._store.outbox_remove(batch)
            except StoreError as err:
                # the store takes no writes (a full disk): the rows stay, already handed over,
                # and are deleted once it does; a restart before then sends them again, at
                # least once, with their event_ids
                self._acked_rows[:0] = batch
                if not failing:
                    log.warning("%d acknowledged messages stay in the outbox: %s", len(batch), err)
                failing = True
            else:
                if failing:
                    log.info("acknowledged messages are deleted from the outbox again")
                failing = False

    async def _forget_acknowledged(self) -> None:
        """On the way out: what the broker acknowledged must not be sent again after a restart."""
        self._take_acks()
        if self._acked_rows:
            batch, self._acked_rows = self._acked_rows, []
            try:
                await self._store.outbox_remove(batch)
            except StoreError as err:  # they will be sent again: at least once, same event_id
                log.warning("%d acknowledged messages stay in the outbox: %s", len(batch), err)

    async def _flush_retained(self) -> None:
        while True:
            await self._dirty_signal.wait()
            self._dirty_signal.clear()
            if not self.connected.is_set():
                continue  # everything is handed again on the next connect
            while self._dirty:
                topic = next(iter(self._dirty))
                del self._dirty[topic]
                self._hand_retained(topic)

    async def _publish_health(self) -> None:
        while True:
            await self.connected.wait()
            self._hand(GATEWAY_HEALTH, dumps(self._health()), retain=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEALTH_EVERY_S):
                    await self._disconnected.wait()

    async def _dispatch_commands(self) -> None:
        prefix = f"{self.root}/"
        while True:
            topic, payload = await self._inbox.get()
            if self._command_sink is not None and topic.startswith(prefix):
                await self._command_sink(topic[len(prefix) :], payload)

    async def _say_goodbye(self, client: paho.Client) -> None:
        """A clean stop: say so ourselves; the broker sends the last will only if we vanish."""
        self._stopping = True
        if self.connected.is_set():
            assert self._loop is not None
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._waiters[self._hand(GATEWAY_STATE, GATEWAY_OFFLINE, retain=True)] = waiter
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                    await waiter
            client.disconnect()
            with contextlib.suppress(TimeoutError):  # let paho's thread send the DISCONNECT
                async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                    await self._disconnected.wait()
