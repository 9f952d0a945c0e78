"""The soak's curves as an SVG image: each service's resident memory, and the consumer
lag, per minute of the run (``results.soak.samples`` of ``bench-results/latest.json``).

``python -m benchmarks.soak_plot [latest.json] > docs/benchmarks/soak.svg``; plain SVG
written here, so the docs need no plotting library.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.soak import SERVICES

WIDTH, PANEL_HEIGHT, MARGIN = 720, 200, 50
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def svg(samples: list[dict[str, Any]]) -> str:
    """Two panels over the run's minutes: RSS (MiB) per service, and lag per consumer group."""
    minutes = [s["minute"] for s in samples]
    rss = {name: [s["rss_mb"][name] for s in samples] for name in SERVICES}
    groups = sorted({group for s in samples for group in s["lag"]})
    lag = {group: [s["lag"].get(group, 0) for s in samples] for group in groups}
    height = 2 * PANEL_HEIGHT + 3 * MARGIN
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
             'font-family="sans-serif" font-size="12">',
             f'<rect width="{WIDTH}" height="{height}" fill="white"/>']
    parts += _panel(minutes, rss, "resident memory, MiB", MARGIN)
    parts += _panel(minutes, lag, "consumer lag, records", 2 * MARGIN + PANEL_HEIGHT)
    parts.append("</svg>")
    return "\n".join(parts)


def _panel(xs: list[float], series: dict[str, list[float]], title: str, top: int) -> list[str]:
    """One panel: axes from 0 to the largest value, a polyline and a legend entry a series."""
    left, right = MARGIN + 10, WIDTH - 130
    x_max = max(xs) or 1.0
    y_max = max((max(values) for values in series.values()), default=0) or 1.0

    def point(x: float, y: float) -> str:
        return (f"{left + (right - left) * x / x_max:.1f},"
                f"{top + PANEL_HEIGHT - PANEL_HEIGHT * y / y_max:.1f}")

    bottom = top + PANEL_HEIGHT
    parts = [f'<text x="{left}" y="{top - 8}" font-weight="bold">{title}</text>',
             f'<polyline points="{left},{top} {left},{bottom} {right},{bottom}" '
             'fill="none" stroke="black"/>',
             f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{y_max:g}</text>',
             f'<text x="{left - 6}" y="{bottom}" text-anchor="end">0</text>',
             f'<text x="{right}" y="{bottom + 16}" text-anchor="end">{x_max:g} min</text>']
    for n, (name, values) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        points = " ".join(point(x, y) for x, y in zip(xs, values, strict=True))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" '
                     'stroke-width="2"/>')
        parts.append(f'<text x="{right + 10}" y="{top + 14 + 16 * n}" fill="{colour}">'
                     f'{name}</text>')
    return parts


if __name__ == "__main__":
    latest = Path(sys.argv[1] if len(sys.argv) > 1 else "bench-results/latest.json")
    print(svg(json.loads(latest.read_text())["results"]["soak"]["samples"]))
