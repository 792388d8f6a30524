"""The database probe: reachable and how fast, connections against max_connections, the longest
running and the longest idle-in-transaction transaction, transaction-ID wraparound, replication
lag (where a standby exists, or on a standby), the buffer cache hit ratio and the WAL archiver.

Read-only catalog queries under a statement timeout, one short connection per cycle. Details name
sessions by pid, role and application, never by their query text (a query may carry a secret:
``ALTER ROLE … PASSWORD``). Sessions of other roles show their times only to a superuser or a
member of ``pg_monitor``.
"""

from __future__ import annotations

import re
import time

import psycopg

from bvh_ops.dsn import scrub
from bvh_ops.monitoring.results import Check, Status
from bvh_ops.monitoring.thresholds import XID_WRAP, Limits, above, below
from bvh_ops.pg.conn import connect_error

SERVICE = "database"
# The checks every cycle reports (replication and archiver only where they apply).
ALWAYS = ("database.reachable", "database.connections", "database.longest_transaction",
          "database.idle_in_transaction", "database.wraparound", "database.cache_hit_ratio")

_SESSIONS = """
SELECT extract(epoch FROM now() - {since})::float8, pid, usename, application_name
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND {where}
ORDER BY {since} LIMIT 1"""


def probe_database(dsn: str, limits: Limits, *, timeout: float = 5.0) -> list[Check]:
    start = time.monotonic()
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=max(2, round(timeout)),
                               application_name="bvh-ops-monitor")
    except psycopg.Error as exc:
        reason = str(connect_error(exc, dsn)) if isinstance(exc, psycopg.OperationalError) else scrub(str(exc), dsn)
        return [Check("database.reachable", SERVICE, Status.CRITICAL, None, "ms", reason)] + [
            Check(name, SERVICE, Status.UNKNOWN, None, "", "database unreachable") for name in ALWAYS[1:]]
    latency_ms = (time.monotonic() - start) * 1000
    checks = [Check("database.reachable", SERVICE, Status.OK, round(latency_ms, 1), "ms",
                    f"connected in {latency_ms:.0f} ms")]
    with conn:
        conn.execute(f"SET statement_timeout = {int(timeout * 1000)}")
        for measure in (_connections, _longest_transaction, _idle_in_transaction, _wraparound,
                        _replication_lag, _cache_hit_ratio, _wal_archiver):
            checks.extend(_guarded(measure, conn, limits, dsn))
    return checks


def _guarded(measure, conn: psycopg.Connection, limits: Limits, dsn: str) -> list[Check]:
    try:
        return measure(conn, limits)
    except psycopg.Error as exc:
        name = "database." + measure.__name__.lstrip("_")
        reason = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, dsn)
        return [Check(name, SERVICE, Status.UNKNOWN, None, "", f"query failed: {reason}")]


def _connections(conn, limits: Limits) -> list[Check]:
    used, maximum = conn.execute(
        "SELECT count(*) FILTER (WHERE backend_type = 'client backend'), current_setting('max_connections')::int "
        "FROM pg_stat_activity").fetchone()
    pct = 100.0 * used / maximum
    status = above(pct, limits.connections_warning_percent, limits.connections_critical_percent)
    return [Check("database.connections", SERVICE, status, round(pct, 1), "%",
                  CONNECTIONS_DETAIL.format(used=used, maximum=maximum))]


# The connections check's value is a share of max_connections; its detail carries the count, which
# the dashboard reports as the runbook's databaseConnections (``connections_in_use``).
CONNECTIONS_DETAIL = "{used} of max_connections {maximum} client connections"
_CONNECTIONS_USED = re.compile(r"^(\d+) of max_connections \d+ client connections$")


def connections_in_use(check: Check) -> int | None:
    """The client connections counted by a ``database.connections`` check, or None (not measured)."""
    match = _CONNECTIONS_USED.match(check.detail) if check.name == "database.connections" else None
    return int(match.group(1)) if match else None


def _session_check(conn, name: str, since: str, where: str, warn: float, crit: float, what: str) -> Check:
    row = conn.execute(_SESSIONS.format(since=since, where=where)).fetchone()
    if row is None or row[0] is None:
        return Check(name, SERVICE, Status.OK, 0.0, "s", f"no {what}")
    seconds, pid, user, app = row
    seconds = max(0.0, seconds)
    return Check(name, SERVICE, above(seconds, warn, crit), round(seconds, 1), "s",
                 f"{what} for {seconds:.0f} s: pid {pid}, role {user}, application '{app or ''}'")


