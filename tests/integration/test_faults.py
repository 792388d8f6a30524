"""Faults: a killed backup leaves nothing that looks complete; privileges and concurrency fail
at once with the reason; unreachable databases are transient, permission errors are not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from bvh_ops.errors import ConcurrencyError, DatabaseError, DatabaseUnavailable, TransientError
from bvh_ops.logical.backup import run_logical_backup
from bvh_ops.pg.lock import TargetLock
from bvh_ops.repository.open import open_repository
from tests.conftest import free_port
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def big_db(pg):
    """~60 MB of incompressible text: at zstd level 19 its dump streams for many seconds even on
    a fast, idle machine, so it is still streaming when the test sees it start."""
    from bvh_ops.pg.catalog import create_database

    create_database(pg.dsn(), "bigdb")
    with psycopg.connect(pg.dsn("bigdb"), autocommit=True) as conn:
        conn.execute("CREATE TABLE blobs AS SELECT g AS id, md5(random()::text) || md5(random()::text) AS v "
                     "FROM generate_series(1, 800000) g")
    return pg.dsn("bigdb")


def test_backup_killed_mid_stream_leaves_no_committed_backup(big_db, repo_dir, keypair, tmp_path):
    pub, key = keypair
    env = {**os.environ, "BVH_OPS_DATABASE_URL": big_db, "BVH_OPS_REPOSITORY": f"file://{repo_dir}",
           "BVH_OPS_RECIPIENTS": str(pub), "BVH_OPS_STATE_DIR": str(tmp_path / "state"),
           "BVH_OPS_COMPRESSION_LEVEL": "19"}
    code = textwrap.dedent("""
        from bvh_ops.config import load_settings
        from bvh_ops.logical.backup import run_logical_backup
        run_logical_backup(load_settings())
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    backups = Path(repo_dir) / "backups"
    try:
        with psycopg.connect(big_db, autocommit=True) as conn:

            def streaming() -> bool:
                """The dump object is being written and pg_dump is copying the big table."""
                assert proc.poll() is None, "the backup ended before it could be killed"
                if not list(backups.glob("*/.tmp-dump*")):
                    return False
                return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                                    "AND query LIKE 'COPY public.blobs %'").fetchone()[0] > 0

            wait_until(streaming, "the dump of public.blobs streaming into the repository")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    from bvh_ops.config import Settings

    settings = Settings(database_url=big_db, repository=f"file://{repo_dir}", recipients=[pub],
                        state_dir=tmp_path / "state")
    repo, _ = open_repository(settings)
    records = repo.list_backups()
    assert [r.status for r in records] == ["incomplete"]
    assert not list(backups.glob("*/manifest.json*"))
    from bvh_ops.errors import NotFound

    with pytest.raises(NotFound):
        repo.latest()
    # The next run removes the leftovers at once: their writer is dead on this host.
    removed = repo.collect_incomplete(datetime.now(UTC), grace_hours=24)
    assert removed == [records[0].backup_id]
    assert not any(backups.rglob("*"))


def test_incomplete_backup_of_a_live_writer_is_kept(sample_db, repo_dir, make_settings):
    settings = make_settings(sample_db, f"file://{repo_dir}")
    repo, _ = open_repository(settings)
    repo.begin("20261127T000000Z-logical-aaaaaa")  # this (live) process is the writer
    assert repo.collect_incomplete(datetime.now(UTC), grace_hours=24) == []
    assert repo.collect_incomplete(datetime.now(UTC), grace_hours=0) == ["20261127T000000Z-logical-aaaaaa"]


