"""The daily-backup flow under one session-scoped prefect_test_harness: contract, artifacts,
rollback of a backup whose checks fail, retries of transient errors, and no secret leaks."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bvh_ops.config import load_settings
from bvh_ops.errors import DatabaseUnavailable, IntegrityError
from bvh_ops.repository.open import open_repository
from tests.conftest import free_port

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _flow_logs_and_artifacts(flow_run_name_contains: str | None = None) -> tuple[str, list]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter

    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(), limit=200)
        artifacts = client.read_artifacts(limit=200)
    return "\n".join(log.message for log in logs), artifacts


def _live_table_bytes(dsn: str) -> dict[str, int]:
    """Heap + TOAST + indexes per table, a partitioned table summed over its partitions."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        return dict(conn.execute(
            "SELECT format('%I.%I', n.nspname, c.relname), pg_total_relation_size(c.oid) "
            "+ coalesce((SELECT sum(pg_total_relation_size(p.relid)) FROM pg_partition_tree(c.oid) p "
            "WHERE p.relid <> c.oid), 0)::bigint "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname = 'public'").fetchall())


def test_daily_backup_flow_commits_checks_and_publishes(pg, sample_db, env_settings, repo_dir, monkeypatch):
    env_settings(sample_db, f"file://{repo_dir}")
    argv_seen: list[list[str]] = []
    real_popen = subprocess.Popen

    class SpyPopen(real_popen):  # records the argv of every child, then runs it for real
        def __init__(self, args, *a, **kw):
            argv_seen.append([str(x) for x in args])
            super().__init__(args, *a, **kw)

    monkeypatch.setattr("bvh_ops.pg.tools.subprocess.Popen", SpyPopen)
    from flows.daily_backup import daily_backup

    result = daily_backup()
    for key in ("backup_id", "kind", "started_at", "finished_at", "bytes_in", "bytes_stored", "tables"):
        assert key in result
    assert result["kind"] == "logical"
    assert result["tables"]["public.tickets"]["rows"] == 20000
    assert all(c["status"] == "passed" for c in result["checks"]) and len(result["checks"]) >= 8
    assert "file_sets" not in result            # no [[file_sets]] configured: nothing about them

    repo, _ = open_repository(load_settings())
    assert repo.latest().backup_id == result["backup_id"]

    logs, artifacts = _flow_logs_and_artifacts()
    summary = [a for a in artifacts if a.key == "daily-backup-summary" and result["backup_id"] in str(a.data)]
    table = [a for a in artifacts if a.key == "daily-backup-tables" and result["backup_id"] in (a.description or "")]
    assert summary and table
    rows = json.loads(table[0].data) if isinstance(table[0].data, str) else table[0].data
    assert {r["table"] for r in rows} >= {"public.tickets", "public.wallets"}
    # Bytes per table (what the parallel restore weighs its jobs by) are the table's own size:
    # plain tables too, not only partitioned ones. The sample is not written to, so the live
    # sizes are the backup's give or take a free-space or visibility map.
    live = _live_table_bytes(sample_db)
    for r in rows:
        if r["rows"] > 0:
            assert 0.5 * live[r["table"]] <= r["bytes"] <= 2 * live[r["table"]], r
    largest = max(live, key=live.get)
    assert next(r["bytes"] for r in rows if r["table"] == largest) > 1 << 20

    password = pg.password
    identity_secret = Path(load_settings().identity).read_text().split()[-1]  # the private key's base64
    assert identity_secret not in logs
    assert not any(identity_secret in str(a.data) for a in artifacts)
    assert password not in repr(load_settings())
    assert argv_seen and any("pg_dump" in a[0] for a in argv_seen)
    assert not any(password in arg for argv in argv_seen for arg in argv)
    assert password not in json.dumps(result, default=str)
    assert password not in logs
    assert not any(password in str(a.data) for a in artifacts)


def test_failed_check_rolls_the_backup_back(sample_db, env_settings, repo_dir, monkeypatch):
    env_settings(sample_db, f"file://{repo_dir}")
    import tasks.backup_tasks as bt

    real_verify = bt.verify_backup

    def tamper_then_verify(repo, backup_id, **kw):
        dump = Path(repo_dir) / "backups" / backup_id / "dump.pgcustom"
        data = bytearray(dump.read_bytes())
        data[len(data) // 3] ^= 0xFF
        dump.write_bytes(bytes(data))
        return real_verify(repo, backup_id, **kw)

    monkeypatch.setattr(bt, "verify_backup", tamper_then_verify)
    from flows.daily_backup import daily_backup

    with pytest.raises(IntegrityError, match="shallow_verify_ok"):
        daily_backup()
    repo, _ = open_repository(load_settings())
    assert [r for r in repo.list_backups() if r.status == "complete"] == []
    assert not list(Path(repo_dir).rglob("manifest.json*"))


def test_unreachable_target_fails_after_retries(env_settings, repo_dir, monkeypatch):
    env_settings(f"postgresql://postgres:pw@127.0.0.1:{free_port()}/lottery", f"file://{repo_dir}",
                 BVH_OPS_TASK_RETRIES="2")
    import bvh_ops.logical.backup as logical

    attempts = []
    real = logical.run_logical_backup

    def counting(settings, **kw):
        attempts.append(1)
        return real(settings, **kw)

    monkeypatch.setattr(logical, "run_logical_backup", counting)
    from flows.daily_backup import daily_backup

    with pytest.raises(DatabaseUnavailable, match="database unreachable"):
        daily_backup()
    assert len(attempts) == 3  # first try + 2 retries


def test_retention_deletes_expired_backups_after_success(sample_db, env_settings, repo_dir):
    import dataclasses
    from datetime import UTC, datetime, timedelta

    from bvh_ops.keys import load_or_create_host_key
    from bvh_ops.repository.manifest import sign_manifest

    env_settings(sample_db, f"file://{repo_dir}", BVH_OPS_KEEP_DAILY="1", BVH_OPS_KEEP_WEEKLY="0",
                 BVH_OPS_KEEP_MONTHLY="0", BVH_OPS_KEEP_YEARLY="0", BVH_OPS_MIN_REDUNDANCY="1")
    from flows.daily_backup import daily_backup

    first = daily_backup()
    # Age the first backup by 40 days (re-signed by this host, as a real old backup would be).
    settings = load_settings()
    repo, host_key = open_repository(settings)
    old = repo.load_manifest(first["backup_id"]).manifest
    aged = dataclasses.replace(old, finished_at=(datetime.now(UTC) - timedelta(days=40)).isoformat())
    raw = sign_manifest(aged, load_or_create_host_key(settings.state_dir))
    for name in ("manifest.json", "manifest.json.copy"):
        (Path(repo_dir) / "backups" / first["backup_id"] / name).write_bytes(raw)

    second = daily_backup()
    decisions = {d["backup_id"]: d["action"] for d in second["retention"]}
    assert decisions == {first["backup_id"]: "DELETE", second["backup_id"]: "KEEP"}
    _, artifacts = _flow_logs_and_artifacts()
    plan = max((a for a in artifacts if a.key == "retention-plan"), key=lambda a: a.created).data
    assert f"| DELETE | `{first['backup_id']}` |" in plan and "in no kept bucket" in plan
    assert [r.backup_id for r in repo.list_backups()] == [second["backup_id"]]
