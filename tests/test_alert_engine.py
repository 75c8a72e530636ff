"""The alert engine's semantics on a fake clock: `for`, resolution, flap damping, inhibition,
repeats, restart, and each rule's conditions (devices, buses, the gateway, presence's)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.alerts import (
    OUTBOX_BACKLOG_MIN,
    PAD_FAULT_HOLD_S,
    RESTORE_GRACE_S,
    STORE_UNWRITABLE_FOR_S,
    AlertEngine,
    HallState,
    Phase,
    Transition,
    Watches,
    alert_id,
    hall_conditions,
)
from gateway.clock import FakeClock
from gateway.config import AlertsConfig
from gateway.devices import DeviceKind, DeviceStatus

ZONE = ZoneInfo("Asia/Shanghai")
START = dt.datetime(2026, 11, 23, 9, 0, tzinfo=ZONE)
CONFIG = AlertsConfig(
    device_offline_for_s=60,
    window_unattended_for_s=120,
    device_fault_for_s=30,
    flap_window_s=120,
    repeat_interval_s=3600,
    mqtt_down_for_s=120,
    outbox_growing_for_s=600,
)


@dataclass
class Hall:
    """A hall as the engine's sources see it, changed by the test, evaluated on a fake clock."""

    clock: FakeClock = field(default_factory=lambda: FakeClock(START))
    config: AlertsConfig = CONFIG
    statuses: dict[str, DeviceStatus] = field(default_factory=dict)
    expected: dict[str, bool] = field(default_factory=dict)
    buses: dict[str, tuple[bool, list[str]]] = field(default_factory=dict)
    gateway: dict[str, Any] = field(default_factory=dict)
    watches: Watches = field(default_factory=Watches)
    engine: AlertEngine = field(init=False)
    log: list[Transition] = field(default_factory=list)

    def __post_init__(self) -> None:
        device_buses = {d: bus for bus, (_, members) in self.buses.items() for d in members}
        self.engine = AlertEngine(self.config, self.clock, device_buses=device_buses)

    def add(self, device_id: str, kind: DeviceKind = "kiosk", *, bus: str | None = None) -> None:
        self.statuses[device_id] = DeviceStatus(
            device_id, kind, online=True, since=self.clock.now(), reason=None
        )
        if bus is not None:
            self.buses.setdefault(bus, (True, []))[1].append(device_id)
            self.engine = AlertEngine(
                self.config,
                self.clock,
                device_buses={d: b for b, (_, ms) in self.buses.items() for d in ms},
            )

    # every change is evaluated at once, as the service does when the device hub calls

    def offline(self, device_id: str, reason: str = "timeout") -> list[Transition]:
        current = self.statuses[device_id]
        since = self.clock.now() if current.online else current.since
        self.statuses[device_id] = replace(current, online=False, reason=reason, since=since)
        return self.evaluate()

    def online(self, device_id: str) -> list[Transition]:
        current = self.statuses[device_id]
        since = current.since if current.online else self.clock.now()
        self.statuses[device_id] = replace(current, online=True, reason=None, since=since)
        return self.evaluate()

    def values(self, device_id: str, **values: Any) -> list[Transition]:
        current = self.statuses[device_id]
        self.statuses[device_id] = replace(
            current, values={**current.values, **values}, values_ts=self.clock.now()
        )
        return self.evaluate()

    def port(self, bus: str, *, open_: bool) -> list[Transition]:
        self.buses[bus] = (open_, self.buses[bus][1])
        return self.evaluate()

    def set_gateway(self, **state: Any) -> list[Transition]:
        self.gateway.update(state)
        return self.evaluate()

    def pad_fault(self, device_id: str, code: int | None) -> list[Transition]:
        self.watches.devices[device_id].pad_fault = (self.clock.now(), code)
        return self.evaluate()

    def expect(self, device_id: str, *, on: bool) -> list[Transition]:
        self.expected[device_id] = on
        return self.evaluate()

    def evaluate(self) -> list[Transition]:
        state = HallState(
            devices=[(s, self.expected.get(d, True)) for d, s in self.statuses.items()],
            buses=self.buses,
            **self.gateway,
        )
        now = self.clock.now()
        transitions = self.engine.evaluate(hall_conditions(state, self.config, self.watches, now))
        self.log.extend(transitions)
        return transitions

    def run(self, seconds: float, step: float = 1.0) -> list[Transition]:
        """Advance the clock `seconds`, evaluating every `step` like the service does."""
        seen: list[Transition] = []
        elapsed = 0.0
        while elapsed < seconds:
            self.clock.advance(step)
            elapsed += step
            seen.extend(self.evaluate())
        return seen

    def firing_ids(self) -> list[str]:
        return [a.alert_id for a in self.engine.firing()]


