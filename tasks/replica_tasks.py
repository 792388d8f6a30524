"""Tasks of replication: one pass (copy + verify), and its findings into alerting (here, not in
bvh_ops.replica: the monitoring probe imports replica, and alerting imports monitoring)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from bvh_ops.alerting.findings import Finding, report_findings
from bvh_ops.alerting.rules import Severity
from bvh_ops.config import Settings
from bvh_ops.opsdb.database import ops_database
from bvh_ops.opsdb.migrations import migrate
from bvh_ops.pg.conn import connect
from bvh_ops.replica.run import audit_replication, follow_wal, replicate
from tasks.common import retry_transient_only


@task(name="replicate-pass", cache_policy=NO_CACHE, retry_condition_fn=retry_transient_only, timeout_seconds=3 * 3600)
def replicate_pass(settings: Settings, verify: bool) -> dict[str, Any]:
    """Copy what the replica lacks, in commit order, each copy verified there."""
    return replicate(settings, datetime.now(UTC), verify=verify).to_json()


@task(name="replicate-follow-wal", cache_policy=NO_CACHE, retry_condition_fn=retry_transient_only,
      timeout_seconds=3600)
def follow_wal_task(settings: Settings, seconds: float, poll_seconds: float) -> dict[str, Any]:
    """WAL-only passes until the next scheduled run is due (one task run, not one per pass)."""
    return follow_wal(settings, seconds, poll_seconds)


@task(name="replica-findings", cache_policy=NO_CACHE, timeout_seconds=300)
def report_replica(settings: Settings, doc: dict[str, Any] | None, error: str | None = None) -> dict:
    """The run's findings (source "replica"): active ones alert, missing ones clear."""
    with ops_database(settings) as dsn, connect(dsn, autocommit=True) as conn:
        migrate(conn)
        counts = report_findings(conn, "replica", replica_findings(doc, settings.rpo_objective_seconds, error),
                                 datetime.now(UTC))
        if doc and (doc["copied"]["objects"] or doc["corrupt_recopied"]):
            audit_replication(settings, doc, conn=conn)
        return counts


def replica_findings(doc: dict | None, rpo_seconds: float, error: str | None = None) -> list[Finding]:
    """``doc``: a replicate report (to_json); ``error``: why the run could not run at all."""
    if error is not None:
        return [Finding("replica.unreachable", Severity.CRITICAL, "replica repository unreachable: not replicating",
                        f"{error[:400]}; the primary keeps working; `bvh-ops replica status` shows the lag, "
                        "`bvh-ops replicate` catches up once it answers")]
    out = []
    for f in (doc or {}).get("failures", []):
        out.append(Finding(f"replica.failed:{f['unit'][:180]}", Severity.CRITICAL,
                           "a unit could not be replicated and verified", f"{f['unit']}: {f['error'][:400]}"))
    lag = (doc or {}).get("lag_after") or {}
    if lag.get("wal_seconds", 0) > rpo_seconds:
        out.append(Finding("replica.wal_lag", Severity.CRITICAL, "replica WAL lag beyond the RPO objective",
                           f"{lag['wal_objects']} WAL object(s) not on the replica, oldest {lag['wal_seconds']:.0f} s "
                           f"(RPO objective {rpo_seconds:g} s)"))
    return out
