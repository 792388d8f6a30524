"""Debian's PostgreSQL 15 (where present): back up a 15 server with the embedded 18 pg_dump and
restore it into both 15 and 18, every fingerprint equal."""

from __future__ import annotations

import psycopg

from bvh_ops.demo.sample import load_sample
from bvh_ops.logical.backup import run_logical_backup
from bvh_ops.logical.restore import restore_logical
from bvh_ops.pg.catalog import create_database


def test_pg15_backup_restores_into_15_and_18(pg15, pg, fresh_db, repo_dir, make_settings):
    admin = pg15.format(db="postgres")
    create_database(admin, "bvh_pg15_src")
    create_database(admin, "bvh_pg15_dst")
    try:
        src = pg15.format(db="bvh_pg15_src")
        load_sample(src, scale=0.2)
        settings = make_settings(src, f"file://{repo_dir}")
        m = run_logical_backup(settings).manifest
        assert m.server_version_num // 10000 == 15
        assert restore_logical(settings, m.backup_id, pg15.format(db="bvh_pg15_dst")).ok
        assert restore_logical(settings, m.backup_id, fresh_db()).ok
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS bvh_pg15_src WITH (FORCE)")
            conn.execute("DROP DATABASE IF EXISTS bvh_pg15_dst WITH (FORCE)")


def test_pg15_incremental_is_a_wal_only_increment_restorable_to_a_point(tmp_path, keypair):
    """PostgreSQL 15 has no native incrementals: the increment is the archived WAL since the
    base, checked for continuity, and a restore reaches any point in it."""
    from pathlib import Path

    import pytest

    from bvh_ops.config import Settings
    from bvh_ops.physical.backup import run_physical_backup
    from bvh_ops.physical.restore import restore_physical, stop_server
    from bvh_ops.physical.target import RecoveryTarget
    from tests.conftest import PG15_BIN
    from tests.integration.archiving import start_archiving

    if not (PG15_BIN / "initdb").exists():
        pytest.skip("Debian PostgreSQL 15 binaries not present")
    arch = start_archiving(tmp_path / "pg15arch", keypair, binaries=PG15_BIN)
    try:
        dsn = arch.cluster.dsn()
        settings = Settings(database_url=dsn, repository=arch.url, recipients=[keypair[0]], identity=keypair[1],
                            state_dir=tmp_path / "state")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE w (id int, at timestamptz DEFAULT clock_timestamp())")
        full = run_physical_backup(settings, "full").manifest
        assert full.server_version_num // 10000 == 15
        with psycopg.connect(dsn, autocommit=True) as conn:
            # Autocommit: the first insert's commit record is written and flushed before the
            # LSN is read, the second's after it; no pause is needed to separate them.
            conn.execute("INSERT INTO w SELECT g FROM generate_series(1, 1000) g")
            lsn = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
            conn.execute("INSERT INTO w SELECT g FROM generate_series(1001, 2000) g")
        incr = run_physical_backup(settings, "incremental").manifest
        assert incr.kind == "incremental" and incr.extra["mode"] == "wal-only" and incr.parent_id == full.backup_id
        assert incr.extra["wal_segments"] >= 1 and not incr.objects
        report = restore_physical(settings, incr.backup_id, tmp_path / "data", target=RecoveryTarget("lsn", lsn),
                                  start=True)
        try:
            assert report.chain == [full.backup_id]
            restored = f"postgresql://postgres:{arch.cluster.password}@127.0.0.1:{report.port}/postgres"
            with psycopg.connect(restored) as conn:
                assert conn.execute("SELECT count(*), max(id) FROM w").fetchone() == (1000, 1000)
                assert conn.execute("SHOW server_version_num").fetchone()[0].startswith("15")
        finally:
            stop_server(tmp_path / "data", Path(PG15_BIN))
    finally:
        arch.cluster.destroy()


def test_a_newer_backup_into_an_older_server_is_refused_naming_why(pg15, pg, fresh_db, repo_dir, make_settings):
    """PostgreSQL 15's pg_restore said "unsupported version (1.16) in file header" of the embedded
    18 server's dump, naming no cause and no fix."""
    import pytest

    from bvh_ops.errors import ConfigError

    admin = pg15.format(db="postgres")
    create_database(admin, "bvh_pg15_newer_dst")
    try:
        src = fresh_db("_src18")
        with psycopg.connect(src, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        settings = make_settings(src, f"file://{repo_dir}")
        m = run_logical_backup(settings).manifest
        with pytest.raises(ConfigError, match=r"is of PostgreSQL 18 and the target server runs 15: .* restore into a "
                                              r"PostgreSQL 18\+ server"):
            restore_logical(settings, m.backup_id, pg15.format(db="bvh_pg15_newer_dst"))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS bvh_pg15_newer_dst WITH (FORCE)")
