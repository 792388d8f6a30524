"""Log retention on real components: day partitions of ops.log_records archived into a file://
and a moto-S3 repository (Object Lock where the bucket has it), verified, then dropped; a
failed archive keeps the hot data; late records are archived again, never dropped unseen;
archived days stay searchable; archives past retention deleted, audit never, holds respected."""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, timedelta

import boto3
import psycopg
import pytest

from bvh_ops.logs.archive import apply, archive_key, iter_archived, state
from bvh_ops.logs.retention import plan
from bvh_ops.opsdb.migrations import migrate

NOW = datetime.now(UTC).replace(microsecond=0)
OLD = (NOW - timedelta(days=40)).date()        # past the 30 hot days


def add(conn, category: str, day: date, n: int, *, event: str = "auth.login_failed", start: int = 0) -> None:
    conn.execute("SELECT ops.ensure_log_partition(%s, %s)", (category, day))
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO ops.log_records (at, category, source, level, event, fields, file_id, file_offset) "
                        "VALUES (%s, %s, 'platform', 'warning', %s, %s, '1:2', %s)",
                        [(datetime.combine(day, datetime.min.time(), UTC) + timedelta(seconds=i), category, event,
                          json.dumps({"ip": f"10.0.0.{i % 250}", "n": i}), i) for i in range(start, start + n)])


@pytest.fixture
def ops(fresh_db):
    dsn = fresh_db("_ops")
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
        yield conn


def partitions(conn):
    return sorted(state(conn, NOW)[0])


def test_archive_verify_drop_then_search_the_archive(ops, make_settings, repo_dir):
    settings = make_settings("postgresql://u@127.0.0.1:1/x", f"file://{repo_dir}")
    add(ops, "security", OLD, 1200)
    add(ops, "security", NOW.date(), 5)                 # hot: stays
    add(ops, "debug", OLD, 7)                           # past debug's 30 days, never archived
    outcome = apply(ops, settings, plan(*state(ops, NOW), NOW), NOW)
    assert [(o["action"], o["category"], o["done"]) for o in outcome] == [
        ("drop_unarchived", "debug", True), ("archive", "security", True), ("drop_partition", "security", True)]
    assert outcome[1]["records"] == 1200
    assert partitions(ops) == [("security", NOW.date())]
    key = archive_key("security", OLD)
    index = json.loads((repo_dir / (key + ".json")).read_text())
    assert index["records"] == 1200 and (repo_dir / key).stat().st_size == index["stored_size"]
    assert b"10.0.0." not in (repo_dir / key).read_bytes()          # encrypted at rest
    found = list(iter_archived(settings, ops, datetime.combine(OLD, datetime.min.time(), UTC) + timedelta(seconds=10),
                               datetime.combine(OLD, datetime.min.time(), UTC) + timedelta(seconds=20), "security"))
    assert [r["fields"]["n"] for r in found] == list(range(10, 20))
    assert apply(ops, settings, plan(*state(ops, NOW), NOW), NOW) == []   # nothing left to do
    audited = ops.execute("SELECT action, subject FROM ops.audit_chain ORDER BY seq").fetchall()
    assert audited == [("logs.drop_unarchived", f"debug/{OLD}"), ("logs.archive", f"security/{OLD}"),
                       ("logs.drop_partition", f"security/{OLD}")]


def test_a_failed_archive_keeps_the_hot_data(ops, make_settings, tmp_path):
    locked = tmp_path / "readonly-repo"
    locked.mkdir()
    os.chmod(locked, 0o500)
    settings = make_settings("postgresql://u@127.0.0.1:1/x", f"file://{locked}")
    add(ops, "application", OLD, 50)
    try:
        if os.geteuid() == 0:      # root writes anyway: point the repository at a file instead
            bad = tmp_path / "not-a-dir"
            bad.write_text("x")
            settings = make_settings("postgresql://u@127.0.0.1:1/x", f"file://{bad}")
        outcome = apply(ops, settings, plan(*state(ops, NOW), NOW), NOW)
    finally:
        os.chmod(locked, 0o700)
    assert [(o["action"], o["done"]) for o in outcome] == [("archive", False), ("drop_partition", False)]
    assert outcome[1]["skipped"] == "no verified archive" and outcome[0]["error"]
    assert ops.execute("SELECT count(*) FROM ops.log_records").fetchone()[0] == 50
    assert ops.execute("SELECT count(*) FROM ops.log_archives").fetchone()[0] == 0


def test_late_records_for_an_archived_day_are_archived_again(ops, make_settings, repo_dir):
    settings = make_settings("postgresql://u@127.0.0.1:1/x", f"file://{repo_dir}")
    add(ops, "security", OLD, 10)
    first = plan(*state(ops, NOW), NOW)
    apply(ops, settings, first[:1], NOW)                 # archived; crashed before the drop
    add(ops, "security", OLD, 3, start=10)               # late records for that day
    outcome = apply(ops, settings, plan(*state(ops, NOW), NOW), NOW)
    assert [(o["action"], o.get("rearchived")) for o in outcome] == [("drop_partition", 13)]
    index = json.loads((repo_dir / (archive_key("security", OLD) + ".json")).read_text())
    assert index["records"] == 13 and partitions(ops) == []


def test_retention_deletes_archives_but_never_audit_nor_under_hold(ops, make_settings, repo_dir):
    settings = make_settings("postgresql://u@127.0.0.1:1/x", f"file://{repo_dir}")
    ancient = (NOW - timedelta(days=120)).date()
    for category in ("performance", "audit", "application"):
        add(ops, category, ancient, 4)
    ops.execute("INSERT INTO ops.log_holds (category, from_day, to_day, reason, created_by, created_at) "
                "VALUES ('application', %s, %s, 'case 17', 'test', now())", (ancient, ancient))
    apply(ops, settings, plan(*state(ops, NOW - timedelta(days=60)), NOW - timedelta(days=60)), NOW)
    assert partitions(ops) == []                         # all three archived at 60 days, then dropped
    later = NOW + timedelta(days=800)
    outcome = apply(ops, settings, plan(*state(ops, later), later), later)
    assert [(o["action"], o["category"]) for o in outcome] == [("delete_archive", "performance")]
    assert not (repo_dir / archive_key("performance", ancient)).exists()
    assert (repo_dir / archive_key("audit", ancient)).exists()
    assert (repo_dir / archive_key("application", ancient)).exists()    # past 2 years, but held


def test_s3_archive_gets_an_object_lock_matching_its_retention(ops, make_settings, s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    bucket = f"bvh-lock-{os.getpid()}-{NOW.timestamp():.0f}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    settings = make_settings("postgresql://u@127.0.0.1:1/x", f"s3://{bucket}/repo", s3_endpoint_url=s3_server)
    add(ops, "performance", OLD, 20)
    outcome = apply(ops, settings, plan(*state(ops, NOW), NOW), NOW)
    assert [o["done"] for o in outcome] == [True, True]
    assert outcome[0]["locked_until"] == (OLD + timedelta(days=91)).isoformat()
    head = s3.head_object(Bucket=bucket, Key="repo/" + archive_key("performance", OLD))
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"].date() == OLD + timedelta(days=91)
