"""The monitoring files in ``deploy/`` (Grafana board, Prometheus alert rules) and the
chart's optional objects that ship them: a PrometheusRule and a Grafana dashboard
ConfigMap, off by default like the ServiceMonitor; and the log format setting."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.deploy.chart import ALL_ENABLED_VALUES, CHART_DIR, REPO_ROOT, Manifests

ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yaml"
BOARD = REPO_ROOT / "deploy" / "grafana" / "webhooks.json"


@pytest.fixture(scope="module")
def default() -> Manifests:
    return Manifests.render()


@pytest.fixture(scope="module")
def all_enabled() -> Manifests:
    return Manifests.render(ALL_ENABLED_VALUES)


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"]
            for rule in group["rules"]]


def test_deploy_files_are_the_charts_own() -> None:
    """One copy of each: ``deploy/`` links to the files the chart packages."""
    assert ALERTS.resolve() == CHART_DIR / "files" / "prometheus-alerts.yaml"
    assert BOARD.resolve() == CHART_DIR / "files" / "grafana-dashboard.json"


def test_alert_rules_cover_what_operators_page_on() -> None:
    by_name = {rule["alert"]: rule for rule in rules()}
    expressions = {name: rule["expr"] for name, rule in by_name.items()}
    assert any("up{" in e for e in expressions.values())  # a service down
    assert any("webhooks_dead_lettered_total" in e for e in expressions.values())  # DLQ
    assert any("webhooks_consumer_group_lag" in e for e in expressions.values())  # lag
    assert any("webhooks_sink_lag" in e for e in expressions.values())
    assert any('outcome="delivered"' in e for e in expressions.values())  # success rate
    for name, rule in by_name.items():
        assert re.fullmatch(r"Webhooks[A-Za-z]+", name)
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"], name
        assert re.fullmatch(r"\d+m", rule["for"]), name
        # PromQL and Helm both use {{ }}; only Prometheus's own template variables appear.
        for text in rule["annotations"].values():
            assert set(re.findall(r"{{\s*([^}]*?)\s*}}", text)) <= {
                "$labels.job", "$labels.instance", "$labels.group", "$labels.topic",
                "$value | humanize", "$value | humanizePercentage"}, (name, text)


def test_board_panels_query_prometheus() -> None:
    board = json.loads(BOARD.read_text())
    assert board["uid"] and board["title"] == "Webhooks"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)) >= 10
    for panel in board["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        assert 0 <= panel["gridPos"]["x"] < panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def test_monitoring_objects_are_off_by_default(default: Manifests) -> None:
    assert not default.of_kind("PrometheusRule")
    assert not [cm for cm in default.of_kind("ConfigMap")
                if "grafana_dashboard" in cm["metadata"].get("labels", {})]


def test_prometheus_rule_carries_the_deploy_rules(all_enabled: Manifests) -> None:
    [rule] = all_enabled.of_kind("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())


def test_grafana_configmap_carries_the_board(all_enabled: Manifests) -> None:
    [board] = [cm for cm in all_enabled.of_kind("ConfigMap")
               if cm["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    assert board["metadata"]["annotations"] == {"grafana_folder": "Webhooks"}
    assert json.loads(board["data"]["webhooks.json"]) == json.loads(BOARD.read_text())


def test_log_format_reaches_the_configuration(default: Manifests,
                                              all_enabled: Manifests) -> None:
    def log_format(manifests: Manifests) -> set[str]:
        return {cm["data"]["WEBHOOKS_LOG_FORMAT"] for cm in manifests.of_kind("ConfigMap")
                if "WEBHOOKS_LOG_FORMAT" in cm.get("data", {})}
    assert log_format(default) == {"json"}  # log shippers on a cluster
    assert log_format(all_enabled) == {"text"}
