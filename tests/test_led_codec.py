"""LED frames (devices.md §4): CRC-16/MODBUS vectors, escaping, framing errors, resync, and
GBK paging; fuzzed with hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.led_text import codec
from drivers.led_text.codec import Color, Command, Effect, Frame, LedFrameError, LedStatus
from drivers.led_text.text import REPLACEMENT, join_lines, marker, paginate, to_gbk

frames = st.builds(
    Frame,
    address=st.integers(0, 255),
    command=st.integers(0, 255),
    data=st.binary(max_size=300),
)
# bytes that favour the four special ones, so that escaping is exercised hard
wire_bytes = st.lists(
    st.one_of(st.sampled_from([0xA5, 0xA6, 0x5A, 0x5B, 0x00]), st.integers(0, 255)), max_size=400
).map(bytes)


def decode_stream(data: bytes) -> tuple[list[Frame], int]:
    """Feed `data` to the decoder as a receiver does; return the frames and the bad-frame count."""
    buffer = bytearray(data)
    found: list[Frame] = []
    bad = 0
    while buffer:
        try:
            consumed, frame = codec.decode(buffer)
        except LedFrameError as err:
            dropped = err.consumed
        else:
            dropped = 0
        if dropped:
            assert 1 <= dropped <= len(buffer)
            del buffer[:dropped]
            bad += 1
            continue
        if frame is not None:
            found.append(frame)
        if consumed == 0:
            break
        del buffer[:consumed]
    return found, bad


def test_crc16_modbus_check_vectors() -> None:
    assert codec.crc16_modbus(b"123456789") == 0x4B37  # the catalogue's check value
    # Modbus RTU "read 10 holding registers of unit 1 from 0": the wire ends C5 CD
    assert codec.crc16_modbus(bytes.fromhex("01030000000a")) == 0xCDC5
    assert codec.crc16_modbus(b"") == 0xFFFF


def test_a_frame_on_the_wire_byte_for_byte() -> None:
    frame = codec.brightness(0x5A, 0xA5 & 0x3F)  # address 5A must be escaped
    body = bytes([0x5A, 0x21, 0x00, 0x01, 0x25])
    crc = codec.crc16_modbus(body)
    expected = (
        b"\xa5"
        + b"\x5b\x02\x21\x00\x01\x25"
        + codec.escape(bytes([crc & 0xFF, crc >> 8]))
        + b"\x5a"
    )
    assert codec.encode(frame) == expected
    assert codec.decode(expected) == (len(expected), frame)


def test_escape_table() -> None:
    assert codec.escape(b"\xa5\xa6\x5a\x5b\x01") == b"\xa6\x02\xa6\x01\x5b\x02\x5b\x01\x01"
    assert codec.unescape(b"\xa6\x02\xa6\x01\x5b\x02\x5b\x01\x01") == b"\xa5\xa6\x5a\x5b\x01"
    for bad in (b"\xa6\x03", b"\x5b", b"\x01\x5a", b"\xa5"):
        with pytest.raises(ValueError, match=r"escape|unescaped"):
            codec.unescape(bad)


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"\xa5\x01\x20\x00\x00\x5a", "too short"),
        (b"\xa5\x01\x20\x00\x05\x00\x00\x5a", "LEN says 5"),
        (b"\xa5\x01\xa6\x07\x5a", "unknown escape"),
    ],
)
def test_bad_frames_are_rejected_with_a_reason_and_consumed_through_their_end(
    wire: bytes, reason: str
) -> None:
    with pytest.raises(LedFrameError, match=reason) as caught:
        codec.decode(wire + b"\x00")
    assert caught.value.consumed == len(wire)


def test_a_corrupt_crc_is_a_bad_frame_and_the_next_frame_is_still_found() -> None:
    body = bytes([3, Command.CLEAR, 0, 1, 1])
    crc = codec.crc16_modbus(body) ^ 0x0100
    corrupt = b"\xa5" + codec.escape(body + bytes([crc & 0xFF, crc >> 8])) + b"\x5a"
    with pytest.raises(LedFrameError, match="CRC mismatch"):
        codec.decode(corrupt)
    good = codec.encode(codec.status_request(3))
    frames_found, bad = decode_stream(b"\x00\x11" + corrupt + good)
    assert frames_found == [codec.status_request(3)]
    assert bad == 1


def test_a_frame_cut_short_is_dropped_at_the_next_start() -> None:
    good = codec.encode(codec.status_request(3))
    frames_found, bad = decode_stream(good[:5] + good)
    assert frames_found == [codec.status_request(3)]
    assert bad == 1


def test_partial_frames_wait_for_more() -> None:
    wire = codec.encode(
        codec.show(1, "办事指南".encode("gbk"), area=1, color=Color.RED, effect=Effect.SCROLL)
    )
    for cut in range(1, len(wire)):
        assert codec.decode(wire[:cut]) == (0, None)


def test_answers_and_status() -> None:
    status = LedStatus(power=True, brightness=80, temperature_c=-12, fault_bits=0b0101)
    frame = codec.answer(7, Command.STATUS, 0, codec.status_data(status))
    assert codec.is_answer_to(frame, 7, Command.STATUS)
    parsed = codec.parse_answer(frame)
    assert parsed.ok
    assert parsed.command == Command.STATUS
    assert codec.parse_status(parsed.data) == status
    assert status.faults == ("module", "over_temperature")
    refused = codec.parse_answer(codec.answer(7, Command.SHOW, 4))
    assert not refused.ok
    assert refused.describe() == "busy"
    with pytest.raises(codec.LedPayloadError, match="5 bytes"):
        codec.parse_status(b"\x01\x02")
    with pytest.raises(codec.LedPayloadError, match="result byte"):
        codec.parse_answer(Frame(7, 0xA0))
    with pytest.raises(codec.LedPayloadError, match="brightness 101"):
        codec.parse_status(bytes([1, 101, 20, 0, 0]))


def test_show_carries_area_color_effect_seconds_and_text() -> None:
    frame = codec.show(
        1, "请到3号窗口".encode("gbk"), area=2, color=Color.GREEN, effect=Effect.FLASH, seconds=300
    )
    request = codec.parse_show(frame.data)
    assert (request.area, request.color, request.effect, request.seconds) == (2, 2, 2, 300)
    assert request.text.decode("gbk") == "请到3号窗口"


@given(frames)
def test_fuzz_round_trip(frame: Frame) -> None:
    wire = codec.encode(frame)
    assert wire[0] == codec.START
    assert wire[-1] == codec.END
    assert codec.START not in wire[1:-1]
    assert codec.END not in wire[1:-1]
    assert codec.decode(wire) == (len(wire), frame)


@given(wire_bytes)
def test_fuzz_garbage_never_crashes_and_always_progresses(data: bytes) -> None:
    decode_stream(data)  # asserts that every error consumes 1..len bytes


@given(wire_bytes, frames, wire_bytes)
def test_fuzz_a_frame_is_found_after_any_garbage(
    prefix: bytes, frame: Frame, suffix: bytes
) -> None:
    found, _bad = decode_stream(prefix + codec.encode(frame) + suffix)
    assert frame in found


@given(frames, st.data())
def test_fuzz_a_frame_arriving_in_pieces_is_decoded_once_complete(
    frame: Frame, data: st.DataObject
) -> None:
    wire = codec.encode(frame)
    cuts = sorted(data.draw(st.lists(st.integers(1, len(wire) - 1), max_size=6)))
    buffer = bytearray()
    decoded = None
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        buffer += wire[start:end]
        consumed, decoded = codec.decode(buffer)
        if end < len(wire):
            assert (consumed, decoded) == (0, None)
    assert decoded == frame


# GBK text and pages ---------------------------------------------------------------------------


def test_characters_gbk_cannot_encode_are_replaced_visibly() -> None:
    text = to_gbk("办事😀大厅")
    assert text.replaced == 1
    assert text.text == f"办事{REPLACEMENT}大厅"


def test_a_text_that_fits_is_one_page_without_marker() -> None:
    assert paginate(to_gbk("欢迎光临"), 16) == ["欢迎光临".encode("gbk")]


def test_a_long_text_is_paged_in_order_with_markers_and_never_cut_inside_a_character() -> None:
    pages = paginate(to_gbk("一二三四五六七八九十a"), 16)
    assert [p.decode("gbk") for p in pages] == ["一二三四五 (1/3)", "六七八九十 (2/3)", "a (3/3)"]


def test_lines_are_joined_and_blank_lines_dropped() -> None:
    assert join_lines([" 张三 外出 ", "", "李四 请假"]) == "张三 外出\u3000李四 请假"


def _unmarked(pages: list[bytes]) -> str:
    if len(pages) == 1:
        return pages[0].decode("gbk")
    out = []
    for number, page in enumerate(pages, start=1):
        tail = marker(number, len(pages))
        assert page.endswith(tail)
        out.append(page[: -len(tail)].decode("gbk"))
    return "".join(out)


@settings(max_examples=300)
@given(st.text(max_size=400), st.integers(16, 600))
def test_fuzz_pages_fit_decode_and_read_in_order(text: str, max_bytes: int) -> None:
    gbk = to_gbk(text)
    pages = paginate(gbk, max_bytes)
    for page in pages:
        assert len(page) <= max_bytes
        page.decode("gbk")  # strict: no page holds half a character
    assert _unmarked(pages) == gbk.text
    expected = "".join(ch if _encodable(ch) else REPLACEMENT for ch in text)
    assert gbk.text == expected
    assert gbk.replaced == sum(1 for ch in text if not _encodable(ch))


def _encodable(char: str) -> bool:
    try:
        char.encode("gbk")
    except UnicodeEncodeError:
        return False
    return True
