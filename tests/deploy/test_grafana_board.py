"""The Grafana board (``deploy/grafana/webhooks.json``, the chart's
``files/grafana-dashboard.json``): what Grafana needs to import it (a recent schema, a
Prometheus datasource variable every panel uses, unique panel ids, a place on the grid for
each), and queries that Prometheus parses and that name series the services export."""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.metric_names import grafana_to_promql, label_values, problems
from tests.deploy.promtool import REPO_ROOT, run_promtool
from webhooks.delivery import Outcome

BOARD = REPO_ROOT / "deploy" / "grafana" / "webhooks.json"
# Grafana 9.0's schema: panels refer to their datasource as {type, uid}, which the board
# does; older schemas name datasources, and Grafana migrates what it imports from them.
MIN_SCHEMA_VERSION = 36
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_COLUMNS = 24


def board() -> dict[str, Any]:
    return json.loads(BOARD.read_text())


def panels(document: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in (document or board())["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries() -> Iterator[tuple[str, str]]:
    """(panel title and refId, PromQL) of every target of every panel but rows."""
    for panel in panels():
        for target in panel.get("targets", []):
            yield f"{panel['title']} {target['refId']}", target["expr"]


def test_board_has_a_recent_schema_and_its_identity() -> None:
    document = board()
    assert document["uid"] and document["title"] == "Webhooks"
    assert isinstance(document["schemaVersion"], int)
    assert document["schemaVersion"] >= MIN_SCHEMA_VERSION
    assert "id" not in document or document["id"] is None  # Grafana assigns it on import


def test_board_asks_for_a_prometheus_datasource() -> None:
    variables = {v["name"]: v for v in board()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_every_panel_queries_the_datasource_variable() -> None:
    for panel in panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", DATASOURCE) == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in panels()]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids)) >= 10


def test_every_panel_has_its_own_place_on_the_grid() -> None:
    places = {}
    for panel in panels():
        grid = panel["gridPos"]
        assert all(isinstance(grid[key], int) for key in ("x", "y", "w", "h")), panel["title"]
        assert 0 <= grid["x"] < grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
        assert grid["y"] >= 0 and grid["h"] > 0, panel["title"]
        places[panel["title"]] = grid
    for (first, a), (second, b) in combinations(places.items(), 2):
        overlap = (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
                   and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])
        assert not overlap, (first, second)


def test_queries_name_what_the_services_export() -> None:
    found = {where: problems(grafana_to_promql(expr)) for where, expr in queries()}
    assert {where: issues for where, issues in found.items() if issues} == {}


def test_outcomes_named_are_delivery_outcomes() -> None:
    named = set().union(*(label_values(expr, "outcome") for _, expr in queries()))
    assert named <= set(typing.get_args(Outcome))


def test_promtool_parses_every_query(tmp_path: Path) -> None:
    """Each query as a recording rule: ``promtool check rules`` parses its PromQL."""
    recorded = [{"record": f"board:query_{n}", "expr": grafana_to_promql(expr)}
                for n, (_, expr) in enumerate(queries())]
    rule_file = tmp_path / "board-queries.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "board", "rules": recorded}]}))
    result = run_promtool("check", "rules", rule_file)
    assert result.returncode == 0, result.stdout + result.stderr

