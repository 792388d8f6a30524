"""The analysis against the real stores: records streamed from ``ops.log_records`` (and the
previous week's performance records for degradation), the platform database's ledger when
``database_url`` is set, and the findings reported to alerting. Used by the CLI and the flow."""

from __future__ import annotations

from contextlib import ExitStack
from datetime import datetime, timedelta
from typing import Any

from bvh_ops.alerting.findings import report_findings
from bvh_ops.config import Settings
from bvh_ops.errors import DatabaseError
from bvh_ops.logs.analysis.analyze import SOURCE, alert_findings, analyze
from bvh_ops.logs.analysis.sources import log_records
from bvh_ops.pg.conn import connect


def run_analysis(settings: Settings, ops_dsn: str, since: datetime, now: datetime, *,
                 report: bool = True) -> dict[str, Any]:
    with ExitStack() as stack:
        ops = stack.enter_context(connect(ops_dsn))          # a transaction: named cursors stream
        if ops.execute("SELECT to_regclass('ops.log_records')").fetchone()[0] is None:
            raise DatabaseError("the ops database has no log_records table: run `bvh-ops opsdb start` (it migrates)")
        baseline_conn = stack.enter_context(connect(ops_dsn))
        platform = None
        if settings.database_url is not None:
            platform = stack.enter_context(connect(settings.database_url.get_secret_value()))
        baseline = log_records(baseline_conn, since - timedelta(days=7), now - timedelta(days=7), ("performance",))
        doc = analyze(log_records(ops, since, now), platform, settings.log_analysis, since, now, baseline=baseline)
        ops.rollback()
        if report:
            ops.autocommit = True
            doc["reported"] = report_findings(ops, SOURCE, alert_findings(doc["findings"]), now)
    return doc
