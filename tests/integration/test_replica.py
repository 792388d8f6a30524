"""Two repositories kept in step (#17 part 1), with real components: a file:// primary or a moto
S3 server as the primary region, a second moto S3 server as the replica's region, real backups
(logical, physical chain, WAL from a real archiving PostgreSQL), restores from the replica alone
after the primary is deleted, an outage of the replica, corruption, an interrupted run and a
rewritten manifest."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import UTC, datetime, timedelta

import boto3
import psycopg
import pytest

from bvh_ops.errors import NotFound, StorageError
from bvh_ops.keys import load_identities, load_or_create_host_key
from bvh_ops.logical.backup import run_logical_backup
from bvh_ops.logical.restore import restore_logical
from bvh_ops.monitoring.backups import replica_wal_check
from bvh_ops.monitoring.results import Status
from bvh_ops.monitoring.thresholds import Limits
from bvh_ops.replica.run import replicate, status
from bvh_ops.repository.manifest import sign_manifest
from bvh_ops.repository.open import open_repository
from bvh_ops.repository.verify import Status as VStatus
from bvh_ops.repository.verify import verify_backup
from tests.integration.cli import assert_one_line_error, run_cli


def now() -> datetime:
    return datetime.now(UTC)


def _replica_settings(make_settings, dsn, primary, bucket, endpoint, **extra):
    return make_settings(dsn, primary, replica_repository=f"s3://{bucket}/dr", replica_s3_endpoint_url=endpoint,
                         replica_s3_region="eu-central-1", **extra)


def _replica_keys(endpoint: str, bucket: str) -> dict[str, int]:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="eu-central-1")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="dr/")
    return {o["Key"][3:]: o["Size"] for p in pages for o in p.get("Contents", [])}


def _verified(settings, backup_id: str) -> bool:
    repo, _ = open_repository(settings)
    results = verify_backup(repo, backup_id, identities=load_identities(settings.identity))
    return bool(results) and all(r.status is VStatus.OK for r in results)


def test_logical_backup_replicates_verified_and_restores_from_the_replica_alone(
        sample_db, fresh_db, repo_dir, s3_server_b, s3_bucket_b, make_settings, env_settings):
    settings = _replica_settings(make_settings, sample_db, f"file://{repo_dir}", s3_bucket_b, s3_server_b)
    m = run_logical_backup(settings).manifest
    report = replicate(settings, now())
    assert report.ok and report.units_copied == 1
    assert report.copied_objects == 3 and report.server_side == 0  # file:// -> S3: streamed
    assert report.lag_after.objects == 0
    keys = _replica_keys(s3_server_b, s3_bucket_b)
    assert {f"backups/{m.backup_id}/{n}" for n in ("dump.pgcustom", "manifest.json", "manifest.json.copy")} <= set(keys)
    assert not any(k.endswith("inprogress.json") for k in keys)
    again = replicate(settings, now())                      # in step: nothing to copy
    assert again.copied_objects == 0 and again.ok
    st = status(settings, now())
    assert st["reachable"] and st["in_step"] and st["lag"]["objects"] == 0

    shutil.rmtree(repo_dir)                                 # the primary region is gone
    env = env_settings(sample_db, f"file://{repo_dir}", BVH_OPS_REPLICA_REPOSITORY=f"s3://{s3_bucket_b}/dr",
                       BVH_OPS_REPLICA_S3_ENDPOINT_URL=s3_server_b, BVH_OPS_REPLICA_S3_REGION="eu-central-1")
    listed = run_cli("backups", "list", "--from", "replica", "--json", env=env)
    assert [r["backup_id"] for r in json.loads(listed.stdout)] == [m.backup_id], listed.stderr
    checked = run_cli("verify", "--from", "replica", "--no-wal", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    kept = run_cli("retention", "--from", "replica", env=env)          # a dry run: the replica's own plan
    assert kept.returncode == 0 and m.backup_id in kept.stdout and "KEEP" in kept.stdout.upper(), kept.stdout
    target = fresh_db()
    proc = run_cli("restore", "latest", "--into", target, "--from", "replica", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "tables match their fingerprint" in proc.stdout
    assert restore_logical(settings.for_replica(), m.backup_id, fresh_db()).ok


@pytest.mark.parametrize("layout", ["same endpoint (server-side copy)", "two regions (streamed)"])
def test_s3_to_s3_replication(layout, sample_db, s3_server, s3_bucket, s3_server_b, s3_bucket_b, make_settings):
    same = layout.startswith("same")
    endpoint = s3_server_b if same else s3_server
    if same:  # the primary's bucket on the replica's endpoint
        boto3.client("s3", endpoint_url=s3_server_b, region_name="us-east-1").create_bucket(Bucket=s3_bucket + "-a")
    primary = f"s3://{s3_bucket}-a/prod" if same else f"s3://{s3_bucket}/prod"
    settings = _replica_settings(make_settings, sample_db, primary, s3_bucket_b, s3_server_b,
                                 s3_endpoint_url=endpoint)
    m = run_logical_backup(settings).manifest
    report = replicate(settings, now())
    assert report.ok and report.copied_objects == 3
    assert report.server_side == (3 if same else 0)
    assert _verified(settings.for_replica(), m.backup_id)


def test_an_unreachable_replica_never_stops_the_primary_and_is_caught_up_afterwards(
        sample_db, repo_dir, s3_server_b, s3_bucket_b, make_settings, env_settings):
    from tests.conftest import free_port

    settings = _replica_settings(make_settings, sample_db, f"file://{repo_dir}", s3_bucket_b, s3_server_b)
    run_logical_backup(settings)
    assert replicate(settings, now()).ok
    down = settings.model_copy(update={"replica_s3_endpoint_url": f"http://127.0.0.1:{free_port()}"})

    second = run_logical_backup(down).manifest              # the primary's work goes on
    with pytest.raises(StorageError, match="replica"):
        replicate(down, now())
    t = now()
    early, late = status(down, t), status(down, t + timedelta(minutes=30))
    assert early["reachable"] is False and early["in_step"] is None and early["estimated"]
    assert early["lag"]["objects"] == 3                     # the backup taken during the outage
    assert late["lag"]["seconds"] >= early["lag"]["seconds"] + 1800   # lag grows with the outage
    check = replica_wal_check(down, t, Limits())
    assert check.status is Status.UNKNOWN                   # never OK when it could not be read

    env = env_settings(sample_db, f"file://{repo_dir}", BVH_OPS_REPLICA_REPOSITORY=f"s3://{s3_bucket_b}/dr",
                       BVH_OPS_REPLICA_S3_ENDPOINT_URL=down.replica_s3_endpoint_url)
    proc = run_cli("replica", "status", env=env)
    assert proc.returncode == 3 and "UNREACHABLE" in proc.stdout and "Traceback" not in proc.stderr
    assert "lag 3 object(s)" in proc.stdout

    back = replicate(settings, now())                       # the replica answers again
    assert back.ok and back.copied_objects == 3
    assert status(settings, now())["in_step"]
    assert _verified(settings.for_replica(), second.backup_id)


def test_a_corrupted_replica_object_is_found_by_verify_and_copied_again(
        sample_db, fresh_db, repo_dir, s3_server_b, s3_bucket_b, make_settings, env_settings):
    settings = _replica_settings(make_settings, sample_db, f"file://{repo_dir}", s3_bucket_b, s3_server_b)
    m = run_logical_backup(settings).manifest
    assert replicate(settings, now()).ok
    client = boto3.client("s3", endpoint_url=s3_server_b, region_name="eu-central-1")
    key = f"dr/backups/{m.backup_id}/dump.pgcustom"
    body = bytearray(client.get_object(Bucket=s3_bucket_b, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0x01                            # bit rot: same size
    client.put_object(Bucket=s3_bucket_b, Key=key, Body=bytes(body))
    assert not _verified(settings.for_replica(), m.backup_id)

    env = env_settings(sample_db, f"file://{repo_dir}", BVH_OPS_REPLICA_REPOSITORY=f"s3://{s3_bucket_b}/dr",
                       BVH_OPS_REPLICA_S3_ENDPOINT_URL=s3_server_b)
    proc = run_cli("replica", "verify", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["corrupt_recopied"] == [f"backups/{m.backup_id}/dump.pgcustom"]
    assert doc["copied"]["objects"] == 1
    fixed = client.get_object(Bucket=s3_bucket_b, Key=key)["Body"].read()
    assert hashlib.sha256(fixed).hexdigest() == m.objects[0].stored_sha256
    assert restore_logical(settings.for_replica(), m.backup_id, fresh_db()).ok


def test_a_damaged_primary_object_is_never_replicated(sample_db, repo_dir, s3_server_b, s3_bucket_b, make_settings):
    settings = _replica_settings(make_settings, sample_db, f"file://{repo_dir}", s3_bucket_b, s3_server_b)
    m = run_logical_backup(settings).manifest
    dump = repo_dir / "backups" / m.backup_id / "dump.pgcustom"
    data = bytearray(dump.read_bytes())
    data[100] ^= 0xFF
    dump.write_bytes(bytes(data))
    report = replicate(settings, now())
    assert not report.ok and report.failures[0][0] == f"backups/{m.backup_id}"
    assert "damaged on the primary" in report.failures[0][1]
    assert not any(k.startswith(f"backups/{m.backup_id}/") for k in _replica_keys(s3_server_b, s3_bucket_b))


def test_an_interrupted_replication_never_shows_a_complete_looking_backup(sample_db, repo_dir, tmp_path,
                                                                          make_settings):
    replica_dir = tmp_path / "replica"
    settings = make_settings(sample_db, f"file://{repo_dir}", replica_repository=f"file://{replica_dir}")
    m = run_logical_backup(settings).manifest
    # The replica refuses the first commit point mid-unit (a directory where manifest.json.copy goes):
    # the run stops after the dump, exactly where a killed run would have.
    obstacle = replica_dir / "backups" / m.backup_id / "manifest.json.copy"
    obstacle.mkdir(parents=True)
    with pytest.raises(StorageError):
        replicate(settings, now())
    assert (replica_dir / "backups" / m.backup_id / "dump.pgcustom").exists()
    replica = settings.for_replica()
    repo, _ = open_repository(replica)
    (rec,) = repo.list_backups()
    assert rec.status == "incomplete"                       # readers ignore it
    with pytest.raises(NotFound):
        repo.latest()
    st = status(settings, now())
    assert st["reachable"] and st["lag"]["objects"] == 2 and not st["in_step"]

    obstacle.rmdir()
    assert replicate(settings, now()).ok                    # the next run finishes the unit
    assert _verified(replica, m.backup_id)


def test_a_rewritten_manifest_is_copied_again_in_commit_order(sample_db, repo_dir, s3_server_b, s3_bucket_b,
                                                              make_settings):
    from dataclasses import replace

    settings = _replica_settings(make_settings, sample_db, f"file://{repo_dir}", s3_bucket_b, s3_server_b)
    bid = run_logical_backup(settings).manifest.backup_id
    m = open_repository(settings)[0].load_manifest(bid).manifest   # as committed (envelopes included)
    assert replicate(settings, now()).ok
    host_key = load_or_create_host_key(settings.state_dir)
    d = repo_dir / "backups" / m.backup_id

    def rewrite(host: str, bump: int) -> bytes:  # as key rotation does: .copy first, then the main one
        raw = sign_manifest(replace(m, host=host), host_key)
        for name in ("manifest.json.copy", "manifest.json"):
            (d / name).write_bytes(raw)
            later = (d / name).stat().st_mtime + bump   # written after the replica's copy was made
            os.utime(d / name, (later, later))
        return raw

    raw = rewrite("rotated-host-with-a-longer-name", 2)     # another size
    report = replicate(settings, now())
    assert report.ok and report.copied_objects == 2         # the copy and the manifest, not the dump
    client = boto3.client("s3", endpoint_url=s3_server_b, region_name="eu-central-1")
    for name in ("manifest.json.copy", "manifest.json"):
        assert client.get_object(Bucket=s3_bucket_b, Key=f"dr/backups/{m.backup_id}/{name}")["Body"].read() == raw
    same_size = rewrite("rotated-host-with-a-longer-nam3", 4)   # same size, newer content
    assert replicate(settings, now()).copied_objects == 2
    got = client.get_object(Bucket=s3_bucket_b, Key=f"dr/backups/{m.backup_id}/manifest.json")["Body"].read()
    assert got == same_size
    assert _verified(settings.for_replica(), m.backup_id)


def test_replica_errors_are_one_line_with_the_fix(sample_db, repo_dir, s3_server_b, s3_bucket_b, env_settings):
    env = env_settings(sample_db, f"file://{repo_dir}")
    assert_one_line_error(run_cli("replicate", env=env), "replica_repository is not set",
                          "BVH_OPS_REPLICA_REPOSITORY")
    assert_one_line_error(run_cli("restore", "latest", "--into", sample_db, "--from", "replica", env=env),
                          "replica_repository is not set")
    env = env_settings(sample_db, f"file://{repo_dir}", BVH_OPS_REPLICA_REPOSITORY="s3://no-such-replica-bucket/dr",
                       BVH_OPS_REPLICA_S3_ENDPOINT_URL=s3_server_b)
    assert_one_line_error(run_cli("replicate", env=env), "no-such-replica-bucket", "does not exist",
                          "BVH_OPS_REPLICA_REPOSITORY")
    assert_one_line_error(run_cli("restore", "latest", "--into", sample_db, "--from", "elsewhere", env=env),
                          "--from 'elsewhere'")
    env["BVH_OPS_REPLICA_AWS_PROFILE"] = "no-such-profile"
    assert_one_line_error(run_cli("replicate", env=env), "no-such-profile", "replica_aws_profile")
    from tests.conftest import free_port

    env.pop("BVH_OPS_REPLICA_AWS_PROFILE")
    env["BVH_OPS_REPLICA_S3_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    assert_one_line_error(run_cli("replicate", env=env), "unreachable", "replica_s3_endpoint_url")


def test_physical_chain_and_wal_replicate_and_recover_from_the_replica_alone(
        keypair, tmp_path_factory, s3_server_b, s3_bucket_b):
    from bvh_ops.config import Settings
    from bvh_ops.demo.sample import load_sample
    from bvh_ops.pg.catalog import create_database
    from bvh_ops.pg.tools import embedded_bin_dir
    from bvh_ops.physical.backup import run_physical_backup
    from bvh_ops.physical.restore import restore_physical, stop_server
    from tests.integration.archiving import start_archiving

    arch = start_archiving(tmp_path_factory.mktemp("replica-phys"), keypair)
    password = arch.cluster.password
    try:
        dsn = arch.cluster.dsn("lottery")
        create_database(arch.cluster.dsn(), "lottery")
        load_sample(dsn, scale=0.1)
        settings = Settings(database_url=dsn, repository=arch.url, recipients=[keypair[0]], identity=keypair[1],
                            state_dir=tmp_path_factory.mktemp("replica-phys-state"), segment_size_kib=256,
                            replica_repository=f"s3://{s3_bucket_b}/dr", replica_s3_endpoint_url=s3_server_b,
                            replica_s3_region="eu-central-1")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE marks (n int)")
            full = run_physical_backup(settings, "full").manifest
            conn.execute("INSERT INTO marks SELECT generate_series(1, 100)")
            incr = run_physical_backup(settings, "incremental").manifest
            assert incr.parent_id == full.backup_id
            conn.execute("INSERT INTO marks SELECT generate_series(101, 250)")
            arch.switch_and_wait()
        limits = Limits()
        lagging = replica_wal_check(settings, now() + timedelta(seconds=limits.rpo_objective_seconds + 60), limits)
        assert lagging.status is Status.CRITICAL and lagging.value > limits.rpo_objective_seconds
        report = replicate(settings, now())
        assert report.ok and report.lag_after.objects == 0 and report.lag_before.wal_objects > 0
        assert replica_wal_check(settings, now(), limits).status is Status.OK
        arch.cluster.stop()
    finally:
        arch.cluster.destroy()
    shutil.rmtree(arch.repo)                                # the primary region is gone
    dest = tmp_path_factory.mktemp("replica-phys-restore") / "data"
    rep = restore_physical(settings.for_replica(), "latest", dest, start=True)
    try:
        assert rep.chain == [full.backup_id, incr.backup_id]
        url = f"postgresql://postgres:{password}@127.0.0.1:{rep.port}/lottery"
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM marks").fetchone()[0] == 250
    finally:
        stop_server(dest, embedded_bin_dir())



def test_follow_passes_copy_new_wal_between_scheduled_runs(tmp_path, make_settings, sample_db):
    from bvh_ops.replica.run import follow_wal

    primary, replica = tmp_path / "p", tmp_path / "r"
    settings = make_settings(sample_db, f"file://{primary}", replica_repository=f"file://{replica}")
    ticks = {"t": 0.0, "seg": 3}
    base = now()

    def archive_one(seconds: float) -> None:  # the injected sleep: PostgreSQL archives a segment meanwhile
        ticks["t"] += seconds
        name = f"0000000100000000{ticks['seg']:08X}"
        blob = os.urandom(1000)
        d = primary / "wal" / "00000001"
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(blob)
        (d / f"{name}.json").write_text(json.dumps({"name": name, "stored_sha256": hashlib.sha256(blob).hexdigest()}))
        ticks["seg"] += 1

    done = follow_wal(settings, 60, 15, clock=lambda: ticks["t"], sleep=archive_one,
                      wall=lambda: base + timedelta(seconds=ticks["t"]))
    assert done["passes"] == 4 and done["objects"] == 8 and not done["failures"]
    assert sorted(p.name for p in (replica / "wal" / "00000001").iterdir()) == sorted(
        p.name for p in (primary / "wal" / "00000001").iterdir())


def _synthetic_backup(root, i: int, size: int) -> tuple[str, str]:
    """A committed backup unit as replication sees it: a data object and a manifest (and its
    copy) recording its stored sha256; written in chunks."""
    bid = f"20261128T0{i}0000Z-logical-00000{i}"
    d = root / "backups" / bid
    d.mkdir(parents=True)
    h = hashlib.sha256()
    with open(d / "dump.pgcustom", "wb") as fh:
        for _ in range(size >> 20):
            chunk = os.urandom(1 << 20)
            h.update(chunk)
            fh.write(chunk)
    raw = json.dumps({"manifest": {"backup_id": bid, "objects": [
        {"name": "dump.pgcustom", "stored_sha256": h.hexdigest(), "stored_size": size}]}}).encode()
    (d / "manifest.json.copy").write_bytes(raw)
    (d / "manifest.json").write_bytes(raw)
    return bid, h.hexdigest()


def test_a_killed_replication_never_shows_a_complete_looking_backup(tmp_path, make_settings, sample_db):
    import signal
    import subprocess
    import sys
    import time

    primary, replica = tmp_path / "p", tmp_path / "r"
    units = dict(_synthetic_backup(primary, i, 64 << 20) for i in range(3))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BVH_OPS_")}
    env.update(BVH_OPS_REPOSITORY=f"file://{primary}", BVH_OPS_REPLICA_REPOSITORY=f"file://{replica}",
               BVH_OPS_STATE_DIR=str(tmp_path / "state"))
    proc = subprocess.Popen([sys.executable, "-m", "bvh_ops.cli", "replicate"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if any((replica / "backups" / b / "dump.pgcustom").exists() for b in units):
            os.kill(proc.pid, signal.SIGKILL)    # after some objects, before every commit point
            break
        time.sleep(0.002)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "replication finished before it could be killed"

    def complete_looking() -> list[str]:
        found = []
        for bid, sha in units.items():
            d = replica / "backups" / bid
            if (d / "manifest.json").exists() or (d / "manifest.json.copy").exists():
                assert hashlib.sha256((d / "dump.pgcustom").read_bytes()).hexdigest() == sha, bid
                found.append(bid)
        return found

    assert len(complete_looking()) < len(units)     # killed mid-run, and nothing half-there looks complete
    assert any((replica / "backups" / b / "dump.pgcustom").exists() for b in units)
    settings = make_settings(sample_db, f"file://{primary}", replica_repository=f"file://{replica}")
    again = replicate(settings, now())              # the next run finishes the job
    assert again.ok and sorted(complete_looking()) == sorted(units)


def test_file_set_snapshots_and_audit_digests_replicate_and_restore_from_the_replica(
        pg, tmp_path, make_settings, s3_server_b, s3_bucket_b):
    from bvh_ops.audit.record import record
    from bvh_ops.files.restore import restore_snapshot
    from bvh_ops.files.snapshot import take_snapshot
    from bvh_ops.pg.catalog import create_database
    from tasks.audit_tasks import sign_head

    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "app.conf").write_bytes(b"draws = weekly\n")
    (src / "big.bin").write_bytes(os.urandom(5 << 20))
    create_database(pg.dsn(), "replica_audit")
    primary = tmp_path / "repo"
    settings = _replica_settings(make_settings, pg.dsn(), f"file://{primary}", s3_bucket_b, s3_server_b,
                                 file_sets=[{"name": "app", "class": "application", "paths": [str(src)]}],
                                 ops_database_url=pg.dsn("replica_audit"))
    snap = take_snapshot(settings, "app")
    assert record(settings, None, "test.replica", "unit", {"n": 1}, strict=True)
    digest = sign_head(settings)
    report = replicate(settings, now())
    assert report.ok and report.lag_after.objects == 0
    keys = _replica_keys(s3_server_b, s3_bucket_b)
    assert digest["object_key"] in keys
    assert f"files/snapshots/{snap.snapshot_id}/snapshot.json" in keys
    assert any(k.startswith("files/content/") for k in keys)

    shutil.rmtree(primary)                                 # the primary region is gone
    repo, _ = open_repository(settings.for_replica())
    target = tmp_path / "restored"
    restore_snapshot(repo.store, repo.trusted_keys, load_identities(settings.identity), snap.snapshot_id, [], target)
    got = target / str(src).lstrip("/")
    assert (got / "etc" / "app.conf").read_bytes() == b"draws = weekly\n"
    assert (got / "big.bin").read_bytes() == (src / "big.bin").read_bytes()


def test_server_side_copy_above_the_single_copy_limit_goes_part_by_part(s3_server_b, s3_bucket_b, monkeypatch):
    from bvh_ops.storage import s3

    # The limits scaled down (5 GiB per CopyObject -> 5 MiB) so a 12 MiB object takes the
    # UploadPartCopy path on moto as a 6 GiB one would on S3.
    monkeypatch.setattr(s3, "S3_MAX_COPY", 5 << 20)
    monkeypatch.setattr(s3, "COPY_PART", 5 << 20)
    client = boto3.client("s3", endpoint_url=s3_server_b, region_name="eu-central-1")
    client.create_bucket(Bucket=s3_bucket_b + "-src", CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    src = s3.S3Store(bucket=s3_bucket_b + "-src", prefix="p", endpoint_url=s3_server_b)
    dst = s3.S3Store(bucket=s3_bucket_b, prefix="dr", endpoint_url=s3_server_b)
    blob = os.urandom(12 << 20)
    src.put_bytes("backups/x/base.tar", blob)
    assert dst.can_copy_from(src)
    dst.copy_from(src, "backups/x/base.tar", len(blob))
    assert hashlib.sha256(dst.get_bytes("backups/x/base.tar")).digest() == hashlib.sha256(blob).digest()
    assert not client.list_multipart_uploads(Bucket=s3_bucket_b).get("Uploads")
    with pytest.raises(NotFound):
        dst.copy_from(src, "backups/x/missing", 12 << 20)   # a failed part copy leaves no upload behind
    assert not client.list_multipart_uploads(Bucket=s3_bucket_b).get("Uploads")


def test_a_wal_file_under_an_alternate_key_replicates_and_is_fetched_from_the_replica(
        sample_db, repo_dir, tmp_path, s3_server_b, s3_bucket_b, make_settings):
    """A WAL file whose object went to an alternate key (its plain key held the leftover of an
    upload that never committed) reaches the replica with its entry, fetches from the replica
    alone, and the object its entry names is checked against the entry's stored sha256: damaged
    on the primary, it is not replicated."""
    from bvh_ops.wal.store import wal_fetch, wal_key, wal_object_key, wal_push, wal_upload
    from tests.integration.test_wal import _segment

    settings = _replica_settings(make_settings, sample_db, f"file://{repo_dir}", s3_bucket_b, s3_server_b)
    seg = tmp_path / "0000000100000000000000B1"
    seg.write_bytes(_segment(0xB1))
    wal_upload(settings, str(seg))                          # never committed
    assert wal_push(settings, str(seg)) == "stored"
    entry = json.loads((repo_dir / (wal_key(seg.name) + ".json")).read_text())
    named = wal_object_key(seg.name, entry)
    assert named != wal_key(seg.name)
    assert replicate(settings, now()).ok
    on_replica = _replica_keys(s3_server_b, s3_bucket_b)
    assert {wal_key(seg.name), named, wal_key(seg.name) + ".json"} <= set(on_replica)
    wal_fetch(settings.for_replica(), seg.name, str(tmp_path / "fetched"))
    assert (tmp_path / "fetched").read_bytes() == seg.read_bytes()

    other = tmp_path / "0000000100000000000000B2"
    other.write_bytes(_segment(0xB2))
    wal_upload(settings, str(other))
    assert wal_push(settings, str(other)) == "stored"
    entry = json.loads((repo_dir / (wal_key(other.name) + ".json")).read_text())
    damaged = repo_dir / wal_object_key(other.name, entry)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    report = replicate(settings, now())
    assert not report.ok and "damaged on the primary" in report.failures[0][1]
    assert wal_key(other.name) + ".json" not in _replica_keys(s3_server_b, s3_bucket_b)
