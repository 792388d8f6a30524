"""Uploads cut off before their commit or abort (kill -9, a crash, power loss) leave a hidden
``.tmp-`` file in a file:// repository and an unfinished multipart upload on S3 (kept and billed
until aborted). The weekly maintenance's disk stage finds them, keeps those whose writer may still
run, and removes the dead ones past the grace; committed objects are never touched. Injected
clock: "later" is ``now`` moved on, never a sleep."""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest

from bvh_ops.maintenance.disk import disk_stage
from bvh_ops.storage.local import LocalStore
from bvh_ops.storage.s3 import S3Store

DAY = 24 * 3600


def _cut_off(store, key: str, data: bytes) -> None:
    """An upload whose process died mid-way: written, neither committed nor aborted."""
    w = store.open_writer(key)
    w.write(data)
    fh = getattr(w, "_fh", None)
    if fh is not None:
        fh.flush()
        fh.close()


def _uploads_in(actions):
    return {a["object"]: a for a in actions if "upload" in a["object"]}


def test_a_dead_upload_in_a_file_repository_goes_a_live_one_and_committed_objects_stay(
        make_settings, repo_dir, tmp_path):
    settings = make_settings("postgresql://unused@127.0.0.1/unused", f"file://{repo_dir}")
    store = LocalStore(repo_dir)
    store.put_bytes("backups/b1/manifest.json", b"{}")
    _cut_off(store, "backups/b2/dump.pgcustom", os.urandom(4096))
    _cut_off(store, "wal/00000001/000000010000000000000007", os.urandom(1024))
    (old,) = [p for p in repo_dir.rglob(".tmp-dump.pgcustom.*")]
    os.utime(old, (time.time() - 2 * DAY, time.time() - 2 * DAY))
    os.utime(repo_dir / "backups/b1/manifest.json", (time.time() - 9 * DAY,) * 2)

    actions, findings, section = disk_stage(settings, act=False, why_not="outside the window",
                                            temp_dir=tmp_path / "no-temp")
    assert findings == []
    seen = _uploads_in(actions)
    assert len(seen) == 2
    dead = [a for o, a in seen.items() if "backups/b2/dump.pgcustom" in o][0]
    assert dead["status"] == "skipped" and "not removed: outside the window" in dead["detail"]
    assert dead["before"]["bytes"] == 4096
    assert old.exists()

    actions, _, section = disk_stage(settings, act=True, temp_dir=tmp_path / "no-temp")
    seen = _uploads_in(actions)
    dead = [a for o, a in seen.items() if "backups/b2/dump.pgcustom" in o][0]
    live = [a for o, a in seen.items() if "000000010000000000000007" in o][0]
    assert dead["status"] == "done" and not old.exists()
    assert live["status"] == "skipped" and "may still run" in live["detail"]
    assert list(repo_dir.rglob(".tmp-000000010000000000000007.*"))
    assert (repo_dir / "backups/b1/manifest.json").read_bytes() == b"{}"
    assert section["freed_bytes"] == 4096


def test_an_unfinished_s3_multipart_upload_is_aborted_once_its_writer_cannot_run(
        make_settings, s3_server, s3_bucket, tmp_path):
    settings = make_settings("postgresql://unused@127.0.0.1/unused", f"s3://{s3_bucket}/r",
                             s3_endpoint_url=s3_server, s3_part_size_mib=5)
    store = S3Store(bucket=s3_bucket, prefix="r", endpoint_url=s3_server, part_size=5 << 20)
    store.put_bytes("backups/b1/manifest.json", b"{}")
    _cut_off(store, "backups/b2/dump.pgcustom", os.urandom(6 << 20))  # one 5 MiB part sent
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    assert len(client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])) == 1

    actions, findings, _ = disk_stage(settings, act=True, temp_dir=tmp_path / "no-temp")
    (a,) = _uploads_in(actions).values()
    assert findings == [] and a["status"] == "skipped" and "may still run" in a["detail"]
    assert a["before"]["bytes"] == 5 << 20

    later = time.time() + DAY + 3600
    actions, findings, _ = disk_stage(settings, act=True, now=later, temp_dir=tmp_path / "no-temp")
    (a,) = _uploads_in(actions).values()
    assert a["status"] == "done", a
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert store.get_bytes("backups/b1/manifest.json") == b"{}"


