"""The drill's restored PITR side summed from the dump as its deep verify walks it
(bvh_ops.drill.dumpside): the sums must be the very numbers the server's text method gives for
the same rows — whatever the rows hold (tabs, quotes, NULLs, arrays, composites, floats …),
however the dump is cut into pieces, whatever the source's own DateStyle or TimeZone — and a
table it cannot be certain of is left to the server, never summed wrong."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from bvh_ops.drill import dumpside
from bvh_ops.drill.dumpside import DumpPitr, copy_columns, cutoff_text
from bvh_ops.logical.archive import DumpFingerprinter
from bvh_ops.pg.catalog import schema_snapshot
from bvh_ops.pg.fingerprint import DUMP_OPTIONS
from bvh_ops.pg.tools import embedded_bin_dir, pg_env
from checks.drill_suite import PITR_TEXT, _bounded_fingerprint, check_pitr

pytestmark = pytest.mark.skipif(not dumpside.available(), reason="the C walk is not built here")

CUTOFF = datetime(2026, 6, 1, 12, 0, 0, 500000, tzinfo=UTC)

AWKWARD = r"""
CREATE TYPE mood AS ENUM ('calm', 'loud');
CREATE TYPE pair AS (a int, b text);
CREATE TABLE ledger (
  id bigint, at timestamptz, note text, raw bytea, amount numeric, ratio float8, span interval, day date,
  wall timestamp, tags text[], doc jsonb, p pair, m mood, ok bool, tiny real, who "char", c varchar(5));
INSERT INTO ledger SELECT g,
  timestamptz '2026-06-01 12:00:00.5+00' + (g - 100) * interval '1.25 s',
  CASE g % 9 WHEN 0 THEN E'tab\there' WHEN 1 THEN E'new\nline' WHEN 2 THEN 'back\slash "quoted" (paren), comma'
             WHEN 3 THEN '' WHEN 4 THEN NULL WHEN 5 THEN ' lead space' WHEN 6 THEN E'cr\r and \\N and \\.'
             WHEN 7 THEN 'ünïcödé ✓ 𝄞' ELSE 'plain' || g END,
  CASE WHEN g % 4 = 0 THEN NULL ELSE decode(lpad(to_hex(g), 6, '0'), 'hex') END,
  g * 1.10, CASE g % 5 WHEN 0 THEN '-0' WHEN 1 THEN 'NaN' WHEN 2 THEN '-Infinity' WHEN 3 THEN 1e-300 ELSE g / 7.0 END,
  g * interval '1 day 2 hours 3.5 seconds', date '2026-01-01' + g, timestamp '2026-01-01 00:00' + g * interval '1 min',
  ARRAY['a', E'b"c', NULL, 'd,e', '', 'f\g'], jsonb_build_object('k', g, 's', E'x\ty'),
  ROW(g, CASE WHEN g % 2 = 0 THEN 'x "y"' ELSE NULL END)::pair, CASE WHEN g % 2 = 0 THEN 'calm' ELSE 'loud' END::mood,
  g % 3 = 0, g / 3.0, 'q', 'v' || (g % 10)
FROM generate_series(1, 200) g;
INSERT INTO ledger (id, at, note) VALUES (1000, NULL, 'no commit time'), (1001, '2026-06-01 12:00:00.5+00', 'at the cutoff'),
  (1002, '2026-06-01 12:00:00.500001+00', 'just after'), (1003, '2026-06-01 12:00:00+00', 'whole second'),
  (1004, '2026-01-01 00:00+00', repeat(E'big\\row ', 200000));  -- a chunk over 1 MiB: hashed as it passes
