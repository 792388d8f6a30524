"""The analysis against the stores it runs on: records streamed from ops.log_records (the
previous week's performance records as the degradation baseline), the platform database's
ledger, and the findings reported to alerting — cleared once no longer seen."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from bvh_ops.logs.analysis.run import run_analysis
from bvh_ops.opsdb.migrations import migrate

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def ops(fresh_db):
    dsn = fresh_db("_ops")
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
        yield dsn, conn


def insert(conn, at, category, event, **fields):
    conn.execute("SELECT ops.ensure_log_partition(%s, %s::date)", (category, at))
    conn.execute("INSERT INTO ops.log_records (at, category, source, event, fields) VALUES (%s, %s, 'platform', %s, %s)",
                 (at, category, event, Jsonb(fields)))


def test_analyze_streams_the_store_and_reports_to_alerting(ops, sample_db, make_settings, repo_dir):
    dsn, conn = ops
    start = NOW - timedelta(minutes=30)
    for i in range(12):
        insert(conn, start + timedelta(seconds=i), "security", "auth.login_failed", ip="203.0.113.5",
               email="user3@example.org", userId=3, reason="bad_password")
    for week, ms in ((0, 400.0), (7, 100.0)):
        for i in range(25):
            insert(conn, start - timedelta(days=week) + timedelta(seconds=i), "performance", "request.completed",
                   method="POST", path="/api/tickets", status=201, durationMs=ms)
    settings = make_settings(sample_db, repo_dir.as_uri())
    doc = run_analysis(settings, dsn, NOW - timedelta(hours=1), NOW)
    found = {(f["detector"], f["subject"]) for f in doc["findings"]}
    assert found == {("brute_force", "ip:203.0.113.5"), ("brute_force", "account:3"),
                     ("degradation", "endpoint:POST /api/tickets")}
    assert doc["records"] == 37 and doc["reported"]["new"] == 3
    rows = conn.execute("SELECT key, severity FROM ops.findings WHERE source = 'log-analysis' "
                        "AND cleared_at IS NULL ORDER BY key").fetchall()
    assert rows == [("brute_force:account:3", "critical"), ("brute_force:ip:203.0.113.5", "critical"),
                    ("degradation:endpoint:POST_/api/tickets", "warning")]
    later = run_analysis(settings, dsn, NOW + timedelta(hours=2), NOW + timedelta(hours=3))
    assert later["findings"] == [] and later["reported"]["cleared"] == 3
