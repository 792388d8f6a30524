"""Monthly uptime/SLA report: on the 1st at 04:00 UTC, the previous month's uptime per service
(maintenance windows excluded) as the `uptime-report` markdown artifact. A separate deployment,
not a branch of the hourly monitoring loop: it runs once, late enough that the month's last
cycles are stored, and a missed run can be re-run for any month with ``month``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from bvh_ops.config import load_settings
from bvh_ops.errors import DatabaseUnavailable
from bvh_ops.monitoring.report import DEFAULT_SLA, markdown, per_cycle_rows, previous_month, uptime_report
from bvh_ops.opsdb.database import running_dsn
from bvh_ops.pg.conn import connect


@flow(name="uptime-report", flow_run_name="uptime-report", retries=0, log_prints=False)
def uptime_report_flow(month: str | None = None, sla: float = DEFAULT_SLA) -> dict[str, Any]:
    """Publish the uptime report of ``month`` (YYYY-MM; default the previous full month)."""
    settings = load_settings()
    now = datetime.now(UTC)
    month = month or previous_month(now)
    dsn = running_dsn(settings)
    if not dsn:
        raise DatabaseUnavailable("the ops database is not running (bvh-ops opsdb start): no samples to report")
    with connect(dsn, autocommit=True) as conn:
        rows = per_cycle_rows(conn, month, now)
    doc = uptime_report(rows, month, settings.maintenance_windows, sla)
    create_markdown_artifact(key="uptime-report", markdown=markdown(doc), description=f"uptime {month}")
    missed = [name for name, s in doc["services"].items() if s["meets_sla"] is False]
    if missed:
        get_run_logger().warning("uptime %s: SLA %s %% missed by %s", month, sla, ", ".join(missed))
    return doc


if __name__ == "__main__":
    uptime_report_flow()
