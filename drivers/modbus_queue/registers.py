"""Which reads cover a queue controller's registers, and what the registers say. Pure: no I/O.

A `RegisterLayout` is a register map compiled once. Its header read is the idle poll. For a
controller with W windows and S services, `plan(W, S)` gives the fewest reads that cover every
record: records are read whole, consecutive records of a block are merged into one read (across
the unused registers between them when the map allows it), adjacent blocks only when they touch,
and no read is longer than the map's `max_read`. Each read decodes to a `Part` on its own, so a
bad value is blamed on the exchange that brought it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final

from drivers.modbus_queue.config import RegisterMap, WindowStatus

# printable ASCII: what a ticket prefix register may hold besides 0 (no prefix)
_PREFIX_RANGE: Final = range(0x21, 0x7F)
# contract: a ticket is its prefix and its number, the number at least 3 digits (`A023`)
TICKET_DIGITS: Final = 3


class MapError(ValueError):
    """Registers that do not fit the register map: a value the map does not know."""


def ticket_label(prefix: int, number: int) -> str | None:
    """`A023` for prefix 65 and number 23; None for no ticket (number 0)."""
    if not number:
        return None
    return f"{chr(prefix) if prefix else ''}{number:0{TICKET_DIGITS}d}"


@dataclass(frozen=True, slots=True)
class Read:
    """One FC03 request."""

    address: int
    count: int


@dataclass(frozen=True, slots=True)
class Header:
    windows: int
    services: int
    change_counter: int | None
    version: int | None
    waiting_total: int | None
    issued_today: int | None


@dataclass(frozen=True, slots=True)
class WindowState:
    status: WindowStatus
    ticket: int  # 0: none
    prefix: int  # 0: none (or the map has no prefix register)
    served_today: int
    staff: int  # queue number of the staff member at the caller, 0: none
    call_count: int  # 0: no ticket, or the map has no call count
    service: int  # 0: none

    @property
    def label(self) -> str | None:
        return ticket_label(self.prefix, self.ticket)


@dataclass(frozen=True, slots=True)
class ServiceState:
    waiting: int
    longest_wait_s: int | None
    last_issued: int | None
    prefix: int


@dataclass(frozen=True, slots=True)
class Part:
    """What one read decoded to: consecutive windows and services, with their 0-based indices."""

    first_window: int
    windows: tuple[WindowState, ...]
    first_service: int
    services: tuple[ServiceState, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    header: Header
    windows: tuple[WindowState, ...]
    services: tuple[ServiceState, ...]

    def waiting(self, service: int) -> int | None:
        """Tickets waiting for service `service` (1-based), None if the controller has no such."""
        if 1 <= service <= len(self.services):
            return self.services[service - 1].waiting
        return None

    @property
    def waiting_total(self) -> int:
        if self.header.waiting_total is not None:
            return self.header.waiting_total
        return sum(s.waiting for s in self.services)


@dataclass(frozen=True, slots=True)
class _Record:
    start: int  # first register read for the record
    stop: int  # one past the last
    block: str
    index: int


class RegisterLayout:
    """A register map, compiled: the header read, and a cached plan per (windows, services)."""

    def __init__(self, register_map: RegisterMap) -> None:
        self.map = register_map
        header = register_map.header.registers()
        if header:
            low = min(header.values())
            self.header_read: Read | None = Read(low, max(header.values()) - low + 1)
            self._header_at = {name: register - low for name, register in header.items()}
        else:
            self.header_read = None
            self._header_at = {}
        self._plans: dict[tuple[int, int], Plan] = {}

    def decode_header(self, registers: Sequence[int]) -> Header:
        at = self._header_at
        rmap = self.map

        def field(name: str) -> int | None:
            return registers[at[name]] if name in at else None

        version = field("version")
        if rmap.version is not None and version is not None and version != rmap.version:
            raise MapError(f"map version {version}, expected {rmap.version} (register_map.version)")
        windows = field("windows")
        windows = rmap.windows.count if windows is None else windows
        services = field("services")
        services = rmap.services.count if services is None else services
        # the config demands a header register or a fixed count for each
        assert windows is not None
        assert services is not None
        if windows > rmap.windows.max_count:
            raise MapError(
                f"{windows} windows reported; the map holds at most {rmap.windows.max_count} "
                "(register_map.windows.max_count)"
            )
        if services > rmap.services.max_count:
            raise MapError(
                f"{services} services reported; the map holds at most "
                f"{rmap.services.max_count} (register_map.services.max_count)"
            )
        return Header(
            windows=windows,
            services=services,
            change_counter=field("change_counter"),
            version=version,
            waiting_total=field("waiting_total"),
            issued_today=field("issued_today"),
        )

    def fixed_header(self) -> Header:
        """The header of a controller whose map has no header registers at all."""
        return self.decode_header(())

    def plan(self, windows: int, services: int) -> Plan:
        key = (windows, services)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = Plan(self.map, windows, services)
        return plan


class Plan:
    """The reads for W windows and S services, and how each read decodes."""

    def __init__(self, register_map: RegisterMap, windows: int, services: int) -> None:
        self.windows = windows
        self.services = services
        self._map = register_map
        self._status_codes = dict(register_map.status_codes)
        wmap, smap = register_map.windows, register_map.services
        records = [
            *_records("windows", wmap.base, wmap.stride, wmap.record_offsets().values(), windows),
            *_records("services", smap.base, smap.stride, smap.record_offsets().values(), services),
        ]
        records.sort(key=lambda record: record.start)
        groups = _merge(records, register_map.max_read, padding=register_map.read_padding)
        self.reads: tuple[Read, ...] = tuple(
            Read(group[0].start, group[-1].stop - group[0].start) for group in groups
        )
        # per read: (0-based index, position of the record's base in the read) of each record
        self._windows_in: list[tuple[tuple[int, int], ...]] = []
        self._services_in: list[tuple[tuple[int, int], ...]] = []
        for read, group in zip(self.reads, groups, strict=True):
            at = read.address
            self._windows_in.append(
                tuple(
                    (r.index, wmap.base + wmap.stride * r.index - at)
                    for r in group
                    if r.block == "windows"
                )
            )
            self._services_in.append(
                tuple(
                    (r.index, smap.base + smap.stride * r.index - at)
                    for r in group
                    if r.block == "services"
                )
            )

    def decode_read(self, index: int, registers: Sequence[int]) -> Part:
        """Decode the answer to `reads[index]`; MapError for a value the map does not know."""
        windows = tuple(self._window(n, base, registers) for n, base in self._windows_in[index])
        services = tuple(self._service(n, base, registers) for n, base in self._services_in[index])
        first_window = self._windows_in[index][0][0] if windows else 0
        first_service = self._services_in[index][0][0] if services else 0
        return Part(first_window, windows, first_service, services)

    def snapshot(self, header: Header, parts: Sequence[Part]) -> Snapshot:
        windows: list[WindowState | None] = [None] * self.windows
        services: list[ServiceState | None] = [None] * self.services
        for part in parts:
            windows[part.first_window : part.first_window + len(part.windows)] = part.windows
            services[part.first_service : part.first_service + len(part.services)] = part.services
        if None in windows or None in services:
            raise MapError("the reads did not cover every window and service")
        return Snapshot(
            header,
            tuple(w for w in windows if w is not None),
            tuple(s for s in services if s is not None),
        )

    def _window(self, index: int, base: int, registers: Sequence[int]) -> WindowState:
        fields = self._map.windows.fields
        code = registers[base + fields.status]
        status = self._status_codes.get(code)
        if status is None:
            raise MapError(f"window {index + 1}: status {code} is not in register_map.status_codes")
        prefix = 0 if fields.prefix is None else registers[base + fields.prefix]
        ticket = registers[base + fields.ticket]
        if prefix and prefix not in _PREFIX_RANGE:
            raise MapError(f"window {index + 1}: ticket prefix {prefix} is not printable ASCII")
        call_count = (
            0 if fields.call_count is None or not ticket else registers[base + fields.call_count]
        )
        return WindowState(
            status=status,
            ticket=ticket,
            prefix=prefix if ticket else 0,
            served_today=registers[base + fields.served_today],
            staff=0 if fields.staff is None else registers[base + fields.staff],
            call_count=call_count,
            service=0 if fields.service is None else registers[base + fields.service],
        )

    def _service(self, index: int, base: int, registers: Sequence[int]) -> ServiceState:
        fields = self._map.services.fields
        prefix = 0 if fields.prefix is None else registers[base + fields.prefix]
        if prefix and prefix not in _PREFIX_RANGE:
            raise MapError(f"service {index + 1}: ticket prefix {prefix} is not printable ASCII")
        return ServiceState(
            waiting=registers[base + fields.waiting],
            longest_wait_s=None
            if fields.longest_wait_s is None
            else registers[base + fields.longest_wait_s],
            last_issued=None
            if fields.last_issued is None
            else registers[base + fields.last_issued],
            prefix=prefix,
        )


def _records(
    block: str, base: int, stride: int, offsets: Collection[int], count: int
) -> list[_Record]:
    low, high = min(offsets), max(offsets)
    return [
        _Record(base + stride * index + low, base + stride * index + high + 1, block, index)
        for index in range(count)
    ]


def _merge(records: list[_Record], max_read: int, *, padding: bool) -> list[list[_Record]]:
    """Greedy, in address order: the fewest reads when records may not be split."""
    groups: list[list[_Record]] = []
    for record in records:
        if groups:
            group = groups[-1]
            gap = record.start - group[-1].stop
            joinable = gap == 0 or (padding and gap > 0 and record.block == group[-1].block)
            if joinable and record.stop - group[0].start <= max_read:
                group.append(record)
                continue
        groups.append([record])
    return groups
