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


def svg_line_chart(points: Sequence[Point], width: int = 480, height: int = 140, *, title: str = "",
                   unit: str = "", x_range: tuple[float, float] | None = None,
                   y_max: float | None = None) -> str:
    """One line over ``points`` (sorted by x here), as an ``<svg>`` element.

    The y axis starts at 0 and ends at ``y_max`` (e.g. 100 for a percentage) or at the largest
    value plus 10 % (1 when every value is 0); the x axis spans ``x_range`` (the chart's window)
    or the points' own span. Non-finite values are dropped. No points: the frame and "no data";
    one point: a dot (a line needs two)."""
    pts = sorted((float(x), float(y)) for x, y in points if math.isfinite(x) and math.isfinite(y))
    label = html.escape(f"{title} ({unit})" if unit and title else title or unit)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{label}">',
           f'<rect x="{PAD_LEFT}" y="{PAD_TOP}" width="{width - PAD_LEFT - PAD_RIGHT}" '
           f'height="{height - PAD_TOP - PAD_BOTTOM}" fill="none" stroke="#ccc"/>']
    if label:
        out.append(f'<text x="{PAD_LEFT}" y="12" font-size="11">{label}</text>')
    if not pts:
        out.append(f'<text x="{width // 2}" y="{height // 2}" font-size="11" text-anchor="middle">no data</text>')
        out.append("</svg>")
        return "".join(out)
    x0, x1 = x_range if x_range is not None else (pts[0][0], pts[-1][0])
    top = y_max if y_max is not None else max(p[1] for p in pts) * 1.1
    top = top if top > 0 else 1.0
    plot_w, plot_h = width - PAD_LEFT - PAD_RIGHT, height - PAD_TOP - PAD_BOTTOM

    def sx(x: float) -> float:
        return PAD_LEFT + (plot_w / 2 if x1 <= x0 else (x - x0) / (x1 - x0) * plot_w)

    def sy(y: float) -> float:
        return PAD_TOP + plot_h - min(max(y, 0.0), top) / top * plot_h

    out.append(f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + 4}" font-size="10" text-anchor="end">{_fmt(top)}</text>')
    out.append(f'<text x="{PAD_LEFT - 4}" y="{height - PAD_BOTTOM}" font-size="10" text-anchor="end">0</text>')
    coords = [(sx(x), sy(y)) for x, y in pts]
    if len(coords) == 1:
        out.append(f'<circle cx="{_fmt(coords[0][0])}" cy="{_fmt(coords[0][1])}" r="2.5" fill="#1f6feb"/>')
    else:
        line = " ".join(f"{_fmt(a)},{_fmt(b)}" for a, b in coords)
        out.append(f'<polyline fill="none" stroke="#1f6feb" stroke-width="1.5" points="{line}"/>')
    out.append(f'<text x="{width - PAD_RIGHT}" y="{height - 4}" font-size="10" text-anchor="end">'
               f'last {_fmt(pts[-1][1])} {html.escape(unit)}</text>')
    out.append("</svg>")
    return "".join(out)
