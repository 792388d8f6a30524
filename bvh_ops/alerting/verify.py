"""A verify's outcome as alerting findings: a failed verify is the runbook's critical "data
corruption detected" (the repository layer knows nothing of alerting; its callers report here)."""

from __future__ import annotations

from bvh_ops.repository.verify import VerifyResult


def report_verify(settings, results: list[VerifyResult]) -> str | None:
    """A failed verify is the runbook's critical "data corruption detected": reported per backup
    (key ``verify:<backup_id>``, the WAL archive as ``verify:wal``) as a finding where the ops
    database runs (the monitor alerts on it); a passing verify of the same backup clears it.
    Returns None, or why it could not report (never raises: the verify's result comes first)."""
    from datetime import UTC, datetime

    from bvh_ops.alerting.findings import Finding, clear_finding, raise_finding
    from bvh_ops.alerting.rules import Severity
    from bvh_ops.opsdb.database import running_dsn
    from bvh_ops.pg.conn import connect

    dsn = running_dsn(settings)
    if dsn is None:
        return None
    by_backup: dict[str, list[VerifyResult]] = {}
    for r in results:
        by_backup.setdefault(r.backup_id or "wal", []).append(r)
    now = datetime.now(UTC)
    try:
        with connect(dsn, autocommit=True, timeout=5) as conn:
            for bid, rs in by_backup.items():
                bad = [r for r in rs if not r.ok]
                key = f"verify:{bid}"
                if bad:
                    what = "the WAL archive" if bid == "wal" else f"backup {bid}"
                    raise_finding(conn, "verify", Finding(
                        key, Severity.CRITICAL, f"data corruption detected: {what} failed verify",
                        "; ".join(f"{r.object}: {r.status} {r.detail}".strip() for r in bad[:5])[:1000]), now)
                else:
                    clear_finding(conn, "verify", key, now)
    except Exception as exc:  # noqa: BLE001 - never hides the verify's own result
        return type(exc).__name__
    return None
