"""The alert engine: the hall's outage rules and Prometheus/Alertmanager semantics. Pure: no I/O.

Sources say, for a rule and a subject, whether its condition holds now (a `Condition`); the
engine turns that into alerts and tells its caller what changed (`Transition`s), which
`gateway.alertservice` carries to MQTT, the store and the webhooks.

- Every alert has a stable `alert_id` per rule and subject: `{rule}-{subject id}`
  (`device_offline-kiosk-01`), so the same outage firing again is the same id.
- `for`: a condition must hold this long (pending) before the alert fires. A pending alert
  whose condition clears is forgotten, as in Prometheus.
- Flap damping: a firing alert whose condition clears is resolved only once it has stayed clear
  for `alerts.flap_window_s`; if it holds again sooner, it is still the same alert, nobody is told
  twice (Prometheus' `keep_firing_for`). `ended_at` is when it really cleared.
- Inhibition (Alertmanager's inhibit rules, `INHIBITIONS`): while the source alert fires, target
  alerts under it do not fire, so a serial bus gone is one alert, not one per pad. Once it lifts,
  a target still holding fires after its own `for` (counted from then), not at once: the pads of
  a bus that is back are given the time to answer again.
- Repeat interval: a firing alert is notified again every `alerts.repeat_interval_s`.
- Restart: the firing alerts are kept by the caller (`snapshot`/`restore`); a restored alert keeps
  firing under its id and start until its source says again whether it holds; a source that never
  speaks of it again (its device left the config) lets it resolve after `RESTORE_GRACE_S`.

A condition is `active` True or False, or None when there is no evidence either way (a kiosk that
does not answer says nothing about its printer): an alert is then neither fired nor resolved.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Final, Literal

from gateway.clock import Clock, iso
from gateway.config import AlertsConfig
from gateway.devices import DeviceKind, DeviceStatus

log = logging.getLogger(__name__)

Severity = Literal["critical", "warning", "info"]
SEVERITIES: Final[tuple[Severity, ...]] = ("critical", "warning", "info")

# a restored alert that no source speaks of again within this long is resolved (its device or
# window left the config, or presence no longer sees it); every source reports within seconds
RESTORE_GRACE_S: Final = 300.0
# the store is probed every 10 s (gateway.app.STORE_PROBE_S): two failed probes in a row are an
# outage, one failed commit may be a blip
STORE_UNWRITABLE_FOR_S: Final = 20.0
# more messages than a burst the broker takes in well under a second; waiting longer than
# `alerts.outbox_growing_for_s`, they are a backlog that is not draining
OUTBOX_BACKLOG_MIN: Final = 1000
# a rating pad reports its fault bits every 60 s (drivers.ff68_pad.driver.STATUS_EVERY_S); a pad's
# `fault` event holds its alert this long, by when a status after the event has said if it lasts
PAD_FAULT_HOLD_S: Final = 120.0
# subject keys never exceed an id's length in practice; a longer one is a bug, not a topic
MAX_SUBJECT_CHARS: Final = 128


@dataclass(frozen=True)
class Rule:
    name: str
    subject_key: str  # the subject of every alert of the rule is {subject_key: id}
    severity: Severity
    for_s: Callable[[AlertsConfig], float]  # the default `for` (a source may give its own)
    # rank in which alerts are evaluated: an inhibiting rule before the rules it inhibits
    rank: int
    external: bool = False  # reported through `AlertEngine.condition` (presence)


RULES: Final[Mapping[str, Rule]] = {
    rule.name: rule
    for rule in (
        Rule("gateway_degraded", "component", "critical", lambda c: c.mqtt_down_for_s, 0),
        Rule("bus_down", "bus_id", "critical", lambda c: c.device_offline_for_s, 1),
        Rule("device_offline", "device_id", "critical", lambda c: c.device_offline_for_s, 2),
        Rule("device_fault", "device_id", "warning", lambda c: c.device_fault_for_s, 3),
        Rule(
            "window_unattended",
            "window_id",
            "warning",
            lambda c: c.window_unattended_for_s,
            4,
            external=True,
        ),
        Rule("outing_overdue", "staff_id", "warning", lambda _c: 0.0, 4, external=True),
        Rule("outing_rule", "staff_id", "warning", lambda _c: 0.0, 4, external=True),
    )
}


def alert_id(rule: str, subject_id: str) -> str:
    """The alert's fingerprint: stable for a rule and subject, `[A-Za-z0-9_-]+` (ids are)."""
    return f"{rule}-{subject_id}"


