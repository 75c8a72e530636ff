"""The `A5 ADDR CMD LEN_HI LEN_LO DATA… CRC_LO CRC_HI 5A` frames of LED text controllers
(devices.md §4): CRC-16/MODBUS over ADDR through DATA, every byte between `A5` and `5A` escaped.

Pure and synchronous: no I/O, so it can be fuzzed alone. Because `A5` and `5A` never occur inside
an escaped frame, a receiver resynchronises on the next `A5` after any bad frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from gateway.codec import FrameError

START: Final = 0xA5
END: Final = 0x5A
ANSWER_FLAG: Final = 0x80  # an answer's command is the request's with this bit set
# LEN is two bytes
MAX_DATA: Final = 0xFFFF
# the show command's data before its text: area color effect seconds_hi seconds_lo
SHOW_HEADER: Final = 5
MAX_SHOW_TEXT: Final = MAX_DATA - SHOW_HEADER
_HEADER: Final = 4  # ADDR CMD LEN_HI LEN_LO
_CRC: Final = 2
# escaping at most doubles a frame; a start with no end after this many bytes never ends
MAX_WIRE_BYTES: Final = 2 * (_HEADER + MAX_DATA + _CRC) + 2

_ESCAPE: Final[dict[int, bytes]] = {
    0xA5: b"\xa6\x02",
    0xA6: b"\xa6\x01",
    0x5A: b"\x5b\x02",
    0x5B: b"\x5b\x01",
}
_UNESCAPE: Final[dict[int, dict[int, int]]] = {
    0xA6: {0x02: 0xA5, 0x01: 0xA6},
    0x5B: {0x02: 0x5A, 0x01: 0x5B},
}


class Command(IntEnum):
    SHOW = 0x10
    CLEAR = 0x11
    STATUS = 0x20
    BRIGHTNESS = 0x21
    POWER = 0x22


class Result(IntEnum):
    OK = 0
    BAD_CRC = 1
    UNKNOWN_COMMAND = 2
    BAD_ARGUMENT = 3
    BUSY = 4


class Color(IntEnum):
    RED = 1
    GREEN = 2
    YELLOW = 3


class Effect(IntEnum):
    STATIC = 0
    SCROLL = 1
    FLASH = 2


FAULT_NAMES: Final[dict[int, str]] = {
    0: "module",
    1: "power_supply",
    2: "over_temperature",
    3: "storage",
}
OVER_TEMPERATURE_BIT: Final = 2


class LedFrameError(FrameError):
    """A complete frame (or a start that never ends) that is invalid."""


class LedPayloadError(ValueError):
    """A well-framed message whose data does not fit its command."""


@dataclass(frozen=True, slots=True)
class Frame:
    address: int
    command: int
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Answer:
    """A controller's answer: the command it answers, its result code, the data after it."""

    command: int
    result: int
    data: bytes = b""

    @property
    def ok(self) -> bool:
        return self.result == Result.OK

    def describe(self) -> str:
        try:
            return Result(self.result).name.lower()
        except ValueError:
            return f"result {self.result}"


@dataclass(frozen=True, slots=True)
class LedStatus:
    power: bool
    brightness: int
    temperature_c: int
    fault_bits: int

    @property
    def faults(self) -> tuple[str, ...]:
        """The names of the fault bits that are set (bits without a name: `bit{n}`)."""
        return tuple(
            FAULT_NAMES.get(bit, f"bit{bit}") for bit in range(16) if self.fault_bits >> bit & 1
        )


@dataclass(frozen=True, slots=True)
class ShowRequest:
    area: int
    color: int
    effect: int
    seconds: int
    text: bytes


