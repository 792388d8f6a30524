"""The HealthDashboard from one cycle (bvh_ops.monitoring.status): the runbook's shape, unknown
counted as warning, unmonitored services shown as such, metrics measured or null (never invented),
no uptime without history, no alerts without alerting."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bvh_ops.config import Endpoint
from bvh_ops.monitoring.cycle import CycleResult
from bvh_ops.monitoring.platform_metrics import metrics_endpoint
from bvh_ops.monitoring.results import Check, Status, overall
from bvh_ops.monitoring.status import (
    NO_HISTORY,
    SERVICES,
    SYSTEM_METRICS,
    dashboard,
    platform_system_metrics,
    service_statuses,
    system_metrics,
)

OK, WARN, UNK, CRIT = Status.OK, Status.WARNING, Status.UNKNOWN, Status.CRITICAL
NOW = datetime(2025, 7, 15, 17, 30, tzinfo=UTC)


def cycle(*checks: Check, not_monitored: list[str] | None = None) -> CycleResult:
    return CycleResult(overall(checks), NOW, list(checks), 0.4, 0.05, not_monitored or [])


def api(name="api-health", status=OK, value: float | None = 12.0) -> Check:
    return Check(name, "api", status, value, "ms", "HTTP 200")


def db_connections(used=5, maximum=100, status=OK) -> Check:
    return Check("database.connections", "database", status, 100.0 * used / maximum, "%",
                 f"{used} of max_connections {maximum} client connections")


HOST = [Check("host.cpu", "host", OK, 15.8, "%"), Check("host.memory", "host", OK, 45.2, "%")]
PLATFORM_BODY = {"performance": {"responseTime": {"avg": 11.33, "p95": 45.2, "p99": 89.1}},
                 "system": {"responseTime": 11.33, "memoryUsage": 3.1, "cpuUsage": 2.0, "activeUsers": 15,
                            "databaseConnections": 4, "errorRate": 0.01, "uptime": 99.95}}


@pytest.mark.parametrize("statuses, expected", [
    ([OK], "healthy"),
    ([OK, WARN], "warning"),
    ([OK, UNK], "warning"),  # a blind spot is not health, and not a proven outage
    ([WARN, UNK], "warning"),
    ([OK, CRIT], "critical"),
    ([UNK, CRIT], "critical"),
    ([], "warning"),  # nothing checked at all: unknown, shown as warning
])
def test_system_status_in_the_runbooks_words(statuses, expected):
    checks = [Check(f"c{i}", "api", s) for i, s in enumerate(statuses)]
    assert dashboard(cycle(*checks), platform_metrics=None, history=None)["systemStatus"] == expected


def test_every_healthdashboard_key_and_honest_placeholders():
    board = dashboard(cycle(api(), db_connections(), *HOST), platform_metrics=None, history=None)
    assert {"systemStatus", "services", "metrics", "alerts", "uptime"} <= set(board)
    assert list(board["services"])[:5] == list(SERVICES)
    assert set(board["metrics"]) == set(SYSTEM_METRICS)
    assert board["alerts"] == []
    assert any(n.startswith("alerts: alert state not read") for n in board["notes"])
    for name, up in board["uptime"].items():
        assert up == {"24h": None, "7d": None, "30d": None, "available": False, "reason": NO_HISTORY}, name
    assert set(board["uptime"]) == set(board["services"])
    assert board["checkedAt"] == NOW.isoformat()


@pytest.mark.parametrize("checks, not_monitored, service, expected", [
    ([api()], [], "api", ("ok", True, "1 check(s) ok")),
    ([api(), api("api-status", WARN)], [], "api", ("warning", True, "api-status warning: HTTP 200")),
    ([api(), api("api-status", UNK)], [], "api", ("unknown", True, "api-status unknown: HTTP 200")),
    ([api("a", CRIT), api("b", UNK)], [], "api", ("critical", True, "a critical: HTTP 200; b unknown: HTTP 200")),
    ([api()], [], "frontend", ("unknown", False, 'not monitored: no check has service = "frontend" '
                                                 "(configure an endpoint for it)")),
    ([api()], ["cache (cache_url is not set)"], "cache", ("unknown", False, "not monitored: cache_url is not set")),
    ([*HOST], [], "host", ("ok", True, "2 check(s) ok")),  # services beyond the runbook's five are shown too
])
def test_service_status_detail_and_monitored(checks, not_monitored, service, expected):
    svc = service_statuses(checks, not_monitored)[service]
    assert (svc["status"], svc["monitored"], svc["detail"]) == expected
    assert svc["checks"] == [c.name for c in checks if c.service == service]


@pytest.mark.parametrize("checks, body, expected", [
    # nothing measured: every field null
    ([], None, dict.fromkeys(SYSTEM_METRICS)),
    # the monitor's own measurements; the platform-only fields stay null
    ([api(value=10.0), api("api-status", value=20.0), db_connections(7), *HOST], None,
     {"responseTime": 15.0, "memoryUsage": 45.2, "cpuUsage": 15.8, "activeUsers": None, "databaseConnections": 7,
      "errorRate": None, "uptime": None}),
    # an endpoint that did not answer has no value: not averaged in as 0
    ([api(value=None, status=CRIT), api("b", value=30.0)], None, {**dict.fromkeys(SYSTEM_METRICS),
                                                                  "responseTime": 30.0}),
    ([api(value=None, status=CRIT)], None, dict.fromkeys(SYSTEM_METRICS)),
    # the database unreachable: its connections check has no count
    ([Check("database.connections", "database", UNK, None, "", "database unreachable")], None,
     dict.fromkeys(SYSTEM_METRICS)),
    # the platform's numbers: its response time, users, error rate and uptime; host and database stay ours
    ([api(value=99.0), db_connections(7), *HOST], PLATFORM_BODY,
     {"responseTime": 11.33, "memoryUsage": 45.2, "cpuUsage": 15.8, "activeUsers": 15, "databaseConnections": 7,
      "errorRate": 0.01, "uptime": 99.95}),
    # the runbook's section-10 body: only the average response time is in it
    ([], {"performance": {"responseTime": {"avg": 11.33}}}, {**dict.fromkeys(SYSTEM_METRICS), "responseTime": 11.33}),
    # a platform reporting null / non-numbers: nothing taken from it
    ([api(value=8.0)], {"system": {"responseTime": None, "activeUsers": "many", "errorRate": True,
                                   "uptime": float("nan")}},
     {**dict.fromkeys(SYSTEM_METRICS), "responseTime": 8.0}),
])
def test_metrics_measured_or_null(checks, body, expected):
    metrics, sources = system_metrics(checks, platform_system_metrics(body))
    assert metrics == expected
    assert {k for k, v in sources.items() if v} == {k for k, v in metrics.items() if v is not None}


@pytest.mark.parametrize("body, expected", [
    (None, {}),
    ([1, 2], {}),
    ({"responseTime": 5, "activeUsers": 3, "other": 1}, {"responseTime": 5, "activeUsers": 3}),
    ({"system": {"uptime": 99.9}, "uptime": 1.0}, {"uptime": 99.9}),
    ({"performance": {"responseTime": {"avg": "fast"}}}, {}),
])
def test_platform_system_metrics(body, expected):
    assert platform_system_metrics(body) == expected


def test_platform_metrics_absent_is_noted():
    board = dashboard(cycle(api()), platform_metrics=None, history=None)
    assert any(n.startswith("activeUsers, errorRate, uptime") for n in board["notes"])
    board = dashboard(cycle(api()), platform_metrics=PLATFORM_BODY, history=None)
    assert not any(n.startswith("activeUsers, errorRate, uptime") for n in board["notes"])
    assert board["metricSources"]["activeUsers"] == "platform /api/metrics"


def _ep(name: str, url: str) -> Endpoint:
    return Endpoint.model_validate({"name": name, "service": "api", "url": url, "conditions": ["[STATUS] == 200"]})


@pytest.mark.parametrize("urls, expected", [
    ([], None),
    (["http://h/api/health"], None),
    (["http://h/api/health", "http://h/api/metrics"], "e1"),
    (["http://h/api/metrics/?x=1", "http://h/api/metrics"], "e0"),
    (["http://h/metrics"], None),  # Prometheus' /metrics is not the platform's JSON
])
def test_metrics_endpoint_is_a_configured_api_metrics(urls, expected):
    found = metrics_endpoint([_ep(f"e{i}", u) for i, u in enumerate(urls)])
    assert (found.name if found else None) == expected
