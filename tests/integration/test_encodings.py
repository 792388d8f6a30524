"""A SQL_ASCII database holding bytes that are no UTF-8 (a LATIN1 é) and a LATIN1 database with a
non-ASCII schema and table ("Ünïcödé"."café") and data, driven past the backup as an operator
does: restore (in full on the parallel path, and one table by the names an operator writes), the
logical DR drill (fingerprints, schema, PITR of an append-only table there, invariants,
freshness) and capacity's row counts of a main table."""

from __future__ import annotations

import json
from datetime import date

import psycopg
import pytest

from bvh_ops.pg.conn import connect
from tests.integration.cli import run_cli

TABLE = '"Ünïcödé"."café"'
SOURCES = {
    "sql_ascii": ("SQL_ASCII", [
        "CREATE TABLE events (id serial PRIMARY KEY, v text, at timestamptz NOT NULL DEFAULT now())",
        "CREATE INDEX events_v ON events (v)",
        "INSERT INTO events (v) VALUES ('plain'), (E'caf\\xe9'), (E'\\xff\\xfe bytes')",
    ]),
    "latin1": ("LATIN1", [  # sent in UTF-8, stored in LATIN1
        'CREATE SCHEMA "Ünïcödé"',
        f'CREATE TABLE {TABLE} (id serial PRIMARY KEY, "ñ" text, at timestamptz NOT NULL DEFAULT now())',
        f'CREATE INDEX "idx_é" ON {TABLE} ("ñ")',
        f"""INSERT INTO {TABLE} ("ñ") VALUES ('crème brûlée'), ('ü'), ('plain')""",
        "CREATE TABLE plain (id int PRIMARY KEY, w text)",
        "INSERT INTO plain VALUES (1, 'àéîõü')",
    ]),
}


def _create(pg, name: str, encoding: str, statements: list[str] = ()) -> str:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f"CREATE DATABASE \"{name}\" ENCODING '{encoding}' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
    with psycopg.connect(pg.dsn(name), autocommit=True) as conn:
        if encoding == "LATIN1":
            conn.execute("SET client_encoding = 'UTF8'")
        for stmt in statements:
            conn.execute(stmt)
    return pg.dsn(name)


@pytest.fixture
def source(pg, request):
    encoding, statements = SOURCES[request.param]
    return request.param, _create(pg, f"enc_{request.param}", encoding, statements)


def _backup(dsn: str, make_settings, repo_dir, **overrides):
    from bvh_ops.logical.backup import run_logical_backup

    settings = make_settings(dsn, f"file://{repo_dir}", **overrides)
    return settings, run_logical_backup(settings).manifest


