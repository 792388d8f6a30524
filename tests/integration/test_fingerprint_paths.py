"""The drill reads a restored table's COPY text three ways — a small table on the worker's own
connection, a large one through a psql child, or, on a server of this host (the drill's scratch),
by the backend straight into a FIFO — and each must hash exactly the text pg_dump wrote: the
backup's fingerprints (taken from the dump stream) are equal to every one, for every fingerprint
version, in a UTF-8, a LATIN1 and a SQL_ASCII database, and a changed row fails on every path."""

from __future__ import annotations

import psycopg
import pytest

from bvh_ops.logical.backup import run_logical_backup
from bvh_ops.pg.conn import connect
from bvh_ops.pg.fingerprint import BLAKE3, COPY, FRAMED, LocalServer, copy_fingerprints, list_tables
from tests.integration.awkward import AWKWARD_SQL
from tests.integration.test_roundtrip import TYPED

EVERY_PSQL, EVERY_INLINE = 0, 1 << 40
PATHS = ["psql", "inline", "fifo"]


@pytest.fixture
def how(pg):
    """path -> copy_fingerprints' arguments that make it read every table that way."""
    local = LocalServer.of_cluster(pg.root, pg.data)
    assert local is not None  # else "fifo" would be psql's path again
    return lambda path: {"psql": {"inline_below": EVERY_PSQL}, "inline": {"inline_below": EVERY_INLINE},
                         "fifo": {"inline_below": EVERY_PSQL, "server": local}}[path]
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


def _all(how, dsn: str, encoding: str | None, method: str) -> tuple[dict, ...]:
    """Every table read each way (PATHS' order)."""
    with connect(dsn) as conn:
        tables = list_tables(conn)
        return tuple({t.name: t.fingerprint for t in copy_fingerprints(conn, dsn, tables, encoding=encoding,
                                                                       method=method, **how(p))} for p in PATHS)


@pytest.mark.parametrize("db", ["utf8", "latin1"])
def test_every_read_path_gives_the_backups_own_fingerprints(databases, make_settings, repo_dir, db, how):
    dsn = databases[db]
    backup = run_logical_backup(make_settings(dsn, f"file://{repo_dir}")).manifest
    encoding = backup.extra["dump_encoding"]
    assert encoding == ("LATIN1" if db == "latin1" else "UTF8")
    recorded = {t.name: t.fingerprint for t in backup.tables if t.kind != "large_objects"}
    assert _all(how, dsn, encoding, BLAKE3) == (recorded,) * len(PATHS)
    assert len(recorded) >= (1 if db == "latin1" else 8)
    # No encoding recorded (older manifests): the database's own, on every path.
    assert _all(how, dsn, None, BLAKE3) == (recorded,) * len(PATHS)
    if db == "latin1":  # a dump taken in UTF-8 (pg_dump -E): its text, not the database's bytes
        by_psql, inline, by_fifo = _all(how, dsn, "UTF8", BLAKE3)
        assert by_psql == inline == by_fifo
        assert by_psql["public.words"] != recorded["public.words"]


@pytest.mark.parametrize("method", [COPY, FRAMED])
def test_every_read_path_agrees_for_the_older_fingerprints(databases, method, how):
    by_psql, inline, by_fifo = _all(how, databases["utf8"], "UTF8", method)
    assert by_psql == inline == by_fifo
    assert all(f.endswith(f":{method}") for f in inline.values())


@pytest.mark.parametrize("path", PATHS)
def test_a_changed_row_fails_on_every_path(databases, path, how):
    dsn = databases["latin1"]
    with connect(dsn) as conn:
        before = {t.name: t.fingerprint for t in copy_fingerprints(
            conn, dsn, list_tables(conn), encoding="LATIN1", method=BLAKE3, **how(path))}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE words SET note = 'n' WHERE id = 3")  # a NULL becomes a value
        try:
            with connect(dsn) as c:
                after = {t.name: t.fingerprint for t in copy_fingerprints(
                    c, dsn, list_tables(c), encoding="LATIN1", method=BLAKE3, **how(path))}
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


