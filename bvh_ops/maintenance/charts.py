"""The weekly performance report's charts (matplotlib, Agg backend, imported only when drawn):
each monitored endpoint's p95 per day over four weeks against the response-time threshold, and
the most bloated tables' estimated bloat at each weekly snapshot over twelve weeks."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from bvh_ops.pngchart import figure, finish

ENDPOINTS_TITLE = "Endpoint p95 per day (ms)"
BLOAT_TITLE = "Estimated table bloat per snapshot (MiB)"


def label(name: str) -> str:
    """A name as a legend shows it: matplotlib reads $…$ as mathematics (a lone $ fails the
    whole chart) and leaves out a label starting with an underscore."""
    text = name.replace("$", r"\$")
    return "\u200b" + text if text.startswith("_") else text


def charts(doc: dict[str, Any], response_time_ms: float | None = None) -> dict[str, bytes]:
    """Title -> PNG for each chart the report has data for (none: an empty dict)."""
    out = {}
    series = doc.get("series") or {}
    p95 = series.get("p95_by_day") or {}
    if p95:
        fig, ax = figure()
        for name, points in sorted(p95.items()):
            ax.plot([date.fromisoformat(d) for d, _ in points], [v for _, v in points], marker=".", lw=1.3,
                    label=label(name))
        if response_time_ms is not None:
            ax.axhline(response_time_ms, color="#cf222e", lw=1.0, label=f"warning ({response_time_ms:g} ms)")
        ax.set_ylim(bottom=0)
        out[ENDPOINTS_TITLE] = finish(fig, ax, ENDPOINTS_TITLE, "ms")
    bloat = series.get("bloat_by_snapshot") or {}
    if bloat:
        fig, ax = figure()
        for table, points in sorted(bloat.items()):
            ax.plot([datetime.fromisoformat(a) for a, _ in points], [b / 1048576 for _, b in points], marker="o",
                    lw=1.3, label=label(table))
        ax.set_ylim(bottom=0)
        out[BLOAT_TITLE] = finish(fig, ax, BLOAT_TITLE, "MiB")
    return out
