"""Findings: what other procedures report to alerting (the security scan, capacity planning,
log analysis, a failed drill or verify). A procedure writes its findings into the ops database;
the monitor turns each active one into an alert on its next cycle — critical at once, warnings
in the hourly batch, info in the daily summary — and a cleared one into the alert's resolution.

Two ways to report: ``report_findings`` with the complete set a run found (what is missing from
it is cleared: a scan that no longer sees a problem fixed it), or ``raise_finding`` /
``clear_finding`` one at a time. Findings carry no secrets: callers put evidence in ``detail``,
never a password or a token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from bvh_ops.alerting.rules import Severity
from bvh_ops.monitoring.results import Check, Status

# A cleared finding is reported as a good sample this long, so its alert resolves even if the
# monitor was down when it cleared.
CLEARED_SHOWN = timedelta(days=1)
_KEY = re.compile(r"[A-Za-z0-9_.:@/-]{1,200}")


@dataclass(frozen=True)
class Finding:
    key: str              # stable within the source: "hba.trust:host all all 0.0.0.0/0"
    severity: Severity
    title: str            # one line: the alert's name ("pg_hba allows trust from any address")
    detail: str = ""      # evidence and the fix, for the notification body

    def __post_init__(self) -> None:
        if not _KEY.fullmatch(self.key):
            raise ValueError(f"finding key '{self.key[:60]}': 1-200 characters of letters, digits and _.:@/-")
        if not self.title.strip() or "\n" in self.title:
            raise ValueError("a finding's title is one non-empty line")


def _check_source(source: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,39}", source):
        raise ValueError(f"finding source '{source[:60]}': lower-case letters, digits, _ and -")
    return source


def report_findings(conn: psycopg.Connection, source: str, findings: Iterable[Finding], now: datetime) -> dict:
    """The complete set ``source`` found now: upserted; its earlier findings not in the set are
    cleared. Returns counts {active, new, cleared}."""
    _check_source(source)
    items = {f.key: f for f in findings}
    with conn.transaction():
        before = {r[0] for r in conn.execute(
            "SELECT key FROM ops.findings WHERE source = %s AND cleared_at IS NULL", (source,))}
        for f in items.values():
            _upsert(conn, source, f, now)
        gone = sorted(before - set(items))
        if gone:
            conn.execute("UPDATE ops.findings SET cleared_at = %s WHERE source = %s AND key = ANY(%s) "
                         "AND cleared_at IS NULL", (now, source, gone))
    return {"active": len(items), "new": len(set(items) - before), "cleared": len(gone)}


def raise_finding(conn: psycopg.Connection, source: str, finding: Finding, now: datetime) -> None:
    _check_source(source)
    _upsert(conn, source, finding, now)


def clear_finding(conn: psycopg.Connection, source: str, key: str, now: datetime) -> bool:
    """True when an active finding was cleared."""
    cur = conn.execute("UPDATE ops.findings SET cleared_at = %s WHERE source = %s AND key = %s "
                       "AND cleared_at IS NULL", (now, _check_source(source), key))
    return cur.rowcount > 0


def _upsert(conn: psycopg.Connection, source: str, f: Finding, now: datetime) -> None:
    conn.execute(
        """INSERT INTO ops.findings (source, key, severity, title, detail, first_seen, last_seen)
           VALUES (%s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (source, key) DO UPDATE SET severity = EXCLUDED.severity, title = EXCLUDED.title,
               detail = EXCLUDED.detail, last_seen = EXCLUDED.last_seen,
               first_seen = CASE WHEN ops.findings.cleared_at IS NULL THEN ops.findings.first_seen
                                 ELSE EXCLUDED.first_seen END,
               cleared_at = NULL""",
        (source, f.key, str(f.severity), f.title.strip(), f.detail, now, now))


_STATUS = {Severity.CRITICAL: Status.CRITICAL, Severity.WARNING: Status.WARNING, Severity.INFO: Status.WARNING}


def check_name(source: str, key: str, severity: Severity) -> str:
    """``finding:<source>:<key>`` (critical, warning); ``notice:<source>:<key>`` (info)."""
    return f"{'notice' if severity is Severity.INFO else 'finding'}:{source}:{key}"


def finding_checks(conn: psycopg.Connection, now: datetime) -> list[Check]:
    """Active findings as bad samples, findings cleared within CLEARED_SHOWN as good ones."""
    rows = conn.execute("SELECT source, key, severity, title, detail, cleared_at FROM ops.findings "
                        "WHERE cleared_at IS NULL OR cleared_at >= %s", (now - CLEARED_SHOWN,)).fetchall()
    out = []
    for source, key, severity, title, detail, cleared in rows:
        sev = Severity(severity)
        text = title + (f"\n{detail}" if detail else "")
        status = Status.OK if cleared is not None else _STATUS[sev]
        out.append(Check(check_name(source, key, sev), source, status, None, "", text))
    return out
