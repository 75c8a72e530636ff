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

Minutes = Annotated[int, int_range(0, 240)]


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
    # where and how text is shown (the show command's area, color and effect)
    area: Annotated[int, int_range(0, 255)] = 1
    color: Literal["red", "green", "yellow"] = "red"
    effect: Literal["static", "scroll", "flash"] = "scroll"
    # set on every (re)connect; null leaves the controller's own setting alone
    brightness: Annotated[int, int_range(0, 100)] | None = None
    # over this the screen reports over_temperature even if its own fault bit is clear
    max_temperature_c: Annotated[int, int_range(0, 127)] = 70
    # `service`: power the screen off after the hall's service hours and on before they begin
    # (the regulations ask that screens be off after hours); `none` leaves power alone
    power_schedule: Literal["none", "service"] = "none"
    power_on_before_min: Minutes = 15
    power_off_after_min: Minutes = 15

    @model_validator(mode="after")
    def _link(self) -> LedTextConfig:
        check_link(self.transport, host=self.host, bus=self.bus, url=self.url)
        return self

    def bus_id(self) -> str | None:
        return self.bus