def kinds(transitions: list[Transition]) -> list[tuple[str, str]]:
    return [(t.kind, t.alert.alert_id) for t in transitions]


# -- for, resolution, flap damping ------------------------------------------------------------


def test_an_offline_device_fires_after_for_with_a_stable_id_and_its_start() -> None:
    hall = Hall()
    hall.add("kiosk-01")
    assert hall.evaluate() == []
    hall.offline("kiosk-01")
    went = hall.clock.now()
    assert hall.run(59) == [], "pending for 59 s of a 60 s `for`"
    fired = hall.run(1)
    assert kinds(fired) == [("fired", "device_offline-kiosk-01")]
    view = fired[0].alert
    assert view.subject == {"device_id": "kiosk-01"}
    assert view.severity == "critical"
    assert view.started_at == went, "started_at: when the device went offline"
    assert view.summary == "自助终端 kiosk-01 离线"
    assert hall.firing_ids() == ["device_offline-kiosk-01"]
    assert alert_id("device_offline", "kiosk-01") == view.alert_id


def test_a_pending_alert_that_clears_is_forgotten_without_a_word() -> None:
    hall = Hall()
    hall.add("kiosk-01")
    hall.offline("kiosk-01")
    hall.run(30)
    hall.online("kiosk-01")
    hall.run(300)
    hall.offline("kiosk-01")
    assert hall.run(59) == [], "`for` starts again: the first 30 s do not count"
    assert kinds(hall.run(1)) == [("fired", "device_offline-kiosk-01")]
    assert [t.kind for t in hall.log] == ["fired"]


def test_resolution_waits_out_the_flap_window_and_ends_when_the_device_came_back() -> None:
    hall = Hall()
    hall.add("kiosk-01")
    hall.offline("kiosk-01")
    hall.run(90)
    hall.online("kiosk-01")
    back = hall.clock.now()
    assert hall.run(119) == [], "still firing within the flap window"
    assert hall.firing_ids() == ["device_offline-kiosk-01"]
    resolved = hall.run(1)
    assert kinds(resolved) == [("resolved", "device_offline-kiosk-01")]
    assert resolved[0].alert.ended_at == back
    assert hall.firing_ids() == []
    assert hall.engine.alerts() == []


def test_a_flapping_device_is_one_alert() -> None:
    hall = Hall()
    hall.add("kiosk-01")
    hall.offline("kiosk-01")
    hall.run(61)
    for _ in range(10):  # back for 100 s, gone for 30 s, ten times over
        hall.online("kiosk-01")
        hall.run(100)
        hall.offline("kiosk-01")
        hall.run(30)
    hall.online("kiosk-01")
    hall.run(121)
    assert kinds(hall.log) == [
        ("fired", "device_offline-kiosk-01"),
        ("resolved", "device_offline-kiosk-01"),
    ]
    assert hall.log[0].alert.started_at == START + dt.timedelta(seconds=0)


def test_away_longer_than_the_flap_window_is_a_new_alert_under_the_same_id() -> None:
    hall = Hall()
    hall.add("kiosk-01")
    hall.offline("kiosk-01")
    hall.run(61)
    hall.online("kiosk-01")
    hall.run(121)
    hall.offline("kiosk-01")
    second_start = hall.clock.now()
    hall.run(61)
    assert kinds(hall.log) == [
        ("fired", "device_offline-kiosk-01"),
        ("resolved", "device_offline-kiosk-01"),
        ("fired", "device_offline-kiosk-01"),
    ]
    assert hall.log[2].alert.started_at == second_start


def test_a_firing_alert_is_notified_again_every_repeat_interval() -> None:
    hall = Hall()
    hall.add("kiosk-01")
    hall.offline("kiosk-01")
    hall.run(60)
    hall.run(3600 * 2 + 10, step=10)
    assert [t.kind for t in hall.log] == ["fired", "repeated", "repeated"]


