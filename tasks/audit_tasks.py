"""Tasks of the audit trail: record a committed backup (and sign the chain's head, as the
runbook asks at every backup), and the hourly checkpoint. Best effort where the caller's work
is a backup: an audit failure is a logged warning there, never a failed backup (unless
``audit_strict``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bvh_ops.audit.digest import checkpoint
from bvh_ops.audit.record import record
from bvh_ops.config import Settings
from bvh_ops.errors import BvhOpsError, NotFound
from bvh_ops.opsdb.database import ops_database
from bvh_ops.opsdb.migrations import migrate
from bvh_ops.pg.conn import connect
from tasks.common import retry_transient_only


@task(name="audit-backups", cache_policy=NO_CACHE, timeout_seconds=300)
def audit_backups(settings: Settings, results: list[dict[str, Any] | None]) -> int:
    """backup.committed for each backup taken, then a digest; the number of entries written."""
    written = sum(record(settings, None, "backup.committed", r["backup_id"],
                         {"kind": r.get("kind", "logical"), "bytes": r.get("bytes_stored"), "bytes_in": r.get("bytes_in")})
                  for r in results if r)
    if written:
        try:
            sign_head(settings)
        except BvhOpsError as exc:
            if settings.audit_strict:
                raise
            get_run_logger().warning("AUDIT DIGEST NOT SIGNED after the backup: %s", exc)
    return written


def sign_head(settings: Settings) -> dict[str, Any]:
    with ops_database(settings) as dsn, connect(dsn, autocommit=True) as conn:
        migrate(conn)
        digest, new = checkpoint(settings, conn, datetime.now(UTC))
    return {**digest.body(), "object_key": digest.object_key, "new": new}


@task(name="audit-checkpoint", cache_policy=NO_CACHE, retry_condition_fn=retry_transient_only, timeout_seconds=900)
def audit_checkpoint(settings: Settings) -> dict[str, Any] | None:
    """Sign the chain's head into the ops database and the repository (None: the trail is empty)."""
    try:
        return sign_head(settings)
    except NotFound:
        return None
