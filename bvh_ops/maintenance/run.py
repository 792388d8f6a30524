"""Carry a maintenance plan out on the target, safely, and keep the record.

The steps, in order:
1. take the target's ``maintenance`` advisory lock (at most one maintenance run per target);
2. wait up to ``wait_seconds`` for a backup holding the target's backup lock; still held: the run
   assesses but does nothing (every action skipped, the holder named);
3. read the facts, plan (pure), and outside the window or in a dry run stop at the plan;
4. per action, in autocommit (VACUUM and REINDEX CONCURRENTLY refuse a transaction block):
   backup lock re-checked, the object looked up again (dropped since the plan: skipped),
   ``SET lock_timeout`` / ``SET statement_timeout``, the statement, before/after figures; a lock
   wait that times out is reported and the plan goes on;
5. the run into ops.maintenance_runs, each action into the audit trail, the findings to alerting.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import errors as pgerr
from psycopg.conninfo import conninfo_to_dict

from bvh_ops.alerting.findings import Finding as AlertFinding
from bvh_ops.alerting.findings import report_findings
from bvh_ops.alerting.rules import Severity
from bvh_ops.config import Settings
from bvh_ops.dsn import location
from bvh_ops.maintenance.facts import gather
from bvh_ops.maintenance.plan import Action, Plan, plan
from bvh_ops.pg.lock import LOCK_CLASS, TargetLock

# TargetLock procedures that read the whole target: maintenance stays out of their way.
BACKUP_LOCKS = ("daily-backup", "physical-backup")
MAINTENANCE_LOCK = "maintenance"

_HOLDER_SQL = """
SELECT p.name, l.pid FROM pg_locks l
JOIN unnest(%s::text[]) AS p(name) ON l.objid = hashtext(p.name)::oid
WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objsubid = 2 AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY 1 LIMIT 1
"""


def backup_holder(conn: psycopg.Connection) -> str | None:
    """'daily-backup (pid 123)' when a backup holds the target's lock, else None."""
    row = conn.execute(_HOLDER_SQL, (list(BACKUP_LOCKS), LOCK_CLASS)).fetchone()
    return f"{row[0]} (pid {row[1]})" if row else None


def wait_for_backup(conn: psycopg.Connection, wait_seconds: float, *, poll_seconds: float = 5.0,
                    sleep: Callable[[float], None] = time.sleep) -> str | None:
    """Poll until no backup holds the target or ``wait_seconds`` passed; the holder, or None."""
    deadline = time.monotonic() + wait_seconds
    while (holder := backup_holder(conn)) is not None and time.monotonic() < deadline:
        sleep(min(poll_seconds, max(0.0, deadline - time.monotonic())))
    return holder


def _exists(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (_regname(name),)).fetchone()[0]


def _regname(dotted: str) -> str:
    schema, _, name = dotted.partition(".")
    return '"' + schema.replace('"', '""') + '"."' + name.replace('"', '""') + '"'


def measure(conn: psycopg.Connection, action: Action) -> dict[str, Any] | None:
    """The figures an action changes: dead tuples and last (auto)analyze of its table; for a
    reindex the index's size. None when the object is gone or locked (lock_timeout)."""
    try:
        if action.kind == "reindex":
            row = conn.execute("SELECT pg_relation_size(%s::regclass), i.indisvalid FROM pg_index i "
                               "WHERE i.indexrelid = %s::regclass", (_regname(action.object),) * 2).fetchone()
            return None if row is None else {"index_bytes": row[0], "valid": row[1]}
        # pg_stat_* are cumulative statistics: clear the snapshot so the figures are current.
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT n_dead_tup, n_live_tup, n_mod_since_analyze, "
                           "greatest(last_analyze, last_autoanalyze), greatest(last_vacuum, last_autovacuum) "
                           "FROM pg_stat_all_tables WHERE relid = %s::regclass", (_regname(action.object),)).fetchone()
    except (pgerr.LockNotAvailable, pgerr.UndefinedTable, pgerr.QueryCanceled):
        return None
    if row is None:
        return None
    return {"dead_tuples": row[0], "live_tuples": row[1], "modified_since_analyze": row[2],
            "last_analyze": row[3].isoformat() if row[3] else None,
            "last_vacuum": row[4].isoformat() if row[4] else None}


