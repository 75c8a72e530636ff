"""Outings (外出): what a registration looks like, and the hall's rules for it (domain.md).

Pure: an outing is a fact with a start, an expected return and, once over, an end; the rules
judge a request against the person's other outings of the day. The presence engine holds the
outings; the presence service journals them (as `outing` events) and serves the API.

The rules, each `enforce` (refused, 409, the rule named) or `warn` (accepted, flagged):
- `private_approval`: a private outing longer than `private_approval_over_min` (and not longer
  than `replacement_over_min`) needs `approved_by` (the hall office's approval);
- `replacement`: any outing longer than `replacement_over_min` needs `replacement_staff_id`
  (代班, the department sends someone);
- `max_per_day`, `max_minutes_per_day`: at most so many outings, and so many minutes of them, a
  person a day. They count private outings, unless `daily_limits_include_official`: official
  business over an hour is allowed with a replacement, which a daily hour for every outing
  would forbid. Minutes count what has been spent (an outing still running counts up to its
  expected return, or up to now if later) plus what the new one asks for.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.clock import iso
from gateway.config import OutingRule, OutingRules
from gateway.configbase import IDENT_PATTERN

Reason = Literal["official", "private"]
EndedBy = Literal["api", "command", "returned", "day_end"]
OUTING_RULES: Final[tuple[OutingRule, ...]] = (
    "private_approval",
    "replacement",
    "max_per_day",
    "max_minutes_per_day",
)
# flags an outing can carry besides the rules it was let through under `warn`
OVERDUE: Final = "overdue"
# free text (an approver's name, who ended it) is kept short: it is shown on screens
MAX_TEXT: Final = 64


class OutingRequest(BaseModel):
    """`POST /api/v1/outings` (http.md), and the fields of `cmd/outing` with `action: start`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    staff_id: str = Field(pattern=IDENT_PATTERN, max_length=64)
    reason: Reason
    expected_minutes: int = Field(gt=0, le=24 * 60)
    approved_by: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT)
    replacement_staff_id: str | None = Field(default=None, pattern=IDENT_PATTERN, max_length=64)


class OutingEnd(BaseModel):
    """`POST /api/v1/outings/{outing_id}/end`: `{}` or `{"ended_by": …}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ended_by: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT)


@dataclass(frozen=True)
class Outing:
    outing_id: str
    staff_id: str
    window_id: str | None
    reason: Reason
    started_at: dt.datetime
    expected_back: dt.datetime
    approved_by: str | None
    replacement_staff_id: str | None
    # the rules it broke and was let through under `warn`; `overdue` once past expected_back
    flags: tuple[str, ...] = ()
    ended_at: dt.datetime | None = None
    ended_by: str | None = None

    def running(self, at: dt.datetime) -> bool:
        return self.started_at <= at and (self.ended_at is None or at < self.ended_at)

    @property
    def overdue(self) -> bool:
        return OVERDUE in self.flags

    @property
    def rule_flags(self) -> tuple[str, ...]:
        return tuple(f for f in self.flags if f != OVERDUE)

    def minutes_spent(self, at: dt.datetime) -> int:
        """Minutes this outing counts against the daily limit at `at`."""
        end = self.ended_at if self.ended_at is not None else max(self.expected_back, at)
        return math.ceil(max(0.0, (end - self.started_at).total_seconds()) / 60)

    def with_flag(self, flag: str) -> Outing:
        return self if flag in self.flags else replace(self, flags=(*self.flags, flag))

    def ended(self, at: dt.datetime, by: str | None) -> Outing:
        return replace(self, ended_at=max(at, self.started_at), ended_by=by)

    def payload(self) -> dict[str, Any]:
        """The outing as the API returns it (http.md): `ended_at` is null while it runs."""
        return {
            "outing_id": self.outing_id,
            "staff_id": self.staff_id,
            "window_id": self.window_id,
            "reason": self.reason,
            "started_at": iso(self.started_at),
            "expected_back": iso(self.expected_back),
            "approved_by": self.approved_by,
            "replacement_staff_id": self.replacement_staff_id,
            "flags": list(self.flags),
            "ended_at": None if self.ended_at is None else iso(self.ended_at),
            "ended_by": self.ended_by,
        }


@dataclass(frozen=True)
class Breach:
    rule: OutingRule
    message: str
    enforced: bool


@dataclass(frozen=True)
class Judgement:
    breaches: tuple[Breach, ...] = field(default=())

    @property
    def refusal(self) -> Breach | None:
        """The first rule that refuses the request, or None: accepted."""
        return next((b for b in self.breaches if b.enforced), None)

    @property
    def flags(self) -> tuple[str, ...]:
        """The rules an accepted request broke (all of them under `warn`)."""
        return tuple(b.rule for b in self.breaches)


def judge(
    request: OutingRequest, today: Iterable[Outing], rules: OutingRules, at: dt.datetime
) -> Judgement:
    """The hall's outing rules over a request, given the person's outings of the day."""
    minutes = request.expected_minutes
    breaches: list[Breach] = []

    def broke(rule: OutingRule, message: str) -> None:
        breaches.append(Breach(rule, message, rules.mode_of(rule) == "enforce"))

    if (
        request.reason == "private"
        and rules.private_approval_over_min < minutes <= rules.replacement_over_min
        and request.approved_by is None
    ):
        broke(
            "private_approval",
            f"a private outing over {rules.private_approval_over_min} min needs approved_by",
        )
    if minutes > rules.replacement_over_min and request.replacement_staff_id is None:
        broke(
            "replacement",
            f"an outing over {rules.replacement_over_min} min needs replacement_staff_id",
        )
    if request.reason == "private" or rules.daily_limits_include_official:
        counted = [o for o in today if counts_daily(o, rules)]
        if len(counted) + 1 > rules.max_per_day:
            broke(
                "max_per_day",
                f"{len(counted)} outings today already; at most {rules.max_per_day} a day",
            )
        spent = sum(o.minutes_spent(at) for o in counted)
        if spent + minutes > rules.max_minutes_per_day:
            broke(
                "max_minutes_per_day",
                f"{spent} min out today already, {minutes} more would pass"
                f" {rules.max_minutes_per_day} min a day",
            )
    return Judgement(tuple(breaches))


def counts_daily(outing: Outing, rules: OutingRules) -> bool:
    return outing.reason == "private" or rules.daily_limits_include_official


def limits_exceeded(today: Iterable[Outing], rules: OutingRules, at: dt.datetime) -> bool:
    """The person's day is past a daily limit in fact (an outing overran, or warn let it in)."""
    counted = [o for o in today if counts_daily(o, rules) and o.started_at <= at]
    if len(counted) > rules.max_per_day:
        return True
    spent = 0
    for outing in counted:
        end = outing.ended_at if outing.ended_at is not None else at
        spent += math.ceil(max(0.0, (min(end, at) - outing.started_at).total_seconds()) / 60)
    return spent > rules.max_minutes_per_day


def outing_id(staff_id: str, day: dt.date, number: int) -> str:
    """Readable and stable: the person, the day and the outing's number that day."""
    return f"{staff_id}-{day:%Y%m%d}-{number}"