def _load(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for stmt in statements:
            conn.execute(stmt)


def _recorded_and_read(how, dsn: str, make_settings, repo_dir, path: str) -> tuple[dict, dict]:
    backup = run_logical_backup(make_settings(dsn, f"file://{repo_dir}")).manifest
    recorded = {t.name: t.fingerprint for t in backup.tables if t.kind != "large_objects"}
    with connect(dsn) as conn:
        read = {t.name: t.fingerprint for t in copy_fingerprints(
            conn, dsn, list_tables(conn), encoding=backup.extra["dump_encoding"], method=BLAKE3, **how(path))}
    return recorded, read


@pytest.mark.parametrize("path", PATHS)
def test_a_table_without_dumped_columns_reads_back(fresh_db, make_settings, repo_dir, path, how):
    """pg_dump writes no column list for a table with no columns (or only generated ones): its
    rows are empty lines. "COPY t () TO STDOUT" is a syntax error (review9)."""
    dsn = fresh_db()
    _load(dsn, "CREATE TABLE nocols (); INSERT INTO nocols DEFAULT VALUES; INSERT INTO nocols DEFAULT VALUES",
          "CREATE TABLE onlygen (a int GENERATED ALWAYS AS (7) STORED); INSERT INTO onlygen DEFAULT VALUES")
    recorded, read = _recorded_and_read(how, dsn, make_settings, repo_dir, path)
    assert read == recorded
    assert recorded["public.nocols"].startswith("2:") and recorded["public.onlygen"].startswith("1:")


@pytest.mark.parametrize("path", PATHS)
def test_reg_columns_read_back_as_pg_dump_wrote_them(fresh_db, make_settings, repo_dir, path, how):
    """pg_dump runs with an empty search_path, so a regclass/regtype/regproc value naming an object
    outside pg_catalog is written schema-qualified ('public.target'); read back under the default
    search_path it was 'target' and the table failed the check (review9)."""
    dsn = fresh_db()
    _load(dsn, "CREATE TABLE target (id int); CREATE TYPE colour AS ENUM ('red')",
          "CREATE FUNCTION myfn(int) RETURNS int LANGUAGE sql AS 'SELECT $1'",
          "CREATE TABLE refs (c regclass, t regtype, p regproc, ps regprocedure)",
          "INSERT INTO refs VALUES ('target', 'colour', 'myfn', 'myfn(int)'), ('pg_class', 'int4', 'now', 'now()')")
    recorded, read = _recorded_and_read(how, dsn, make_settings, repo_dir, path)
    assert read == recorded


def test_a_worker_connection_outlives_a_long_psql_read(fresh_db, monkeypatch):
    """A worker's connection sat idle while its psql child read a large table (minutes): a server's
    idle_session_timeout, or a NAT/pooler dropping idle connections, ended it, and the worker's
    next (small) table failed on the dead connection (review9)."""
    import time

    import bvh_ops.pg.tools as tools

    dsn = fresh_db()
    db = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    _load(dsn, "CREATE TABLE big (v text); INSERT INTO big SELECT repeat('x', 500) FROM generate_series(1, 100)",
          "CREATE TABLE small (v int); INSERT INTO small VALUES (1)",
          f'ALTER DATABASE "{db}" SET idle_session_timeout = 500')  # ms: a psql read outlasts it
    real = tools.spawn_tool

    def slow(*a, **k):  # a large table: its psql child reads for a while
        time.sleep(1.5)
        return real(*a, **k)

    monkeypatch.setattr(tools, "spawn_tool", slow)
    with connect(dsn) as conn:
        tables = list_tables(conn)
        expected = {t.name: t.fingerprint for t in copy_fingerprints(
            conn, dsn, tables, encoding="UTF8", method=BLAKE3, inline_below=EVERY_INLINE, jobs=1)}
    with connect(dsn) as conn:
        got = {t.name: t.fingerprint for t in copy_fingerprints(
            conn, dsn, tables, encoding="UTF8", method=BLAKE3, inline_below=10000, jobs=1)}
    assert got == expected


ODD_NAME = '"Ünïcödé"."café ""crème"""'  # format('%I.%I') of a schema and a table with quotes


@pytest.mark.parametrize("path", PATHS)
def test_non_ascii_names_in_a_latin1_dump(pg, make_settings, repo_dir, path, how):
    """A LATIN1 dump's table of contents names its tables in LATIN1: the backup keyed their COPY
    text by the names decoded as UTF-8 (mangled), so it recorded them empty; and psql was handed
    the COPY statement in UTF-8 under client_encoding LATIN1 ('relation does not exist') (review9)."""
    name = f"fp_latin1_names_{path}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name} ENCODING 'LATIN1' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
    dsn = pg.dsn(name)
    _load(dsn, f'CREATE SCHEMA "Ünïcödé"; CREATE TABLE {ODD_NAME} ("ñ" text)',  # sent as LATIN1
          f"INSERT INTO {ODD_NAME} VALUES ('à'), ('ü')")
    recorded, read = _recorded_and_read(how, dsn, make_settings, repo_dir, path)
    assert recorded[ODD_NAME].startswith("2:")
    assert read == recorded


def test_both_paths_run_with_pg_dumps_timeouts_and_keep_the_dsns_own_options(fresh_db):
    """pg_dump turns statement_timeout and lock_timeout off: a database's or role's own must not cut
    a large table's read short on either path; and options the DSN carries are kept beside ours
    in psql's PGOPTIONS (they were replaced), as the inline path's connection keeps them."""
    import subprocess

    from bvh_ops.pg.fingerprint import copy_env, copy_settings
    from bvh_ops.pg.tools import spawn_tool

    dsn = fresh_db()
    db = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    _load(dsn, f'ALTER DATABASE "{db}" SET statement_timeout = \'5min\'', f'ALTER DATABASE "{db}" SET lock_timeout = 2000')
    with_options = psycopg.conninfo.make_conninfo(dsn, options="-c work_mem=7MB")
    query = "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), current_setting('work_mem')"
    with connect(with_options, autocommit=True) as conn:
        assert conn.execute(query).fetchone() == ("5min", "2s", "7MB")  # what the database sets
        copy_settings(conn, "UTF8")
        assert conn.execute(query).fetchone() == ("0", "0", "7MB")
    proc = spawn_tool("psql", ["-X", "-A", "-t", "-c", query], env=copy_env(with_options, "UTF8"), bin_dir=None,
                      stdin=subprocess.DEVNULL)
    out, _ = proc.communicate(timeout=60)
    assert out.decode().strip() == "0|0|7MB"


@pytest.mark.parametrize("path", PATHS)
def test_a_sql_ascii_database_is_backed_up_and_read_back(pg, make_settings, repo_dir, path, how):
    """A SQL_ASCII database (its bytes unchecked, here a LATIN1 é that is not UTF-8): the backup
    failed with a traceback (psycopg returned the catalog's text as bytes: KeyError b'r'); the
    read-back must send the bytes as they are, on either path, and still see a change."""
    name = f"fp_sql_ascii_{path}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
    dsn = pg.dsn(name)
    _load(dsn, "CREATE TABLE t (id int, v text)", "INSERT INTO t VALUES (1, 'plain'), (2, E'caf\\xe9 latin1 byte')")
    recorded, read = _recorded_and_read(how, dsn, make_settings, repo_dir, path)
    assert recorded["public.t"].startswith("2:")
    assert read == recorded
    _load(dsn, "UPDATE t SET v = E'caf\\xe8 latin1 byte' WHERE id = 2")
    with connect(dsn) as conn:
        changed = {t.name: t.fingerprint for t in copy_fingerprints(
            conn, dsn, list_tables(conn), encoding="SQL_ASCII", method=BLAKE3, **how(path))}
    assert changed["public.t"] != recorded["public.t"]


def test_a_long_read_back_does_not_leave_the_callers_connection_idle_in_a_transaction(
        pg, fresh_db, make_settings, repo_dir, monkeypatch):
    """A restore's comparison reads for as long as the tables take; the connection it listed them
    on sat 'idle in transaction' meanwhile, so a server's idle_in_transaction_session_timeout
    ended it and the comparison failed after the read (large objects were read on it last)."""
    import time

    import bvh_ops.pg.fingerprint as fingerprint
    from bvh_ops.logical.restore import compare_tables

    dsn = fresh_db()
    db = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    _load(dsn, "CREATE TABLE a (v int); INSERT INTO a SELECT generate_series(1, 100)",
          "CREATE TABLE b (v text); INSERT INTO b VALUES ('x')", "SELECT lo_from_bytea(0, 'large object')")
    backup = run_logical_backup(make_settings(dsn, f"file://{repo_dir}")).manifest
    _load(dsn, f'ALTER DATABASE "{db}" SET idle_in_transaction_session_timeout = 500')  # ms
    real = fingerprint.copy_digest_inline

    def slow(*a, **k):  # each table takes a while to read
        time.sleep(0.8)
        return real(*a, **k)

    monkeypatch.setattr(fingerprint, "copy_digest_inline", slow)
    assert [(c.name, c.ok) for c in compare_tables(dsn, backup) if not c.ok] == []
    assert {c.name for c in compare_tables(dsn, backup)} >= {"public.a", "public.b", "pg_largeobject"}


def _fifos(pg) -> list:
    return sorted(p.name for p in pg.root.iterdir() if p.name.startswith(".bvh-copy-"))


def test_the_fifo_path_reads_through_the_backend_not_psql(fresh_db, pg, monkeypatch, how):
    """On a server of this host the large tables go by the FIFO: with psql unavailable the
    fingerprints are still read (and equal psql's, read before), and no FIFO is left behind."""
    import bvh_ops.pg.fingerprint as fingerprint

    dsn = fresh_db()
    _load(dsn, "CREATE TABLE big (id int, v text); INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 50000) g",
          "CREATE TABLE small (v int); INSERT INTO small VALUES (1)")
    with connect(dsn) as conn:
        tables = list_tables(conn)
        by_psql = copy_fingerprints(conn, dsn, tables, encoding="UTF8", method=BLAKE3, **how("psql"))

    def no_psql(*a, **k):
        raise AssertionError("psql was started")

    monkeypatch.setattr(fingerprint, "_psql_digest", no_psql)
    with connect(dsn) as conn:
        by_fifo = copy_fingerprints(conn, dsn, tables, encoding="UTF8", method=BLAKE3, **how("fifo"))
    assert by_fifo == by_psql
    assert by_fifo[0].rows == 50000 and by_fifo[0].fingerprint.startswith("50000:")
    assert _fifos(pg) == []


def test_a_role_that_may_not_write_server_files_reads_through_psql(fresh_db, pg, how):
    """COPY to a file needs a superuser or pg_write_server_files: any other role's read-back goes
    through psql as before, with the same result."""
    dsn = fresh_db()
    _load(dsn, "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000)",
          "DROP ROLE IF EXISTS fp_reader", "CREATE ROLE fp_reader LOGIN PASSWORD 'fp-reader-pw'",
          "GRANT SELECT ON t TO fp_reader")
    reader = psycopg.conninfo.make_conninfo(dsn, user="fp_reader", password="fp-reader-pw")
    try:
        with connect(reader) as conn:
            tables = list_tables(conn)
            by_fifo = copy_fingerprints(conn, reader, tables, encoding="UTF8", method=BLAKE3, **how("fifo"))
        with connect(dsn) as conn:
            by_psql = copy_fingerprints(conn, dsn, tables, encoding="UTF8", method=BLAKE3, **how("psql"))
        assert by_fifo == by_psql and by_fifo[0].rows == 1000
    finally:
        _load(dsn, 'REVOKE ALL ON t FROM fp_reader; DROP OWNED BY fp_reader; DROP ROLE fp_reader')
    assert _fifos(pg) == []


def test_a_reader_that_stops_ends_the_servers_copy(fresh_db, pg, monkeypatch):
    """The hashing fails part-way through a large table: the error is raised at once, the
    backend's COPY ends (its writes meet a closed pipe) instead of waiting forever on a full
    FIFO, its connection is usable again, and the FIFO is gone."""
    import bvh_ops.pg.fingerprint as fingerprint
    from bvh_ops.pg.fingerprint import LocalServer, copy_settings, fifo_digest

    dsn = fresh_db()
    _load(dsn, "CREATE TABLE big (v text); INSERT INTO big SELECT repeat(md5(g::text), 8) FROM generate_series(1, 200000) g")
    calls = []

    class Broken(fingerprint.RowFramer):
        def update(self, text):
            calls.append(len(text))
            if len(calls) == 2:
                raise OSError("disk on fire")
            super().update(text)

    monkeypatch.setattr(fingerprint, "RowFramer", Broken)
    with connect(dsn, autocommit=True) as conn:
        encoding = copy_settings(conn, "UTF8")
        with pytest.raises(OSError, match="disk on fire"):
            fifo_digest(conn, "public", "big", LocalServer.of_cluster(pg.root, pg.data), encoding=encoding,
                        method=BLAKE3)
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert len(calls) == 2 and _fifos(pg) == []


def test_a_copy_that_fails_is_an_error_naming_the_table(fresh_db, pg):
    """The table went away between the listing and the read: a DatabaseError naming it, no hang."""
    from bvh_ops.errors import BvhOpsError
    from bvh_ops.pg.fingerprint import LocalServer, copy_settings, fifo_digest

    dsn = fresh_db()
    with connect(dsn, autocommit=True) as conn:
        encoding = copy_settings(conn, "UTF8")
        with pytest.raises(BvhOpsError, match="public.gone"):
            fifo_digest(conn, "public", "gone", LocalServer.of_cluster(pg.root, pg.data), encoding=encoding,
                        method=BLAKE3)
    assert _fifos(pg) == []


def test_no_fifo_where_one_cannot_be_made(pg, tmp_path):
    """A directory where no FIFO can be made (gone, or a filesystem without them): no LocalServer,
    so the read-back goes through psql instead of failing the check."""
    assert LocalServer.of_cluster(tmp_path / "gone", pg.data) is None
    assert LocalServer.of_cluster(pg.root, pg.data) is not None
