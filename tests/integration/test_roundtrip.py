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


TYPED = """
CREATE TABLE typed (id int PRIMARY KEY, i int, b bigint, n numeric, t text, v varchar(20), f bool, d date,
  ts timestamp, tz timestamptz, iv interval, f8 float8, f4 real, by bytea, u uuid, j json, jb jsonb,
  a int[], ip inet, m money, g int GENERATED ALWAYS AS (i * 2) STORED);
INSERT INTO typed (id, i, b, n, t, v, f, d, ts, tz, iv, f8, f4, by, u, j, jb, a, ip, m)
SELECT k, k, k * 10000000000, k / 7.0, 'text ' || k || E'\\ttab\\nline', 'v' || k, k % 2 = 0,
  date '2026-01-01' + k, timestamp '2026-01-01 12:00' + k * interval '1 minute',
  timestamptz '2026-01-01 12:00+02' + k * interval '1 second', k * interval '1 hour 3 seconds', k / 3.0,
  k / 3.0, decode(md5(k::text), 'hex'), md5(k::text)::uuid, json_build_object('k', k),
  jsonb_build_object('k', k), ARRAY[k, k + 1], ('10.0.0.' || k)::inet, k * 1.25
FROM generate_series(1, 50) k;
CREATE TABLE parted (id int, at date) PARTITION BY RANGE (at);
CREATE TABLE parted_a PARTITION OF parted FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
CREATE TABLE parted_b PARTITION OF parted FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');
INSERT INTO parted SELECT k, date '2026-01-01' + k FROM generate_series(0, 50) k;
"""
# One changed value per column type (same row count): each must fail the comparison.
CHANGES = [
    ("i", "i + 1"), ("b", "b + 1"), ("n", "n + 0.000001"), ("t", "t || ' '"), ("v", "v || 'x'"), ("f", "NOT f"),
    ("d", "d + 1"), ("ts", "ts + interval '1 microsecond'"), ("tz", "tz + interval '1 microsecond'"),
    ("iv", "iv + interval '1 microsecond'"), ("f8", "f8 + 1e-15"), ("f4", "f4 * 1.0000001"),
    ("by", "by || '\\x00'::bytea"), ("u", "gen_random_uuid()"), ("j", "json_build_object('k', 0)"),
    ("jb", "jsonb_build_object('k', 0)"), ("a", "ARRAY[0]"), ("ip", "'10.9.9.9'::inet"), ("m", "m + 0.01::money"),
]


@pytest.fixture(scope="module")
def typed_backup(pg, tmp_path_factory, keypair):
    from bvh_ops.config import Settings
    from bvh_ops.pg.catalog import create_database

    create_database(pg.dsn(), "typed")
    with psycopg.connect(pg.dsn("typed"), autocommit=True) as conn:
        conn.execute(TYPED)
    repo = tmp_path_factory.mktemp("typed-repo")
    pub, key = keypair
    settings = Settings(database_url=pg.dsn("typed"), repository=f"file://{repo}", recipients=[pub], identity=key,
                        state_dir=repo / "state", task_retries=1, retry_delay_seconds=[0.2], segment_size_kib=64)
    return settings, run_logical_backup(settings).manifest


def test_fingerprints_come_from_the_dump_and_catch_a_changed_value_of_every_type(typed_backup, fresh_db):
    from bvh_ops.logical.restore import compare_tables

    settings, backup = typed_backup
    assert backup.extra["fingerprints"] == 4 and backup.extra["dump_encoding"] == "UTF8"
    by_name = {t.name: t for t in backup.tables}
    assert by_name["public.typed"].fingerprint.endswith(":blake3") and by_name["public.typed"].rows == 50
    assert by_name["public.parted"].rows == 51
    target = fresh_db()
    restore_logical(settings, backup.backup_id, target, compare=False)
    assert [c.name for c in compare_tables(target, backup) if not c.ok] == []
    cols = "id, i, b, n, t, v, f, d, ts, tz, iv, f8, f4, by, u, j, jb, a, ip, m"
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA saved; CREATE TABLE saved.typed AS SELECT * FROM typed;"
                     "CREATE TABLE saved.parted AS SELECT * FROM parted")

        def check(change: str) -> list[str]:
            conn.execute(change)
            bad = [c.name for c in compare_tables(target, backup) if not c.ok]
            # Put the rows back in their original order (a COPY digest follows the heap order).
            conn.execute(f"TRUNCATE typed, parted; INSERT INTO typed ({cols}) SELECT {cols} FROM saved.typed "
                         "ORDER BY id; INSERT INTO parted SELECT * FROM saved.parted ORDER BY id")
            return bad

        for column, expr in CHANGES:
            assert check(f"UPDATE typed SET {column} = {expr} WHERE id = 7") == ["public.typed"], column
        assert check("DELETE FROM typed WHERE id = 50") == ["public.typed"]
        extra = cols.replace("id, ", "id + 50, ", 1)
        assert check(f"INSERT INTO typed ({cols}) SELECT {extra} FROM saved.typed WHERE id = 50") == ["public.typed"]
        for change in ("DELETE FROM parted WHERE id = 3", "INSERT INTO parted VALUES (99, '2026-02-10')",
                       "UPDATE parted SET at = '2026-02-15' WHERE id = 4"):  # moved to the other partition
            assert check(change) == ["public.parted"], change
        assert [c.name for c in compare_tables(target, backup) if not c.ok] == []


