"""`bvh-ops logs search` over the hot store, as an operator runs it: filters, time order, count,
JSON, and one clear line for bad input."""

from __future__ import annotations

import json

import psycopg
import pytest

from bvh_ops.logs.store import Query, iter_records
from bvh_ops.opsdb.migrations import migrate
from tests.integration.cli import assert_one_line_error, run_cli

LINES = [  # (timestamp, level, category, event, fields) — written out of time order on purpose
    ("2026-11-28T10:05:00Z", "warning", "security", "auth.login_failed", {"ip": "203.0.113.9", "account": "a1"}),
    ("2026-11-28T10:00:00Z", "info", "application", "wallet.deposit", {"account": "a1", "amount": 50}),
    ("2026-11-28T10:01:00Z", "warning", "security", "auth.login_failed", {"ip": "203.0.113.9", "account": "a2"}),
    ("2026-11-28T10:02:00Z", "error", "application", "draw.failed", {"message": "Draw engine timeout"}),
    ("2026-11-29T09:00:00Z", "info", "performance", "http.request", {"endpoint": "/api/draws", "ms": 420}),
    ("2026-11-27T23:59:59Z", "info", "audit", "admin.balance_adjusted", {"account": "a3", "by": "ops1"}),
]


@pytest.fixture(scope="module")
def env(pg, tmp_path_factory):
    """The lines collected once into one ops database; every test here only reads it (a search
    changes nothing: test_a_search_changes_nothing proves it)."""
    from bvh_ops.pg.catalog import create_database

    create_database(pg.dsn(), "logs_search")
    dsn = pg.dsn("logs_search")
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
    tmp_path = tmp_path_factory.mktemp("logs_search")
    path = tmp_path / "app.log"
    with open(path, "w") as fh:
        for ts, level, cat, event, fields in LINES:
            fh.write(json.dumps({"timestamp": ts, "level": level, "category": cat, "event": event,
                                 "service": "lottery-api", **fields}) + "\n")
    env = {"BVH_OPS_OPS_DATABASE_URL": dsn, "BVH_OPS_STATE_DIR": str(tmp_path / "state"),
           "BVH_OPS_LOG_SOURCES": json.dumps([{"name": "app", "path": str(path), "format": "json"}])}
    proc = run_cli("logs", "collect", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "6 records, 0 quarantined" in proc.stdout
    yield env
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute('DROP DATABASE IF EXISTS "logs_search" WITH (FORCE)')


def search(env, *args: str) -> dict:
    proc = run_cli("logs", "search", "--json", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["count"] == len(doc["records"])
    return doc


def events(doc) -> list[str]:
    return [r["event"] for r in doc["records"]]


def test_everything_in_time_order_across_categories_and_days(env):
    doc = search(env)
    assert [r["at"] for r in doc["records"]] == sorted(r["at"] for r in doc["records"])
    assert events(doc)[0] == "admin.balance_adjusted" and events(doc)[-1] == "http.request"
    assert doc["count"] == 6 and doc["limited"] is False


@pytest.mark.parametrize("args, expected", [
    (["--category", "security"], ["auth.login_failed", "auth.login_failed"]),
    (["--level", "warning"], ["auth.login_failed", "draw.failed", "auth.login_failed"]),
    (["--level", "error"], ["draw.failed"]),
    (["--since", "2026-11-28T10:01:00Z", "--until", "2026-11-28T10:05:00Z"], ["auth.login_failed", "draw.failed"]),
    (["--since", "2026-11-29"], ["http.request"]),
    (["--match", "account=a1"], ["wallet.deposit", "auth.login_failed"]),
    (["--match", "account=a1", "--match", "event=auth.login_failed"], ["auth.login_failed"]),
    (["--match", "ip=203.0.113.9", "--category", "security"], ["auth.login_failed", "auth.login_failed"]),
    (["--grep", "ENGINE timeout"], ["draw.failed"]),
    (["--grep", "/api/draws"], ["http.request"]),
    (["--grep", "100%"], []),
    (["--limit", "2"], ["admin.balance_adjusted", "wallet.deposit"]),
])
def test_filters(env, args, expected):
    doc = search(env, *args)
    assert events(doc) == expected
    if "--limit" in args:
        assert doc["limited"] is True


def test_the_text_view_ends_with_the_count(env):
    proc = run_cli("logs", "search", "--category", "audit", env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("2026-11-27 23:59:59.000Z audit") and "by=ops1" in lines[0]
    assert lines[-1] == "1 records"


@pytest.mark.parametrize("args, needle", [
    (["--category", "metrics"], "--category 'metrics'"),
    (["--level", "loud"], "--level 'loud'"),
    (["--since", "yesterday"], "--since 'yesterday'"),
    (["--since", "2026-11-29", "--until", "2026-11-28"], "is not after --since"),
    (["--match", "account"], "--match 'account'"),
    (["--grep", " "], "--grep is empty"),
    (["--limit", "-1"], "--limit -1"),
])
def test_bad_input_is_one_clear_line(env, args, needle):
    assert_one_line_error(run_cli("logs", "search", *args, env=env), needle)


def test_collect_without_sources_is_one_clear_line(tmp_path):
    proc = run_cli("logs", "collect", env={"BVH_OPS_STATE_DIR": str(tmp_path / "state")})
    assert_one_line_error(proc, "no log sources")


def test_a_bad_source_fails_at_load_naming_the_field(tmp_path):
    proc = run_cli("logs", "collect", env={"BVH_OPS_STATE_DIR": str(tmp_path / "state"),
                                           "BVH_OPS_LOG_SOURCES": json.dumps([{"name": "pg", "path": "/x/*.csv",
                                                                              "format": "syslog"}])})
    assert_one_line_error(proc, "log_sources", "format 'syslog'")


def test_iter_records_streams_with_a_server_side_cursor(env):
    with psycopg.connect(env["BVH_OPS_OPS_DATABASE_URL"], autocommit=True) as conn:
        it = iter_records(conn, Query(category="security"), batch=1)
        first = next(it)
        cursors = [r[0] for r in conn.execute("SELECT name FROM pg_cursors").fetchall()]
        assert first.event == "auth.login_failed" and cursors == ["bvh_logs_search"]
        assert len(list(it)) == 1


def _store(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1").fetchall()]
        return [(t, conn.execute(f"SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) "
                                 f"FROM {t} x").fetchone()[0]) for t in tables]


def test_a_search_changes_nothing(env):
    """The fixture is shared by every test in this file: a search (good or bad) leaves the ops
    database as it found it."""
    before = _store(env["BVH_OPS_OPS_DATABASE_URL"])
    search(env, "--category", "security")
    run_cli("logs", "search", "--level", "loud", env=env)
    assert _store(env["BVH_OPS_OPS_DATABASE_URL"]) == before
