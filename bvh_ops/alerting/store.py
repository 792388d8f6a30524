"""The alerter's durable copy in the ops database (migration 3): states, the event journal, the
notification log, silences, acknowledgements and incidents.

One evaluator at a time: the process that writes alert state holds a session advisory lock for
as long as it runs (two monitors would each count samples and each send). The operator's
commands (``bvh-ops alerts silence|ack``) write their own rows without the lock; the running
alerter reads silences every cycle and never overwrites an acknowledgement.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb

from bvh_ops.alerting.engine import JOURNAL_DAYS, Alerter, Changes, Incident, Notification, Snapshot
from bvh_ops.alerting.findings import finding_checks
from bvh_ops.alerting.routing import Message
from bvh_ops.alerting.rules import Severity
from bvh_ops.alerting.state import Alert, AlertState, Event, Phase, Silence
from bvh_ops.dsn import scrub
from bvh_ops.errors import BvhOpsError
from bvh_ops.monitoring.results import Check
from bvh_ops.opsdb.migrations import migrate
from bvh_ops.pg.conn import connect

# pg_try_advisory_lock key: "bvhalert" in ASCII.
EVALUATOR_LOCK = 0x62766861_6C657274


class EvaluatorBusy(BvhOpsError):
    """Another process evaluates the alerts (a running monitor or monitoring flow)."""

    exit_code = 3


def _alert(row: dict) -> Alert:
    return Alert(row["fingerprint"], row["name"], Severity(row["severity"]), row["service"], row["check_name"],
                 tuple(sorted((row["labels"] or {}).items())), row["detail"])


def load(conn: psycopg.Connection, now: datetime) -> Snapshot:
    """Everything the alerter needs to carry on where the last one stopped."""
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    states = {}
    for r in cur.execute("SELECT * FROM ops.alert_states WHERE phase <> 'inactive'"):
        states[r["fingerprint"]] = AlertState(_alert(r), Phase(r["phase"]), r["since"], r["bad"], r["good"],
                                              r["silenced"], r["inhibited"], r["bad_since"], r["good_since"])
    horizon = now - timedelta(days=JOURNAL_DAYS)
    events = [Event(r["kind"], _alert(r), r["at"], r["silenced"], r["inhibited"], r["since"]) for r in cur.execute(
        """SELECT e.* FROM ops.alert_events e
           WHERE e.at >= %s OR (e.kind = 'fired' AND EXISTS (
               SELECT 1 FROM ops.alert_states s WHERE s.fingerprint = e.fingerprint AND s.phase = 'firing'))
           ORDER BY e.at""", (horizon,))]
    notifications = {}
    for r in cur.execute("SELECT * FROM ops.notifications WHERE status = 'pending' OR created_at >= %s",
                         (horizon,)):
        m = Message(r["key"], r["channel"], Severity(r["severity"]), r["kind"], r["subject"], tuple(r["lines"]),
                    tuple(states[fp].alert for fp in r["fingerprints"] if fp in states))
        notifications[r["key"]] = Notification(m, r["created_at"], r["next_attempt_at"], r["status"], r["attempts"],
                                               r["last_error"], r["sent_at"])
    incidents = {r["fingerprint"]: Incident(r["fingerprint"], r["name"], r["service"], r["check_name"],
                                            r["started_at"], r["fired_detail"])
                 for r in cur.execute("SELECT * FROM ops.incidents WHERE ended_at IS NULL")}
    return Snapshot(states, events, notifications, incidents, active_silences(conn, now))


def active_silences(conn: psycopg.Connection, now: datetime) -> list[Silence]:
    rows = conn.execute("SELECT until, name, service, check_name, comment, fingerprint FROM ops.silences "
                        "WHERE starts_at <= %s AND until > %s", (now, now)).fetchall()
    return [Silence(until, name, service, check, comment, fingerprint) for until, name, service, check, comment,
            fingerprint in rows]


def write(conn: psycopg.Connection, changes: Changes, now: datetime) -> None:
    """Upsert what changed, in one transaction (every statement is idempotent)."""
    with conn.transaction():
        if changes.states:
            with conn.cursor() as cur:
                cur.executemany(
                    """INSERT INTO ops.alert_states (fingerprint, name, severity, service, check_name, labels,
                           detail, phase, since, bad, good, silenced, inhibited, bad_since, good_since, updated_at)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                       ON CONFLICT (fingerprint) DO UPDATE SET name = EXCLUDED.name, severity = EXCLUDED.severity,
                           labels = EXCLUDED.labels, detail = EXCLUDED.detail, phase = EXCLUDED.phase,
                           since = EXCLUDED.since, bad = EXCLUDED.bad, good = EXCLUDED.good,
                           silenced = EXCLUDED.silenced, inhibited = EXCLUDED.inhibited,
                           bad_since = EXCLUDED.bad_since, good_since = EXCLUDED.good_since,
                           updated_at = EXCLUDED.updated_at,
                           -- an acknowledgement lasts for the episode it acknowledged
                           acknowledged_at = CASE WHEN EXCLUDED.phase IN ('firing', 'pending')
                                                  THEN ops.alert_states.acknowledged_at END,
                           acknowledged_by = CASE WHEN EXCLUDED.phase IN ('firing', 'pending')
                                                  THEN ops.alert_states.acknowledged_by END""",
                    [(s.alert.fingerprint, s.alert.name, str(s.alert.severity), s.alert.service, s.alert.check,
                      Jsonb(dict(s.alert.labels)), s.alert.detail, str(s.phase), s.since, s.bad, s.good, s.silenced,
                      s.inhibited, s.bad_since, s.good_since, now) for s in changes.states.values()])
        if changes.events:
            with conn.cursor() as cur:
                cur.executemany(
                    """INSERT INTO ops.alert_events (fingerprint, kind, at, name, severity, service, check_name,
                           labels, detail, silenced, inhibited, since)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
                    [(e.alert.fingerprint, e.kind, e.at, e.alert.name, str(e.alert.severity), e.alert.service,
                      e.alert.check, Jsonb(dict(e.alert.labels)), e.alert.detail, e.silenced, e.inhibited, e.since)
                     for e in changes.events])
        if changes.notifications:
            with conn.cursor() as cur:
                cur.executemany(
                    """INSERT INTO ops.notifications (key, channel, severity, kind, subject, lines, fingerprints,
                           created_at, status, attempts, next_attempt_at, last_error, sent_at)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                       ON CONFLICT (key) DO UPDATE SET status = EXCLUDED.status, attempts = EXCLUDED.attempts,
                           next_attempt_at = EXCLUDED.next_attempt_at, last_error = EXCLUDED.last_error,
                           sent_at = EXCLUDED.sent_at""",
                    [(n.message.key, n.message.channel, str(n.message.severity), n.message.kind, n.message.subject,
                      Jsonb(list(n.message.lines)), [a.fingerprint for a in n.message.alerts], n.created_at,
                      n.status, n.attempts, n.next_attempt_at, n.last_error, n.sent_at)
                     for n in changes.notifications.values()])
        if changes.incidents:
            with conn.cursor() as cur:
                cur.executemany(
                    """INSERT INTO ops.incidents (fingerprint, name, service, check_name, started_at, fired_detail,
                           ended_at, resolved_detail)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                       ON CONFLICT (fingerprint, started_at) DO UPDATE SET ended_at = EXCLUDED.ended_at,
                           resolved_detail = EXCLUDED.resolved_detail""",
                    [(i.fingerprint, i.name, i.service, i.check, i.started_at, i.fired_detail, i.ended_at,
                      i.resolved_detail) for i in changes.incidents])