@pytest.mark.parametrize("method, version", [("copy", 2), ("framed", 3)])
def test_a_backup_with_older_fingerprints_is_still_checked_as_it_was_taken(typed_backup, fresh_db, method, version):
    """Backups taken before fingerprints 4 hold the sha256 of the COPY text, bare (":copy", 2) or
    framed (":framed", 3): a restored copy is read the same way, and a changed row still fails its
    table."""
    import dataclasses

    from bvh_ops.logical.restore import compare_tables
    from bvh_ops.pg.conn import connect
    from bvh_ops.pg.fingerprint import copy_fingerprints, list_tables

    settings, backup = typed_backup
    dsn = settings.require_database_url()
    with connect(dsn) as conn:
        old = copy_fingerprints(conn, dsn, list_tables(conn), encoding="UTF8", method=method)
    v2 = dataclasses.replace(backup, tables=tuple(old) + tuple(t for t in backup.tables if t.kind == "large_objects"),
                             extra={**backup.extra, "fingerprints": version})
    assert {t.fingerprint.rsplit(":", 1)[1] for t in v2.tables} == {method, "lo"}
    assert {t.name: t.rows for t in v2.tables} == {t.name: t.rows for t in backup.tables}
    target = fresh_db()
    restore_logical(settings, backup.backup_id, target, compare=False)
    assert [c.name for c in compare_tables(target, v2) if not c.ok] == []
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("UPDATE typed SET t = 'changed' WHERE id = 3")
    assert [c.name for c in compare_tables(target, v2) if not c.ok] == ["public.typed"]


def test_a_backup_with_version_1_fingerprints_is_still_checked_the_old_way(typed_backup, fresh_db):
    """Manifests written before fingerprints 2 carry SQL row-hash sums: compared the same way."""
    import dataclasses

    from bvh_ops.logical.restore import compare_tables
    from bvh_ops.pg.conn import connect
    from bvh_ops.pg.fingerprint import fingerprint_database

    settings, backup = typed_backup
    with connect(settings.require_database_url()) as conn:
        old = fingerprint_database(conn)
    v1 = dataclasses.replace(backup, tables=tuple(old), extra={k: v for k, v in backup.extra.items()
                                                               if k not in ("fingerprints", "dump_encoding")})
    target = fresh_db()
    restore_logical(settings, backup.backup_id, target, compare=False)
    # typed has a column named t: version 1 hashed that column, not the row ("t" in "tbl AS t"),
    # so the table is reported not verified, never as equal; every other table is compared.
    first = {c.name: c for c in compare_tables(target, v1)}
    assert first["public.typed"].not_verified and "column named t" in first["public.typed"].not_verified
    assert not first["public.typed"].ok and not first["public.typed"].differs
    assert all(c.ok for n, c in first.items() if n != "public.typed") and len(first) > 1
    from checks.drill_suite import check_fingerprints

    check = check_fingerprints(target, v1)
    assert check.status.value == "not_verified" and "public.typed" in check.detail, check
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("UPDATE typed SET i = i + 1 WHERE id = 3")    # a column version 1 never saw
        conn.execute("UPDATE parted SET id = id + 100 WHERE id = 7")
    after = {c.name: c for c in compare_tables(target, v1)}
    assert [n for n, c in after.items() if c.differs] == ["public.parted"]
    assert after["public.typed"].not_verified
    assert check_fingerprints(target, v1).status.value == "failed"
    with psycopg.connect(target, autocommit=True) as conn:       # what version 1 did see still differs:
        conn.execute("UPDATE typed SET t = 'changed' WHERE id = 3")   # the column t,
    assert {c.name for c in compare_tables(target, v1) if c.differs} == {"public.parted", "public.typed"}
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("UPDATE parted SET id = id - 100 WHERE id = 107")
    assert [c.name for c in compare_tables(target, v1) if c.differs] == ["public.typed"]
    assert check_fingerprints(target, v1).status.value == "failed"   # alone too: a corruption, not "not verified"


def test_a_drill_restores_from_a_decrypted_copy_it_then_removes(awkward_db, fresh_db, repo_dir, make_settings,
                                                                 tmp_path, monkeypatch):
    """copy_dir (a drill's scratch directory): pg_restore -j on a local decrypted copy, every
    table still compared, the copy gone afterwards; a tampered object never reaches pg_restore.
    The copy is handed to the disk as it is written (every few KiB here): still whole."""
    from bvh_ops.logical import restore as restore_module

    monkeypatch.setattr(restore_module, "WRITEBACK_EVERY", 4096)
    settings = make_settings(awkward_db, f"file://{repo_dir}")
    m = run_logical_backup(settings).manifest
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    restored = restore_logical(settings, m.backup_id, fresh_db(), jobs=2, copy_dir=scratch)
    assert restored.ok and len(restored.comparisons) == len(m.tables)
    assert restored.bytes_in == m.objects[0].plaintext_size and list(scratch.iterdir()) == []

    import dataclasses

    from bvh_ops.errors import IntegrityError
    from bvh_ops.keys import load_identities
    from bvh_ops.logical.restore import _restore_from_copy
    from bvh_ops.pg.tools import pg_env

    target = fresh_db()
    wrong = dataclasses.replace(m.objects[0], plaintext_blake3="0" * 64)  # as if the object were swapped
    repo, _ = open_repository(settings)
    with pytest.raises(IntegrityError, match="blake3 differs from the manifest"):
        _restore_from_copy(settings, repo, m, wrong, load_identities(settings.identity), pg_env(target), None,
                           ["--exit-on-error", "-d", target.rsplit("/", 1)[1]], 2, scratch)
    assert list(scratch.iterdir()) == []
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace").fetchone()[0] == 0
