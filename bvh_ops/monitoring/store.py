"""Samples kept: every check result of a probe cycle in the ops database (``ops.samples``, daily
partitions), rolled up into hourly and daily aggregates, raw samples dropped after 90 days (the
runbook's performance-log retention) while the rollups stay.

Stored per check: name, service, status, value, unit — never the detail (it may carry host names
or other things a history should not keep). Status numbers are the Prometheus exposition's:
0 ok, 1 warning, 2 unknown, 3 critical.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import psycopg

from bvh_ops.monitoring.cycle import CycleResult
from bvh_ops.monitoring.results import Status

KEEP_DAYS = 90          # raw samples; rollups are kept (they are small: one row per check per hour)
PARTITIONS_AHEAD = 2    # days of partitions created beyond today, so midnight never finds none

STATUS_CODE = {Status.OK: 0, Status.WARNING: 1, Status.UNKNOWN: 2, Status.CRITICAL: 3}
STATUS_OF = {v: k for k, v in STATUS_CODE.items()}
_PARTITION = re.compile(r"^samples_(\d{4})(\d{2})(\d{2})$")


@dataclass(frozen=True)
class Point:
    at: datetime
    status: Status
    value: float | None


def ensure_partitions(conn: psycopg.Connection, day: date, days_ahead: int = PARTITIONS_AHEAD) -> None:
    """Create the partitions of ``day`` and the ``days_ahead`` days after it where missing."""
    conn.execute("SELECT ops.ensure_sample_partitions(%s, %s)", (day, days_ahead + 1))


def record_cycle(conn: psycopg.Connection, cycle: CycleResult) -> int:
    """Store one cycle's checks (one multi-row insert); returns the number of samples."""
    if not cycle.checks:
        return 0
    at = cycle.checked_at.astimezone(UTC)
    params: list[object] = []
    for c in cycle.checks:
        params += [at, c.name, c.service, STATUS_CODE[c.status], c.value, c.unit]
    values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(cycle.checks))
    with conn.transaction():
        ensure_partitions(conn, at.date())
        conn.execute(f"INSERT INTO ops.samples (at, name, service, status, value, unit) VALUES {values}", params)
    return len(cycle.checks)


_AGGREGATES = """count(*), count(*) FILTER (WHERE status = 0), count(*) FILTER (WHERE status = 1),
    count(*) FILTER (WHERE status = 2), count(*) FILTER (WHERE status = 3),
    avg(value), min(value), max(value), percentile_cont(0.95) WITHIN GROUP (ORDER BY value)"""
_UPDATE = """n = EXCLUDED.n, ok = EXCLUDED.ok, warning = EXCLUDED.warning, unknown = EXCLUDED.unknown,
    critical = EXCLUDED.critical, avg = EXCLUDED.avg, min = EXCLUDED.min, max = EXCLUDED.max, p95 = EXCLUDED.p95"""


def rollup(conn: psycopg.Connection, now: datetime) -> tuple[int, int]:
    """Aggregate finished UTC hours into ``samples_hourly`` and finished UTC days into
    ``samples_daily``, from the newest bucket already rolled up (re-aggregated: idempotent through
    ON CONFLICT). Returns the (hourly, daily) rows written."""
    now = now.astimezone(UTC)
    hour_end = now.replace(minute=0, second=0, microsecond=0)
    day_end = datetime.combine(now.date(), time(), UTC)
    with conn.transaction():
        since_hour = conn.execute("SELECT max(hour) FROM ops.samples_hourly").fetchone()[0]
        hourly = conn.execute(
            "INSERT INTO ops.samples_hourly (hour, name, service, n, ok, warning, unknown, critical, avg, min, max, p95) "
            "SELECT date_trunc('hour', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', name, service, " + _AGGREGATES +
            " FROM ops.samples WHERE at >= %s AND at < %s GROUP BY 1, 2, 3 "
            "ON CONFLICT (hour, name, service) DO UPDATE SET " + _UPDATE,
            (since_hour or datetime.min.replace(tzinfo=UTC), hour_end)).rowcount
        since_day = conn.execute("SELECT max(day) FROM ops.samples_daily").fetchone()[0]
        start = datetime.combine(since_day, time(), UTC) if since_day else datetime.min.replace(tzinfo=UTC)
        daily = conn.execute(
            "INSERT INTO ops.samples_daily (day, name, service, n, ok, warning, unknown, critical, avg, min, max, p95) "
            "SELECT (at AT TIME ZONE 'UTC')::date, name, service, " + _AGGREGATES +
            " FROM ops.samples WHERE at >= %s AND at < %s GROUP BY 1, 2, 3 "
            "ON CONFLICT (day, name, service) DO UPDATE SET " + _UPDATE,
            (start, day_end)).rowcount
    return hourly, daily


def plan_retention(partitions: list[date], now: datetime, keep_days: int = KEEP_DAYS) -> list[date]:
    """The daily partitions to drop (pure): those whose whole day ended more than ``keep_days``
    before ``now`` — at least ``keep_days`` of raw samples always remain."""
    cutoff = now.astimezone(UTC) - timedelta(days=keep_days)
    return sorted(d for d in partitions if datetime.combine(d + timedelta(days=1), time(), UTC) <= cutoff)


def sample_partitions(conn: psycopg.Connection) -> list[date]:
    """The days that have a raw-sample partition."""
    rows = conn.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                        "WHERE i.inhparent = 'ops.samples'::regclass").fetchall()
    days = []
    for (name,) in rows:
        if m := _PARTITION.match(name):
            days.append(date(int(m[1]), int(m[2]), int(m[3])))
    return sorted(days)


def apply_retention(conn: psycopg.Connection, now: datetime, keep_days: int = KEEP_DAYS) -> list[date]:
    """Roll up first (what is dropped is already aggregated), plan, then drop the old raw
    partitions; returns the days dropped."""
    rollup(conn, now)
    doomed = plan_retention(sample_partitions(conn), now, keep_days)
    for day in doomed:
        with conn.transaction():
            conn.execute(f"DROP TABLE IF EXISTS ops.samples_{day:%Y%m%d}")
    return doomed


def series(conn: psycopg.Connection, name: str, since: datetime, until: datetime) -> list[Point]:
    """One check's raw samples in [since, until), oldest first."""
    rows = conn.execute("SELECT at, status, value FROM ops.samples WHERE name = %s AND at >= %s AND at < %s "
                        "ORDER BY at", (name, since, until)).fetchall()
    return [Point(at, STATUS_OF[status], value) for at, status, value in rows]


def uptime(conn: psycopg.Connection, service: str, since: datetime, until: datetime) -> float | None:
    """The share (0..1) of ``service``'s samples in [since, until) that were ok or warning; None
    when there are none (no history is not 100 %)."""
    up, n = conn.execute("SELECT count(*) FILTER (WHERE status <= 1), count(*) FROM ops.samples "
                         "WHERE service = %s AND at >= %s AND at < %s", (service, since, until)).fetchone()
    return up / n if n else None
