"""Maintenance on real PostgreSQL (embedded 18) with engineered conditions: a bloated table is
vacuumed, a stale table analyzed and a fresh one not, a failed CREATE UNIQUE INDEX CONCURRENTLY
rebuilt, duplicate and unused indexes reported and kept, a conflicting ACCESS EXCLUSIVE lock
times the action out within lock_timeout while the plan goes on, and the window, the backup lock
and the one-run-per-target lock are respected."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import psycopg
import pytest

from bvh_ops.errors import ConcurrencyError
from bvh_ops.maintenance.facts import gather
from bvh_ops.maintenance.plan import KINDS, Action
from bvh_ops.maintenance.run import execute, run_maintenance
from bvh_ops.pg.lock import TargetLock
from tests.waiting import wait_until

INSIDE = datetime(2030, 3, 3, 3, 0, tzinfo=UTC)    # Sunday 03:00 UTC: inside the default 01:00-06:00 window
OUTSIDE = datetime(2030, 3, 3, 12, 0, tzinfo=UTC)


def stat(dsn: str, table: str, column: str):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(f"SELECT {column} FROM pg_stat_user_tables WHERE relname = %s", (table,)).fetchone()[0]


def bloat(conn: psycopg.Connection, table: str, rows: int = 20_000) -> None:
    """A table autovacuum leaves alone, then every row updated and half deleted: dead tuples."""
    conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = false)")
    conn.execute(f"INSERT INTO {table} SELECT g, md5(g::text) FROM generate_series(1, {rows}) g")
    conn.execute(f"ANALYZE {table}")
    conn.execute(f"UPDATE {table} SET v = v || 'x'")
    conn.execute(f"DELETE FROM {table} WHERE id % 2 = 0")
    conn.execute("SELECT pg_stat_force_next_flush()")


@pytest.fixture
def target(fresh_db, make_settings, repo_dir):
    dsn = fresh_db()
    ops = fresh_db("_ops")

    def settings(**maintenance):
        return make_settings(dsn, f"file://{repo_dir}", ops_database_url=ops, maintenance=maintenance)

    return dsn, ops, settings


def db(report):
    """The database actions (the weekly stages after them, verify and cleanup, have their own tests)."""
    return [a for a in report["actions"] if a["action"] in KINDS]


def by_object(report):
    return {a["object"]: a for a in report["actions"]}


def test_bloated_table_vacuumed_stale_analyzed_fresh_left_alone(target):
    dsn, ops, settings = target
    with psycopg.connect(dsn, autocommit=True) as conn:
        bloat(conn, "bloated")
        conn.execute("CREATE TABLE fresh (id int) WITH (autovacuum_enabled = false)")
        conn.execute("CREATE TABLE stale (id int) WITH (autovacuum_enabled = false)")
        conn.execute("INSERT INTO fresh SELECT generate_series(1, 5000)")
        conn.execute("INSERT INTO stale SELECT generate_series(1, 5000)")
        conn.execute("SELECT pg_stat_force_next_flush()")
    # ANALYZE only once the inserts are counted: counts flushed after it would make "fresh" stale.
    wait_until(lambda: stat(dsn, "fresh", "n_mod_since_analyze") >= 5_000, "inserts counted")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE fresh, stale")
        conn.execute("INSERT INTO stale SELECT generate_series(1, 5000)")     # 5,000 > 50 + 0.1 x 5,000
        conn.execute("SELECT pg_stat_force_next_flush()")
    wait_until(lambda: stat(dsn, "bloated", "n_dead_tup") >= 10_000, "dead tuples counted")
    wait_until(lambda: stat(dsn, "stale", "n_mod_since_analyze") >= 5_000, "modifications counted")
    fresh_analyzed = stat(dsn, "fresh", "last_analyze")

    daily = run_maintenance(settings(), "daily", now=INSIDE)
    assert [(a["action"], a["object"], a["status"]) for a in daily["actions"]] == [
        ("analyze", "public.bloated", "done"), ("analyze", "public.stale", "done")]   # its UPDATE/DELETE count too
    stale = by_object(daily)["public.stale"]
    assert stale["before"]["modified_since_analyze"] >= 5_000 and stale["after"]["modified_since_analyze"] == 0
    assert stale["after"]["last_analyze"] is not None
    assert stat(dsn, "fresh", "last_analyze") == fresh_analyzed

    weekly = run_maintenance(settings(), "weekly", now=INSIDE)
    vac = by_object(weekly)["public.bloated"]
    assert (vac["action"], vac["status"]) == ("vacuum", "done"), vac
    assert vac["before"]["dead_tuples"] >= 10_000
    assert vac["after"]["dead_tuples"] == 0
    assert stat(dsn, "bloated", "n_dead_tup") == 0
    assert weekly["status"] == "done" and weekly["recorded"]["run"] is True
    with psycopg.connect(ops) as conn:
        runs = conn.execute("SELECT scope, dry_run, report->>'status' FROM ops.maintenance_runs ORDER BY started_at"
                            ).fetchall()
        audit = conn.execute("SELECT action, subject, data->>'status' FROM ops.audit_chain ORDER BY seq").fetchall()
    assert runs == [("daily", False, "done"), ("weekly", False, "done")]
    assert ("maintenance.vacuum", "public.bloated", "done") in audit
    assert ("maintenance.analyze", "public.stale", "done") in audit


def test_dry_run_and_outside_the_window_only_assess(target):
    dsn, ops, settings = target
    with psycopg.connect(dsn, autocommit=True) as conn:
        bloat(conn, "bloated")
    wait_until(lambda: stat(dsn, "bloated", "n_dead_tup") >= 10_000, "dead tuples counted")
    outside = run_maintenance(settings(), "weekly", now=OUTSIDE)
    (a,) = db(outside)
    assert a["status"] == "skipped" and a["detail"].startswith("outside the maintenance window (01:00-06:00 UTC")
    assert outside["status"] == "skipped"
    dry = run_maintenance(settings(), "weekly", now=INSIDE, dry_run=True)
    assert [(a["status"], a["detail"]) for a in db(dry)] == [("skipped", "dry run")]
    assert "recorded" not in dry
    assert stat(dsn, "bloated", "n_dead_tup") >= 10_000


def test_failed_concurrent_unique_index_is_rebuilt(target):
    dsn, ops, settings = target
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE tickets (id int PRIMARY KEY, code text)")
        conn.execute("INSERT INTO tickets SELECT g, 'c' || (g % 900) FROM generate_series(1, 1000) g")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY tickets_code ON tickets (code)")
        assert conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'tickets_code'::regclass"
                            ).fetchone()[0] is False
    # While the duplicates are there the rebuild fails: reported, its leftover copy dropped.
    first = run_maintenance(settings(), "weekly", now=INSIDE)
    act = by_object(first)["public.tickets_code"]
    assert act["status"] == "failed" and "UniqueViolation" in act["detail"]
    assert first["status"] == "failed"
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'tickets_code_ccnew%'").fetchone()[0] == 0
        conn.execute("DELETE FROM tickets WHERE id > 900")              # the data fixed
    second = run_maintenance(settings(), "weekly", now=INSIDE)
    act = by_object(second)["public.tickets_code"]
    assert (act["action"], act["status"]) == ("reindex", "done"), act
    assert act["before"]["valid"] is False and act["after"]["valid"] is True
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'tickets_code'::regclass"
                            ).fetchone()[0] is True


def test_duplicate_and_unused_indexes_are_reported_and_kept(target):
    dsn, ops, settings = target
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE draws (id int PRIMARY KEY, drawn_at timestamptz, n int)")
        conn.execute("INSERT INTO draws SELECT g, now(), g FROM generate_series(1, 5000) g")
        conn.execute("CREATE INDEX draws_at ON draws (drawn_at)")
        conn.execute("CREATE INDEX draws_at_again ON draws (drawn_at)")
        conn.execute("CREATE INDEX draws_n ON draws (n)")
    report = run_maintenance(settings(unused_index_min_bytes=0), "weekly", now=INSIDE)
    found = {(f["kind"], f["object"]) for f in report["findings"]}
    assert ("duplicate_index", "public.draws_at_again") in found
    assert ("unused_index", "public.draws_n") in found
    assert ("unused_index", "public.draws_pkey") not in found                 # backs the primary key
    assert not [a for a in report["actions"] if a["action"] == "reindex"]
    with psycopg.connect(dsn) as conn:
        names = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'draws'")}
    assert {"draws_at", "draws_at_again", "draws_n", "draws_pkey"} <= names
    with psycopg.connect(ops) as conn:
        keys = {r[0] for r in conn.execute("SELECT key FROM ops.findings WHERE source = 'maintenance' "
                                           "AND cleared_at IS NULL")}
    assert "duplicate_index:public.draws_at_again" in keys and "unused_index:public.draws_n" in keys


def test_a_conflicting_lock_times_the_action_out_and_the_plan_goes_on(target):
    dsn, ops, settings = target
    with psycopg.connect(dsn, autocommit=True) as conn:
        bloat(conn, "a_locked")
        bloat(conn, "b_free")
    wait_until(lambda: stat(dsn, "a_locked", "n_dead_tup") >= 10_000 and stat(dsn, "b_free", "n_dead_tup") >= 10_000,
               "dead tuples counted")
    with psycopg.connect(dsn) as holder:
        holder.execute("LOCK TABLE a_locked IN ACCESS EXCLUSIVE MODE")      # an open transaction holds it
        t0 = time.monotonic()
        report = run_maintenance(settings(lock_timeout_ms=300), "weekly", now=INSIDE)
        elapsed = time.monotonic() - t0
        holder.rollback()
    acts = by_object(report)
    assert acts["public.a_locked"]["status"] == "timed_out"
    assert "lock_timeout (300 ms)" in acts["public.a_locked"]["detail"]
    assert acts["public.a_locked"]["seconds"] < 5
    assert acts["public.b_free"]["status"] == "done"
    assert report["status"] == "done"                                        # a timeout is not a failure
    assert elapsed < 60
    assert stat(dsn, "a_locked", "n_dead_tup") >= 10_000 and stat(dsn, "b_free", "n_dead_tup") == 0


def test_a_backup_holding_the_target_skips_the_run(target):
    dsn, ops, settings = target
    with psycopg.connect(dsn, autocommit=True) as conn:
        bloat(conn, "bloated")
    wait_until(lambda: stat(dsn, "bloated", "n_dead_tup") >= 10_000, "dead tuples counted")
    with TargetLock(dsn, "daily-backup") as backup:
        pid = backup.conn.info.backend_pid
        t0 = time.monotonic()
        report = run_maintenance(settings(), "weekly", now=INSIDE, wait_seconds=1.0)
        assert time.monotonic() - t0 >= 1.0                                   # it waited, briefly
    assert report["status"] == "skipped"
    (a,) = db(report)
    assert a["status"] == "skipped" and f"daily-backup (pid {pid}) holds the target" in a["detail"]
    assert stat(dsn, "bloated", "n_dead_tup") >= 10_000
    assert report["findings"] is not None                                     # it still assessed


def test_at_most_one_maintenance_run_per_target(target):
    dsn, ops, settings = target
    with TargetLock(dsn, "maintenance"), pytest.raises(ConcurrencyError, match="another maintenance"):
        run_maintenance(settings(), "daily", now=INSIDE)


def test_a_table_dropped_after_the_plan_is_skipped(target):
    dsn, _, _ = target
    with psycopg.connect(dsn, autocommit=True) as conn:
        out = execute(conn, Action("vacuum", "public.gone", "public.gone", "test", 'VACUUM "public"."gone"'),
                      lock_timeout_ms=100, statement_timeout_seconds=10)
    assert (out["status"], out["detail"]) == ("skipped", "dropped since the plan was made")


def test_bloat_source_pgstattuple_or_statistics(target):
    dsn, _, _ = target
    with psycopg.connect(dsn, autocommit=True) as conn:
        bloat(conn, "bloated")
        facts = gather(conn, now=INSIDE)
        (t,) = [t for t in facts.tables if t.name == "bloated"]
        assert t.bloat_source == "statistics" and any("pgstattuple is not installed" in n for n in facts.notes)
        conn.execute("CREATE EXTENSION pgstattuple")
        facts = gather(conn, now=INSIDE)
        (t,) = [t for t in facts.tables if t.name == "bloated"]
        (i,) = [i for i in facts.indexes if i.name == "bloated_pkey"]
    assert t.bloat_source == "pgstattuple_approx" and t.bloat_bytes > 0
    assert i.bloat_source == "pgstatindex"
    assert not facts.notes


def test_cli_maintain(target, keypair, tmp_path):
    import json

    from tests.integration.cli import assert_one_line_error, run_cli

    dsn, ops, _ = target
    with psycopg.connect(dsn, autocommit=True) as conn:
        bloat(conn, "bloated")
    wait_until(lambda: stat(dsn, "bloated", "n_dead_tup") >= 10_000, "dead tuples counted")
    # A window wrapping past midnight that covers all but one second of the day.
    env = {"BVH_OPS_DATABASE_URL": dsn, "BVH_OPS_OPS_DATABASE_URL": ops, "BVH_OPS_STATE_DIR": str(tmp_path / "s"),
           "BVH_OPS_MAINTENANCE": json.dumps({"window_start": "12:00:00", "window_end": "11:59:59"})}
    assert_one_line_error(run_cli("maintain", "hourly", env=env), "scope 'hourly': choose one of daily, weekly, monthly")
    dry = run_cli("maintain", "weekly", "--dry-run", "--json", env=env)
    assert dry.returncode == 0, dry.stderr
    doc = json.loads(dry.stdout)
    assert {"plan", "actions", "findings"} <= set(doc)
    assert [(a["action"], a["object"], a["status"]) for a in db(doc)] == [
        ("vacuum", "public.bloated", "skipped")]
    assert stat(dsn, "bloated", "n_dead_tup") >= 10_000
    done = run_cli("maintain", "weekly", env=env)
    assert done.returncode == 0, done.stderr
    assert "done      vacuum        public.bloated" in done.stdout
    assert stat(dsn, "bloated", "n_dead_tup") == 0
    # A failing action: exit 1 (an invalid unique index over duplicates cannot be rebuilt).
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE dup (v int)")
        conn.execute("INSERT INTO dup VALUES (1), (1)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY dup_v ON dup (v)")
    failed = run_cli("maintain", "weekly", "--json", env=env)
    assert failed.returncode == 1, failed.stderr
    assert json.loads(failed.stdout)["status"] == "failed"


def test_performance_report_without_pg_stat_statements_says_so(target):
    import json

    from tests.integration.cli import run_cli

    dsn, ops, _ = target
    env = {"BVH_OPS_DATABASE_URL": dsn, "BVH_OPS_OPS_DATABASE_URL": ops}
    proc = run_cli("report", "performance", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["pg_stat_statements"] is False
    assert any("pg_stat_statements is not installed" in n for n in doc["notes"])
    assert doc["cache_hit_ratio"] is not None
    text = run_cli("report", "performance", env=env)
    assert text.returncode == 0 and "# Performance report" in text.stdout


def test_pg15_bloated_table_vacuumed_and_invalid_index_rebuilt(pg15, fresh_db, make_settings, repo_dir):
    from bvh_ops.pg.catalog import create_database

    admin = pg15.format(db="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS bvh_pg15_maint WITH (FORCE)")
    create_database(admin, "bvh_pg15_maint")
    dsn = pg15.format(db="bvh_pg15_maint")
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            bloat(conn, "bloated")
            conn.execute("CREATE TABLE t (v int)")
            conn.execute("INSERT INTO t VALUES (1), (1)")
            with pytest.raises(psycopg.errors.UniqueViolation):
                conn.execute("CREATE UNIQUE INDEX CONCURRENTLY t_v ON t (v)")
            conn.execute("DELETE FROM t")
        wait_until(lambda: stat(dsn, "bloated", "n_dead_tup") >= 10_000, "dead tuples counted")
        settings = make_settings(dsn, f"file://{repo_dir}", ops_database_url=fresh_db("_ops"))
        report = run_maintenance(settings, "weekly", now=INSIDE)
        acts = by_object(report)
        assert acts["public.bloated"]["status"] == "done" and acts["public.t_v"]["status"] == "done"
        assert stat(dsn, "bloated", "n_dead_tup") == 0
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS bvh_pg15_maint WITH (FORCE)")
