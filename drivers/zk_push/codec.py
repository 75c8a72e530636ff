"""The texts of the ZKTeco PUSH protocol (devices.md §1): handshake options, ATTLOG and OPERLOG
bodies, command lines, command results. Both directions, so the simulator speaks it too.

Pure and synchronous: no I/O, no clock; times stay naive device-local values, as on the wire.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

ATTLOG: Final = "ATTLOG"
OPERLOG: Final = "OPERLOG"
TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
# handshake lines are CRLF-terminated; clocks read them line by line
CRLF: Final = "\r\n"
# a PIN is the user number keyed in at the clock; firmware allows up to 24 characters
PIN_PATTERN: Final = re.compile(r"^[0-9A-Za-z]{1,24}$")
# `C:{id}:{command}`: a command is one printable line, short enough for any firmware's buffer
MAX_COMMAND_CHARS: Final = 512
_TIME_PATTERN: Final = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$")
_INT_PATTERN: Final = re.compile(r"^-?[0-9]{1,6}$")
_RESULT_PATTERN: Final = re.compile(
    r"^ID=(?P<id>[0-9]{1,9})&Return=(?P<ret>-?[0-9]{1,9})&CMD=(?P<cmd>.*)$"
)
_COMMAND_PATTERN: Final = re.compile(r"^C:(?P<id>[0-9]{1,9}):(?P<cmd>.+)$")
# OPERLOG lines carry user passwords and biometric templates; the journal never keeps them
_SECRET_FIELDS: Final = re.compile(r"(?P<key>\b(?:Passwd|Password|Tmp|Content)=)[^\t]*")


class BodyError(ValueError):
    """A body or line that does not follow the protocol; the message says what and where."""


@dataclass(frozen=True, slots=True)
class HandshakeOptions:
    """What the server tells a clock at its handshake (the values come from config)."""

    error_delay_s: float = 30
    delay_s: float = 10
    trans_times: str = "00:00;14:05"
    trans_interval: int = 1
    trans_flag: str = "TransData AttLog OpLog"
    timezone_hours: float = 8
    realtime: bool = True


@dataclass(frozen=True, slots=True)
class AttRecord:
    """One ATTLOG line: `PIN  YYYY-MM-DD HH:MM:SS  status  verify  workcode  …` (tab-separated)."""

    pin: str
    time: dt.datetime  # naive, the device's local time
    status: int | None = None
    verify: int | None = None
    workcode: str | None = None

    @property
    def stamp(self) -> str:
        return self.time.strftime(TIME_FORMAT)


@dataclass(frozen=True, slots=True)
class LineError:
    line: int  # 1-based, as an integrator counts lines in a captured body
    reason: str
    text: str


@dataclass(frozen=True, slots=True)
class ParsedAttlog:
    records: tuple[AttRecord, ...]
    errors: tuple[LineError, ...]


@dataclass(frozen=True, slots=True)
class CommandResult:
    """One `ID={id}&Return={code}&CMD={cmd}` line, with the `key=value` lines that followed it."""

    id: int
    code: int
    command: str
    details: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ParsedResults:
    results: tuple[CommandResult, ...]
    errors: tuple[LineError, ...]


@dataclass(frozen=True, slots=True)
class ClockInfo:
    """The `INFO=` parameter some firmware adds to its heartbeat."""

    firmware: str
    users: int | None = None
    fingerprints: int | None = None
    records: int | None = None
    ip: str | None = None


def decode_text(body: bytes) -> str:
    """A body as text: UTF-8, else GB18030 (older Chinese firmware), never an exception."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("gb18030", errors="replace")


