"""Incidents and the uptime report agree: the same probe cycles, recorded as samples and fed to
the alerter, give an incident whose start, end and duration are the report's longest outage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from bvh_ops.alerting.engine import Alerter
from bvh_ops.alerting.store import incidents, write
from bvh_ops.monitoring import store
from bvh_ops.monitoring.cycle import CycleResult
from bvh_ops.monitoring.report import per_cycle_rows, uptime_report
from bvh_ops.monitoring.results import Check, Status, overall
from bvh_ops.opsdb.migrations import migrate


def test_an_outage_is_one_incident_as_long_as_the_reports_outage(fresh_db):
    ops = fresh_db("_ops")
    now = datetime.now(UTC).replace(microsecond=0)
    start = max(now.replace(day=1, hour=0, minute=0, second=0), now - timedelta(hours=2))
    statuses = [Status.OK] * 5 + [Status.CRITICAL] * 7 + [Status.OK] * 6
    alerter = Alerter(["email"])
    with psycopg.connect(ops, autocommit=True) as conn:
        migrate(conn)
        for i, status in enumerate(statuses):
            at = start + timedelta(seconds=30 * i)
            checks = [Check("api-health", "api", status, 12.0, "ms")]
            store.record_cycle(conn, CycleResult(overall(checks), at, checks, 0.1, 0.01, []))
            alerter.observe(checks, at)
        write(conn, alerter.take_unsaved(), now)
        rows = per_cycle_rows(conn, f"{start:%Y-%m}", now)
        (incident,) = incidents(conn, start - timedelta(days=1))
    outage = uptime_report(rows, f"{start:%Y-%m}")["services"]["api"]["longest_outage"]
    assert outage["cycles"] == 7
    began = start + timedelta(seconds=150)
    assert datetime.fromisoformat(incident["started_at"]) == datetime.fromisoformat(outage["start"]) == began
    assert incident["duration_seconds"] == outage["minutes"] * 60 == 7 * 30
