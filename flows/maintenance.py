"""Database maintenance as the runbook schedules it (section 9), in UTC:
``maintenance-daily`` 02:00 (update statistics: ANALYZE where modifications pass the threshold),
``maintenance-weekly`` Sunday 03:00 (VACUUM, FREEZE, REINDEX CONCURRENTLY, plus the daily work;
then backup verification, disk space and the sessions/cache review - bvh_ops.maintenance.run.weekly_stages -
and the weekly performance report — queries, index use, bloat, endpoint response times, with
charts — published as the ``performance-report`` artifact),
``maintenance-monthly`` the 1st at 04:00 (the weekly plan; archive-logs, capacity planning and the
security audit are their own deployments on the same schedule).

daily-backup also starts at 02:00: the two are serialised by the backup's advisory lock on the
target. Maintenance waits up to ``wait_for_backup_seconds`` (15 minutes by default) for the
backup to finish, then - if it still runs - only assesses and reports every action as skipped
("daily-backup holds the target"); the backup is never the one to wait or fail. A backup that
starts in the middle of a run skips the rest of the plan the same way.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from bvh_ops.config import load_settings
from bvh_ops.errors import DatabaseError
from flows.artifacts import maintenance_markdown
from flows.naming import target_label
from tasks.common import retrying
from tasks.maintenance_tasks import performance_report, run_scope, wait_for_backup_lock

MONTHLY_NOTE = ("monthly = the weekly database maintenance; archive-logs, capacity planning and the security "
                "audit run as their own deployments on the 1st at 04:00 UTC")


def _run_name() -> str:
    return f"{flow_run.flow_name} {target_label(load_settings())}"


def _run(scope: str, wait_for_backup_seconds: float, dry_run: bool) -> dict[str, Any]:
    settings = load_settings()
    logger = get_run_logger()
    # 1. a backup first: wait briefly, then assess only (the run reports every action skipped)
    retrying(wait_for_backup_lock, settings)(settings, wait_for_backup_seconds)
    # 2. facts -> plan -> actions under lock/statement timeouts -> ops database, audit, findings
    report = retrying(run_scope, settings)(settings, scope, dry_run)
    if scope == "monthly":
        report["notes"].append(MONTHLY_NOTE)
    # 3. what was planned, done and skipped, and why
    create_markdown_artifact(key=f"maintenance-{scope}", markdown=maintenance_markdown(report),
                             description=f"maintenance {scope}: {report['status']}")
    if report["actions"]:
        create_table_artifact(key=f"maintenance-{scope}-actions",
                              table=[{k: a[k] for k in ("status", "action", "object", "seconds", "detail")}
                                     for a in report["actions"]],
                              description=f"maintenance {scope}: actions")
    # 4. weekly: the performance report, its own stage (a failure is logged, the maintenance stands)
    if scope == "weekly" and not dry_run:
        from bvh_ops.maintenance.charts import charts
        from bvh_ops.maintenance.performance import markdown

        try:
            doc = retrying(performance_report, settings)(settings)
            try:
                pictures = charts(doc, settings.response_time_warning_ms)
            except Exception as exc:  # noqa: BLE001 - the report is published without them
                logger.warning("performance report charts failed: %s: %s", type(exc).__name__, str(exc)[:300])
                doc["notes"].append(f"the charts could not be drawn: {type(exc).__name__}")
                pictures = {}
            create_markdown_artifact(key="performance-report", markdown=markdown(doc, pictures),
                                     description=f"weekly performance report: {len(doc['recommendations'])} "
                                                 "recommendation(s)")
            report["performance"] = {"recommendations": len(doc["recommendations"]), "since": doc["since"],
                                     "unused_indexes": len(doc["indexes"]["unused"]),
                                     "growing_bloat": len(doc["bloat"]["growing"]), "endpoints": len(doc["endpoints"])}
        except Exception as exc:  # noqa: BLE001 - the report is not the maintenance
            logger.warning("performance report failed: %s: %s", type(exc).__name__, str(exc)[:300])
            report["notes"].append(f"performance report failed: {type(exc).__name__}")
    failed = [a for a in report["actions"] if a["status"] == "failed"]
    logger.info("maintenance %s: %s (%d actions, %d findings)", scope, report["status"], len(report["actions"]),
                len(report["findings"]))
    if failed:
        raise DatabaseError(f"{len(failed)} maintenance action(s) failed: "
                            + "; ".join(f"{a['action']} {a['object']}: {a['detail']}" for a in failed[:3]))
    return report


@flow(name="maintenance-daily", flow_run_name=_run_name, retries=0, log_prints=False)
def maintenance_daily(wait_for_backup_seconds: float = 900.0, dry_run: bool = False) -> dict[str, Any]:
    """Daily 02:00 UTC: ANALYZE the tables whose statistics went stale.

    Args:
        wait_for_backup_seconds: how long to wait for a running backup (daily-backup starts at 02:00 too).
        dry_run: assess and publish the plan only.
    """
    return _run("daily", wait_for_backup_seconds, dry_run)


@flow(name="maintenance-weekly", flow_run_name=_run_name, retries=0, log_prints=False)
def maintenance_weekly(wait_for_backup_seconds: float = 900.0, dry_run: bool = False) -> dict[str, Any]:
    """Sunday 03:00 UTC: VACUUM (ANALYZE), VACUUM (FREEZE), REINDEX CONCURRENTLY, and the daily ANALYZEs.

    Args:
        wait_for_backup_seconds: how long to wait for a running backup before only assessing.
        dry_run: assess and publish the plan only.
    """
    return _run("weekly", wait_for_backup_seconds, dry_run)


@flow(name="maintenance-monthly", flow_run_name=_run_name, retries=0, log_prints=False)
def maintenance_monthly(wait_for_backup_seconds: float = 900.0, dry_run: bool = False) -> dict[str, Any]:
    """1st of the month 04:00 UTC: the weekly plan (log archiving, capacity and the security audit
    are their own deployments).

    Args:
        wait_for_backup_seconds: how long to wait for a running backup before only assessing.
        dry_run: assess and publish the plan only.
    """
    return _run("monthly", wait_for_backup_seconds, dry_run)
