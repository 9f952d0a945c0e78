"""The checker the rule and board tests rely on: it finds the metrics the services really
serve, and it finds each kind of wrong query."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from services.fanout.metrics import FanoutMetrics
from services.ingest.metrics import IngestMetrics
from tests.deploy.metric_names import exported_series, label_values, metric_names, problems


def fanout_registry() -> CollectorRegistry:
    return FanoutMetrics(lambda: 0, lambda: 0, lambda: [("webhooks.events", 0, 3)],
                         lambda: {"webhooks.events": 1}).registry


@pytest.mark.parametrize("registry", [lambda: IngestMetrics().registry, fanout_registry],
                         ids=["ingest", "fanout"])
def test_finds_every_series_a_service_serves(registry: Callable[[], CollectorRegistry]) -> None:
    series = exported_series()
    for metric in registry().collect():
        for sample in metric.samples:
            assert sample.name in series, sample.name
            assert series[sample.name].family.kind == metric.type, sample.name
            labels = series[sample.name].labels
            assert labels is not None and set(sample.labels) <= labels, sample.name


def test_finds_the_eventlog_gauges_and_the_sink_counters() -> None:
    series = exported_series()
    for name, kind in [("webhooks_consumer_group_lag", "gauge"), ("webhooks_sink_lag", "gauge"),
                       ("webhooks_dlq_depth", "gauge"), ("webhooks_endpoints", "gauge"),
                       ("eventlog_sink_insert_failures_total", "counter"),
                       ("webhooks_delivery_latency_seconds_bucket", "histogram")]:
        assert series[name].family.kind == kind, name
    assert "webhooks_dlq_depth_total" not in series  # a gauge has no _total


def test_reads_metric_names_out_of_promql() -> None:
    expr = ('histogram_quantile(0.99, sum by (le) (rate(a_bucket{job=~"x-(y|z)"}[5m]))) '
            '/ on (job) group_left max without (pod) (b offset 5m) > 1e3 and c[10m:1m] '
            'or vector(0) unless d{__name__!="up", e="f(g)"}')
    assert metric_names(expr) == {"a_bucket", "b", "c", "d"}


@pytest.mark.parametrize(("expr", "problem"), [
    ("no_such_metric", "no_such_metric is exported by no service"),
    ("webhooks_dlq_depth_bucket", "exported by no service"),
    ("rate(webhooks_dlq_depth[5m])", "not a counter"),
    ("delta(webhooks_deliveries_total[5m])", "not a gauge"),
    ("histogram_quantile(0.9, sum by (le) (rate(webhooks_deliveries_total[5m])))",
     "not a histogram's _bucket"),
    ('webhooks_deliveries_total{outcomes="delivered"}', "has no label 'outcomes'"),
    ("sum by (tiers) (rate(webhooks_retries_total[5m]))", "by (tiers)"),
    ("sum by (topic) (max without (instance, pod) (webhooks_sink_lag))", "alike"),
    ("webhooks_dlq_depth > 10", "alike"),
])
def test_finds_a_wrong_query(expr: str, problem: str) -> None:
    assert any(problem in found for found in problems(expr)), problems(expr)


@pytest.mark.parametrize("expr", [
    'sum by (outcome, job) (rate(webhooks_deliveries_total{outcome!="dropped", '
    'instance=~".+"}[5m])) or vector(0)',
    'max by (group, topic) (delta(webhooks_consumer_group_lag{topic!~"x"}[10m])) > 0',
    "max(webhooks_dlq_depth)",
])
def test_a_right_query_has_no_problem(expr: str) -> None:
    assert problems(expr) == []


def test_label_values_split_alternations() -> None:
    assert label_values('x{outcome=~"a|b", outcome!="c", other_outcome="d"}',
                        "outcome") == {"a", "b", "c"}
