"""Normalized facts, as the MQTT contract publishes them (shared/contract/mqtt.md, Events).

Drivers build these; they know nothing of topics. Every event carries a stable `event_id`:
the same fact, published again, has the same id.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, PlainSerializer

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
    def subject(self) -> str:
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


def received_now(now: dt.datetime) -> dict[str, dt.datetime]:
    """`ts` and `received_at` for a fact whose device gives no time of its own."""
    return {"ts": now, "received_at": now}
