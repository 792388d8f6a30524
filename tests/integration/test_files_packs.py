"""Packs and the unchanged-file cache on real files: small files share pack objects and restore
byte-exact across several packs; an unchanged file is not read again but still recorded; an edited
one is; a cache entry whose pack a gc removed is not trusted; snapshots written before packs
(format v1: every chunk an object of its own) still restore, verify and collect."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

import pytest

from bvh_ops.files import content as content_mod
from bvh_ops.files import layout as layout_mod
from bvh_ops.files import packs as packs_mod
from bvh_ops.files.cache import RACY_NS
from bvh_ops.files.catalog import delete_snapshot, iter_entries
from bvh_ops.files.diff import diff_snapshots
from bvh_ops.files.gc import Status, collect_garbage, verify_snapshots
from bvh_ops.files.layout import INDEX, snapshot_prefix
from bvh_ops.files.packs import BlobReader
from bvh_ops.files.restore import restore_snapshot
from bvh_ops.files.snapshot import take_snapshot
from tests.integration import test_files as _base
from tests.integration.test_files import _ctx, _tree, _walk

files_env = _base.files_env   # the fixture, shared


def _settle():
    """Let the files' ctime fall more than a timestamp tick behind the snapshot's reads (the
    cache's racy rule would otherwise, rightly, not remember files written a moment ago)."""
    time.sleep(RACY_NS / 1e9 * 2)


def _small_tree(root, n=60):
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"site-{i:03d}.conf").write_bytes(os.urandom(1500).hex().encode() + b"\n")
    return root


def test_small_files_share_packs_and_restore_byte_exact_across_packs(files_env, tmp_path, monkeypatch):
    monkeypatch.setattr(packs_mod, "PACK_TARGET", 32 << 10)   # ~3 KB files: about 11 per pack
    src = _tree(_small_tree(tmp_path / "src"))
    settings = files_env([src])
    snap = take_snapshot(settings, "app")
    assert not snap.partial, snap.problems
    store, trusted, idents = _ctx(settings)
    packs = [o for o in store.list("files/packs/") if not o.key.endswith(".idx")]
    assert snap.packs_new == len(packs) >= 5
    assert list(store.list("files/content/")) == []            # no object per small file
    target = tmp_path / "restored"
    restore_snapshot(store, trusted, idents, snap.snapshot_id, [], target)
    assert _walk(target / str(src).lstrip("/")) == _walk(src)
    # blobs read out of pack order (backwards) still come back right
    entries = [e for e in iter_entries(store, snap.snapshot_id, idents) if e.chunks]
    with BlobReader(store, idents) as blobs:
        for e in reversed(entries):
            if not e.path.startswith("_commands/"):
                assert b"".join(blobs.read(c) for c in e.chunks) == open("/" + e.path, "rb").read()
    one = src / "site-031.conf"
    restore_snapshot(store, trusted, idents, snap.snapshot_id, [str(one)], tmp_path / "one")
    assert (tmp_path / "one" / str(one).lstrip("/")).read_bytes() == one.read_bytes()
    assert all(c.status is Status.OK for c in verify_snapshots(store, trusted, identities=idents))


def test_unchanged_files_are_not_read_again_and_an_edited_one_is(files_env, tmp_path):
    src = _tree(tmp_path / "src", big=6 << 20)
    settings = files_env([src])
    _settle()
    first = take_snapshot(settings, "app")
    files = first.files_unchanged
    assert files == 0 and first.bytes_in > 6 << 20
    second = take_snapshot(settings, "app")
    command_bytes = len(b"hello from a command\n")
    assert second.bytes_in == command_bytes                 # nothing but the command's output was read
    assert second.files_unchanged >= 7 and second.chunks_new == 0 and second.packs_new == 0
    conf = src / "etc/nginx/nginx.conf"
    before = _walk(src)
    conf.write_bytes(conf.read_bytes().replace(b"listen 80", b"listen 8080"))
    _settle()
    third = take_snapshot(settings, "app")
    assert third.bytes_in == command_bytes + conf.stat().st_size
    assert third.files_unchanged == second.files_unchanged - 1
    store, trusted, idents = _ctx(settings)
    diff = diff_snapshots(store, trusted, idents, second.snapshot_id, third.snapshot_id)
    [change] = diff.changed
    assert change.path.endswith("nginx.conf") and "+    listen 8080;" in change.diff
    target = tmp_path / "restored"
    restore_snapshot(store, trusted, idents, second.snapshot_id, [], target)   # made from the cache alone
    assert _walk(target / str(src).lstrip("/")) == before