def crc16_modbus(data: bytes | bytearray) -> int:
    """CRC-16/MODBUS: reflected polynomial 0xA001, initial 0xFFFF, no final XOR."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def escape(body: bytes) -> bytes:
    return b"".join(_ESCAPE.get(byte, bytes([byte])) for byte in body)


def unescape(wire: bytes | bytearray) -> bytes:
    """Undo `escape`; raise ValueError on a bare `A5`/`5A` or an unknown escape sequence."""
    out = bytearray()
    index = 0
    while index < len(wire):
        byte = wire[index]
        if byte in _UNESCAPE:
            if index + 1 >= len(wire):
                raise ValueError(f"escape byte {byte:02X} at the end of the frame")
            original = _UNESCAPE[byte].get(wire[index + 1])
            if original is None:
                raise ValueError(f"unknown escape {byte:02X} {wire[index + 1]:02X}")
            out.append(original)
            index += 2
            continue
        if byte in (START, END):
            raise ValueError(f"unescaped {byte:02X} inside a frame")
        out.append(byte)
        index += 1
    return bytes(out)


def encode(frame: Frame) -> bytes:
    if not 0 <= frame.address <= 0xFF or not 0 <= frame.command <= 0xFF:
        raise ValueError("address and command are one byte each")
    if len(frame.data) > MAX_DATA:
        raise ValueError(f"at most {MAX_DATA} data bytes fit a frame")
    length = len(frame.data)
    body = bytes([frame.address, frame.command, length >> 8, length & 0xFF]) + frame.data
    crc = crc16_modbus(body)
    return bytes([START]) + escape(body + bytes([crc & 0xFF, crc >> 8])) + bytes([END])


def decode(buffer: bytes | bytearray) -> tuple[int, Frame | None]:
    """See gateway.codec.Decoder. A bad frame is consumed through its `5A` (or up to the `A5`
    that starts the next one), so the frame after it is found."""
    start = buffer.find(START)
    if start < 0:
        return len(buffer), None
    if start > 0:
        return start, None
    end = buffer.find(END, 1)
    restart = buffer.find(START, 1)
    if restart >= 0 and (end < 0 or restart < end):
        raise LedFrameError("a frame cut short: A5 again before its 5A", restart)
    if end < 0:
        if len(buffer) > MAX_WIRE_BYTES:
            raise LedFrameError("no 5A after a frame's worth of bytes", len(buffer))
        return 0, None
    consumed = end + 1
    try:
        body = unescape(buffer[1:end])
    except ValueError as err:
        raise LedFrameError(str(err), consumed) from None
    if len(body) < _HEADER + _CRC:
        raise LedFrameError(f"frame of {len(body)} bytes is too short", consumed)
    length = body[2] << 8 | body[3]
    if len(body) != _HEADER + length + _CRC:
        raise LedFrameError(
            f"LEN says {length} data bytes, the frame holds {len(body) - _HEADER - _CRC}",
            consumed,
        )
    crc = body[-2] | body[-1] << 8
    if crc16_modbus(body[:-_CRC]) != crc:
        raise LedFrameError("CRC mismatch", consumed)
    return consumed, Frame(body[0], body[1], body[_HEADER:-_CRC])


def show(
    address: int,
    text: bytes,
    *,
    area: int,
    color: Color,
    effect: Effect,
    seconds: int = 0,
) -> Frame:
    """Show GBK `text` in `area` (`seconds` 0: until replaced)."""
    if not 0 <= area <= 0xFF:
        raise ValueError("area is one byte")
    if not 0 <= seconds <= 0xFFFF:
        raise ValueError("seconds must be 0..65535")
    if len(text) > MAX_SHOW_TEXT:
        raise ValueError(f"at most {MAX_SHOW_TEXT} bytes of text fit a frame")
    header = bytes([area, color, effect, seconds >> 8, seconds & 0xFF])
    return Frame(address, Command.SHOW, header + text)


def clear(address: int, area: int) -> Frame:
    return Frame(address, Command.CLEAR, bytes([area]))


def status_request(address: int) -> Frame:
    return Frame(address, Command.STATUS)


def brightness(address: int, level: int) -> Frame:
    if not 0 <= level <= 100:
        raise ValueError("brightness must be 0..100")
    return Frame(address, Command.BRIGHTNESS, bytes([level]))


def power(address: int, *, on: bool) -> Frame:
    return Frame(address, Command.POWER, bytes([1 if on else 0]))


def is_answer_to(frame: Frame, address: int, command: int) -> bool:
    return frame.address == address and frame.command == command | ANSWER_FLAG


def parse_answer(frame: Frame) -> Answer:
    """The result byte and the data after it; the frame must be an answer."""
    if not frame.command & ANSWER_FLAG:
        raise LedPayloadError(f"0x{frame.command:02x} is a request, not an answer")
    if not frame.data:
        raise LedPayloadError("an answer without its result byte")
    return Answer(frame.command & ~ANSWER_FLAG & 0xFF, frame.data[0], frame.data[1:])


def parse_status(data: bytes) -> LedStatus:
    """`power brightness temperature fault_hi fault_lo` (temperature signed, °C)."""
    if len(data) != 5:
        raise LedPayloadError(f"a status answer carries 5 bytes after its result, not {len(data)}")
    power_byte, level, temperature = data[0], data[1], data[2]
    if power_byte not in (0, 1):
        raise LedPayloadError(f"power {power_byte} is neither 0 nor 1")
    if level > 100:
        raise LedPayloadError(f"brightness {level} is over 100")
    return LedStatus(
        power=power_byte == 1,
        brightness=level,
        temperature_c=temperature - 256 if temperature >= 128 else temperature,
        fault_bits=data[3] << 8 | data[4],
    )


def status_data(status: LedStatus) -> bytes:
    """What a controller puts after the result byte of a status answer (for simulators)."""
    return bytes(
        [
            1 if status.power else 0,
            status.brightness,
            status.temperature_c & 0xFF,
            status.fault_bits >> 8 & 0xFF,
            status.fault_bits & 0xFF,
        ]
    )


def answer(address: int, command: int, result: int, data: bytes = b"") -> Frame:
    """A controller's answer frame (for simulators and tests)."""
    return Frame(address, command | ANSWER_FLAG, bytes([result]) + data)


def parse_show(data: bytes) -> ShowRequest:
    """The show command's data (for simulators)."""
    if len(data) < SHOW_HEADER:
        raise LedPayloadError("show needs area, color, effect and seconds")
    return ShowRequest(
        area=data[0],
        color=data[1],
        effect=data[2],
        seconds=data[3] << 8 | data[4],
        text=data[SHOW_HEADER:],
    )
