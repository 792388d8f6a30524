"""Backup -> deep verify -> restore into a fresh database: every table's fingerprint equal,
including awkward objects; selective restore of one table."""

from __future__ import annotations

import psycopg
import pytest

from bvh_ops.keys import load_identities
from bvh_ops.logical.backup import run_logical_backup
from bvh_ops.logical.restore import restore_logical
from bvh_ops.pg.fingerprint import LARGE_OBJECTS
from bvh_ops.repository.open import open_repository
from bvh_ops.repository.verify import Status, verify_backup
from tests.integration.awkward import AWKWARD_SQL


@pytest.fixture(scope="module")
def awkward_db(pg):
    from bvh_ops.pg.catalog import create_database

    create_database(pg.dsn(), "awkward")
    with psycopg.connect(pg.dsn("awkward"), autocommit=True) as conn:
        conn.execute(AWKWARD_SQL)
    return pg.dsn("awkward")


@pytest.mark.parametrize("jobs", [1, 3])
def test_awkward_database_round_trips_exactly(awkward_db, fresh_db, repo_dir, make_settings, jobs):
    settings = make_settings(awkward_db, f"file://{repo_dir}")
    result = run_logical_backup(settings)
    m = result.manifest
    names = {t.name for t in m.tables}
    assert {'"Ünïcödé Schema"."Weird ""Quoted"" Table"', "public.dupes", "public.empty_table",
            "public.unlogged_cache", "public.measurements", LARGE_OBJECTS} <= names
    assert "public.mood_counts" not in names  # matviews are refreshed on restore, not copied
    by_name = {t.name: t for t in m.tables}
    assert by_name["public.dupes"].rows == 4
    assert by_name["public.measurements"].rows == 400
    assert by_name[LARGE_OBJECTS].rows == 2

    repo, _ = open_repository(settings)
    deep = verify_backup(repo, m.backup_id, identities=load_identities(settings.identity))
    assert [r.status for r in deep] == [Status.OK] * 3

    target = fresh_db()
    restored = restore_logical(settings, m.backup_id, target, jobs=jobs)
    mismatched = [(c.name, c.expected, c.actual) for c in restored.comparisons if not c.ok]
    assert mismatched == []
    assert len(restored.comparisons) == len(m.tables)
    assert restored.bytes_in == m.objects[0].plaintext_size  # the whole dump was read and verified
    from bvh_ops.pg.catalog import compare_schema, schema_snapshot
    from bvh_ops.pg.conn import connect

    with connect(target) as conn:
        assert compare_schema(m.extra["schema"], schema_snapshot(conn)) == []


def test_fingerprint_sees_a_changed_duplicate(awkward_db, fresh_db, repo_dir, make_settings):
    """Deleting one of three identical rows must change the fingerprint (sum, not XOR)."""
    settings = make_settings(awkward_db, f"file://{repo_dir}")
    backup = run_logical_backup(settings).manifest
    target = fresh_db()
    restore_logical(settings, backup.backup_id, target, compare=False)
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("DELETE FROM dupes WHERE ctid = (SELECT min(ctid) FROM dupes WHERE v = 'same')")
        conn.execute("INSERT INTO dupes VALUES ('other', 2)")  # same row count, different content
    from bvh_ops.logical.restore import compare_tables

    bad = [c.name for c in compare_tables(target, backup) if not c.ok]
    assert bad == ["public.dupes"]


def test_selective_restore_of_one_table(sample_db, fresh_db, repo_dir, make_settings):
    settings = make_settings(sample_db, f"file://{repo_dir}")
    backup = run_logical_backup(settings).manifest
    target = fresh_db()
    result = restore_logical(settings, "latest", target, tables=["tickets"])
    assert result.ok and [c.name for c in result.comparisons] == ["public.tickets"]
    with psycopg.connect(target) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace")}
        expected_rows = next(t.rows for t in backup.tables if t.name == "public.tickets")
        assert conn.execute("SELECT count(*) FROM tickets").fetchone()[0] == expected_rows
    assert tables == {"tickets"}
    with psycopg.connect(target) as conn:
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'tickets'")}
    assert indexes == {"tickets_pkey", "tickets_user_idx", "tickets_draw_idx"}


def test_selective_restore_of_unknown_table_fails_clearly(sample_db, fresh_db, repo_dir, make_settings):
    from bvh_ops.errors import NotFound

    settings = make_settings(sample_db, f"file://{repo_dir}")
    run_logical_backup(settings)
    with pytest.raises(NotFound, match="no_such_table"):
        restore_logical(settings, "latest", fresh_db(), tables=["no_such_table"])
