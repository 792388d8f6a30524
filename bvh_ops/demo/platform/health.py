"""The runbook's monitoring payloads (sections 1, 5 and 10), built by pure functions from one
:class:`Snapshot` of measurements. Status words: each service and the whole platform are
``healthy``, ``degraded`` or ``unhealthy``; ``/api/status`` also gives the dashboard's
``systemStatus`` (healthy | warning | critical)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from bvh_ops.demo.platform.metrics import Resources, WindowSummary

# The runbook's alert thresholds (section 1): above them the API counts as degraded.
RESPONSE_TIME_MS = 1000.0
ERROR_RATE_PERCENT = 1.0
SYSTEM_STATUS = {"healthy": "healthy", "degraded": "warning", "unhealthy": "critical"}


@dataclass(frozen=True)
class ServiceCheck:
    status: str  # healthy | degraded | unhealthy
    detail: str
    latency_ms: float | None = None


@dataclass(frozen=True)
class Snapshot:
    now: datetime
    database: ServiceCheck
    cache: ServiceCheck
    cache_backend: str
    cache_prefix: str
    window: WindowSummary
    window_s: float
    resources: Resources
    active_users: int
    db_connections: dict[str, int] | None  # None: could not be measured (database down)
    uptime_percent: float
    uptime_seconds: float
    faults: dict[str, object] = field(default_factory=dict)
    pid: int = 0
    version: str = "sample-1"
    payments: WindowSummary | None = None   # the deposit endpoint's window (payment processing)
    logins: WindowSummary | None = None     # the login endpoint's window (failed = 401)


def api_check(window: WindowSummary) -> ServiceCheck:
    problems = []
    if window.avg_ms > RESPONSE_TIME_MS:
        problems.append(f"response time {window.avg_ms:.0f} ms > {RESPONSE_TIME_MS:.0f} ms")
    if window.error_rate > ERROR_RATE_PERCENT:
        problems.append(f"error rate {window.error_rate:.2f}% > {ERROR_RATE_PERCENT:.0f}%")
    if problems:
        return ServiceCheck("degraded", "; ".join(problems), window.avg_ms)
    return ServiceCheck("healthy", f"{window.count} requests in the window", window.avg_ms)


def services(snap: Snapshot) -> dict[str, ServiceCheck]:
    return {"database": snap.database, "cache": snap.cache, "api": api_check(snap.window)}


def overall(checks: dict[str, ServiceCheck]) -> str:
    """Unhealthy without the database (nothing can be sold); degraded if anything else is off."""
    if checks["database"].status != "healthy":
        return "unhealthy"
    if any(c.status != "healthy" for c in checks.values()):
        return "degraded"
    return "healthy"


def system_metrics(snap: Snapshot) -> dict[str, object]:
    """The runbook's SystemMetrics: ms, percent of memory, percent of CPU, users, connections,
    percent of requests, percent of time up."""
    return {
        "responseTime": snap.window.avg_ms,
        "memoryUsage": snap.resources.memory_percent,
        "cpuUsage": snap.resources.cpu_percent,
        "activeUsers": snap.active_users,
        "databaseConnections": snap.db_connections["platform"] if snap.db_connections else None,
        "errorRate": snap.window.error_rate,
        "uptime": snap.uptime_percent,
    }


def _stamp(snap: Snapshot) -> str:
    return snap.now.isoformat(timespec="seconds").replace("+00:00", "Z")


def health_payload(snap: Snapshot) -> dict[str, object]:
    checks = services(snap)
    metrics = system_metrics(snap)
    return {
        "status": overall(checks),
        "timestamp": _stamp(snap),
        "services": {name: c.status for name, c in checks.items()},
        "metrics": {k: metrics[k] for k in ("responseTime", "uptime", "activeUsers")},
    }


def detailed_payload(snap: Snapshot) -> dict[str, object]:
    checks = services(snap)
    out = health_payload(snap)
    out["services"] = {name: {"status": c.status, "detail": c.detail, "latencyMs": c.latency_ms}
                       for name, c in checks.items()}
    out["services"]["cache"].update(backend=snap.cache_backend, prefix=snap.cache_prefix)
    out["metrics"] = system_metrics(snap)
    out["database"] = snap.db_connections
    out["process"] = {"pid": snap.pid, "uptimeSeconds": snap.uptime_seconds, "rssMb": snap.resources.rss_mb,
                      "version": snap.version}
    out["faults"] = snap.faults
    return out


def metrics_payload(snap: Snapshot) -> dict[str, object]:
    w = snap.window
    return {
        "timestamp": _stamp(snap),
        "performance": {
            "responseTime": {"avg": w.avg_ms, "p95": w.p95_ms, "p99": w.p99_ms},
            "throughput": {"requestsPerSecond": w.requests_per_second,
                           "requestsPerMinute": round(w.requests_per_second * 60, 1)},
            "errorRate": w.error_rate,
            "requests": w.count,
            "errors": w.errors,
            "windowSeconds": snap.window_s,
        },
        "resources": {"memoryUsage": snap.resources.memory_percent, "cpuUsage": snap.resources.cpu_percent,
                      "diskUsage": snap.resources.disk_percent, "memoryMb": snap.resources.rss_mb},
        "system": system_metrics(snap),
        # Payment processing (deposits): the runbook's critical "payment processing errors";
        # watched with an endpoint condition such as [BODY].payments.errorRate < 1.
        "payments": {"requests": snap.payments.count if snap.payments else 0,
                     "errors": snap.payments.errors if snap.payments else 0,
                     "errorRate": snap.payments.error_rate if snap.payments else 0.0},
        # Logins in the window and how many failed (401): the runbook's warning "failed login
        # spike", watched with e.g. [BODY].logins.failedPerMinute < 30.
        "logins": login_payload(snap.logins, snap.window_s),
    }


def login_payload(w: WindowSummary | None, window_s: float) -> dict[str, float]:
    attempts = w.count if w else 0
    failed = w.client_errors if w else 0
    return {"attempts": attempts, "failed": failed,
            "failedPerMinute": round(failed * 60.0 / window_s, 2) if window_s else 0.0,
            "failedPercent": round(100.0 * failed / attempts, 2) if attempts else 0.0}


def status_payload(snap: Snapshot) -> dict[str, object]:
    checks = services(snap)
    state = overall(checks)
    return {
        "status": state,
        "systemStatus": SYSTEM_STATUS[state],
        "timestamp": _stamp(snap),
        "services": {name: {"status": c.status, "available": c.status != "unhealthy", "detail": c.detail}
                     for name, c in checks.items()},
        "metrics": system_metrics(snap),
        "uptime": {"percent": snap.uptime_percent, "seconds": snap.uptime_seconds},
    }