def _relations(dsn: str) -> set[str]:
    with connect(dsn) as conn:
        return {r[0] for r in conn.execute(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'i') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_toast%'")}


@pytest.mark.parametrize("source", ["sql_ascii", "latin1"], indirect=True)
def test_a_full_restore_on_the_parallel_path(pg, source, env_settings, repo_dir):
    """`restore --into` (restore_jobs 2: pg_restore -l, then one list file per process): a LATIN1
    dump's TOC names its tables in LATIN1 and the listing was decoded as UTF-8 on a thread, whose
    traceback ended it — nothing was restored and every table was reported a mismatch ('got None')."""
    kind, dsn = source
    env = env_settings(dsn, f"file://{repo_dir}")
    from bvh_ops.config import load_settings
    from bvh_ops.logical.backup import run_logical_backup

    run_logical_backup(load_settings())
    encoding = SOURCES[kind][0]
    target = _create(pg, f"enc_{kind}_into", encoding)
    proc = run_cli("restore", "latest", "--into", target, "--jobs", "2", env=env)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    tables = {"latin1": 3, "sql_ascii": 2}[kind]  # and the large objects
    assert f"{tables}/{tables} tables match their fingerprint" in proc.stdout, proc.stdout
    assert _relations(target) == _relations(dsn)


@pytest.mark.parametrize("spelling", [TABLE, "Ünïcödé.café", '"Ünïcödé".café'])
def test_one_non_ascii_table_restored_by_the_names_an_operator_writes(pg, make_settings, repo_dir, spelling):
    """--table: the TOC listing must be read in the dump's encoding (it ended on a traceback and
    the table was 'not in backup'); the table's indexes are picked from the manifest, which names
    them as format('%I.%I') does ('"Ünïcödé"."idx_é"'), the TOC unquoted (the index was left out);
    and the comparison took only the tables spelled as the manifest does — 'Ünïcödé.café' compared
    nothing, and 0/0 tables passed."""
    from bvh_ops.logical.restore import restore_logical

    dsn = _create(pg, "enc_sel_src", *SOURCES["latin1"])
    settings, manifest = _backup(dsn, make_settings, repo_dir)
    target = _create(pg, "enc_sel_into", "LATIN1")
    result = restore_logical(settings, manifest.backup_id, target, tables=[spelling])
    assert [(c.name, c.ok) for c in result.comparisons] == [(TABLE, True)]
    assert result.comparisons[0].actual_rows == 3
    assert _relations(target) == {TABLE, '"Ünïcödé"."café_pkey"', '"Ünïcödé"."idx_é"'}


def test_a_violated_invariant_whose_rows_are_no_utf8_fails(pg):
    """A violating row of a SQL_ASCII database shown in the detail: read in UTF8 the server
    refused its é ('invalid byte sequence'), and a known violation was reported not_verified."""
    from bvh_ops.config import InvariantCheck
    from bvh_ops.results import CheckStatus
    from checks.drill_suite import check_invariants

    dsn = _create(pg, "enc_invariant", *SOURCES["sql_ascii"])
    [result] = check_invariants(dsn, [InvariantCheck(name="no_cafe", sql="SELECT * FROM events WHERE v LIKE 'caf%'")])
    assert result.status is CheckStatus.FAILED, result
    assert result.detail.startswith("1 violating rows, e.g. [(2, b'caf\\xe9'"), result.detail


# An invariant written for the source: it must hold on the restored copy too.
INVARIANTS = {
    "sql_ascii": "SELECT 1 WHERE (SELECT count(*) FROM events WHERE v = E'caf\\xe9') <> 1",
    "latin1": f"""SELECT 1 WHERE (SELECT count(*) FROM {TABLE} WHERE "ñ" LIKE 'crème%') <> 1""",
}
APPEND_ONLY = {"sql_ascii": "public.events:at", "latin1": '"Ünïcödé".café:at'}


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("source", ["sql_ascii", "latin1"], indirect=True)
def test_the_logical_drill_passes_every_check(pg, source, env_settings, repo_dir):
    """Every check of the drill passes on a good backup: the scratch database was UTF8 whatever the
    source's encoding, so a LATIN1 row hashed to other bytes there than on the source (PITR failed:
    'restored 3 rows, source 3') and a SQL_ASCII source's invariant could not run on the copy (its
    E'caf\\xe9' is no UTF-8); and an append-only table written as PostgreSQL reads it
    ('"Ünïcödé".café') was quoted again (PITR and freshness: 'relation does not exist')."""
    kind, dsn = source
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS enc_drills WITH (FORCE)")
        conn.execute("CREATE DATABASE enc_drills")
    invariants = json.dumps([{"name": "source_rows", "sql": INVARIANTS[kind]}])
    env_settings(dsn, f"file://{repo_dir}", BVH_OPS_OPS_DATABASE_URL=pg.dsn("enc_drills"),
                 BVH_OPS_INVARIANTS=invariants, BVH_OPS_APPEND_ONLY_TABLES=APPEND_ONLY[kind],
                 BVH_OPS_DRILL_EARLY_CHECKS="on")
    from bvh_ops.config import load_settings
    from bvh_ops.logical.backup import run_logical_backup
    from flows.dr_drill import dr_drill

    manifest = run_logical_backup(load_settings()).manifest
    report = dr_drill(backup=manifest.backup_id, mode="logical")
    statuses = {c["name"]: (c["status"], c["detail"]) for c in report["checks"]}
    for name in ("deep_verify", "logical_fingerprints", "row_counts_gx", "schema", "pitr_append_only",
                 "invariant:source_rows", "freshness"):
        assert statuses[name][0] == "passed", (name, statuses[name])
    assert report["passed"], statuses


@pytest.mark.parametrize("spelling", [TABLE, '"Ünïcödé".café', "Ünïcödé.café"])
def test_capacity_counts_a_main_table_written_as_postgresql_reads_it(pg, spelling):
    """main_tables = ['"Ünïcödé".café']: the name was quoted again ('relation ""Ünïcödé".café"
    does not exist'), and every database measure of the day was skipped with it."""
    from bvh_ops.capacity.collect import database_samples

    dsn = _create(pg, "enc_capacity", *SOURCES["latin1"])
    with connect(dsn) as conn:
        samples = {s.series: s.value for s in database_samples(conn, 10, [spelling], date.today())}
    assert samples[f"rows:{spelling}"] == 3
