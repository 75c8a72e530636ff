"""The PUSH protocol's texts: exact handshake, ATTLOG lines good and bad, commands, results."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.zk_push import codec
from drivers.zk_push.codec import AttRecord, HandshakeOptions


def test_the_handshake_is_the_contracts_text() -> None:
    assert codec.handshake("CKJB201960018", HandshakeOptions()) == (
        "GET OPTION FROM: CKJB201960018\r\n"
        "ATTLOGStamp=None\r\n"
        "OPERLOGStamp=None\r\n"
        "ATTPHOTOStamp=None\r\n"
        "ErrorDelay=30\r\n"
        "Delay=10\r\n"
        "TransTimes=00:00;14:05\r\n"
        "TransInterval=1\r\n"
        "TransFlag=TransData AttLog OpLog\r\n"
        "TimeZone=8\r\n"
        "Realtime=1\r\n"
        "Encrypt=None\r\n"
    )


def test_handshake_values_come_from_the_options_and_read_back() -> None:
    options = HandshakeOptions(delay_s=5, error_delay_s=60, timezone_hours=5.5, realtime=False)
    sn, parsed = codec.parse_handshake(codec.handshake("CK1", options))
    assert sn == "CK1"
    assert parsed["Delay"] == "5"
    assert parsed["ErrorDelay"] == "60"
    assert parsed["TimeZone"] == "5.5"
    assert parsed["Realtime"] == "0"


def test_a_full_attlog_line() -> None:
    record = codec.parse_att_line("1001\t2026-11-20 08:59:58\t0\t15\t0\t0\t0")
    assert record == AttRecord("1001", dt.datetime(2026, 11, 20, 8, 59, 58), 0, 15, "0")
    assert record.stamp == "2026-11-20 08:59:58"


def test_trailing_fields_may_be_missing() -> None:
    assert codec.parse_att_line("7\t2026-11-20 08:59:58") == AttRecord(
        "7", dt.datetime(2026, 11, 20, 8, 59, 58)
    )
    assert codec.parse_att_line("7\t2026-11-20 08:59:58\t1\r") == AttRecord(
        "7", dt.datetime(2026, 11, 20, 8, 59, 58), 1
    )


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("1001 2026-11-20 08:59:58 0 1", "needs at least PIN and time"),
        ("\t2026-11-20 08:59:58", "PIN '' is not 1 to 24 letters or digits"),
        ("10 01\t2026-11-20 08:59:58", "PIN '10 01'"),
        ("1001\t2026/11/20 08:59:58", "time '2026/11/20 08:59:58' is not YYYY-MM-DD HH:MM:SS"),
        ("1001\t2026-02-30 08:59:58", "is not a real date and time"),
        ("1001\t2026-11-20 08:59:58\tin", "status 'in' is not a number"),
        ("1001\t2026-11-20 08:59:58\t0\tface", "verify 'face' is not a number"),
    ],
)
def test_malformed_lines_say_why(line: str, reason: str) -> None:
    with pytest.raises(codec.BodyError, match=reason.replace("(", r"\(")):
        codec.parse_att_line(line)


def test_a_body_keeps_its_good_lines_and_names_its_bad_ones() -> None:
    body = (
        "1001\t2026-11-20 08:59:58\t0\t1\t0\t0\t0\n"
        "garbage\n"
        "\n"
        "1002\t2026-11-20 09:01:07\t0\t15\t0\t0\t0\r\n"
        "1003\t2026-13-01 09:01:07\t0\t15\n"
    )
    parsed = codec.parse_attlog(body)
    assert [r.pin for r in parsed.records] == ["1001", "1002"]
    assert [(e.line, e.text) for e in parsed.errors] == [
        (2, "garbage"),
        (5, "1003\t2026-13-01 09:01:07\t0\t15"),
    ]


def test_operlog_lines_lose_passwords_and_templates_and_keep_their_time() -> None:
    body = (
        "OPLOG 4\t0\t2026-11-20 08:00:01\t0\t0\t0\t0\n"
        "USER PIN=1001\tName=张三\tPasswd=123456\tCard=0012345678\n"
        "FP PIN=1001\tFID=6\tSize=1000\tValid=1\tTmp=TSFTUzIxAAAE\n"
    )
    lines = codec.operlog_lines(body)
    assert lines == [
        "OPLOG 4\t0\t2026-11-20 08:00:01\t0\t0\t0\t0",
        "USER PIN=1001\tName=张三\tPasswd=***\tCard=0012345678",
        "FP PIN=1001\tFID=6\tSize=1000\tValid=1\tTmp=***",
    ]
    assert codec.operlog_time(lines[0]) == dt.datetime(2026, 11, 20, 8, 0, 1)
    assert codec.operlog_time(lines[1]) is None


def test_bodies_in_gb18030_are_read() -> None:
    assert codec.decode_text("Name=张三".encode("gb18030")) == "Name=张三"
    assert codec.decode_text("Name=张三".encode()) == "Name=张三"


def test_commands_and_their_results() -> None:
    assert codec.commands([]) == "OK"
    text = codec.commands([(7, "INFO"), (8, "CHECK")])
    assert text == "C:7:INFO\nC:8:CHECK\n"
    assert codec.parse_commands(text) == [(7, "INFO"), (8, "CHECK")]
    with pytest.raises(codec.BodyError):
        codec.check_command("INFO\nC:9:REBOOT")
    parsed = codec.parse_results(
        "ID=7&Return=0&CMD=INFO\n~DeviceName=K40\nFWVersion=Ver 6.60\nID=8&Return=-1002&CMD=CHECK\n"
        "what is this\n"
    )
    assert [(r.id, r.code, r.command) for r in parsed.results] == [
        (7, 0, "INFO"),
        (8, -1002, "CHECK"),
    ]
    assert parsed.results[0].details == {"DeviceName": "K40", "FWVersion": "Ver 6.60"}
    assert [e.line for e in parsed.errors] == [5]


def test_heartbeat_info() -> None:
    info = codec.parse_info("Ver 8.0.4.2-20191015,12,3,2356,192.168.1.201,10,12,12,1")
    assert info == codec.ClockInfo("Ver 8.0.4.2-20191015", 12, 3, 2356, "192.168.1.201")
    assert codec.parse_info("Ver 6.60").users is None


def test_ok_answers() -> None:
    assert codec.ok(3) == "OK: 3"
    assert codec.ok() == "OK"
    assert codec.parse_ok("OK: 3") == 3
    assert codec.parse_ok("OK") is None


records = st.builds(
    AttRecord,
    pin=st.from_regex(r"[0-9A-Za-z]{1,24}", fullmatch=True),
    time=st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31)).map(
        lambda t: t.replace(microsecond=0)
    ),
    status=st.none() | st.integers(0, 255),
    verify=st.none(),
    workcode=st.none(),
)


@given(st.lists(records, max_size=20))
def test_what_the_simulator_writes_the_driver_reads(batch: list[AttRecord]) -> None:
    parsed = codec.parse_attlog(codec.att_body(batch))
    assert parsed.errors == ()
    assert list(parsed.records) == batch


@given(st.text(max_size=2000))
def test_any_text_is_parsed_without_an_exception(text: str) -> None:
    parsed = codec.parse_attlog(text)
    nonblank = [line for line in text.split("\n") if line.rstrip("\r").strip()]
    assert len(parsed.records) + len(parsed.errors) == len(nonblank)
    for record in parsed.records:
        assert codec.PIN_PATTERN.match(record.pin)
    codec.parse_results(text)
    codec.operlog_lines(text)


@given(st.binary(max_size=2000))
def test_any_bytes_decode(body: bytes) -> None:
    codec.parse_attlog(codec.decode_text(body))
