"""What operators install beside the gateway: the Grafana dashboard and the Prometheus rules.
Every metric they query, with the labels they use, is on a running gateway's `/metrics`; the
rules pass `promtool check` and promtool's own unit tests of them."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import Secret, Secrets
from simulators.broker import find_program
from simulators.ff68_pad import PadBus
from simulators.kiosk_http import KioskAgent
from tests.support.harness import API_TOKEN, pad_hall, running_gateway, to_config
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import Recorder

DASHBOARD = Path(__file__).resolve().parents[1] / "config" / "grafana" / "hallgw.json"
PROMETHEUS = Path(__file__).resolve().parents[1] / "config" / "prometheus"
RULE_TESTS = Path(__file__).resolve().parent / "prometheus" / "hallgw-rules.test.yml"
# labels Prometheus adds to every scraped series, and the histogram bucket label
TARGET_LABELS = frozenset({"instance", "job", "le"})
# Prometheus' own series about a scrape, not the gateway's
SYNTHETIC = frozenset({"up"})
_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_METRIC = re.compile(r"\b(hallgw_[a-z0-9_]+)\b")
_GROUPING = re.compile(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)")


def dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return board


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries() -> list[str]:
    return [t["expr"] for p in panels(dashboard()) for t in p.get("targets", [])]


def rule_queries() -> list[str]:
    rules = yaml.safe_load((PROMETHEUS / "hallgw-rules.yml").read_text(encoding="utf-8"))
    return [r["expr"] for group in rules["groups"] for r in group["rules"]]


@pytest.fixture
async def exposition(
    tmp_path: Path, broker: Mosquitto, padbus: PadBus, agent: KioskAgent
) -> dict[str, set[str] | None]:
    """Every metric family of a gateway with pads on a bus, a kiosk, a webhook and a rating
    published: family and sample name → its label names (None: declared, no series yet)."""
    data = pad_hall(tmp_path, mqtt_port=broker.port, bus_url=str(tmp_path / "pads-1f"), pads=2)
    data["devices"].append(
        {"id": "kiosk-01", "profile": "kiosk_http", "base_url": agent.base_url, "poll_s": 0.3}
    )
    data["alerts"] = {"webhooks": [{"url_env": "HOOK", "format": "wecom"}]}
    secrets = Secrets(
        api_token=Secret(API_TOKEN), webhook_urls={0: Secret("http://127.0.0.1:9/hook")}
    )
    async with (
        Recorder(broker.port, ["hall/test-hall/events/#"]) as mqtt,
        running_gateway(to_config(data), secrets) as running,
    ):
        padbus.pad(1).press(1)
        await mqtt.wait_for(lambda: mqtt.events("rating"), what="a rating")
        async with (
            aiohttp.ClientSession() as session,
            session.get(running.base_url + "/metrics") as resp,
        ):
            text = await resp.text()
    found: dict[str, set[str] | None] = {}
    for family in text_string_to_metric_families(text):
        names = {family.name, *(s.name for s in family.samples)}
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        labels = {k for s in family.samples for k in s.labels} if family.samples else None
        for name in names:
            found[name] = labels
    return found


def check_queries(queries: list[str], exposition: dict[str, set[str] | None]) -> set[str]:
    """Fail on a metric or label a query names that the gateway does not have; return the
    metrics queried."""
    queried: set[str] = set()
    for expr in queries:
        metrics = set(_METRIC.findall(expr))
        synthetic = {name for name, _ in _SELECTOR.findall(expr) if name in SYNTHETIC}
        assert metrics or synthetic, f"a query on no gateway metric: {expr}"
        for metric in metrics:
            assert metric in exposition, f"{metric} (in {expr!r}) is not on /metrics"
        queried |= metrics
        known: set[str] = set(TARGET_LABELS)
        for metric in metrics:
            known |= exposition[metric] or set()
        for name, matchers in _SELECTOR.findall(expr):
            if name in SYNTHETIC:
                continue
            assert name.startswith("hallgw_"), f"{name} is not a gateway metric: {expr}"
            labels = exposition[name]
            assert labels is not None, f"{name} has no series to check its labels on"
            for matcher in filter(None, (m.strip() for m in matchers.split(","))):
                label = re.split(r"[=!~]", matcher, maxsplit=1)[0].strip()
                assert label in labels | TARGET_LABELS, f"{name} has no label {label}: {expr}"
        for grouping in _GROUPING.findall(expr):
            for label in filter(None, (g.strip() for g in grouping.split(","))):
                assert label in known, f"no metric of {expr!r} has the label {label}"
    return queried


async def test_every_metric_and_label_the_dashboard_queries_is_on_metrics(
    exposition: dict[str, set[str] | None],
) -> None:
    queried = check_queries(dashboard_queries(), exposition)
    contract = {
        "hallgw_build_info",
        "hallgw_device_up",
        "hallgw_device_last_seen_timestamp_seconds",
        "hallgw_device_requests_total",
        "hallgw_device_request_duration_seconds_bucket",
        "hallgw_bus_sweep_seconds_bucket",
        "hallgw_events_total",
        "hallgw_mqtt_connected",
        "hallgw_mqtt_published_total",
        "hallgw_outbox_messages",
        "hallgw_outbox_dropped_total",
        "hallgw_event_publish_latency_seconds_bucket",
        "hallgw_alerts_firing",
        "hallgw_windows",
        "hallgw_staff",
    }
    assert contract <= queried, f"the dashboard leaves out {contract - queried}"


async def test_every_metric_the_prometheus_rules_query_is_on_metrics(
    exposition: dict[str, set[str] | None],
) -> None:
    queried = check_queries(rule_queries(), exposition)
    assert {"hallgw_device_up", "hallgw_outbox_messages"} <= queried


def test_the_check_sees_a_metric_the_gateway_does_not_have() -> None:
    exposition: dict[str, set[str] | None] = {"hallgw_device_up": {"device_id", "kind"}}
    with pytest.raises(AssertionError, match="hallgw_device_upp"):
        check_queries(["sum(hallgw_device_upp)"], exposition)
    with pytest.raises(AssertionError, match="no label bus"):
        check_queries(['hallgw_device_up{bus="x"}'], exposition)
    with pytest.raises(AssertionError, match="the label status"):
        check_queries(["sum by (status) (hallgw_device_up)"], exposition)


def test_the_dashboard_is_an_importable_grafana_dashboard() -> None:
    board = dashboard()
    assert board["uid"] == "hallgw"
    assert board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["instance"]["query"]["query"] == "label_values(hallgw_build_info, instance)"
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels(board):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)) >= 1
        for target in panel["targets"]:
            assert 'instance=~"$instance"' in target["expr"], target["expr"]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_program("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_promtool_checks_the_rules_and_the_scrape_config() -> None:
    rules = promtool("check", "rules", str(PROMETHEUS / "hallgw-rules.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 6 rules found" in rules.stdout + rules.stderr
    config = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


def test_promtool_unit_tests_of_the_rules_pass(tmp_path: Path) -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr

    # the same tests against a rule that waits less: they fail, so they do test something
    rules = (PROMETHEUS / "hallgw-rules.yml").read_text(encoding="utf-8")
    (tmp_path / "hallgw-rules.yml").write_text(rules.replace("for: 2m", "for: 1m", 1))
    tests = RULE_TESTS.read_text(encoding="utf-8").replace(
        "../../config/prometheus/hallgw-rules.yml", "hallgw-rules.yml"
    )
    (tmp_path / "rules.test.yml").write_text(tests)
    broken = promtool("test", "rules", str(tmp_path / "rules.test.yml"))
    assert broken.returncode != 0
    assert "HallGatewayDown" in broken.stdout + broken.stderr


def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    rules = (PROMETHEUS / "hallgw-rules.yml").read_text(encoding="utf-8")
    broken = tmp_path / "rules.yml"
    broken.write_text(rules.replace("hallgw_store_writable == 0", "hallgw_store_writable == ("))
    result = promtool("check", "rules", str(broken))
    assert result.returncode != 0
