"""Capacity planning as the runbook schedules it: ``collect-capacity`` daily at 02:30 UTC (one
sample per series into the ops database, history backfilled where missing) and
``capacity-planning`` monthly on the 1st at 04:00 UTC (forecasts per resource, the forecasts of
one and three months ago scored, the ``capacity-report`` artifact with its charts, resources
close to a limit reported to alerting as findings)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from bvh_ops.config import load_settings
from bvh_ops.errors import BvhOpsError, DatabaseUnavailable
from bvh_ops.opsdb.database import running_dsn
from bvh_ops.opsdb.migrations import migrate
from bvh_ops.pg.conn import connect


class IncompleteCollection(BvhOpsError):
    """A capacity measure could not run (its samples for the day are missing)."""


def _ops_dsn() -> str:
    dsn = running_dsn(load_settings())
    if not dsn:
        raise DatabaseUnavailable("the ops database is not running (bvh-ops opsdb start): nowhere to keep capacity "
                                  "history")
    return dsn


@task(name="capacity-collect", cache_policy=NO_CACHE, timeout_seconds=1800)
def collect_task(dsn: str) -> dict[str, Any]:
    from bvh_ops.capacity.collect import collect

    settings = load_settings()
    with connect(dsn, autocommit=True) as conn:
        migrate(conn)
        return collect(settings, conn).to_json()


@task(name="capacity-forecast", cache_policy=NO_CACHE, timeout_seconds=1800)
def forecast_task(dsn: str) -> dict[str, Any]:
    from bvh_ops.alerting.findings import report_findings
    from bvh_ops.capacity.report import findings, run_report

    settings = load_settings()
    now = datetime.now(UTC)
    with connect(dsn, autocommit=True) as conn:
        migrate(conn)
        doc, md = run_report(settings, conn, now=now, save=True)
        doc["findings"] = report_findings(conn, "capacity", findings(doc), now)
    return {"doc": doc, "markdown": md}


@flow(name="collect-capacity", flow_run_name="collect-capacity", retries=0, log_prints=False)
def collect_capacity() -> dict[str, Any]:
    """Daily: one sample per capacity series. A measure that could not run does not stop the
    others, and what was measured is stored, but the run then ends Failed naming it: a gap in the
    history is something to fix, not a green run."""
    logger = get_run_logger()
    doc = collect_task(_ops_dsn())
    for s in doc["skipped"]:
        logger.warning("capacity: %s not collected: %s", s["measure"], s["reason"])
    for s in doc["warnings"]:
        logger.warning("capacity: history shorter: %s could not run: %s", s["measure"], s["reason"])
    logger.info("capacity: %d series collected for %s, %d backfilled", len(doc["samples"]), doc["day"],
                doc["backfilled"])
    if doc["skipped"]:
        from bvh_ops.capacity.collect import incomplete_line

        raise IncompleteCollection(incomplete_line(doc["day"], [(s["measure"], s["reason"]) for s in doc["skipped"]],
                                                   "collect-capacity"))
    return doc


@flow(name="capacity-planning", flow_run_name="capacity-planning", retries=0, log_prints=False)
def capacity_planning() -> dict[str, Any]:
    """Monthly: forecasts, scores, the capacity-report artifact, findings to alerting."""
    out = forecast_task(_ops_dsn())
    create_markdown_artifact(key="capacity-report", markdown=out["markdown"],
                             description="capacity: days until each limit, how sure, what to do")
    return out["doc"]
