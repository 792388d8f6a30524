"""Drill stages as plain functions (the flow wraps each in a task): select, verify, provision a
scratch server, restore, check, record. No Prefect here."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bvh_ops.backup import open_repository
from bvh_ops.config import Settings
from bvh_ops.errors import BvhOpsError
from bvh_ops.keys import load_identities
from bvh_ops.pg.cluster import EmbeddedCluster
from bvh_ops.pg.conn import connect
from bvh_ops.pg.sample import create_database
from bvh_ops.pg.tools import EMBEDDED_MAJOR, matching_bin_dir
from bvh_ops.repository.manifest import Manifest
from bvh_ops.repository.verify import VerifyResult, verify_backup

log = logging.getLogger("bvh_ops.drill")

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


def new_drill_id(now: datetime) -> str:
    return f"drill-{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


@dataclass
class Scratch:
    """Where a drill restores to: a throw-away embedded cluster, or a database on a server."""

    kind: str  # embedded | server
    dbname: str
    root: str | None = None
    admin_dsn: str | None = field(default=None, repr=False)
    binaries: str | None = None

    def dsn(self) -> str:
        if self.kind == "embedded":
            return self._cluster().dsn(self.dbname)
        assert self.admin_dsn is not None
        return make_conninfo(self.admin_dsn, dbname=self.dbname)

    def _cluster(self) -> EmbeddedCluster:
        return EmbeddedCluster(Path(self.root), binaries=Path(self.binaries) if self.binaries else None)

    def teardown(self) -> None:
        if self.kind == "embedded":
            self._cluster().destroy()
        else:
            with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')

    def label(self) -> str:
        if self.kind == "embedded":
            return f"embedded PostgreSQL in {self.root}"
        p = conninfo_to_dict(self.admin_dsn or "")
        return f"database {self.dbname} on {p.get('host', 'localhost')}:{p.get('port', 5432)}"


def select_backup(settings: Settings, backup: str) -> Manifest:
    repo, _ = open_repository(settings)
    return repo.trusted_manifest(backup, purpose="drill", kind="logical")


def deep_verify(settings: Settings, backup_id: str) -> list[VerifyResult]:
    repo, _ = open_repository(settings)
    return verify_backup(repo, backup_id, identities=load_identities(settings.require_identity()))


def provision_scratch(settings: Settings, drill_id: str, server_major: int, scratch: str = "embedded") -> Scratch:
    """Start a scratch server of the backup's major version (or use the configured one)."""
    dbname = drill_id.replace("-", "_")
    if scratch == "configured":
        if settings.drill_scratch_dsn is None:
            raise BvhOpsError("scratch 'configured' needs drill_scratch_dsn (BVH_OPS_DRILL_SCRATCH_DSN)")
        admin = settings.drill_scratch_dsn.get_secret_value()
        create_database(admin, dbname, drop=False)
        return Scratch("server", dbname, admin_dsn=admin)
    binaries = matching_bin_dir(server_major, settings.pg_bin_dir)
    if binaries is not None and not (binaries / "initdb").exists():
        binaries = None
    if binaries is None and server_major != EMBEDDED_MAJOR:
        log.warning("no PostgreSQL %d server binaries: drilling on the embedded %d", server_major, EMBEDDED_MAJOR)
    root = (Path(settings.state_dir) / "drills" / drill_id).resolve()
    sc = Scratch("embedded", dbname, root=str(root), binaries=str(binaries) if binaries else None)
    cluster = sc._cluster()
    try:
        cluster.start()
        create_database(cluster.dsn(), dbname, drop=False)
    except BaseException:
        cluster.destroy()
        raise
    return sc


def accepts_connections(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


# -- the ops database: one row per drill and per check ------------------------------------

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


def utcnow() -> datetime:
    return datetime.now(UTC)
