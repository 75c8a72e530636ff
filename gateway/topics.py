"""The MQTT contract's topics and retained payloads (shared/contract/mqtt.md). Pure functions."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from gateway import CONTRACT_VERSION, __version__
from gateway.clock import iso
from gateway.devices import DeviceStatus
from gateway.events import Event
from gateway.store import OutboxMessage

GATEWAY_STATE = "gateway/state"
GATEWAY_HEALTH = "gateway/health"
COMMAND_REPLY = "cmd/reply/{request_id}"


def dumps(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def event_topic(event: Event) -> str:
    return f"events/{event.kind}/{event.topic_subject}"


def event_messages(event: Event, payload: str | None = None) -> Sequence[OutboxMessage]:
    """The outbox messages of an event; `payload` is its JSON when the caller has it already."""
    return (
        OutboxMessage(
            topic=event_topic(event),
            payload=(event.payload_json() if payload is None else payload).encode("utf-8"),
            received_at=event.received_at.timestamp(),
            event_id=event.event_id,
        ),
    )


def gateway_online(started_at_iso: str) -> bytes:
    return dumps(
        {
            "v": 1,
            "state": "online",
            "version": __version__,
            "contract": CONTRACT_VERSION,
            "started_at": started_at_iso,
        }
    )


GATEWAY_OFFLINE = dumps({"v": 1, "state": "offline"})


def availability(status: DeviceStatus) -> tuple[str, bytes]:
    payload: dict[str, Any] = {
        "v": 1,
        "device_id": status.device_id,
        "kind": status.kind,
        "state": status.state,
        "since": iso(status.since),
        "reason": status.reason,
    }
    return f"devices/{status.device_id}/availability", dumps(payload)


def device_state(status: DeviceStatus) -> tuple[str, bytes] | None:
    """The device's latest readings; None until it has reported any."""
    if status.values_ts is None:
        return None
    payload = {
        "v": 1,
        "device_id": status.device_id,
        "kind": status.kind,
        "ts": iso(status.values_ts),
        "values": dict(status.values),
    }
    return f"devices/{status.device_id}/state", dumps(payload)


def command_reply(request_id: str, error: str | None) -> tuple[str, bytes]:
    payload: dict[str, Any] = {"v": 1, "request_id": request_id, "ok": error is None}
    if error is not None:
        payload["error"] = error
    return COMMAND_REPLY.format(request_id=request_id), dumps(payload)


def device_list(statuses: Sequence[DeviceStatus]) -> list[dict[str, Any]]:
    """GET /api/v1/devices (http.md)."""
    return [
        {
            "device_id": s.device_id,
            "kind": s.kind,
            "state": s.state,
            "since": iso(s.since),
            "reason": s.reason,
            "values": dict(s.values),
        }
        for s in statuses
    ]
