"""The `alerts:` section: the optional fields' defaults, their errors at their paths, and webhook
addresses checked without ever being printed."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config, resolve_secrets

BASE = "site: test-hall\n"


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return caught.value.errors


def test_the_optional_fields_have_their_documented_defaults() -> None:
    alerts = parse_config(BASE).alerts
    assert alerts.model_dump() == {
        "device_offline_for_s": 60.0,
        "window_unattended_for_s": 120.0,
        "device_fault_for_s": 30.0,
        "flap_window_s": 120.0,
        "repeat_interval_s": 14400.0,
        "mqtt_down_for_s": 120.0,
        "outbox_growing_for_s": 600.0,
        "webhooks": [],
    }


@pytest.mark.parametrize(
    ("alerts", "expected"),
    [
        ("{flap_window_s: -1}", "alerts.flap_window_s: must be 0 or more (got -1)"),
        ("{device_fault_for_s: -0.5}", "alerts.device_fault_for_s: must be 0 or more (got -0.5)"),
        ("{repeat_interval_s: 0}", "alerts.repeat_interval_s: must be greater than 0"),
        ("{mqtt_down_for_s: soon}", "alerts.mqtt_down_for_s: must be a valid number"),
        ("{outbox_growing_for: 60}", "alerts.outbox_growing_for: unknown key"),
        (
            "{webhooks: [{url_env: X, format: slack}]}",
            "alerts.webhooks[0].format: must be 'generic', 'wecom' or 'dingtalk'",
        ),
        (
            "{webhooks: [{url_env: X, severities: [loud]}]}",
            "alerts.webhooks[0].severities[0]: must be 'critical', 'warning' or 'info'",
        ),
    ],
)
def test_a_bad_alerts_field_is_reported_at_its_path(alerts: str, expected: str) -> None:
    errors = errors_of(f"{BASE}alerts: {alerts}\n")
    assert any(e.startswith(expected) for e in errors), errors


def test_flap_window_and_fault_for_may_be_zero() -> None:
    alerts = parse_config(f"{BASE}alerts: {{flap_window_s: 0, device_fault_for_s: 0}}\n").alerts
    assert (alerts.flap_window_s, alerts.device_fault_for_s) == (0, 0)


def test_a_webhook_address_that_is_no_url_is_a_problem_that_never_shows_it() -> None:
    config = parse_config(
        f"{BASE}alerts:\n  webhooks:\n"
        "    - {url_env: HOOK_A, format: wecom}\n"
        "    - {url_env: HOOK_B, format: dingtalk}\n"
        "    - {url_env: HOOK_C}\n"
    )
    secrets, problems = resolve_secrets(
        config,
        {
            "HOOK_A": "qyapi.weixin.qq.com/cgi-bin/webhook/send?key=sekrit-1",
            "HOOK_B": "https://oapi.dingtalk.com/robot/send?access_token=sekrit-2",
            "HALLGW_API_TOKEN": "t",
        },
    )
    assert problems == [
        "alerts.webhooks[0].url_env: HOOK_A is not an http(s) URL",
        "alerts.webhooks[2].url_env: environment variable HOOK_C is not set",
    ]
    assert "sekrit" not in "\n".join(problems)
    assert list(secrets.webhook_urls) == [1]
    assert "sekrit" not in repr(secrets)