def _longest_transaction(conn, limits: Limits) -> list[Check]:
    return [_session_check(conn, "database.longest_transaction", "xact_start",
                           "state = 'active' AND xact_start IS NOT NULL",
                           limits.transaction_warning_seconds, limits.transaction_critical_seconds,
                           "transaction running")]


def _idle_in_transaction(conn, limits: Limits) -> list[Check]:
    return [_session_check(conn, "database.idle_in_transaction", "state_change",
                           "state IN ('idle in transaction', 'idle in transaction (aborted)')",
                           limits.idle_in_transaction_warning_seconds, limits.idle_in_transaction_critical_seconds,
                           "idle in transaction")]


def _wraparound(conn, limits: Limits) -> list[Check]:
    datname, xid_age = conn.execute(
        "SELECT datname, age(datfrozenxid) FROM pg_database ORDER BY age(datfrozenxid) DESC LIMIT 1").fetchone()
    pct = 100.0 * xid_age / XID_WRAP
    status = above(pct, limits.wraparound_warning_percent, limits.wraparound_critical_percent)
    return [Check("database.wraparound", SERVICE, status, round(pct, 3), "%",
                  f"oldest unfrozen transaction id in {datname}: age {xid_age} of 2^31")]


def _replication_lag(conn, limits: Limits) -> list[Check]:
    """Lag against the RPO objective: past half of it a warning, past it critical."""
    warn, crit = limits.rpo_objective_seconds / 2, limits.rpo_objective_seconds
    if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
        lag = conn.execute("SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8").fetchone()[0]
        if lag is None:
            return [Check("database.replication_lag", SERVICE, Status.UNKNOWN, None, "s",
                          "standby has replayed no transaction yet")]
        return [Check("database.replication_lag", SERVICE, above(lag, warn, crit), round(lag, 1), "s",
                      f"this server is a standby, last replayed transaction {lag:.0f} s ago")]
    rows = conn.execute(
        "SELECT application_name, coalesce(extract(epoch FROM replay_lag)::float8, 0), state "
        "FROM pg_stat_replication").fetchall()
    if not rows:
        return []  # no standby: nothing to lag
    app, lag, state = max(rows, key=lambda r: r[1])
    status = above(lag, warn, crit)
    if any(r[2] != "streaming" for r in rows):
        status = max(status, Status.WARNING, key=lambda s: s.rank)
    states = ", ".join(f"{r[0] or '?'} {r[2]}" for r in rows)
    return [Check("database.replication_lag", SERVICE, status, round(lag, 1), "s",
                  f"{len(rows)} standby(s) ({states}); the furthest behind is {app or '?'}: {lag:.1f} s")]


def _cache_hit_ratio(conn, limits: Limits) -> list[Check]:
    hit, read = conn.execute(
        "SELECT coalesce(sum(blks_hit), 0)::float8, coalesce(sum(blks_read), 0)::float8 FROM pg_stat_database").fetchone()
    if hit + read == 0:
        return [Check("database.cache_hit_ratio", SERVICE, Status.OK, None, "%", "no block reads yet")]
    pct = 100.0 * hit / (hit + read)
    return [Check("database.cache_hit_ratio", SERVICE, below(pct, limits.cache_hit_warning_percent), round(pct, 2),
                  "%", f"{hit:.0f} buffer hits, {read:.0f} reads since statistics reset")]


def _wal_archiver(conn, limits: Limits) -> list[Check]:
    mode, failed, last_ok, last_failed, failing = conn.execute(
        "SELECT current_setting('archive_mode'), failed_count, last_archived_time, last_failed_time, "
        "last_failed_time IS NOT NULL AND last_failed_time > coalesce(last_archived_time, '-infinity') "
        "FROM pg_stat_archiver").fetchone()
    if mode == "off":
        return []
    if failing:
        return [Check("database.wal_archiver", SERVICE, Status.CRITICAL, float(failed), "failures",
                      f"archive_command failing since {last_failed:%Y-%m-%d %H:%M:%S %Z} "
                      f"(last success {last_ok or 'never'})")]
    return [Check("database.wal_archiver", SERVICE, Status.OK, float(failed), "failures",
                  f"archiving (last archived {last_ok or 'nothing yet'})")]
