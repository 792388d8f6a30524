"""The capacity report's charts: history, the fitted model's path with its 95 % interval, and the
limit line, as a PNG (matplotlib, Agg backend: no display, imported only when a chart is drawn)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from bvh_ops.capacity.forecast import Forecast
from bvh_ops.pngchart import figure, finish

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chart_png(fc: Forecast, history: Sequence[tuple[date, float]], limit: float | None, *, title: str,
              unit: str = "", ahead_days: int = 120) -> bytes:
    """One resource's chart; the forecast is drawn ``ahead_days`` past the last sample (further
    when the expected crossing of the limit is later, up to the whole path)."""
    fig, ax = figure()
    if history:
        ax.plot([d for d, _ in history], [v for _, v in history], color="#1f6feb", lw=1.4, label="history")
    path = list(fc.path)
    if path:
        reach = ahead_days
        if fc.days_until and fc.days_until.expected is not None:
            reach = max(reach, int(fc.days_until.expected) + 14)
        path = path[:reach]
        days = [p.day for p in path]
        ax.plot(days, [p.expected for p in path], color="#bf8700", lw=1.2, ls="--", label=f"forecast ({fc.model})")
        ax.fill_between(days, [p.low for p in path], [p.high for p in path], color="#bf8700", alpha=0.18,
                        label="95 % interval")
    if limit is not None:
        ax.axhline(limit, color="#cf222e", lw=1.0, label="limit")
    return finish(fig, ax, title, unit)
