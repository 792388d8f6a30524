"""Samples kept, against the embedded PostgreSQL: versioned migrations (and the upgrade of a
database made before them), record_cycle, rollup, retention, uptime; `bvh-ops monitor` and
`bvh-ops opsdb` run the way an operator runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, time, timedelta

import psycopg
import pytest

from bvh_ops.drill.ops import OPS_SCHEMA_SQL
from bvh_ops.monitoring.cycle import CycleResult
from bvh_ops.monitoring.results import Check, Status
from bvh_ops.monitoring.store import apply_retention, record_cycle, rollup, sample_partitions, series, uptime
from bvh_ops.opsdb.migrations import LATEST, migrate, schema_version
from tests.integration.cli import run_cli
from tests.waiting import wait_until

CALM_HOST = {"BVH_OPS_CPU_WARNING_PERCENT": "100", "BVH_OPS_CPU_CRITICAL_PERCENT": "100",
             "BVH_OPS_MEMORY_WARNING_PERCENT": "100", "BVH_OPS_MEMORY_CRITICAL_PERCENT": "100",
             "BVH_OPS_DISK_WARNING_PERCENT": "100", "BVH_OPS_DISK_CRITICAL_PERCENT": "100",
             "BVH_OPS_LOAD_PER_CORE_WARNING": "1000", "BVH_OPS_LOAD_PER_CORE_CRITICAL": "1000"}


@pytest.fixture
def ops(fresh_db):
    """A migrated ops database: (dsn, autocommit connection)."""
    dsn = fresh_db("_ops")
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
        yield dsn, conn


def cycle(at: datetime, *checks: Check) -> CycleResult:
    return CycleResult(Status.OK, at, list(checks), 0.1, 0.05, [])


def count(conn, sql: str, *params) -> int:
    return conn.execute(sql, params).fetchone()[0]


def test_migrate_twice_is_a_no_op(fresh_db):
    with psycopg.connect(fresh_db(), autocommit=True) as conn:
        assert schema_version(conn) is None
        assert migrate(conn) == list(range(1, LATEST + 1))
        assert migrate(conn) == []
        assert schema_version(conn) == LATEST
        assert count(conn, "SELECT count(*) FROM ops.schema_migrations") == LATEST


def test_a_database_made_before_migrations_upgrades_in_place(fresh_db):
    with psycopg.connect(fresh_db(), autocommit=True) as conn:
        conn.execute(OPS_SCHEMA_SQL)
        conn.execute("INSERT INTO ops.drills VALUES ('d1', now(), now(), 'b1', 'logical', true, 1, 2, 3, 4, '{}')")
        assert migrate(conn) == list(range(1, LATEST + 1))
        assert conn.execute("SELECT drill_id, passed FROM ops.drills").fetchall() == [("d1", True)]
        assert count(conn, "SELECT count(*) FROM ops.samples") == 0


def test_rollup_counts_statuses_and_aggregates_values_and_is_idempotent(ops):
    _, conn = ops
    yesterday = datetime.combine(datetime.now(UTC).date() - timedelta(days=1), time(10), UTC)
    statuses = [Status.OK] * 17 + [Status.WARNING] * 2 + [Status.CRITICAL]
    for i, status in enumerate(statuses):
        record_cycle(conn, cycle(yesterday + timedelta(minutes=2 * i),
                                 Check("api-health", "api", status, float(i + 1), "ms", "host db1.internal"),
                                 Check("cache.ping", "cache", Status.UNKNOWN, None, "", "no answer")))
    assert count(conn, "SELECT count(*) FROM ops.samples") == 40
    columns = [r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns "
                                          "WHERE table_schema = 'ops' AND table_name = 'samples'")]
    assert "detail" not in columns  # details may carry host names: never stored

    for _ in range(2):  # the second rollup changes nothing
        rollup(conn, datetime.now(UTC))
        hourly = conn.execute("SELECT hour, n, ok, warning, unknown, critical, avg, min, max, p95 "
                              "FROM ops.samples_hourly WHERE name = 'api-health'").fetchall()
        assert len(hourly) == 1
        hour, n, ok, warning, unknown, critical, avg, lo, hi, p95 = hourly[0]
        assert (hour, n, ok, warning, unknown, critical) == (yesterday, 20, 17, 2, 0, 1)
        assert (avg, lo, hi) == (10.5, 1.0, 20.0)
        assert p95 == pytest.approx(19.05)  # percentile_cont over 1..20
        daily = conn.execute("SELECT day, n, ok, critical, avg FROM ops.samples_daily "
                             "WHERE name = 'api-health'").fetchall()
        assert daily == [(yesterday.date(), 20, 17, 1, 10.5)]
        cache = conn.execute("SELECT n, unknown, avg, p95 FROM ops.samples_hourly WHERE name = 'cache.ping'").fetchone()
        assert cache == (20, 20, None, None)


def test_an_unfinished_hour_is_not_rolled_up(ops):
    _, conn = ops
    now = datetime.now(UTC)
    record_cycle(conn, cycle(now, Check("api-health", "api", Status.OK, 5.0, "ms")))
    rollup(conn, now)
    assert count(conn, "SELECT count(*) FROM ops.samples_hourly") == 0


def test_retention_drops_old_raw_partitions_and_keeps_their_rollups(ops):
    _, conn = ops
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=100), now - timedelta(days=1)
    for at in (old, recent):
        record_cycle(conn, cycle(at, Check("api-health", "api", Status.OK, 7.0, "ms")))
    assert old.date() in sample_partitions(conn)

    # the old day's partition and the two made ahead of it, all older than 90 days
    assert apply_retention(conn, now) == [old.date() + timedelta(days=i) for i in range(3)]
    assert old.date() not in sample_partitions(conn)
    assert recent.date() in sample_partitions(conn)
    assert conn.execute("SELECT at FROM ops.samples").fetchall() == [(recent,)]
    assert count(conn, "SELECT count(*) FROM ops.samples_hourly WHERE hour < %s", now - timedelta(days=90)) == 1
    assert count(conn, "SELECT count(*) FROM ops.samples_daily WHERE day = %s", old.date()) == 1
    assert apply_retention(conn, now) == []


def test_uptime_is_the_share_of_ok_or_warning_samples_and_none_without_samples(ops):
    _, conn = ops
    start = datetime.now(UTC) - timedelta(hours=1)
    for i, status in enumerate([Status.OK, Status.OK, Status.WARNING, Status.CRITICAL, Status.UNKNOWN]):
        record_cycle(conn, cycle(start + timedelta(seconds=30 * i), Check("api-health", "api", status, float(i), "ms"),
                                 Check("db", "database", Status.OK, 1.0, "ms")))
    until = datetime.now(UTC) + timedelta(minutes=1)
    assert uptime(conn, "api", start, until) == pytest.approx(3 / 5)
    assert uptime(conn, "database", start, until) == 1.0
    assert uptime(conn, "frontend", start, until) is None
    points = series(conn, "api-health", start, until)
    assert [p.value for p in points] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert points[3].status is Status.CRITICAL


def monitor_env(pg, dsn: str | None, tmp_path) -> dict[str, str]:
    env = {"BVH_OPS_DATABASE_URL": pg.dsn(), "BVH_OPS_STATE_DIR": str(tmp_path / "state"), **CALM_HOST}
    if dsn is not None:
        env["BVH_OPS_OPS_DATABASE_URL"] = dsn
    return env


def test_monitor_records_each_cycle(pg, ops, tmp_path):
    dsn, conn = ops
    proc = run_cli("monitor", "--cycles", "2", "--interval", "0.2", env=monitor_env(pg, dsn, tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "history unavailable" not in proc.stdout
    assert count(conn, "SELECT count(DISTINCT at) FROM ops.samples") == 2
    assert count(conn, "SELECT count(DISTINCT at) FROM ops.samples WHERE service = 'database'") == 2
    assert "stopped after 2 cycle(s)" in proc.stdout


def test_monitor_without_an_ops_database_still_runs_its_cycles(pg, tmp_path):
    proc = run_cli("monitor", "--cycles", "1", "--interval", "0.2", env=monitor_env(pg, None, tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "history unavailable: ops database not running" in proc.stdout
    assert "checks" in proc.stdout  # the cycle's own line


def test_sigterm_stops_the_monitor_cleanly(pg, ops, tmp_path):
    dsn, conn = ops
    env = {k: v for k, v in os.environ.items() if not k.startswith("BVH_OPS_")}
    env.update(monitor_env(pg, dsn, tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "bvh_ops.cli", "monitor", "--interval", "0.2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: count(conn, "SELECT count(*) FROM ops.samples") > 0, "the monitor's first samples",
                   timeout=120)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out + err
    assert "stopped after" in out and "Traceback" not in err


def test_opsdb_status_and_start_on_ops_database_url(pg, fresh_db, tmp_path):
    dsn = fresh_db("_url")
    env = monitor_env(pg, dsn, tmp_path)
    before = run_cli("opsdb", "status", "--json", env=env, timeout=120)
    assert before.returncode == 0, before.stderr
    assert json.loads(before.stdout)["schema_version"] is None
    started = run_cli("opsdb", "start", env=env, timeout=120)
    assert started.returncode == 0, started.stderr
    info = json.loads(run_cli("opsdb", "status", "--json", env=env, timeout=120).stdout)
    assert info["running"] and info["schema_version"] == LATEST
    assert info["samples"]["raw"] == 0
    assert dsn.split("@")[0].split(":")[-1] not in json.dumps(info)  # the password is never shown


def test_opsdb_start_status_stop_of_the_embedded_cluster(tmp_path):
    env = {"BVH_OPS_STATE_DIR": str(tmp_path / "state")}
    assert run_cli("opsdb", "status", env=env, timeout=120).returncode == 1
    try:
        started = run_cli("opsdb", "start", env=env, timeout=180)
        assert started.returncode == 0, started.stderr
        info = json.loads(run_cli("opsdb", "status", "--json", env=env, timeout=120).stdout)
        assert info["running"] and info["kind"] == "embedded" and info["port"]
        assert info["schema_version"] == LATEST
    finally:
        stopped = run_cli("opsdb", "stop", env=env, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    info = json.loads(run_cli("opsdb", "status", "--json", env=env, timeout=120).stdout)
    assert not info["running"]


def test_dashboard_history_reads_the_samples_monitor_keeps(ops):
    """OpsHistory (the dashboard's charts and uptime) over the stored samples: per cycle the
    service's worst status, critical down, unknown counted neither way; unavailable when the
    ops database is not running."""
    from bvh_ops.errors import DatabaseUnavailable
    from bvh_ops.monitoring.history import OpsHistory

    dsn, conn = ops
    start = datetime.now(UTC) - timedelta(hours=1)
    for i, status in enumerate([Status.OK, Status.WARNING, Status.CRITICAL, Status.UNKNOWN, Status.OK]):
        record_cycle(conn, cycle(start + timedelta(seconds=30 * i), Check("api-health", "api", status, float(i), "ms"),
                                 Check("api-metrics", "api", Status.OK, None, "")))
    until = datetime.now(UTC) + timedelta(minutes=1)
    history = OpsHistory(lambda: dsn)
    assert [v for _, v in history.series("api-health", start, until)] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert history.uptime("api", start, until) == pytest.approx(75.0)  # 3 up, 1 down, 1 unknown
    assert history.uptime("frontend", start, until) is None
    with pytest.raises(DatabaseUnavailable, match="opsdb start"):
        OpsHistory(lambda: None).uptime("api", start, until)