@dataclass(frozen=True)
class Inhibition:
    """While an alert of `source` fires, alerts of `targets` under it do not."""

    source: str
    targets: frozenset[str]
    # which source alert covers a target: any (optionally only the `source_subject` one), or
    # the one of the bus the target device sits on
    scope: Literal["any", "same_bus"]
    source_subject: str | None = None  # only this subject of `source` inhibits
    target_subject: str | None = None  # only this subject of the targets is inhibited


_DEVICE_RULES: Final = frozenset({"device_offline", "device_fault"})
INHIBITIONS: Final[tuple[Inhibition, ...]] = (
    # the gateway cannot commit facts: devices waiting for an ACK look dead, and are not
    Inhibition("gateway_degraded", _DEVICE_RULES | {"bus_down"}, "any", source_subject="store"),
    # the broker is away: the outbox grows because of it, one alert says so
    Inhibition(
        "gateway_degraded",
        frozenset({"gateway_degraded"}),
        "any",
        source_subject="mqtt",
        target_subject="outbox",
    ),
    # a serial bus gone (port unplugged, serial server down, cable cut): one alert, not 32
    Inhibition("bus_down", _DEVICE_RULES, "same_bus"),
)
# (a device that does not answer needs no inhibition of its faults: they are unknown meanwhile)


@dataclass(frozen=True)
class Condition:
    """What a source says now about one rule and subject."""

    rule: str
    subject_id: str
    active: bool | None  # None: no evidence either way; the alert stays as it is
    summary: str = ""
    severity: Severity | None = None  # None: the rule's
    for_s: float | None = None  # None: the rule's, from the config
    # when it began to hold, or (not active) when it stopped holding; None: now
    since: dt.datetime | None = None

    @property
    def alert_id(self) -> str:
        return alert_id(self.rule, self.subject_id)


class Phase(Enum):
    PENDING = "pending"
    FIRING = "firing"


@dataclass
class Alert:
    alert_id: str
    rule: str
    subject: dict[str, str]
    severity: Severity
    summary: str
    phase: Phase
    active_since: dt.datetime  # when its condition began to hold: the alert's `started_at`
    fired_at: dt.datetime | None = None
    cleared_at: dt.datetime | None = None  # its condition stopped holding (flap window runs)
    notified_at: dt.datetime | None = None
    confirmed: bool = True  # False: restored, no source has spoken of it since
    restored_at: dt.datetime | None = None
    inhibited_by: str | None = None
    # the last time an inhibition of it lifted: a pending alert's `for` counts from then too, so
    # the devices of a bus that is back get their own `for` to answer again
    released_at: dt.datetime | None = None
    published: tuple[str, str] | None = None  # (severity, summary) as sinks last had them

    @property
    def started_at(self) -> dt.datetime:
        return self.active_since

    @property
    def subject_id(self) -> str:
        return next(iter(self.subject.values()))


@dataclass(frozen=True)
class AlertView:
    """An alert as sinks see it."""

    alert_id: str
    rule: str
    subject: Mapping[str, str]
    severity: Severity
    summary: str
    started_at: dt.datetime
    ended_at: dt.datetime | None = None

    def fields(self) -> dict[str, Any]:
        """mqtt.md's alert fields: the retained payload while firing, the API's list item."""
        payload: dict[str, Any] = {
            "v": 1,
            "alert_id": self.alert_id,
            "rule": self.rule,
            "severity": self.severity,
            "status": "firing" if self.ended_at is None else "resolved",
            "subject": dict(self.subject),
            "summary": self.summary,
            "started_at": iso(self.started_at),
        }
        if self.ended_at is not None:
            payload["ended_at"] = iso(self.ended_at)
        return payload