def test_a_repository_that_cannot_be_listed_is_a_finding_not_a_clean_report(make_settings, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings("postgresql://unused@127.0.0.1/unused", "s3://nowhere/r",
                             s3_endpoint_url=f"http://127.0.0.1:{port}")
    actions, findings, _ = disk_stage(settings, act=True, temp_dir=tmp_path / "no-temp")
    assert not _uploads_in(actions)
    (f,) = [f for f in findings if f["kind"] == "repository_uploads"]
    assert f["severity"] == "warning" and "interrupted uploads not looked for" in f["detail"]


@pytest.mark.parametrize("mode", [0o700, 0o744], ids=["cannot-list", "can-list-cannot-enter"])
def test_an_unreadable_part_of_a_file_repository_is_a_finding_and_the_rest_is_still_cleaned(repo_dir, tmp_path,
                                                                                            mode):
    """A directory the maintenance's OS user cannot read (run as another user than the one that
    owns wal/): what is elsewhere is still found and removed, and a finding names what was not
    looked at — also where the directory's names can be listed but its files not looked at
    (r without x: an upload seen by name, its age unknown)."""
    import subprocess
    import sys

    from bvh_ops.pg.cluster import PG_OS_USER, grant_traverse

    if os.geteuid() != 0:
        pytest.skip("needs root to act as another OS user")
    store = LocalStore(repo_dir)
    _cut_off(store, "backups/b2/dump.pgcustom", os.urandom(100))
    _cut_off(store, "wal/00000001/000000010000000000000007", os.urandom(100))
    for p in repo_dir.rglob(".tmp-*"):
        os.utime(p, (time.time() - 2 * DAY,) * 2)
    (old,) = list(repo_dir.rglob(".tmp-dump.pgcustom.*"))
    os.chmod(repo_dir / "wal" / "00000001", mode)  # root's; the other user cannot look inside
    import bvh_ops

    for reach in (repo_dir / "x", Path(sys.executable).resolve(), Path(bvh_ops.__file__)):
        grant_traverse(reach)  # as archive_command needs: the interpreter, our code, the repository
    for d in (repo_dir, repo_dir / "wal", repo_dir / "backups", repo_dir / "backups" / "b2"):
        os.chmod(d, 0o777)
    state = tmp_path / "state-other"
    state.mkdir(mode=0o777)
    os.chmod(state, 0o777)
    code = f"""
import json
from pathlib import Path
from bvh_ops.config import Settings
from bvh_ops.maintenance.disk import disk_stage
actions, findings, _ = disk_stage(Settings(), act=True, temp_dir=Path({str(state / "no-temp")!r}))
print(json.dumps([a["status"] for a in actions if "upload" in a["object"]]))
print(json.dumps(findings))
"""
    env = {"PATH": os.environ["PATH"], "HOME": str(state), "BVH_OPS_REPOSITORY": f"file://{repo_dir}",
           "BVH_OPS_STATE_DIR": str(state),
           "PYTHONPATH": str(Path(bvh_ops.__file__).parent.parent)}  # the code under test, not the venv's
    proc = subprocess.run(["setpriv", f"--reuid={PG_OS_USER}", f"--regid={PG_OS_USER}", "--clear-groups",
                           sys.executable, "-c", code], text=True, capture_output=True, env=env, cwd="/",
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    acted, findings = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert acted == ["done"] and not old.exists()
    (f,) = [f for f in findings if f["kind"] == "repository_uploads"]
    assert "wal/00000001" in f["detail"] and "Permission denied" in f["detail"]


def test_an_s3_upload_that_ends_while_the_maintenance_lists_it_is_no_finding_and_the_rest_is_listed(
        s3_server, s3_bucket):
    """A writer completes (or aborts) its multipart upload between the maintenance's listing of
    the uploads and its look at that upload's parts (a backup ending while the weekly run walks
    the bucket): that upload simply ended. The listing goes on with the others, and aborting
    one that ended meanwhile is done, not a failure."""
    store = S3Store(bucket=s3_bucket, prefix="r", endpoint_url=s3_server, part_size=5 << 20)
    _cut_off(store, "backups/a/dump.pgcustom", os.urandom(6 << 20))
    ending = store.open_writer("backups/b/dump.pgcustom")
    ending.write(os.urandom(6 << 20))  # one part sent: the upload exists
    _cut_off(store, "backups/c/dump.pgcustom", os.urandom(6 << 20))
    listing = store.uploads()
    first = next(listing)
    assert first.key == "backups/a/dump.pgcustom"
    ending.commit()  # b ends between the listing and the look at its parts
    rest = [u.key for u in listing]
    assert rest == ["backups/c/dump.pgcustom"]
    assert store.stat("backups/b/dump.pgcustom") is not None
    store.discard_upload(first)
    store.discard_upload(first)  # ended meanwhile (here: by the first call): nothing left to abort
    assert [u.key for u in store.uploads()] == ["backups/c/dump.pgcustom"]


def test_a_dot_tmp_file_our_writer_did_not_name_is_never_taken_for_an_upload(make_settings, repo_dir, tmp_path):
    """Only names our writer gives (``.tmp-<object>.<8 hex>``) are uploads: another program's
    ``.tmp-`` file under the repository (an operator's notes, a sync tool's scratch) is not ours to
    delete, however old, and discard_upload refuses it."""
    from bvh_ops.errors import StorageError
    from bvh_ops.storage.base import Upload

    settings = make_settings("postgresql://unused@127.0.0.1/unused", f"file://{repo_dir}")
    store = LocalStore(repo_dir)
    _cut_off(store, "backups/b2/dump.pgcustom", os.urandom(100))
    (ours,) = list(repo_dir.rglob(".tmp-dump.pgcustom.*"))
    foreign = [repo_dir / ".tmp-notes", repo_dir / "backups" / ".tmp-rsync.XyZ12a"]
    for p in foreign:
        p.write_bytes(b"not bvh-ops'")
    for p in [ours, *foreign]:
        os.utime(p, (time.time() - 9 * DAY,) * 2)

    actions, findings, _ = disk_stage(settings, act=True, temp_dir=tmp_path / "no-temp")
    assert [a["status"] for a in _uploads_in(actions).values()] == ["done"]
    assert not ours.exists()
    assert all(p.read_bytes() == b"not bvh-ops'" for p in foreign)
    with pytest.raises(StorageError):
        store.discard_upload(Upload(".tmp-notes", ".tmp-notes", 12, datetime.fromtimestamp(0, UTC)))
    assert foreign[0].exists()


def test_an_upload_cut_off_in_the_replica_goes_too(make_settings, repo_dir, tmp_path):
    """`bvh-ops replicate` writes into the replica repository as the backups write into the
    primary: an upload a crash cut off there is removed the same way, a live one kept."""
    replica = tmp_path / "replica"
    replica.mkdir()
    settings = make_settings("postgresql://unused@127.0.0.1/unused", f"file://{repo_dir}",
                             replica_repository=f"file://{replica}")
    store = LocalStore(replica)
    store.put_bytes("backups/b1/manifest.json", b"{}")
    _cut_off(store, "backups/b2/dump.pgcustom", os.urandom(300))
    _cut_off(store, "backups/b3/dump.pgcustom", os.urandom(200))
    dead = list(replica.rglob(".tmp-dump.pgcustom.*"))[0]
    os.utime(dead, (time.time() - 2 * DAY,) * 2)
    size = dead.stat().st_size

    actions, findings, section = disk_stage(settings, act=True, temp_dir=tmp_path / "no-temp")
    assert findings == []
    assert sorted(a["status"] for a in _uploads_in(actions).values()) == ["done", "skipped"]
    assert not dead.exists() and len(list(replica.rglob(".tmp-*"))) == 1
    assert (replica / "backups/b1/manifest.json").read_bytes() == b"{}"
    assert section["freed_bytes"] == size


def test_in_a_bucket_without_a_prefix_only_the_repositorys_uploads_are_touched(make_settings, s3_server, s3_bucket,
                                                                               tmp_path):
    """``s3://bucket`` with no prefix: another program's multipart upload in the same bucket is
    not ours, however old; the repository's own dead upload goes."""
    settings = make_settings("postgresql://unused@127.0.0.1/unused", f"s3://{s3_bucket}",
                             s3_endpoint_url=s3_server, s3_part_size_mib=5)
    store = S3Store(bucket=s3_bucket, endpoint_url=s3_server, part_size=5 << 20)
    _cut_off(store, "backups/b2/dump.pgcustom", os.urandom(6 << 20))
    _cut_off(store, "exports/report.csv", os.urandom(6 << 20))  # someone else's
    later = time.time() + 2 * DAY
    actions, findings, _ = disk_stage(settings, act=True, now=later, temp_dir=tmp_path / "no-temp")
    assert findings == []
    (a,) = _uploads_in(actions).values()
    assert "backups/b2/dump.pgcustom" in a["object"] and a["status"] == "done"
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    left = [u["Key"] for u in client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])]
    assert left == ["exports/report.csv"]
