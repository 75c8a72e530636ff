"""The led_text and kiosk_http profiles: defaults, the optional fields this version adds, and
errors that name the field."""

from __future__ import annotations

import pytest

from drivers.kiosk_http.config import KioskConfig
from drivers.led_text.config import LedTextConfig
from gateway.config import ConfigError, parse_config

LED = "site: h\ndevices:\n  - {id: led-1, profile: led_text, host: 10.0.0.5%s}\n"
KIOSK = (
    "site: h\ndevices:\n  - {id: k-1, profile: kiosk_http, base_url: 'http://10.0.0.9:8090'%s}\n"
)


def test_led_defaults_leave_power_and_brightness_alone() -> None:
    led = parse_config(LED % "").devices[0]
    assert isinstance(led, LedTextConfig)
    assert (led.port, led.address, led.status_poll_s, led.page_seconds, led.max_bytes) == (
        5200,
        1,
        10,
        8,
        512,
    )
    assert (led.area, led.color, led.effect, led.brightness) == (1, "red", "scroll", None)
    assert (led.power_schedule, led.power_on_before_min, led.power_off_after_min) == (
        "none",
        15,
        15,
    )
    assert led.max_temperature_c == 70


def test_kiosk_defaults() -> None:
    kiosk = parse_config(KIOSK % "").devices[0]
    assert isinstance(kiosk, KioskConfig)
    assert (kiosk.poll_s, kiosk.hours) == (15, "always")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (LED % ", power_schedule: off", "devices[0].power_schedule: "),  # YAML reads off as false
        (LED % ", brightness: 101", "devices[0].brightness: must be 0..100"),
        (LED % ", power_on_before_min: 300", "devices[0].power_on_before_min: must be 0..240"),
        (LED % ", color: blue", "devices[0].color: "),
        (LED % ", max_bytes: 8", "devices[0].max_bytes: must be 16..65535"),
        (KIOSK % ", hours: night", "devices[0].hours: "),
        (KIOSK % ", poll_s: 0", "devices[0].poll_s: must be greater than 0"),
    ],
)
def test_bad_fields_are_named(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert any(error.startswith(expected) for error in caught.value.errors), caught.value.errors
