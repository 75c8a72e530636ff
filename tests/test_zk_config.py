"""The `zk_push` profile's config: defaults from the contract, and mistakes named by their path."""

from __future__ import annotations

import pytest

from drivers.zk_push.config import ZkPushConfig
from gateway.config import ConfigError, parse_config

HALL = """
site: h
devices:
  - id: clock-1f
    profile: zk_push
    serial_number: CKJB201960018
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return caught.value.errors


def test_defaults_follow_the_contract() -> None:
    clock = parse_config(HALL).devices[0]
    assert isinstance(clock, ZkPushConfig)
    assert clock.timezone is None
    assert (clock.delay_s, clock.error_delay_s, clock.trans_times) == (10, 30, "00:00;14:05")
    assert clock.plausible_past_s == clock.plausible_future_s == 86_400
    assert clock.status_map == {
        0: "in",
        1: "out",
        2: "break_out",
        3: "break_in",
        4: "ot_in",
        5: "ot_out",
    }
    assert clock.verify_map == {
        0: "password",
        1: "fingerprint",
        2: "card",
        4: "card",
        15: "face",
        25: "palm",
    }


def test_a_profile_can_map_another_vendors_codes() -> None:
    clock = parse_config(
        HALL + "    status_map: {0: in, 1: out, 255: in}\n    verify_map: {3: card}\n"
    ).devices[0]
    assert isinstance(clock, ZkPushConfig)
    assert clock.status_map[255] == "in"
    assert clock.verify_map == {3: "card"}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("    timezone: Mars/Base\n", "devices[0].timezone: unknown time zone 'Mars/Base'"),
        ("    status_map: {9: sideways}\n", "devices[0].status_map.9: must be 'in', 'out'"),
        ("    status_map: {}\n", "devices[0].status_map: must map at least one status code"),
        ("    verify_map: {300: face}\n", "devices[0].verify_map.300: must be 0..255"),
        ("    verify_map: {1: retina}\n", "devices[0].verify_map.1: must be 'fingerprint'"),
        ("    trans_times: '25'\n", "devices[0].trans_times: must match"),
        ("    plausible_past_s: 0\n", "devices[0].plausible_past_s: must be greater than 0"),
        ("    delay_s: -1\n", "devices[0].delay_s: must be greater than 0"),
        ("    serial_number: 'CK 1'\n", "devices[0].serial_number: must match"),
        ("    dely_s: 3\n", "devices[0].dely_s: unknown key"),
    ],
)
def test_mistakes_name_their_field(extra: str, expected: str) -> None:
    text = HALL.replace("    serial_number: CKJB201960018\n", "") + (
        extra if "serial_number" in extra else "    serial_number: CKJB201960018\n" + extra
    )
    errors = errors_of(text)
    assert any(line.startswith(expected) for line in errors), errors


def test_two_clocks_with_one_serial_number_are_refused() -> None:
    text = HALL + "  - {id: clock-2f, profile: zk_push, serial_number: CKJB201960018}\n"
    assert errors_of(text) == [
        "devices[1].serial_number: 'CKJB201960018' is already used by devices[0]"
    ]