TransitionKind = Literal["fired", "resolved", "updated", "repeated"]


@dataclass(frozen=True)
class Transition:
    """What changed: `fired` and `resolved` are published and notified; `updated` (a firing
    alert's summary or severity changed) refreshes its retained state; `repeated` is notified."""

    kind: TransitionKind
    alert: AlertView
    at: dt.datetime


class AlertEngine:
    """Alerts from conditions, with `for`, flap damping, inhibition and repeats."""

    def __init__(
        self,
        config: AlertsConfig,
        clock: Clock,
        *,
        device_buses: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._device_buses = dict(device_buses or {})
        self._alerts: dict[str, Alert] = {}
        self._external: dict[str, Condition] = {}
        self.evaluated_at: dt.datetime | None = None  # the last evaluation

    # -- what sources say ----------------------------------------------------------------------

    def condition(
        self,
        rule: str,
        subject: Mapping[str, str],
        *,
        active: bool,
        summary: str = "",
        severity: Severity | None = None,
        for_s: float | None = None,
        since: dt.datetime | None = None,
    ) -> None:
        """Another engine's word on one rule and subject (presence: `window_unattended`,
        `outing_overdue`, `outing_rule`). Say it on every change; saying it again is harmless.
        It holds until said otherwise, and is applied at the next `evaluate`.

        Raises ValueError for a rule that is not reported this way, or a subject that is not
        `{the rule's subject key: an id}`.
        """
        spec = RULES.get(rule)
        if spec is None or not spec.external:
            external = sorted(name for name, r in RULES.items() if r.external)
            raise ValueError(f"alert rule {rule!r} is not reported from outside; one of {external}")
        subject_id = _subject_id(spec, subject)
        if severity is not None and severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES} (got {severity!r})")
        if for_s is not None and for_s < 0:
            raise ValueError(f"for_s must be 0 or more (got {for_s})")
        self._external[alert_id(rule, subject_id)] = Condition(
            rule, subject_id, active, summary, severity, for_s, since
        )

    def forget_external(self, keep: Callable[[Condition], bool]) -> None:
        """Drop what other engines said about subjects that `keep` rejects (they left the
        config): their alerts resolve."""
        for key, condition in list(self._external.items()):
            if not keep(condition):
                self._external[key] = replace(condition, active=False, since=None)

    # -- evaluation ----------------------------------------------------------------------------

    def evaluate(self, conditions: Iterable[Condition] = ()) -> list[Transition]:
        """Apply `conditions` (the engine's own sources, evaluated now) and what other engines
        said; return what changed, inhibiting rules first."""
        now = self._clock.now()
        said: dict[str, Condition] = dict(self._external)
        for condition in conditions:
            said[condition.alert_id] = condition
        for key, condition in said.items():
            self._apply(key, condition, now)
        for alert in self._alerts.values():
            if (
                not alert.confirmed
                and alert.restored_at is not None
                and _elapsed(alert.restored_at, now) >= RESTORE_GRACE_S
            ):
                log.info("alert %s: no source confirmed it since the restart", alert.alert_id)
                alert.confirmed = True
                alert.cleared_at = alert.cleared_at or now
        transitions: list[Transition] = []
        for alert in sorted(self._alerts.values(), key=lambda a: (RULES[a.rule].rank, a.alert_id)):
            transitions.extend(self._step(alert, said.get(alert.alert_id), now))
        self.evaluated_at = now
        return transitions

    def next_due(self) -> dt.datetime | None:
        """The earliest time an evaluation can change something without any new condition."""
        flap = dt.timedelta(seconds=self.config.flap_window_s)
        dues: list[dt.datetime] = []
        for alert in self._alerts.values():
            if alert.cleared_at is not None:
                dues.append(alert.cleared_at + flap)
            elif alert.phase is Phase.PENDING and alert.inhibited_by is None:
                dues.append(_pending_from(alert) + dt.timedelta(seconds=self._for_s(alert)))
            elif alert.phase is Phase.FIRING and alert.notified_at is not None:
                dues.append(alert.notified_at + dt.timedelta(seconds=self.config.repeat_interval_s))
            if not alert.confirmed and alert.restored_at is not None:
                dues.append(alert.restored_at + dt.timedelta(seconds=RESTORE_GRACE_S))
        return min(dues, default=None)

    # -- what there is -------------------------------------------------------------------------

    def firing(self) -> list[AlertView]:
        """The firing alerts, oldest first."""
        alerts = [a for a in self._alerts.values() if a.phase is Phase.FIRING]
        return [_view(a) for a in sorted(alerts, key=lambda a: (a.started_at, a.alert_id))]

    def get(self, alert_id: str) -> Alert | None:
        return self._alerts.get(alert_id)

    def alerts(self) -> list[Alert]:
        """Every alert the engine holds, pending and inhibited ones too."""
        return list(self._alerts.values())

    def firing_counts(self) -> dict[tuple[str, Severity], int]:
        counts: dict[tuple[str, Severity], int] = {}
        for alert in self._alerts.values():
            if alert.phase is Phase.FIRING:
                key = (alert.rule, alert.severity)
                counts[key] = counts.get(key, 0) + 1
        return counts

    # -- persistence ---------------------------------------------------------------------------

    def snapshot(self) -> str:
        """The firing alerts as JSON, for `restore` after a restart."""
        return json.dumps(
            [
                {
                    "alert_id": a.alert_id,
                    "rule": a.rule,
                    "subject": a.subject,
                    "severity": a.severity,
                    "summary": a.summary,
                    "started_at": a.active_since.isoformat(),
                    "fired_at": _iso_or_none(a.fired_at),
                    "cleared_at": _iso_or_none(a.cleared_at),
                    "notified_at": _iso_or_none(a.notified_at),
                }
                for a in self._alerts.values()
                if a.phase is Phase.FIRING
            ],
            ensure_ascii=False,
        )

    def restore(self, text: str) -> list[AlertView]:
        """Take back the firing alerts of a `snapshot`; return them. A malformed snapshot or
        item is skipped with a warning (the alert fires again if its condition still holds)."""
        try:
            items = json.loads(text)
        except ValueError as err:
            log.warning("stored alerts unreadable (%s); starting with none", err)
            return []
        if not isinstance(items, list):
            log.warning("stored alerts are not a list; starting with none")
            return []
        now = self._clock.now()
        restored: list[AlertView] = []
        for item in items:
            try:
                alert = _restored_alert(item, now, self._clock)
            except (KeyError, TypeError, ValueError) as err:
                log.warning("a stored alert is unreadable (%s): skipped", err)
                continue
            self._alerts[alert.alert_id] = alert
            restored.append(_view(alert))
        return restored

    # -- internals -----------------------------------------------------------------------------

    def _apply(self, key: str, condition: Condition, now: dt.datetime) -> None:
        alert = self._alerts.get(key)
        if condition.active is None:
            return
        if not condition.active:
            if alert is None:
                return
            alert.confirmed = True
            if alert.phase is Phase.PENDING:
                del self._alerts[key]  # never fired: nothing to tell anyone
            elif alert.cleared_at is None:
                alert.cleared_at = max(min(condition.since or now, now), alert.active_since)
            return
        spec = RULES[condition.rule]
        severity = condition.severity or spec.severity
        if alert is None:
            since = min(condition.since or now, now)
            self._alerts[key] = Alert(
                alert_id=key,
                rule=condition.rule,
                subject={spec.subject_key: condition.subject_id},
                severity=severity,
                summary=condition.summary,
                phase=Phase.PENDING,
                active_since=since,
            )
            return
        alert.confirmed = True
        alert.cleared_at = None  # held again within the flap window: the same alert
        alert.severity = severity
        alert.summary = condition.summary

    def _step(
        self, alert: Alert, condition: Condition | None, now: dt.datetime
    ) -> list[Transition]:
        if alert.cleared_at is not None:
            if _elapsed(alert.cleared_at, now) >= self.config.flap_window_s:
                del self._alerts[alert.alert_id]
                if alert.phase is Phase.FIRING:
                    ended = replace(_view(alert), ended_at=max(alert.cleared_at, alert.started_at))
                    return [Transition("resolved", ended, now)]
            return []
        inhibitor = self._inhibitor(alert)
        if alert.inhibited_by is not None and inhibitor is None:
            alert.released_at = now
        alert.inhibited_by = inhibitor
        if alert.phase is Phase.PENDING:
            if condition is None or condition.active is None:
                return []  # no evidence now: it neither fires nor is forgotten
            for_s = self._for_s(alert, condition)
            if _elapsed(_pending_from(alert), now) < for_s or alert.inhibited_by is not None:
                return []
            alert.phase = Phase.FIRING
            alert.fired_at = now
            alert.notified_at = now
            alert.published = (alert.severity, alert.summary)
            return [Transition("fired", _view(alert), now)]
        transitions: list[Transition] = []
        if alert.published != (alert.severity, alert.summary):
            alert.published = (alert.severity, alert.summary)
            transitions.append(Transition("updated", _view(alert), now))
        if (
            alert.inhibited_by is None
            and alert.notified_at is not None
            and _elapsed(alert.notified_at, now) >= self.config.repeat_interval_s
        ):
            alert.notified_at = now
            transitions.append(Transition("repeated", _view(alert), now))
        return transitions

    def _for_s(self, alert: Alert, condition: Condition | None = None) -> float:
        if condition is not None and condition.for_s is not None:
            return condition.for_s
        external = self._external.get(alert.alert_id)
        if external is not None and external.for_s is not None:
            return external.for_s
        return RULES[alert.rule].for_s(self.config)

    def _inhibitor(self, alert: Alert) -> str | None:
        for rule in INHIBITIONS:
            if alert.rule not in rule.targets:
                continue
            if rule.target_subject is not None and alert.subject_id != rule.target_subject:
                continue
            for source in self._sources(rule, alert):
                if source.alert_id != alert.alert_id and source.phase is Phase.FIRING:
                    return source.alert_id
        return None

    def _sources(self, rule: Inhibition, alert: Alert) -> Iterable[Alert]:
        if rule.scope == "any":
            if rule.source_subject is not None:
                found = self._alerts.get(alert_id(rule.source, rule.source_subject))
                return [found] if found is not None else []
            return [a for a in self._alerts.values() if a.rule == rule.source]
        bus = self._device_buses.get(alert.subject_id)
        found = None if bus is None else self._alerts.get(alert_id(rule.source, bus))
        return [found] if found is not None else []


