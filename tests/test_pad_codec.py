"""The FF 68 codec alone: round trips, payloads, and a fuzz over arbitrary bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ff68_pad import codec
from drivers.ff68_pad.codec import Command, Frame, PadFrameError, PadPayloadError, PadReport

frames = st.builds(
    Frame,
    address=st.integers(0, 255),
    command=st.integers(0, 255),
    data=st.binary(max_size=codec.MAX_DATA),
)


def decode_all(stream: bytes) -> list[tuple[int, Frame]]:
    """Every frame in `stream` with its offset, resynchronising after bad frames."""
    found: list[tuple[int, Frame]] = []
    buffer = bytearray(stream)
    offset = 0
    while buffer:
        try:
            consumed, frame = codec.decode(buffer)
        except PadFrameError as err:
            consumed, frame = err.consumed, None
        if consumed == 0:
            break
        if frame is not None:
            found.append((offset, frame))
        del buffer[:consumed]
        offset += consumed
    return found


def test_the_poll_frame_is_the_contracts_nine_bytes() -> None:
    wire = codec.encode(codec.poll(1))
    assert wire == bytes.fromhex("ff 68 02 02 68 01 10 11 16")
    assert len(wire) == 9


@given(frames)
def test_every_frame_round_trips(frame: Frame) -> None:
    wire = codec.encode(frame)
    assert codec.decode(wire) == (len(wire), frame)


@given(frames)
def test_a_frame_arriving_byte_by_byte_is_decoded_once_complete(frame: Frame) -> None:
    wire = codec.encode(frame)
    for end in range(1, len(wire)):
        consumed, decoded = codec.decode(wire[:end])
        assert decoded is None
        assert consumed == 0
    assert codec.decode(wire) == (len(wire), frame)


@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_nothing_but_the_codecs_own_error(stream: bytes) -> None:
    buffer = bytearray(stream)
    while buffer:
        try:
            consumed, _frame = codec.decode(buffer)
        except PadFrameError as err:
            consumed = err.consumed
        if consumed == 0:
            break
        del buffer[:consumed]
    # what is left waits for more bytes: the start of a frame that could still complete
    assert not buffer or (buffer[0] == 0xFF and len(buffer) < 5 + 255 + 2)


@given(st.binary(max_size=200), frames, st.binary(max_size=200))
def test_a_valid_frame_in_garbage_is_found(before: bytes, frame: Frame, after: bytes) -> None:
    wire = codec.encode(frame)
    stream = before + wire + after
    found = decode_all(stream)
    start = len(before)
    # found at its place, unless garbage before it happens to form a valid frame that swallows it
    swallowed = any(offset < start < offset + len(codec.encode(other)) for offset, other in found)
    assert (start, frame) in found or swallowed


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (bytes.fromhex("ff 68 02 03 68 01 10 11 16"), "length bytes differ"),
        (bytes.fromhex("ff 68 02 02 69 01 10 11 16"), "no 68 after the length"),
        (bytes.fromhex("ff 68 02 02 68 01 10 12 16"), "checksum mismatch"),
        (bytes.fromhex("ff 68 02 02 68 01 10 11 17"), "no 16 at the end"),
    ],
)
def test_bad_frames_are_reported_and_skipped_by_one_byte(wire: bytes, reason: str) -> None:
    with pytest.raises(PadFrameError, match=reason) as caught:
        codec.decode(wire)
    assert caught.value.consumed == 1


@pytest.mark.parametrize(
    "report",
    [
        PadReport(Command.KEY, 7, key=1),
        PadReport(Command.LOGIN, 8, card="0012345678"),
        PadReport(Command.LOGOUT, 9),
        PadReport(Command.PAUSE, 10),
        PadReport(Command.RESUME, 255),
        PadReport(Command.FAULT, 0, code=3),
    ],
)
def test_event_reports_round_trip(report: PadReport) -> None:
    assert codec.parse_report(codec.report_frame(5, report)) == report


@pytest.mark.parametrize(
    "frame",
    [
        Frame(1, Command.KEY, b"\x01"),
        Frame(1, Command.KEY, b"\x01\x02\x03"),
        Frame(1, Command.LOGIN, b"\x01\xff\xfe"),
        Frame(1, Command.LOGOUT, b""),
        Frame(1, Command.ACK, b"\x01"),
        Frame(1, 0x7F, b"\x01"),
    ],
)
def test_malformed_event_payloads_are_refused(frame: Frame) -> None:
    with pytest.raises(PadPayloadError):
        codec.parse_report(frame)


def test_display_text_is_gbk_cut_between_characters() -> None:
    assert codec.display_bytes("张三") == "张三".encode("gbk")
    long = codec.display_bytes("窗" * 40)
    assert len(long) == 64
    assert long.decode("gbk") == "窗" * 32
    odd = codec.display_bytes("a" + "窗" * 40)
    assert len(odd) == 63  # the 33rd character would straddle the 64-byte limit
    assert codec.display_bytes("a😀b") == b"a?b"  # visible, not silently dropped
