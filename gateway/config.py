"""The config contract (shared/contract/config.md): models, loading, error paths, secrets.

Errors are reported as `path: message` with list indices in brackets and keys joined by dots,
`devices[3].address: must be 1..254`, never with a union's tag or a traceback.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import AfterValidator, Discriminator, Field, ValidationError, model_validator

from drivers.ff68_pad.config import PadConfig
from drivers.kiosk_http.config import KioskConfig
from drivers.led_text.config import LedTextConfig
from drivers.modbus_queue.config import ModbusQueueConfig
from drivers.zk_push.config import ZkPushConfig
from gateway.configbase import (
    DeviceBase,
    FieldError,
    Ident,
    Port,
    PositiveSeconds,
    StrictModel,
    TimeZoneName,
    int_range,
    one_secret_source,
)

DEVICE_MODELS: dict[str, type[DeviceBase]] = {
    "zk_push": ZkPushConfig,
    "modbus_queue": ModbusQueueConfig,
    "ff68_pad": PadConfig,
    "led_text": LedTextConfig,
    "kiosk_http": KioskConfig,
}
DeviceConfig = Annotated[
    ZkPushConfig | ModbusQueueConfig | PadConfig | LedTextConfig | KioskConfig,
    Discriminator("profile"),
]
SITE_PATTERN = r"^[a-z0-9_-]+$"


class TlsConfig(StrictModel):
    enabled: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            raise FieldError(missing, "cert_file and key_file go together")
        return self


class MqttConfig(StrictModel):
    host: str = "127.0.0.1"
    port: Port = 1883
    prefix: str = Field(default="hall", pattern=SITE_PATTERN)
    client_id: str | None = None  # None: hallgw-{site}
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    tls: TlsConfig = TlsConfig()
    keepalive_s: Annotated[int, int_range(5, 3600)] = 30

    @model_validator(mode="before")
    @classmethod
    def _one_password_source(cls, data: Any) -> Any:
        return one_secret_source(data, "password")


class HttpConfig(StrictModel):
    bind: str = "127.0.0.1"
    port: Port = 8080
    device_port: Port = 8081
    token_env: str | None = "HALLGW_API_TOKEN"  # noqa: S105  # a variable's name, not a token
    token_file: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_token_source(cls, data: Any) -> Any:
        return one_secret_source(data, "token", default_env="HALLGW_API_TOKEN")

    @model_validator(mode="after")
    def _two_ports(self) -> HttpConfig:
        if self.port == self.device_port:
            raise FieldError("device_port", "must differ from port")
        return self


class StoreConfig(StrictModel):
    path: str = "/var/lib/hallgw/hallgw.db"
    outbox_max_messages: Annotated[int, int_range(100, 100_000_000)] = 1_000_000


class BusConfig(StrictModel):
    id: Ident
    url: str = Field(min_length=1)
    baudrate: Annotated[int, int_range(300, 4_000_000)] = 9600
    timeout_ms: Annotated[int, int_range(10, 10_000)] = 100
    retries: Annotated[int, int_range(0, 5)] = 1
    # the least time between the starts of two sweeps (0: sweep without pause); a rating or a
    # login reaches the gateway within this, and an idle bus costs this many polls per pad
    sweep_interval_ms: Annotated[int, int_range(0, 60_000)] = 1000


class Span(StrictModel):
    start: dt.time
    end: dt.time

    @model_validator(mode="after")
    def _ordered(self) -> Span:
        if self.start >= self.end:
            raise FieldError("end", "must be after start")
        return self


class Period(Span):
    clock_in_by: dt.time | None = None  # None: the period's start


class Timetable(StrictModel):
    periods: list[Period] = Field(min_length=1)
    breaks: list[Span] = Field(default_factory=list)


class CalendarConfig(StrictModel):
    holidays: list[dt.date] = Field(default_factory=list)
    workdays: list[dt.date] = Field(default_factory=list)


class WindowConfig(StrictModel):
    id: Ident
    name: str = ""
    department: str = ""
    floor: int = 1
    queue_window: Annotated[int, int_range(1, 65535)] | None = None


class StaffConfig(StrictModel):
    id: Ident
    name: str
    department: str = ""
    window: Ident | None = None
    post: Literal["A", "B"] = "A"
    card: str | None = None
    pin: str | None = None
    queue_no: Annotated[int, int_range(1, 65535)] | None = None
    timetable: str | None = None  # None: the only timetable, or `standard`


RuleMode = Literal["enforce", "warn"]
# the outing rules of domain.md, by the name a refusal (409) and a flag carry
OutingRule = Literal["private_approval", "replacement", "max_per_day", "max_minutes_per_day"]


class OutingRules(StrictModel):
    private_approval_over_min: Annotated[int, int_range(0, 1440)] = 20
    replacement_over_min: Annotated[int, int_range(0, 1440)] = 60
    max_per_day: Annotated[int, int_range(0, 100)] = 3
    max_minutes_per_day: Annotated[int, int_range(0, 1440)] = 60
    mode: RuleMode = "enforce"
    # one rule's own mode, over `mode` (e.g. {max_minutes_per_day: warn})
    modes: dict[OutingRule, RuleMode] = Field(default_factory=dict)
    # the daily limits count private outings; official business is the department's call
    daily_limits_include_official: bool = False

    def mode_of(self, rule: OutingRule) -> RuleMode:
        return self.modes.get(rule, self.mode)


class RulesConfig(StrictModel):
    off_post_grace_min: Annotated[int, int_range(0, 240)] = 5
    breaks_excuse_absence: bool = False
    outing: OutingRules = OutingRules()
    late_early_per_month_as_half_day: Annotated[int, int_range(1, 100)] = 4


class BoardConfig(StrictModel):
    mask_names: bool = False


class LeaveConfig(StrictModel):
    # a YAML or CSV file of leave (请假) kept by the hall office; None: leave by the API only
    path: str | None = None


Severity = Literal["critical", "warning", "info"]


def _page_worthy() -> list[Severity]:
    return ["critical", "warning"]


class WebhookConfig(StrictModel):
    url_env: str | None = None
    url_file: str | None = None
    format: Literal["generic", "wecom", "dingtalk"] = "generic"
    severities: list[Severity] = Field(default_factory=_page_worthy)

    @model_validator(mode="before")
    @classmethod
    def _one_url_source(cls, data: Any) -> Any:
        data = one_secret_source(data, "url")
        if isinstance(data, dict) and data.get("url_env") is None and data.get("url_file") is None:
            raise FieldError("url_env", "give url_env or url_file (webhook addresses are secrets)")
        return data


def _not_negative(value: float) -> float:
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


Seconds = Annotated[float, AfterValidator(_not_negative)]


class AlertsConfig(StrictModel):
    """`alerts:` (config.md). The fields after `window_unattended_for_s` are optional additions;
    every duration is in seconds, 0 meaning at once."""

    device_offline_for_s: PositiveSeconds = 60
    window_unattended_for_s: PositiveSeconds = 120
    # a kiosk printer out of paper, an LED module fault, a pad fault: firing after this long
    device_fault_for_s: Seconds = 30
    # an alert whose condition clears is resolved only once it has stayed clear this long; if it
    # comes back sooner it is still the same alert (a flapping device pages once)
    flap_window_s: Seconds = 120
    # a firing alert is notified again (webhooks) this often while nobody fixes it
    repeat_interval_s: PositiveSeconds = 4 * 3600
    # gateway_degraded: the broker unreachable this long; the outbox not draining this long
    mqtt_down_for_s: PositiveSeconds = 120
    outbox_growing_for_s: PositiveSeconds = 600
    webhooks: list[WebhookConfig] = Field(default_factory=list)


class Config(StrictModel):
    site: str = Field(pattern=SITE_PATTERN)
    name: str = ""
    timezone: TimeZoneName = "Asia/Shanghai"
    mqtt: MqttConfig = MqttConfig()
    http: HttpConfig = HttpConfig()
    store: StoreConfig = StoreConfig()
    buses: list[BusConfig] = Field(default_factory=list)
    devices: list[DeviceConfig] = Field(default_factory=list)
    timetables: dict[Ident, Timetable] = Field(default_factory=dict)
    calendar: CalendarConfig = CalendarConfig()
    windows: list[WindowConfig] = Field(default_factory=list)
    staff: list[StaffConfig] = Field(default_factory=list)
    rules: RulesConfig = RulesConfig()
    board: BoardConfig = BoardConfig()
    leave: LeaveConfig = LeaveConfig()
    alerts: AlertsConfig = AlertsConfig()

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def display_name(self) -> str:
        return self.name or self.site

    @property
    def mqtt_client_id(self) -> str:
        return self.mqtt.client_id or f"hallgw-{self.site}"

    @property
    def mqtt_root(self) -> str:
        return f"{self.mqtt.prefix}/{self.site}"


class ConfigError(Exception):
    """A config that cannot be used; `errors` are `path: message` lines."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Secret:
    """A secret value that never shows up in a repr, a log line or a traceback."""

    value: str = field(repr=False)

    def __str__(self) -> str:
        return "***"


