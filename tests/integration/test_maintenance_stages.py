"""The weekly stages after the database work, on real PostgreSQL and a real repository: backup
verification (shallow --all, deep of the newest of each family) into the report, a corrupted
backup a failed action and the critical finding 'data corruption detected' while the rest of
the plan goes on; disk space: mounts judged, an orphaned drill directory removed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from bvh_ops.logical.backup import run_logical_backup
from bvh_ops.maintenance.run import run_maintenance
from tests.unit.test_maintenance_disk import age, dead_owner_labels

INSIDE = datetime(2030, 3, 3, 3, 0, tzinfo=UTC)
OUTSIDE = datetime(2030, 3, 3, 12, 0, tzinfo=UTC)


@pytest.fixture
def world(sample_db, fresh_db, make_settings, repo_dir, tmp_path):
    ops = fresh_db("_ops")

    def settings(**extra):
        return make_settings(sample_db, f"file://{repo_dir}", ops_database_url=ops, disk_paths=[tmp_path],
                             **extra)

    manifest = run_logical_backup(settings()).manifest
    return settings, ops, manifest, Path(repo_dir) / "backups" / manifest.backup_id


def verify_actions(report):
    return {a["object"]: a for a in report["actions"] if a["action"] == "verify"}


def test_weekly_verifies_backups_and_reports_corruption(world):
    settings, ops, m, bdir = world
    report = run_maintenance(settings(), "weekly", now=INSIDE)
    got = verify_actions(report)
    assert got["all backups (shallow, 1)"]["status"] == "done"
    deep = got[f"{m.backup_id} (deep, newest logical)"]
    assert deep["status"] == "done" and deep["after"]["failed"] == 0 and deep["after"]["objects"] >= 3
    assert got["newest physical backup (deep)"]["status"] == "skipped"
    assert got["WAL archive (shallow)"]["status"] == "skipped"
    assert report["status"] == "done"

    dump = bdir / "dump.pgcustom"
    data = bytearray(dump.read_bytes())
    data[100] ^= 1
    dump.write_bytes(bytes(data))
    with psycopg.connect(settings().database_url.get_secret_value(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS maint_stage_probe (id int)")
    report = run_maintenance(settings(), "weekly", now=INSIDE)
    got = verify_actions(report)
    assert report["status"] == "failed"
    assert got["all backups (shallow, 1)"]["status"] == "failed"
    assert "dump.pgcustom: CHECKSUM_MISMATCH" in got["all backups (shallow, 1)"]["detail"]
    assert got[f"{m.backup_id} (deep, newest logical)"]["status"] == "failed"
    assert any(a["action"] == "cleanup" or a["object"] == "disk" for a in report["actions"]) or "disk" in report
    assert report["disk"]["mounts"][0]["total_bytes"] > 0          # the next stage still ran
    with psycopg.connect(ops) as conn:
        rows = conn.execute("SELECT severity, title FROM ops.findings WHERE source = 'verify' "
                            "AND cleared_at IS NULL").fetchall()
    assert rows == [("critical", f"data corruption detected: backup {m.backup_id} failed verify")]


def test_outside_the_window_nothing_is_verified_or_removed(world, tmp_path, monkeypatch):
    import tempfile

    settings, _, _, _ = world
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))   # not the shared /tmp
    s = settings()
    orphan = Path(s.state_dir) / "drills" / "drill-20300101T000000Z-eeeeee"
    orphan.mkdir(parents=True)
    (orphan / "owner.json").write_text(json.dumps(dead_owner_labels()))
    age(orphan, 48)
    report = run_maintenance(s, "weekly", now=OUTSIDE)
    assert verify_actions(report)["backups"]["status"] == "skipped"
    assert report["status"] == "skipped"  # the verify not run is not "done" (it said done, exit 0)
    cleanup = [a for a in report["actions"] if a["action"] == "cleanup"]
    assert [(a["object"], a["status"]) for a in cleanup] == [(str(orphan), "skipped")]
    assert "outside the maintenance window" in cleanup[0]["detail"] and orphan.exists()

    report = run_maintenance(s, "weekly", now=INSIDE)
    cleanup = [a for a in report["actions"] if a["action"] == "cleanup"]
    assert [(a["object"], a["status"]) for a in cleanup] == [(str(orphan), "done")]
    assert not orphan.exists() and report["disk"]["freed_bytes"] >= len(orphan.name)
    # the mounts are judged with the monitor's thresholds
    full = run_maintenance(settings(disk_warning_percent=0.01, disk_critical_percent=0.02), "weekly", now=OUTSIDE,
                           record_run=False)
    assert {(f["kind"], f["object"], f["severity"]) for f in full["findings"]} >= {
        ("disk_space", str(tmp_path), "critical")}


def test_outside_the_window_with_nothing_to_do_in_the_database_is_not_done(world, fresh_db):
    """Nothing planned in the database, and the backup verify skipped for the window: the run
    said "done", exit 0 — it did not do what the weekly run is for."""
    settings, _, _, _ = world
    report = run_maintenance(settings(database_url=fresh_db("_quiet")), "weekly", now=OUTSIDE)
    assert report["plan"]["actions"] == [] and verify_actions(report)
    assert all(a["status"] == "skipped" for a in verify_actions(report).values())
    assert report["status"] == "skipped"
