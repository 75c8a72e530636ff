"""Modbus RTU frames for the shared serial bus, made and checked by pymodbus's own classes.

pymodbus's RTU framer (`FramerRTU`) builds frames and computes the CRC; its PDU classes know each
function's frame size. This module adapts them to the gateway's `Decoder` protocol, so a queue
controller is one more member of a `SerialBus`: the bus scheduler, not a pymodbus client, owns
the port. Pure and synchronous.

pymodbus's own `FramerRTU.decode` consumes the whole buffer after a frame; on a bus shared with
other protocols a decoder must consume exactly one frame, hence this adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import ReadHoldingRegistersRequest

from gateway.codec import FrameError

READ_HOLDING_REGISTERS: Final = 0x03
EXCEPTION_BIT: Final = 0x80
# Modbus over serial line spec: an RTU frame (ADU) is at most 256 bytes
MAX_FRAME: Final = 256
# unit id, function code, byte count ahead of the registers; CRC after them
_ANSWER_OVERHEAD: Final = 5

_ANSWERS: Final = DecodePDU(is_server=False)
_REQUESTS: Final = DecodePDU(is_server=True)
_FRAMER: Final = FramerRTU(_ANSWERS)


class RtuFrameError(FrameError):
    """A complete RTU frame with a bad CRC, an unknown function, or an undecodable body."""


@dataclass(frozen=True, slots=True)
class RtuFrame:
    """A decoded frame: a read request (address, count) or an answer (registers or exception)."""

    unit: int
    function_code: int
    registers: tuple[int, ...] = ()
    exception_code: int = 0
    address: int = 0
    count: int = 0

    @property
    def is_exception(self) -> bool:
        return bool(self.function_code & EXCEPTION_BIT)


def read_request(unit: int, address: int, count: int) -> bytes:
    """An FC03 request for `count` holding registers from `address`."""
    return bytes(
        _FRAMER.buildFrame(ReadHoldingRegistersRequest(address=address, count=count, dev_id=unit))
    )


def answer_size(count: int) -> int:
    """Bytes on the wire of the answer to a read of `count` registers."""
    return _ANSWER_OVERHEAD + 2 * count


def decode_answer(buffer: bytes | bytearray) -> tuple[int, RtuFrame | None]:
    """gateway.codec.Decoder for what a controller answers."""
    return _decode(buffer, _ANSWERS)


def decode_request(buffer: bytes | bytearray) -> tuple[int, RtuFrame | None]:
    """gateway.codec.Decoder for what a master asks (simulators)."""
    return _decode(buffer, _REQUESTS)


def _decode(buffer: bytes | bytearray, decoder: DecodePDU) -> tuple[int, RtuFrame | None]:
    if len(buffer) < FramerRTU.MIN_SIZE:
        return 0, None
    data = bytes(buffer[:MAX_FRAME])
    pdu_class = decoder.lookupPduClass(data)
    if pdu_class is None:
        raise RtuFrameError(f"unknown function code 0x{data[1]:02x}", 1)
    try:
        size = int(pdu_class.calculateRtuFrameSize(data))
    except ModbusException as err:
        raise RtuFrameError(f"function 0x{data[1]:02x} has no RTU frame size", 1) from err
    if size > MAX_FRAME:
        raise RtuFrameError(f"frame of {size} bytes is over {MAX_FRAME}", 1)
    if not size or len(data) < size:
        return 0, None
    if not FramerRTU.check_CRC(data[: size - 2], int.from_bytes(data[size - 2 : size], "big")):
        raise RtuFrameError("CRC mismatch", 1)
    pdu = decoder.decode(data[1 : size - 2])
    if pdu is None:
        raise RtuFrameError(f"function 0x{data[1]:02x}: body does not decode", size)
    return size, RtuFrame(
        unit=data[0],
        function_code=int(pdu.function_code),
        registers=tuple(pdu.registers),
        exception_code=int(getattr(pdu, "exception_code", 0)),
        address=int(pdu.address),
        count=int(pdu.count),
    )
