"""The chart's optional objects that ship the monitoring files of ``deploy/`` (Grafana
board, Prometheus alert rules): a PrometheusRule and a Grafana dashboard ConfigMap, off by
default like the ServiceMonitor; and the log format setting. The files themselves are
checked by test_prometheus_rules.py and test_grafana_board.py."""

from __future__ import annotations

import json

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


def test_deploy_files_are_the_charts_own() -> None:
    """One copy of each: ``deploy/`` links to the files the chart packages."""
    assert ALERTS.resolve() == CHART_DIR / "files" / "prometheus-alerts.yaml"
    assert BOARD.resolve() == CHART_DIR / "files" / "grafana-dashboard.json"


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
