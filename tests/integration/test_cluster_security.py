"""Embedded clusters (the demo's, the ops database's, drill scratch clusters) give no way in to
other local users: no trust authentication, no Unix socket directory, a password over TCP."""

from __future__ import annotations

import glob

import psycopg
import pytest

from bvh_ops.pg.cluster import EmbeddedCluster


def _hba_methods(cluster: EmbeddedCluster) -> set[str]:
    lines = [ln.split("#", 1)[0].split() for ln in (cluster.data / "pg_hba.conf").read_text().splitlines()]
    return {fields[-1] for fields in lines if fields}


def test_session_cluster_has_no_trust_and_no_socket(pg):
    assert "trust" not in _hba_methods(pg)
    assert not pg.socket_dir.exists()
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        assert conn.execute("SHOW unix_socket_directories").fetchone()[0] == ""
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg.port}/postgres", connect_timeout=5)


def test_a_cluster_made_by_an_earlier_version_is_hardened_at_start(tmp_path):
    """Clusters created before this fix had local trust and a 0777 socket directory in /tmp."""
    cluster = EmbeddedCluster(tmp_path / "old")
    cluster.init()
    hba = cluster.data / "pg_hba.conf"
    hba.write_text(hba.read_text() + "local   all   all   trust\nhost all all 127.0.0.1/32 trust\n")
    with open(cluster.data / "postgresql.conf", "a") as fh:
        fh.write(f"unix_socket_directories = '{cluster.socket_dir}'\n")
    cluster.socket_dir.mkdir(mode=0o777, exist_ok=True)
    try:
        cluster.start()
        assert "trust" not in _hba_methods(cluster)
        assert not glob.glob(str(cluster.socket_dir))
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres", connect_timeout=5)
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            assert conn.execute("SHOW unix_socket_directories").fetchone()[0] == ""
    finally:
        cluster.destroy()
