"""The runbook's security procedures: ``security-scan`` every Sunday at 03:00 UTC (database and
host checks) and ``security-audit`` on the 1st at 04:00 (the scan plus drift against the
accepted, signed baseline). Each run is kept in ops.security_runs, its findings go to alerting
(critical/high at once, medium hourly, low/info in the daily summary) and its artifacts show the
findings table, the drift and the trend over the last runs. Findings do not fail the run (they
are its result, alerted on their own); a tampered baseline does."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from bvh_ops.config import load_settings
from bvh_ops.opsdb.database import running_dsn
from bvh_ops.opsdb.migrations import migrate
from bvh_ops.pg.conn import connect
from bvh_ops.security.render import drift_markdown, findings_markdown, trend_markdown
from bvh_ops.security.run import audit, record_run, report_to_alerting, scan, trend


@task(name="security-check", cache_policy=NO_CACHE, timeout_seconds=1800)
def check_task(kind: str) -> dict[str, Any]:
    settings = load_settings()
    return audit(settings) if kind == "audit" else scan(settings)


@task(name="security-record", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 30])
def record_task(kind: str, doc: dict[str, Any], started: datetime) -> list[dict[str, Any]] | None:
    """Keep the run and report its findings; None when no ops database runs (nothing kept)."""
    dsn = running_dsn(load_settings())
    if not dsn:
        return None
    now = datetime.now(UTC)
    with connect(dsn, autocommit=True) as conn:
        migrate(conn)
        record_run(conn, kind, doc, started, now)
        doc["reported"] = report_to_alerting(conn, doc, now)
        return trend(conn)


def _run(kind: str) -> dict[str, Any]:
    logger = get_run_logger()
    started = datetime.now(UTC)
    doc = check_task(kind)
    runs = record_task(kind, doc, started)
    create_markdown_artifact(key=f"security-{kind}-findings", markdown=findings_markdown(doc, f"Security {kind}"),
                             description=f"security {kind}: findings by severity")
    if kind == "audit":
        create_markdown_artifact(key="security-audit-drift", markdown=drift_markdown(doc),
                                 description="security audit: drift against the accepted baseline")
    if runs is None:
        logger.warning("no ops database running: this %s is not kept and not sent to alerting", kind)
    else:
        create_markdown_artifact(key="security-trend", markdown=trend_markdown(runs),
                                 description="security findings over the last runs")
    if doc["status"] == "failed":
        logger.warning("security %s: %s", kind, ", ".join(f"{f['id']} {f['object']}" for f in doc["findings"]
                                                           if f["severity"] in ("critical", "high")
                                                           and "waived" not in f)[:2000])
    return doc


@flow(name="security-scan", flow_run_name="security-scan", retries=0, log_prints=False)
def security_scan() -> dict[str, Any]:
    """Weekly: every database and host check, waivers applied, findings to alerting."""
    return _run("scan")


@flow(name="security-audit", flow_run_name="security-audit", retries=0, log_prints=False)
def security_audit() -> dict[str, Any]:
    """Monthly: the scan plus drift against the accepted, signed baseline."""
    return _run("audit")


if __name__ == "__main__":
    security_scan()