def handshake(sn: str, options: HandshakeOptions) -> str:
    lines = [
        f"GET OPTION FROM: {sn}",
        "ATTLOGStamp=None",
        "OPERLOGStamp=None",
        "ATTPHOTOStamp=None",
        f"ErrorDelay={_number(options.error_delay_s)}",
        f"Delay={_number(options.delay_s)}",
        f"TransTimes={options.trans_times}",
        f"TransInterval={options.trans_interval}",
        f"TransFlag={options.trans_flag}",
        f"TimeZone={_number(options.timezone_hours)}",
        f"Realtime={1 if options.realtime else 0}",
        "Encrypt=None",
    ]
    return CRLF.join(lines) + CRLF


def parse_handshake(text: str) -> tuple[str, dict[str, str]]:
    """The serial number and options of a handshake answer (for the simulator)."""
    lines = [line for line in text.splitlines() if line]
    if not lines or not lines[0].startswith("GET OPTION FROM: "):
        raise BodyError("handshake answer does not start with `GET OPTION FROM: {sn}`")
    options: dict[str, str] = {}
    for number, line in enumerate(lines[1:], start=2):
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise BodyError(f"handshake line {number}: not `Key=Value`: {line!r}")
        options[key] = value
    return lines[0].removeprefix("GET OPTION FROM: "), options


def ok(count: int | None = None) -> str:
    """`OK: {n}` for an upload, `OK` for everything else."""
    return "OK" if count is None else f"OK: {count}"


def parse_ok(text: str) -> int | None:
    """n from `OK: n` (for the simulator); None when the answer is not an upload's OK."""
    match = re.fullmatch(r"OK: ([0-9]{1,9})\s*", text)
    return int(match.group(1)) if match else None


def parse_attlog(text: str) -> ParsedAttlog:
    """Every well-formed record, and a LineError for every malformed line; blank lines are not
    records and not errors (bodies end with a newline)."""
    records: list[AttRecord] = []
    errors: list[LineError] = []
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            records.append(parse_att_line(line))
        except BodyError as err:
            errors.append(LineError(number, str(err), line[:200]))
    return ParsedAttlog(tuple(records), tuple(errors))


def parse_att_line(line: str) -> AttRecord:
    fields = line.split("\t")
    if len(fields) < 2:
        raise BodyError("needs at least PIN and time, tab-separated")
    pin, stamp = fields[0].strip(), fields[1].strip()
    if not PIN_PATTERN.match(pin):
        raise BodyError(f"PIN {pin[:30]!r} is not 1 to 24 letters or digits")
    if not _TIME_PATTERN.match(stamp):
        raise BodyError(f"time {stamp[:30]!r} is not YYYY-MM-DD HH:MM:SS")
    time = _naive_time(stamp)
    status = _optional_int(fields, 2, "status")
    verify = _optional_int(fields, 3, "verify")
    workcode = fields[4].strip() if len(fields) > 4 and fields[4].strip() else None
    return AttRecord(pin, time, status, verify, workcode)


def att_line(record: AttRecord) -> str:
    """The wire form of a record (for the simulator): trailing fields the clock left out stay
    out, and the reserved fields are zeros."""
    fields = [record.pin, record.stamp]
    if record.status is not None:
        fields.append(str(record.status))
        if record.verify is not None:
            fields.append(str(record.verify))
            fields += [record.workcode or "0", "0", "0"]
    return "\t".join(fields)


def att_body(records: Iterable[AttRecord]) -> str:
    return "".join(att_line(record) + "\n" for record in records)


def operlog_lines(text: str) -> list[str]:
    """The non-blank lines of an OPERLOG body, with passwords and templates blanked."""
    return [_SECRET_FIELDS.sub(r"\g<key>***", line) for line in _lines(text) if line.strip()]


def operlog_time(line: str) -> dt.datetime | None:
    """The time of an `OPLOG code admin time …` line (naive device time), if it has one."""
    fields = line.split("\t")
    if len(fields) >= 3 and _TIME_PATTERN.match(fields[2].strip()):
        try:
            return _naive_time(fields[2].strip())
        except BodyError:
            return None
    return None


