"""The analysis, one pass: every log detector is fed each record once (in time order); the
ledger detectors (and the admin-hours one) are fed the platform database's rows when a
connection is given; degradation compares with the previous week's records when given."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import psycopg

from bvh_ops.alerting.findings import Finding
from bvh_ops.alerting.rules import Severity
from bvh_ops.config import LogAnalysisSettings
from bvh_ops.logs.analysis.detection import Detection, Detector
from bvh_ops.logs.analysis.fraud import PurchaseVelocity, SharedIp, Structuring
from bvh_ops.logs.analysis.ledger import AdminBalance, DepositWithdrawal
from bvh_ops.logs.analysis.performance import EndpointHours, degradation
from bvh_ops.logs.analysis.security import (
    AccessViolations,
    AdminOffHours,
    BruteForce,
    CredentialStuffing,
    KnownBadIps,
    NewCountry,
)
from bvh_ops.logs.analysis.sources import ledger_records
from bvh_ops.logs.record import Record

SOURCE = "log-analysis"  # the alerting source name of these findings
LOG_DETECTORS = (BruteForce, CredentialStuffing, KnownBadIps, AccessViolations, NewCountry,
                 Structuring, SharedIp, PurchaseVelocity)
LEDGER_DETECTORS = (DepositWithdrawal, AdminBalance)


def analyze(records: Iterable[Record], db_conn: psycopg.Connection | None, config: LogAnalysisSettings,
            since: datetime, now: datetime, *, baseline: Iterable[Record] | None = None) -> dict[str, Any]:
    """{findings: [...], skipped: [{detector, reason}], performance: [endpoint-hour rows], records: n}
    over records in [since, now)."""
    log_detectors: list[Detector] = [cls(config) for cls in LOG_DETECTORS]
    admin_hours = AdminOffHours(config)
    endpoints = EndpointHours(config)
    seen = 0
    for r in records:
        if not since <= r.at < now:
            continue
        seen += 1
        for d in log_detectors:
            d.feed(r)
        admin_hours.feed(r)
        endpoints.feed(r)

    skipped: list[dict[str, str]] = []
    ledger: list[Detector] = [cls(config) for cls in LEDGER_DETECTORS]
    if db_conn is not None:
        # Deposits before `since` can still be cashed out inside it: read the cash-out window earlier.
        for r in ledger_records(db_conn, since - timedelta(hours=config.cashout_hours), now):
            for d in ledger:
                d.feed(r)
            if r.at >= since:
                admin_hours.feed(r)
    else:
        skipped += [{"detector": d.name, "reason": "no platform database connection"} for d in ledger]
        ledger = []

    detections: list[Detection] = []
    for d in [*log_detectors, admin_hours, endpoints, *ledger]:
        found = d.finish(now)
        if d in ledger:  # the early read was context only: report what happened since `since`
            found = [x for x in found if x.last_seen >= since]
        detections += found
        if d.skipped:
            skipped.append({"detector": d.name, "reason": d.skipped})

    previous = EndpointHours(config)
    for r in baseline or ():
        previous.feed(r)
    if previous.hours:
        detections += degradation(endpoints, previous, config)
    else:
        skipped.append({"detector": "degradation", "reason": "no performance records from the previous week"})

    return {"since": since.isoformat(), "now": now.isoformat(), "records": seen,
            "findings": [d.as_dict() for d in detections], "skipped": skipped, "performance": endpoints.table()}


_BAD_KEY = re.compile(r"[^A-Za-z0-9_.:@/-]")


def alert_findings(findings: list[dict[str, Any]]) -> list[Finding]:
    """Analysis findings as alerting findings (key ``<detector>:<subject>``), evidence in the detail."""
    out = []
    for f in findings:
        key = _BAD_KEY.sub("_", f"{f['detector']}:{f['subject']}")[:200]
        evidence = "\n".join(json.dumps(e, default=str, sort_keys=True)[:400] for e in f["evidence"][:3])
        detail = (f"{f['detail']}\n{f['count']} records, {f['first_seen']} .. {f['last_seen']}\n"
                  f"evidence:\n{evidence}")
        out.append(Finding(key=key, severity=Severity(f["severity"]), title=f"{f['detector']}: {f['subject']}",
                           detail=detail))
    return out
