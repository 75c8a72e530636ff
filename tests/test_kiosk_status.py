"""The kiosk status JSON (devices.md §5): normalization, unknown values kept raw, refusals of
bodies that are not a status; fuzzed so that no body can raise anything else."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.kiosk_http.status import MAX_RAW_CHARS, KioskPayloadError, Peripheral, parse_status

EXAMPLE = {
    "kiosk_id": "K01",
    "state": "ready",
    "uptime_s": 8130,
    "app_version": "3.2.1",
    "ts": "2026-11-21T10:00:00+08:00",
    "peripherals": {
        "printer": "ok",
        "id_reader": "ok",
        "card_reader": "ok",
        "scanner": "ok",
        "camera": "ok",
        "touch": "ok",
    },
}


def body(**changes: Any) -> bytes:
    return json.dumps({**EXAMPLE, **changes}).encode()


def test_the_contracts_example() -> None:
    status = parse_status(body())
    assert status.state == "ready"
    assert status.state_raw is None
    assert status.kiosk_id == "K01"
    assert status.uptime_s == 8130
    assert status.app_version == "3.2.1"
    assert status.ts == dt.datetime(2026, 11, 21, 10, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    assert list(status.peripherals) == [
        "printer",
        "id_reader",
        "card_reader",
        "scanner",
        "camera",
        "touch",
    ]
    assert all(p == Peripheral("ok") for p in status.peripherals.values())


def test_values_are_normalized_and_unknown_ones_kept_raw() -> None:
    status = parse_status(
        body(
            state=" Busy ",
            peripherals={
                "printer": "PAPER_OUT",
                "scanner": "lamp_fail",
                "camera": None,
                "touch": 3,
                "x": "z" * 100,
            },
        )
    )
    assert status.state == "busy"
    assert status.peripherals["printer"] == Peripheral("paper_out")
    assert status.peripherals["scanner"] == Peripheral("unknown", "lamp_fail")
    assert status.peripherals["camera"] == Peripheral("unknown", "null")
    assert status.peripherals["touch"] == Peripheral("unknown", "3")
    raw = status.peripherals["x"].raw
    assert raw is not None
    assert len(raw) == MAX_RAW_CHARS
    assert parse_status(body(state="sleeping")).state_raw == "sleeping"


def test_only_state_and_peripherals_are_required_and_other_keys_are_ignored() -> None:
    status = parse_status(b'{"state": "error", "peripherals": {}, "extra": [1, 2]}')
    assert status.state == "error"
    assert status.peripherals == {}
    assert status.ts is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1]", "must be a JSON object"),
        (b'{"peripherals": {}}', "state: Field required"),
        (b'{"state": "ready"}', "peripherals: Field required"),
        (b'{"state": "ready", "peripherals": []}', "peripherals"),
        (b'{"state": {"a": 1}, "peripherals": {}}', "state"),
        (b'{"state": "ready", "peripherals": {"printer": ["ok"]}}', "peripherals.printer"),
        (b'{"state": "ready", "peripherals": {"bad name": "ok"}}', "is not a peripheral name"),
        (b'{"state": "ready", "peripherals": {}, "uptime_s": -1}', "uptime_s"),
        (b'{"state": "ready", "peripherals": {}, "uptime_s": "12"}', "uptime_s"),
        (b'{"state": "ready", "peripherals": {}, "ts": "yesterday"}', "ts"),
        (
            json.dumps(
                {"state": "ready", "peripherals": {f"p{n}": "ok" for n in range(40)}}
            ).encode(),
            "peripherals",
        ),
    ],
)
def test_bodies_that_are_not_a_status_are_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(KioskPayloadError, match=reason):
        parse_status(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.binary(max_size=200))
def test_fuzz_any_bytes_parse_or_are_refused(raw: bytes) -> None:
    with contextlib.suppress(KioskPayloadError):
        parse_status(raw)


@given(
    json_values,
    st.dictionaries(st.text(max_size=12), json_values, max_size=8),
    st.dictionaries(st.sampled_from(["kiosk_id", "uptime_s", "app_version", "ts"]), json_values),
)
def test_fuzz_any_json_parses_to_contract_words_or_is_refused(
    state: Any, peripherals: dict[str, Any], others: dict[str, Any]
) -> None:
    try:
        status = parse_status(json.dumps({"state": state, "peripherals": peripherals, **others}))
    except KioskPayloadError:
        return
    assert status.state in {"ready", "busy", "maintenance", "error", "unknown"}
    for peripheral in status.peripherals.values():
        assert peripheral.state in {
            "ok",
            "paper_low",
            "paper_out",
            "jam",
            "offline",
            "error",
            "unknown",
        }
        assert (peripheral.raw is not None) == (peripheral.state == "unknown")