def _pending_from(alert: Alert) -> dt.datetime:
    """Where a pending alert's `for` counts from: its start, or the end of its inhibition."""
    if alert.released_at is not None and alert.released_at > alert.active_since:
        return alert.released_at
    return alert.active_since


def _view(alert: Alert) -> AlertView:
    return AlertView(
        alert_id=alert.alert_id,
        rule=alert.rule,
        subject=dict(alert.subject),
        severity=alert.severity,
        summary=alert.summary,
        started_at=alert.started_at,
    )


def _subject_id(rule: Rule, subject: Mapping[str, str]) -> str:
    if set(subject) != {rule.subject_key}:
        raise ValueError(f"{rule.name}: the subject must be {{{rule.subject_key!r}: id}}")
    value = subject[rule.subject_key]
    if not isinstance(value, str) or not value or len(value) > MAX_SUBJECT_CHARS:
        raise ValueError(f"{rule.name}: {rule.subject_key} must be an id (got {value!r})")
    if not all(c.isascii() and (c.isalnum() or c in "_-") for c in value):
        raise ValueError(f"{rule.name}: {rule.subject_key} must match [A-Za-z0-9_-]+")
    return value


def _elapsed(since: dt.datetime, now: dt.datetime) -> float:
    return (now - since).total_seconds()


