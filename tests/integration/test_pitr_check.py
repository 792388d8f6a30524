"""The drill's PITR comparison says how much it compared: rows younger than the margin are left
out (they may have been in flight), so a copy of young data compares nothing — and its detail
says so instead of reading like a proof."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from checks.drill_suite import check_pitr


def test_the_detail_counts_the_rows_compared_and_says_when_there_were_none(fresh_db):
    dsn = fresh_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (id int, at timestamptz)")
        conn.execute("INSERT INTO events VALUES (1, now() - interval '2 hours'), (2, now() - interval '1 hour'), "
                     "(3, now())")
    now = datetime.now(UTC)
    old_enough = check_pitr(dsn, dsn, ["public.events:at"], now - timedelta(seconds=60), "UTC")
    assert old_enough.passed and old_enough.detail.endswith("(2 rows)"), old_enough.detail
    too_young = check_pitr(dsn, dsn, ["public.events:at"], now - timedelta(hours=3), "UTC")
    assert too_young.passed and "nothing compared" in too_young.detail, too_young.detail


LEDGER = """
CREATE TYPE kind AS ENUM ('buy', 'win');
CREATE TABLE ledger (id bigint, at timestamptz, kind kind, amount numeric, doc jsonb, ratio float8, span interval,
                     note text, raw bytea, ok bool, tags text[]);
INSERT INTO ledger SELECT g, timestamptz '2026-01-01 00:00+00' + g * interval '1 min', 'buy', 1.5, '{"a": 1.0}',
       0.0, interval '1 day', 'note ' || g, '\\x0102', true, ARRAY['x'] FROM generate_series(1, 50) g
"""


def test_the_row_hash_tells_apart_every_change_row_text_would(fresh_db):
    """PostgreSQL 14+: rows are hashed by their types' hash functions where that equals comparing
    their text, as text elsewhere (PITR_RECORD). Every change the text hash saw is still seen —
    including those a type's own hash is blind to (numeric and jsonb scale, -0, an interval's
    units) — and two sides hashed differently never compare equal."""
    from checks.drill_suite import PITR_TEXT, _bounded_fingerprint, pitr_method

    source, restored = fresh_db(), fresh_db()
    for dsn in (source, restored):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(LEDGER)
            version = conn.execute("SHOW server_version_num").fetchone()[0]
    cutoff = datetime(2027, 1, 1, tzinfo=UTC)
    item = ["public.ledger:at"]
    same = check_pitr(restored, source, item, cutoff, "UTC")
    assert same.passed and "(50 rows)" in same.detail, same.detail
    record = _bounded_fingerprint(source, item[0], "UTC", cutoff, pitr_method(int(version)))
    assert record[1].startswith("rec:") == (int(version) >= 140000)
    text = _bounded_fingerprint(source, item[0], "UTC", cutoff, PITR_TEXT)
    assert record != text  # never equal across methods, even over the same rows
    changes = ["amount = 1.50", "doc = '{\"a\": 1.00}'", "ratio = '-0'", "span = interval '24 hours'",
               "kind = 'win'", "note = 'changed'", "raw = '\\x0103'", "ok = false", "tags = ARRAY['y']",
               "at = at + interval '1 microsecond'"]
    for change in changes:
        with psycopg.connect(restored, autocommit=True) as conn:
            conn.execute(f"UPDATE ledger SET {change} WHERE id = 7")
        result = check_pitr(restored, source, item, cutoff, "UTC")
        assert result.status.value == "failed", (change, result.detail)
        with psycopg.connect(restored, autocommit=True) as conn:
            conn.execute("DELETE FROM ledger WHERE id = 7")
            conn.execute("INSERT INTO ledger SELECT * FROM ledger WHERE id = 8")
            conn.execute("UPDATE ledger SET id = 7, at = timestamptz '2026-01-01 00:07+00', note = 'note 7' "
                         "WHERE ctid = (SELECT max(ctid) FROM ledger WHERE id = 8)")
        assert check_pitr(restored, source, item, cutoff, "UTC").passed, change
