"""The monthly-archive flow under the session prefect_test_harness, against a real PostgreSQL 18
archiving through bvh-ops: on file:// both backups of class monthly-archive, the physical full's
WAL, deep verify and drill passed, "not locked" said; on moto S3 with Object Lock the archive's
objects are locked and cannot be deleted; a corrupted archive fails the flow with a critical
finding; retention keeps the archive by its class and says why."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import psycopg
import pytest

from bvh_ops.demo.sample import LOTTERY_INVARIANTS, Workload
from tests.integration.archiving import start_lottery_source
from tests.integration.cli import run_cli
from tests.waiting import more_writes

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def source(tmp_path_factory, keypair):
    arch = start_lottery_source(tmp_path_factory.mktemp("monthly"), keypair, scale=0.1)
    work = Workload(arch.cluster.dsn("lottery"), rate=40).start()
    more_writes(work, 20)  # the newest rows are live writes (the drill's freshness check)
    assert work.stop().errors == 0
    yield arch
    arch.cluster.destroy()


def _env(source, env_settings, repository: str, **extra) -> dict[str, str]:
    return env_settings(source.cluster.dsn("lottery"), repository, **{
        "BVH_OPS_STATE_DIR": str(source.repo.parent / "state"),
        "BVH_OPS_OPS_DATABASE_URL": source.cluster.dsn("bvh_ops"), "BVH_OPS_PITR_MARGIN_SECONDS": "2",
        "BVH_OPS_INVARIANTS": json.dumps([{"name": n, "sql": q} for n, q in LOTTERY_INVARIANTS]), **extra})


def _artifact(key: str) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        found = [a for a in client.read_artifacts(limit=200) if a.key == key]
    return sorted(found, key=lambda a: a.created)[-1].data


def _finding(source, key: str):
    with psycopg.connect(source.cluster.dsn("bvh_ops")) as conn:
        return conn.execute("SELECT severity, title, cleared_at FROM ops.findings WHERE source = 'archive' "
                            "AND key = %s", (key,)).fetchone()


def test_monthly_archive_on_file_repo_takes_verifies_drills_and_says_not_locked(source, env_settings):
    from bvh_ops.config import load_settings
    from bvh_ops.repository.open import open_repository
    from flows.monthly_archive import monthly_archive

    env = _env(source, env_settings, source.url)
    report = monthly_archive(physical="on")
    assert report["passed"]
    kinds = {b["kind"]: b for b in report["backups"]}
    assert set(kinds) == {"logical", "full"} and all(b["verify"] == "passed" for b in kinds.values())
    # Both are of the archive class in their signed manifests, and the catalog shows it.
    repo, _ = open_repository(load_settings())
    classes = {r.backup_id: r.klass for r in repo.list_backups()}
    assert {classes[b["backup_id"]] for b in report["backups"]} == {"monthly-archive"}
    listed = json.loads(run_cli("backups", "list", "--json", env=env).stdout)
    assert {r["class"] for r in listed if r["backup_id"] in classes} == {"monthly-archive"}
    # The physical full's WAL (start..stop segment) is in the archive, continuous.
    assert report["wal"]["segments"] >= 1 and report["wal"]["first"] <= report["wal"]["last"]
    assert (source.repo / "wal" / report["wal"]["first"][:8] / report["wal"]["first"]).exists()
    # The drill ran on the logical archive and passed, with RTO and RPO measured.
    assert report["drill"]["passed"] and report["drill"]["rto_seconds"] > 0
    assert report["drill"]["rpo_seconds"] is not None
    # file:// has no object lock: said, never claimed.
    assert not report["lock"]["locked"] and "not locked: store has no object lock" in report["lock"]["detail"]
    md = _artifact("monthly-archive")
    assert "archived, verified and drilled" in md and "not locked: store has no object lock" in md
    assert kinds["logical"]["backup_id"] in md and "RTO" in md and "not configured (no replica_repository)" in md
    finding = _finding(source, f"monthly:{report['month']}")
    assert finding is None or finding[2] is not None  # never an active finding after a passed archive
    # Retention keeps both by their class, and --explain says so (with every other reason).
    for b in report["backups"]:
        proc = run_cli("retention", "--explain", b["backup_id"], env=env)
        assert proc.returncode == 0, proc.stderr
        line = proc.stdout.strip()
        assert line.startswith(f"{b['backup_id']} (monthly-archive) is KEPT: ") and "monthly archive until" in line
        assert "daily " in line and "weekly " in line
    plan = json.loads(run_cli("retention", "--json", env=env).stdout)
    assert {d["backup_id"]: d["action"] for d in plan["decisions"]}[kinds["full"]["backup_id"]] == "KEEP"
    assert plan["dry_run"] is True


def test_a_corrupted_archive_fails_the_flow_and_raises_a_critical_finding(source, env_settings, monkeypatch):
    import tasks.archive_tasks as at
    from flows.monthly_archive import ArchiveFailed, monthly_archive

    _env(source, env_settings, source.url)
    real = at.verify_backup

    def tamper_then_verify(repo, backup_id, **kw):
        dump = Path(source.repo) / "backups" / backup_id / "dump.pgcustom"
        if dump.exists():
            data = bytearray(dump.read_bytes())
            data[len(data) // 2] ^= 0xFF
            dump.write_bytes(bytes(data))
        return real(repo, backup_id, **kw)

    monkeypatch.setattr(at, "verify_backup", tamper_then_verify)
    with pytest.raises(ArchiveFailed, match="deep verify of .* failed") as info:
        monthly_archive(physical="off")
    report = info.value.report
    assert not report["passed"] and "drill" not in report and not report["lock"].get("locked")
    assert report["backups"][0]["verify"] == "FAILED"
    severity, title, cleared = _finding(source, f"monthly:{report['month']}")
    assert severity == "critical" and "data corruption detected" in title and cleared is None
    assert "FAILED" in _artifact("monthly-archive")


def test_a_failed_drill_fails_the_archive_and_nothing_is_locked(source, env_settings):
    """Verify passes, the drill finds a broken invariant in the restored copy: the run fails with
    the drill's report in the archive's, nothing locked, the critical finding raised."""
    from flows.monthly_archive import ArchiveFailed, monthly_archive

    _env(source, env_settings, source.url,
         BVH_OPS_INVARIANTS=json.dumps([{"name": "no_users", "sql": "SELECT id FROM users"}]))
    with pytest.raises(ArchiveFailed, match="invariant:no_users failed") as info:
        monthly_archive(physical="off")
    report = info.value.report
    assert report["backups"][0]["verify"] == "passed" and report["drill"]["passed"] is False
    assert {c["name"]: c["status"] for c in report["drill"]["checks"]}["invariant:no_users"] == "failed"
    assert "retain_until" not in report["backups"][0] and not report["lock"].get("locked")
    severity, title, cleared = _finding(source, f"monthly:{report['month']}")
    assert severity == "critical" and cleared is None
    md = _artifact("monthly-archive")
    assert "**FAILED**" in md and "invariant:no_users" in md


def test_monthly_archive_on_s3_with_object_lock_cannot_be_deleted_early(source, env_settings, s3_server,
                                                                          s3_lock_bucket):
    from datetime import UTC, datetime

    from botocore.exceptions import ClientError

    from bvh_ops.config import load_settings
    from bvh_ops.errors import ObjectLocked
    from bvh_ops.repository.gfs import add_months
    from bvh_ops.repository.open import open_repository
    from flows.monthly_archive import monthly_archive

    _env(source, env_settings, f"s3://{s3_lock_bucket}/repo", BVH_OPS_S3_ENDPOINT_URL=s3_server,
         BVH_OPS_ARCHIVE_LOCK_MODE="compliance")
    before = datetime.now(UTC)
    report = monthly_archive(physical="off")  # the server archives WAL to file://: the dump only here
    assert report["passed"] and report["lock"]["locked"] and report["lock"]["mode"] == "COMPLIANCE"
    until = datetime.fromisoformat(report["lock"]["retain_until"])
    assert add_months(before, 84) <= until <= add_months(datetime.now(UTC), 84)
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    bid = report["backups"][0]["backup_id"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_lock_bucket, Prefix=f"repo/backups/{bid}/")["Contents"]]
    assert {k.rsplit("/", 1)[1] for k in keys} >= {"manifest.json", "manifest.json.copy", "dump.pgcustom"}
    for key in keys:
        head = s3.head_object(Bucket=s3_lock_bucket, Key=key)
        assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"] == until
        # Deleting the locked version is refused by the store, governance bypass or not.
        with pytest.raises(ClientError, match="AccessDenied"):
            s3.delete_object(Bucket=s3_lock_bucket, Key=key, VersionId=head["VersionId"], BypassGovernanceRetention=True)
    # bvh-ops itself refuses (a plain DELETE would only add a delete marker that hides the backup).
    repo, _ = open_repository(load_settings())
    with pytest.raises(ObjectLocked, match="locked .S3 Object Lock. until"):
        repo.delete_backup(bid)
    assert any(r.backup_id == bid and r.status == "complete" for r in repo.list_backups())
    assert "COMPLIANCE" in _artifact("monthly-archive")


def test_the_archive_is_replicated_checked_and_locked_on_the_replica(source, env_settings, s3_server_b, tmp_path,
                                                                     monkeypatch):
    """file:// primary, S3 replica with Object Lock in the other "region": the archive's
    backups are copied, committed there and locked there too; an unreachable replica leaves the
    archive standing on the primary and says NOT REPLICATED."""
    from datetime import UTC, datetime

    from bvh_ops.repository.gfs import add_months
    from flows.monthly_archive import monthly_archive

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    bucket = "bvh-archive-replica"
    s3 = boto3.client("s3", endpoint_url=s3_server_b, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    (tmp_path / "primary").mkdir()
    _env(source, env_settings, f"file://{tmp_path / 'primary'}", BVH_OPS_REPLICA_REPOSITORY=f"s3://{bucket}/r",
         BVH_OPS_REPLICA_S3_ENDPOINT_URL=s3_server_b, BVH_OPS_ARCHIVE_LOCK_MODE="governance")
    before = datetime.now(UTC)
    report = monthly_archive(physical="off")
    assert report["passed"] and "not locked" in report["lock"]["detail"]       # file:// primary: no lock
    assert report["replication"].startswith(f"replicated to s3://{bucket}/r") and "locked (GOVERNANCE)" in \
        report["replication"], report["replication"]
    bid = report["backups"][0]["backup_id"]
    for name in ("manifest.json", "manifest.json.copy", "dump.pgcustom"):
        head = s3.head_object(Bucket=bucket, Key=f"r/backups/{bid}/{name}")
        assert head["ObjectLockMode"] == "GOVERNANCE"
        assert head["ObjectLockRetainUntilDate"] >= add_months(before, 84)
    assert "replicated to" in _artifact("monthly-archive")

    # The replica's region is down: the archive stands, the artifact says it is not replicated.
    _env(source, env_settings, f"file://{tmp_path / 'primary'}", BVH_OPS_REPLICA_REPOSITORY=f"s3://{bucket}/r",
         BVH_OPS_REPLICA_S3_ENDPOINT_URL="http://127.0.0.1:9")
    report = monthly_archive(physical="off")
    assert report["passed"] and report["replication"].startswith("NOT REPLICATED:")
    assert "NOT REPLICATED" in _artifact("monthly-archive")
