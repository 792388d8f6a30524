"""Server-side charts for the dashboard: a pure function from points to an inline SVG string.

No JavaScript library and no CDN: the page works offline and a headless browser (or ``curl``)
sees the chart in the HTML itself. Every caller-supplied text is escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

Point = tuple[float, float]  # (x: Unix seconds, y: the value)

PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 44, 8, 18, 18


def _fmt(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".") if math.isfinite(v) else "0"


Series = tuple[str, Sequence[Point]]  # (name shown in the legend, its points)
COLORS = ("#1f6feb", "#bf8700", "#cf222e", "#1a7f37", "#8250df")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by linear interpolation between closest ranks (as
    PostgreSQL's percentile_cont, which the hourly rollup's p95 uses). ``values`` must not be empty."""
    s = sorted(values)
    rank = q * (len(s) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (rank - lo)


def bucket_stats(points: Sequence[Point], bucket_seconds: float) -> list[tuple[float, float, float, float]]:
    """(bucket start, avg, p95, p99) per ``bucket_seconds`` bucket of ``points`` (x in Unix
    seconds, buckets aligned to multiples of ``bucket_seconds``), oldest first; buckets without a
    finite value are left out."""
    if bucket_seconds <= 0:
        raise ValueError("bucket_seconds must be positive")
    buckets: dict[float, list[float]] = {}
    for x, y in points:
        x, y = float(x), float(y)
        if math.isfinite(x) and math.isfinite(y):
            buckets.setdefault(math.floor(x / bucket_seconds) * bucket_seconds, []).append(y)
    return [(t, sum(v) / len(v), percentile(v, 0.95), percentile(v, 0.99)) for t, v in sorted(buckets.items())]


def svg_line_chart(points: Sequence[Point], width: int = 480, height: int = 140, *, title: str = "",
                   unit: str = "", x_range: tuple[float, float] | None = None,
                   y_max: float | None = None) -> str:
    """One line over ``points`` (sorted by x here), as an ``<svg>`` element.

    The y axis starts at 0 and ends at ``y_max`` (e.g. 100 for a percentage) or at the largest
    value plus 10 % (1 when every value is 0); the x axis spans ``x_range`` (the chart's window)
    or the points' own span. Non-finite values are dropped. No points: the frame and "no data";
    one point: a dot (a line needs two)."""
    return svg_lines_chart([("", points)], width, height, title=title, unit=unit, x_range=x_range, y_max=y_max)


def svg_lines_chart(series: Sequence[Series], width: int = 480, height: int = 140, *, title: str = "",
                    unit: str = "", x_range: tuple[float, float] | None = None,
                    y_max: float | None = None) -> str:
    """Several named lines on one axis (as svg_line_chart; the axis fits every series), each in
    its colour, with a legend of the names and each series' last value. One unnamed series is
    svg_line_chart's chart exactly."""
    lines = [(name, sorted((float(x), float(y)) for x, y in pts if math.isfinite(x) and math.isfinite(y)))
             for name, pts in series]
    every = [p for _, pts in lines for p in pts]
    label = html.escape(f"{title} ({unit})" if unit and title else title or unit)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{label}">',
           f'<rect x="{PAD_LEFT}" y="{PAD_TOP}" width="{width - PAD_LEFT - PAD_RIGHT}" '
           f'height="{height - PAD_TOP - PAD_BOTTOM}" fill="none" stroke="#ccc"/>']
    if label:
        out.append(f'<text x="{PAD_LEFT}" y="12" font-size="11">{label}</text>')
    if not every:
        out.append(f'<text x="{width // 2}" y="{height // 2}" font-size="11" text-anchor="middle">no data</text>')
        out.append("</svg>")
        return "".join(out)
    xs = sorted(p[0] for p in every)
    x0, x1 = x_range if x_range is not None else (xs[0], xs[-1])
    top = y_max if y_max is not None else max(p[1] for p in every) * 1.1
    top = top if top > 0 else 1.0
    plot_w, plot_h = width - PAD_LEFT - PAD_RIGHT, height - PAD_TOP - PAD_BOTTOM

    def sx(x: float) -> float:
        return PAD_LEFT + (plot_w / 2 if x1 <= x0 else (x - x0) / (x1 - x0) * plot_w)

    def sy(y: float) -> float:
        return PAD_TOP + plot_h - min(max(y, 0.0), top) / top * plot_h

    out.append(f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + 4}" font-size="10" text-anchor="end">{_fmt(top)}</text>')
    out.append(f'<text x="{PAD_LEFT - 4}" y="{height - PAD_BOTTOM}" font-size="10" text-anchor="end">0</text>')
    legend = []
    for i, (name, pts) in enumerate(lines):
        color = COLORS[i % len(COLORS)]
        coords = [(sx(x), sy(y)) for x, y in pts]
        if len(coords) == 1:
            out.append(f'<circle cx="{_fmt(coords[0][0])}" cy="{_fmt(coords[0][1])}" r="2.5" fill="{color}"/>')
        elif coords:
            line = " ".join(f"{_fmt(a)},{_fmt(b)}" for a, b in coords)
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{line}"/>')
        if name:
            last = f" {_fmt(pts[-1][1])}" if pts else " –"
            legend.append(f'<tspan fill="{color}">{html.escape(name)}{last}</tspan>')
    if legend:
        out.append(f'<text x="{width - PAD_RIGHT}" y="{height - 4}" font-size="10" text-anchor="end">'
                   + " ".join(legend) + f" {html.escape(unit)}</text>")
    else:
        out.append(f'<text x="{width - PAD_RIGHT}" y="{height - 4}" font-size="10" text-anchor="end">'
                   f'last {_fmt(next(pts for _, pts in lines if pts)[-1][1])} {html.escape(unit)}</text>')
    out.append("</svg>")
    return "".join(out)
