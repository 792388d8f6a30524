"""What ``bvh-ops opsdb status`` shows: where the ops database runs, its schema version and how
many samples it keeps — read only, nothing started."""

from __future__ import annotations

import psycopg

from bvh_ops.dsn import scrub
from bvh_ops.errors import BvhOpsError
from bvh_ops.opsdb.migrations import LATEST, schema_version
from bvh_ops.pg.cluster import EmbeddedCluster
from bvh_ops.pg.conn import connect

_COUNTS = """SELECT (SELECT count(*) FROM ops.samples), (SELECT count(*) FROM ops.samples_hourly),
    (SELECT count(*) FROM ops.samples_daily),
    (SELECT count(*) FROM pg_inherits WHERE inhparent = 'ops.samples'::regclass),
    (SELECT min(at) FROM ops.samples), (SELECT max(at) FROM ops.samples)"""


def describe(dsn: str | None, cluster: EmbeddedCluster | None) -> dict[str, object]:
    """``cluster`` is the embedded one (None: ops_database_url); ``dsn`` None: not running."""
    info: dict[str, object] = {
        "kind": "embedded" if cluster is not None else "external (ops_database_url)",
        "running": False, "port": None, "data_dir": str(cluster.root) if cluster else None,
        "schema_version": None, "latest_version": LATEST, "samples": None, "detail": ""}
    if dsn is None:
        info["detail"] = "not running (bvh-ops opsdb start)"
        return info
    if cluster is not None:
        info["port"] = cluster.port
    try:
        with connect(dsn, autocommit=True, timeout=5) as conn:
            info["running"] = True
            version = info["schema_version"] = schema_version(conn)
            if version is not None and version >= 2:
                raw, hourly, daily, partitions, oldest, newest = conn.execute(_COUNTS).fetchone()
                info["samples"] = {"raw": raw, "hourly": hourly, "daily": daily, "partitions": partitions,
                                   "oldest": oldest.isoformat() if oldest else None,
                                   "newest": newest.isoformat() if newest else None}
    except (BvhOpsError, psycopg.Error) as exc:
        info["detail"] = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, dsn)
        return info
    if version is None or version < LATEST:
        info["detail"] = f"schema at version {version or 0} of {LATEST}: run bvh-ops opsdb start to migrate"
    return info