@dataclass
class Persistence:
    """The alerter's write-through to the ops database: attached when the database runs (and
    the evaluator lock is free), detached after any failure and re-attached on a later sync.
    Nothing is lost while detached: unsaved changes wait in the alerter."""

    dsn: Callable[[], str | None]
    conn: psycopg.Connection | None = None
    attached_once: bool = False
    problem: str | None = None
    _connected_to: str | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._next_try = 0.0   # monotonic: after a failure, wait RECONNECT_SECONDS before the next

    RECONNECT_SECONDS = 15.0

    def open(self, now: datetime) -> Snapshot | None:
        """Connect, migrate, take the evaluator lock and load; None (with ``problem``) when the
        ops database is not running or unreachable. Raises EvaluatorBusy."""
        with self._lock:
            if not self._connect():
                return None
            try:
                snap = load(self.conn, now)
            except psycopg.Error as exc:
                self._fail(exc)
                return None
            self.attached_once = True
            return snap

    def _connect(self) -> bool:
        if self.conn is not None:
            return True
        if time.monotonic() < self._next_try:
            return False   # the last attempt failed just now: no connect timeout per delivery
        if (dsn := self.dsn()) is None:
            self.problem = "ops database not running: alert state kept in memory only"
            return False
        self._connected_to = dsn
        try:
            conn = connect(dsn, autocommit=True, timeout=5)
        except (BvhOpsError, psycopg.Error, OSError) as exc:
            self._fail(exc)
            return False
        try:
            migrate(conn)
            if not conn.execute("SELECT pg_try_advisory_lock(%s)", (EVALUATOR_LOCK,)).fetchone()[0]:
                conn.close()
                raise EvaluatorBusy("alerts are evaluated by another running monitor or monitoring flow "
                                    "(one evaluator at a time); this process probes only")
        except psycopg.Error as exc:
            conn.close()
            self._fail(exc)
            return False
        self.conn, self.problem = conn, None
        return True

    def sync(self, alerter: Alerter, now: datetime) -> str | None:
        """Write what the alerter has not saved (everything, the first time after a start without
        the database) and read the silences; returns None or why it could not."""
        with self._lock:
            first = self.conn is None and not self.attached_once
            if not self._connect():
                return self.problem
            changes = alerter.everything() if first else alerter.take_unsaved()
            if first:
                alerter.take_unsaved()
                self.attached_once = True
            try:
                write(self.conn, changes, now)
                alerter.set_silences(active_silences(self.conn, now))
            except psycopg.Error as exc:
                alerter.give_back(changes)
                self._fail(exc)
                return self.problem
            return None

    def finding_checks(self, now: datetime) -> list[Check]:
        """Findings other procedures reported, as this cycle's samples; none while detached
        (their alerts keep their state: no sample is not a good sample)."""
        with self._lock:
            if self.conn is None:
                return []
            try:
                return finding_checks(self.conn, now)
            except psycopg.Error as exc:
                self._fail(exc)
                return []

    def _fail(self, exc: BaseException) -> None:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        self.problem = "ops database: " + (scrub(reason, self._connected_to) if self._connected_to else reason)
        self._next_try = time.monotonic() + self.RECONNECT_SECONDS
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
            self.conn = None

    def close(self) -> None:
        with self._lock:
            if self.conn is not None:
                try:
                    # Released here, not left to the session's end (the server ends a backend
                    # in its own time after its client has gone): the next evaluator may start at once.
                    self.conn.execute("SELECT pg_advisory_unlock(%s)", (EVALUATOR_LOCK,))
                except psycopg.Error:
                    pass  # the session is gone, and its lock with it
                try:
                    self.conn.close()
                except psycopg.Error:
                    pass
                self.conn = None


