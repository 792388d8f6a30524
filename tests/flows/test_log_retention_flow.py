"""The log retention flows under the Prefect test harness and the `bvh-ops logs retention|hold`
commands: an old day archived, verified and dropped; the monthly run reads every archive back
and fails on a damaged one; a legal hold shown and respected."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from bvh_ops.logs.archive import archive_key
from bvh_ops.opsdb.migrations import migrate
from tests.integration.cli import assert_one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("prefect_harness")
NOW = datetime.now(UTC)
OLD = (NOW - timedelta(days=45)).date()


@pytest.fixture
def world(fresh_db, env_settings, repo_dir):
    ops = fresh_db("_ops")
    with psycopg.connect(ops, autocommit=True) as conn:
        migrate(conn)
        for category in ("security", "performance"):
            conn.execute("SELECT ops.ensure_log_partition(%s, %s)", (category, OLD))
            conn.execute("INSERT INTO ops.log_records (at, category, source, event) SELECT %s + i * interval '1 s', "
                         "%s, 'platform', 'auth.login_failed' FROM generate_series(1, 30) i",
                         (datetime.combine(OLD, datetime.min.time(), UTC), category))
    env = env_settings("postgresql://u@127.0.0.1:1/x", f"file://{repo_dir}", BVH_OPS_OPS_DATABASE_URL=ops)
    return ops, env, repo_dir


def test_cli_plan_hold_and_apply(world):
    ops, env, repo = world
    dry = run_cli("logs", "retention", "--json", env=env)
    assert dry.returncode == 0, dry.stderr
    assert [(a["action"], a["category"]) for a in json.loads(dry.stdout)["actions"]] == [
        ("archive", "performance"), ("drop_partition", "performance"), ("archive", "security"),
        ("drop_partition", "security")]
    assert_one_line_error(run_cli("logs", "hold", "secrity", "--from", "2026-01-01", "--to", "2026-02-01",
                                  "--reason", "x", env=env), "category 'secrity'")
    assert_one_line_error(run_cli("logs", "hold", "security", "--from", "2026-02-01", "--to", "2026-01-01",
                                  "--reason", "x", env=env), "is before --from")
    held = run_cli("logs", "hold", "security", "--from", str(OLD), "--to", str(OLD), "--reason", "case 17", env=env)
    assert held.returncode == 0 and "case 17" in held.stdout, held.stderr
    applied = run_cli("logs", "retention", "--apply", "--json", env=env)
    assert applied.returncode == 0, applied.stderr
    assert all(a["done"] for a in json.loads(applied.stdout)["actions"])
    assert (repo / archive_key("security", OLD)).exists() and (repo / archive_key("performance", OLD)).exists()
    with psycopg.connect(ops) as conn:
        assert conn.execute("SELECT count(*) FROM ops.log_records").fetchone()[0] == 0
    hot = json.loads(run_cli("logs", "search", "--category", "security", "--json", env=env).stdout)
    found = run_cli("logs", "search", "--archived", "--category", "security", "--match", "event=auth.login_failed",
                    "--since", str(OLD), "--json", env=env)
    assert found.returncode == 0, found.stderr
    assert hot["count"] == 0 and json.loads(found.stdout)["count"] == 30     # only in the archive now
    holds = json.loads(run_cli("logs", "holds", "--json", env=env).stdout)
    assert [(h["category"], h["reason"]) for h in holds] == [("security", "case 17")]


def test_flows_archive_then_the_monthly_run_finds_a_damaged_archive(world):
    from flows.log_retention import archive_logs, cleanup_logs

    ops, env, repo = world
    doc = cleanup_logs()
    assert sum(1 for a in doc["actions"] if a["action"] == "archive" and a["done"]) == 2
    assert [v["ok"] for v in archive_logs()["verified"]] == [True, True]
    obj = repo / archive_key("security", OLD)
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0xFF                        # one flipped byte in the stored archive
    obj.write_bytes(bytes(data))
    from bvh_ops.errors import IntegrityError

    with pytest.raises(IntegrityError, match="1 log archive"):
        archive_logs()


def test_cleanup_logs_rotates_a_configured_platform_log_and_the_cli_too(world, tmp_path, monkeypatch):
    """cleanup-logs collects the rotating source, renames its file past the size, has the writer
    reopen (the sample platform's SIGUSR1 handling) and publishes the actions; `logs rotate`
    does it by hand and says in one line when no source rotates."""
    import subprocess
    import sys

    from flows.log_retention import cleanup_logs
    from tests.integration.test_log_rotation import WRITER, source
    from tests.waiting import wait_until

    ops, env, _ = world
    assert_one_line_error(run_cli("logs", "rotate", env=env), "no log source rotates")
    path = tmp_path / "logs" / "app.log"
    path.parent.mkdir()
    pid_file, stop, count = tmp_path / "app.pid", tmp_path / "stop", tmp_path / "count"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(pid_file), str(stop), str(count)])
    try:
        wait_until(lambda: pid_file.exists() and path.exists() and path.stat().st_size > 30_000, "the writer writing")
        sources = json.dumps([source(path, pid_file, rotate_bytes=20_000)])
        monkeypatch.setenv("BVH_OPS_LOG_SOURCES", sources)
        inode = path.stat().st_ino
        doc = cleanup_logs()
        assert [(r["action"], r["status"]) for r in doc["rotation"]] == [("rotate", "done")]
        assert path.with_name("app.log.1").stat().st_ino == inode and path.stat().st_ino != inode
        wait_until(lambda: path.stat().st_size > 20_000, "the new file past its size")
        by_hand = run_cli("logs", "rotate", "--json", env={**env, "BVH_OPS_LOG_SOURCES": sources})
        assert by_hand.returncode == 0, by_hand.stderr
        assert [(a["action"], a["status"]) for a in json.loads(by_hand.stdout)["actions"]] == [("rotate", "done")]
        assert path.with_name("app.log.2").stat().st_ino == inode
    finally:
        stop.touch()
        proc.wait(timeout=30)
