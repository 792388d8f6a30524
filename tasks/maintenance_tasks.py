"""Tasks of database maintenance: wait (briefly) for a backup to release the target, then one
run (facts -> plan -> actions -> record). The run is one task because the maintenance lock it
takes on the target must stay held from the assessment to the last action."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bvh_ops.config import Settings
from tasks.common import retry_transient_only


@task(name="maintenance-wait-for-backup", cache_policy=NO_CACHE, retry_condition_fn=retry_transient_only,
      timeout_seconds=3 * 3600)
def wait_for_backup_lock(settings: Settings, wait_seconds: float) -> str | None:
    """Wait up to ``wait_seconds`` for a backup holding the target; the holder still there, or None."""
    from bvh_ops.maintenance.run import wait_for_backup
    from bvh_ops.pg.conn import connect

    with connect(settings.require_database_url(), autocommit=True) as conn:
        holder = wait_for_backup(conn, wait_seconds)
    if holder:
        get_run_logger().warning("%s still holds the target after %.0f s: this run only assesses", holder,
                                 wait_seconds)
    return holder


@task(name="maintenance-run", task_run_name="maintenance-run {scope}", cache_policy=NO_CACHE,
      retry_condition_fn=retry_transient_only, timeout_seconds=6 * 3600)
def run_scope(settings: Settings, scope: str, dry_run: bool) -> dict[str, Any]:
    """Assess, plan and act (see bvh_ops.maintenance.run); never waits for a backup itself."""
    from bvh_ops.maintenance.run import run_maintenance

    report = run_maintenance(settings, scope, dry_run=dry_run)
    logger = get_run_logger()
    for a in report["actions"]:
        logger.info("%s %s %s (%.2f s): %s", a["status"], a["action"], a["object"], a["seconds"], a["detail"])
    for n in report["notes"]:
        logger.info("note: %s", n)
    return report


@task(name="performance-report", cache_policy=NO_CACHE, retry_condition_fn=retry_transient_only,
      timeout_seconds=1800)
def performance_report(settings: Settings) -> dict[str, Any]:
    """The weekly performance report (bvh_ops.maintenance.performance): gathered, its statement,
    index and table snapshots stored in the ops database, compared with those a week back, and
    the monitored endpoints' week of response times from the monitor's samples there."""
    from datetime import UTC, datetime

    from bvh_ops.maintenance.performance import limits_of, report
    from bvh_ops.maintenance.run import target_name
    from bvh_ops.opsdb.database import ops_database
    from bvh_ops.opsdb.migrations import migrate
    from bvh_ops.pg.conn import connect

    dsn = settings.require_database_url()
    with connect(dsn, autocommit=True) as conn, ops_database(settings) as ops_dsn, \
            connect(ops_dsn, autocommit=True) as ops:
        migrate(ops)
        return report(conn, ops, target_name(dsn), datetime.now(UTC), endpoints=[e.name for e in settings.endpoints],
                      limits=limits_of(settings))
