"""The weekly security and performance reports as markdown (Prefect artifacts): findings per
detector and subject, and the slowest endpoints' p50/p95/p99 with a p95-per-hour SVG chart."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from bvh_ops.monitoring.charts import svg_lines_chart

SECURITY = ("security", "fraud")


def security_markdown(doc: dict[str, Any]) -> str:
    rows = [f for f in doc["findings"] if f["category"] in SECURITY]
    lines = [f"# Weekly security report {doc['since'][:10]} .. {doc['now'][:10]}", "",
             f"{doc['records']} records analysed, {len(rows)} findings.", "",
             "| severity | detector | subject | count | first seen | last seen | detail |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {f['severity']} | {f['detector']} | {f['subject']} | {f['count']} | {f['first_seen'][:19]} | "
              f"{f['last_seen'][:19]} | {f['detail']} |" for f in sorted(rows, key=lambda f: (f['severity'], f['detector']))]
    lines += ["", *[f"- skipped {s['detector']}: {s['reason']}" for s in doc["skipped"]]]
    return "\n".join(lines)


def performance_markdown(doc: dict[str, Any], top: int = 10) -> str:
    perf = doc["performance"]
    worst: dict[str, dict] = {}
    for row in perf:
        if row["endpoint"] not in worst or (row["p95"] or 0) > (worst[row["endpoint"]]["p95"] or 0):
            worst[row["endpoint"]] = row
    lines = [f"# Weekly performance report {doc['since'][:10]} .. {doc['now'][:10]}", "",
             "Slowest endpoints (worst hour by p95, ms):", "",
             "| endpoint | hour | requests | p50 | p95 | p99 | max |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['endpoint']} | {r['hour'][:13]} | {r['count']} | {r['p50']} | {r['p95']} | {r['p99']} | {r['max']} |"
              for r in sorted(worst.values(), key=lambda r: -(r["p95"] or 0))[:top]]
    found = [f for f in doc["findings"] if f["category"] == "performance"]
    lines += ["", *[f"- **{f['detector']}** {f['subject']}: {f['detail']}" for f in found]]
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in perf:
        if r["endpoint"] in {e for e, _ in sorted(worst.items(), key=lambda kv: -(kv[1]["p95"] or 0))[:5]}:
            series[r["endpoint"]].append((datetime.fromisoformat(r["hour"]).timestamp(), r["p95"] or 0.0))
    if series:
        chart = svg_lines_chart([(name, sorted(points)) for name, points in sorted(series.items())],
                                title="p95 per hour (ms)")
        lines += ["", chart]
    return "\n".join(lines)
