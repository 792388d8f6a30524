"""The capacity report: per resource the current use, its limit, growth per month, days until
the limit (low/expected/high), a status (ok | warning | critical | unpredictable) with the
reason, the model and how good the forecasts made one and three months ago turned out (MAPE).

``build_report`` is pure (history, limits, earlier forecasts and ``today`` in); the rest reads
and writes the ops database, renders markdown, and turns the report into alerting findings.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from bvh_ops.capacity.forecast import Forecast, forecast, score, status
from bvh_ops.config import CapacitySettings, Settings

# Series kept only to compute others' limits or values; not resources of their own.
HELPERS = ("disk.total:", "connections.max", "wal.position", "connections.peak_percent")
KEEP_FORECAST_DAYS = 95   # of each path: enough to score at three months
CHARTED = ("disk.used:", "repo.bytes", "db.bytes", "connections.peak", "cpu.peak", "memory.peak", "wal.bytes_per_day")

History = Mapping[str, tuple[str, Sequence[tuple[date, float]]]]   # series -> (unit, [(day, value)])


@dataclass(frozen=True)
class Limit:
    value: float
    why: str


# -- reading ------------------------------------------------------------------------------------

def load_history(ops: psycopg.Connection, until: date) -> dict[str, tuple[str, list[tuple[date, float]]]]:
    rows = ops.execute("SELECT series, unit, day, value FROM ops.capacity_samples WHERE day <= %s "
                       "ORDER BY series, day", (until,)).fetchall()
    out: dict[str, tuple[str, list[tuple[date, float]]]] = {}
    for series, unit, day, value in rows:
        out.setdefault(series, (unit, []))[1].append((day, value))
    return out


def load_made(ops: psycopg.Connection, until: date) -> dict[str, list[tuple[date, date, float]]]:
    rows = ops.execute("SELECT series, made_on, target_day, expected FROM ops.capacity_forecasts "
                       "WHERE made_on < %s AND target_day <= %s", (until, until)).fetchall()
    out: dict[str, list[tuple[date, date, float]]] = defaultdict(list)
    for series, made_on, target, expected in rows:
        out[series].append((made_on, target, expected))
    return out


def save_forecasts(ops: psycopg.Connection, made_on: date, forecasts: Sequence[Forecast]) -> int:
    """Keep the first KEEP_FORECAST_DAYS of each predictable forecast's path (replacing a
    forecast made the same day), so later runs can score it."""
    n = 0
    with ops.transaction():
        ops.execute("DELETE FROM ops.capacity_forecasts WHERE made_on = %s", (made_on,))
        for fc in forecasts:
            if not fc.predictable or not fc.path:
                continue
            with ops.cursor() as cur:
                cur.executemany("INSERT INTO ops.capacity_forecasts (made_on, series, target_day, model, expected, low, "
                                "high) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                                [(made_on, fc.series, p.day, fc.model, p.expected, p.low, p.high)
                                 for p in fc.path[:KEEP_FORECAST_DAYS]])
                n += cur.rowcount
    return n


# -- limits -------------------------------------------------------------------------------------

def limits(history: History, cfg: CapacitySettings, settings: Settings) -> dict[str, Limit]:
    """Each resource's limit from the configuration and the newest helper samples."""
    out: dict[str, Limit] = {}
    for series, (_, points) in history.items():
        if series.startswith("disk.total:") and points:
            mount = series.removeprefix("disk.total:")
            out[f"disk.used:{mount}"] = Limit(points[-1][1] * cfg.disk_fill_percent / 100,
                                              f"{cfg.disk_fill_percent:g} % of {mount}")
    if "connections.max" in history and history["connections.max"][1]:
        maximum = history["connections.max"][1][-1][1]
        out["connections.peak"] = Limit(maximum * cfg.connections_limit_percent / 100,
                                        f"{cfg.connections_limit_percent:g} % of max_connections {maximum:g}")
    if cfg.repository_quota_bytes:
        out["repo.bytes"] = Limit(float(cfg.repository_quota_bytes), "repository_quota_bytes")
    if cfg.database_size_limit_bytes:
        out["db.bytes"] = Limit(float(cfg.database_size_limit_bytes), "database_size_limit_bytes")
    cpu = cfg.cpu_limit_percent or settings.cpu_warning_percent
    mem = cfg.memory_limit_percent or settings.memory_warning_percent
    out["cpu.peak"] = Limit(cpu, "capacity.cpu_limit_percent" if cfg.cpu_limit_percent else "cpu_warning_percent")
    out["memory.peak"] = Limit(mem, "capacity.memory_limit_percent" if cfg.memory_limit_percent
                               else "memory_warning_percent")
    return out


