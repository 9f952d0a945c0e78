"""The soak's SVG curves: one line a service and a consumer group, scaled to the panel."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

from benchmarks.soak_plot import PANEL_HEIGHT, svg

SVG = "{http://www.w3.org/2000/svg}"


def sample(minute: float, rss: float, lag: int) -> dict[str, object]:
    return {"minute": minute, "rss_mb": {"ingest": rss, "fanout": rss * 2, "eventlog": rss * 3},
            "lag": {"fanout": lag, "eventlog-sink": 0}}


def test_each_series_is_a_line_through_every_sample() -> None:
    image = ElementTree.fromstring(svg([sample(0, 100, 5), sample(1, 110, 0), sample(2, 105, 9)]))
    lines = [p for p in image.iter(f"{SVG}polyline") if p.get("stroke") != "black"]
    assert len(lines) == 5  # 3 services, then the 2 consumer groups in name order
    assert all(len(line.get("points", "").split()) == 3 for line in lines)
    legend = {t.text for t in image.iter(f"{SVG}text")}
    assert {"ingest", "fanout", "eventlog", "eventlog-sink"} <= legend
    # The largest value of a panel sits at its top, 0 at its bottom.
    eventlog = [tuple(map(float, p.split(","))) for p in lines[2].get("points", "").split()]
    fanout_lag = [tuple(map(float, p.split(","))) for p in lines[4].get("points", "").split()]
    assert eventlog[1][1] < eventlog[2][1] < eventlog[0][1]
    assert fanout_lag[1][1] - fanout_lag[2][1] == PANEL_HEIGHT
