"""``record``: bvh-ops's own actions into the audit trail, in one call that never breaks the
caller's work. An entry that cannot be written is logged as a warning and ``record`` returns
False (with ``audit_strict`` it raises instead): a missing audit entry must be visible, but a
backup must not fail because the ops database was down."""

from __future__ import annotations

import getpass
import logging
import socket
from datetime import UTC, datetime
from typing import Any

import psycopg

from bvh_ops.audit.store import append
from bvh_ops.config import Settings
from bvh_ops.errors import BvhOpsError, DatabaseError
from bvh_ops.opsdb.database import embedded_cluster, ops_database
from bvh_ops.opsdb.migrations import migrate
from bvh_ops.pg.conn import connect

log = logging.getLogger("bvh_ops.audit")


def default_actor() -> str:
    """user@host of this process: who did it, as the operating system knows them."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def record(settings: Settings, actor: str | None, action: str, subject: str = "", data: dict[str, Any] | None = None,
           *, now: datetime | None = None, conn: psycopg.Connection | None = None, strict: bool | None = None) -> bool:
    """Append one entry (``actor`` None = this process's user@host). Uses ``conn`` when given
    (the entry then commits with the caller's transaction), else the ops database, started for
    the call when it is the embedded one. True when written."""
    strict = settings.audit_strict if strict is None else strict
    actor = actor or default_actor()
    now = now or datetime.now(UTC)
    try:
        if conn is not None:
            append(conn, actor, action, subject, data or {}, now)
            return True
        if settings.ops_database_url is None and not embedded_cluster(settings).initialized():
            raise DatabaseError("no ops database (set ops_database_url, or `bvh-ops opsdb start`)")
        with ops_database(settings) as dsn, connect(dsn, autocommit=True) as own:
            migrate(own)
            append(own, actor, action, subject, data or {}, now)
        return True
    except (BvhOpsError, psycopg.Error, OSError) as exc:
        if strict:
            if isinstance(exc, BvhOpsError):
                raise
            raise DatabaseError(f"audit trail: could not record {action} {subject}: {exc}") from None
        log.warning("AUDIT TRAIL NOT WRITTEN: %s %s by %s: %s", action, subject, actor, exc)
        return False
