"""Config model of the `modbus_queue` profile (queue-call controllers, Modbus TCP or RTU).

The register map is data: the built-in default is version 1 of devices.md §3, and another
vendor's controller is a `register_map:` block in YAML. Header fields are absolute holding
registers; window and service fields are offsets inside one record of a block
(`base + stride·(n-1) + offset`). A map whose blocks overlap, or that would need a read of more
than 125 registers for one record, is a config error.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from gateway.configbase import (
    DeviceBase,
    FieldError,
    Ident,
    Port,
    PositiveSeconds,
    StrictModel,
    check_link,
    int_range,
)

# Modbus application protocol spec: a read holding registers (FC03) asks for at most 125
MODBUS_MAX_READ: Final = 125
# a queue controller on a LAN answers within tens of ms; a second means it is not answering
DEFAULT_TIMEOUT_S: Final = 1.0
# what a serial port of its own accepts (gateway.config.BusConfig.timeout_ms: 10..10000 ms)
TIMEOUT_RANGE_S: Final = (0.01, 10.0)

Register = Annotated[int, int_range(0, 65535)]
Offset = Annotated[int, int_range(0, MODBUS_MAX_READ - 1)]
Stride = Annotated[int, int_range(1, MODBUS_MAX_READ)]
WindowStatus = Literal["closed", "idle", "serving", "paused"]


def _timeout(value: float) -> float:
    low, high = TIMEOUT_RANGE_S
    if not low <= value <= high:
        raise ValueError(f"must be {low}..{high} seconds")
    return value


TimeoutSeconds = Annotated[float, AfterValidator(_timeout)]


def _show(span: range) -> str:
    return f"{span.start}..{span.stop - 1}"


def _check_distinct(fields: dict[str, int]) -> None:
    seen: dict[int, str] = {}
    for name, value in fields.items():
        if value in seen:
            raise FieldError(name, f"{value} is already used by {seen[value]}")
        seen[value] = name


class HeaderMap(StrictModel):
    """Absolute registers of the controller's header; null where the controller has none."""

    version: Register | None = 0
    windows: Register | None = 1
    waiting_total: Register | None = 2
    issued_today: Register | None = 3
    change_counter: Register | None = 4
    services: Register | None = 5

    @model_validator(mode="after")
    def _distinct(self) -> HeaderMap:
        _check_distinct(self.registers())
        return self

    def registers(self) -> dict[str, int]:
        """Field → register, for the fields this controller has."""
        return {name: value for name, value in self if isinstance(value, int)}


class WindowFields(StrictModel):
    """Offsets inside one window's record."""

    status: Offset = 0
    ticket: Offset = 1  # ticket number, 0: none
    prefix: Offset | None = 2  # ASCII code of the ticket's letter, 65 = A
    served_today: Offset = 3
    staff: Offset | None = 4  # staff number at the caller (roster `queue_no`), 0: none
    call_count: Offset | None = 5  # 1 on the first call of the ticket, +1 per recall
    service: Offset | None = 6

    @model_validator(mode="after")
    def _distinct(self) -> WindowFields:
        _check_distinct(self.offsets())
        return self

    def offsets(self) -> dict[str, int]:
        return {name: value for name, value in self if isinstance(value, int)}


class ServiceFields(StrictModel):
    """Offsets inside one service's record."""

    waiting: Offset = 0
    longest_wait_s: Offset | None = 1
    last_issued: Offset | None = 2
    prefix: Offset | None = 3

    @model_validator(mode="after")
    def _distinct(self) -> ServiceFields:
        _check_distinct(self.offsets())
        return self

    def offsets(self) -> dict[str, int]:
        return {name: value for name, value in self if isinstance(value, int)}


class _Block(StrictModel):
    base: Register
    stride: Stride
    # the most records the block holds: bounds the overlap check and what a controller may report
    max_count: Annotated[int, int_range(1, 65535)]
    # a fixed number of records, for a controller whose header does not report it
    count: Annotated[int, int_range(0, 65535)] | None = None

    def span(self) -> range:
        return range(self.base, self.base + self.stride * self.max_count)

    def record_offsets(self) -> dict[str, int]:
        raise NotImplementedError

    @model_validator(mode="after")
    def _fits(self) -> _Block:
        widest = max(self.record_offsets().items(), key=lambda item: item[1])
        if widest[1] >= self.stride:
            raise FieldError(
                "stride",
                f"{self.stride} leaves no room for {widest[0]} at offset {widest[1]}",
            )
        if self.count is not None and self.count > self.max_count:
            raise FieldError("count", f"{self.count} is more than max_count {self.max_count}")
        if self.span().stop > 65536:
            raise FieldError(
                "max_count",
                f"{self.max_count} records of {self.stride} from {self.base} end past register "
                "65535",
            )
        return self


