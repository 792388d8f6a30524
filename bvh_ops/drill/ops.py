"""The ops database: one row per drill and per check (schema ``ops``), on ``ops_database_url`` or
the embedded cluster in the state directory (started for the call, stopped again if we started it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from bvh_ops.config import Settings
from bvh_ops.pg.cluster import EmbeddedCluster
from bvh_ops.pg.conn import connect


@contextmanager
def ops_database(settings: Settings) -> Iterator[str]:
    """The ops database's DSN: ``ops_database_url``, or database ``bvh_ops`` on the embedded
    cluster in the state directory — started for the duration and stopped again when this call
    started it (a one-off command leaves no server running behind it)."""
    if settings.ops_database_url is not None:
        yield settings.ops_database_url.get_secret_value()
        return
    cluster = EmbeddedCluster(Path(settings.state_dir).resolve() / "pg")
    started = not cluster.is_running()
    cluster.start()
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'bvh_ops'").fetchone() is None:
                conn.execute("CREATE DATABASE bvh_ops")
        yield cluster.dsn("bvh_ops")
    finally:
        if started:
            cluster.stop()


def record_drill(dsn: str, report: dict[str, Any]) -> None:
    with connect(dsn) as conn:
        conn.execute(OPS_SCHEMA_SQL)
        conn.execute(
            "INSERT INTO ops.drills (drill_id, started_at, finished_at, backup_id, mode, passed, rto_seconds, "
            "rpo_seconds, rto_objective_seconds, rpo_objective_seconds, report) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (report["drill_id"], report["started_at"], report["finished_at"], report["backup_id"], report["mode"],
             report["passed"], report["rto_seconds"], report["rpo_seconds"], report["objectives"]["rto_seconds"],
             report["objectives"]["rpo_seconds"], json.dumps(report, default=str)))
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO ops.drill_checks (drill_id, name, status, detail) VALUES (%s, %s, %s, %s)",
                            [(report["drill_id"], c["name"], c["status"], c["detail"]) for c in report["checks"]])
        conn.commit()


def previous_drills(dsn: str, limit: int = 10) -> list[dict[str, Any]]:
    with connect(dsn) as conn:
        conn.execute(OPS_SCHEMA_SQL)
        rows = conn.execute(
            "SELECT drill_id, started_at, passed, rto_seconds, rpo_seconds FROM ops.drills "
            "ORDER BY started_at DESC LIMIT %s", (limit,)).fetchall()
        conn.commit()
    return [{"drill_id": r[0], "started_at": r[1].isoformat(), "passed": r[2], "rto_seconds": r[3],
             "rpo_seconds": r[4]} for r in reversed(rows)]


OPS_SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE IF NOT EXISTS ops.drills (
    drill_id text PRIMARY KEY,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    backup_id text,
    mode text NOT NULL,
    passed boolean NOT NULL,
    rto_seconds double precision,
    rpo_seconds double precision,
    rto_objective_seconds double precision NOT NULL,
    rpo_objective_seconds double precision NOT NULL,
    report jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS ops.drill_checks (
    drill_id text NOT NULL REFERENCES ops.drills (drill_id) ON DELETE CASCADE,
    name text NOT NULL,
    status text NOT NULL CHECK (status IN ('passed', 'failed', 'not_verified')),
    detail text NOT NULL DEFAULT '',
    PRIMARY KEY (drill_id, name)
);
"""
