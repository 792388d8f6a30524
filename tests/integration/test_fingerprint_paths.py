"""The drill reads a restored table's COPY text two ways — a small table on the worker's own
connection, a large one through a psql child — and both must hash exactly the text pg_dump
wrote: the backup's fingerprints (taken from the dump stream) are equal to either, for every
fingerprint version, in a UTF-8 and a LATIN1 database, and a changed row fails on either path."""

from __future__ import annotations

import psycopg
import pytest

from bvh_ops.logical.backup import run_logical_backup
from bvh_ops.pg.conn import connect
from bvh_ops.pg.fingerprint import BLAKE3, COPY, FRAMED, copy_fingerprints, list_tables
from tests.integration.awkward import AWKWARD_SQL
from tests.integration.test_roundtrip import TYPED

EVERY_PSQL, EVERY_INLINE = 0, 1 << 40
LATIN1 = """
CREATE TABLE words (id int, w text, note varchar(40));
INSERT INTO words SELECT k, 'café crème ' || k || E' \\\\ back\\tslash', CASE WHEN k % 3 = 0 THEN NULL ELSE 'ñ' END
FROM generate_series(1, 300) k;
"""


@pytest.fixture(scope="module")
def databases(pg):
    from bvh_ops.pg.catalog import create_database

    create_database(pg.dsn(), "fp_paths")
    with psycopg.connect(pg.dsn("fp_paths"), autocommit=True) as conn:
        conn.execute(AWKWARD_SQL)
        conn.execute(TYPED)
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS fp_latin1")
        conn.execute("CREATE DATABASE fp_latin1 ENCODING 'LATIN1' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
    with psycopg.connect(pg.dsn("fp_latin1"), autocommit=True) as conn:
        conn.execute("SET client_encoding = 'UTF8'")
        conn.execute(LATIN1)
    return {"utf8": pg.dsn("fp_paths"), "latin1": pg.dsn("fp_latin1")}


def _both(dsn: str, encoding: str | None, method: str) -> tuple[dict, dict]:
    with connect(dsn) as conn:
        tables = list_tables(conn)
        by_psql = copy_fingerprints(conn, dsn, tables, encoding=encoding, method=method, inline_below=EVERY_PSQL)
        inline = copy_fingerprints(conn, dsn, tables, encoding=encoding, method=method, inline_below=EVERY_INLINE)
    return {t.name: t.fingerprint for t in by_psql}, {t.name: t.fingerprint for t in inline}


@pytest.mark.parametrize("db", ["utf8", "latin1"])
def test_both_read_paths_give_the_backups_own_fingerprints(databases, make_settings, repo_dir, db):
    dsn = databases[db]
    backup = run_logical_backup(make_settings(dsn, f"file://{repo_dir}")).manifest
    encoding = backup.extra["dump_encoding"]
    assert encoding == ("LATIN1" if db == "latin1" else "UTF8")
    recorded = {t.name: t.fingerprint for t in backup.tables if t.kind != "large_objects"}
    by_psql, inline = _both(dsn, encoding, BLAKE3)
    assert by_psql == recorded
    assert inline == recorded
    assert len(recorded) >= (1 if db == "latin1" else 8)
    # No encoding recorded (older manifests): the database's own, on both paths.
    assert _both(dsn, None, BLAKE3) == (recorded, recorded)
    if db == "latin1":  # a dump taken in UTF-8 (pg_dump -E): its text, not the database's bytes
        by_psql, inline = _both(dsn, "UTF8", BLAKE3)
        assert by_psql == inline
        assert by_psql["public.words"] != recorded["public.words"]


@pytest.mark.parametrize("method", [COPY, FRAMED])
def test_both_read_paths_agree_for_the_older_fingerprints(databases, method):
    by_psql, inline = _both(databases["utf8"], "UTF8", method)
    assert by_psql == inline
    assert all(f.endswith(f":{method}") for f in inline.values())


@pytest.mark.parametrize("inline_below", [EVERY_PSQL, EVERY_INLINE])
def test_a_changed_row_fails_on_either_path(databases, inline_below):
    dsn = databases["latin1"]
    with connect(dsn) as conn:
        before = {t.name: t.fingerprint for t in copy_fingerprints(
            conn, dsn, list_tables(conn), encoding="LATIN1", method=BLAKE3, inline_below=inline_below)}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE words SET note = 'n' WHERE id = 3")  # a NULL becomes a value
        try:
            with connect(dsn) as c:
                after = {t.name: t.fingerprint for t in copy_fingerprints(
                    c, dsn, list_tables(c), encoding="LATIN1", method=BLAKE3, inline_below=inline_below)}
        finally:
            conn.execute("UPDATE words SET note = NULL WHERE id = 3")
    assert [n for n in before if before[n] != after[n]] == ["public.words"]


def test_each_worker_reads_its_tables_on_one_connection(databases, monkeypatch):
    """Two workers over many tables open two connections in all, not one per table."""
    import bvh_ops.pg.conn as pgconn

    opened = []
    real = pgconn.connect
    monkeypatch.setattr(pgconn, "connect", lambda *a, **k: opened.append(a) or real(*a, **k))
    dsn = databases["utf8"]
    with real(dsn) as conn:
        tables = list_tables(conn)
        assert len(tables) >= 8
        copy_fingerprints(conn, dsn, tables, encoding="UTF8", method=BLAKE3, inline_below=EVERY_INLINE, jobs=2)
    assert len(opened) == 2
