"""Drill stages as plain functions (the flow wraps each in a task): select, verify, provision a
scratch server, restore, check, record. No Prefect here."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bvh_ops.config import Settings
from bvh_ops.errors import BvhOpsError, NotFound
from bvh_ops.keys import load_identities
from bvh_ops.maintenance.disk import write_owner
from bvh_ops.pg.catalog import create_database
from bvh_ops.pg.cluster import EmbeddedCluster
from bvh_ops.pg.tools import EMBEDDED_MAJOR, matching_bin_dir
from bvh_ops.repository.manifest import Manifest
from bvh_ops.repository.open import open_repository
from bvh_ops.repository.verify import VerifyResult, verify_backup

log = logging.getLogger("bvh_ops.drill")


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
        return EmbeddedCluster(Path(self.root), binaries=Path(self.binaries) if self.binaries else None,
                               ephemeral=True)

    def teardown(self) -> None:
        if self.kind == "embedded":
            self._cluster().destroy()
        else:
            with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')

    def local_server(self):
        """The scratch's server as one on this host (bvh_ops.pg.fingerprint.LocalServer), or None
        for a database on a server elsewhere."""
        if self.kind != "embedded":
            return None
        from bvh_ops.pg.fingerprint import LocalServer

        cluster = self._cluster()
        return LocalServer.of_cluster(cluster.root, cluster.data)

    def label(self) -> str:
        if self.kind == "embedded":
            return f"embedded PostgreSQL in {self.root}"
        p = conninfo_to_dict(self.admin_dsn or "")
        return f"database {self.dbname} on {p.get('host', 'localhost')}:{p.get('port', 5432)}"


def select_backup(settings: Settings, backup: str, to_time: datetime | None = None) -> Manifest:
    """The logical backup to drill: the one named, or the newest trusted one (taken before
    ``to_time`` when given), refusing a manifest whose signature fails."""
    repo, _ = open_repository(settings)
    if backup == "latest" and to_time is not None:
        candidates = [r for r in repo.list_backups() if r.status == "complete" and r.kind == "logical"
                      and r.signature_ok and r.started_at is not None and r.started_at <= to_time]
        if not candidates:
            raise NotFound(f"no logical backup taken before {to_time.isoformat()}")
        backup = max(candidates, key=lambda r: r.started_at).backup_id
    return repo.trusted_manifest(backup, purpose="drill", kind="logical")


def deep_verify(settings: Settings, backup_id: str, keep: dict | None = None) -> list[VerifyResult]:
    """Every object of the backup decrypted and checked; ``keep`` as verify_backup's."""
    repo, _ = open_repository(settings)
    return verify_backup(repo, backup_id, identities=load_identities(settings.require_identity()), keep=keep)


def scratch_root(settings: Settings, drill_id: str) -> Path:
    """The directory of a drill's embedded scratch: its cluster and the decrypted dump."""
    return (Path(settings.state_dir) / "drills" / drill_id).resolve()


def provision_scratch(settings: Settings, drill_id: str, server_major: int, scratch: str = "embedded",
                      encoding: str | None = None) -> Scratch:
    """Start a scratch server of the backup's major version (or use the configured one); its
    database in the backup's ``encoding`` (the dump's: a LATIN1 source's rows then read back as
    the same bytes, which the PITR comparison hashes; a SQL_ASCII source's are no valid UTF-8)."""
    dbname = drill_id.replace("-", "_")
    if scratch == "configured":
        if settings.drill_scratch_dsn is None:
            raise BvhOpsError("scratch 'configured' needs drill_scratch_dsn (BVH_OPS_DRILL_SCRATCH_DSN)")
        admin = settings.drill_scratch_dsn.get_secret_value()
        create_database(admin, dbname, drop=False, encoding=encoding)
        return Scratch("server", dbname, admin_dsn=admin)
    binaries = matching_bin_dir(server_major, settings.pg_bin_dir)
    if binaries is not None and not (binaries / "initdb").exists():
        binaries = None
    if binaries is None and server_major != EMBEDDED_MAJOR:
        log.warning("no PostgreSQL %d server binaries: drilling on the embedded %d", server_major, EMBEDDED_MAJOR)
    root = scratch_root(settings, drill_id)
    write_owner(root)   # weekly disk cleanup removes it once this process is gone
    sc = Scratch("embedded", dbname, root=str(root), binaries=str(binaries) if binaries else None)
    cluster = sc._cluster()
    try:
        cluster.start()
        create_database(cluster.dsn(), dbname, drop=False, encoding=encoding)
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


def utcnow() -> datetime:
    return datetime.now(UTC)
