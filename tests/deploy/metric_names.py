"""The series the services export, read from their source, and the metric names and
labels a PromQL expression uses: what the alert rules and the Grafana board may query.

The exported names come from the code, not from a list kept by hand: every call of a
``prometheus_client`` metric class (``Counter``, ``Histogram``, ``GaugeMetricFamily``, …)
under ``services/`` and ``webhooks/``, with its literal name and label names. The sample
names each family exposes (``_total``, ``_bucket``/``_sum``/``_count``, ``_created``) are
the ones ``prometheus_client`` itself renders for it.

PromQL is read with a few regular expressions, not a parser: string literals, ranges and
grouping lists are taken out, and what is left that looks like an identifier not followed
by ``(`` (a function or an aggregation) nor a keyword is a metric name. ``promtool``
checks the syntax; :func:`problems` checks the names: each exported, with the labels the
query matches or groups by, ``rate()`` only over counters, ``delta()`` over gauges,
``histogram_quantile()`` over a histogram's ``_bucket``, and the eventlog's platform-wide
gauges taken with ``max``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = (REPO_ROOT / "services", REPO_ROOT / "webhooks")
PROMETHEUS_CLIENT = ("prometheus_client", "prometheus_client.core", "prometheus_client.metrics")

# Each prometheus_client class, by the instrument that renders the same samples.
INSTRUMENTS = {
    "Counter": Counter, "CounterMetricFamily": Counter,
    "Gauge": Gauge, "GaugeMetricFamily": Gauge,
    "Histogram": Histogram, "HistogramMetricFamily": Histogram,
    "Summary": Summary, "SummaryMetricFamily": Summary,
}
# Where each class takes its label names: (position, keyword).
LABEL_ARGUMENT = {
    "Counter": (2, "labelnames"), "Gauge": (2, "labelnames"),
    "Histogram": (2, "labelnames"), "Summary": (2, "labelnames"),
    "CounterMetricFamily": (3, "labels"), "GaugeMetricFamily": (3, "labels"),
    "HistogramMetricFamily": (4, "labels"), "SummaryMetricFamily": (4, "labels"),
}
# Series Prometheus adds to every target it scrapes.
SCRAPE_SERIES = ("up", "scrape_duration_seconds", "scrape_samples_scraped",
                 "scrape_samples_post_metric_relabeling", "scrape_series_added")
# Labels every scraped series carries: Prometheus's own, and the ones the Prometheus
# Operator's ServiceMonitor (the chart's) adds from the Kubernetes objects.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "endpoint",
                           "container"})
# The eventlog's gauges are platform-wide: every eventlog pod (API and sink) reports the
# same value, so a query takes their max (or min, avg) by the family's own labels.
PLATFORM_WIDE_SOURCE = "services/eventlog/metrics.py"


@dataclass(frozen=True)
class Family:
    """One metric family the code defines: its name, type and label names (``None``
    where the code does not spell them literally)."""

    name: str
    kind: str  # counter, gauge, histogram, summary
    labels: frozenset[str] | None
    defined_in: str


@dataclass(frozen=True)
class Series:
    """A sample name as Prometheus stores it, and the family it comes from."""

    name: str
    family: Family

    @property
    def labels(self) -> frozenset[str] | None:
        if self.family.labels is None:
            return None
        extra = {"le"} if self.name.endswith("_bucket") else set()
        return self.family.labels | extra | TARGET_LABELS

    @property
    def platform_wide(self) -> bool:
        return self.family.defined_in.startswith(f"{PLATFORM_WIDE_SOURCE}:")

    @property
    def counts_up(self) -> bool:
        """Whether rate()/increase() apply: a counter, or a histogram's or summary's
        cumulative parts."""
        return self.family.kind == "counter" or (
            self.family.kind in ("histogram", "summary")
            and self.name.endswith(("_bucket", "_sum", "_count")))


def _prometheus_imports(tree: ast.Module) -> dict[str, str]:
    """Local name -> prometheus_client class name, for the classes the module imports."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in PROMETHEUS_CLIENT:
            for alias in node.names:
                names[alias.asname or alias.name] = alias.name
    return names


