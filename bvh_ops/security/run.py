"""The scan and the audit against the real systems, as the CLI and the flows run them: the
platform database (``database_url``) and this host checked, waivers applied; for the audit, the
live state compared with the accepted, signature-checked baseline. Runs are kept in
``ops.security_runs`` (the trend) and findings go to alerting (source ``security``)."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

import psycopg

from bvh_ops.alerting.findings import Finding as AlertFinding
from bvh_ops.alerting.findings import report_findings
from bvh_ops.alerting.rules import Severity
from bvh_ops.config import Settings
from bvh_ops.dsn import redact_dsn
from bvh_ops.errors import NotFound
from bvh_ops.keys import load_or_create_host_key
from bvh_ops.pg.conn import connect
from bvh_ops.repository.open import trusted_keys
from bvh_ops.security import baseline as bl
from bvh_ops.security.checks.db import CHECKS, scan_database
from bvh_ops.security.checks.host import scan_host
from bvh_ops.security.model import NotChecked, Outcome, Waiver, alert_key, alert_severity, report
from bvh_ops.storage import ObjectStore, open_store

SOURCE = "security"


def _waivers(settings: Settings) -> list[Waiver]:
    return [Waiver(w.id, w.object, w.reason, w.expires) for w in settings.security.waivers]


def scan(settings: Settings, *, now: datetime | None = None) -> dict[str, Any]:
    """``{status, findings, checked, not_checked, counts, scanned_at, database}``."""
    now = now or datetime.now(UTC)
    outcome = Outcome()
    if settings.database_url is None:
        outcome.not_checked += [NotChecked(i, "database_url is not set") for ids, _ in CHECKS for i in ids]
        database = None
    else:
        dsn = settings.database_url.get_secret_value()
        database = redact_dsn(dsn)
        with connect(dsn, autocommit=True) as conn:
            outcome.extend(scan_database(conn, settings.security))
    outcome.extend(scan_host(settings, now))
    doc = report(outcome, _waivers(settings), now.date())
    doc["scanned_at"] = now.isoformat()
    doc["database"] = database
    return doc


def live_snapshot(settings: Settings) -> dict[str, Any]:
    with connect(settings.require_database_url(), autocommit=True) as conn:
        return bl.snapshot(conn)


def audit(settings: Settings, *, now: datetime | None = None, objects: ObjectStore | None = None) -> dict[str, Any]:
    """The scan plus ``drift`` against the accepted baseline (``None`` with ``baseline: None``
    when none was accepted yet). A tampered baseline raises IntegrityError: never compared."""
    now = now or datetime.now(UTC)
    doc = scan(settings, now=now)
    objects = objects or open_store(settings)
    trusted = trusted_keys(settings, load_or_create_host_key(settings.state_dir), objects)
    try:
        accepted = bl.load_accepted(objects, trusted)
    except NotFound as exc:
        doc["baseline"], doc["drift"] = None, None
        doc["not_checked"].append({"id": "DRIFT", "reason": str(exc)})
        return doc
    doc["baseline"] = {"key": accepted.key, "taken_at": accepted.taken_at, "sha256": accepted.sha256}
    doc["drift"] = bl.drift(accepted.snapshot, live_snapshot(settings))
    return doc


def accept_baseline(settings: Settings, *, now: datetime | None = None, objects: ObjectStore | None = None,
                    actor: str | None = None) -> dict[str, Any]:
    """Snapshot the live state, sign and store it as the accepted baseline, and record the
    acceptance in the audit trail (who, which object, its hash)."""
    from bvh_ops.audit.record import default_actor, record

    now = now or datetime.now(UTC)
    objects = objects or open_store(settings)
    key = load_or_create_host_key(settings.state_dir)
    actor = actor or default_actor()
    snap = live_snapshot(settings)
    done = bl.accept(objects, key, snap, now, actor)
    audited = record(settings, actor, "security.baseline.accept", done.key,
                     {"sha256": done.sha256, "key_id": done.signed_by}, now=now)
    return {"key": done.key, "sha256": done.sha256, "taken_at": done.taken_at, "signed_by": done.signed_by,
            "accepted_by": actor, "audited": audited,
            "sections": {k: len(v) for k, v in snap.items() if isinstance(v, dict) and k != "unreadable"},
            "unreadable": snap.get("unreadable", {})}


# -- ops database ---------------------------------------------------------------------------

def record_run(conn: psycopg.Connection, kind: str, doc: dict[str, Any], started: datetime,
               finished: datetime) -> str:
    run_id = f"{kind}-{started:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    drift = doc.get("drift")
    conn.execute("INSERT INTO ops.security_runs (run_id, kind, started_at, finished_at, status, counts, not_checked, "
                 "drift, report) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                 (run_id, kind, started, finished, doc["status"], json.dumps(doc["counts"]),
                  len(doc["not_checked"]), None if drift is None else len(drift), json.dumps(doc, default=str)))
    return run_id


def trend(conn: psycopg.Connection, limit: int = 12) -> list[dict[str, Any]]:
    """The last ``limit`` scan/audit runs, oldest first: counts per severity, not checked, drift."""
    found = conn.execute("SELECT run_id, kind, started_at, status, counts, not_checked, drift FROM ops.security_runs "
                         "WHERE kind IN ('scan', 'audit') ORDER BY started_at DESC LIMIT %s", (limit,)).fetchall()
    return [{"run_id": r[0], "kind": r[1], "started_at": r[2].isoformat(), "status": r[3], **r[4],
             "not_checked": r[5], "drift": r[6]} for r in reversed(found)]


def alert_findings(doc: dict[str, Any]) -> list[AlertFinding]:
    """The report's findings for alerting: critical/high -> critical, medium -> warning,
    low/info and waived -> info (the daily summary). Evidence carries no secrets."""
    out = []
    for f in doc["findings"]:
        waived = f.get("waived")
        detail = f"{f['evidence']}\nfix: {f['remediation']}" + (f"\nwaived: {waived}" if waived else "")
        out.append(AlertFinding(alert_key(f["id"], f["object"]),
                                Severity(alert_severity(f["severity"], waived is not None)),
                                f"{f['id']} {f['title']}: {f['object']}"[:300], detail))
    return out


def report_to_alerting(conn: psycopg.Connection, doc: dict[str, Any], now: datetime) -> dict:
    return report_findings(conn, SOURCE, alert_findings(doc), now)