def commands(pending: Sequence[tuple[int, str]]) -> str:
    """The answer to a heartbeat: `OK`, or one `C:{id}:{command}` line per queued command."""
    if not pending:
        return ok()
    return "".join(f"C:{command_id}:{command}\n" for command_id, command in pending)


def check_command(command: str) -> str:
    """A command fit for a `C:{id}:…` line, or BodyError."""
    if not command or len(command) > MAX_COMMAND_CHARS:
        raise BodyError(f"a command is 1 to {MAX_COMMAND_CHARS} characters")
    if not command.isprintable():
        raise BodyError("a command is one printable line")
    return command


def parse_commands(text: str) -> list[tuple[int, str]]:
    """The commands in a heartbeat's answer (for the simulator); `OK` is none."""
    found: list[tuple[int, str]] = []
    for line in _lines(text):
        match = _COMMAND_PATTERN.match(line.strip())
        if match:
            found.append((int(match["id"]), match["cmd"]))
    return found


def parse_results(text: str) -> ParsedResults:
    """The results in a `devicecmd` body. `key=value` lines after a result are its details
    (INFO answers carry the clock's settings that way); anything else is a LineError."""
    results: list[CommandResult] = []
    errors: list[LineError] = []
    details: dict[str, str] = {}
    current: tuple[int, int, str] | None = None

    def close() -> None:
        if current is not None:
            results.append(CommandResult(*current, details=dict(details)))

    for number, raw in enumerate(_lines(text), start=1):
        line = raw.strip()
        if not line:
            continue
        match = _RESULT_PATTERN.match(line)
        if match:
            close()
            current = (int(match["id"]), int(match["ret"]), match["cmd"])
            details.clear()
            continue
        key, sep, value = line.lstrip("~").partition("=")
        if current is not None and sep and key and key.replace("_", "").isalnum():
            details[key] = value
        else:
            errors.append(LineError(number, "not ID={id}&Return={code}&CMD={cmd}", line[:200]))
    close()
    return ParsedResults(tuple(results), tuple(errors))


def result_line(command_id: int, code: int, command: str) -> str:
    return f"ID={command_id}&Return={code}&CMD={command}"


def parse_info(value: str) -> ClockInfo:
    """`INFO=Ver 8.0.4.2-20191015,12,3,2356,192.168.1.201,…`: firmware, users, fingerprints,
    attendance records, IP address; later fields differ between firmware and are ignored."""
    fields = [part.strip() for part in value.split(",")]
    if not fields[0]:
        raise BodyError("INFO has no firmware version")

    def count(index: int) -> int | None:
        if index < len(fields) and fields[index].isascii() and fields[index].isdigit():
            return int(fields[index])
        return None

    ip = fields[4] if len(fields) > 4 and fields[4] else None
    return ClockInfo(fields[0][:64], count(1), count(2), count(3), ip[:64] if ip else None)


def _lines(text: str) -> list[str]:
    return [line.rstrip("\r") for line in text.split("\n")]


def _naive_time(stamp: str) -> dt.datetime:
    """`YYYY-MM-DD HH:MM:SS` (already matched by _TIME_PATTERN); strptime is 5 times slower."""
    try:
        return dt.datetime(  # noqa: DTZ001  # naive on the wire, in the device's zone
            int(stamp[0:4]),
            int(stamp[5:7]),
            int(stamp[8:10]),
            int(stamp[11:13]),
            int(stamp[14:16]),
            int(stamp[17:19]),
        )
    except ValueError:
        raise BodyError(f"time {stamp!r} is not a real date and time") from None


def _optional_int(fields: list[str], index: int, name: str) -> int | None:
    if len(fields) <= index or not fields[index].strip():
        return None
    value = fields[index].strip()
    if not _INT_PATTERN.match(value):
        raise BodyError(f"{name} {value[:30]!r} is not a number")
    return int(value)


def _number(value: float) -> str:
    """10.0 → `10`, 0.5 → `0.5`: clocks read whole numbers."""
    return f"{value:g}"