# -- the report ---------------------------------------------------------------------------------

def build_report(history: History, lims: Mapping[str, Limit], made: Mapping[str, Sequence[tuple[date, date, float]]],
                 now: datetime, cfg: CapacitySettings) -> tuple[dict[str, Any], list[Forecast]]:
    """The report document and the forecasts behind it (pure)."""
    today = now.astimezone(UTC).date()
    resources, forecasts = [], []
    for series in sorted(history):
        if series.startswith(HELPERS):
            continue
        unit, points = history[series]
        limit = lims.get(series)
        fc = forecast(series, points, today, limit=limit.value if limit else None, horizon_days=cfg.horizon_days)
        forecasts.append(fc)
        actual = dict(points)
        scores = {"1m": score(made.get(series, ()), actual, today, 1), "3m": score(made.get(series, ()), actual, today, 3)}
        resources.append({
            "name": series, "unit": unit, "current": fc.current,
            "limit": limit.value if limit else None, "limit_from": limit.why if limit else None,
            "growth_per_month": None if fc.growth_per_month is None else round(fc.growth_per_month, 3),
            "days_until": fc.days_until.to_json() if fc.days_until else None,
            "status": status(fc, limit.value if limit else None, warning_days=cfg.warning_days,
                             critical_days=cfg.critical_days),
            "reason": fc.reason, "model": fc.model,
            "backtest_mape": None if fc.backtest_mape is None else round(fc.backtest_mape, 2),
            "forecast_mape": {k: (None if v is None else round(v, 2)) for k, v in scores.items()},
            "history_days": len(points), "used_from": fc.used_from.isoformat() if fc.used_from else None,
            "notes": list(fc.notes),
        })
    doc = {"generated_at": now.astimezone(UTC).isoformat(), "resources": resources}
    doc["recommendations"] = recommendations(doc, today)
    return doc, forecasts


def human(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "bytes":
        v = float(value)
        for suffix in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
            if abs(v) < 1024 or suffix == "PiB":
                return f"{v:.1f} {suffix}" if suffix != "B" else f"{v:.0f} B"
            v /= 1024
    return f"{value:,.1f} {unit}".rstrip()


def recommendations(doc: Mapping[str, Any], today: date) -> list[str]:
    """What to do, one line per resource that needs it (pure)."""
    out = []
    by_name = {r["name"]: r for r in doc["resources"]}
    for r in doc["resources"]:
        until = r["days_until"]
        if r["limit"] is None or r["status"] == "ok" or until is None and r["status"] != "unpredictable":
            continue
        if r["status"] == "unpredictable":
            out.append(f"{r['name']}: no forecast ({r['reason']}); watch it by hand against {human(r['limit'], r['unit'])}")
            continue
        when = today + timedelta(days=int(until["low"] or 0))
        growth = r["growth_per_month"] or 0
        year = human(max(growth * 12, 0) + max((r["current"] or 0) - r["limit"], 0), r["unit"])
        if r["name"].startswith("disk.used:"):
            out.append(f"{r['name']}: grow the volume by {year} (a year of growth) before {when:%Y-%m-%d}")
        elif r["name"] == "connections.peak":
            out.append(f"connections: raise max_connections or put a pooler (PgBouncer) in front before {when:%Y-%m-%d}")
        elif r["name"] == "repo.bytes":
            fams = sorted(((n.removeprefix("repo.bytes:"), x["growth_per_month"] or 0) for n, x in by_name.items()
                           if n.startswith("repo.bytes:")), key=lambda kv: -kv[1])
            top = f": {fams[0][0]} dominate growth ({human(fams[0][1], 'bytes')}/month), check their retention" if fams else ""
            out.append(f"repository: raise the quota by {year} before {when:%Y-%m-%d}{top}")
        else:
            out.append(f"{r['name']}: reaches {human(r['limit'], r['unit'])} around {when:%Y-%m-%d}: add capacity or "
                       "lower the load")
    return out


def markdown(doc: Mapping[str, Any], charts: Mapping[str, bytes] | None = None) -> str:
    """The report as markdown: a table of every resource, the recommendations, then the charts
    (PNG as data: URIs, which Prefect's markdown artifacts render)."""
    lines = [f"# Capacity report ({doc['generated_at'][:10]})", ""]
    counts = defaultdict(int)
    for r in doc["resources"]:
        counts[r["status"]] += 1
    lines += [", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no history yet: run `bvh-ops capacity "
              "collect`", ""]
    lines += ["| resource | current | limit | growth/month | days until (low-expected-high) | status | model | "
              "backtest MAPE | MAPE 1m / 3m | reason |", "|---|---|---|---|---|---|---|---|---|---|"]
    order = {"critical": 0, "warning": 1, "unpredictable": 2, "ok": 3}
    for r in sorted(doc["resources"], key=lambda r: (order[r["status"]], r["limit"] is None, r["name"])):
        u = r["days_until"]
        span = "-" if u is None else "-".join("…" if u[k] is None else f"{u[k]:.0f}" for k in ("low", "expected", "high"))
        m = r["forecast_mape"]
        lines.append(f"| {r['name']} | {human(r['current'], r['unit'])} | {human(r['limit'], r['unit'])} | "
                     f"{human(r['growth_per_month'], r['unit'])} | {span} | **{r['status']}** | {r['model'] or '-'} | "
                     f"{_pct(r['backtest_mape'])} | "
                     f"{_pct(m['1m'])} / {_pct(m['3m'])} | {r['reason'].replace('|', '/')} |")
    if doc.get("recommendations"):
        lines += ["", "## Recommendations", ""] + [f"- {t}" for t in doc["recommendations"]]
    for name, png in (charts or {}).items():
        lines += ["", f"### {name}", "", f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})"]
    return "\n".join(lines) + "\n"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} %"