def _iso_or_none(when: dt.datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def _restored_alert(item: Mapping[str, Any], now: dt.datetime, clock: Clock) -> Alert:
    rule = RULES[item["rule"]]
    subject = {str(k): str(v) for k, v in dict(item["subject"]).items()}
    subject_id = _subject_id(rule, subject)
    if item["alert_id"] != alert_id(rule.name, subject_id):
        raise ValueError(f"alert_id {item['alert_id']!r} does not match its rule and subject")
    severity = item["severity"]
    if severity not in SEVERITIES:
        raise ValueError(f"severity {severity!r}")

    def when(key: str) -> dt.datetime | None:
        text = item.get(key)
        if text is None:
            return None
        value = dt.datetime.fromisoformat(str(text))
        if value.tzinfo is None:
            raise ValueError(f"{key} has no UTC offset")
        return value.astimezone(clock.zone)

    started = when("started_at")
    if started is None:
        raise ValueError("started_at is missing")
    alert = Alert(
        alert_id=alert_id(rule.name, subject_id),
        rule=rule.name,
        subject=subject,
        severity=severity,
        summary=str(item.get("summary", "")),
        phase=Phase.FIRING,
        active_since=started,
        fired_at=when("fired_at") or started,
        cleared_at=when("cleared_at"),
        notified_at=when("notified_at") or when("fired_at") or started,
        confirmed=False,
        restored_at=now,
    )
    alert.published = (alert.severity, alert.summary)
    return alert


# -- the engine's own sources: what the hall's devices, buses and the gateway say -------------

KIND_NAMES: Final[Mapping[DeviceKind, str]] = {
    "punch_clock": "考勤机",
    "queue": "排队叫号控制器",
    "rating_pad": "评价器",
    "display": "LED屏",
    "kiosk": "自助终端",
}
# kiosk peripheral states that stop the kiosk serving (devices.md §5); paper_low is a warning the
# kiosk itself shows, not an outage
KIOSK_FAULTS: Final[Mapping[str, str]] = {
    "paper_out": "缺纸",
    "jam": "卡纸",
    "offline": "离线",
    "error": "故障",
}
LED_FAULTS: Final[Mapping[str, str]] = {
    "module": "模组故障",
    "power_supply": "电源故障",
    "over_temperature": "温度过高",
    "storage": "存储故障",
}


@dataclass
class DeviceWatch:
    """What the engine remembers of a device between evaluations."""

    expected: bool = True
    expected_since: dt.datetime | None = None
    pad_fault: tuple[dt.datetime, int | None] | None = None  # the last `fault` event


def device_conditions(
    status: DeviceStatus,
    *,
    expected: bool,
    watch: DeviceWatch,
    now: dt.datetime,
) -> list[Condition]:
    """`device_offline` and `device_fault` of one device, now.

    A device is only an outage while it is supposed to be on (a kiosk watched in service hours
    is not at night), and counts as offline only since it was supposed to be on. Its faults are
    read from its state while it answers; while it does not, or is not watched, they are unknown.
    """
    if expected and not watch.expected:
        watch.expected_since = now
    watch.expected = expected
    name = f"{KIND_NAMES.get(status.kind, status.kind)} {status.device_id}"
    offline = expected and not status.online
    # the summary leaves out the offline reason, which changes (not_seen after a restart, then
    # timeout…) and would update the alert each time; the device's availability says it
    since: dt.datetime | None = status.since  # offline since, or back online since
    if not expected:
        since = None  # not watched from now on
    elif watch.expected_since is not None and status.since < watch.expected_since:
        since = watch.expected_since
    conditions = [
        Condition(
            "device_offline",
            status.device_id,
            offline,
            f"{name} 离线" if offline else "",
            since=since,
        )
    ]
    faults = device_faults(status, watch, now) if expected and status.online else None
    conditions.append(
        Condition(
            "device_fault",
            status.device_id,
            None if faults is None else bool(faults),
            f"{name} 故障:{'、'.join(faults)}" if faults else "",
        )
    )
    return conditions


def device_faults(status: DeviceStatus, watch: DeviceWatch, now: dt.datetime) -> list[str] | None:
    """What is wrong with a device by its latest state (None: its state says nothing)."""
    reader = _FAULT_READERS.get(status.kind)
    return None if reader is None else reader(status.values, watch, now)


def _kiosk_faults(
    values: Mapping[str, Any], _watch: DeviceWatch, _now: dt.datetime
) -> list[str] | None:
    peripherals = values.get("peripherals")
    if not isinstance(peripherals, Mapping):
        return None
    faults = [
        f"{name} {KIOSK_FAULTS[state]}"
        for name, state in sorted(peripherals.items())
        if state in KIOSK_FAULTS
    ]
    if values.get("state") == "error":
        faults.insert(0, "整机故障")
    return faults


def _led_faults(
    values: Mapping[str, Any], _watch: DeviceWatch, _now: dt.datetime
) -> list[str] | None:
    names = values.get("faults")
    if not isinstance(names, list):
        return None
    faults = [LED_FAULTS.get(str(n), str(n)) for n in names]
    if values.get("over_temperature") and LED_FAULTS["over_temperature"] not in faults:
        faults.append(f"{LED_FAULTS['over_temperature']}({values.get('temperature_c')} ℃)")
    return faults


def _pad_faults(
    values: Mapping[str, Any], watch: DeviceWatch, now: dt.datetime
) -> list[str] | None:
    faults = []
    bits = values.get("fault_bits")
    if isinstance(bits, int) and bits:
        faults.append(f"故障位 0x{bits:02x}")
    if watch.pad_fault is not None:
        at, code = watch.pad_fault
        if _elapsed(at, now) < PAD_FAULT_HOLD_S:
            faults.append(f"故障码 {code}" if code is not None else "报告故障")
        else:
            watch.pad_fault = None
    if bits is None and not faults:
        return None  # no status read yet, no fault reported
    return faults


_FaultReader = Callable[[Mapping[str, Any], DeviceWatch, dt.datetime], list[str] | None]
_FAULT_READERS: Final[Mapping[str, _FaultReader]] = {
    "kiosk": _kiosk_faults,
    "display": _led_faults,
    "rating_pad": _pad_faults,
}


@dataclass
class BusWatch:
    port_down_since: dt.datetime | None = None


def bus_condition(
    bus_id: str,
    *,
    port_open: bool,
    members: Sequence[DeviceStatus],
    window_s: float,
    watch: BusWatch,
    now: dt.datetime,
) -> Condition:
    """`bus_down`: the bus's port cannot be opened, or every device on it (two or more) is
    offline at once (a cut cable, a dead RS-485 converter).

    The devices of a bus going down fail one poll after another, some before the lost port is
    noticed: the bus counts as down since the first of its devices that went offline within
    `window_s` (the rule's `for`) of the port's loss, or of the last of them. So the bus alert
    fires no later than any device alert under it, and inhibits them all.
    """
    if port_open:
        watch.port_down_since = None
    elif watch.port_down_since is None:
        watch.port_down_since = now
    offline = [m for m in members if not m.online]
    all_offline = len(members) >= 2 and len(offline) == len(members)
    if watch.port_down_since is None and not all_offline:
        return Condition("bus_down", bus_id, active=False)
    anchor = watch.port_down_since or max(m.since for m in offline)
    starts = [m.since for m in offline if _elapsed(m.since, anchor) <= window_s]
    if watch.port_down_since is not None:
        starts.append(watch.port_down_since)
    why = "串口无法打开" if watch.port_down_since is not None else "全部设备无应答"
    return Condition(
        "bus_down",
        bus_id,
        active=True,
        summary=f"串口总线 {bus_id} 中断:{why}({len(members)} 台设备)",
        since=min(starts),
    )


@dataclass
class GatewayWatch:
    mqtt_down_since: dt.datetime | None = None
    store_down_since: dt.datetime | None = None
    backlog_since: dt.datetime | None = None


def gateway_conditions(
    config: AlertsConfig,
    *,
    mqtt_connected: bool,
    store_writable: bool,
    store_error: str | None,
    outbox_depth: int,
    watch: GatewayWatch,
    now: dt.datetime,
) -> list[Condition]:
    """`gateway_degraded`, one alert per component: `mqtt` (the broker unreachable),
    `store` (the store does not commit), `outbox` (a backlog that does not drain)."""
    watch.mqtt_down_since = None if mqtt_connected else watch.mqtt_down_since or now
    watch.store_down_since = None if store_writable else watch.store_down_since or now
    backlog = outbox_depth > OUTBOX_BACKLOG_MIN
    watch.backlog_since = watch.backlog_since or now if backlog else None
    return [
        Condition(
            "gateway_degraded",
            "mqtt",
            not mqtt_connected,
            "网关与 MQTT 服务器断开" if not mqtt_connected else "",
            for_s=config.mqtt_down_for_s,
            since=watch.mqtt_down_since,
        ),
        Condition(
            "gateway_degraded",
            "store",
            not store_writable,
            f"网关存储不可写:{store_error or '未知原因'}" if not store_writable else "",
            for_s=STORE_UNWRITABLE_FOR_S,
            since=watch.store_down_since,
        ),
        Condition(
            "gateway_degraded",
            "outbox",
            backlog,
            f"网关待发消息积压 {outbox_depth} 条,未能送达 MQTT 服务器" if backlog else "",
            for_s=config.outbox_growing_for_s,
            since=watch.backlog_since,
        ),
    ]


@dataclass
class Watches:
    """Per-source memory of the engine's own sources."""

    devices: dict[str, DeviceWatch] = field(default_factory=dict)
    buses: dict[str, BusWatch] = field(default_factory=dict)
    gateway: GatewayWatch = field(default_factory=GatewayWatch)


@dataclass(frozen=True)
class HallState:
    """What the engine's own sources read, at one instant."""

    devices: Sequence[tuple[DeviceStatus, bool]]  # every device, and whether it should be on
    buses: Mapping[str, tuple[bool, Sequence[str]]]  # bus → (its port is open, its devices)
    mqtt_connected: bool = True
    store_writable: bool = True
    store_error: str | None = None
    outbox_depth: int = 0


def hall_conditions(
    state: HallState, config: AlertsConfig, watches: Watches, now: dt.datetime
) -> list[Condition]:
    """Every condition of the engine's own rules: devices, buses, the gateway."""
    conditions: list[Condition] = []
    statuses = {status.device_id: status for status, _expected in state.devices}
    for status, expected in state.devices:
        watch = watches.devices.setdefault(status.device_id, DeviceWatch())
        conditions.extend(device_conditions(status, expected=expected, watch=watch, now=now))
    for bus_id, (port_open, member_ids) in state.buses.items():
        conditions.append(
            bus_condition(
                bus_id,
                port_open=port_open,
                members=[statuses[d] for d in member_ids if d in statuses],
                window_s=config.device_offline_for_s,
                watch=watches.buses.setdefault(bus_id, BusWatch()),
                now=now,
            )
        )
    conditions.extend(
        gateway_conditions(
            config,
            mqtt_connected=state.mqtt_connected,
            store_writable=state.store_writable,
            store_error=state.store_error,
            outbox_depth=state.outbox_depth,
            watch=watches.gateway,
            now=now,
        )
    )
    return conditions