def test_next_due_says_when_an_evaluation_can_change_something() -> None:
    hall = Hall()
    hall.add("kiosk-01")
    hall.offline("kiosk-01")
    hall.evaluate()
    assert hall.engine.next_due() == START + dt.timedelta(seconds=60)
    hall.run(60)
    assert hall.engine.next_due() == START + dt.timedelta(seconds=60 + 3600)
    hall.online("kiosk-01")
    hall.evaluate()
    assert hall.engine.next_due() == START + dt.timedelta(seconds=60 + 120)


# -- expected on ------------------------------------------------------------------------------


def test_a_device_not_expected_on_is_no_outage_and_counts_from_the_opening() -> None:
    hall = Hall()
    hall.add("kiosk-01")
    hall.expect("kiosk-01", on=False)
    hall.offline("kiosk-01", reason="off_hours")
    hall.run(3600, step=10)
    assert hall.log == []
    opening = hall.clock.now()
    hall.expect("kiosk-01", on=True)  # the hall opens; the kiosk has been offline all night
    assert hall.run(59) == [], "offline counts from the opening, not from last night"
    fired = hall.run(1)
    assert kinds(fired) == [("fired", "device_offline-kiosk-01")]
    assert fired[0].alert.started_at == opening
    hall.expect("kiosk-01", on=False)  # closing time: not watched any more
    hall.run(121)
    assert [t.kind for t in hall.log] == ["fired", "resolved"]


# -- faults -----------------------------------------------------------------------------------


def test_a_kiosk_peripheral_fault_fires_updates_and_resolves() -> None:
    hall = Hall()
    hall.add("kiosk-01")
    hall.values("kiosk-01", state="ready", peripherals={"printer": "ok", "scanner": "ok"})
    hall.run(60)
    hall.values("kiosk-01", peripherals={"printer": "paper_low", "scanner": "ok"})
    assert hall.run(60) == [], "paper_low is not a fault"
    hall.values("kiosk-01", peripherals={"printer": "paper_out", "scanner": "ok"})
    assert hall.run(29) == []
    fired = hall.run(1)
    assert kinds(fired) == [("fired", "device_fault-kiosk-01")]
    assert fired[0].alert.severity == "warning"
    assert fired[0].alert.summary == "自助终端 kiosk-01 故障:printer 缺纸"
    updated = hall.values("kiosk-01", peripherals={"printer": "jam", "scanner": "offline"})
    assert kinds(updated) == [("updated", "device_fault-kiosk-01")]
    assert updated[0].alert.summary == "自助终端 kiosk-01 故障:printer 卡纸、scanner 离线"
    updated = hall.values("kiosk-01", state="error")
    assert updated[0].alert.summary.startswith("自助终端 kiosk-01 故障:整机故障、")
    hall.values("kiosk-01", state="ready", peripherals={"printer": "ok", "scanner": "ok"})
    assert kinds(hall.run(120)) == [("resolved", "device_fault-kiosk-01")]


def test_a_fault_is_unknown_while_its_device_does_not_answer() -> None:
    hall = Hall()
    hall.add("kiosk-01")
    hall.values("kiosk-01", state="ready", peripherals={"printer": "paper_out"})
    hall.run(31)
    assert hall.firing_ids() == ["device_fault-kiosk-01"]
    hall.offline("kiosk-01")
    hall.run(600, step=5)
    assert hall.firing_ids() == ["device_fault-kiosk-01", "device_offline-kiosk-01"], (
        "the fault neither resolves nor is told again while the kiosk is silent"
    )
    assert [t.kind for t in hall.log] == ["fired", "fired"]


def test_a_pending_fault_waits_while_its_device_is_silent() -> None:
    hall = Hall(config=CONFIG.model_copy(update={"device_fault_for_s": 120}))
    hall.add("kiosk-01")
    hall.values("kiosk-01", peripherals={"printer": "paper_out"})
    hall.run(100)
    hall.offline("kiosk-01")
    hall.run(61)
    assert kinds(hall.log) == [("fired", "device_offline-kiosk-01")], (
        "the fault's `for` ran out while the kiosk was silent: it did not fire on no evidence"
    )
    back = hall.online("kiosk-01")  # back, its printer still out: the fault fires at once
    assert kinds(back) == [("fired", "device_fault-kiosk-01")]
    assert back[0].alert.started_at == START


def test_led_fault_bits_and_over_temperature() -> None:
    hall = Hall()
    hall.add("led-hall", "display")
    hall.values("led-hall", faults=[], over_temperature=False, temperature_c=40)
    assert hall.run(60) == []
    hall.values("led-hall", faults=["module"], over_temperature=True, temperature_c=71)
    fired = hall.run(30)
    assert kinds(fired) == [("fired", "device_fault-led-hall")]
    assert fired[0].alert.summary == "LED屏 led-hall 故障:模组故障、温度过高(71 ℃)"


