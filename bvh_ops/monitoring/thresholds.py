"""Thresholds and the pure judgements over them: a measured value in, a status out.

The runbook's numbers ("alert if > 85 %") are where ``warning`` starts; a second, configurable
level is ``critical``. Levels are exclusive (``> 85`` warns, ``85`` does not), as in the runbook.
Backup ages are a promise kept or broken (a daily backup older than 26 h *is* the missed backup),
so they are ok or critical. Limits with no runbook number (the database's and the cache's) are
named constants in ``Limits``, overridable by whoever builds one.
"""

from __future__ import annotations

from dataclasses import dataclass

from bvh_ops.config import Settings
from bvh_ops.monitoring.results import Status

# PostgreSQL's transaction ids wrap at 2^31 (https://www.postgresql.org/docs/current/routine-vacuuming.html#VACUUM-FOR-WRAPAROUND).
XID_WRAP = 2**31


@dataclass(frozen=True)
class Limits:
    response_time_warning_ms: float = 1000.0
    cpu_warning_percent: float = 80.0
    cpu_critical_percent: float = 95.0
    memory_warning_percent: float = 85.0
    memory_critical_percent: float = 95.0
    disk_warning_percent: float = 85.0
    disk_critical_percent: float = 95.0
    daily_backup_max_age_hours: float = 26.0
    incremental_backup_max_age_hours: float = 6.0
    incremental_backup_grace_hours: float = 1.0
    drill_max_age_days: float = 8.0
    rpo_objective_seconds: float = 300.0
    # Load average (1 min) per core: more runnable processes than cores means waiting.
    load_per_core_warning: float = 1.5
    load_per_core_critical: float = 3.0
    # Client connections as a share of max_connections (%).
    connections_warning_percent: float = 80.0
    connections_critical_percent: float = 95.0
    # A transaction running this long (s) holds back vacuum and locks.
    transaction_warning_seconds: float = 300.0
    transaction_critical_seconds: float = 3600.0
    # Idle in transaction this long (s): an application that forgot to commit.
    idle_in_transaction_warning_seconds: float = 60.0
    idle_in_transaction_critical_seconds: float = 600.0
    # age(datfrozenxid) as a share of 2^31 (%): autovacuum normally keeps it under 10 %.
    wraparound_warning_percent: float = 50.0
    wraparound_critical_percent: float = 75.0
    # Buffer cache hit ratio (%) below which reads go to disk too often (warning only).
    cache_hit_warning_percent: float = 90.0
    # Redis keyspace hit rate (%) below which the cache does not help (warning only), once it has
    # seen this many lookups.
    redis_hit_warning_percent: float = 50.0
    redis_min_lookups: int = 1000
    # TLS certificate days left.
    certificate_warning_days: float = 14.0
    certificate_critical_days: float = 7.0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: float) -> Limits:
        values = {name: getattr(settings, name) for name in cls.__dataclass_fields__ if name in Settings.model_fields}
        values.update(overrides)
        return cls(**values)


def above(value: float, warning: float, critical: float) -> Status:
    """Higher is worse: ``> critical`` critical, ``> warning`` warning."""
    if value > critical:
        return Status.CRITICAL
    if value > warning:
        return Status.WARNING
    return Status.OK


def below(value: float, warning: float, critical: float | None = None) -> Status:
    """Lower is worse: ``< critical`` critical, ``< warning`` warning."""
    if critical is not None and value < critical:
        return Status.CRITICAL
    if value < warning:
        return Status.WARNING
    return Status.OK


def age(age_seconds: float | None, max_age_seconds: float) -> Status:
    """A backup (or drill) that should be no older than ``max_age_seconds``: none at all, or
    older, is critical."""
    if age_seconds is None or age_seconds > max_age_seconds:
        return Status.CRITICAL
    return Status.OK


def wal_lag(lag_seconds: float | None, rpo_seconds: float) -> Status:
    """Now minus the newest archived WAL file's time, against the RPO objective: beyond it a
    warning, beyond twice it critical. Not critical at once: an idle server archives nothing
    (archive_timeout switches segments only after writes), so the lag alone does not prove lost
    data; the backup flow's ``wal_archiver`` check reads the server's own pg_stat_archiver. No
    WAL archived at all is critical (the runbook asks for continuous archiving)."""
    if lag_seconds is None:
        return Status.CRITICAL
    return above(lag_seconds, rpo_seconds, 2 * rpo_seconds)


def drill(passed_age_seconds: float | None, max_age_seconds: float, *, newest_failed: bool) -> Status:
    """The newest passed drill no older than ``max_age_seconds``; a failed drill after it is a
    warning (the recovery that was proven may no longer work)."""
    status = age(passed_age_seconds, max_age_seconds)
    if status is Status.OK and newest_failed:
        return Status.WARNING
    return status
