"""GFS retention carried out on a real repository: on moto S3 with Object Lock a locked backup
due for deletion is HELD (reported, left in place, the run goes on) while the others are
deleted; `bvh-ops retention` shows it, `--explain` says why; CLI errors are one line."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import boto3
import psycopg
import pytest

from bvh_ops.expire import apply_plan
from bvh_ops.logical.backup import run_logical_backup
from bvh_ops.repository.gfs import Policy
from bvh_ops.repository.open import open_repository
from bvh_ops.repository.repo import backup_prefix
from tests.integration.cli import assert_one_line_error, run_cli

ONLY_REDUNDANCY = Policy(keep_daily=0, keep_weekly=0, keep_monthly=0, keep_yearly=0, min_redundancy=1)


@pytest.fixture
def tiny(fresh_db):
    dsn = fresh_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 500) g")
    return dsn


def _cli_env(settings, **extra) -> dict[str, str]:
    env = {"BVH_OPS_DATABASE_URL": settings.database_url.get_secret_value(), "BVH_OPS_REPOSITORY": settings.repository,
           "BVH_OPS_RECIPIENTS": str(settings.recipients[0]), "BVH_OPS_IDENTITY": str(settings.identity),
           "BVH_OPS_STATE_DIR": str(settings.state_dir)}
    if settings.s3_endpoint_url:
        env["BVH_OPS_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    env.update(extra)
    return env


def test_a_locked_backup_due_for_deletion_is_held_and_the_run_goes_on(tiny, make_settings, s3_server, s3_lock_bucket):
    settings = make_settings(tiny, f"s3://{s3_lock_bucket}/repo", s3_endpoint_url=s3_server)
    ids = [run_logical_backup(settings).manifest.backup_id for _ in range(3)]
    repo, _ = open_repository(settings)
    until = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    for o in repo.store.list(backup_prefix(ids[0])):
        assert repo.store.retain(o.key, until, "GOVERNANCE")
    env = _cli_env(settings, BVH_OPS_KEEP_DAILY="0", BVH_OPS_KEEP_WEEKLY="0", BVH_OPS_KEEP_MONTHLY="0",
                   BVH_OPS_KEEP_YEARLY="0", BVH_OPS_MIN_REDUNDANCY="1")
    # The plan, shown: nothing deleted by a dry run.
    shown = run_cli("retention", env=env)
    assert shown.returncode == 0, shown.stderr
    assert f"HELD      {ids[0]}" in shown.stdout and f"DELETE    {ids[1]}" in shown.stdout
    assert "1 kept, 1 to delete (dry run: nothing deleted), 1 held, 0 untrusted" in shown.stdout
    explain = run_cli("retention", "--explain", ids[0], env=env)
    assert explain.stdout.strip() == (f"{ids[0]} is due for deletion but HELD: in no kept bucket (daily 0, weekly 0, "
                                      "monthly 0, yearly 0, minimum redundancy 1, monthly archives 84 months); "
                                      f"HELD until {until:%Y-%m-%d %H:%M} UTC (object lock)")
    assert "KEPT: minimum redundancy (1 of the 1 newest logical)" in run_cli(
        "retention", "--explain", ids[2], env=env).stdout
    # Carried out: the unlocked one goes, the locked one stays (HELD), no error.
    doc = apply_plan(repo, now=datetime.now(UTC), policy=ONLY_REDUNDANCY)
    actions = {d["backup_id"]: d for d in doc["decisions"]}
    assert {b: d["action"] for b, d in actions.items()} == {ids[0]: "HELD", ids[1]: "DELETE", ids[2]: "KEEP"}
    assert datetime.fromisoformat(actions[ids[0]]["held_until"]) == until
    assert {r.backup_id for r in repo.list_backups()} == {ids[0], ids[2]}
    # The held backup is whole: its manifest was never asked to go (no delete marker hides it).
    assert repo.trusted_manifest(ids[0]).backup_id == ids[0]
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    markers = s3.list_object_versions(Bucket=s3_lock_bucket, Prefix=f"repo/{backup_prefix(ids[0])}").get("DeleteMarkers")
    # (the in-progress marker removed at commit is the only delete marker there)
    assert [m["Key"].rsplit("/", 1)[1] for m in markers or []] == ["inprogress.json"]


def test_retention_json_and_cli_errors_are_one_line(tiny, make_settings, repo_dir):
    settings = make_settings(tiny, f"file://{repo_dir}")
    bid = run_logical_backup(settings).manifest.backup_id
    env = _cli_env(settings)
    doc = json.loads(run_cli("retention", "--json", env=env).stdout)
    assert doc["dry_run"] and doc["decisions"][0]["backup_id"] == bid and doc["decisions"][0]["action"] == "KEEP"
    assert doc["policy"].startswith("daily 30, weekly 8, monthly 12, yearly 7, minimum redundancy 2")
    assert_one_line_error(run_cli("retention", "--explain", "nope", env=env),
                          "backup nope is not a complete backup", "bvh-ops backups list")
    assert_one_line_error(run_cli("retention", env={**env, "BVH_OPS_KEEP_DAILY": "7", "BVH_OPS_RETENTION_DAYS": "9"}),
                          "retention_days (9) is the old name of keep_daily (7): set only keep_daily")
    assert_one_line_error(run_cli("archive", "monthly", "--physical", "maybe", env=env),
                          "--physical 'maybe': use auto, on or off")
    assert_one_line_error(run_cli("archive", "monthly", env={k: v for k, v in env.items()
                                                             if k != "BVH_OPS_DATABASE_URL"}), "database")


def test_file_set_snapshots_are_retained_by_gfs_per_set(make_settings, repo_dir, tmp_path):
    from bvh_ops.files.snapshot import take_snapshot

    sets = []
    for name in ("app", "etc"):
        root = tmp_path / name
        root.mkdir()
        (root / "x.conf").write_text(name)
        sets.append({"name": name, "class": "application", "paths": [str(root)]})
    settings = make_settings("postgresql://u@127.0.0.1:5432/db", f"file://{repo_dir}", file_sets=sets)
    now = datetime.now(UTC).replace(hour=12)
    ages = {"old": timedelta(days=10), "day3a": timedelta(days=3, hours=2), "day3b": timedelta(days=3),
            "day1": timedelta(days=1)}
    app = {k: take_snapshot(settings, "app", now=now - age).snapshot_id for k, age in ages.items()}
    etc = take_snapshot(settings, "etc", now=now - timedelta(days=30)).snapshot_id
    env = _cli_env(settings, BVH_OPS_KEEP_DAILY="2", BVH_OPS_KEEP_WEEKLY="0", BVH_OPS_KEEP_MONTHLY="0",
                   BVH_OPS_KEEP_YEARLY="0", BVH_OPS_MIN_REDUNDANCY="1")
    env["BVH_OPS_FILE_SETS"] = json.dumps(sets)
    dry = json.loads(run_cli("files", "forget", "--gfs", "--json", env=env).stdout)
    verdicts = {d["id"]: d["verdict"] for d in dry["decisions"]}
    # Per set: app keeps its two newest days (the newest of day 3 represents it); etc's only
    # snapshot is its own set's newest, whatever its age.
    assert verdicts == {app["day1"]: "KEEP", app["day3b"]: "KEEP", app["day3a"]: "DELETE", app["old"]: "DELETE",
                        etc: "KEEP"}
    assert dry["dry_run"] is True
    applied = run_cli("files", "forget", "--gfs", "--apply", env=env)
    assert applied.returncode == 0, applied.stderr
    assert "3 kept, 2 forgotten; run `bvh-ops files gc`" in applied.stdout
    listed = {s["snapshot_id"] for s in json.loads(run_cli("files", "list", "--json", env=env).stdout)}
    assert listed == {app["day1"], app["day3b"], etc}
    # The old one-snapshot form still works, and a bad call is one line.
    assert run_cli("files", "forget", etc, env=env).returncode == 0
    assert_one_line_error(run_cli("files", "forget", env=env), "name the SNAPSHOT to forget, or use --gfs")


def test_the_archive_lock_covers_the_wal_a_physical_full_needs_and_no_more(make_settings, s3_server, s3_lock_bucket):
    """On S3 with Object Lock: the WAL from the physical full's start to its stop segment (and
    their index entries, and the .backup file) is locked with the backups; WAL outside is not."""
    from bvh_ops.archive.monthly import lock_archive
    from bvh_ops.pg.lsn import segment_name
    from bvh_ops.repository.gfs import add_months
    from bvh_ops.repository.manifest import Manifest
    from bvh_ops.storage.base import retained_until
    from bvh_ops.wal.store import wal_key

    settings = make_settings("postgresql://u@127.0.0.1:5432/db", f"s3://{s3_lock_bucket}/repo",
                             s3_endpoint_url=s3_server)
    repo, _ = open_repository(settings)
    names = [segment_name(1, n, 16 << 20) for n in range(1, 7)] + [segment_name(1, 3, 16 << 20) + ".00000028.backup"]
    for name in names:
        repo.store.put_bytes(wal_key(name), b"segment")
        repo.store.put_bytes(wal_key(name) + ".json", b"{}")
    full = Manifest(backup_id="20261201T000000Z-full-abcdef", kind="full", tool_version="t", started_at="",
                    finished_at="", database="(cluster)", server_version="18", server_version_num=180000,
                    system_identifier="1", snapshot_id="", dump_format="tar", compression="zstd-3", kem="x",
                    key_ids=(), host="h", extra={"start_lsn": "0/3000028", "stop_lsn": "0/4000100", "timeline": 1})
    taken = datetime(2026, 12, 1, tzinfo=UTC)
    report = lock_archive(repo, [full], taken=taken, months=84, mode="governance")
    assert report.locked and report.mode == "GOVERNANCE" and report.retain_until == add_months(taken, 84)
    assert report.wal == sorted([names[2], names[3], names[6]])
    locked = {n for n in names if retained_until(repo.store, wal_key(n)) == report.retain_until
              and retained_until(repo.store, wal_key(n) + ".json") == report.retain_until}
    assert locked == {names[2], names[3], names[6]}
    assert all(retained_until(repo.store, wal_key(n)) is None for n in set(names) - locked)