def _label_names(call: ast.Call, cls: str) -> frozenset[str] | None:
    position, keyword = LABEL_ARGUMENT[cls]
    node = next((k.value for k in call.keywords if k.arg == keyword), None)
    if node is None and len(call.args) > position:
        node = call.args[position]
    if node is None:
        return frozenset()
    try:
        value = ast.literal_eval(node)
    except ValueError:
        return None  # computed: not checked
    return frozenset(value)


def defined_families(source_dirs: tuple[Path, ...] = SOURCE_DIRS) -> Iterator[Family]:
    """Every metric family constructed in the Python code under ``source_dirs``."""
    for folder in source_dirs:
        for path in sorted(folder.rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            imported = _prometheus_imports(tree)
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and node.func.id in imported):
                    continue
                cls = imported[node.func.id]
                if cls not in INSTRUMENTS:
                    continue  # CollectorRegistry, generate_latest, …
                where = f"{path.relative_to(REPO_ROOT)}:{node.lineno}"
                if not (node.args and isinstance(node.args[0], ast.Constant)
                        and isinstance(node.args[0].value, str)):
                    raise AssertionError(f"{where}: a {cls} whose name is not a literal "
                                         "string cannot be checked against the rules")
                yield Family(node.args[0].value, INSTRUMENTS[cls]._type,
                             _label_names(node, cls), where)


def sample_names(family: Family) -> list[str]:
    """The sample names prometheus_client renders for ``family`` (unlabelled, so every
    sample shows)."""
    registry = CollectorRegistry()
    instrument = {"counter": Counter, "gauge": Gauge, "histogram": Histogram,
                  "summary": Summary}[family.kind]
    instrument(family.name, "documentation", registry=registry)
    return sorted({sample.name for metric in registry.collect() for sample in metric.samples})


@cache
def exported_series() -> dict[str, Series]:
    """Every series name the services can export (and ``up`` and the other series
    Prometheus adds per target), with the family it comes from."""
    series: dict[str, Series] = {}
    for family in defined_families():
        for name in sample_names(family):
            known = series.get(name)
            assert known is None or known.family.kind == family.kind, (
                f"{name} is a {known.family.kind} at {known.family.defined_in} "
                f"and a {family.kind} at {family.defined_in}")
            series[name] = Series(name, family)
    for name in SCRAPE_SERIES:
        series[name] = Series(name, Family(name, "gauge", frozenset(), "Prometheus"))
    return series


# --- PromQL ---------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_MATCHERS = re.compile(r"\{([^{}]*)\}")
_IDENTIFIER = r"[A-Za-z_:][\w:]*"
# An identifier that is not a part of a number (1e3, 5m), a variable ($var) or a name,
# and is not called.
_NAME = re.compile(rf"(?<![\w.:$])({_IDENTIFIER})(?![\w:])(?!\s*\()")
_SELECTOR = re.compile(rf"(?<![\w.:$])({_IDENTIFIER})\s*\{{([^{{}}]*)\}}")
_MATCHER_LABEL = re.compile(rf"({_IDENTIFIER})\s*(?:=~|!~|!=|=)")
_CALL = re.compile(rf"(?<![\w.:$])({_IDENTIFIER})\s*\(")
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on",
                      "ignoring", "group_left", "group_right", "inf", "nan", "atan2"})
COUNTER_FUNCTIONS = frozenset({"rate", "irate", "increase", "resets"})
GAUGE_FUNCTIONS = frozenset({"delta", "idelta", "deriv", "predict_linear"})
_ONE_OF_ALIKE = (r"(?<![\w:])(?:max|min|avg)\s*(?:by\s*\([^()]*\)\s*)?\(\s*"
                 r"(?:(?:delta|idelta|deriv|[a-z]+_over_time)\s*\(\s*)?")
# Grafana's variables, as Grafana replaces them before Prometheus sees the query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


