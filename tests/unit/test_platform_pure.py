"""The sample platform's pure parts: window summaries, the health model against the runbook's
thresholds, fault parsing, and the log writer's refusal of secret-looking fields."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from bvh_ops.demo.platform.faults import FaultSpec, parse_faults
from bvh_ops.demo.platform.health import (
    ServiceCheck,
    Snapshot,
    api_check,
    health_payload,
    overall,
    status_payload,
)
from bvh_ops.demo.platform.logs import JsonLog
from bvh_ops.demo.platform.metrics import RequestSample, Resources, percentile, summarize


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([], 95, 0.0), ([5.0], 99, 5.0), ([float(i) for i in range(1, 101)], 95, 95.0),
    ([float(i) for i in range(1, 101)], 99, 99.0), ([1.0, 2.0, 3.0], 50, 2.0),
])
def test_percentile_nearest_rank(values, q, expected):
    assert percentile(values, q) == expected


def test_summary_counts_only_the_window_and_5xx_as_errors():
    samples = [RequestSample(0.0, 5000.0, 500),  # outside the window
               RequestSample(8.0, 10.0, 200), RequestSample(9.0, 30.0, 503), RequestSample(9.5, 20.0, 401)]
    s = summarize(samples, now=10.0, window_s=5.0)
    assert (s.count, s.avg_ms, s.errors, s.error_rate, s.p99_ms) == (3, 20.0, 1, 33.33, 30.0)
    assert s.requests_per_second == 0.6
    assert summarize([], now=1.0, window_s=5.0).avg_ms == 0.0


@pytest.mark.parametrize(("db", "cache", "avg_ms", "errors", "expected"), [
    ("healthy", "healthy", 10.0, 0, "healthy"),
    ("unhealthy", "healthy", 10.0, 0, "unhealthy"),
    ("healthy", "unhealthy", 10.0, 0, "degraded"),
    ("healthy", "healthy", 1500.0, 0, "degraded"),  # runbook: responseTime > 1000 ms
    ("healthy", "healthy", 10.0, 2, "degraded"),  # runbook: errorRate > 1 %
    ("unhealthy", "unhealthy", 1500.0, 2, "unhealthy"),
])
def test_overall_status(db, cache, avg_ms, errors, expected):
    samples = [RequestSample(1.0, avg_ms, 200) for _ in range(100 - errors)]
    samples += [RequestSample(1.0, avg_ms, 500) for _ in range(errors)]
    window = summarize(samples, now=1.0, window_s=60.0)
    checks = {"database": ServiceCheck(db, ""), "cache": ServiceCheck(cache, ""), "api": api_check(window)}
    assert overall(checks) == expected


def test_payloads_in_the_runbook_shapes():
    snap = Snapshot(now=datetime(2025, 7, 15, 17, 30, tzinfo=UTC), database=ServiceCheck("unhealthy", "down"),
                    cache=ServiceCheck("healthy", "x"), cache_backend="memory", cache_prefix="",
                    window=summarize([], now=0.0, window_s=60.0), window_s=60.0,
                    resources=Resources(1.0, 2.0, 50.0, 30.0), active_users=3, db_connections=None,
                    uptime_percent=99.5, uptime_seconds=100.0)
    health = health_payload(snap)
    assert health == {"status": "unhealthy", "timestamp": "2025-07-15T17:30:00Z",
                      "services": {"database": "unhealthy", "cache": "healthy", "api": "healthy"},
                      "metrics": {"responseTime": 0.0, "uptime": 99.5, "activeUsers": 3}}
    status = status_payload(snap)
    assert status["systemStatus"] == "critical" and status["metrics"]["databaseConnections"] is None
    json.dumps(status)


@pytest.mark.parametrize(("body", "expected"), [
    ({}, FaultSpec()),
    ({"slow_ms": 2000}, FaultSpec(slow_ms=2000)),
    ({"error_rate": 0.5, "db_down": True}, FaultSpec(error_rate=0.5, db_down=True)),
    ({"memory_growth_mb_per_s": 5}, FaultSpec(memory_growth_mb_per_s=5.0)),
])
def test_parse_faults(body, expected):
    assert parse_faults(body) == expected


@pytest.mark.parametrize(("body", "field"), [
    ({"slow_ms": -1}, "slow_ms"), ({"slow_ms": 1.5}, "slow_ms"), ({"slow_ms": True}, "slow_ms"),
    ({"error_rate": 1.5}, "error_rate"), ({"db_down": 1}, "db_down"),
    ({"memory_growth_mb_per_s": 1000}, "memory_growth_mb_per_s"), ({"slowms": 1}, "slowms"), ([], "object"),
])
def test_parse_faults_names_the_bad_field(body, field):
    with pytest.raises(ValueError, match=field):
        parse_faults(body)


def test_log_refuses_secret_fields_and_unknown_categories(tmp_path):
    log = JsonLog(tmp_path / "l.jsonl")
    for bad in ({"password": "x"}, {"sessionToken": "x"}, {"dsn": "postgresql://u:p@h/d"}):
        with pytest.raises(ValueError, match="secret"):
            log.write("security", "auth.login", **bad)
    with pytest.raises(ValueError, match="category"):
        log.write("metrics", "x")
    log.write("debug", "hidden")  # debug lines only when enabled
    log.write("audit", "wallet.deposit", amount=50.0)
    log.close()
    lines = [json.loads(x) for x in (tmp_path / "l.jsonl").read_text().splitlines()]
    assert [(x["category"], x["event"], x["amount"]) for x in lines] == [("audit", "wallet.deposit", 50.0)]
