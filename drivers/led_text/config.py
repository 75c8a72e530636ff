"""Config model of the `led_text` profile (LED strips and window screens)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import model_validator

from gateway.configbase import (
    Address,
    DeviceBase,
    Ident,
    Port,
    PositiveSeconds,
    check_link,
    int_range,
)


class LedTextConfig(DeviceBase):
    profile: Literal["led_text"]
    transport: Literal["tcp", "serial"] = "tcp"
    host: str | None = None
    port: Port = 5200
    bus: Ident | None = None
    url: str | None = None
    baudrate: int = 9600
    address: Address = 1
    status_poll_s: PositiveSeconds = 10
    page_seconds: PositiveSeconds = 8
    # a page must hold at least one GBK character and its page marker
    max_bytes: Annotated[int, int_range(16, 65535)] = 512

    @model_validator(mode="after")
    def _link(self) -> LedTextConfig:
        check_link(self.transport, host=self.host, bus=self.bus, url=self.url)
        return self

    def bus_id(self) -> str | None:
        return self.bus
