"""The `FF 68 L L 68 ADDR CMD DATA… CS 16` frames of the rating pad bus (devices.md §2).

Pure and synchronous: no I/O, so it can be fuzzed alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from gateway.codec import FrameError

HEADER: Final = b"\xff\x68"
START: Final = 0x68
END: Final = 0x16
# L is one byte and counts ADDR and CMD as well as DATA
MAX_DATA: Final = 253
# devices.md: the display command carries at most 64 bytes of GBK text
DISPLAY_MAX_BYTES: Final = 64
TEXT_ENCODING: Final = "gbk"
_FIXED: Final = 7  # FF 68 L L 68 … CS 16 around ADDR CMD DATA


class Command(IntEnum):
    ACK = 0x01
    DISPLAY = 0x02
    STATUS = 0x03
    POLL = 0x10
    KEY = 0x11
    LOGIN = 0x12
    LOGOUT = 0x13
    PAUSE = 0x14
    RESUME = 0x15
    FAULT = 0x16


EVENT_COMMANDS: Final = frozenset(
    {Command.KEY, Command.LOGIN, Command.LOGOUT, Command.PAUSE, Command.RESUME, Command.FAULT}
)


class PadFrameError(FrameError):
    """A complete FF 68 frame with a bad length, checksum or trailer."""


class PadPayloadError(ValueError):
    """A well-framed answer whose data does not fit its command."""


@dataclass(frozen=True, slots=True)
class Frame:
    address: int
    command: int
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class PadReport:
    """An event a pad reported: `seq`, and the key, card or fault code it carries."""

    command: Command
    seq: int
    key: int | None = None
    card: str | None = None
    code: int | None = None


@dataclass(frozen=True, slots=True)
class PadStatus:
    fw_major: int
    fw_minor: int
    queue_depth: int
    fault_bits: int


def checksum(address: int, command: int, data: bytes) -> int:
    return (address + command + sum(data)) & 0xFF


def encode(frame: Frame) -> bytes:
    if not 0 <= frame.address <= 0xFF or not 0 <= frame.command <= 0xFF:
        raise ValueError("address and command are one byte each")
    if len(frame.data) > MAX_DATA:
        raise ValueError(f"at most {MAX_DATA} data bytes fit a frame")
    length = 2 + len(frame.data)
    return bytes(
        [
            0xFF,
            START,
            length,
            length,
            START,
            frame.address,
            frame.command,
            *frame.data,
            checksum(frame.address, frame.command, frame.data),
            END,
        ]
    )


def decode(buffer: bytes | bytearray) -> tuple[int, Frame | None]:
    """See gateway.codec.Decoder. A bad frame consumes one byte, so a frame inside it is found."""
    start = buffer.find(HEADER)
    if start < 0:
        keep = 1 if buffer.endswith(b"\xff") else 0  # maybe the first byte of a header
        return len(buffer) - keep, None
    if start > 0:
        return start, None
    if len(buffer) >= 4 and buffer[2] != buffer[3]:
        raise PadFrameError("length bytes differ", 1)
    if len(buffer) >= 5 and buffer[4] != START:
        raise PadFrameError("no 68 after the length", 1)
    if len(buffer) >= 3 and buffer[2] < 2:
        raise PadFrameError("length below 2", 1)
    if len(buffer) < 5:
        return 0, None
    length = buffer[2]
    total = length + _FIXED
    if len(buffer) < total:
        return 0, None
    body = bytes(buffer[5 : 5 + length])
    if buffer[total - 1] != END:
        raise PadFrameError("no 16 at the end", 1)
    if buffer[total - 2] != sum(body) & 0xFF:
        raise PadFrameError("checksum mismatch", 1)
    return total, Frame(body[0], body[1], body[2:])


def poll(address: int) -> Frame:
    return Frame(address, Command.POLL)


def ack(address: int, seq: int) -> Frame:
    return Frame(address, Command.ACK, bytes([seq]))


def status_request(address: int) -> Frame:
    return Frame(address, Command.STATUS)


def display(address: int, text: str) -> Frame:
    return Frame(address, Command.DISPLAY, display_bytes(text))


def display_bytes(text: str) -> bytes:
    """GBK text cut to 64 bytes between characters; what GBK cannot encode shows as `?`."""
    out = bytearray()
    for char in text:
        encoded = char.encode(TEXT_ENCODING, errors="replace")
        if len(out) + len(encoded) > DISPLAY_MAX_BYTES:
            break
        out += encoded
    return bytes(out)


def parse_report(frame: Frame) -> PadReport:
    """The event in a pad's answer to a poll (commands 0x11 to 0x16)."""
    try:
        command = Command(frame.command)
    except ValueError:
        raise PadPayloadError(f"unknown command 0x{frame.command:02x}") from None
    if command not in EVENT_COMMANDS:
        raise PadPayloadError(f"0x{frame.command:02x} is not an event")
    data = frame.data
    if not data:
        raise PadPayloadError(f"{command.name.lower()} without seq")
    seq = data[0]
    if command is Command.KEY:
        if len(data) != 2:
            raise PadPayloadError("key event needs seq and key")
        return PadReport(command, seq, key=data[1])
    if command is Command.LOGIN:
        card = data[1:]
        if not card or not card.isascii() or not card.decode("ascii").isprintable():
            raise PadPayloadError("login needs a printable ASCII card number")
        return PadReport(command, seq, card=card.decode("ascii"))
    if command is Command.FAULT:
        if len(data) != 2:
            raise PadPayloadError("fault event needs seq and code")
        return PadReport(command, seq, code=data[1])
    if len(data) != 1:
        raise PadPayloadError(f"{command.name.lower()} carries only seq")
    return PadReport(command, seq)


def parse_status(frame: Frame) -> PadStatus:
    if frame.command != Command.STATUS or len(frame.data) != 4:
        raise PadPayloadError("status answer needs 4 data bytes")
    return PadStatus(*frame.data)


def report_frame(address: int, report: PadReport) -> Frame:
    """The frame a pad sends for `report` (for simulators and tests)."""
    data = bytes([report.seq])
    if report.key is not None:
        data += bytes([report.key])
    if report.card is not None:
        data += report.card.encode("ascii")
    if report.code is not None:
        data += bytes([report.code])
    return Frame(address, report.command, data)
