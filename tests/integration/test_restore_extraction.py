"""A physical backup whose tar tries to leave the restore directory — a hard link to an absolute
path, a symbolic link, a '../' name — is refused before GNU tar sees that member: nothing is
written outside ``--target-dir`` and no half-restored directory is left (the backup is signed
by a trusted host key, as a compromised backup host could make one)."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bvh_ops.errors import IntegrityError
from bvh_ops.keys import load_recipients
from bvh_ops.physical.backup import BASE_OBJECT
from bvh_ops.physical.restore import restore_physical
from bvh_ops.repository.manifest import Manifest
from bvh_ops.repository.open import open_repository
from bvh_ops.repository.repo import new_backup_id, stats_to_entry
from bvh_ops.stream import seal_data_key


def _member(name: str, *, data: bytes = b"", link: str | None = None, kind=tarfile.REGTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    if link is not None:
        info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _signed_backup(settings, members) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, fh in members:
            tar.addfile(info, fh)
    repo, host_key = open_repository(settings)
    recipients = load_recipients(settings.recipients)
    now = datetime.now(UTC)
    backup_id = new_backup_id("full", now)
    writer = repo.begin(backup_id)
    key = os.urandom(32)
    with writer.object(BASE_OBJECT, data_key=key, envelopes=seal_data_key(key, recipients), compression_level=3,
                       segment_size=64 << 10) as out:
        out.write(buf.getvalue())
    ids = tuple(r.key_id for r in recipients)
    writer.commit(Manifest(
        backup_id=backup_id, kind="full", tool_version="test", started_at=now.isoformat(),
        finished_at=now.isoformat(), database="(cluster)", server_version="18.0", server_version_num=180000,
        system_identifier="1", snapshot_id="", dump_format="tar", compression="zstd-3", kem=recipients[0].kem,
        key_ids=ids, host="evil", objects=(stats_to_entry(BASE_OBJECT, out.stats, ids, "zstd-3"),),
        extra={"start_lsn": "0/2000028", "stop_lsn": "0/2000100", "timeline": 1, "mode": "native"}), host_key)
    return backup_id


@pytest.fixture
def elsewhere():
    """A directory outside the restore at a short absolute path (a ustar link name holds 100
    bytes; pytest's own directories can be longer than that)."""
    d = Path(tempfile.mkdtemp(prefix="bvh-outside-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("evil", ["hardlink", "symlink", "dotdot"])
def test_a_tar_that_leaves_the_target_is_refused_before_anything_lands_outside(evil, tmp_path, elsewhere, repo_dir,
                                                                              make_settings, sample_db):
    outside = elsewhere / "outside.txt"
    outside.write_text("precious\n")
    member = {
        "hardlink": _member("global/pg_control", link=str(outside), kind=tarfile.LNKTYPE),
        "symlink": _member("pg_wal", link=str(elsewhere), kind=tarfile.SYMTYPE),
        "dotdot": _member("../outside.txt", data=b"overwritten\n"),
    }[evil]
    after = _member("global/pg_control", data=b"overwritten\n") if evil != "symlink" else \
        _member("pg_wal/outside.txt", data=b"overwritten\n")
    settings = make_settings(sample_db, f"file://{repo_dir}")
    backup_id = _signed_backup(settings, [_member("PG_VERSION", data=b"18\n"), member, after])
    target = tmp_path / "restore" / "data"
    with pytest.raises(IntegrityError, match=f"backup {backup_id}.*refusing to extract"):
        restore_physical(settings, backup_id, target, verify=False)
    assert outside.read_text() == "precious\n" and sorted(elsewhere.iterdir()) == [outside]
    assert not (target.parent / "outside.txt").exists()  # where '../outside.txt' would land
    assert not target.exists()
