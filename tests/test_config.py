"""The config contract: the example validates, and every kind of mistake names its field."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, parse_config, resolve_secrets
from tests.support.harness import REPO

CONTRACT = REPO.parent / "shared" / "contract" / "config.md"


def contract_example() -> str:
    match = re.search(r"```yaml\n(.*?)```", CONTRACT.read_text(encoding="utf-8"), re.DOTALL)
    assert match is not None, "config.md has a yaml example"
    return match.group(1)


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="hall.yaml")
    return caught.value.errors


def test_the_contracts_example_is_valid_with_its_defaults() -> None:
    config = parse_config(contract_example())
    assert config.site == "wanzhou-main"
    assert [d.profile for d in config.devices] == [
        "zk_push",
        "modbus_queue",
        "ff68_pad",
        "led_text",
        "kiosk_http",
    ]
    assert config.mqtt_client_id == "hallgw-wanzhou-main"
    assert config.mqtt_root == "hall/wanzhou-main"
    assert config.store.outbox_max_messages == 1_000_000
    assert config.rules.outing.max_per_day == 3
    pad = config.devices[2]
    assert pad.profile == "ff68_pad"
    assert pad.key_map == {1: 5, 2: 4, 3: 3, 4: 2, 5: 1}


def test_a_minimal_config_needs_only_site() -> None:
    config = parse_config("site: hall-1\n")
    assert config.http.bind == "127.0.0.1"
    assert config.timezone == "Asia/Shanghai"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("    address: 1\n", "    address: 300\n"),
            "devices[2].address: must be 1..254 (got 300)",
        ),
        (("    delay_s: 10\n", "    delay_s: 10\n    dely: 3\n"), "devices[0].dely: unknown key"),
        (("profile: led_text", "profile: led_txt"), "devices[3]: unknown profile 'led_txt'"),
        (("    host: 192.168.10.20\n", ""), "devices[1].host: is required with transport tcp"),
        (("    window: w01\n", "    window: w09\n"), "devices[2].window: unknown window 'w09'"),
        (("    bus: pads-1f\n", "    bus: pads-2f\n"), "devices[2].bus: unknown bus 'pads-2f'"),
        (("timezone: Asia/Shanghai\n", "timezone: Mars/Base\n"), "timezone: unknown time zone"),
        (("site: wanzhou-main", "site: Wanzhou Main"), "site: must match"),
        (
            ("  port: 1883\n", "  port: 1883\n  port: 1884\n"),
            "hall.yaml: line 8, column 3: duplicate key 'port'",
        ),
        (
            ("  keepalive_s: 30\n", "  keepalive_s: thirty\n"),
            "mqtt.keepalive_s: must be a valid integer",
        ),
        (
            ('card: "0012345679"', 'card: "0012345678"'),
            "staff[1].card: '0012345678' is already used by staff[0]",
        ),
        (
            ("  password_env: null ", "  password_env: X\n  password_file: /x\n "),
            "mqtt.password_file: give either",
        ),
        (
            ('  - {start: "10:30", end: "10:50"}', '  - {start: "10:50", end: "10:30"}'),
            "timetables.standard.breaks[0].end: must be after start",
        ),
        (
            ("    - {url_env: HALLGW_WECOM_URL, ", "    - {"),
            "alerts.webhooks[0].url_env: give url_env or url_file",
        ),
        (("    unit: 1\n", "    unit: 0\n"), "devices[1].unit: must be 1..247 (got 0)"),
    ],
)
def test_each_mistake_is_reported_at_its_field(change: tuple[str, str], expected: str) -> None:
    old, new = change
    text = contract_example()
    assert old in text, f"the example has {old!r}"
    errors = errors_of(text.replace(old, new, 1))
    assert any(error.startswith(expected) for error in errors), errors


def test_every_error_is_reported_at_once() -> None:
    text = (
        contract_example()
        .replace("    address: 1\n", "    address: 0\n", 1)
        .replace("    window: w01\n", "    window: nowhere\n", 1)
        .replace("  keepalive_s: 30\n", "  keepalive_s: -1\n", 1)
    )
    errors = errors_of(text)
    assert len(errors) == 3, errors


def test_two_pads_on_one_bus_address_are_refused() -> None:
    text = contract_example().replace(
        "  - id: led-hall\n",
        "  - {id: pad-w01b, profile: ff68_pad, bus: pads-1f, address: 1, window: w01}\n"
        "  - id: led-hall\n",
    )
    assert "devices[3].address: address 1 on bus 'pads-1f' is already used by devices[2]" in (
        errors_of(text)
    )


def test_secrets_come_only_from_environment_or_files(tmp_path: Path) -> None:
    config = parse_config(contract_example())
    secrets, missing = resolve_secrets(config, {})
    assert secrets.api_token is None
    assert "http.token_env: environment variable HALLGW_API_TOKEN is not set" in missing
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    text = contract_example().replace(
        "  token_env: HALLGW_API_TOKEN      # or token_file",
        f"  token_file: {token_file}",
    )
    secrets, _ = resolve_secrets(
        parse_config(text), {"HALLGW_KIOSK_TOKEN": "k", "HALLGW_WECOM_URL": "https://x"}
    )
    assert secrets.api_token is not None
    assert secrets.api_token.value == "s3cret"
    assert "s3cret" not in repr(secrets)
    assert str(secrets.api_token) == "***"
    assert errors_of("site: a\nmqtt: {password: hunter2}\n") == [
        "mqtt.password: unknown key (check its spelling against the config contract)"
    ]


def hallgw(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
        timeout=60,
    )


def test_check_config_prints_ok_and_warns_about_unset_secrets(tmp_path: Path) -> None:
    path = tmp_path / "hall.yaml"
    path.write_text(contract_example(), encoding="utf-8")
    result = hallgw("check-config", str(path), env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"
    assert "warning: http.token_env: environment variable HALLGW_API_TOKEN is not set" in (
        result.stderr
    )
    assert not list(tmp_path.glob("*.db")), "check-config creates no file"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "site: a\ndevices:\n  - {id: p, profile: ff68_pad, bus: b, address: 999, window: w}\n",
            "devices[0].address: must be 1..254 (got 999)",
        ),
        ("site: a\nmqtt: [1, 2\n", "line 3, column 1"),
        ("- just a list\n", "the top level must be a mapping"),
        ("site: a\nsite: b\n", "duplicate key 'site'"),
    ],
)
def test_bad_config_files_exit_2_with_the_path_and_no_traceback(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "hall.yaml"
    path.write_text(text, encoding="utf-8")
    for command in (["check-config", str(path)], ["run", "-c", str(path)]):
        result = hallgw(*command)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert expected in result.stderr
        assert "Traceback" not in result.stderr


def test_run_refuses_to_start_without_its_api_token(tmp_path: Path) -> None:
    path = tmp_path / "hall.yaml"
    path.write_text(f"site: a\nstore: {{path: {tmp_path / 'x.db'}}}\n", encoding="utf-8")
    result = hallgw("run", "-c", str(path), env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "http.token_env: environment variable HALLGW_API_TOKEN is not set" in result.stderr


def test_a_missing_file_is_a_config_error() -> None:
    result = hallgw("check-config", "/nonexistent/hall.yaml")
    assert result.returncode == 2
    assert "/nonexistent/hall.yaml: cannot read" in result.stderr


def test_load_config_reads_utf8(tmp_path: Path) -> None:
    path = tmp_path / "hall.yaml"
    path.write_text("site: a\nname: 万州区政务服务中心\n", encoding="utf-8")
    assert load_config(path).display_name == "万州区政务服务中心"


def test_two_queue_controllers_on_one_bus_unit_are_refused() -> None:
    text = contract_example().replace(
        "  - id: led-hall\n",
        "  - {id: q1, profile: modbus_queue, transport: rtu, bus: pads-1f, unit: 7}\n"
        "  - {id: q2, profile: modbus_queue, transport: rtu, bus: pads-1f, unit: 7}\n"
        "  - id: led-hall\n",
    )
    assert "devices[4].unit: unit 7 on bus 'pads-1f' is already used by devices[3]" in (
        errors_of(text)
    )
