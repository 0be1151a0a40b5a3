"""A line chart as SVG, written by hand (the bench has no plotting dependency): one panel per measure, x on a log
scale, one line per series."""

from __future__ import annotations

import math
from html import escape

WIDTH, HEIGHT, MARGIN = 420, 260, 56
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def panel(title: str, xs: list[float], series: dict[str, list[float]], x_label: str, goal: float | None = None) -> str:
    """One chart: `series` label -> a y for each x; `goal`, if any, as a dashed line."""
    top = max([*(y for ys in series.values() for y in ys), goal or 0.0]) * 1.1 or 1.0
    lo, hi = math.log10(min(xs)), math.log10(max(xs))

    def at(x: float, y: float) -> tuple[float, float]:
        fx = (math.log10(x) - lo) / ((hi - lo) or 1.0)
        return MARGIN + fx * (WIDTH - 2 * MARGIN), HEIGHT - MARGIN - y / top * (HEIGHT - 2 * MARGIN)

    parts = [f'<text x="{WIDTH / 2}" y="20" text-anchor="middle" font-weight="bold">{escape(title)}</text>']
    x0, y0 = at(min(xs), 0)
    x1, y1 = at(max(xs), top)
    parts.append(f'<path d="M{x0},{y1} V{y0} H{x1}" stroke="black" fill="none"/>')
    for x in xs:
        px, _ = at(x, 0)
        parts.append(f'<text x="{px}" y="{y0 + 16}" text-anchor="middle">{x:g}</text>')
    for fraction in (0.0, 0.5, 1.0):
        _, py = at(min(xs), top * fraction)
        parts.append(f'<text x="{x0 - 6}" y="{py + 4}" text-anchor="end">{top * fraction:,.0f}</text>')
    parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT - 14}" text-anchor="middle">{escape(x_label)}</text>')
    if goal is not None:
        _, gy = at(min(xs), goal)
        parts.append(f'<path d="M{x0},{gy} H{x1}" stroke="grey" stroke-dasharray="4 3" fill="none"/>')
        parts.append(f'<text x="{x1}" y="{gy - 4}" text-anchor="end" fill="grey">goal {goal:,g}</text>')
    for index, (label, ys) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        points = " ".join(f"{px:.1f},{py:.1f}" for px, py in (at(x, y) for x, y in zip(xs, ys, strict=True)))
        parts.append(f'<polyline points="{points}" stroke="{colour}" fill="none" stroke-width="2"/>')
        parts.append(f'<text x="{x1 + 4}" y="{40 + 16 * index}" fill="{colour}">{escape(label)}</text>')
    return "\n".join(parts)


def figure(panels: list[str]) -> str:
    """Panels side by side, as one SVG document."""
    body = "".join(f'<g transform="translate({i * (WIDTH + 40)},0)">{p}</g>' for i, p in enumerate(panels))
    width = len(panels) * (WIDTH + 40) + 40
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{HEIGHT}" font-family="sans-serif" '
        f'font-size="11"><rect width="100%" height="100%" fill="white"/>{body}</svg>\n'
    )
