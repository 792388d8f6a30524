"""Where the ops database runs: ``ops_database_url``, or database ``bvh_ops`` on the embedded
cluster under ``state_dir/pg``. Started explicitly (``bvh-ops opsdb start``, the demo); a one-off
command that needs it (``ops_database``) starts it for the call only and stops it again."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from bvh_ops.config import Settings
from bvh_ops.pg.cluster import EmbeddedCluster

DBNAME = "bvh_ops"


def embedded_cluster(settings: Settings) -> EmbeddedCluster:
    return EmbeddedCluster(Path(settings.state_dir).resolve() / "pg")


def ensure_database(cluster: EmbeddedCluster) -> str:
    """Create database ``bvh_ops`` on a running cluster where missing; its DSN."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DBNAME,)).fetchone() is None:
            conn.execute(f"CREATE DATABASE {DBNAME}")
    return cluster.dsn(DBNAME)


def running_dsn(settings: Settings) -> str | None:
    """The ops database's DSN where it runs now; None when it would have to be started (readers
    such as the monitor never start it)."""
    if settings.ops_database_url is not None:
        return settings.ops_database_url.get_secret_value()
    cluster = embedded_cluster(settings)
    if cluster.initialized() and cluster.is_running():
        try:
            return cluster.dsn(DBNAME)
        except OSError:
            return None
    return None


@contextmanager
def ops_database(settings: Settings) -> Iterator[str]:
    """The ops database's DSN: ``ops_database_url``, or database ``bvh_ops`` on the embedded
    cluster in the state directory — started for the duration and stopped again when this call
    started it (a one-off command leaves no server running behind it)."""
    if settings.ops_database_url is not None:
        yield settings.ops_database_url.get_secret_value()
        return
    cluster = embedded_cluster(settings)
    started = not cluster.is_running()
    cluster.start()
    try:
        yield ensure_database(cluster)
    finally:
        if started:
            cluster.stop()