@dataclass(frozen=True)
class Secrets:
    mqtt_password: Secret | None = None
    api_token: Secret | None = None
    device_tokens: Mapping[str, Secret] = field(default_factory=dict)
    webhook_urls: Mapping[int, Secret] = field(default_factory=dict)


def load_config(path: str | Path) -> Config:
    """Read, parse and validate a config file; raise ConfigError with every error found."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError([f"{path}: cannot read: {err.strerror or err}"]) from err
    except UnicodeDecodeError as err:
        raise ConfigError([f"{path}: not UTF-8 text ({err.reason} at byte {err.start})"]) from err
    return parse_config(text, source=str(path))


def load_config_or_report(path: str | Path) -> Config | None:
    """For the command line: the config, or None after printing every error (one per line, each
    with its field path) to stderr."""
    try:
        return load_config(path)
    except ConfigError as err:
        for line in err.errors:
            print(line, file=sys.stderr)  # noqa: T201
        return None


def parse_config(text: str, *, source: str = "<config>") -> Config:
    data = _load_yaml(text, source)
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the top level must be a mapping with at least `site:`"])
    errors: list[str] = []
    config: Config | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as err:
        errors.extend(_format_error(e, data) for e in err.errors())
    errors.extend(check_references(data))
    if errors or config is None:
        raise ConfigError(errors)
    return config


def resolve_secrets(
    config: Config, environ: Mapping[str, str] | None = None
) -> tuple[Secrets, list[str]]:
    """Read every secret the config names; return them and a line for each one not set."""
    env = os.environ if environ is None else environ
    problems: list[str] = []

    def read(path: str, env_name: str | None, file_name: str | None) -> Secret | None:
        if env_name is not None:
            value = env.get(env_name)
            if not value:
                problems.append(f"{path}_env: environment variable {env_name} is not set")
                return None
            return Secret(value)
        if file_name is not None:
            try:
                value = Path(file_name).read_text(encoding="utf-8").strip()
            except OSError as err:
                problems.append(f"{path}_file: cannot read {file_name}: {err.strerror or err}")
                return None
            if not value:
                problems.append(f"{path}_file: {file_name} is empty")
                return None
            return Secret(value)
        return None

    mqtt_password = read("mqtt.password", config.mqtt.password_env, config.mqtt.password_file)
    api_token = read("http.token", config.http.token_env, config.http.token_file)
    if config.http.token_env is None and config.http.token_file is None:
        problems.append("http.token_env: no API token configured; writes would be impossible")
    device_tokens: dict[str, Secret] = {}
    for index, device in enumerate(config.devices):
        for name, (env_name, file_name) in device.secret_fields().items():
            secret = read(f"devices[{index}].{name}", env_name, file_name)
            if secret is not None:
                device_tokens[device.id] = secret
    webhook_urls: dict[int, Secret] = {}
    for index, hook in enumerate(config.alerts.webhooks):
        secret = read(f"alerts.webhooks[{index}].url", hook.url_env, hook.url_file)
        if secret is not None and not _http_url(secret.value):
            source = f"url_env: {hook.url_env}" if hook.url_env else f"url_file: {hook.url_file}"
            # the value is a secret: say where it came from, never what it is
            problems.append(f"alerts.webhooks[{index}].{source} is not an http(s) URL")
        elif secret is not None:
            webhook_urls[index] = secret
    secrets = Secrets(
        mqtt_password=mqtt_password,
        api_token=api_token,
        device_tokens=device_tokens,
        webhook_urls=webhook_urls,
    )
    return secrets, problems


def _http_url(text: str) -> bool:
    parts = urllib.parse.urlsplit(text)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in text


def check_references(data: Mapping[str, Any]) -> Iterator[str]:
    """Cross-references the schema alone cannot check: ids, buses, windows, staff keys.

    Works on the raw YAML data, so that these errors are reported together with the schema's
    own, and tolerates entries of the wrong shape (the schema reports those).
    """
    buses = _entries(data, "buses")
    devices = _entries(data, "devices")
    windows = _entries(data, "windows")
    staff = _entries(data, "staff")
    yield from _unique("buses", buses, "id")
    yield from _unique("devices", devices, "id")
    # punch clocks share one endpoint and are told apart by serial number
    yield from _unique("devices", devices, "serial_number")
    yield from _unique("windows", windows, "id")
    yield from _unique("staff", staff, "id")
    yield from _unique("staff", staff, "card")
    yield from _unique("staff", staff, "pin")
    yield from _unique("staff", staff, "queue_no")
    yield from _unique("windows", windows, "queue_window")

    bus_ids = {b.get("id") for _, b in buses}
    window_ids = {w.get("id") for _, w in windows}
    used_addresses: dict[tuple[Any, Any, Any], int] = {}
    for index, device in devices:
        bus = device.get("bus")
        if bus is not None and bus not in bus_ids:
            yield f"devices[{index}].bus: unknown bus {bus!r} (not in buses)"
        if device.get("profile") == "modbus_queue" and bus is not None:
            unit_slot = ("modbus_queue", bus, device.get("unit", 1))
            if unit_slot in used_addresses:
                yield (
                    f"devices[{index}].unit: unit {unit_slot[2]} on bus {bus!r} "
                    f"is already used by devices[{used_addresses[unit_slot]}]"
                )
            used_addresses.setdefault(unit_slot, index)
        if device.get("profile") == "ff68_pad":
            window = device.get("window")
            if window is not None and window not in window_ids:
                yield f"devices[{index}].window: unknown window {window!r} (not in windows)"
            slot = (device.get("profile"), bus, device.get("address"))
            if bus is not None and slot[2] is not None:
                if slot in used_addresses:
                    yield (
                        f"devices[{index}].address: address {slot[2]} on bus {bus!r} "
                        f"is already used by devices[{used_addresses[slot]}]"
                    )
                used_addresses.setdefault(slot, index)

    timetables = data.get("timetables")
    timetable_names = set(timetables) if isinstance(timetables, dict) else set()
    for index, person in staff:
        window = person.get("window")
        if window is not None and window not in window_ids:
            yield f"staff[{index}].window: unknown window {window!r} (not in windows)"
        timetable = person.get("timetable")
        if timetable is not None and timetable not in timetable_names:
            yield f"staff[{index}].timetable: unknown timetable {timetable!r}"
        elif timetable is None and len(timetable_names) > 1 and "standard" not in timetable_names:
            yield f"staff[{index}].timetable: several timetables exist and none is `standard`"


def _entries(data: Mapping[str, Any], section: str) -> list[tuple[int, dict[str, Any]]]:
    items = data.get(section)
    if not isinstance(items, list):
        return []
    return [(index, item) for index, item in enumerate(items) if isinstance(item, dict)]


def _unique(section: str, entries: list[tuple[int, dict[str, Any]]], key: str) -> Iterator[str]:
    first: dict[Any, int] = {}
    for index, entry in entries:
        value = entry.get(key)
        if value is None or not isinstance(value, str | int):
            continue
        if value in first:
            yield (
                f"{section}[{index}].{key}: {value!r} is already used by {section}[{first[value]}]"
            )
        else:
            first[value] = index


class _UniqueKeyLoader(yaml.SafeLoader):
    """A duplicate key in a mapping is an error, not a silent overwrite."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        if key in mapping:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", mark)
        mapping[key] = loader.construct_object(value_node)
    return mapping


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506  # a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = err.problem or err.context or "invalid YAML"
        raise ConfigError([f"{source}: {where}: {problem}"]) from None
    except yaml.YAMLError as err:
        raise ConfigError([f"{source}: invalid YAML: {err}"]) from None