"""


def _dump(dsn: str, path) -> None:
    env = pg_env(dsn)
    env["PGOPTIONS"] = DUMP_OPTIONS  # as the backup runs pg_dump (bvh_ops.logical.backup)
    subprocess.run([str(embedded_bin_dir() / "pg_dump"), "-Fc", "-Z0", "-f", str(path)], env=env, check=True)


def _summed(dsn: str, path, items: list[str], piece: int, verified: bool = True) -> DumpPitr:
    with psycopg.connect(dsn) as conn:
        schema = schema_snapshot(conn)
    plan = DumpPitr(items, CUTOFF, schema)
    walk = DumpFingerprinter(digests=False, rows=plan.sink_for)
    with open(path, "rb") as fh:
        while chunk := fh.read(piece):
            walk.feed(chunk)
    walk.finish()
    if verified:
        plan.verified()
    return plan


@pytest.mark.parametrize("piece", [1 << 20, 4099])  # whole buffers; rows split across pieces (the slow path)
def test_the_dumps_sums_are_the_servers_for_every_kind_of_row(fresh_db, tmp_path, piece):
    dsn = fresh_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(AWKWARD)
        # The source's own text settings differ from pg_dump's: the server side must not use them.
        db = conn.info.dbname
        for stmt in ("DateStyle = 'SQL, DMY'", "TimeZone = 'America/New_York'", "extra_float_digits = 0",
                     "IntervalStyle = 'sql_standard'", "bytea_output = 'escape'"):
            conn.execute(f'ALTER DATABASE "{db}" SET {stmt}')
    _dump(dsn, tmp_path / "d.dump")
    plan = _summed(dsn, tmp_path / "d.dump", ["public.ledger:at"], piece)
    summed = plan.results()
    assert plan.skipped == {}
    server = _bounded_fingerprint(dsn, "public.ledger:at", "UTC", CUTOFF, PITR_TEXT)
    assert summed == {"public.ledger:at": server}
    assert server[0] == 100 + 3  # rows 1..100 (100 at the cutoff itself), 1001 (at it), 1003, 1004 (before it)
    # Against a source whose row 7 changed, the comparison fails; unchanged, it passes.
    ok = check_pitr(dsn, dsn, ["public.ledger:at"], CUTOFF, "UTC", restored_known=summed, from_dump=summed)
    assert ok.passed and "summed from the verified dump" in ok.detail, ok.detail
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE ledger SET note = note || ' ' WHERE id = 7")
    bad = check_pitr(dsn, dsn, ["public.ledger:at"], CUTOFF, "UTC", restored_known=summed, from_dump=summed)
    assert bad.status.value == "failed", bad.detail


def test_a_table_it_cannot_be_certain_of_is_left_to_the_server(fresh_db, tmp_path):
    dsn = fresh_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE walls (id int, at timestamp)")  # without time zone: its text is a zone's
        conn.execute("INSERT INTO walls VALUES (1, '2026-01-01')")
        conn.execute("CREATE TABLE gen (id int, at timestamptz, twice int GENERATED ALWAYS AS (id * 2) STORED)")
        conn.execute("INSERT INTO gen (id, at) VALUES (1, '2026-01-01+00')")
        conn.execute("CREATE TABLE forever (id int, at timestamptz)")
        conn.execute("INSERT INTO forever VALUES (1, '2026-01-01+00'), (2, 'infinity')")
        conn.execute("CREATE TABLE fine (id int, at timestamptz)")
        conn.execute("INSERT INTO fine VALUES (1, '2026-01-01+00'), (2, '2027-01-01+00')")
    _dump(dsn, tmp_path / "d.dump")
    items = ["public.walls:at", "public.gen:at", "public.forever:at", "public.fine:at", "fine:at"]
    plan = _summed(dsn, tmp_path / "d.dump", items, 1 << 20)
    summed = plan.results()
    assert set(summed) == {"public.fine:at"}
    assert summed["public.fine:at"] == _bounded_fingerprint(dsn, "public.fine:at", "UTC", CUTOFF, PITR_TEXT)
    assert "not a timestamptz" in plan.skipped["public.walls:at"]
    assert "generated" in plan.skipped["public.gen:at"]
    assert "infinity" in plan.skipped["public.forever:at"]
    # Nothing counts unless the copy verified.
    assert _summed(dsn, tmp_path / "d.dump", items, 1 << 20, verified=False).results() == {}


def test_cutoff_text_and_copy_columns_read_as_postgresql_writes_them():
    assert cutoff_text(datetime(2026, 6, 1, 12, 0, 0, 500000, tzinfo=UTC)) == b"2026-06-01 12:00:00.5+00"
    assert cutoff_text(datetime(2026, 6, 1, 14, 0, tzinfo=UTC).astimezone(
        __import__("zoneinfo").ZoneInfo("Asia/Jerusalem"))) == b"2026-06-01 14:00:00+00"
    assert cutoff_text(datetime(2026, 6, 1, tzinfo=UTC) + timedelta(microseconds=10)) == b"2026-06-01 00:00:00.00001+00"
    assert copy_columns('COPY public.t (id, "Odd, ""Name""", at) FROM stdin;\n') == ["id", 'Odd, "Name"', "at"]
    assert copy_columns("COPY public.t  FROM stdin;\n") is None


