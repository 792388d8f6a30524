"""Uptime/SLA report per service per month, maintenance windows excluded.

``uptime_report`` is pure: it takes per-cycle rows ``(at, service, worst_status)`` — a service's
worst check status in one probe cycle, what ``per_cycle_rows`` reads from ``ops.samples`` — and
counts them with OpsHistory's semantics: critical is down, ok and warning are up, unknown (could
not check) counts neither way; a cycle inside a maintenance window [start, end) is excluded (a
window is platform-wide: it applies to every service). Uptime is up / (up + down); no up or down cycle at all is ``None``, never 100 %.

The longest outage is the longest run of consecutive critical cycles of a service (an up,
unknown or excluded cycle ends it); it lasts from its first critical cycle to the service's next
cycle after it (the first one not seen critical), or to its last critical cycle when none follows.

Raw samples are kept KEEP_DAYS (90) days; the rollups keep per-check counts, not each cycle's
worst status per service, so a month older than the raw samples cannot be reported honestly and
``per_cycle_rows`` refuses it in one line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import psycopg

from bvh_ops.errors import ConfigError, NotFound
from bvh_ops.monitoring.results import Status
from bvh_ops.monitoring.store import KEEP_DAYS, STATUS_OF

DEFAULT_SLA = 99.9
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def parse_month(text: str) -> tuple[datetime, datetime]:
    """'YYYY-MM' -> [first instant, first instant of the next month) in UTC."""
    m = _MONTH.match(text.strip())
    if not m or not 1 <= int(m[2]) <= 12:
        raise ConfigError(f"month '{text}' must be YYYY-MM (e.g. 2026-10)")
    year, month = int(m[1]), int(m[2])
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def previous_month(now: datetime) -> str:
    """The last full calendar month (UTC) before ``now``."""
    first = now.astimezone(UTC).date().replace(day=1)
    return f"{first - timedelta(days=1):%Y-%m}"


def _window_bounds(w: Any) -> tuple[datetime, datetime, str]:
    if isinstance(w, Mapping):
        start, end, desc = w["start"], w["end"], w.get("description", "")
    else:
        start, end, desc = w.start, w.end, getattr(w, "description", "")
    if isinstance(start, str):
        start = datetime.fromisoformat(start)
    if isinstance(end, str):
        end = datetime.fromisoformat(end)
    start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
    end = end.replace(tzinfo=UTC) if end.tzinfo is None else end.astimezone(UTC)
    return start, end, desc or ""


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def uptime_report(per_cycle_rows: Iterable[tuple[datetime, str, Status | str]], month: str,
                  windows: Sequence[Any] = (), sla: float = DEFAULT_SLA) -> dict[str, Any]:
    """The month's report: per service cycles counted (up + down + unknown), up, down, unknown,
    excluded (in a maintenance window), uptime_percent (None without up/down cycles), meets_sla
    (None without an uptime), longest_outage ({cycles, minutes, start} or None); ``sla_met`` is
    False when any service missed the SLA, None when no service's uptime could be measured (no
    samples, every cycle unknown or excluded: not judged, never "met"), else True."""
    start, end = parse_month(month)
    bounds = [_window_bounds(w) for w in windows]
    by_service: dict[str, list[tuple[datetime, Status]]] = {}
    for at, service, status in per_cycle_rows:
        at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
        if start <= at < end:
            by_service.setdefault(service, []).append((at, Status(status)))

    services: dict[str, dict[str, Any]] = {}
    for service in sorted(by_service):
        cycles = sorted(by_service[service], key=lambda r: r[0])
        up = down = unknown = excluded = 0
        best: tuple[int, datetime, datetime] | None = None  # (cycles, first critical, end)
        run_start: datetime | None = None
        run_len = 0

        def close(until: datetime) -> None:
            nonlocal best, run_start, run_len
            if run_start is not None and (best is None or run_len > best[0]):
                best = (run_len, run_start, until)
            run_start, run_len = None, 0

        last_critical: datetime | None = None
        for at, status in cycles:
            if any(ws <= at < we for ws, we, _ in bounds):
                excluded += 1
                close(at)
                continue
            if status is Status.CRITICAL:
                down += 1
                if run_start is None:
                    run_start = at
                run_len += 1
                last_critical = at
                continue
            close(at)
            if status is Status.UNKNOWN:
                unknown += 1
            else:
                up += 1
        if run_start is not None:
            close(last_critical)  # the month ends with the service down: measured to its last cycle
        uptime = None if up + down == 0 else round(100.0 * up / (up + down), 3)
        services[service] = {
            "cycles": up + down + unknown, "up": up, "down": down, "unknown": unknown, "excluded": excluded,
            "uptime_percent": uptime, "meets_sla": None if uptime is None else uptime >= sla,
            "longest_outage": None if best is None else {
                "cycles": best[0], "minutes": round((best[2] - best[1]).total_seconds() / 60, 2),
                "start": _iso(best[1])},
        }
    return {
        "month": month, "from": _iso(start), "until": _iso(end), "sla_percent": sla,
        "maintenance_windows": [{"start": _iso(ws), "end": _iso(we), "description": d}
                                for ws, we, d in bounds if ws < end and we > start],
        "services": services,
        "sla_met": _sla_met([s["meets_sla"] for s in services.values()]),
    }


def _sla_met(meets: list[bool | None]) -> bool | None:
    if False in meets:
        return False
    return True if True in meets else None


def oldest_raw_day(now: datetime, keep_days: int = KEEP_DAYS) -> date:
    """The oldest day whose raw samples retention keeps (store.plan_retention's rule)."""
    cutoff = now.astimezone(UTC) - timedelta(days=keep_days)
    day = cutoff.date()
    return day if datetime.combine(day + timedelta(days=1), time(), UTC) > cutoff else day + timedelta(days=1)


def per_cycle_rows(conn: psycopg.Connection, month: str, now: datetime | None = None
                   ) -> list[tuple[datetime, str, Status]]:
    """Each cycle's worst status per service in ``month`` from the raw samples; a month whose
    raw samples retention has (partly) dropped is refused in one line."""
    start, end = parse_month(month)
    now = now or datetime.now(UTC)
    if start > now:
        raise NotFound(f"month {month} has not begun: nothing to report")
    kept = oldest_raw_day(now)
    if start.date() < kept:
        raise NotFound(f"the raw samples of {month} are gone (kept {KEEP_DAYS} days, from {kept}); the hourly "
                       "and daily rollups keep per-check counts, not each cycle's worst status per service, so "
                       "no honest uptime report can be made for it")
    return cycle_rows(conn, start, end)


def cycle_rows(conn: psycopg.Connection, start: datetime, end: datetime) -> list[tuple[datetime, str, Status]]:
    """Each cycle's worst status per service in [start, end) from the raw samples (no retention
    check: callers asking for old instants check ``oldest_raw_day`` themselves)."""
    rows = conn.execute("SELECT at, service, max(status) FROM ops.samples WHERE at >= %s AND at < %s "
                        "GROUP BY at, service ORDER BY service, at", (start, end)).fetchall()
    return [(at, service, STATUS_OF[worst]) for at, service, worst in rows]


def markdown(doc: Mapping[str, Any]) -> str:
    """The report as a Prefect markdown artifact / terminal table."""
    lines = [f"# Uptime {doc['month']} (SLA {doc['sla_percent']} %)", "",
             "| service | uptime | SLA | cycles | up | down | unknown | excluded | longest outage |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, s in doc["services"].items():
        up = "–" if s["uptime_percent"] is None else f"{s['uptime_percent']} %"
        sla = {True: "met", False: "MISSED", None: "–"}[s["meets_sla"]]
        o = s["longest_outage"]
        outage = "–" if o is None else f"{o['minutes']} min from {o['start']} ({o['cycles']} cycles)"
        lines.append(f"| {name} | {up} | {sla} | {s['cycles']} | {s['up']} | {s['down']} | {s['unknown']} "
                     f"| {s['excluded']} | {outage} |")
    if not doc["services"]:
        lines += ["", "No samples in this month (was `bvh-ops monitor` running?): the SLA is not judged."]
    elif doc["sla_met"] is None:
        lines += ["", "No service's uptime could be measured this month (every cycle unknown or in a maintenance "
                      "window): the SLA is not judged."]
    if doc["maintenance_windows"]:
        lines += ["", "Maintenance windows excluded:"]
        lines += [f"- {w['start']} – {w['end']}: {w['description'] or '(no description)'}"
                  for w in doc["maintenance_windows"]]
    return "\n".join(lines)
