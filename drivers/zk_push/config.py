"""Config model of the `zk_push` profile (ZKTeco PUSH/ADMS punch clocks)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gateway.configbase import DeviceBase, PositiveSeconds


class ZkPushConfig(DeviceBase):
    profile: Literal["zk_push"]
    serial_number: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    timezone: str | None = None  # None: the hall's
    delay_s: PositiveSeconds = 10
    error_delay_s: PositiveSeconds = 30
    trans_times: str = "00:00;14:05"
    trans_interval: int = Field(default=1, ge=0)
    realtime: bool = True
