"""Drills in the ops database: one row per drill and per check (``ops.drills``,
``ops.drill_checks``). Where the database runs and its schema live in bvh_ops.opsdb; the names
are re-exported here for the drill code."""

from __future__ import annotations

import json
from typing import Any

from bvh_ops.opsdb.database import ops_database
from bvh_ops.opsdb.migrations import DRILLS_SQL as OPS_SCHEMA_SQL
from bvh_ops.opsdb.migrations import migrate
from bvh_ops.pg.conn import connect

__all__ = ["OPS_SCHEMA_SQL", "ops_database", "previous_drills", "record_drill"]


def record_drill(dsn: str, report: dict[str, Any]) -> None:
    with connect(dsn) as conn:
        migrate(conn)
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
        migrate(conn)
        rows = conn.execute(
            "SELECT drill_id, started_at, passed, rto_seconds, rpo_seconds FROM ops.drills "
            "ORDER BY started_at DESC LIMIT %s", (limit,)).fetchall()
        conn.commit()
    return [{"drill_id": r[0], "started_at": r[1].isoformat(), "passed": r[2], "rto_seconds": r[3],
             "rpo_seconds": r[4]} for r in reversed(rows)]
