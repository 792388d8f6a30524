"""PostgreSQL's own log collected from a real server: an embedded PostgreSQL 18 started with
logging_collector on, log_destination 'jsonlog,csvlog', connections and every statement's
duration logged; then a connection, a failed login, a statement and an error."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import psycopg
import pytest

from bvh_ops.config import Settings
from bvh_ops.logs.collect import collect, pipelines
from bvh_ops.logs.store import Query, iter_records
from bvh_ops.opsdb.migrations import migrate
from bvh_ops.pg.cluster import EmbeddedCluster

LOG_CONF = {"logging_collector": "on", "log_destination": "'jsonlog,csvlog'", "log_directory": "'log'",
            "log_connections": "on", "log_disconnections": "on", "log_min_duration_statement": "0",
            "log_timezone": "'UTC'"}


@pytest.fixture(scope="module")
def logging_pg(tmp_path_factory):
    cluster = EmbeddedCluster(tmp_path_factory.mktemp("pglog") / "cluster", extra_conf=LOG_CONF)
    cluster.start()
    yield cluster
    cluster.destroy()


def wait_for(path_glob, needle: str, timeout: float = 20) -> None:
    import glob

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in glob.glob(path_glob):
            with open(p, errors="replace") as fh:
                if needle in fh.read():
                    return
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} never appeared in {path_glob}")


@pytest.mark.parametrize("fmt, suffix", [("postgres-jsonlog", "json"), ("postgres-csvlog", "csv")])
def test_real_postgres_log_becomes_classified_records(logging_pg, fresh_db, tmp_path, fmt, suffix):
    ops = fresh_db()
    with psycopg.connect(ops, autocommit=True) as conn:
        migrate(conn)
    marker = f"marker_{suffix}_{time.time_ns()}"
    with psycopg.connect(logging_pg.dsn(), autocommit=True) as conn:
        conn.execute(f"SELECT '{marker}', pg_sleep(0.01)")
        conn.execute(f"SELECT '{marker}' AS multi,\n  2 AS line")
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute(f"SELECT 1/0 AS {marker}")
    bad = logging_pg.dsn().replace(f":{logging_pg.password}@", ":wrong-password@")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(bad, connect_timeout=5)
    pattern = str(logging_pg.data / "log" / f"*.{suffix}")
    wait_for(pattern, "password authentication failed")
    settings = Settings(ops_database_url=ops, state_dir=tmp_path / "state",
                        log_sources=[{"name": "pg", "path": pattern, "format": fmt}])
    with psycopg.connect(ops) as conn:
        result = collect(conn, pipelines(settings), now=datetime.now(UTC))
    assert result.quarantined == 0, result.to_json()
    assert result.errors == 0
    with psycopg.connect(ops, autocommit=True) as conn:
        recs = list(iter_records(conn, Query()))
    events = {r.event for r in recs}
    assert {"pg.connection_authorized", "pg.auth_failed", "pg.slow_statement", "pg.error"} <= events, events
    failed = [r for r in recs if r.event == "pg.auth_failed"]
    assert all(r.category == "security" and r.level == "error" for r in failed)
    assert failed[0].fields["ip"] == "127.0.0.1"            # security keeps the IP in clear
    slow = [r for r in recs if r.event == "pg.slow_statement" and marker in r.message]
    assert slow and all(r.category == "performance" and r.fields["duration_ms"] > 0 for r in slow)
    assert any("\n  2 AS line" in r.fields.get("statement", "") for r in slow)   # a multi-line statement whole
    err = [r for r in recs if r.event == "pg.error" and "division by zero" in r.message]
    assert err and err[0].category == "application" and err[0].fields["sql_state"] == "22012"
    assert err[0].fields["ip"].startswith("pseu:")          # application: pseudonymised
    # The next collect reads nothing twice.
    with psycopg.connect(ops) as conn:
        again = collect(conn, pipelines(settings), now=datetime.now(UTC))
    with psycopg.connect(ops, autocommit=True) as conn:
        total = conn.execute("SELECT count(*) FROM ops.log_records").fetchone()[0]
    assert total == len(recs) + again.records
