"""The event bus: a fact is stored first (journal and outbox in one commit), then fanned out.

`publish` returns only after the commit, so a driver may acknowledge the device as soon as it
returns. Each in-process sink (presence, alerts, board) has its own bounded queue, so a slow sink
never stalls a driver; a fact a full queue cannot take is counted and logged (it is still in the
journal and on its way to MQTT).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Final

from prometheus_client import Counter

from gateway.clock import iso
from gateway.events import Event
from gateway.metrics import Metrics
from gateway.store import JournalEntry, OutboxMessage, Store

log = logging.getLogger(__name__)

# a sink that is this far behind is stuck, not busy; newer facts are dropped for it
SINK_QUEUE_MAX: Final = 10_000

# an event and its JSON (encoded once, for the journal and the outbox alike) → its messages
OutboxEncoder = Callable[[Event, str], Sequence[OutboxMessage]]


def journal_entry(
    event: Event, payload: str | None = None, *, flags: str = "", published: bool = True
) -> JournalEntry:
    return JournalEntry(
        event_id=event.event_id,
        kind=event.kind,
        subject=event.topic_subject,
        device_id=event.device_id,
        ts=iso(event.ts),
        ts_epoch=event.ts.timestamp(),
        received_at=iso(event.received_at),
        payload=event.payload_json() if payload is None else payload,
        published=published,
        flags=flags,
    )


class EventBus:
    def __init__(self, store: Store, encode: OutboxEncoder, metrics: Metrics) -> None:
        self._store = store
        self._encode = encode
        self._metrics = metrics
        self._sinks: dict[str, asyncio.Queue[Event]] = {}
        self._counters: dict[str, Counter] = {}  # labels() is a lookup with a lock, per event

    def subscribe(self, name: str, maxsize: int = SINK_QUEUE_MAX) -> asyncio.Queue[Event]:
        if name in self._sinks:
            raise ValueError(f"sink {name} is already subscribed")
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self._sinks[name] = queue
        return queue

    async def publish(
        self, event: Event, *, cursor: tuple[str, str] | None = None, flags: str = ""
    ) -> bool:
        """Store and queue `event` for MQTT, then hand it to the sinks. False: a known fact."""
        payload = event.payload_json()
        fresh = await self._store.record(
            journal_entry(event, payload, flags=flags), self._encode(event, payload), cursor
        )
        if fresh:
            self._fan_out(event)
        return fresh

    async def publish_many(
        self, events: Sequence[tuple[Event, str]], *, cursor: tuple[str, str] | None = None
    ) -> list[bool]:
        """Store several (event, flags) and a cursor in one commit; a device's batch is
        acknowledged whole."""
        encoded = [(event, flags, event.payload_json()) for event, flags in events]
        fresh = await self._store.record_many(
            [
                (journal_entry(event, payload, flags=flags), self._encode(event, payload))
                for event, flags, payload in encoded
            ],
            cursor,
        )
        for (event, _flags), new in zip(events, fresh, strict=True):
            if new:
                self._fan_out(event)
        return fresh

    async def note(self, entry: JournalEntry, *, cursor: tuple[str, str] | None = None) -> bool:
        """Journal a fact that is not published (an operation log line, an unmapped key)."""
        return await self._store.record(entry, (), cursor)

    def _fan_out(self, event: Event) -> None:
        counter = self._counters.get(event.kind)
        if counter is None:
            counter = self._counters[event.kind] = self._metrics.events.labels(event.kind)
        counter.inc()
        for name, queue in self._sinks.items():
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._metrics.sink_dropped.labels(name).inc()
                log.warning(
                    "sink %s is %d facts behind; %s not handed to it",
                    name,
                    queue.qsize(),
                    event.event_id,
                )