def test_permission_denied_names_the_table_and_is_not_transient(pg, sample_db, repo_dir, make_settings):
    with psycopg.connect(pg.dsn("lottery"), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS limited_backup")
        conn.execute("CREATE ROLE limited_backup LOGIN PASSWORD 'limited-pw'")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO limited_backup")
        conn.execute("REVOKE SELECT ON payments FROM limited_backup")
    try:
        dsn = f"postgresql://limited_backup:limited-pw@127.0.0.1:{pg.port}/lottery"
        with pytest.raises(DatabaseError, match="permission denied on table public.payments") as info:
            run_logical_backup(make_settings(dsn, f"file://{repo_dir}"))
        assert not isinstance(info.value, TransientError)
        assert not (Path(repo_dir) / "backups").exists() or not any((Path(repo_dir) / "backups").iterdir())
    finally:
        with psycopg.connect(pg.dsn("lottery"), autocommit=True) as conn:
            conn.execute("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM limited_backup")
            conn.execute("DROP ROLE limited_backup")


def test_unreachable_database_is_transient(repo_dir, make_settings):
    dsn = f"postgresql://postgres:pw@127.0.0.1:{free_port()}/lottery"
    with pytest.raises(DatabaseUnavailable, match="database unreachable"):
        run_logical_backup(make_settings(dsn, f"file://{repo_dir}"))


def test_second_backup_of_the_same_target_is_refused(sample_db, repo_dir, make_settings):
    with TargetLock(sample_db, "daily-backup"):
        with pytest.raises(ConcurrencyError, match="another daily-backup of this database is running"):
            run_logical_backup(make_settings(sample_db, f"file://{repo_dir}"))
    # released: the next one runs
    assert run_logical_backup(make_settings(sample_db, f"file://{repo_dir}")).manifest.kind == "logical"


def test_the_run_lock_outlives_a_servers_idle_session_timeout(fresh_db, repo_dir, make_settings):
    """The lock is held by an idle session for the whole run: a server's idle_session_timeout
    ended that session (and the lock) mid-run, and a second backup of the target started."""
    import time

    dsn = fresh_db()
    db = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{db}" SET idle_session_timeout = 300')  # ms
    with TargetLock(dsn, "daily-backup"):
        time.sleep(1.0)  # the server's timeout passes three times over
        with pytest.raises(ConcurrencyError, match="another daily-backup of this database is running"):
            with TargetLock(dsn, "daily-backup"):
                pass


def test_the_run_lock_is_free_as_soon_as_the_run_ends(fresh_db, monkeypatch):
    """The lock was left to the end of its session: the server ends a backend after its client
    has gone, in its own time, and a backup started right after another (a key rotation's test
    fixture, a script) met it still held ("another daily-backup ... is running"). Here the
    session outlives the run (its close does nothing): the next run still starts at once."""
    dsn = fresh_db()
    lingering = []
    monkeypatch.setattr(psycopg.Connection, "close", lambda self: lingering.append(self))
    with TargetLock(dsn, "daily-backup"):
        pass
    monkeypatch.undo()
    try:
        assert len(lingering) == 1 and not lingering[0].closed  # the first run's session is still there
        with TargetLock(dsn, "daily-backup"):
            pass
    finally:
        for conn in lingering:
            conn.close()


def test_the_alert_evaluator_lock_is_free_as_soon_as_its_holder_closes(fresh_db, monkeypatch):
    """The same for the one-evaluator lock of the ops database: a monitor that stops and one that
    starts right after it (a restart) — the new one evaluates, it is not told another does."""
    from datetime import UTC, datetime

    from bvh_ops.alerting.store import Persistence

    dsn = fresh_db()
    first = Persistence(lambda: dsn)
    assert first.open(datetime.now(UTC)) is not None
    lingering = []
    monkeypatch.setattr(psycopg.Connection, "close", lambda self: lingering.append(self))
    first.close()
    monkeypatch.undo()
    try:
        assert len(lingering) == 1 and not lingering[0].closed
        second = Persistence(lambda: dsn)
        assert second.open(datetime.now(UTC)) is not None  # no EvaluatorBusy
        second.close()
    finally:
        for conn in lingering:
            conn.close()


def test_retry_condition_retries_only_transient_errors():
    from prefect.states import Failed

    from tasks.common import retry_transient_only

    assert retry_transient_only(None, None, Failed(data=DatabaseUnavailable("refused")))
    assert not retry_transient_only(None, None, Failed(data=DatabaseError("permission denied on table x")))
    assert not retry_transient_only(None, None, Failed(data=ValueError("bug")))
