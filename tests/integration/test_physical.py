"""Physical full backup streamed from pg_basebackup, restored into a new data directory that
starts by itself with the data of the moment of the backup."""

from __future__ import annotations

import psycopg
import pytest

from bvh_ops.errors import BvhOpsError
from bvh_ops.keys import load_identities
from bvh_ops.pg.tools import embedded_bin_dir
from bvh_ops.physical.backup import run_physical_full
from bvh_ops.physical.restore import restore_physical, stop_server
from bvh_ops.repository.verify import Status, verify_backup


def _fp(dsn: str) -> tuple:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*), sum(hashtextextended(t::text, 0)) FROM phys t").fetchone()


def test_full_physical_backup_restores_and_starts(pg, repo_dir, make_settings, tmp_path):
    from bvh_ops.pg.catalog import create_database

    create_database(pg.dsn(), "physdb")
    with psycopg.connect(pg.dsn("physdb"), autocommit=True) as conn:
        conn.execute("CREATE TABLE phys AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g")
    before = _fp(pg.dsn("physdb"))
    settings = make_settings(pg.dsn("physdb"), f"file://{repo_dir}")
    result = run_physical_full(settings)
    m = result.manifest
    assert m.kind == "full" and m.extra["start_lsn"] and m.extra["stop_lsn"]
    with psycopg.connect(pg.dsn("physdb"), autocommit=True) as conn:
        conn.execute("INSERT INTO phys VALUES (0, 'after the backup')")
    from bvh_ops.repository.open import open_repository

    repo, _ = open_repository(settings)
    assert all(r.status is Status.OK for r in verify_backup(repo, m.backup_id, identities=load_identities(settings.identity)))

    # No WAL archive here: recovery replays the WAL inside the backup and promotes.
    report = restore_physical(settings, m.backup_id, tmp_path / "restored", start=True)
    try:
        assert report.verified and report.started
        restored = f"postgresql://postgres:{pg.password}@127.0.0.1:{report.port}/physdb"
        assert _fp(restored) == before  # the moment of the backup, not after
    finally:
        stop_server(tmp_path / "restored", embedded_bin_dir())


def test_restore_refuses_a_non_empty_directory(pg, repo_dir, make_settings, tmp_path):
    settings = make_settings(pg.dsn(), f"file://{repo_dir}")
    m = run_physical_full(settings).manifest
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "PG_VERSION").write_text("18")
    with pytest.raises(BvhOpsError, match="not empty"):
        restore_physical(settings, m.backup_id, tmp_path / "busy")


def test_cli_full_backup_json_contract(pg, repo_dir, make_settings, cli_prefect_api):
    import json

    from tests.integration.cli import run_cli
    from tests.integration.test_tamper import cli_env

    settings = make_settings(pg.dsn(), f"file://{repo_dir}")
    proc = run_cli("backup", "--kind", "full", "--json", env=cli_env(settings))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    for key in ("backup_id", "kind", "parent_id", "start_lsn", "stop_lsn", "bytes_in", "bytes_stored"):
        assert key in doc
    assert doc["kind"] == "full" and doc["parent_id"] is None and "/" in doc["start_lsn"]