class WindowBlock(_Block):
    base: Register = 100
    stride: Stride = 10
    max_count: Annotated[int, int_range(1, 65535)] = 90
    fields: WindowFields = WindowFields()

    def record_offsets(self) -> dict[str, int]:
        return self.fields.offsets()


class ServiceBlock(_Block):
    base: Register = 1000
    stride: Stride = 4
    max_count: Annotated[int, int_range(1, 65535)] = 100
    fields: ServiceFields = ServiceFields()

    def record_offsets(self) -> dict[str, int]:
        return self.fields.offsets()


def _v1_status_codes() -> dict[int, WindowStatus]:
    return {0: "closed", 1: "idle", 2: "serving", 3: "paused"}


class RegisterMap(StrictModel):
    """Which holding registers (FC03) mean what. Defaults: devices.md §3, map version 1."""

    # the value the header's version register must hold (null: not checked)
    version: Annotated[int, int_range(0, 65535)] | None = 1
    header: HeaderMap = HeaderMap()
    windows: WindowBlock = WindowBlock()
    services: ServiceBlock = ServiceBlock()
    status_codes: dict[Annotated[int, int_range(0, 65535)], WindowStatus] = Field(
        default_factory=_v1_status_codes
    )
    # registers per request; lower it for a controller that answers long reads badly
    max_read: Annotated[int, int_range(1, MODBUS_MAX_READ)] = MODBUS_MAX_READ
    # the unused registers between a record's fields may be read, so that a block is read in
    # one request; false for a controller that answers them with an exception
    read_padding: bool = True

    @field_validator("status_codes")
    @classmethod
    def _some_status(cls, value: dict[int, WindowStatus]) -> dict[int, WindowStatus]:
        if not value:
            raise ValueError("must map at least one register value to a status")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RegisterMap:
        header = self.header.registers()
        if header:
            low, high = min(header.values()), max(header.values())
            if high - low + 1 > self.max_read:
                raise FieldError(
                    "header",
                    f"registers {low}..{high} need a read of {high - low + 1} registers, more "
                    f"than max_read {self.max_read}",
                )
        for name, block, counted_by in (
            ("windows", self.windows, self.header.windows),
            ("services", self.services, self.header.services),
        ):
            offsets = block.record_offsets().values()
            width = max(offsets) - min(offsets) + 1
            if width > self.max_read:
                raise FieldError(
                    name,
                    f"one record needs a read of {width} registers, more than max_read "
                    f"{self.max_read}",
                )
            if (counted_by is None) == (block.count is None):
                raise FieldError(
                    name,
                    f"give the number of {name} either as header.{name} or as {name}.count "
                    "(exactly one of them)",
                )
        for name, block in (("windows", self.windows), ("services", self.services)):
            for field, register in header.items():
                if register in block.span():
                    raise FieldError(
                        name,
                        f"block {_show(block.span())} overlaps header.{field} at register "
                        f"{register}",
                    )
        windows, services = self.windows.span(), self.services.span()
        if windows.start < services.stop and services.start < windows.stop:
            raise FieldError(
                "services",
                f"block {_show(services)} overlaps the windows block {_show(windows)} "
                "(lower windows.max_count or move a base)",
            )
        return self


class ModbusQueueConfig(DeviceBase):
    profile: Literal["modbus_queue"]
    transport: Literal["tcp", "rtu"] = "tcp"
    host: str | None = None
    port: Port = 502
    bus: Ident | None = None
    url: str | None = None
    baudrate: Annotated[int, int_range(300, 4_000_000)] = 9600
    unit: Annotated[int, int_range(1, 247)] = 1
    poll_s: PositiveSeconds = 1.0
    # answer timeout over TCP and on a serial port of its own (`url:`); on a shared bus the
    # bus's `timeout_ms` applies
    timeout_s: TimeoutSeconds = DEFAULT_TIMEOUT_S
    register_map: RegisterMap = RegisterMap()

    @model_validator(mode="after")
    def _link(self) -> ModbusQueueConfig:
        check_link(self.transport, host=self.host, bus=self.bus, url=self.url)
        return self

    def bus_id(self) -> str | None:
        return self.bus