def _drop_leftover(conn: psycopg.Connection, action: Action) -> str:
    """A REINDEX CONCURRENTLY that failed leaves an invalid ``<index>_ccnew`` copy: drop it (it
    only costs writes), under the same lock_timeout."""
    schema, _, name = action.object.partition(".")
    rows = conn.execute("SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND NOT i.indisvalid "
                        "AND c.relname LIKE %s", (schema, name[:57] + "\\_ccnew%")).fetchall()
    dropped = []
    for (leftover,) in rows:
        try:
            conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_regname(schema + '.' + leftover)}")
            dropped.append(leftover)
        except psycopg.Error:
            pass
    return f"; dropped the invalid leftover {', '.join(dropped)}" if dropped else ""


def execute(conn: psycopg.Connection, action: Action, *, lock_timeout_ms: int,
            statement_timeout_seconds: float) -> dict[str, Any]:
    """One action -> {action, object, status, detail, seconds, before, after}. Never raises for
    a database refusal: the plan goes on."""
    out: dict[str, Any] = {"action": action.kind, "object": action.object, "status": "done", "detail": action.reason,
                           "seconds": 0.0, "before": None, "after": None, "sql": action.sql}
    if not _exists(conn, action.object) or not _exists(conn, action.table):
        return {**out, "status": "skipped", "detail": "dropped since the plan was made"}
    out["before"] = measure(conn, action)
    t0 = time.monotonic()
    try:
        conn.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
        conn.execute(f"SET statement_timeout = {int(statement_timeout_seconds * 1000)}")
        conn.execute(action.sql)
    except pgerr.LockNotAvailable:
        out.update(status="timed_out", detail=f"lock not granted within lock_timeout ({lock_timeout_ms} ms): "
                                              "another session holds a conflicting lock; retried next run")
    except pgerr.QueryCanceled as exc:
        out.update(status="timed_out", detail=f"statement_timeout ({statement_timeout_seconds:g} s): {exc}".strip())
    except (pgerr.UndefinedTable, pgerr.UndefinedObject):
        out.update(status="skipped", detail="dropped since the plan was made")
    except psycopg.Error as exc:
        out.update(status="failed", detail=f"{type(exc).__name__}: {str(exc).strip()[:300]}")
    finally:
        out["seconds"] = round(time.monotonic() - t0, 3)
        try:
            conn.execute("RESET lock_timeout")
            conn.execute("RESET statement_timeout")
        except psycopg.Error:
            pass
    if action.kind == "reindex" and out["status"] in ("timed_out", "failed"):
        out["detail"] += _drop_leftover(conn, action)
    conn.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
    out["after"] = measure(conn, action)
    conn.execute("RESET lock_timeout")
    return out


def _skipped(p: Plan, why: str) -> list[dict[str, Any]]:
    return [{"action": a.kind, "object": a.object, "status": "skipped", "detail": why, "seconds": 0.0,
             "before": None, "after": None, "sql": a.sql} for a in p.actions]


def target_name(dsn: str) -> str:
    info = conninfo_to_dict(dsn)
    return f"{location(dsn)}/{info.get('dbname') or info.get('user') or 'postgres'}"