def charts(doc: Mapping[str, Any], forecasts: Sequence[Forecast], history: History) -> dict[str, bytes]:
    """PNG charts of the resources that have a limit or matter most (CHARTED)."""
    from bvh_ops.capacity.charts import chart_png

    by = {fc.series: fc for fc in forecasts}
    out = {}
    for r in doc["resources"]:
        if not r["name"].startswith(CHARTED) or r["name"].startswith("repo.bytes:"):
            continue
        unit, points = history[r["name"]]
        out[r["name"]] = chart_png(by[r["name"]], points, r["limit"], title=f"{r['name']}: {r['status']}", unit=unit)
    return out


def findings(doc: Mapping[str, Any]) -> list:
    """Resources with less than warning_days to their limit (the status says so) as alerting
    findings: warning, or critical under critical_days."""
    from bvh_ops.alerting.findings import Finding
    from bvh_ops.alerting.rules import Severity

    out = []
    for r in doc["resources"]:
        if r["status"] not in ("warning", "critical") or r["limit"] is None:
            continue
        sev = Severity.CRITICAL if r["status"] == "critical" else Severity.WARNING
        key = "".join(c if c.isalnum() or c in "_.:@/-" else "_" for c in r["name"])[:200]
        out.append(Finding(key, sev, f"capacity: {r['name']} reaches its limit soon",
                           f"{r['reason']}; current {human(r['current'], r['unit'])}, limit "
                           f"{human(r['limit'], r['unit'])} ({r['limit_from']})"))
    return out


def report_parts(settings: Settings, ops: psycopg.Connection, now: datetime
                 ) -> tuple[dict[str, Any], list[Forecast], History]:
    """Read the history and the earlier forecasts, forecast: (document, forecasts, history)."""
    today = now.astimezone(UTC).date()
    history = load_history(ops, today)
    doc, forecasts = build_report(history, limits(history, settings.capacity, settings), load_made(ops, today), now,
                                  settings.capacity)
    return doc, forecasts, history


def run_report(settings: Settings, ops: psycopg.Connection, *, now: datetime | None = None, save: bool = True,
               with_charts: bool = True) -> tuple[dict[str, Any], str]:
    """Forecast, keep the forecasts (``save``), render: (document, markdown with the charts)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    doc, forecasts, history = report_parts(settings, ops, now)
    if save:
        save_forecasts(ops, now.date(), forecasts)
    pngs = charts(doc, forecasts, history) if with_charts else {}
    return doc, markdown(doc, pngs)