def test_a_pad_fault_event_fires_and_its_fault_bits_keep_it() -> None:
    hall = Hall()
    hall.add("pad-w01", "rating_pad")
    hall.values("pad-w01", fault_bits=0)
    hall.run(10)
    hall.pad_fault("pad-w01", 7)
    fired = hall.run(30)
    assert kinds(fired) == [("fired", "device_fault-pad-w01")]
    assert fired[0].alert.summary == "评价器 pad-w01 故障:故障码 7"
    hall.values("pad-w01", fault_bits=0x04)  # its next status says the fault lasts
    hall.run(PAD_FAULT_HOLD_S + 200)
    assert hall.firing_ids() == ["device_fault-pad-w01"]
    hall.values("pad-w01", fault_bits=0)
    assert kinds(hall.run(121)) == [("resolved", "device_fault-pad-w01")]


def test_a_pad_fault_event_alone_clears_after_its_hold() -> None:
    hall = Hall()
    hall.add("pad-w01", "rating_pad")
    hall.values("pad-w01", fault_bits=0)
    hall.pad_fault("pad-w01", None)
    hall.run(PAD_FAULT_HOLD_S + 120 + 1)
    assert [t.kind for t in hall.log] == ["fired", "resolved"]
    assert hall.log[0].alert.summary == "评价器 pad-w01 故障:报告故障"


# -- buses and inhibition ---------------------------------------------------------------------


def pad_bus(pads: int = 32) -> Hall:
    hall = Hall()
    for n in range(1, pads + 1):
        hall.add(f"pad-w{n:02d}", "rating_pad", bus="pads-1f")
    hall.evaluate()
    return hall


def test_an_unplugged_bus_is_one_alert_not_one_per_pad() -> None:
    hall = pad_bus()
    hall.port("pads-1f", open_=False)
    hall.run(3)  # three failed reopenings later, every pad is offline
    for device_id in hall.statuses:
        hall.offline(device_id, reason="io_error")
    hall.run(600, step=5)
    assert kinds(hall.log) == [("fired", "bus_down-pads-1f")]
    assert hall.log[0].alert.summary == "串口总线 pads-1f 中断:串口无法打开(32 台设备)"
    inhibited = [a for a in hall.engine.alerts() if a.inhibited_by == "bus_down-pads-1f"]
    assert len(inhibited) == 32
    assert all(a.phase is Phase.PENDING for a in inhibited)
    hall.port("pads-1f", open_=True)
    hall.run(3)
    for device_id in hall.statuses:
        hall.online(device_id)
    hall.run(121)
    assert kinds(hall.log) == [
        ("fired", "bus_down-pads-1f"),
        ("updated", "bus_down-pads-1f"),  # the port is back, its pads not yet
        ("resolved", "bus_down-pads-1f"),
    ]
    assert hall.log[1].alert.summary == "串口总线 pads-1f 中断:全部设备无应答(32 台设备)"
    assert hall.engine.alerts() == []


def test_a_silent_bus_whose_pads_fail_one_sweep_apart_is_one_alert() -> None:
    hall = pad_bus()
    for n, device_id in enumerate(hall.statuses):  # a cut cable: the port stays open
        if n % 5 == 0:
            hall.run(1)
        hall.offline(device_id)
    hall.run(120)
    assert kinds(hall.log) == [("fired", "bus_down-pads-1f")]
    assert hall.log[0].alert.summary == "串口总线 pads-1f 中断:全部设备无应答(32 台设备)"


def test_one_dead_pad_on_a_live_bus_is_its_own_alert() -> None:
    hall = pad_bus(4)
    hall.offline("pad-w03")
    hall.run(120)
    assert kinds(hall.log) == [("fired", "device_offline-pad-w03")]


def test_a_pad_dead_for_days_does_not_hurry_the_bus_alert() -> None:
    hall = pad_bus(4)
    hall.offline("pad-w01")
    hall.run(3600 * 24, step=60)
    for device_id in ("pad-w02", "pad-w03", "pad-w04"):
        hall.offline(device_id)
    assert [t.alert.alert_id for t in hall.run(59) if t.kind == "fired"] == []
    fired = [t.alert.alert_id for t in hall.run(1) if t.kind == "fired"]
    assert fired == ["bus_down-pads-1f"]


