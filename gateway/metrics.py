"""The Prometheus metrics of the HTTP contract (shared/contract/http.md), one registry a gateway."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway import __version__
from gateway.errors import RequestResult

REQUEST_RESULTS: tuple[RequestResult, ...] = (
    "ok",
    "timeout",
    "io_error",
    "bad_frame",
    "bad_response",
)
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SWEEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.build_info = Gauge(
            "hallgw_build_info", "Build of the gateway (always 1)", ["version"], registry=r
        )
        self.build_info.labels(__version__).set(1)
        self.device_up = Gauge(
            "hallgw_device_up", "1 while the device answers", ["device_id", "kind"], registry=r
        )
        self.device_last_seen = Gauge(
            "hallgw_device_last_seen_timestamp_seconds",
            "When the device last completed an exchange",
            ["device_id", "kind"],
            registry=r,
        )
        self.device_requests = Counter(
            "hallgw_device_requests_total",
            "Exchanges with devices by result",
            ["device_id", "kind", "result"],
            registry=r,
        )
        self.device_request_duration = Histogram(
            "hallgw_device_request_duration_seconds",
            "Time from request to answer (or failure)",
            ["kind"],
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.bus_sweep = Histogram(
            "hallgw_bus_sweep_seconds",
            "Time to poll every device of a serial bus once",
            ["bus"],
            buckets=_SWEEP_BUCKETS,
            registry=r,
        )
        self.events = Counter(
            "hallgw_events_total", "Facts stored and queued for MQTT, by kind", ["kind"], registry=r
        )
        self.mqtt_connected = Gauge(
            "hallgw_mqtt_connected", "1 while connected to the broker", registry=r
        )
        self.mqtt_published = Counter(
            "hallgw_mqtt_published_total", "Messages the broker acknowledged", registry=r
        )
        self.outbox_messages = Gauge(
            "hallgw_outbox_messages", "Messages waiting in the outbox", registry=r
        )
        self.outbox_dropped = Counter(
            "hallgw_outbox_dropped_total",
            "Messages dropped from the outbox",
            ["reason"],
            registry=r,
        )
        self.outbox_dropped.labels("overflow")
        self.event_publish_latency = Histogram(
            "hallgw_event_publish_latency_seconds",
            "From received_at to the broker's PUBACK",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.alerts_firing = Gauge(
            "hallgw_alerts_firing", "Alerts firing now", ["rule", "severity"], registry=r
        )
        self.windows = Gauge("hallgw_windows", "Windows by status", ["status"], registry=r)
        self.staff = Gauge("hallgw_staff", "Staff by status", ["status"], registry=r)
        # beyond the contract: what the gateway itself sheds or refuses
        self.sink_dropped = Counter(
            "hallgw_sink_dropped_total",
            "Facts a full sink queue could not take (the fact is still stored and published)",
            ["sink"],
            registry=r,
        )
        self.commands = Counter(
            "hallgw_mqtt_commands_total",
            "Commands received over MQTT by command and result",
            ["command", "result"],
            registry=r,
        )
        self.store_writable = Gauge(
            "hallgw_store_writable", "1 while the store commits", registry=r
        )
        self.config_reloads = Counter(
            "hallgw_config_reloads_total",
            "Config reloads (SIGHUP) by result: ok, refused (the running config was kept)",
            ["result"],
            registry=r,
        )
        for result in ("ok", "refused"):
            self.config_reloads.labels(result)

    def declare_devices(self, devices: Iterable[tuple[str, str]]) -> None:
        """Create every device's series up front, so dashboards show zeros, not gaps."""
        kinds: set[str] = set()
        for device_id, kind in devices:
            kinds.add(kind)
            self.device_up.labels(device_id, kind).set(0)
            for result in REQUEST_RESULTS:
                self.device_requests.labels(device_id, kind, result)
        for kind in kinds:
            self.device_request_duration.labels(kind)

    def declare_buses(self, buses: Iterable[str]) -> None:
        for bus in buses:
            self.bus_sweep.labels(bus)

    def watch_outbox(self, depth: Callable[[], int]) -> None:
        self.outbox_messages.set_function(depth)

    def watch_store(self, writable: Callable[[], bool]) -> None:
        self.store_writable.set_function(lambda: 1.0 if writable() else 0.0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
