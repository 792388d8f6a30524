"""The runbook's ``HealthDashboard`` (section 5) built from one probe cycle: a pure function, no I/O.

Decisions, so a reader of ``bvh-ops status`` knows what each word means:

- ``systemStatus`` is the cycle's overall status in the runbook's words: ok → ``healthy``,
  warning → ``warning``, **unknown → ``warning``** (a check that could not run is a blind spot,
  not health, and not a proven outage either: the same rule as health-check's exit code 1),
  critical → ``critical``. Services nobody monitors are listed, not counted: the overall covers
  the checks that ran, as health-check's does.
- ``services`` has the runbook's five keys (database, cache, api, frontend, backups) and then any
  other service the checks name (``host``, or a configured one), each ``{status, monitored,
  detail, checks}``. A service's status is the worst of its checks in the checks' own vocabulary
  (ok | warning | unknown | critical). **A service with no checks is ``unknown`` with
  ``monitored: false``** and a detail saying why: not monitored is never healthy.
- ``metrics`` uses SystemMetrics' field names; a number appears only where one was measured,
  otherwise null (never invented). ``metricSources`` names where each came from.
- ``alerts`` is filled by the caller from the ops database (the dashboard and ``bvh-ops status``
  do, where it runs); ``uptime`` likewise. Until then ``notes`` says why each is empty.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from bvh_ops.monitoring.cycle import CycleResult
from bvh_ops.monitoring.database import connections_in_use
from bvh_ops.monitoring.results import Check, Status, worst

SERVICES = ("database", "cache", "api", "frontend", "backups")  # the runbook's HealthDashboard.services
SYSTEM_STATUS = {Status.OK: "healthy", Status.WARNING: "warning", Status.UNKNOWN: "warning",
                 Status.CRITICAL: "critical"}
SYSTEM_METRICS = ("responseTime", "memoryUsage", "cpuUsage", "activeUsers", "databaseConnections", "errorRate",
                  "uptime")
# Only the platform itself knows these (its sessions, its request window, its own availability).
PLATFORM_ONLY = ("activeUsers", "errorRate", "uptime")
PLATFORM_SOURCE = "platform /api/metrics"
NO_HISTORY = "status does not read the sample history yet (bvh-ops monitor records it in the ops database)"
NO_ALERTS = "alert state not read: the ops database is not running (bvh-ops opsdb start; bvh-ops alerts list)"
NOTES = (
    f"alerts: {NO_ALERTS}",
    f"uptime: {NO_HISTORY}; no 24h/7d/30d figure is shown rather than one that was not measured",
)


def dashboard(cycle: CycleResult, *, platform_metrics: Mapping[str, object] | None, history: None) -> dict:
    """The HealthDashboard for ``cycle``. ``platform_metrics`` is the body of the platform's
    ``/api/metrics`` (None when no such endpoint is configured or it did not answer); ``history``
    is the sample history, which does not exist yet (always None)."""
    del history  # reserved: uptime per window comes from ops-database samples once they exist
    services = service_statuses(cycle.checks, cycle.not_monitored)
    metrics, sources = system_metrics(cycle.checks, platform_system_metrics(platform_metrics))
    notes = list(NOTES)
    if platform_metrics is None:
        notes.append("activeUsers, errorRate, uptime: only the platform measures them; no platform "
                     "/api/metrics endpoint is configured or it did not answer, so they are null")
    return {
        "systemStatus": SYSTEM_STATUS[cycle.status],
        "checkedAt": cycle.checked_at.isoformat(),
        "services": services,
        "metrics": metrics,
        "metricSources": sources,
        "alerts": [],
        "uptime": {name: uptime_unavailable() for name in services},
        "notes": notes,
    }


_RANK = {"healthy": 0, "warning": 1, "critical": 2}


def with_alerts(board: dict, alerts: list[dict]) -> dict:
    """``board`` with the ops database's active ``alerts``; its ``systemStatus`` no better than
    the worst firing alert (a firing "data corruption detected" — a finding no probe sees — is
    not "healthy"). Silenced and inhibited alerts do not raise it; a note says when alerts did."""
    board["alerts"] = alerts
    board["notes"] = [n for n in board.get("notes", []) if not n.startswith("alerts:")]
    firing = [a for a in alerts if a.get("state") == "firing" and a.get("severity") in ("warning", "critical")
              and not a.get("silenced") and not a.get("inhibited")]
    worst = max((a["severity"] for a in firing), key=_RANK.__getitem__, default=None)
    if worst is not None and _RANK[worst] > _RANK.get(board["systemStatus"], 0):
        board["systemStatus"] = worst
        names = ", ".join(a["name"] for a in firing if a["severity"] == worst)
        board["notes"].append(f"systemStatus {worst} from {len(firing)} firing alert(s): {names}"[:300])
    return board


def uptime_unavailable() -> dict[str, object]:
    return {"24h": None, "7d": None, "30d": None, "available": False, "reason": NO_HISTORY}


def service_statuses(checks: list[Check], not_monitored: list[str]) -> dict[str, dict[str, object]]:
    """Each service's worst status, a one-line detail and its check names; the runbook's five first."""
    names = list(SERVICES) + [c.service for c in checks if c.service not in SERVICES]
    out: dict[str, dict[str, object]] = {}
    for name in dict.fromkeys(names):
        mine = [c for c in checks if c.service == name]
        if not mine:
            out[name] = {"status": str(Status.UNKNOWN), "monitored": False,
                         "detail": _why_not_monitored(name, not_monitored), "checks": []}
            continue
        status = worst(c.status for c in mine)
        bad = [c for c in mine if c.status is not Status.OK]
        detail = ("; ".join(f"{c.name} {c.status}: {c.detail}" for c in bad) if bad
                  else f"{len(mine)} check(s) ok")
        out[name] = {"status": str(status), "monitored": True, "detail": detail, "checks": [c.name for c in mine]}
    return out


def _why_not_monitored(service: str, not_monitored: list[str]) -> str:
    for entry in not_monitored:  # "cache (cache_url is not set)"
        if entry.startswith(f"{service} ("):
            return f"not monitored: {entry.removeprefix(service + ' ').strip('()')}"
    return f"not monitored: no check has service = \"{service}\" (configure an endpoint for it)"


def platform_system_metrics(body: Mapping[str, object] | None) -> dict[str, float | int]:
    """The SystemMetrics numbers in a platform's ``/api/metrics`` body: its ``system`` object (the
    sample platform), a bare SystemMetrics object, or the runbook's section-10 shape
    (``performance.responseTime.avg``). Non-numbers are dropped, never guessed."""
    if not isinstance(body, Mapping):
        return {}
    source: object = body.get("system") if isinstance(body.get("system"), Mapping) else body
    found = {k: v for k, v in source.items() if k in SYSTEM_METRICS and _number(v)}  # type: ignore[union-attr]
    performance = body.get("performance")
    if "responseTime" not in found and isinstance(performance, Mapping):
        rt = performance.get("responseTime")
        if isinstance(rt, Mapping) and _number(rt.get("avg")):
            found["responseTime"] = rt["avg"]
    return found


def system_metrics(checks: list[Check], platform: Mapping[str, float | int]) -> tuple[dict, dict]:
    """(SystemMetrics with null where nothing measured it, where each number came from).

    responseTime: the platform's own average over its request window where it reports one (what its
    users see), else the mean response time of the ``api`` endpoint checks (what the monitor saw);
    memoryUsage / cpuUsage: the monitor host's (host.memory, host.cpu); databaseConnections: client
    connections counted by database.connections; activeUsers, errorRate, uptime: the platform's only."""
    by_name = {c.name: c for c in checks}
    metrics: dict[str, float | int | None] = dict.fromkeys(SYSTEM_METRICS)
    sources: dict[str, str | None] = dict.fromkeys(SYSTEM_METRICS)

    api_ms = [c.value for c in checks if c.service == "api" and c.unit == "ms" and c.value is not None]
    if "responseTime" in platform:
        metrics["responseTime"], sources["responseTime"] = platform["responseTime"], PLATFORM_SOURCE
    elif api_ms:
        metrics["responseTime"] = round(sum(api_ms) / len(api_ms), 1)
        sources["responseTime"] = f"mean of {len(api_ms)} api endpoint check(s)"
    for field, name in (("memoryUsage", "host.memory"), ("cpuUsage", "host.cpu")):
        check = by_name.get(name)
        if check is not None and check.value is not None:
            metrics[field], sources[field] = check.value, name
    connections = by_name.get("database.connections")
    if connections is not None and (used := connections_in_use(connections)) is not None:
        metrics["databaseConnections"], sources["databaseConnections"] = used, "database.connections"
    for field in PLATFORM_ONLY:
        if field in platform:
            metrics[field], sources[field] = platform[field], PLATFORM_SOURCE
    return metrics, sources


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