def test_the_gateways_store_outage_inhibits_device_alerts() -> None:
    hall = Hall()
    hall.add("kiosk-01")
    hall.set_gateway(store_writable=False, store_error="disk I/O error")
    hall.offline("kiosk-01")
    hall.run(600, step=5)
    assert kinds(hall.log) == [("fired", "gateway_degraded-store")]
    assert hall.log[0].alert.summary == "网关存储不可写:disk I/O error"
    hall.set_gateway(store_writable=True, store_error=None)
    assert kinds(hall.run(120)) == [("resolved", "gateway_degraded-store")]
    # still offline once the inhibition lifts: it fires after its own `for`, counted from then
    assert hall.run(59) == []
    fired = hall.run(1)
    assert kinds(fired) == [("fired", "device_offline-kiosk-01")]
    assert fired[0].alert.started_at == START, "offline since then"


def test_devices_back_soon_after_their_bus_never_fire() -> None:
    hall = pad_bus(4)
    hall.port("pads-1f", open_=False)
    hall.run(3)
    for device_id in hall.statuses:
        hall.offline(device_id, reason="io_error")
    hall.run(600, step=5)
    hall.port("pads-1f", open_=True)
    hall.online("pad-w01")
    hall.run(120)  # the bus resolves; three pads take their time (offline pads: every 5 s)
    hall.run(30)
    for device_id in ("pad-w02", "pad-w03", "pad-w04"):
        hall.online(device_id)
    hall.run(300, step=5)
    told = [k for k in kinds(hall.log) if k[0] != "updated"]
    assert told == [("fired", "bus_down-pads-1f"), ("resolved", "bus_down-pads-1f")]


# -- the gateway itself -----------------------------------------------------------------------


def test_mqtt_down_is_one_alert_and_covers_the_outbox_backlog() -> None:
    hall = Hall()
    hall.set_gateway(mqtt_connected=False)
    assert hall.run(119) == []
    assert kinds(hall.run(1)) == [("fired", "gateway_degraded-mqtt")]
    hall.set_gateway(outbox_depth=OUTBOX_BACKLOG_MIN + 5000)
    hall.run(3000, step=10)
    assert kinds(hall.log) == [("fired", "gateway_degraded-mqtt")]
    hall.set_gateway(mqtt_connected=True)  # back, but the backlog does not drain
    hall.run(120 + 590, step=10)
    assert [t.kind for t in hall.log] == ["fired", "resolved"], "the backlog has its own `for`"
    hall.run(10)
    fired = [t.alert for t in hall.log if t.kind == "fired"]
    assert [a.alert_id for a in fired] == ["gateway_degraded-mqtt", "gateway_degraded-outbox"]
    assert fired[1].summary == "网关待发消息积压 6000 条,未能送达 MQTT 服务器"


def test_the_store_is_an_outage_after_two_failed_probes() -> None:
    hall = Hall()
    hall.set_gateway(store_writable=False, store_error="database or disk is full")
    assert hall.run(STORE_UNWRITABLE_FOR_S - 1) == []
    assert kinds(hall.run(1)) == [("fired", "gateway_degraded-store")]


# -- conditions from other engines (presence) -------------------------------------------------


def test_window_unattended_fires_after_its_for_and_outings_at_once() -> None:
    hall = Hall()
    engine = hall.engine
    engine.condition(
        "window_unattended", {"window_id": "w03"}, active=True, summary="3号窗口(w03)无人值守"
    )
    engine.condition("outing_overdue", {"staff_id": "s001"}, active=True, summary="张三 外出超时")
    fired = hall.evaluate()
    assert kinds(fired) == [("fired", "outing_overdue-s001")]
    assert kinds(hall.run(120)) == [("fired", "window_unattended-w03")]
    engine.condition("window_unattended", {"window_id": "w03"}, active=False)
    engine.condition("outing_rule", {"staff_id": "s002"}, active=True, severity="info")
    assert [(t.kind, t.alert.alert_id, t.alert.severity) for t in hall.evaluate()] == [
        ("fired", "outing_rule-s002", "info")
    ]
    assert kinds(hall.run(120)) == [("resolved", "window_unattended-w03")]


