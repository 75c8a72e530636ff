"""Config model of the `ff68_pad` profile (window rating pads on a polled RS-485 bus)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from gateway.configbase import Address, DeviceBase, Ident, int_range

Level = Annotated[int, int_range(1, 5)]
KeyCode = Annotated[int, int_range(0, 255)]

# devices.md: the common five-key pad, 1 → 5 非常满意 … 5 → 1 非常不满意
DEFAULT_KEY_MAP: dict[int, int] = {1: 5, 2: 4, 3: 3, 4: 2, 5: 1}


class PadConfig(DeviceBase):
    profile: Literal["ff68_pad"]
    bus: Ident
    address: Address
    window: Ident
    key_map: dict[KeyCode, Level] = Field(default_factory=lambda: dict(DEFAULT_KEY_MAP))

    @field_validator("key_map")
    @classmethod
    def _not_empty(cls, value: dict[int, int]) -> dict[int, int]:
        if not value:
            raise ValueError("must map at least one key code to a level")
        return value

    def bus_id(self) -> str | None:
        return self.bus