def test_a_remembered_chunk_that_gc_removed_is_read_again(files_env, tmp_path):
    src = _small_tree(tmp_path / "src", n=10)
    settings = files_env([src], commands=[])
    _settle()
    a = take_snapshot(settings, "app")
    store, trusted, idents = _ctx(settings)
    delete_snapshot(store, a.snapshot_id)
    assert collect_garbage(store, trusted, datetime.now(UTC))["deleted"] == 2   # a's pack and its index
    b = take_snapshot(settings, "app")
    assert b.files_unchanged == 0 and b.packs_new == 1   # the cache pointed at a pack that is gone
    target = tmp_path / "restored"
    restore_snapshot(store, trusted, idents, b.snapshot_id, [], target)
    assert _walk(target / str(src).lstrip("/")) == _walk(src)


def test_snapshots_written_before_packs_still_restore_verify_and_collect(files_env, tmp_path, monkeypatch):
    src = _tree(tmp_path / "src")
    settings = files_env([src])
    # the format-1 writer: every chunk an object of its own, the v1 index format
    with monkeypatch.context() as m:
        m.setattr(content_mod, "SMALL_BLOB", 0)
        m.setattr(layout_mod, "INDEX_FORMAT", "bvh-ops-files-snapshot-v1")
        old = take_snapshot(settings, "app")
    store, trusted, idents = _ctx(settings)
    assert b'"bvh-ops-files-snapshot-v1"' in store.get_bytes(snapshot_prefix(old.snapshot_id) + INDEX)
    assert list(store.list("files/packs/")) == [] and len(list(store.list("files/content/"))) == old.chunks_new
    (src / "new.conf").write_bytes(b"added after the upgrade\n")
    new = take_snapshot(settings, "app")
    assert new.packs_new == 1
    assert all(c.status is Status.OK for c in verify_snapshots(store, trusted, identities=idents))
    target = tmp_path / "old"
    restore_snapshot(store, trusted, idents, old.snapshot_id, [], target)
    expect = _walk(src)
    del expect[b"new.conf"]
    assert _walk(target / str(src).lstrip("/")) == expect
    delete_snapshot(store, old.snapshot_id)
    collect_garbage(store, trusted, datetime.now(UTC))
    target = tmp_path / "new"
    restore_snapshot(store, trusted, idents, new.snapshot_id, [], target)
    assert _walk(target / str(src).lstrip("/")) == _walk(src)


@pytest.mark.parametrize("edit", ["truncate", "append"])
def test_a_file_changed_between_snapshots_with_its_mtime_put_back_is_still_read(files_env, tmp_path, edit):
    """Tools that restore an mtime (cp -p, rsync -t, tar x) cannot hide a change: ctime moves."""
    src = _small_tree(tmp_path / "src", n=3)
    settings = files_env([src], commands=[])
    _settle()
    take_snapshot(settings, "app")
    f = src / "site-001.conf"
    st = f.stat()
    body = f.read_bytes()
    f.write_bytes(body[:-10] if edit == "truncate" else body + b"more\n")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    b = take_snapshot(settings, "app")
    assert b.files_unchanged == 2
    store, trusted, idents = _ctx(settings)
    target = tmp_path / "restored"
    restore_snapshot(store, trusted, idents, b.snapshot_id, [str(f)], target)
    assert (target / str(f).lstrip("/")).read_bytes() == f.read_bytes()


def test_a_damaged_pack_index_makes_the_next_snapshot_partial_not_failed(files_env, tmp_path, repo_dir):
    src = _small_tree(tmp_path / "src", n=5)
    settings = files_env([src], commands=[])
    a = take_snapshot(settings, "app")
    store, trusted, idents = _ctx(settings)
    [idx] = [o for o in store.list("files/packs/") if o.key.endswith(".idx")]
    (repo_dir / idx.key).write_bytes(b"{not json")
    (tmp_path / "state" / "files-cache").rename(tmp_path / "state" / "cache-gone")   # no local copy either
    b = take_snapshot(settings, "app")
    assert b.partial and any("pack index" in p and "stored again" in p for p in b.problems)
    assert b.packs_new == 1                                   # the blobs were stored again, in a new pack
    target = tmp_path / "restored"
    restore_snapshot(store, trusted, idents, b.snapshot_id, [], target)
    assert _walk(target / str(src).lstrip("/")) == _walk(src)
    bad = {c.snapshot_id: c.status for c in verify_snapshots(store, trusted) if c.status is not Status.OK}
    assert bad == {a.snapshot_id: Status.UNREADABLE}