# -- what operators' commands read and write (no evaluator lock) ------------------------------

def list_alerts(conn: psycopg.Connection, *, include_resolved: bool = False) -> list[dict]:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    phases = ("pending", "firing", "resolved") if include_resolved else ("pending", "firing")
    rows = cur.execute("SELECT * FROM ops.alert_states WHERE phase = ANY(%s) "
                       "ORDER BY (severity = 'critical') DESC, since", (list(phases),)).fetchall()
    return [{"fingerprint": r["fingerprint"], "name": r["name"], "service": r["service"], "check": r["check_name"],
             "severity": r["severity"], "state": r["phase"], "since": r["since"].isoformat(),
             "silenced": r["silenced"], "acknowledged": r["acknowledged_at"] is not None,
             "acknowledged_by": r["acknowledged_by"], "inhibited": r["inhibited"], "detail": r["detail"]}
            for r in rows]


def add_silence(conn: psycopg.Connection, silence: Silence, starts_at: datetime, created_by: str) -> int:
    return conn.execute(
        "INSERT INTO ops.silences (name, service, check_name, fingerprint, starts_at, until, comment, created_by) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (silence.name, silence.service, silence.check, silence.fingerprint, starts_at, silence.until, silence.comment,
         created_by)).fetchone()[0]


def acknowledge(conn: psycopg.Connection, fingerprint: str, by: str, at: datetime) -> dict | None:
    """Acknowledge a pending or firing alert (a unique fingerprint prefix is enough); None when
    no such alert is active."""
    rows = conn.execute("SELECT fingerprint FROM ops.alert_states WHERE fingerprint LIKE %s "
                        "AND phase IN ('pending', 'firing')", (fingerprint.replace("%", "") + "%",)).fetchall()
    if len(rows) != 1:
        return None
    conn.execute("UPDATE ops.alert_states SET acknowledged_at = %s, acknowledged_by = %s WHERE fingerprint = %s",
                 (at, by, rows[0][0]))
    return next(a for a in list_alerts(conn) if a["fingerprint"] == rows[0][0])


