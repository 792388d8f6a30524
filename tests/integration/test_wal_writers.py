"""Two writers of one WAL name (a manual `wal-push` beside the pusher, a retried archive_command
beside a slow one, or the leftover of an upload that never committed): an upload never replaces
an object another writer's index entry may describe, so whichever entry is committed, the file
it names is the file, and fetch, the deep check, pruning and the replica all follow the entry.
Over the local repository and over S3 (moto's server: If-None-Match on the commit)."""

from __future__ import annotations

import json

import pytest

from bvh_ops.config import Settings
from bvh_ops.errors import IntegrityError
from bvh_ops.keys import load_identities
from bvh_ops.storage import open_store
from bvh_ops.wal.archive import _check_segment, delete_wal, scan_archive
from bvh_ops.wal.store import (
    is_archived,
    wal_commit,
    wal_fetch,
    wal_key,
    wal_object_key,
    wal_push,
    wal_upload,
)
from tests.integration.test_wal import _segment

NAME = "0000000100000000000000A7"


@pytest.fixture(params=["local", "s3"])
def settings(request, keypair, tmp_path):
    pub, key = keypair
    if request.param == "local":
        repo = tmp_path / "repo"
        repo.mkdir()
        return Settings(repository=f"file://{repo}", recipients=[pub], identity=key, state_dir=tmp_path / "state")
    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    return Settings(repository=f"s3://{bucket}/r", s3_endpoint_url=server, recipients=[pub], identity=key,
                    state_dir=tmp_path / "state")


@pytest.fixture
def segment(tmp_path):
    path = tmp_path / NAME
    path.write_bytes(_segment(0xA7))
    return path


@pytest.mark.parametrize("first", ["earlier upload", "later upload"])
def test_two_writers_of_one_name_leave_the_committed_entry_readable(settings, segment, tmp_path, first):
    """A and B upload the same file before either commits (B's upload after A's); whichever
    commits first, the archive holds a readable file: B's upload did not replace A's object."""
    store = open_store(settings)
    a = wal_upload(settings, str(segment), store=store)
    b = wal_upload(settings, str(segment), store=store)
    assert a is not None and b is not None
    assert "object" not in a  # the usual case: the plain key
    assert b["object"].startswith(wal_key(NAME) + "@")  # the plain key was taken: one of its own
    winner, loser = (a, b) if first == "earlier upload" else (b, a)
    wal_commit(settings, winner, store=store)
    wal_commit(settings, loser, store=store)  # same content: accepted, changes nothing
    entry = json.loads(store.get_bytes(wal_key(NAME) + ".json"))
    assert entry["envelopes"] == winner["envelopes"]
    assert is_archived(store, NAME)
    wal_fetch(settings, NAME, str(tmp_path / "fetched"))
    assert (tmp_path / "fetched").read_bytes() == segment.read_bytes()
    assert _check_segment(store, NAME, load_identities(settings.identity)) is None
    assert wal_push(settings, str(segment)) == "already archived"


def test_the_leftover_of_an_uncommitted_upload_is_never_overwritten_and_pruning_removes_both(
        settings, segment, tmp_path):
    """An upload whose writer died before its commit leaves an object without an entry; the
    retry stores its own object beside it and commits; pruning later deletes every object of
    the name, not only the plain key."""
    store = open_store(settings)
    leftover = wal_upload(settings, str(segment), store=store)  # never committed
    plain = store.get_bytes(wal_key(NAME))
    assert wal_push(settings, str(segment)) == "stored"
    assert store.get_bytes(wal_key(NAME)) == plain  # untouched
    entry = json.loads(store.get_bytes(wal_key(NAME) + ".json"))
    assert wal_object_key(NAME, entry) != wal_key(NAME) and entry["envelopes"] != leftover["envelopes"]
    wal_fetch(settings, NAME, str(tmp_path / "fetched"))
    assert (tmp_path / "fetched").read_bytes() == segment.read_bytes()

    archive = scan_archive(store)
    assert list(archive) == [NAME]  # one file, not an extra name for the alternate object
    f = archive[NAME]
    assert f.has_object and f.has_index and len(f.object_keys) == 2
    delete_wal(store, archive, [NAME])
    assert list(store.list("wal/")) == []


def test_an_entry_naming_another_files_object_is_refused(settings, segment, tmp_path):
    """An index entry may name only an alternate of its own key: pointed at another segment's
    object (a tampered or mis-copied entry), fetch refuses it and the deep check reports it."""
    store = open_store(settings)
    other = tmp_path / "0000000100000000000000A8"
    other.write_bytes(_segment(0xA8))
    assert wal_push(settings, str(segment)) == "stored"
    assert wal_push(settings, str(other)) == "stored"
    entry = json.loads(store.get_bytes(wal_key(NAME) + ".json"))
    store.put_bytes(wal_key(NAME) + ".json", json.dumps({**entry, "object": wal_key(other.name)}).encode())
    with pytest.raises(IntegrityError, match="not one of its own"):
        wal_fetch(settings, NAME, str(tmp_path / "fetched"))
    assert not (tmp_path / "fetched").exists()
    assert "not one of its own" in _check_segment(store, NAME, load_identities(settings.identity))
    assert not is_archived(store, NAME)


def test_the_wal_age_check_reads_the_stored_file_not_an_older_leftover(keypair, tmp_path, segment):
    """A leftover from an upload that never committed (say the host died right after it) is
    older than the retry that archived the file under an alternate key: "newest archived WAL
    stored N s ago" must count from the retry, not raise a WAL-archiving alert for a segment
    archived a moment ago."""
    import os
    from datetime import UTC, datetime

    from bvh_ops.monitoring.backups import _wal_check
    from bvh_ops.monitoring.results import Status
    from bvh_ops.monitoring.thresholds import Limits

    repo = tmp_path / "repo"
    repo.mkdir()
    settings = Settings(repository=f"file://{repo}", recipients=[keypair[0]], identity=keypair[1],
                        state_dir=tmp_path / "state")
    store = open_store(settings)
    wal_upload(settings, str(segment), store=store)  # never committed
    two_hours_ago = datetime.now(UTC).timestamp() - 7200
    os.utime(repo / wal_key(NAME), (two_hours_ago, two_hours_ago))
    assert wal_push(settings, str(segment)) == "stored"
    check = _wal_check(scan_archive(store), datetime.now(UTC), Limits())
    assert check.status is Status.OK and check.value < 60, check.detail
