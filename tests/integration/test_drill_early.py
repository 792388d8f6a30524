"""The drill reads each table while the restore still runs (checks.drill_early); what it read
counts only if the table provably has not changed since. Every kind of change after the read
— a row changed, removed, added, the table emptied, a write from a transaction already open —
makes the table be read again, so the checks still fail on it."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg
import pytest

from bvh_ops.pg.conn import connect
from bvh_ops.pg.fingerprint import mark, unchanged_since

LOAD = "CREATE TABLE t (id int, v text); INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 100) g"


@pytest.mark.parametrize(("change", "changed"), [
    (None, False),
    ("UPDATE t SET v = 'tampered' WHERE id = 7", True),
    ("UPDATE t SET v = v WHERE id = 7", True),  # same content, but a new row version: read again
    ("DELETE FROM t WHERE id = 7", True),
    ("DELETE FROM t WHERE id = 7; INSERT INTO t VALUES (7, 'row 7')", True),  # same rows, same count
    ("INSERT INTO t VALUES (101, 'row 101')", True),
    ("TRUNCATE t", True),
    ("TRUNCATE t; INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 100) g", True),
    ("VACUUM FREEZE t", False),  # freezing keeps the raw xmin
    ("VACUUM FULL t", False),
    ("SELECT * FROM t WHERE id = 7 FOR UPDATE", False),
])
def test_unchanged_since_sees_every_change_after_the_mark(fresh_db, change, changed):
    dsn = fresh_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(LOAD)
    with connect(dsn, autocommit=True) as conn:
        since = mark(conn, "public", "t")
        if change:
            conn.execute(change)
        assert unchanged_since(conn, "public", "t", since, 100) is not changed


def test_a_write_from_a_transaction_open_before_the_mark_is_seen(fresh_db):
    """A subtransaction that had its xid before the mark and writes the table after it."""
    dsn = fresh_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(LOAD + "; CREATE TABLE other (x int)")
    with psycopg.connect(dsn) as writer, connect(dsn, autocommit=True) as conn:
        writer.execute("SAVEPOINT s; INSERT INTO other VALUES (1)")  # the subtransaction's xid, now
        since = mark(conn, "public", "t")
        writer.execute("INSERT INTO t VALUES (101, 'late'); DELETE FROM t WHERE id = 1")  # same count
        writer.execute("RELEASE s")
        writer.commit()
        assert not unchanged_since(conn, "public", "t", since, 100)


def test_an_empty_table_gaining_a_row_is_seen(fresh_db):
    dsn = fresh_db()
    with connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int)")
        since = mark(conn, "public", "t")
        assert since.loader is None and unchanged_since(conn, "public", "t", since, 0)
        conn.execute("INSERT INTO t VALUES (1)")
        assert not unchanged_since(conn, "public", "t", since, 0)


def _early_restore(settings, manifest, target, tmp_path):
    from bvh_ops.logical.restore import restore_logical
    from checks.drill_early import EarlyChecks

    cutoff = datetime.fromisoformat(manifest.started_at) - timedelta(seconds=settings.pitr_margin_seconds)
    early = EarlyChecks(target, manifest, source=settings.database_url.get_secret_value(),
                        append_only=settings.append_only_tables, cutoff=cutoff).begin()
    restore_logical(settings, manifest.backup_id, target, compare=False, jobs=2, copy_dir=tmp_path,
                    on_table_loaded=early.loaded)
    return early, cutoff


def test_tables_read_during_the_restore_and_changed_after_it_fail_the_checks(sample_db, fresh_db, repo_dir,
                                                                           make_settings, tmp_path):
    from bvh_ops.logical.backup import run_logical_backup
    from checks.drill_suite import check_fingerprints, check_pitr

    settings = make_settings(sample_db, f"file://{repo_dir}")
    manifest = run_logical_backup(settings).manifest
    leaves = {t.name for t in manifest.tables} - {"public.app_logs", "pg_largeobject"}

    # Untouched: every plain table was read during the restore, and every check passes on it.
    target = fresh_db()
    early, cutoff = _early_restore(settings, manifest, target, tmp_path)
    settled = early.settle(queued=True)  # every table queued is read, however fast the restore
    assert settled.reread == []
    # A table whose early read could not be had (its post-data not reported done, a read that
    # failed) is simply read by the checks after the restore: slower, never wrong. Most are early.
    early_read = {f"{s}.{t}" for s, t in settled.copies}
    assert len(leaves - early_read) <= 2, (leaves - early_read)
    assert set(settled.source_pitr) == set(settings.append_only_tables)
    assert settled.restored_pitr and set(settled.restored_pitr) <= set(settings.append_only_tables)
    assert check_fingerprints(target, manifest, known=settled.copies).passed
    assert check_pitr(target, sample_db, settings.append_only_tables, cutoff, settled.zone,
                      restored_known=settled.restored_pitr, source_known=settled.source_pitr).passed

    # Changed after it was read: a row changed, a row gone, a row added — each table read again.
    target = fresh_db()
    early, cutoff = _early_restore(settings, manifest, target, tmp_path)
    early.join()  # every table read before the changes below
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("UPDATE users SET display_name = 'tampered' WHERE id = 7")
        conn.execute("DELETE FROM audit_log WHERE id = (SELECT min(id) FROM audit_log)")
        conn.execute("INSERT INTO draws (name, status, draw_at, jackpot, created_at) "
                     "SELECT name, status, draw_at, jackpot, created_at FROM draws LIMIT 1")
    settled = early.settle(queued=True)  # every table queued is read, however fast the restore
    read_early = {f"{s}.{t}" for s, t in early._taken}
    assert settled.reread == sorted({"public.audit_log", "public.draws", "public.users"} & read_early)
    assert len(settled.reread) >= 2  # the changes after the early read are what is tested here
    fp = check_fingerprints(target, manifest, known=settled.copies)
    assert not fp.passed
    assert all(name in fp.detail for name in ("public.users", "public.audit_log", "public.draws"))
    pitr = check_pitr(target, sample_db, settings.append_only_tables, cutoff, settled.zone,
                      restored_known=settled.restored_pitr, source_known=settled.source_pitr)
    assert pitr.status.value == "failed" and "public.audit_log" in pitr.detail
