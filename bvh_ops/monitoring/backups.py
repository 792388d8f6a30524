"""The backups probe: is the promise kept? Age of the newest trusted daily (logical) backup, of
the newest physical backup (incremental, or the full an incremental run takes when no chain
exists), WAL archiving lag (now minus the newest archived file's time), and the newest passed DR
drill. One repository listing plus manifest reads, one WAL listing, one ops-database query; no
key needed. Only trusted manifests count: a forged one never makes backups look fresh.

The ops database is read where it already runs (``ops_database_url``, or the embedded cluster in
the state directory when it is up); a health check never starts it. It is queried read-only
(``drill.ops.previous_drills`` would create the schema, a write on every cycle).
"""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bvh_ops.config import Settings
from bvh_ops.dsn import scrub
from bvh_ops.errors import BvhOpsError
from bvh_ops.monitoring import thresholds
from bvh_ops.monitoring.results import Check, Status
from bvh_ops.monitoring.thresholds import Limits
from bvh_ops.opsdb.database import running_dsn
from bvh_ops.pg.conn import connect_error
from bvh_ops.repository.open import open_repository
from bvh_ops.repository.repo import BackupRecord
from bvh_ops.wal.archive import scan_archive

SERVICE = "backups"
REPO_CHECKS = ("backups.daily", "backups.incremental", "backups.wal_archiving")
PHYSICAL_KINDS = ("full", "incremental")


def probe_backups(settings: Settings, now: datetime, limits: Limits) -> list[Check]:
    checks = _repository_checks(settings, now, limits) + [_drill_check(settings, now, limits)]
    if settings.replica_repository:
        checks.append(replica_wal_check(settings, now, limits))
    return checks


def replica_wal_check(settings: Settings, now: datetime, limits: Limits) -> Check:
    """The replica's WAL lag: the age of the oldest archived WAL file not yet on the replica
    (0 when in step), critical beyond the RPO objective (that WAL exists in one region only).
    A replica that cannot be read is UNKNOWN, never OK."""
    from bvh_ops.replica.run import wal_lag

    name, rpo = "backups.replica_wal", limits.rpo_objective_seconds
    try:
        lag = wal_lag(settings, now)
    except BvhOpsError as exc:
        return Check(name, SERVICE, Status.UNKNOWN, None, "s", f"cannot read the replica's WAL: {exc}")
    status = Status.CRITICAL if lag.wal_seconds > rpo else Status.OK
    if not lag.wal_objects:
        return Check(name, SERVICE, status, 0.0, "s", f"replica WAL in step (RPO objective {rpo:g} s)")
    return Check(name, SERVICE, status, round(lag.wal_seconds, 1), "s",
                 f"{lag.wal_objects} WAL object(s) not yet on the replica, oldest committed {lag.wal_seconds:.0f} s "
                 f"ago (RPO objective {rpo:g} s): `bvh-ops replicate`")


def _repository_checks(settings: Settings, now: datetime, limits: Limits) -> list[Check]:
    if not settings.repository:
        return [Check(n, SERVICE, Status.UNKNOWN, None, "", "repository is not set") for n in REPO_CHECKS]
    try:
        repo, _ = open_repository(settings)
        records = repo.list_backups()
        archive = scan_archive(repo.store)
    except BvhOpsError as exc:
        return [Check(n, SERVICE, Status.UNKNOWN, None, "", f"cannot read the repository: {exc}") for n in REPO_CHECKS]
    trusted = [r for r in records if r.status == "complete" and r.signature_ok and r.finished_at]
    untrusted = sum(1 for r in records if r.status == "complete" and not r.signature_ok)
    note = f"; {untrusted} backup(s) with an untrusted signature ignored" if untrusted else ""
    daily = _newest(trusted, ("logical",))
    physical = _newest(trusted, PHYSICAL_KINDS)
    return [
        _age_check("backups.daily", "daily backup", daily, now, limits.daily_backup_max_age_hours, note),
        _age_check("backups.incremental", "physical backup", physical, now,
                   limits.incremental_backup_max_age_hours + limits.incremental_backup_grace_hours, note),
        _wal_check(archive, now, limits),
    ]


