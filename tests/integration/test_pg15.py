"""Debian's PostgreSQL 15 (where present): back up a 15 server with the embedded 18 pg_dump and
restore it into both 15 and 18, every fingerprint equal."""

from __future__ import annotations

import psycopg

from bvh_ops.backup import run_logical_backup
from bvh_ops.pg.sample import create_database, load_sample
from bvh_ops.restore import restore_logical


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