def run_maintenance(settings: Settings, scope: str, *, dry_run: bool = False, now: datetime | None = None,
                    wait_seconds: float = 0.0, record_run: bool = True, stages: bool = True) -> dict[str, Any]:
    """Assess the target and carry the ``scope`` plan out (see the module's steps). Returns the
    report {run_id, scope, target, started_at, finished_at, dry_run, status, plan, actions,
    findings, notes}; ``status`` is done, skipped (backup held the target, or outside the window)
    or failed (an action failed). Weekly and monthly runs (``stages``) then verify the backups and
    clean up the disk (see ``weekly_stages``): their actions join ``actions``, their sections the
    report. Raises ConcurrencyError when another maintenance run holds the target."""
    cfg = settings.maintenance
    dsn = settings.require_database_url()
    started = datetime.now(UTC)
    now = now or started
    run_id = f"maint-{started:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    with TargetLock(dsn, MAINTENANCE_LOCK) as lock:
        conn = lock.conn
        assert conn is not None
        holder = wait_for_backup(conn, wait_seconds)
        facts = gather(conn, now=now, lock_timeout_ms=cfg.lock_timeout_ms,
                       statement_timeout_seconds=min(cfg.statement_timeout_seconds, 600.0))
        p = plan(facts, scope, cfg, now)
        notes = list(p.notes)
        status = "done"
        if holder is not None:
            why = f"{holder} holds the target: a backup runs, maintenance waits for the next run"
            actions, status = _skipped(p, why), "skipped"
            notes.append(why)
        elif not p.in_window:
            actions = _skipped(p, f"outside the maintenance window ({p.window})")
            status = "skipped" if p.actions else "done"
        elif dry_run:
            actions = _skipped(p, "dry run")
        else:
            actions = []
            for action in p.actions:
                if (holder := backup_holder(conn)) is not None:
                    actions.append(_skipped(Plan(p.scope, p.at, p.in_window, p.window, (action,), (), ()),
                                            f"{holder} started: the rest of the plan waits for the next run")[0])
                    continue
                actions.append(execute(conn, action, lock_timeout_ms=cfg.lock_timeout_ms,
                                       statement_timeout_seconds=cfg.statement_timeout_seconds))
            if any(a["status"] == "failed" for a in actions):
                status = "failed"
    findings = [f.to_json() for f in p.findings]
    sections: dict[str, Any] = {}
    if scope in ("weekly", "monthly") and stages:
        why_not = ("dry run" if dry_run else f"outside the maintenance window ({p.window})" if not p.in_window
                   else f"{holder} holds the target" if holder else "")
        more, more_findings, more_notes, sections = weekly_stages(settings, act=not why_not, why_not=why_not)
        actions += more
        findings += more_findings
        notes += more_notes
        if status != "skipped" and any(a["status"] == "failed" for a in more):
            status = "failed"
        elif status == "done" and why_not and not dry_run and any(a["status"] == "skipped" for a in more):
            status = "skipped"  # outside the window with nothing to do in the database, the verify not run: not "done"
    finished = datetime.now(UTC)
    report = {"run_id": run_id, "scope": scope, "target": target_name(dsn), "started_at": started.isoformat(),
              "finished_at": finished.isoformat(), "dry_run": dry_run, "status": status,
              "plan": p.to_json(), "actions": actions, "findings": findings, "notes": notes, **sections, "facts": {"tables": len(facts.tables), "indexes": len(facts.indexes),
                                        "sequences": len(facts.sequences), "sessions": len(facts.sessions),
                                        "slots": len(facts.slots)}}
    if record_run and not dry_run:
        report["recorded"] = store(settings, report, now)
    return report