def test_a_parent_with_inheritance_children_is_left_to_the_server(fresh_db, tmp_path):
    """The server's read of a parent counts its children's rows; the parent's data block does
    not hold them: summing it from the dump would fail a drill that should pass."""
    dsn = fresh_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE parent (id int, at timestamptz)")
        conn.execute("CREATE TABLE child (extra text) INHERITS (parent)")
        conn.execute("INSERT INTO parent VALUES (1, '2026-01-01+00')")
        conn.execute("INSERT INTO child VALUES (2, '2026-01-02+00', 'x')")
    _dump(dsn, tmp_path / "d.dump")
    plan = _summed(dsn, tmp_path / "d.dump", ["public.parent:at", "public.child:at"], 1 << 20)
    summed = plan.results()
    assert "inheritance children" in plan.skipped["public.parent:at"]
    assert summed == {"public.child:at": _bounded_fingerprint(dsn, "public.child:at", "UTC", CUTOFF, PITR_TEXT)}


def test_a_column_named_t_is_not_taken_for_the_row(fresh_db, tmp_path):
    """The server hashes the whole row even where a column is named t (the query's alias): the
    dump's sums equal it, and a change in another column is still seen."""
    source, restored = fresh_db(), fresh_db()
    for dsn in (source, restored):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE x (id int, t text, at timestamptz, amount numeric)")
            conn.execute("CREATE TABLE w (id int, t text, at timestamp, amount numeric)")
            for table in ("x", "w"):
                conn.execute(f"INSERT INTO {table} VALUES (1, 'a', '2026-01-01', 1.5), (2, 'b', '2026-01-02', 2.5)")
    _dump(source, tmp_path / "d.dump")
    summed = _summed(source, tmp_path / "d.dump", ["public.x:at"], 1 << 20).results()
    assert summed == {"public.x:at": _bounded_fingerprint(source, "public.x:at", "UTC", CUTOFF, PITR_TEXT)}
    with psycopg.connect(restored, autocommit=True) as conn:
        conn.execute("UPDATE w SET amount = amount * 1000")
    for method in (PITR_TEXT, "record"):
        assert (_bounded_fingerprint(restored, "public.w:at", "UTC", CUTOFF, method)
                != _bounded_fingerprint(source, "public.w:at", "UTC", CUTOFF, method)), method


def test_the_row_text_settings_end_with_the_read(fresh_db):
    """Both sides read under pg_dump's settings, set for the read alone: a caller's connection —
    inside a transaction of its own or not — keeps its search_path and DateStyle."""
    from checks.drill_suite import bounded_fingerprint

    dsn = fresh_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE ev (id int, at timestamptz)")
        conn.execute("INSERT INTO ev VALUES (1, '2026-01-01+00')")
    for autocommit in (True, False):
        with psycopg.connect(dsn, autocommit=autocommit) as conn:
            before = conn.execute("SELECT current_setting('search_path'), current_setting('DateStyle')").fetchone()
            for _ in range(2):  # the second read finds the unqualified table as the first did
                assert bounded_fingerprint(conn, "ev:at", "UTC", CUTOFF, method=PITR_TEXT)[0] == 1
            after = conn.execute("SELECT current_setting('search_path'), current_setting('DateStyle')").fetchone()
            assert after == before


