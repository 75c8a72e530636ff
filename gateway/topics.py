"""The MQTT contract's topics and retained payloads (shared/contract/mqtt.md). Pure functions."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gateway import CONTRACT_VERSION, __version__
from gateway.clock import iso
from gateway.devices import DeviceStatus
from gateway.events import AlertEvent, Event
from gateway.store import OutboxMessage

if TYPE_CHECKING:
    from gateway.config import StaffConfig, WindowConfig
    from gateway.presence import Board, StaffView, WindowView

GATEWAY_STATE = "gateway/state"
GATEWAY_HEALTH = "gateway/health"
COMMAND_REPLY = "cmd/reply/{request_id}"
BOARD = "board"
ALERT = "alerts/{alert_id}"


def dumps(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def event_topic(event: Event) -> str:
    return f"events/{event.kind}/{event.topic_subject}"


def event_messages(event: Event, payload: str | None = None) -> Sequence[OutboxMessage]:
    """The outbox messages of an event; `payload` is its JSON when the caller has it already.

    An alert's change also carries its retained topic, in the same commit and in order after
    the event: the alert's state while it fires, an empty payload (cleared) once resolved
    (mqtt.md, Alerts). The outbox keeps that order across broker outages and restarts.
    """
    message = OutboxMessage(
        topic=event_topic(event),
        payload=(event.payload_json() if payload is None else payload).encode("utf-8"),
        received_at=event.received_at.timestamp(),
        event_id=event.event_id,
    )
    if not isinstance(event, AlertEvent):
        return (message,)
    topic = ALERT.format(alert_id=event.alert_id)
    retained = b""
    if event.status == "firing":
        retained = alert_state(
            alert_id=event.alert_id,
            rule=event.rule,
            severity=event.severity,
            subject=event.subject,
            summary=event.summary,
            started_at=event.started_at,
        )
    state = OutboxMessage(
        topic=topic, payload=retained, received_at=event.received_at.timestamp(), retain=True
    )
    return (message, state)


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


def mask_name(name: str) -> str:
    """`张三` → `张*` (board.mask_names): the family name stays, the given name is starred."""
    return name if len(name) <= 1 else name[0] + "*" * (len(name) - 1)


def window_topic(window_id: str) -> str:
    return f"windows/{window_id}/state"


def staff_topic(staff_id: str) -> str:
    return f"staff/{staff_id}/presence"


def window_state(view: WindowView, window: WindowConfig) -> dict[str, Any]:
    """`…/windows/{window_id}/state` and an item of `GET /api/v1/windows`."""
    return {
        "v": 1,
        "window_id": view.window_id,
        "name": window.name,
        "department": window.department,
        "status": view.status,
        "staff_id": view.staff_id,
        "covering": view.covering,
        "ticket": view.ticket,
        "since": iso(view.since),
    }


def staff_presence(view: StaffView, person: StaffConfig, *, mask: bool) -> dict[str, Any]:
    """`…/staff/{staff_id}/presence` and an item of `GET /api/v1/staff`."""
    return {
        "v": 1,
        "staff_id": view.staff_id,
        "name": mask_name(person.name) if mask else person.name,
        "window_id": person.window,
        "post": person.post,
        "status": view.status,
        "since": iso(view.since),
        "outing": None if view.outing is None else view.outing.payload(),
        "flags": list(view.flags),
    }


def board_payload(
    board: Board,
    staff: Mapping[str, StaffConfig],
    windows: Mapping[str, WindowConfig],
    *,
    mask: bool,
    ts: dt.datetime,
) -> dict[str, Any]:
    """`…/board`, `GET /api/v1/board` and the board's server-sent events."""

    def name(staff_id: str) -> str:
        person = staff[staff_id]
        return mask_name(person.name) if mask else person.name

    def window_name(window_id: str | None) -> str | None:
        window = windows.get(window_id) if window_id is not None else None
        return None if window is None else window.name or window.id

    out = []
    for view in board.out:
        assert view.outing is not None
        person = staff[view.staff_id]
        window_id = view.outing.window_id or person.window
        out.append(
            {
                "staff_id": view.staff_id,
                "name": name(view.staff_id),
                "window_id": window_id,
                "window_name": window_name(window_id),
                "reason": view.outing.reason,
                "since": iso(view.outing.started_at),
                "expected_back": iso(view.outing.expected_back),
                "overdue": view.outing.overdue,
            }
        )
    counts: dict[str, int] = dict(board.staff_counts.items())
    counts.update(board.window_counts.items())
    counts["staff_total"] = sum(board.staff_counts.values())
    counts["windows_total"] = sum(board.window_counts.values())
    return {
        "v": 1,
        "ts": iso(ts),
        "out": out,
        "off_post": [
            {
                "staff_id": view.staff_id,
                "name": name(view.staff_id),
                "window_id": staff[view.staff_id].window,
                "window_name": window_name(staff[view.staff_id].window),
                "since": iso(view.since),
            }
            for view in board.off_post
        ],
        "unattended_windows": [
            {
                "window_id": view.window_id,
                "name": window_name(view.window_id),
                "since": iso(view.since),
            }
            for view in board.unattended
        ],
        "on_leave": [
            {"staff_id": staff_id, "name": name(staff_id), "window_id": staff[staff_id].window}
            for staff_id in board.on_leave
        ],
        "counts": counts,
    }


def alert_fields(
    *,
    alert_id: str,
    rule: str,
    severity: str,
    subject: Mapping[str, str],
    summary: str,
    started_at: dt.datetime,
) -> dict[str, Any]:
    """A firing alert as `…/alerts/{alert_id}` and `GET /api/v1/alerts` show it."""
    return {
        "v": 1,
        "alert_id": alert_id,
        "rule": rule,
        "severity": severity,
        "status": "firing",
        "subject": dict(subject),
        "summary": summary,
        "started_at": iso(started_at),
    }


def alert_state(
    *,
    alert_id: str,
    rule: str,
    severity: str,
    subject: Mapping[str, str],
    summary: str,
    started_at: dt.datetime,
) -> bytes:
    """The retained payload of `…/alerts/{alert_id}` while the alert fires."""
    return dumps(
        alert_fields(
            alert_id=alert_id,
            rule=rule,
            severity=severity,
            subject=subject,
            summary=summary,
            started_at=started_at,
        )
    )