def weekly_stages(settings: Settings, *, act: bool, why_not: str
                  ) -> tuple[list[dict[str, Any]], list[dict[str, str]], list[str], dict[str, Any]]:
    """The weekly stages after the database work, outside the target's maintenance lock (none of
    them touches the target): backup verification (bvh_ops.maintenance.backups), disk space
    (bvh_ops.maintenance.disk) and the platform's sessions and cache (bvh_ops.maintenance.app; a
    read-only review, so it runs in a dry run or outside the window too). Not ``act`` (dry run, outside the window): the mounts are still
    checked and the leftovers decided, nothing is verified or removed. A stage that fails is a
    failed action; the next stage runs regardless. (actions, findings, notes, report sections)."""
    from bvh_ops.maintenance.backups import skipped, verify_stage
    from bvh_ops.maintenance.disk import disk_stage

    actions: list[dict[str, Any]] = []
    findings: list[dict[str, str]] = []
    notes: list[str] = []
    sections: dict[str, Any] = {}
    if act:
        try:
            verified, more = verify_stage(settings)
        except Exception as exc:  # noqa: BLE001 - the plan goes on
            verified, more = [{**skipped("backups", ""), "status": "failed",
                               "detail": f"{type(exc).__name__}: {str(exc)[:300]}"}], []
        actions += verified
        notes += more
    else:
        actions.append(skipped("backups", why_not))
    try:
        cleaned, disk_findings, sections["disk"] = disk_stage(settings, act=act, why_not=why_not)
        actions += cleaned
        findings += disk_findings
    except Exception as exc:  # noqa: BLE001 - the plan goes on
        actions.append({"action": "cleanup", "object": "disk", "status": "failed", "seconds": 0.0,
                        "detail": f"{type(exc).__name__}: {str(exc)[:300]}", "before": None, "after": None,
                        "sql": None})
    try:
        from bvh_ops.maintenance.app import cache_stage

        cached, cache_findings, cache = cache_stage(settings)
        actions += cached
        findings += cache_findings
        if cache:
            sections["cache"] = cache
    except Exception as exc:  # noqa: BLE001 - the plan goes on
        actions.append({"action": "sessions", "object": "platform cache", "status": "failed", "seconds": 0.0,
                        "detail": f"{type(exc).__name__}: {str(exc)[:300]}", "before": None, "after": None,
                        "sql": None})
    return actions, findings, notes, sections


def alert_findings(report: dict[str, Any]) -> list[AlertFinding]:
    """The report's findings as alerting findings (keys: ``<kind>:<object>``, stable per object)."""
    import re

    out = {}
    for f in report["findings"]:
        key = re.sub(r"[^A-Za-z0-9_.:@/-]", "_", f"{f['kind']}:{f['object']}")[:200]
        title = f"{f['kind'].replace('_', ' ')}: {f['object']} ({report['target']})"
        out[key] = AlertFinding(key, Severity(f["severity"]), title[:200], f["detail"])
    return list(out.values())


def store(settings: Settings, report: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The run into ops.maintenance_runs, its actions into the audit trail, its findings to
    alerting (the complete set: what this run no longer sees is cleared). Failures here are
    reported in the result, never raised: the maintenance itself already happened."""
    import json

    from bvh_ops.audit.record import record
    from bvh_ops.opsdb.database import ops_database
    from bvh_ops.opsdb.migrations import migrate
    from bvh_ops.pg.conn import connect

    done: dict[str, Any] = {"run": False, "audit": 0, "findings": None}
    try:
        with ops_database(settings) as ops_dsn, connect(ops_dsn, autocommit=True) as ops:
            migrate(ops)
            ops.execute("INSERT INTO ops.maintenance_runs (run_id, scope, target, started_at, finished_at, dry_run, "
                        "report) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        (report["run_id"], report["scope"], report["target"], report["started_at"],
                         report["finished_at"], report["dry_run"], json.dumps(report, default=str)))
            done["run"] = True
            for a in report["actions"]:
                if a["status"] == "skipped" and a["detail"].startswith("outside"):
                    continue
                data = {k: a[k] for k in ("status", "detail", "seconds", "before", "after")}
                data.update(run_id=report["run_id"], target=report["target"])
                if record(settings, None, f"maintenance.{a['action']}", a["object"], data, conn=ops):
                    done["audit"] += 1
            done["findings"] = report_findings(ops, "maintenance", alert_findings(report), now)
    except Exception as exc:  # noqa: BLE001 - recording must not turn a done maintenance into a failure
        done["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return done