def test_the_dumps_sums_are_not_used_against_a_source_that_hashes_otherwise(fresh_db, monkeypatch):
    """A source whose text would not hash as the dump's sums do (another C library, a big-endian
    CPU): it is read with its usual method, and the sums are not compared with it — even where
    that usual method is the text method too (a server before 14)."""
    from checks.drill_early import SourceSide
    from tasks.drill_tasks import dump_sums

    dsn = fresh_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE solo (id int, at timestamptz)")
        conn.execute("INSERT INTO solo VALUES (1, '2026-01-01+00')")

    class Summed:
        def results(self):
            return {"public.solo:at": (1, "123")}

    for platform_ok in (True, False):
        monkeypatch.setattr(dumpside, "matches_source", lambda encoding, platform, ok=platform_ok: ok)
        side = SourceSide(dsn, ["public.solo:at"], CUTOFF, 130000, method=PITR_TEXT).start()
        side.result()
        assert side.method == PITR_TEXT  # a "13" backup: the text method either way
        assert side.dump_comparable is platform_ok
        assert dump_sums(Summed(), side) == ({"public.solo:at": (1, "123")} if platform_ok else {})


def test_the_source_hashes_by_text_only_what_the_dump_may_sum(fresh_db, tmp_path):
    """The live source's text method costs it about twice the record method's CPU: only the
    tables the backup's schema lets the dump sum are hashed that way; a `timestamp` table keeps
    the usual method on both sides, and the PITR check compares each table by its own method —
    still failing on a changed row in either."""
    from checks.drill_early import SourceSide
    from checks.drill_suite import PITR_RECORD
    from tasks.drill_tasks import dump_sums

    dsn = fresh_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE walls (id int, at timestamp); INSERT INTO walls VALUES (1, '2026-01-01')")
        conn.execute("CREATE TABLE fine (id int, at timestamptz); INSERT INTO fine VALUES (1, '2026-01-01+00')")
    _dump(dsn, tmp_path / "d.dump")
    items = ["public.walls:at", "public.fine:at"]
    plan = _summed(dsn, tmp_path / "d.dump", items, 1 << 20)
    assert plan.candidates() == {"public.fine:at"}
    with psycopg.connect(dsn) as conn:
        version = int(conn.execute("SHOW server_version_num").fetchone()[0])
    side = SourceSide(dsn, items, CUTOFF, version, method=PITR_TEXT, method_items=plan.candidates()).start()
    source = side.result()
    assert side.method_for("public.fine:at") == PITR_TEXT and side.method_for("public.walls:at") == PITR_RECORD
    assert str(source["public.walls:at"][1]).startswith("rec:") and not str(source["public.fine:at"][1]).startswith("rec:")
    summed = dump_sums(plan, side)
    assert set(summed) == {"public.fine:at"}
    ok = check_pitr(dsn, dsn, items, CUTOFF, "UTC", restored_known=summed, source_known=source, from_dump=summed)
    assert ok.passed and "summed from the verified dump" in ok.detail, ok.detail
    for table in ("walls", "fine"):   # the restored copy changed in one table: that table fails
        other = fresh_db()
        with psycopg.connect(other, autocommit=True) as conn:
            conn.execute("CREATE TABLE walls (id int, at timestamp); INSERT INTO walls VALUES (1, '2026-01-01')")
            conn.execute("CREATE TABLE fine (id int, at timestamptz); INSERT INTO fine VALUES (1, '2026-01-01+00')")
            conn.execute(f"UPDATE {table} SET id = 2")
        bad = check_pitr(other, dsn, items, CUTOFF, "UTC", source_known=source)
        assert bad.status.value == "failed" and f"public.{table}" in bad.detail, bad.detail


def test_a_table_missing_on_the_source_needs_no_source_at_check_time(fresh_db):
    """An entry the early read found missing on the source is skipped without asking the source
    anything: a source gone by check time must not turn the tables already read into not verified."""
    dsn = fresh_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE fine (id int, at timestamptz); INSERT INTO fine VALUES (1, '2026-01-01+00')")
    known = {"public.fine:at": _bounded_fingerprint(dsn, "public.fine:at", "UTC", CUTOFF, PITR_TEXT)}
    got = check_pitr(dsn, "postgresql://nobody@127.0.0.1:1/gone?connect_timeout=2", ["public.fine:at", "public.missing:at"],
                     CUTOFF, "UTC", restored_known=dict(known), source_known={**known, "public.missing:at": None})
    assert got.passed and got.detail.startswith("1 append-only tables equal"), got.detail
