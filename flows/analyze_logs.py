"""Log analysis (#13 item 4): hourly, every detector over the last ``hours`` of collected records
and the platform's ledger, findings reported to alerting (source ``log-analysis``); weekly
(``weekly=True``), the same over seven days published as the security and performance report
artifacts (tables and a p95 chart)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from bvh_ops.config import load_settings
from bvh_ops.errors import DatabaseUnavailable
from bvh_ops.logs.analysis.report import performance_markdown, security_markdown
from bvh_ops.logs.analysis.run import run_analysis
from bvh_ops.opsdb.database import running_dsn


@task(retries=2, retry_delay_seconds=[30, 120], timeout_seconds=1800)
def analyze_task(since: datetime, now: datetime, report: bool) -> dict[str, Any]:
    settings = load_settings()
    dsn = running_dsn(settings)
    if not dsn:
        raise DatabaseUnavailable("the ops database is not running (bvh-ops opsdb start): no records to analyse")
    return run_analysis(settings, dsn, since, now, report=report)


@flow(name="analyze-logs", flow_run_name="analyze-logs", retries=0, log_prints=False)
def analyze_logs(hours: int = 24, weekly: bool = False) -> dict[str, Any]:
    """Hourly: the last ``hours`` (the findings stay active while their records are in the
    window). Weekly: seven days, reported as artifacts, not to alerting (the hourly runs do)."""
    now = datetime.now(UTC)
    since = now - (timedelta(days=7) if weekly else timedelta(hours=hours))
    doc = analyze_task(since, now, report=not weekly)
    if weekly:
        create_markdown_artifact(key="weekly-security-report", markdown=security_markdown(doc),
                                 description=f"security findings {since:%Y-%m-%d} .. {now:%Y-%m-%d}")
        create_markdown_artifact(key="weekly-performance-report", markdown=performance_markdown(doc),
                                 description=f"endpoint percentiles {since:%Y-%m-%d} .. {now:%Y-%m-%d}")
    critical = [f"{f['detector']} {f['subject']}" for f in doc["findings"] if f["severity"] == "critical"]
    if critical:
        get_run_logger().warning("log analysis: %d critical findings: %s", len(critical), ", ".join(critical[:10]))
    return {k: doc[k] for k in ("since", "now", "records", "findings", "skipped")}


if __name__ == "__main__":
    analyze_logs()
