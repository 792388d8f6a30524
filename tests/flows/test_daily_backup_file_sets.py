"""The daily backup takes the configured file sets after the database (#18): each set its own
snapshot and check task, a partial set a warning finding, a failed set a critical one that never
undoes the database backup, one artifact line per set."""

from __future__ import annotations

import json

import psycopg
import pytest

from bvh_ops.files.catalog import list_snapshots
from bvh_ops.opsdb.migrations import migrate
from bvh_ops.repository.open import open_repository
from tests.flows.test_daily_backup_flow import _flow_logs_and_artifacts

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _findings(dsn: str) -> dict[str, tuple[str, bool]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT key, severity, cleared_at IS NULL FROM ops.findings WHERE source = 'file-sets'")
        return {k: (sev, active) for k, sev, active in rows}


def test_file_sets_are_snapshotted_after_the_database_and_reported(sample_db, fresh_db, env_settings, repo_dir,
                                                                   tmp_path):
    from bvh_ops.config import load_settings
    from flows.daily_backup import daily_backup

    conf = tmp_path / "app-config"
    conf.mkdir()
    (conf / "platform.toml").write_text('port = 8080\n')
    ops = fresh_db("_ops")
    with psycopg.connect(ops, autocommit=True) as conn:
        migrate(conn)
    sets = [{"name": "config", "class": "application", "paths": [str(conf)]},
            {"name": "system", "class": "system", "paths": [str(conf)],
             "commands": [{"name": "firewall", "argv": ["sh", "-c", "echo 'nft: permission denied' >&2; exit 1"]}]}]
    env_settings(sample_db, f"file://{repo_dir}", BVH_OPS_OPS_DATABASE_URL=ops, BVH_OPS_FILE_SETS=json.dumps(sets))

    result = daily_backup(physical="off")
    assert all(c["status"] == "passed" for c in result["checks"])        # the database backup stands
    by_set = {o["set"]: o for o in result["file_sets"]}
    assert by_set["config"]["status"] == "ok" and by_set["config"]["files"] == 2   # the dir and its file
    assert {c["name"]: c["status"] for c in by_set["config"]["checks"]} == {"complete": "passed", "verify": "passed"}
    assert by_set["system"]["status"] == "partial"
    assert any("permission denied" in p for p in by_set["system"]["problems"])
    assert result["file_sets_status"] == "file sets: 1 ok, 1 partial (system), 0 failed"
    repo, _ = open_repository(load_settings())
    assert {s.snapshot_id for s in list_snapshots(repo.store, repo.trusted_keys)} == {
        by_set["config"]["snapshot_id"], by_set["system"]["snapshot_id"]}
    assert _findings(ops) == {"snapshot:system": ("warning", True)}
    _, artifacts = _flow_logs_and_artifacts()
    summary = next(a for a in artifacts if a.key == "daily-backup-summary" and result["backup_id"] in str(a.data))
    assert "## File sets" in summary.data
    assert f"| config | ok | `{by_set['config']['snapshot_id']}`" in summary.data
    assert "| system | partial |" in summary.data and "permission denied" in summary.data

    # a gc holds the repository's file-set lock: every set fails, the database backup does not
    repo.store.put_bytes("files/gc.lock", b"{}")
    second = daily_backup(physical="off")
    assert all(c["status"] == "passed" for c in second["checks"]) and second["backup_id"] != result["backup_id"]
    assert [o["status"] for o in second["file_sets"]] == ["failed", "failed"]
    assert all("garbage collection is running" in o["error"] for o in second["file_sets"])
    assert second["file_sets_status"] == "file sets: 0 ok, 0 partial, 2 failed (config, system)"
    assert _findings(ops) == {"snapshot:config": ("critical", True), "snapshot:system": ("critical", True)}
    assert repo.latest().backup_id == second["backup_id"]

    assert second["file_sets_retention"]["counts"]["DELETE"] == 0      # default policy: a day's two are kept
    assert "Snapshot retention (GFS): 2 keep" in next(
        a for a in _flow_logs_and_artifacts()[1] if a.key == "daily-backup-summary"
        and second["backup_id"] in str(a.data)).data

    # fixed: the next run clears the findings; with one daily kept, the snapshots retention
    # forgets the day's older complete snapshot (the partial one stays: never counted nor deleted)
    repo.store.delete("files/gc.lock")
    sets[1]["commands"] = [{"name": "firewall", "argv": ["echo", "table inet filter {}"]}]
    env_settings(sample_db, f"file://{repo_dir}", BVH_OPS_OPS_DATABASE_URL=ops, BVH_OPS_FILE_SETS=json.dumps(sets),
                 BVH_OPS_KEEP_DAILY="1", BVH_OPS_KEEP_WEEKLY="0", BVH_OPS_KEEP_MONTHLY="0", BVH_OPS_KEEP_YEARLY="0",
                 BVH_OPS_MIN_REDUNDANCY="1")
    third = daily_backup(physical="off")
    assert [o["status"] for o in third["file_sets"]] == ["ok", "ok"]
    assert third["file_sets"][0]["files_unchanged"] == 1            # the unchanged config file was not read
    assert all(not active for _, active in _findings(ops).values())
    forgotten = {d["id"] for d in third["file_sets_retention"]["decisions"] if d["verdict"] == "DELETE"}
    assert forgotten == {by_set["config"]["snapshot_id"]}
    left = {s.snapshot_id for s in list_snapshots(repo.store, repo.trusted_keys)}
    assert left == {third["file_sets"][0]["snapshot_id"], third["file_sets"][1]["snapshot_id"],
                    by_set["system"]["snapshot_id"]}
    assert third["file_sets_retention"]["gc"] is not None
