"""The kiosk agent's status JSON (devices.md §5), parsed and normalized. Pure: no I/O.

`state` and every peripheral's value are normalized to the contract's words; anything else becomes
`unknown` with the kiosk's own word kept beside it, so a new agent version that says `sleeping` is
still understood as "something we do not know", not as a broken kiosk. A body that is not this
JSON at all (not an object, no `state` or `peripherals`, wrong types) is a KioskPayloadError.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

KioskState = Literal["ready", "busy", "maintenance", "error", "unknown"]
PeripheralState = Literal["ok", "paper_low", "paper_out", "jam", "offline", "error", "unknown"]
UNKNOWN: Final = "unknown"
KIOSK_STATES: Final[frozenset[str]] = frozenset({"ready", "busy", "maintenance", "error"})
PERIPHERAL_STATES: Final[frozenset[str]] = frozenset(
    {"ok", "paper_low", "paper_out", "jam", "offline", "error"}
)
# a kiosk has a handful of peripherals; a body with hundreds is not a status
MAX_PERIPHERALS: Final = 32
# a kiosk's own word for a state is kept for people to read; a longer one is cut
MAX_RAW_CHARS: Final = 64
PERIPHERAL_NAME: Final = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
RawValue = StrictStr | int | float | bool | None


class KioskPayloadError(ValueError):
    """A body that is not the kiosk status JSON."""


@dataclass(frozen=True)
class Peripheral:
    state: PeripheralState
    raw: str | None = None  # the kiosk's own word when `state` is unknown


@dataclass(frozen=True)
class KioskStatus:
    state: KioskState
    state_raw: str | None
    peripherals: Mapping[str, Peripheral]
    kiosk_id: str | None = None
    uptime_s: int | None = None
    app_version: str | None = None
    ts: dt.datetime | None = None  # as the kiosk sent it; naive if it sent no offset


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    kiosk_id: StrictStr | None = Field(default=None, max_length=64)
    state: RawValue
    uptime_s: StrictInt | None = Field(default=None, ge=0)
    app_version: StrictStr | None = Field(default=None, max_length=64)
    ts: dt.datetime | None = None
    peripherals: dict[str, RawValue] = Field(max_length=MAX_PERIPHERALS)


def parse_status(body: bytes | str) -> KioskStatus:
    """Parse and normalize a status body; raise KioskPayloadError naming what is wrong."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise KioskPayloadError(f"not JSON: {err}") from None
    if not isinstance(data, dict):
        raise KioskPayloadError("the status must be a JSON object")
    try:
        wire = _Wire.model_validate(data)
    except ValidationError as err:
        raise KioskPayloadError(_describe(err)) from None
    peripherals: dict[str, Peripheral] = {}
    for name, value in wire.peripherals.items():
        if not PERIPHERAL_NAME.match(name):
            raise KioskPayloadError(f"peripherals: {name[:40]!r} is not a peripheral name")
        state, raw = _normalize(value, PERIPHERAL_STATES)
        peripherals[name] = Peripheral(cast(PeripheralState, state), raw)
    state, state_raw = _normalize(wire.state, KIOSK_STATES)
    return KioskStatus(
        state=cast(KioskState, state),
        state_raw=state_raw,
        peripherals=peripherals,
        kiosk_id=wire.kiosk_id,
        uptime_s=wire.uptime_s,
        app_version=wire.app_version,
        ts=wire.ts,
    )


def _normalize(value: Any, known: frozenset[str]) -> tuple[str, str | None]:
    """The contract's word for `value` (case and spaces aside), or unknown with the raw word;
    the caller's `known` words and `unknown` are its Literal's values."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in known:
            return word, None
        raw = value
    else:
        raw = json.dumps(value)
    if len(raw) > MAX_RAW_CHARS:
        raw = raw[: MAX_RAW_CHARS - 1] + "…"
    return UNKNOWN, raw


def _describe(err: ValidationError) -> str:
    parts = []
    for error in err.errors()[:3]:
        field = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{field}: {error['msg']}")
    return "; ".join(parts)
