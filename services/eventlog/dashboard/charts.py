"""Server-side SVG charts: no chart library, no script, nothing fetched by the browser.

Each chart is a ``viewBox``-scaled SVG, so it shrinks with the page on a phone. Only
numbers and fixed labels go into the markup; the one free text (the title) is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 28, 28


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 × 10^n at or above ``value`` (an axis maximum)."""
    if value <= 0:
        return 1.0
    magnitude = 1.0
    while magnitude * 10 <= value:
        magnitude *= 10
    while magnitude > value:
        magnitude /= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def _frame(title: str, top: float, unit: str, minutes: Sequence[datetime]) -> list[str]:
    """Title, horizontal grid lines with their values, and first/last minute labels."""
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [f'<text class="chart-title" x="{LEFT}" y="16">{escape(title)}</text>']
    for i in range(5):
        value = top * i / 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" '
                     f'y2="{y:.1f}"/>')
        label = f"{value:g}{unit}"
        parts.append(f'<text class="axis" x="{LEFT - 4}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{label}</text>')
    if minutes:
        parts.append(f'<text class="axis" x="{LEFT}" y="{HEIGHT - 8}">'
                     f'{minutes[0]:%H:%M}</text>')
        parts.append(f'<text class="axis" x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" '
                     f'text-anchor="end">{minutes[-1]:%H:%M} UTC</text>')
    return parts


def _svg(parts: list[str], label: str) -> Markup:
    body = "".join(parts)
    return Markup(f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
                  f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
                  f"{body}</svg>")


def deliveries_chart(minutes: Sequence[datetime], succeeded: Sequence[int],
                     failed: Sequence[int]) -> Markup:
    """Stacked bars per minute: succeeded (bottom) and failed (top) attempts."""
    top = _nice_ceiling(max((s + f for s, f in zip(succeeded, failed, strict=True)),
                            default=0))
    parts = _frame("Delivery attempts per minute", top, "", minutes)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(minutes), 1)
    for index, (ok, bad) in enumerate(zip(succeeded, failed, strict=True)):
        x = LEFT + index * slot + slot * 0.1
        ok_h, bad_h = plot_h * ok / top, plot_h * bad / top
        base = TOP + plot_h
        if ok:
            parts.append(f'<rect class="ok" x="{x:.1f}" y="{base - ok_h:.1f}" '
                         f'width="{slot * 0.8:.1f}" height="{ok_h:.1f}">'
                         f"<title>{minutes[index]:%H:%M}: {ok} succeeded</title></rect>")
        if bad:
            parts.append(f'<rect class="bad" x="{x:.1f}" y="{base - ok_h - bad_h:.1f}" '
                         f'width="{slot * 0.8:.1f}" height="{bad_h:.1f}">'
                         f"<title>{minutes[index]:%H:%M}: {bad} failed</title></rect>")
    parts.append(f'<text class="legend ok-text" x="{WIDTH - 180}" y="16">■ succeeded</text>'
                 f'<text class="legend bad-text" x="{WIDTH - 80}" y="16">■ failed</text>')
    return _svg(parts, "Delivery attempts per minute, succeeded and failed")


def latency_chart(minutes: Sequence[datetime], lines: dict[str, Sequence[float]],
                  measured: Sequence[bool]) -> Markup:
    """One line per percentile (``{"p50": [...], ...}``), in milliseconds, through the
    minutes that had attempts (``measured``): a quiet minute has no latency, not zero."""
    top = _nice_ceiling(max((max(values, default=0) for values in lines.values()), default=0))
    parts = _frame("Attempt latency (ms)", top, "", minutes)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(minutes), 1)
    for index, (name, values) in enumerate(lines.items()):
        points = " ".join(f"{LEFT + (i + 0.5) * slot:.1f},{TOP + plot_h - plot_h * v / top:.1f}"
                          for i, v in enumerate(values) if measured[i])
        parts.append(f'<polyline class="line line-{index}" points="{points}"/>')
        for i, v in enumerate(values):  # a dot per minute: a lone minute shows too
            if measured[i]:
                parts.append(f'<circle class="dot line-{index}" r="2.5" '
                             f'cx="{LEFT + (i + 0.5) * slot:.1f}" '
                             f'cy="{TOP + plot_h - plot_h * v / top:.1f}">'
                             f"<title>{minutes[i]:%H:%M} {escape(name)}: {v:.1f} ms</title>"
                             "</circle>")
        parts.append(f'<text class="legend line-text-{index}" x="{WIDTH - 200 + index * 66}" '
                     f'y="16">— {escape(name)}</text>')
    return _svg(parts, "Attempt latency percentiles per minute")