def _format_error(error: Any, data: Any) -> str:
    loc: tuple[Any, ...] = error["loc"]
    parts: list[str] = []
    node = data
    for position, item in enumerate(loc):
        last = position == len(loc) - 1
        if isinstance(node, list) and isinstance(item, int):
            parts.append(f"[{item}]")
            node = node[item] if 0 <= item < len(node) else None
        elif isinstance(node, dict) and item in node:
            parts.append(f".{item}")
            node = node[item]
        elif isinstance(item, str) and (item in DEVICE_MODELS or "[" in item or not last):
            continue  # a union's tag or a validator's name: internal, never shown
        else:
            parts.append(f".{item}")
            node = None
    message = _message(error)
    named = _FIELD_MESSAGE.match(message)
    if named and error["type"] == "value_error":
        parts.append(f".{named['field']}")
        message = named["text"]
    path = "".join(parts).lstrip(".") or "(top level)"
    return f"{path}: {message}"


# model-level validators name the field they blame as `field: text` (see configbase.FieldError)
_FIELD_MESSAGE = re.compile(r"^(?P<field>[a-z_]+): (?P<text>.+)$", re.DOTALL)


def _message(error: Any) -> str:
    kind = error["type"]
    value = error.get("input")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown key (check its spelling against the config contract)"
    if kind == "union_tag_invalid":
        return f"unknown profile {value.get('profile')!r}; one of {', '.join(DEVICE_MODELS)}"
    if kind == "union_tag_not_found":
        return f"profile is required; one of {', '.join(DEVICE_MODELS)}"
    message = str(error["msg"])
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    message = message.replace("Input should be", "must be").replace("input should be", "must be")
    message = message.replace("String should match pattern", "must match")
    if kind == "string_type" and isinstance(value, int):
        message += ' (quote it in YAML, e.g. "0012345678", so leading zeros survive)'
    elif isinstance(value, str | int | float | bool) and repr(value) not in message:
        message += f" (got {value!r})"
    return message
