"""Building blocks shared by the gateway's config and every driver's config model."""

from __future__ import annotations

import re
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict

IDENT_PATTERN = r"^[A-Za-z0-9_-]+$"
_IDENT_RE = re.compile(IDENT_PATTERN)


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo must never fall back to a default silently."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class FieldError(ValueError):
    """Raised by a model-level validator to blame one field: reported as `...{field}: {text}`."""

    def __init__(self, field: str, text: str) -> None:
        super().__init__(f"{field}: {text}")


def _check_ident(value: str) -> str:
    if not _IDENT_RE.match(value):
        raise ValueError("must match [A-Za-z0-9_-]+ (it is used in MQTT topics)")
    return value


Ident = Annotated[str, AfterValidator(_check_ident)]


def _check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(
            f"unknown time zone {value!r} (use an IANA name like Asia/Shanghai)"
        ) from err
    return value


TimeZoneName = Annotated[str, AfterValidator(_check_zone)]


def int_range(low: int, high: int) -> AfterValidator:
    """An integer bound whose error message reads like the contract's: `must be 1..254`."""

    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be {low}..{high}")
        return value

    return AfterValidator(check)


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


PositiveSeconds = Annotated[float, AfterValidator(_positive)]
Port = Annotated[int, int_range(1, 65535)]
Address = Annotated[int, int_range(1, 254)]


def one_secret_source(data: Any, name: str, *, default_env: str | None = None) -> Any:
    """Check `{name}_env` against `{name}_file` in raw config data (a `mode="before"` step).

    Both at once is an error; an explicit `{name}_file` replaces a default `{name}_env`.
    """
    if not isinstance(data, dict):
        return data
    env_key, file_key = f"{name}_env", f"{name}_file"
    if data.get(env_key) is not None and data.get(file_key) is not None:
        raise FieldError(file_key, f"give either {env_key} or {file_key}, not both")
    if data.get(file_key) is not None and default_env is not None and env_key not in data:
        return {**data, env_key: None}
    return data


class DeviceBase(StrictModel):
    """Fields every device has; each profile adds the fields that address it."""

    id: Ident
    profile: str

    def secret_fields(self) -> dict[str, tuple[str | None, str | None]]:
        """Secrets this device needs: field name → (`*_env`, `*_file`)."""
        return {}

    def bus_id(self) -> str | None:
        """The shared serial bus this device sits on, if any."""
        return None


def check_link(
    transport: str, *, host: str | None, bus: str | None, url: str | None, network: str = "tcp"
) -> None:
    """A device reached over the network needs `host`; over serial, exactly one of `bus`, `url`."""
    if transport == network:
        if not host:
            raise FieldError("host", f"is required with transport {network}")
        if bus is not None or url is not None:
            raise FieldError("bus" if bus else "url", f"does not go with transport {network}")
    elif bus is None and url is None:
        raise FieldError("bus", f"transport {transport} needs either bus or url")
    elif bus is not None and url is not None:
        raise FieldError("url", "give either bus or url, not both")
