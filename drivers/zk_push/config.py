"""Config model of the `zk_push` profile (ZKTeco PUSH/ADMS punch clocks)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from gateway.configbase import DeviceBase, PositiveSeconds, TimeZoneName, int_range
from gateway.events import PunchDirection, VerifyMode

# devices.md §1: status 0 in, 1 out, 2 break_out, 3 break_in, 4 ot_in, 5 ot_out
DEFAULT_STATUS_MAP: dict[int, PunchDirection] = {
    0: "in",
    1: "out",
    2: "break_out",
    3: "break_in",
    4: "ot_in",
    5: "ot_out",
}
# devices.md §1: 0 password, 1 fingerprint, 2 and 4 card, 15 face, 25 palm; any other is `other`
DEFAULT_VERIFY_MAP: dict[int, VerifyMode] = {
    0: "password",
    1: "fingerprint",
    2: "card",
    4: "card",
    15: "face",
    25: "palm",
}
# the default: a record stamped more than a day away from the gateway's time is suspect
ONE_DAY_S = 86_400.0

Code = Annotated[int, int_range(0, 255)]


class ZkPushConfig(DeviceBase):
    profile: Literal["zk_push"]
    serial_number: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    timezone: TimeZoneName | None = None  # None: the hall's
    delay_s: PositiveSeconds = 10
    error_delay_s: PositiveSeconds = 30
    trans_times: str = Field(default="00:00;14:05", pattern=r"^\d{2}:\d{2}(;\d{2}:\d{2})*$")
    trans_interval: int = Field(default=1, ge=0)
    trans_flag: str = Field(default="TransData AttLog OpLog", pattern=r"^[A-Za-z ]+$")
    realtime: bool = True
    # records stamped further than this before or after the gateway's time are journaled and
    # flagged, not published (a clock whose battery died reports 2000-01-01)
    plausible_past_s: PositiveSeconds = ONE_DAY_S
    plausible_future_s: PositiveSeconds = ONE_DAY_S
    status_map: dict[Code, PunchDirection] = Field(default_factory=lambda: dict(DEFAULT_STATUS_MAP))
    verify_map: dict[Code, VerifyMode] = Field(default_factory=lambda: dict(DEFAULT_VERIFY_MAP))

    @field_validator("status_map")
    @classmethod
    def _not_empty(cls, value: dict[int, PunchDirection]) -> dict[int, PunchDirection]:
        if not value:
            raise ValueError("must map at least one status code to a direction")
        return value
