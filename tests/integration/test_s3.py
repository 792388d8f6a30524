"""The S3 repository against moto's standalone server over HTTP on 127.0.0.1."""

from __future__ import annotations

import os

import boto3
import pytest

from bvh_ops.backup import open_repository, run_logical_backup
from bvh_ops.errors import StorageError
from bvh_ops.keys import load_identities
from bvh_ops.repository.verify import Status, verify_backup
from bvh_ops.restore import restore_logical
from bvh_ops.storage.s3 import S3Store
from tests.integration.cli import assert_one_line_error, run_cli


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
