"""Normalized facts, as the MQTT contract publishes them (shared/contract/mqtt.md, Events).

Drivers build these; they know nothing of topics. Every event carries a stable `event_id`:
the same fact, published again, has the same id.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer

from gateway.clock import iso

HallTime = Annotated[AwareDatetime, PlainSerializer(iso, return_type=str)]

# mqtt.md: 5 = 非常满意 … 1 = 非常不满意 (the national 好差评 scale)
RATING_LABELS: dict[int, str] = {
    5: "非常满意",
    4: "满意",
    3: "基本满意",
    2: "不满意",
    1: "非常不满意",
}


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    event_id: str
    kind: str
    ts: HallTime
    received_at: HallTime
    device_id: str | None

    @property
    def topic_subject(self) -> str:
        """The last level of the event's topic: the reporting device, unless the kind says not."""
        if self.device_id is None:
            raise ValueError(f"{self.kind} event {self.event_id} has no subject")
        return self.device_id

    def payload_json(self) -> str:
        return self.model_dump_json()


class RatingEvent(Event):
    kind: Literal["rating"] = "rating"
    window_id: str
    staff_id: str | None
    level: Literal[1, 2, 3, 4, 5]
    label: str
    ticket: str | None = None


PadAction = Literal["login", "logout", "pause", "resume", "fault"]


class PadEvent(Event):
    kind: Literal["pad"] = "pad"
    window_id: str
    action: PadAction
    staff_id: str | None
    code: int | None = None


PunchDirection = Literal["in", "out", "break_out", "break_in", "ot_in", "ot_out"]
VerifyMode = Literal["fingerprint", "card", "face", "password", "palm", "other"]


class PunchEvent(Event):
    kind: Literal["punch"] = "punch"
    staff_id: str | None
    pin: str
    direction: PunchDirection
    verify: VerifyMode
    late_minutes: int | None = None
    early_minutes: int | None = None


QueueAction = Literal[
    "called", "recalled", "skipped", "finished", "paused", "resumed", "opened", "closed"
]


class QueueEvent(Event):
    kind: Literal["queue"] = "queue"
    window_id: str
    action: QueueAction
    ticket: str | None
    service: int | None
    waiting: int | None


class KioskEvent(Event):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    kind: Literal["kiosk"] = "kiosk"
    peripheral: str
    from_: str = Field(alias="from")
    to: str
    raw: str | None = None

    def payload_json(self) -> str:
        return self.model_dump_json(by_alias=True)


class OutingEvent(Event):
    kind: Literal["outing"] = "outing"
    staff_id: str
    window_id: str | None
    action: Literal["start", "end", "overdue"]
    reason: Literal["official", "private"]
    expected_back: HallTime | None
    approved_by: str | None
    replacement_staff_id: str | None

    @property
    def topic_subject(self) -> str:
        return self.staff_id


class AttendanceEvent(Event):
    kind: Literal["attendance"] = "attendance"
    staff_id: str
    action: Literal["late", "early_leave", "absent", "no_punch"]
    minutes: int | None

    @property
    def topic_subject(self) -> str:
        return self.staff_id


class AlertEvent(Event):
    """An alert's change, on `…/events/alert/{alert_id}` (mqtt.md, Alerts)."""

    kind: Literal["alert"] = "alert"
    alert_id: str
    rule: str
    severity: Literal["critical", "warning", "info"]
    status: Literal["firing", "resolved"]
    subject: dict[str, str]
    summary: str
    started_at: HallTime
    ended_at: HallTime | None = None

    @property
    def topic_subject(self) -> str:
        return self.alert_id
