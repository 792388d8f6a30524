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
