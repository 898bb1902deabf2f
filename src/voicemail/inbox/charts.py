"""Small bar charts drawn on the server as SVG: no script, no external library, and readable
by a screen reader (``role="img"``, a title and a description; the page adds a data table).

Every bar carries its figures as ``data-`` attributes, so tests (and anyone scraping the
page) read the numbers rather than pixel heights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from markupsafe import Markup, escape

WIDTH = 640
HEIGHT = 260
LEFT = 56  # room for the y tick labels and axis title
RIGHT = 12
TOP = 16
BOTTOM = 56  # room for the day labels and the x axis title


@dataclass(frozen=True)
class Bar:
    day: date
    value: float | None  # None: no figure that day (drawn as an empty slot)
    tooltip: str  # what the bar says to a pointer user and screen reader
    data: dict[str, str] = field(default_factory=dict)  # extra data- attributes


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at or above ``value`` (at least 1): a round axis top."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)


def _number(value: float) -> str:
    return f"{value:g}"


def bar_chart(
    *,
    chart_id: str,
    title: str,
    description: str,
    bars: Sequence[Bar],
    y_label: str,
    x_label: str = "Day (UTC)",
) -> Markup:
    """An SVG bar chart, one bar per day, with axis titles and three y ticks."""
    top_value = nice_ceiling(max((bar.value or 0.0 for bar in bars), default=0.0))
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(bars))
    base_y = TOP + plot_h
    parts = [
        f'<svg id="{escape(chart_id)}" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-desc">{escape(description)}</desc>',
    ]
    for tick in (0.0, top_value / 2, top_value):
        y = base_y - plot_h * tick / top_value
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(_number(tick))}</text>"
        )
    for index, bar in enumerate(bars):
        value = bar.value or 0.0
        height = plot_h * value / top_value
        x = LEFT + index * slot + slot * 0.15
        attrs = "".join(f' data-{escape(name)}="{escape(text)}"' for name, text in bar.data.items())
        parts.append(
            f'<rect class="bar" data-day="{bar.day.isoformat()}"{attrs} x="{x:.1f}" '
            f'y="{base_y - height:.1f}" width="{slot * 0.7:.1f}" height="{height:.1f}">'
            f"<title>{escape(bar.tooltip)}</title></rect>"
        )
        # Every other day is labelled so the labels never overlap on 14 bars.
        if index % 2 == (len(bars) - 1) % 2:
            parts.append(
                f'<text class="tick" x="{x + slot * 0.35:.1f}" y="{base_y + 16}" '
                f'text-anchor="middle">{bar.day.strftime("%d %b")}</text>'
            )
    parts.append(
        f'<line class="axis" x1="{LEFT}" y1="{base_y}" x2="{WIDTH - RIGHT}" y2="{base_y}"/>'
        f'<text class="axis-title" x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 10}" '
        f'text-anchor="middle">{escape(x_label)}</text>'
        f'<text class="axis-title" x="14" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {TOP + plot_h / 2:.1f})">{escape(y_label)}</text>'
        "</svg>"
    )
    return Markup("".join(parts))  # noqa: S704 (every interpolated value is escaped above)