def test_a_condition_since_earlier_counts_its_for_from_then() -> None:
    hall = Hall()
    earlier = hall.clock.now() - dt.timedelta(seconds=100)
    hall.engine.condition("window_unattended", {"window_id": "w01"}, active=True, since=earlier)
    assert hall.run(19) == []
    fired = hall.run(1)
    assert kinds(fired) == [("fired", "window_unattended-w01")]
    assert fired[0].alert.started_at == earlier


@pytest.mark.parametrize(
    ("rule", "subject", "message"),
    [
        ("device_offline", {"device_id": "k"}, "is not reported from outside"),
        ("no_such_rule", {"window_id": "w01"}, "is not reported from outside"),
        ("window_unattended", {"staff_id": "s001"}, "the subject must be {'window_id': id}"),
        ("window_unattended", {"window_id": "w/01"}, "must match [A-Za-z0-9_-]+"),
        ("window_unattended", {"window_id": ""}, "must be an id"),
    ],
)
def test_a_malformed_condition_is_refused(rule: str, subject: dict[str, str], message: str) -> None:
    hall = Hall()
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("{", r"\{")):
        hall.engine.condition(rule, subject, active=True)
    assert hall.evaluate() == []


def test_conditions_about_subjects_gone_from_the_config_resolve() -> None:
    hall = Hall()
    hall.engine.condition("outing_overdue", {"staff_id": "s009"}, active=True)
    hall.evaluate()
    hall.engine.forget_external(lambda c: c.subject_id != "s009")
    hall.evaluate()
    assert kinds(hall.run(120)) == [("resolved", "outing_overdue-s009")]


# -- restart ----------------------------------------------------------------------------------


def test_firing_alerts_survive_a_restart_without_firing_again() -> None:
    hall = Hall()
    hall.add("kiosk-01")
    hall.add("kiosk-02")
    hall.offline("kiosk-01")
    hall.offline("kiosk-02")
    hall.engine.condition("window_unattended", {"window_id": "w01"}, active=True)
    hall.run(121)
    snapshot = hall.engine.snapshot()
    assert len(hall.engine.firing()) == 3

    after = Hall(clock=FakeClock(hall.clock.now() + dt.timedelta(seconds=30)))
    after.add("kiosk-01")
    after.add("kiosk-02")
    restored = after.engine.restore(snapshot)
    assert sorted(v.alert_id for v in restored) == [
        "device_offline-kiosk-01",
        "device_offline-kiosk-02",
        "window_unattended-w01",
    ]
    after.offline("kiosk-01")  # still gone after the restart
    assert after.evaluate() == [], "the same alerts, not fired again"
    assert {v.alert_id: v.started_at for v in after.engine.firing()}[
        "device_offline-kiosk-01"
    ] == START, "the original start is kept"
    # kiosk-02 came back while the gateway was down: resolved after the flap window
    resolved = after.run(120)
    assert kinds(resolved) == [("resolved", "device_offline-kiosk-02")]
    # presence never spoke of w01 again: resolved after the grace
    later = after.run(RESTORE_GRACE_S + 120, step=5)
    assert kinds(later) == [("resolved", "window_unattended-w01")]
    assert after.firing_ids() == ["device_offline-kiosk-01"]


def test_a_malformed_snapshot_restores_what_it_can() -> None:
    hall = Hall()
    good = {
        "alert_id": "device_offline-kiosk-01",
        "rule": "device_offline",
        "subject": {"device_id": "kiosk-01"},
        "severity": "critical",
        "summary": "x",
        "started_at": START.isoformat(),
    }
    bad = [
        {**good, "alert_id": "device_offline-other"},
        {**good, "rule": "nope"},
        {**good, "severity": "loud"},
        {**good, "started_at": "2026-11-23T09:00:00"},
        "not an object",
    ]
    assert [v.alert_id for v in hall.engine.restore(json.dumps([good, *bad]))] == [good["alert_id"]]
    assert hall.engine.restore("{not json") == []
    assert hall.engine.restore('{"a": 1}') == []


def test_pads_that_failed_just_before_the_lost_port_was_noticed_are_under_the_bus() -> None:
    hall = pad_bus(4)
    hall.offline("pad-w02", reason="io_error")  # its poll failed as the adapter was pulled
    hall.clock.advance(0.05)
    hall.port("pads-1f", open_=False)
    hall.run(3)
    for device_id in ("pad-w01", "pad-w03", "pad-w04"):
        hall.offline(device_id, reason="io_error")
    hall.run(300, step=5)
    assert kinds(hall.log) == [("fired", "bus_down-pads-1f")]
    assert hall.log[0].alert.started_at == START
