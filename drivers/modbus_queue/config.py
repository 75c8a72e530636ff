"""Config model of the `modbus_queue` profile (queue-call controllers, Modbus TCP or RTU)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import model_validator

from gateway.configbase import DeviceBase, Ident, Port, PositiveSeconds, check_link, int_range


class ModbusQueueConfig(DeviceBase):
    profile: Literal["modbus_queue"]
    transport: Literal["tcp", "rtu"] = "tcp"
    host: str | None = None
    port: Port = 502
    bus: Ident | None = None
    url: str | None = None
    baudrate: int = 9600
    unit: Annotated[int, int_range(1, 247)] = 1
    poll_s: PositiveSeconds = 1.0

    @model_validator(mode="after")
    def _link(self) -> ModbusQueueConfig:
        check_link(self.transport, host=self.host, bus=self.bus, url=self.url)
        return self

    def bus_id(self) -> str | None:
        return self.bus