def _newest(records: list[BackupRecord], kinds: tuple[str, ...]) -> BackupRecord | None:
    found = [r for r in records if r.kind in kinds]
    return max(found, key=lambda r: (r.finished_at, r.backup_id)) if found else None


def _age_check(name: str, what: str, rec: BackupRecord | None, now: datetime, max_hours: float, note: str) -> Check:
    if rec is None:
        return Check(name, SERVICE, Status.CRITICAL, None, "h", f"no trusted {what} in the repository{note}")
    hours = (now - rec.finished_at).total_seconds() / 3600
    status = thresholds.age(hours * 3600, max_hours * 3600)
    return Check(name, SERVICE, status, round(hours, 2), "h",
                 f"newest trusted {what} {rec.backup_id} finished {hours:.1f} h ago (max {max_hours:g} h){note}")


def _wal_check(archive: dict, now: datetime, limits: Limits) -> Check:
    committed = [f for f in archive.values() if f.has_object and f.has_index and f.modified]
    if not committed:
        return Check("backups.wal_archiving", SERVICE, Status.CRITICAL, None, "s", "no WAL archived in the repository")
    newest = max(committed, key=lambda f: f.modified)
    lag = max(0.0, (now - newest.modified).total_seconds())
    status = thresholds.wal_lag(lag, limits.rpo_objective_seconds)
    return Check("backups.wal_archiving", SERVICE, status, round(lag, 1), "s",
                 f"newest archived WAL file {newest.name} stored {lag:.0f} s ago "
                 f"(RPO objective {limits.rpo_objective_seconds:g} s)")


def ops_dsn(settings: Settings) -> str | None:
    """The ops database's DSN where it runs now; None when it would have to be started."""
    return running_dsn(settings)


def _drill_check(settings: Settings, now: datetime, limits: Limits) -> Check:
    name, max_s = "backups.drill", limits.drill_max_age_days * 86400
    dsn = ops_dsn(settings)
    if dsn is None:
        return Check(name, SERVICE, Status.UNKNOWN, None, "days",
                     "ops database not running (set ops_database_url, or start the embedded one)")
    try:
        with psycopg.connect(dsn, connect_timeout=5, autocommit=True, application_name="bvh-ops-monitor") as conn:
            conn.execute("SET statement_timeout = 5000")
            row = conn.execute(
                "SELECT (SELECT max(finished_at) FROM ops.drills WHERE passed), "
                "(SELECT passed FROM ops.drills ORDER BY finished_at DESC LIMIT 1)").fetchone()
    except psycopg.errors.UndefinedTable:
        row = (None, None)  # no drill ever recorded here
    except psycopg.OperationalError as exc:
        if f'database "{conninfo_to_dict(dsn).get("dbname")}" does not exist' in str(exc):
            row = (None, None)  # the ops database was never created: no drill ever recorded
        else:
            return Check(name, SERVICE, Status.UNKNOWN, None, "days", f"ops database: {connect_error(exc, dsn)}")
    except psycopg.Error as exc:
        return Check(name, SERVICE, Status.UNKNOWN, None, "days", f"ops database: {scrub(str(exc), dsn)[:200]}")
    passed_at, newest_passed = row
    age_s = (now - passed_at).total_seconds() if passed_at else None
    status = thresholds.drill(age_s, max_s, newest_failed=newest_passed is False)
    if passed_at is None:
        return Check(name, SERVICE, status, None, "days", "no DR drill has passed (run `bvh-ops drill`)")
    days = age_s / 86400
    failed = "; the newest drill since FAILED" if newest_passed is False else ""
    return Check(name, SERVICE, status, round(days, 2), "days",
                 f"newest passed DR drill finished {days:.1f} days ago (max {limits.drill_max_age_days:g}){failed}")
