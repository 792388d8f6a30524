"""A file:// repository written by root into a directory the server's OS user owns (``wal/``):
what root adds there — a replica's copies, index entries rewritten by key rotation — keeps
that directory's owner and group, so restore_command (run as that user) can still read it."""

from __future__ import annotations

import os
import pwd

import pytest

from bvh_ops.storage.local import LocalStore

pytestmark = pytest.mark.unit


def _other_user() -> pwd.struct_passwd:
    for name in ("embedded_postgres", "postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.skip("no second OS user on this machine")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files to another user")
def test_root_writes_into_a_server_owned_wal_dir_keep_its_owner(tmp_path):
    other = _other_user()
    wal = tmp_path / "wal"
    wal.mkdir()
    os.chown(wal, other.pw_uid, other.pw_gid)
    store = LocalStore(tmp_path)
    store.put_bytes("wal/00000001/000000010000000000000003.json", b"{}")       # a new directory and file
    w = store.open_writer("wal/00000001/000000010000000000000003.zst.aes")   # the streamed path
    w.write(b"x" * 10)
    w.commit()
    store.put_bytes("wal/00000001/00000001.history.json", b"{}", if_absent=True)
    store.put_bytes("backups/b1/manifest.json", b"{}")                       # root's own area
    owners = {p.relative_to(tmp_path).as_posix(): (p.stat().st_uid, p.stat().st_gid) for p in tmp_path.rglob("*")}
    for name in ("wal/00000001", "wal/00000001/000000010000000000000003.json",
                 "wal/00000001/000000010000000000000003.zst.aes", "wal/00000001/00000001.history.json"):
        assert owners[name] == (other.pw_uid, other.pw_gid), name
    for name in ("backups", "backups/b1", "backups/b1/manifest.json"):
        assert owners[name] == (0, 0), name
    assert store.get_bytes("wal/00000001/000000010000000000000003.zst.aes") == b"x" * 10
