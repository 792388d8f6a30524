"""The S3 repository against moto's standalone server over HTTP on 127.0.0.1."""

from __future__ import annotations

import os

import boto3
import pytest

from bvh_ops.errors import StorageError
from bvh_ops.keys import load_identities
from bvh_ops.logical.backup import run_logical_backup
from bvh_ops.logical.restore import restore_logical
from bvh_ops.repository.open import open_repository
from bvh_ops.repository.verify import Status, verify_backup
from bvh_ops.storage.s3 import S3Store
from tests.integration.cli import assert_one_line_error, run_cli
from tests.waiting import wait_until


def test_backup_verify_restore_over_s3(sample_db, fresh_db, s3_server, s3_bucket, make_settings):
    settings = make_settings(sample_db, f"s3://{s3_bucket}/lottery/prod", s3_endpoint_url=s3_server,
                             s3_part_size_mib=5)
    m = run_logical_backup(settings).manifest
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert f"lottery/prod/backups/{m.backup_id}/manifest.json" in keys
    assert f"lottery/prod/backups/{m.backup_id}/dump.pgcustom" in keys
    assert not any(k.endswith("inprogress.json") for k in keys)
    repo, _ = open_repository(settings)
    assert all(r.status is Status.OK for r in verify_backup(repo, m.backup_id, identities=load_identities(settings.identity)))
    assert restore_logical(settings, "latest", fresh_db()).ok


def test_multipart_upload_with_bounded_parts(s3_server, s3_bucket):
    store = S3Store(bucket=s3_bucket, prefix="p", endpoint_url=s3_server, part_size=5 << 20)
    payload = os.urandom(1 << 20)
    w = store.open_writer("big.bin")
    for _ in range(12):  # 12 MiB -> 3 parts of at most 5 MiB
        w.write(payload)
        assert len(w._buf) < 5 << 20  # never more than one part in memory
    w.commit()
    assert store.stat("big.bin").size == 12 << 20
    assert store.get_bytes("big.bin")[:1 << 20] == payload


def test_failed_upload_is_aborted_leaving_nothing(s3_server, s3_bucket):
    store = S3Store(bucket=s3_bucket, endpoint_url=s3_server, part_size=5 << 20)
    w = store.open_writer("partial.bin")
    w.write(os.urandom(6 << 20))  # one part uploaded
    w.abort()
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert store.stat("partial.bin") is None


def test_missing_bucket_names_the_bucket(sample_db, s3_server, s3_bucket, make_settings):
    settings = make_settings(sample_db, "s3://no-such-bucket-here/x", s3_endpoint_url=s3_server)
    with pytest.raises(StorageError, match="'no-such-bucket-here' does not exist"):
        run_logical_backup(settings)


def test_missing_bucket_cli_is_one_line(s3_server, s3_bucket, keypair, tmp_path):
    env = {
        "BVH_OPS_REPOSITORY": "s3://absent-bucket-42/x", "BVH_OPS_S3_ENDPOINT_URL": s3_server,
        "BVH_OPS_STATE_DIR": str(tmp_path), "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret",
    }
    assert_one_line_error(run_cli("backups", "list", env=env), "absent-bucket-42", "does not exist")


def test_server_side_encryption_is_requested(sample_db, s3_server, s3_bucket, make_settings):
    settings = make_settings(sample_db, f"s3://{s3_bucket}/sse", s3_endpoint_url=s3_server, s3_sse="AES256")
    m = run_logical_backup(settings).manifest
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    head = client.head_object(Bucket=s3_bucket, Key=f"sse/backups/{m.backup_id}/dump.pgcustom")
    assert head["ServerSideEncryption"] == "AES256"
    head = client.head_object(Bucket=s3_bucket, Key=f"sse/backups/{m.backup_id}/manifest.json")
    assert head["ServerSideEncryption"] == "AES256"


def test_physical_backup_wal_archive_and_pitr_over_s3(s3_server, s3_bucket, keypair, tmp_path):
    """PostgreSQL archives through bvh-ops-wal into S3 (credentials from a shared-credentials
    file named in archive_command), a full backup goes to S3, and a restore recovers to an LSN
    fetching WAL from S3 (credentials handed to restore_command in a 0600 file)."""
    import shutil

    import psycopg

    from bvh_ops.config import Settings
    from bvh_ops.pg.cluster import EmbeddedCluster, archiving_conf
    from bvh_ops.pg.tools import embedded_bin_dir
    from bvh_ops.physical.backup import run_physical_backup
    from bvh_ops.physical.restore import restore_physical, stop_server
    from bvh_ops.physical.target import RecoveryTarget

    root = tmp_path / "s3arch"
    root.mkdir()
    os.chmod(root, 0o755)
    os.chmod(tmp_path, 0o755)
    pub = root / "recipient.pub"
    shutil.copy(keypair[0], pub)
    os.chmod(pub, 0o644)
    creds = root / "aws-credentials"
    creds.write_text("[default]\naws_access_key_id = testing\naws_secret_access_key = testing-secret\n")
    os.chmod(creds, 0o644)  # test only: production keeps it 0600, owned by the server's OS user
    repo_url = f"s3://{s3_bucket}/pg"
    cfg = root / "archive.toml"
    cfg.write_text(f'repository = "{repo_url}"\ns3_endpoint_url = "{s3_server}"\nrecipients = ["{pub}"]\n'
                   f'state_dir = "{root / "state"}"\n')
    os.chmod(cfg, 0o644)
    cluster = EmbeddedCluster(root / "pg", extra_conf=archiving_conf(cfg, aws_credentials_file=creds))
    cluster.start()
    try:
        settings = Settings(database_url=cluster.dsn(), repository=repo_url, s3_endpoint_url=s3_server,
                            recipients=[keypair[0]], identity=keypair[1], state_dir=tmp_path / "state")
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE w (id int)")
        full = run_physical_backup(settings, "full").manifest
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("INSERT INTO w SELECT generate_series(1, 500)")
            lsn = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
            conn.execute("INSERT INTO w SELECT generate_series(501, 900)")
            seg = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
            conn.execute("SELECT pg_switch_wal()")
            wait_until(lambda: (conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()[0]
                                or "") >= seg, f"WAL segment {seg} archived to S3", interval=0.2)
        client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
        keys = {o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="pg/wal/")["Contents"]}
        assert f"pg/wal/00000001/{seg}" in keys and f"pg/wal/00000001/{seg}.json" in keys
        report = restore_physical(settings, "latest", tmp_path / "data", target=RecoveryTarget("lsn", lsn), start=True)
        try:
            assert report.chain == [full.backup_id]
            with psycopg.connect(f"postgresql://postgres:{cluster.password}@127.0.0.1:{report.port}/postgres") as conn:
                assert conn.execute("SELECT count(*) FROM w").fetchone()[0] == 500
            assert not (tmp_path / "data" / "bvh_ops_recovery").exists()  # credentials copy removed
        finally:
            stop_server(tmp_path / "data", embedded_bin_dir())
    finally:
        cluster.destroy()