def grafana_to_promql(expr: str) -> str:
    """A board query as Prometheus receives it (Grafana's interval variables filled in)."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def _without_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects."""
    text = _RANGE.sub("", _without_strings(expr))
    text = _GROUPING.sub(" ", _MATCHERS.sub(" ", text))
    return {name for name in _NAME.findall(text) if name.lower() not in KEYWORDS}


def _argument(text: str, open_paren: int) -> str:
    """The text between the parenthesis at ``open_paren`` and its match."""
    depth = 0
    for index in range(open_paren, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return text[open_paren + 1:index]
    raise AssertionError(f"unbalanced parentheses in {text!r}")


def calls(expr: str) -> Iterator[tuple[str, str]]:
    """(function, argument text) of every call in ``expr``, nested ones too."""
    text = _without_strings(expr)
    for match in _CALL.finditer(text):
        if match.group(1) not in KEYWORDS:
            yield match.group(1), _argument(text, match.end() - 1)


def problems(expr: str, series: dict[str, Series] | None = None) -> list[str]:
    """What is wrong with the names ``expr`` uses, given the exported ``series`` (by
    default, :func:`exported_series`); empty when all is well."""
    series = exported_series() if series is None else series
    names = metric_names(expr)
    known = {name: series[name] for name in names if name in series}
    text = _without_strings(expr)
    return ([f"{name} is exported by no service" for name in sorted(names - known.keys())]
            + _label_problems(text, known) + _alike_problems(text, known)
            + _function_problems(expr, known))


def _label_problems(text: str, known: dict[str, Series]) -> list[str]:
    """Labels a selector matches that its metric lacks; ``by``/``on`` labels that no
    selected metric has."""
    found = []
    for name, matchers in _SELECTOR.findall(text):
        labels = known[name].labels if name in known else None
        found += [f"{name} has no label {label!r}" for label in _MATCHER_LABEL.findall(matchers)
                  if labels is not None and label not in labels | {"__name__"}]
    if any(s.labels is None for s in known.values()):
        return found  # a metric with computed labels: any label may be right
    available = set(TARGET_LABELS).union(*(s.labels or () for s in known.values()))
    for keyword, listed in _GROUPING.findall(text):
        if keyword in ("by", "on"):
            found += [f"{keyword} ({label}): no selected metric has that label"
                      for label in (part.strip() for part in listed.split(","))
                      if label and label not in available]
    return found


def _alike_problems(text: str, known: dict[str, Series]) -> list[str]:
    """Platform-wide gauges summed, or left one series per eventlog pod."""
    found = []
    for s in known.values():
        if not s.platform_wide:
            continue
        every = len(re.findall(rf"(?<![\w:]){s.name}(?![\w:])", text))
        one_of_alike = len(re.findall(rf"{_ONE_OF_ALIKE}{s.name}(?![\w:])", text))
        if one_of_alike < every:
            found.append(f"{s.name} is reported alike by every eventlog pod: take its "
                         "max by (its labels), not a sum or the series of each pod")
    return found


def _function_problems(expr: str, known: dict[str, Series]) -> list[str]:
    """rate() of a gauge, delta() of a counter, histogram_quantile() of anything but a
    histogram's buckets."""
    found = []
    for function, argument in calls(expr):
        inner = [known[name] for name in metric_names(argument) if name in known]
        if function in COUNTER_FUNCTIONS:
            found += [f"{function}({s.name}): not a counter" for s in inner if not s.counts_up]
        elif function in GAUGE_FUNCTIONS:
            found += [f"{function}({s.name}): a {s.family.kind}, not a gauge"
                      for s in inner if s.family.kind != "gauge"]
        elif function == "histogram_quantile":
            found += [f"histogram_quantile over {s.name}: not a histogram's _bucket"
                      for s in inner
                      if not (s.family.kind == "histogram" and s.name.endswith("_bucket"))]
    return found


def label_values(expr: str, label: str) -> set[str]:
    """The values ``expr``'s matchers name for ``label`` (a regex alternation split on
    ``|``): to check them against the values the code gives that label."""
    pattern = re.compile(rf'(?<![\w:]){re.escape(label)}\s*(?:=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
    return {value for found in pattern.findall(expr) for value in found.split("|")}
