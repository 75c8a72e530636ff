"""The alerts service: feeds the alert engine (gateway.alerts) from the hall's devices, serial
buses and the gateway itself, and carries what changes to the sinks.

- MQTT (mqtt.md, Alerts): a firing alert is an `alert` event and `…/alerts/{alert_id}` retained;
  a resolved one is an `alert` event with `ended_at`, then the retained topic cleared. Both go
  through the event bus, so they are in the journal and the outbox in one commit with the firing
  alerts' snapshot (which a restart restores), and reach the broker in that order even across
  outages. The publisher also holds each firing alert's state to re-publish on every connect.
- Webhooks (gateway.webhooks): fired, resolved and repeated notifications.
- `GET /api/v1/alerts`: the firing alerts; `hallgw_alerts_firing{rule,severity}`.

Presence (and any later engine) reports its conditions through `condition` or the named helpers
`window_unattended`, `outing_overdue`, `outing_rule`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from aiohttp import web
from prometheus_client import Gauge

from gateway.alerts import (
    RULES,
    AlertEngine,
    AlertView,
    Condition,
    DeviceWatch,
    HallState,
    Severity,
    Transition,
    Watches,
    hall_conditions,
)
from gateway.clock import iso
from gateway.config import Config, Secret, resolve_secrets
from gateway.context import GatewayParts, ServiceBase
from gateway.errors import StoreError
from gateway.events import AlertEvent, PadEvent
from gateway.ids import stable_id
from gateway.store import OutboxMessage
from gateway.topics import ALERT, alert_state
from gateway.webhooks import Hall, Notification, Webhooks

if TYPE_CHECKING:
    from gateway.presence import Condition as PresenceCondition
    from gateway.presence_service import PresenceService

log = logging.getLogger(__name__)

# where the firing alerts are kept for a restart (the store's cursors)
ACTIVE_CURSOR: Final = "alerts:active"
# sources without a change signal (a serial port, the store, the broker link) are read this often
EVALUATE_EVERY_S: Final = 1.0
# a burst of device changes (a bus of pads answering again) is evaluated once
DEBOUNCE_S: Final = 0.05

# the hall's outing rules (gateway.outings), as the platform team reads them
_OUTING_RULE_TEXT: Final = {
    "private_approval": "私事外出超过 {private_approval_over_min} 分钟未经审批",
    "replacement": "外出超过 {replacement_over_min} 分钟未安排代班",
    "max_per_day": "当日外出超过 {max_per_day} 次",
    "max_minutes_per_day": "当日外出累计超过 {max_minutes_per_day} 分钟",
}


@dataclass
class _Record:
    transition: Transition
    fallback_done: bool = False


class AlertService(ServiceBase):
    name = "alerts"

    def __init__(self, parts: GatewayParts) -> None:
        context = parts.context
        self.config: Config = context.config
        self._context = context
        self._clock = context.clock
        self._publisher = parts.publisher
        self._mounted = parts.mounted
        self.engine = AlertEngine(
            context.config.alerts,
            context.clock,
            device_buses={
                d.id: bus for d in context.config.devices if (bus := d.bus_id()) is not None
            },
        )
        self._bus_members: dict[str, list[str]] = {bus: [] for bus in context.buses}
        for device in context.config.devices:
            bus = device.bus_id()
            if bus is not None and bus in self._bus_members:
                self._bus_members[bus].append(device.id)
        self._presence: PresenceService | None = None
        self._watches = Watches()
        self._wake = asyncio.Event()
        self._records: collections.deque[_Record] = collections.deque()
        self._store_failing = False
        self._events = context.bus.subscribe("alerts")
        registry = context.metrics.registry
        self._expected_up = Gauge(
            "hallgw_device_expected_up",
            "1 while the device is supposed to be on (a kiosk watched in service hours: 0 at "
            "night); device_offline alerts only then",
            ["device_id", "kind"],
            registry=registry,
        )
        # the children, and what each was last set to: evaluated every second for every device,
        # labels() (a lookup under a lock) and set() each time were a large part of it
        self._expected_up_children = {
            status.device_id: self._expected_up.labels(status.device_id, status.kind)
            for status in context.hub.statuses()
        }
        self._expected_up_values: dict[str, bool] = {}
        for device_id, child in self._expected_up_children.items():
            child.set(1)
            self._expected_up_values[device_id] = True
        self._firing_series: set[tuple[str, str]] = {(r.name, r.severity) for r in RULES.values()}
        self.webhooks = Webhooks(registry)
        self._configure_webhooks(context.config, context.secrets.webhook_urls)
        context.hub.add_listener(lambda _status, _change: self._wake.set())
        self._update_gauges()

    # -- Service -------------------------------------------------------------------------------

    def install_routes(self, main: web.Application) -> None:
        main.router.add_get("/api/v1/alerts", self._list)

    async def restore(self) -> None:
        """The alerts that were firing when the gateway stopped: they fire on, under the same
        ids, until re-evaluated."""
        text = await self._context.store.cursor(ACTIVE_CURSOR)
        if text is not None:
            for view in self.engine.restore(text):
                self._publisher.hold_retained(_topic(view), _state(view))
            restored = len(self.engine.firing())
            if restored:
                log.info("%d alerts firing at the last stop: re-evaluating them", restored)
        if self._presence is not None:
            self._follow_presence(self._presence)
        self._update_gauges()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.webhooks.run(), name="alerts-webhooks")
            group.create_task(self._watch_events(), name="alerts-events")
            group.create_task(self._evaluate_forever(), name="alerts-evaluate")

    def reload(self, config: Config) -> None:
        """New thresholds, webhooks and roster (SIGHUP). Firing alerts stay; conditions other
        engines reported about windows or staff no longer configured are dropped."""
        self.config = config
        self.engine.config = config.alerts
        windows = {w.id for w in config.windows}
        staff = {s.id for s in config.staff}

        def still_there(condition: Condition) -> bool:
            key = RULES[condition.rule].subject_key
            return condition.subject_id in (windows if key == "window_id" else staff)

        self.engine.forget_external(still_there)
        secrets, _missing = resolve_secrets(config)  # the gateway refused a reload missing one
        self._configure_webhooks(config, secrets.webhook_urls)
        self._wake.set()

    # -- what other engines report (presence) --------------------------------------------------

    def follow(self, presence: PresenceService) -> None:
        """Take presence's conditions (windows unattended, outings overdue or let through a
        rule under `warn`). Presence rebuilds its engine when it restores, so the listener is
        added in this service's `restore`, which must come after presence's."""
        self._presence = presence

    def presence_condition(self, condition: PresenceCondition) -> None:
        """A condition as the presence engine raises and resolves it."""
        _key, subject_id = condition.subject
        since = condition.since if condition.active else None
        if condition.rule == "window_unattended":
            self.window_unattended(subject_id, unattended=condition.active, since=since)
        elif condition.rule == "outing_overdue":
            self.outing_overdue(
                subject_id, overdue=condition.active, expected_back=since, since=since
            )
        else:
            flags: tuple[str, ...] = ()
            if condition.active and self._presence is not None and condition.outing_id:
                outing = self._presence.engine.outing(condition.outing_id)
                flags = tuple(outing.rule_flags) if outing is not None else ()
            if condition.active and not flags:  # presence's own words, rather than nothing
                self.condition(
                    "outing_rule",
                    {"staff_id": subject_id},
                    active=True,
                    summary=condition.summary,
                    since=since,
                )
                return
            self.outing_rule(subject_id, breaches=flags, since=since)

    def _follow_presence(self, presence: PresenceService) -> None:
        presence.add_listener(self.presence_condition)
        current = presence.engine.conditions()
        for condition in current:
            self.presence_condition(condition)
        # presence knows every condition that holds now: a restored alert of its rules that
        # it does not name has cleared while the gateway was down
        named = {(c.rule, c.subject[1]) for c in current}
        for view in self.engine.firing():
            spec = RULES[view.rule]
            subject_id = view.subject[spec.subject_key]
            if spec.external and (view.rule, subject_id) not in named:
                self.engine.condition(view.rule, view.subject, active=False)

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
        """See `AlertEngine.condition`; the engine evaluates it at once."""
        self.engine.condition(
            rule,
            subject,
            active=active,
            summary=summary,
            severity=severity,
            for_s=for_s,
            since=since,
        )
        self._wake.set()

    def window_unattended(
        self, window_id: str, *, unattended: bool, since: dt.datetime | None = None
    ) -> None:
        """A window is `unattended` (mqtt.md) since `since`; fires after
        `alerts.window_unattended_for_s`."""
        window = self._context.roster.windows.get(window_id)
        name = (window.name if window is not None else "") or window_id
        self.condition(
            "window_unattended",
            {"window_id": window_id},
            active=unattended,
            summary=f"{name}({window_id})无人值守" if unattended else "",
            since=since,
        )

    def outing_overdue(
        self,
        staff_id: str,
        *,
        overdue: bool,
        expected_back: dt.datetime | None = None,
        since: dt.datetime | None = None,
    ) -> None:
        """A staff member is out past `expected_back`; fires at once."""
        back = (
            f",应于 {expected_back.astimezone(self._clock.zone):%H:%M} 返回"
            if expected_back
            else ""
        )
        self.condition(
            "outing_overdue",
            {"staff_id": staff_id},
            active=overdue,
            summary=f"{self._person(staff_id)} 外出超时{back}" if overdue else "",
            since=since,
        )

    def outing_rule(
        self, staff_id: str, *, breaches: Sequence[str], since: dt.datetime | None = None
    ) -> None:
        """The hall's outing rules a staff member's outings break now (`rules.outing` names:
        `max_per_day`, …; in `mode: warn` they are accepted, flagged and alerted); none: clear."""
        rules = self.config.rules.outing.model_dump()
        texts = [_OUTING_RULE_TEXT.get(b, b).format(**rules) for b in breaches]
        self.condition(
            "outing_rule",
            {"staff_id": staff_id},
            active=bool(breaches),
            summary=f"{self._person(staff_id)} 外出违反规定:{'、'.join(texts)}" if texts else "",
            since=since,
        )

    # -- evaluation ----------------------------------------------------------------------------

    async def evaluate(self) -> list[Transition]:
        """Evaluate every rule once and carry what changed to the sinks."""
        now = self._clock.now()
        transitions = self.engine.evaluate(self._conditions(now))
        for transition in transitions:
            self._notify(transition)
            if transition.kind != "repeated":
                self._records.append(_Record(transition))
        await self._record_waiting()
        self._update_gauges()
        return transitions

    async def _evaluate_forever(self) -> None:
        while True:
            self._wake.clear()
            await self.evaluate()
            delay = EVALUATE_EVERY_S
            due = self.engine.next_due()
            if due is not None:
                delay = min(delay, max(DEBOUNCE_S, (due - self._clock.now()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
                await asyncio.sleep(DEBOUNCE_S)  # woken: let the rest of a burst arrive

    def _conditions(self, now: dt.datetime) -> list[Condition]:
        devices = []
        for status in self._context.hub.statuses():
            mounted = self._mounted.get(status.device_id)
            expected = True
            if mounted is not None and mounted.expected_on is not None:
                expected = mounted.expected_on(now)
            if self._expected_up_values.get(status.device_id) != expected:
                self._expected_up_values[status.device_id] = expected
                child = self._expected_up_children.get(status.device_id)
                if child is None:
                    child = self._expected_up.labels(status.device_id, status.kind)
                    self._expected_up_children[status.device_id] = child
                child.set(1 if expected else 0)
            devices.append((status, expected))
        store = self._context.store
        state = HallState(
            devices=devices,
            buses={
                bus_id: (serial_bus.up, self._bus_members.get(bus_id, []))
                for bus_id, serial_bus in self._context.buses.items()
            },
            mqtt_connected=self._publisher.connected.is_set(),
            store_writable=store.healthy,
            store_error=store.last_error,
            outbox_depth=store.outbox_depth,
        )
        return hall_conditions(state, self.config.alerts, self._watches, now)

    async def _watch_events(self) -> None:
        """A pad's `fault` event makes its fault known at once (its status says so only every
        minute)."""
        while True:
            event = await self._events.get()
            if isinstance(event, PadEvent) and event.action == "fault" and event.device_id:
                watch = self._watches.devices.setdefault(event.device_id, DeviceWatch())
                watch.pad_fault = (self._clock.now(), event.code)
                self._wake.set()

    # -- sinks ---------------------------------------------------------------------------------

    def _notify(self, transition: Transition) -> None:
        if transition.kind == "updated":
            return
        self.webhooks.offer(Notification(transition.alert, repeat=transition.kind == "repeated"))

    async def _record_waiting(self) -> None:
        """Commit what changed, in order; after a store failure, retried at the next evaluation
        (the retained topic is set or cleared meanwhile from memory, so MQTT still says it)."""
        while self._records:
            record = self._records[0]
            try:
                await self._record(record.transition)
            except StoreError as err:
                if not self._store_failing:
                    log.error("alerts not stored (kept, retrying): %s", err)
                self._store_failing = True
                for waiting in self._records:
                    if not waiting.fallback_done:
                        waiting.fallback_done = True
                        self._publish_from_memory(waiting.transition)
                return
            self._records.popleft()
            if self._store_failing:
                log.info("alerts stored again")
                self._store_failing = False

    async def _record(self, transition: Transition) -> None:
        view = transition.alert
        topic = _topic(view)
        store = self._context.store
        if transition.kind == "updated":
            state = _state(view)
            at = transition.at.timestamp()
            await store.enqueue([OutboxMessage(topic, state, received_at=at, retain=True)])
            await store.set_cursor(ACTIVE_CURSOR, self.engine.snapshot())
            self._publisher.hold_retained(topic, state)
            return
        event = _event(self.config.site, transition)
        await self._context.bus.publish(event, cursor=(ACTIVE_CURSOR, self.engine.snapshot()))
        self._publisher.hold_retained(topic, _state(view) if view.ended_at is None else None)
        log.info("alert %s %s: %s", view.alert_id, event.status, view.summary)

    def _publish_from_memory(self, transition: Transition) -> None:
        view = transition.alert
        self._publisher.set_retained(_topic(view), b"" if view.ended_at else _state(view))

    def _update_gauges(self) -> None:
        counts = {
            (rule, str(severity)): n for (rule, severity), n in self.engine.firing_counts().items()
        }
        self._firing_series.update(counts)
        for rule, severity in self._firing_series:
            self._context.metrics.alerts_firing.labels(rule, severity).set(
                counts.get((rule, severity), 0)
            )

    # -- HTTP ----------------------------------------------------------------------------------

    async def _list(self, _request: web.Request) -> web.Response:
        return web.json_response(
            [view.fields() for view in self.engine.firing()],
            dumps=lambda value: json.dumps(value, ensure_ascii=False),
        )

    # -- helpers -------------------------------------------------------------------------------

    def _configure_webhooks(self, config: Config, urls: Mapping[int, Secret]) -> None:
        hooks = []
        for index, hook in enumerate(config.alerts.webhooks):
            url = urls.get(index)
            if url is None:
                log.warning("alerts.webhooks[%d]: no address is set; not used", index)
                continue
            hooks.append((index, hook, url))
        self.webhooks.configure(hooks, Hall(config.site, config.display_name))

    def _person(self, staff_id: str) -> str:
        person = self._context.roster.staff.get(staff_id)
        if person is None:
            return staff_id
        name = person.name
        if self.config.board.mask_names and name:
            name = name[0] + "*"
        return f"{name}({staff_id})"


def _topic(view: AlertView) -> str:
    return ALERT.format(alert_id=view.alert_id)


def _state(view: AlertView) -> bytes:
    return alert_state(
        alert_id=view.alert_id,
        rule=view.rule,
        severity=view.severity,
        subject=view.subject,
        summary=view.summary,
        started_at=view.started_at,
    )


def _event(site: str, transition: Transition) -> AlertEvent:
    view = transition.alert
    status = "firing" if view.ended_at is None else "resolved"
    ended = iso(view.ended_at) if view.ended_at is not None else None
    # the fact is "this alert fired (or resolved) at this instant": the same fact published
    # again keeps its id, and an alert that fires again later is a new fact
    fact = (view.alert_id, status, iso(view.started_at), ended, transition.at.isoformat())
    return AlertEvent(
        event_id=stable_id(site, "alert", *fact),
        ts=transition.at,
        received_at=transition.at,
        device_id=None,
        alert_id=view.alert_id,
        rule=view.rule,
        severity=view.severity,
        status=status,
        subject=dict(view.subject),
        summary=view.summary,
        started_at=view.started_at,
        ended_at=view.ended_at,
    )