def incidents(conn: psycopg.Connection, since: datetime) -> list[dict]:
    """Incidents that started or were still open since ``since``, with the notifications sent."""
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    rows = cur.execute(
        """SELECT i.*, (SELECT count(*) FROM ops.notifications n
                        WHERE i.fingerprint = ANY(n.fingerprints) AND n.status = 'sent'
                          AND n.created_at >= i.started_at
                          -- up to the next episode of the same alert (the resolved notice is
                          -- sent after the fault ended: resolve_after good samples later)
                          AND n.created_at < COALESCE((SELECT min(j.started_at) FROM ops.incidents j
                                                       WHERE j.fingerprint = i.fingerprint
                                                         AND j.started_at > i.started_at), 'infinity')
                       ) AS notifications_sent
           FROM ops.incidents i WHERE i.started_at >= %s OR i.ended_at IS NULL OR i.ended_at >= %s
           ORDER BY i.started_at""", (since, since)).fetchall()
    return [{"id": r["id"], "name": r["name"], "service": r["service"], "check": r["check_name"],
             "started_at": r["started_at"].isoformat(),
             "ended_at": r["ended_at"].isoformat() if r["ended_at"] else None,
             "duration_seconds": (r["ended_at"] - r["started_at"]).total_seconds() if r["ended_at"] else None,
             "fired": r["fired_detail"], "resolved_by": r["resolved_detail"],
             "notifications_sent": r["notifications_sent"]} for r in rows]


def notification_log(conn: psycopg.Connection, since: datetime) -> list[dict]:
    rows = conn.execute("SELECT key, channel, kind, subject, status, attempts, last_error, created_at, sent_at "
                        "FROM ops.notifications WHERE created_at >= %s ORDER BY created_at", (since,)).fetchall()
    cols = ("key", "channel", "kind", "subject", "status", "attempts", "last_error", "created_at", "sent_at")
    return [dict(zip(cols, r, strict=True)) for r in rows]


def dumps(rows: Sequence[dict]) -> str:
    return json.dumps(rows, default=str)
