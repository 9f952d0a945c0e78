"""The Prometheus alert rules (``deploy/prometheus/alerts.yaml``, the chart's
``files/prometheus-alerts.yaml``): promtool accepts them, its unit tests
(``deploy/prometheus/alerts_test.yaml``) fire each alert on the series it is for and keep
it silent on healthy ones, and every expression names series the services export."""

from __future__ import annotations

import re
import shutil
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart import ALL_ENABLED_VALUES, Manifests
from tests.deploy.metric_names import label_values, problems
from tests.deploy.promtool import REPO_ROOT, run_promtool
from webhooks.delivery import Outcome

ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yaml"
ALERT_TESTS = REPO_ROOT / "deploy" / "prometheus" / "alerts_test.yaml"


def rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]


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


def test_alert_expressions_name_what_the_services_export() -> None:
    found = {rule["alert"]: problems(rule["expr"]) for rule in rules()}
    assert {name: issues for name, issues in found.items() if issues} == {}


def test_outcomes_named_are_delivery_outcomes() -> None:
    named = set().union(*(label_values(rule["expr"], "outcome") for rule in rules()))
    assert named and named <= set(typing.get_args(Outcome))


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    """Each alert of the rules is expected firing in one unit test and silent in another
    (before its ``for:`` has passed, or on healthy series)."""
    firing: set[str] = set()
    silent: set[str] = set()
    document = yaml.safe_load(ALERT_TESTS.read_text())
    assert document["rule_files"] == [ALERTS.name]
    for test in document["tests"]:
        for case in test.get("alert_rule_test", []):
            (firing if case["exp_alerts"] else silent).add(case["alertname"])
    alerts = {rule["alert"] for rule in rules()}
    assert firing == alerts
    assert silent == alerts


def test_promtool_accepts_the_rules() -> None:
    result = run_promtool("check", "rules", "--lint-fatal", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", ALERT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def chart_rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rule groups of the chart's PrometheusRule, as a rule file beside a copy of the
    unit tests."""
    [rule] = Manifests.render(ALL_ENABLED_VALUES).of_kind("PrometheusRule")
    folder = tmp_path_factory.mktemp("chart-rules")
    (folder / ALERTS.name).write_text(yaml.safe_dump(rule["spec"]))
    shutil.copy(ALERT_TESTS, folder / ALERT_TESTS.name)
    return folder / ALERTS.name


def test_promtool_accepts_the_rules_the_chart_ships(chart_rules: Path) -> None:
    checked = run_promtool("check", "rules", "--lint-fatal", chart_rules)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run_promtool("test", "rules", chart_rules.with_name(ALERT_TESTS.name))
    assert tested.returncode == 0, tested.stdout + tested.stderr
