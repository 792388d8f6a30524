"""The weekly performance report's second part on real servers: a week of index use (an index
used before but not this week is a drop candidate, one in use is ranked), bloat grown over the
week (autovacuum off, every row updated), and a monitored endpoint's week of samples against the
week before (slower, failing) — two reports seven days apart with the clock injected, then the
CLI with its charts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from bvh_ops.maintenance.charts import BLOAT_TITLE, ENDPOINTS_TITLE, charts
from bvh_ops.maintenance.performance import Limits, report
from bvh_ops.opsdb.migrations import migrate
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

KIB, MIB = 1 << 10, 1 << 20
ENDPOINT = {"name": "api-health", "service": "api", "url": "http://127.0.0.1:9/api/health"}


def idx_scan(dsn: str, index: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = %s", (index,)).fetchone()[0]


def use_index(dsn: str, times: int) -> None:
    """Index scans on tix_draw (sequential scans off: the plan cannot avoid it)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_bitmapscan = off")
        for d in range(times):
            conn.execute("SELECT count(*) FROM tix WHERE draw = %s", (d,)).fetchone()


def samples(ops: psycopg.Connection, start: datetime, values: list[float | None]) -> None:
    """One sample of the endpoint every 90 minutes from ``start``: None is a failed check (critical)."""
    ops.execute("SELECT ops.ensure_sample_partitions(%s, %s)", (start.date(), len(values) * 90 // 1440 + 2))
    for i, v in enumerate(values):
        ops.execute("INSERT INTO ops.samples (at, name, service, status, value, unit) VALUES (%s, %s, 'api', %s, %s, 'ms')",
                    (start + timedelta(minutes=90 * i), ENDPOINT["name"], 3 if v is None else 0, v))


@pytest.fixture
def week(fresh_db):
    dsn, ops_dsn = fresh_db(), fresh_db("_ops")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE tix (id int PRIMARY KEY, draw int NOT NULL, v text NOT NULL) "
                     "WITH (autovacuum_enabled = false)")
        conn.execute("INSERT INTO tix SELECT g, g % 100, md5(g::text) FROM generate_series(1, 40000) g")
        conn.execute("CREATE INDEX tix_draw ON tix (draw)")
        conn.execute("CREATE INDEX tix_v ON tix (v)")
        # idle all week, yet no drop candidate: the lookup of a foreign key (a ticket deleted or
        # its id changed scans refs without it), a partitioned index as a whole, names any SQL allows
        conn.execute("CREATE TABLE refs (id int PRIMARY KEY, tix_id int REFERENCES tix, note text)")
        conn.execute("INSERT INTO refs SELECT g, g, md5(g::text) FROM generate_series(1, 40000) g")
        conn.execute("CREATE INDEX refs_tix_id ON refs (tix_id)")
        conn.execute("CREATE TABLE ev (at date NOT NULL, k int NOT NULL) PARTITION BY RANGE (at)")
        conn.execute("CREATE TABLE ev_2025 PARTITION OF ev FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')")
        conn.execute("CREATE TABLE ev_2026 PARTITION OF ev FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')")
        conn.execute("INSERT INTO ev SELECT d, g FROM generate_series(1, 20000) g, "
                     "(VALUES (date '2025-06-01'), (date '2026-06-01')) v(d)")
        conn.execute("CREATE INDEX ev_k ON ev (k)")
        conn.execute('CREATE SCHEMA "a.b"')
        conn.execute("CREATE SCHEMA a")
        conn.execute('CREATE TABLE "a.b".c (x int) WITH (autovacuum_enabled = false)')
        conn.execute('CREATE TABLE a."b.c" (x int) WITH (autovacuum_enabled = false)')
        conn.execute('CREATE TABLE "t$_$" (x int) WITH (autovacuum_enabled = false)')
        conn.execute('INSERT INTO "t$_$" SELECT generate_series(1, 20000)')
        conn.execute("ANALYZE")
        conn.execute("SET enable_seqscan = off")
        conn.execute("SELECT * FROM tix WHERE v = 'x'").fetchall()  # tix_v used once, before the week
    wait_until(lambda: idx_scan(dsn, "tix_v") == 1, "the scan counted")
    return dsn, ops_dsn


def test_two_reports_a_week_apart(week):
    dsn, ops_dsn = week
    now = datetime.now(UTC).replace(microsecond=0)
    limits = Limits(unused_index_bytes=64 * KIB, bloat_growth_bytes=MIB, response_time_ms=1000, failed_percent=1)
    with psycopg.connect(dsn, autocommit=True) as conn, psycopg.connect(ops_dsn, autocommit=True) as ops:
        migrate(ops)
        # a snapshot from over a year ago: pruned by the next report
        ops.execute("INSERT INTO ops.performance_snapshots (target, taken_at) VALUES ('old', %s)",
                    (now - timedelta(days=500),))
        ops.execute("INSERT INTO ops.table_snapshots VALUES ('old', %s, 'public.gone', 1, 1, 'statistics', 1, 1)",
                    (now - timedelta(days=500),))
        # the week before: fast and sound; this week: slower and 5 of 100 checks failed
        samples(ops, now - timedelta(days=14), [80.0 + (i % 10) * 5 for i in range(100)])
        samples(ops, now - timedelta(days=7), [None if i % 20 == 0 else 300.0 + (i % 10) * 20 for i in range(100)])
        first = report(conn, ops, "db", now - timedelta(days=7), endpoints=[ENDPOINT["name"]], limits=limits)
        # the first run has nothing a week back: scans since the reset, no bloat change
        assert first["indexes"]["since"] is None and first["bloat"]["growing"] == []
        assert any("no index or table snapshot from a week ago" in n for n in first["notes"])
        assert first["indexes"]["unused"] == []  # nothing is judged without a week of evidence
        # during the week: tix_draw used 30 times, tix_v never, ev_k only on this year's partition;
        # every row of tix and of "t$_$" updated twice
        use_index(dsn, 30)
        with psycopg.connect(dsn, autocommit=True) as other:
            other.execute("SET enable_seqscan = off")
            for k in range(5):
                other.execute("SELECT count(*) FROM ev WHERE k = %s AND at >= '2026-01-01'", (k,)).fetchone()
        for sql in ("UPDATE tix SET v = v || 'x'", "UPDATE tix SET v = v || 'y'", 'UPDATE "t$_$" SET x = x + 1',
                    'UPDATE "t$_$" SET x = x + 1', "ANALYZE"):
            conn.execute(sql)
        wait_until(lambda: idx_scan(dsn, "tix_draw") >= 30 and idx_scan(dsn, "ev_2026_k_idx") >= 5, "the scans counted")
        second = report(conn, ops, "db", now, endpoints=[ENDPOINT["name"]], limits=limits)
        old = ops.execute("SELECT count(*) FROM ops.table_snapshots WHERE target = 'old'").fetchone()[0]
        dotted = {r[0] for r in ops.execute("SELECT table_name FROM ops.table_snapshots WHERE target = 'db' "
                                            "AND taken_at = %s", (now,)).fetchall()}

    since = (now - timedelta(days=7)).isoformat()
    idx = second["indexes"]
    assert idx["since"] == since
    # used before, not this week; not: the keys, refs_tix_id (a foreign key's lookup), ev_k (scanned
    # through its 2026 partition's index; a partition's index is not listed on its own)
    assert [r["index"] for r in idx["unused"]] == ["public.tix_v"]
    used = {r["index"]: r["scans"] for r in idx["most_used"]}
    assert used["public.tix_draw"] == 30 and used["public.ev_k"] == 5
    assert not any("ev_20" in r["index"] for r in idx["most_used"] + idx["unused"])
    grown = {r["table"]: r for r in second["bloat"]["growing"]}
    assert {"public.tix", 'public."t$_$"'} <= set(grown) and grown["public.tix"]["bloat_change_bytes"] >= MIB
    assert {'"a.b".c', 'a."b.c"', "public.tix"} <= dotted  # two names that were one unquoted
    (api,) = second["endpoints"]
    assert (api["samples"], api["failed"], api["failed_percent"]) == (100, 5, 5.0)
    assert api["previous_p95_ms"] < 130 and api["p95_ms"] > 450 and api["p95_change_percent"] > 200
    recs = [r["recommendation"] for r in second["recommendations"]]
    assert f"drop candidate: index public.tix_v on public.tix was used by no query since {since}" in recs
    assert any(r.startswith("autovacuum is falling behind on public.tix") for r in recs)
    assert any(r.startswith("endpoint api-health got slower") for r in recs)
    assert "endpoint api-health failed 5 % of its checks (above 1 %): see its incidents" in recs
    # the charts' data: the endpoint's p95 per day over both weeks, the table's bloat at both snapshots
    assert len(second["series"]["p95_by_day"]["api-health"]) >= 13
    first_tix = next(r for r in first["bloat"]["largest"] if r["table"] == "public.tix")
    assert [b for _, b in second["series"]["bloat_by_snapshot"]["public.tix"]] == [
        first_tix["bloat_bytes"], grown["public.tix"]["bloat_bytes"]]
    assert old == 0
    assert set(charts(second, 1000.0)) == {ENDPOINTS_TITLE, BLOAT_TITLE}  # "t$_$" in a legend


def test_a_statistics_reset_during_the_week_voids_the_index_counts(week):
    dsn, ops_dsn = week
    now = datetime.now(UTC).replace(microsecond=0)
    limits = Limits(unused_index_bytes=64 * KIB)
    with psycopg.connect(dsn, autocommit=True) as conn, psycopg.connect(ops_dsn, autocommit=True) as ops:
        migrate(ops)
        report(conn, ops, "db", now - timedelta(days=7), limits=limits)
        conn.execute("SELECT pg_stat_reset()")
        wait_until(lambda: idx_scan(dsn, "tix_v") == 0, "the reset seen")
        second = report(conn, ops, "db", now, limits=limits)
    # tix_v is as idle as in the test above, but its count since a week ago is not known
    assert second["indexes"]["unused"] == [] and second["indexes"]["since"] is None
    assert any("statistics were reset" in n for n in second["notes"])
    assert not any(r["recommendation"].startswith("drop candidate") for r in second["recommendations"])


def test_cli_writes_the_charts_and_refuses_a_file_for_a_directory(week, tmp_path):
    from tests.integration.cli import assert_one_line_error, run_cli

    dsn, ops_dsn = week
    env = {"BVH_OPS_DATABASE_URL": dsn, "BVH_OPS_OPS_DATABASE_URL": ops_dsn, "BVH_OPS_ENDPOINTS": json.dumps([ENDPOINT])}
    with psycopg.connect(ops_dsn, autocommit=True) as ops:
        migrate(ops)
        samples(ops, datetime.now(UTC) - timedelta(days=6), [100.0 + i for i in range(60)])
    out = tmp_path / "charts"
    proc = run_cli("report", "performance", "--json", "--charts", str(out), env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert sorted(p.rsplit("/", 1)[1] for p in doc["charts"]) == [
        "Endpoint_p95_per_day__ms_.png", "Estimated_table_bloat_per_snapshot__MiB_.png"]
    assert all(open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for p in doc["charts"])
    assert doc["endpoints"][0]["samples"] == 60
    text = run_cli("report", "performance", env=env)
    assert text.returncode == 0 and "## Index usage" in text.stdout and "## Endpoint response times" in text.stdout
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with psycopg.connect(ops_dsn, autocommit=True) as ops:
        runs = ops.execute("SELECT count(*) FROM ops.performance_snapshots").fetchone()[0]
        assert runs == 2
    assert_one_line_error(run_cli("report", "performance", "--charts", str(a_file), env=env),
                          f"--charts {a_file}: not a directory")
    assert_one_line_error(run_cli("report", "performance", "--charts", str(a_file / "sub"), env=env),
                          f"--charts {a_file / 'sub'}: Not a directory")
    with psycopg.connect(ops_dsn, autocommit=True) as ops:  # refused before anything was stored
        assert ops.execute("SELECT count(*) FROM ops.performance_snapshots").fetchone()[0] == runs
