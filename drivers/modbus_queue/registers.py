"""Which reads cover a queue controller's registers, and what the registers say. Pure: no I/O.

A `RegisterLayout` is a register map compiled once. Its header read is the idle poll. For a
controller with W windows and S services, `plan(W, S)` gives the fewest reads that cover every
record: records are read whole, consecutive records of a block are merged into one read (across
the unused registers between them when the map allows it), adjacent blocks only when they touch,
and no read is longer than the map's `max_read`. Each read decodes to a `Part` on its own, so a
bad value is blamed on the exchange that brought it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Final, NamedTuple

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


class Header(NamedTuple):
    windows: int
    services: int
    change_counter: int | None
    version: int | None
    waiting_total: int | None
    issued_today: int | None


class WindowState(NamedTuple):
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


class ServiceState(NamedTuple):
    waiting: int
    longest_wait_s: int | None
    last_issued: int | None
    prefix: int


class Part(NamedTuple):
    """What one read decoded to: consecutive windows and services, with their 0-based indices."""

    first_window: int
    windows: tuple[WindowState, ...]
    first_service: int
    services: tuple[ServiceState, ...]


class Snapshot(NamedTuple):
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
            at = {name: register - low for name, register in header.items()}
        else:
            self.header_read = None
            at = {}
        # positions in the header read of: version, windows, waiting, issued, counter, services
        self._header_fields = tuple(
            at.get(name)
            for name in (
                "version",
                "windows",
                "waiting_total",
                "issued_today",
                "change_counter",
                "services",
            )
        )
        self._plans: dict[tuple[int, int], Plan] = {}

    def decode_header(self, registers: Sequence[int]) -> Header:
        rmap = self.map
        version, windows, waiting_total, issued_today, change_counter, services = (
            None if at is None else registers[at] for at in self._header_fields
        )
        if rmap.version is not None and version is not None and version != rmap.version:
            raise MapError(f"map version {version}, expected {rmap.version} (register_map.version)")
        windows = rmap.windows.count if windows is None else windows
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
        return Header(windows, services, change_counter, version, waiting_total, issued_today)

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
        self._status_codes = dict(register_map.status_codes)
        wmap, smap = register_map.windows, register_map.services
        wf, sf = wmap.fields, smap.fields
        absent = -1
        self._window_offsets = tuple(wf.offsets().values())
        self._window_at = (
            wf.status,
            wf.ticket,
            absent if wf.prefix is None else wf.prefix,
            wf.served_today,
            absent if wf.staff is None else wf.staff,
            absent if wf.call_count is None else wf.call_count,
            absent if wf.service is None else wf.service,
        )
        self._service_at = (
            sf.waiting,
            absent if sf.longest_wait_s is None else sf.longest_wait_s,
            absent if sf.last_issued is None else sf.last_issued,
            absent if sf.prefix is None else sf.prefix,
        )
        records = [
            *_records("windows", wmap.base, wmap.stride, wmap.record_offsets().values(), windows),
            *_records("services", smap.base, smap.stride, smap.record_offsets().values(), services),
        ]
        records.sort(key=lambda record: record.start)
        groups = _merge(records, register_map.max_read, padding=register_map.read_padding)
        self.reads: tuple[Read, ...] = tuple(
            Read(group[0].start, group[-1].stop - group[0].start) for group in groups
        )
        self._last: list[tuple[tuple[int, ...], Part] | None] = [None] * len(self.reads)
        self._window_span = (min(self._window_offsets), max(self._window_offsets) + 1)
        self._window_memo: dict[int, tuple[tuple[int, ...], WindowState]] = {}
        # one decoder per read, bound once: `decoders[i](registers)` decodes `reads[i]`
        self.decoders: tuple[Callable[[Sequence[int]], Part], ...] = tuple(
            partial(self.decode_read, index) for index in range(len(self.reads))
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
        """Decode the answer to `reads[index]`; MapError for a value the map does not know.

        The same registers as last time decode to the same Part, without decoding them again
        (between two busy polls most reads of a controller do not change).
        """
        values = tuple(registers)
        last = self._last[index]
        if last is not None and last[0] == values:
            return last[1]
        part = self._decode(index, values)
        self._last[index] = (values, part)
        return part

    def _decode(self, index: int, registers: Sequence[int]) -> Part:
        windows_in, services_in = self._windows_in[index], self._services_in[index]
        windows = self._windows(windows_in, registers) if windows_in else ()
        services = self._services(services_in, registers) if services_in else ()
        first_window = windows_in[0][0] if windows_in else 0
        first_service = services_in[0][0] if services_in else 0
        return Part(first_window, windows, first_service, services)

    def snapshot(self, header: Header, parts: Sequence[Part]) -> Snapshot:
        """The snapshot from the header and the parts of every read, in the plan's order."""
        windows: list[WindowState] = []
        services: list[ServiceState] = []
        for part in parts:  # reads go up the registers, so each block's records come in order
            if part.windows:
                windows.extend(part.windows)
            if part.services:
                services.extend(part.services)
        if len(windows) != self.windows or len(services) != self.services:
            raise MapError("the reads did not cover every window and service")
        return Snapshot(header, tuple(windows), tuple(services))

    def _windows(
        self, records: tuple[tuple[int, int], ...], registers: Sequence[int]
    ) -> tuple[WindowState, ...]:
        status_of, printable = self._status_codes, _PREFIX_RANGE
        at_status, at_ticket, at_prefix, at_served, at_staff, at_calls, at_service = self._window_at
        low, high = self._window_span
        memo = self._window_memo
        windows: list[WindowState] = []
        for index, base in records:
            raw = tuple(registers[base + low : base + high])
            known = memo.get(index)
            if known is not None and known[0] == raw:
                windows.append(known[1])  # the same object: compared by identity later
                continue
            code = registers[base + at_status]
            status = status_of.get(code)
            if status is None:
                raise MapError(
                    f"window {index + 1}: status {code} is not in register_map.status_codes"
                )
            ticket = registers[base + at_ticket]
            prefix = registers[base + at_prefix] if ticket and at_prefix >= 0 else 0
            if prefix and prefix not in printable:
                raise MapError(f"window {index + 1}: ticket prefix {prefix} is not printable ASCII")
            state = WindowState(
                status,
                ticket,
                prefix,
                registers[base + at_served],
                registers[base + at_staff] if at_staff >= 0 else 0,
                registers[base + at_calls] if ticket and at_calls >= 0 else 0,
                registers[base + at_service] if at_service >= 0 else 0,
            )
            memo[index] = (raw, state)
            windows.append(state)
        return tuple(windows)

    def _services(
        self, records: tuple[tuple[int, int], ...], registers: Sequence[int]
    ) -> tuple[ServiceState, ...]:
        at_waiting, at_longest, at_last, at_prefix = self._service_at
        services: list[ServiceState] = []
        for index, base in records:
            prefix = registers[base + at_prefix] if at_prefix >= 0 else 0
            if prefix and prefix not in _PREFIX_RANGE:
                raise MapError(
                    f"service {index + 1}: ticket prefix {prefix} is not printable ASCII"
                )
            services.append(
                ServiceState(
                    registers[base + at_waiting],
                    registers[base + at_longest] if at_longest >= 0 else None,
                    registers[base + at_last] if at_last >= 0 else None,
                    prefix,
                )
            )
        return tuple(services)


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
