"""File-set snapshots on real files: byte-exact round trips (compared with an independent
os.walk), dedup of an unchanged tree, diff, single-file restore, malicious manifests refused,
garbage collection, verify, and the S3 repository."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bvh_ops.errors import ConcurrencyError, IntegrityError
from bvh_ops.files.catalog import delete_snapshot, iter_entries, list_snapshots
from bvh_ops.files.content import save_data_key_record
from bvh_ops.files.diff import diff_snapshots
from bvh_ops.files.gc import Status, collect_garbage, verify_snapshots
from bvh_ops.files.layout import ENTRIES, INDEX, INDEX_COPY, MARKER, Entry, snapshot_prefix
from bvh_ops.files.restore import restore_snapshot
from bvh_ops.files.snapshot import take_snapshot
from bvh_ops.keys import load_identities, load_or_create_host_key, load_recipients
from bvh_ops.repository.open import open_repository
from bvh_ops.stream import EncryptingWriter, seal_data_key

DSN = "postgresql://u@127.0.0.1:5432/db"
NGINX = b"server {\n    listen 80;\n    server_name lottery.example;\n    root /srv/app;\n}\n"
BIG = 50 << 20


def _tree(root: Path, *, big: int = 0) -> Path:
    """A tree with modes, symlinks (relative, absolute, dangling), a hard link, an empty dir,
    non-UTF-8 and newline names, a FIFO (skipped) and optionally a big random file."""
    rb = os.fsencode(root)
    (root / "etc/nginx").mkdir(parents=True)
    (root / "etc/nginx/nginx.conf").write_bytes(NGINX)
    (root / "secret.key").write_bytes(b"s3cr3t\n")
    os.chmod(root / "secret.key", 0o600)
    (root / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(root / "run.sh", 0o755)
    os.link(root / "run.sh", root / "run-hardlink.sh")
    (root / "empty").mkdir()
    os.chmod(root / "empty", 0o750)
    os.symlink("etc/nginx/nginx.conf", root / "link")
    os.symlink("/nonexistent/target", root / "dangling")
    with open(os.path.join(rb, b"caf\xe9-latin1.txt"), "wb") as fh:
        fh.write(b"latin-1 name\n")
    with open(os.path.join(rb, b"new\nline"), "wb") as fh:
        fh.write(b"newline name\n")
    (root / "skip.tmp").write_bytes(b"excluded\n")
    os.mkfifo(root / "a-fifo")
    if big:
        with open(root / "big.bin", "wb") as fh:
            for _ in range(big >> 20):   # incompressible
                fh.write(os.urandom(1 << 20))
    for i, (dirpath, dirs, files) in enumerate(os.walk(rb)):
        for n in files + dirs:
            os.utime(os.path.join(dirpath, n), ns=(1_600_000_000_000_000_000 + i, 1_600_000_000_123_456_789 + i),
                     follow_symlinks=False)
    return root


def _walk(root: Path, *, skip_tmp: bool = True) -> dict[bytes, tuple]:
    """Independent of bvh_ops: every path under root (bytes) -> what a restore must reproduce."""
    rb = os.fsencode(root)
    out: dict[bytes, tuple] = {}
    for dirpath, dirs, files in os.walk(rb):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, rb)
            if stat.S_ISFIFO(st.st_mode) or (skip_tmp and name.endswith(b".tmp")):
                continue
            if stat.S_ISLNK(st.st_mode):
                what = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    what = ("file", hashlib.file_digest(fh, "sha256").hexdigest(), st.st_size)
            else:
                what = ("dir",)
            mtime = st.st_mtime_ns if not stat.S_ISDIR(st.st_mode) else st.st_mtime_ns
            out[rel] = (what, stat.S_IMODE(st.st_mode) if not stat.S_ISLNK(st.st_mode) else None, st.st_uid,
                        st.st_gid, mtime)
    return out


@pytest.fixture
def files_env(make_settings, repo_dir, tmp_path):
    def make(paths, klass="application", repository=None, settings_extra=None, **extra):
        fs = {"name": "app", "class": klass, "paths": [str(p) for p in paths], "exclude": ["*.tmp"],
              "commands": [{"name": "hello", "argv": ["echo", "hello from a command"]}]}
        fs.update(extra)
        return make_settings(DSN, repository or f"file://{repo_dir}", file_sets=[fs], **(settings_extra or {}))

    return make


def _ctx(settings):
    repo, _ = open_repository(settings)
    return repo.store, repo.trusted_keys, load_identities(settings.identity)


def test_round_trip_is_byte_exact_and_second_snapshot_stores_nothing(files_env, tmp_path):
    src = _tree(tmp_path / "src", big=BIG)
    settings = files_env([src])
    first = take_snapshot(settings, "app")
    assert not first.partial, first.problems
    assert any("a-fifo (fifo)" in s for s in first.skipped)
    assert first.bytes_in > BIG and first.bytes_stored > BIG // 2

    store, trusted, idents = _ctx(settings)
    target = tmp_path / "restored"
    res = restore_snapshot(store, trusted, idents, first.snapshot_id, [], target)
    assert res.files >= 7 and res.symlinks == 2
    restored_root = target / str(src).lstrip("/")
    assert _walk(restored_root) == _walk(src)
    assert (target / "_commands/hello").read_bytes() == b"hello from a command\n"
    # hard links come back as separate files with the same content (documented)
    assert (restored_root / "run-hardlink.sh").read_bytes() == (src / "run.sh").read_bytes()

    second = take_snapshot(settings, "app")
    assert second.chunks_new == 0 and second.chunks_reused > 0
    assert second.bytes_stored < 64 << 10, second.bytes_stored   # the manifest only: kilobytes


def test_diff_shows_the_edited_nginx_config_and_never_diffs_secrets(files_env, tmp_path):
    src = _tree(tmp_path / "src")
    for klass, expect_text in (("system", True), ("secrets", False)):
        settings = files_env([src], klass=klass)
        a = take_snapshot(settings, "app")
        conf = src / "etc/nginx/nginx.conf"
        conf.write_bytes(conf.read_bytes().replace(b"listen 80;", b"listen 8080;"))
        (src / "new-file").write_bytes(b"x")
        (src / "secret.key").unlink()
        b = take_snapshot(settings, "app")
        store, trusted, idents = _ctx(settings)
        d = diff_snapshots(store, trusted, idents, a.snapshot_id, b.snapshot_id)
        rel = str(src).lstrip("/")
        assert f"{rel}/new-file" in d.added and f"{rel}/secret.key" in d.removed
        changed = {c.path: c for c in d.changed}
        nginx = changed[f"{rel}/etc/nginx/nginx.conf"]
        assert "content" in nginx.what
        if expect_text:
            assert "-    listen 80;\n" in nginx.diff and "+    listen 8080;\n" in nginx.diff
        else:
            assert nginx.diff is None
        conf.write_bytes(NGINX)
        (src / "new-file").unlink()
        (src / "secret.key").write_bytes(b"s3cr3t\n")


def test_single_file_restore(files_env, tmp_path):
    src = _tree(tmp_path / "src")
    settings = files_env([src])
    snap = take_snapshot(settings, "app")
    store, trusted, idents = _ctx(settings)
    target = tmp_path / "one"
    want = str(src / "etc/nginx/nginx.conf")
    res = restore_snapshot(store, trusted, idents, snap.snapshot_id, [want], target)
    assert res.files == 1
    restored = target / want.lstrip("/")
    assert restored.read_bytes() == NGINX
    assert restored.stat().st_mtime_ns == (src / "etc/nginx/nginx.conf").stat().st_mtime_ns
    files = [p for p in target.rglob("*") if p.is_file()]
    assert files == [restored]


def _forge(settings, sid: str, entries: list[dict]) -> None:
    """Rewrite a snapshot's entries and re-sign its index with the host's own key: the path
    checks must refuse a manifest even when its signature is good."""
    from dataclasses import replace

    from bvh_ops.files.layout import parse_index, sign_index

    store, trusted, _ = _ctx(settings)
    prefix = snapshot_prefix(sid)
    recipients = load_recipients(settings.recipients)
    key = os.urandom(32)
    save_data_key_record(store, key, seal_data_key(key, recipients))
    sink = store.open_writer(prefix + ENTRIES)
    w = EncryptingWriter(sink=sink, data_key=key, bind=prefix + ENTRIES)
    for e in entries:
        w.write(json.dumps(e).encode() + b"\n")
    stats = w.close()
    sink.commit()
    index, ok, _ = parse_index(store.get_bytes(prefix + INDEX), trusted, expect_id=sid)
    assert ok
    raw = sign_index(replace(index, entries_sha256=stats.stored_sha256, entries_size=stats.stored_size),
                     load_or_create_host_key(settings.state_dir))
    store.put_bytes(prefix + INDEX_COPY, raw)
    store.put_bytes(prefix + INDEX, raw)


def _file(path: str, chunks) -> dict:
    return Entry(path, "file", 0o644, 0, 0, 1, 6, tuple(chunks)).to_json()


@pytest.mark.parametrize("bad", [
    [{"path": "../escaped"}],
    [{"path": "ok/../../escaped"}],
    [{"path": "/tmp/absolute-escape"}],
    [{"path": "link", "type": "symlink", "target": "__OUTSIDE__"}, {"path": "link/escaped"}],
], ids=["dotdot", "dotdot-inside", "absolute", "symlink-escape"])
def test_malicious_manifests_are_refused_and_nothing_is_written(files_env, tmp_path, bad):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"hello\n")
    settings = files_env([src / "f"])
    snap = take_snapshot(settings, "app")
    store, trusted, idents = _ctx(settings)
    real = next(e for e in iter_entries(store, snap.snapshot_id, idents) if e.type == "file")
    outside = tmp_path / "outside"
    outside.mkdir()
    entries = []
    for b in bad:
        if b.get("type") == "symlink":
            entries.append(Entry(b["path"], "symlink", 0o777, 0, 0, 1,
                                 target=str(outside)).to_json())
        else:
            entries.append(_file(b["path"], real.chunks))
    _forge(settings, snap.snapshot_id, entries)
    target = tmp_path / "target" / "deep"
    with pytest.raises(IntegrityError, match="refusing"):
        restore_snapshot(store, trusted, idents, snap.snapshot_id, [], target)
    assert not any(outside.iterdir())
    assert not (tmp_path / "target" / "escaped").exists() and not (tmp_path / "escaped").exists()
    assert not Path("/tmp/absolute-escape").exists()


def test_a_symlink_already_in_the_target_is_not_followed(files_env, tmp_path):
    src = _tree(tmp_path / "src")
    settings = files_env([src / "etc"])
    snap = take_snapshot(settings, "app")
    store, trusted, idents = _ctx(settings)
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    first = str(src).lstrip("/").split("/")[0]
    target.mkdir()
    os.symlink(outside, target / first)        # planted: target/<first component> -> outside
    with pytest.raises(IntegrityError, match="symlink"):
        restore_snapshot(store, trusted, idents, snap.snapshot_id, [], target)
    assert not any(outside.iterdir())


def test_gc_keeps_referenced_content_and_removes_the_rest(files_env, tmp_path):
    src = _tree(tmp_path / "src")
    (src / "only-in-a.bin").write_bytes(os.urandom(2 << 20))       # a chunk of its own (>= SMALL_BLOB)
    (src / "only-in-a.txt").write_bytes(os.urandom(3000).hex().encode())  # a blob in a's pack
    settings = files_env([src])
    a = take_snapshot(settings, "app")
    (src / "only-in-a.bin").unlink()
    (src / "only-in-a.txt").unlink()
    b = take_snapshot(settings, "app")
    store, trusted, idents = _ctx(settings)
    before = list(store.list("files/content/")) + list(store.list("files/packs/"))

    # a snapshot in progress: gc deletes nothing
    store.put_bytes(snapshot_prefix("20990101T000000000000Z-app-abcdef") + MARKER, b"{}")
    with pytest.raises(ConcurrencyError):
        collect_garbage(store, trusted, datetime.now(UTC))
    store.delete(snapshot_prefix("20990101T000000000000Z-app-abcdef") + MARKER)
    assert len(list(store.list("files/content/")) + list(store.list("files/packs/"))) == len(before)

    res = collect_garbage(store, trusted, datetime.now(UTC))
    assert res["deleted"] == 0                  # everything is referenced by a or b
    delete_snapshot(store, a.snapshot_id)
    res = collect_garbage(store, trusted, datetime.now(UTC))
    # the big chunk goes; a's pack stays whole (b still uses other blobs in it: no repacking)
    assert res["deleted"] == 1 and res["bytes_freed"] > 2_000_000
    assert len(list(store.list("files/packs/"))) == len([o for o in before if o.key.startswith("files/packs/")])
    assert [s.snapshot_id for s in list_snapshots(store, trusted)] == [b.snapshot_id]
    checks = verify_snapshots(store, trusted, identities=idents)
    assert checks and all(c.status is Status.OK for c in checks), [c for c in checks if c.status is not Status.OK]
    target = tmp_path / "restored"
    restore_snapshot(store, trusted, idents, b.snapshot_id, [], target)
    assert _walk(target / str(src).lstrip("/")) == _walk(src)


def test_gc_removes_a_pack_no_snapshot_references(files_env, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i}.conf").write_bytes(f"version a {i}\n".encode() * 50)
    settings = files_env([src], commands=[])
    a = take_snapshot(settings, "app")
    for i in range(20):
        (src / f"f{i}.conf").write_bytes(f"version b {i}\n".encode() * 50)
    b = take_snapshot(settings, "app")
    assert a.packs_new == 1 and b.packs_new == 1 and b.files_unchanged == 0
    store, trusted, idents = _ctx(settings)
    assert len(list(store.list("files/packs/"))) == 4    # two packs, each with its index
    delete_snapshot(store, a.snapshot_id)
    res = collect_garbage(store, trusted, datetime.now(UTC))
    assert res["deleted"] == 2                           # a's pack and its index
    assert all(c.status is Status.OK for c in verify_snapshots(store, trusted, identities=idents))
    target = tmp_path / "restored"
    restore_snapshot(store, trusted, idents, b.snapshot_id, [], target)
    assert _walk(target / str(src).lstrip("/")) == _walk(src)


def test_verify_finds_a_missing_chunk_and_a_tampered_pack(files_env, tmp_path, repo_dir):
    src = _tree(tmp_path / "src")
    (src / "big.bin").write_bytes(os.urandom(2 << 20))    # a chunk of its own; the small files go in a pack
    settings = files_env([src])
    take_snapshot(settings, "app")
    store, trusted, idents = _ctx(settings)
    [chunk] = store.list("files/content/")
    [pack] = [o for o in store.list("files/packs/") if not o.key.endswith(".idx")]
    store.delete(chunk.key)
    path = repo_dir / pack.key
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 1
    path.write_bytes(bytes(raw))
    bad = {c.object: c.status for c in verify_snapshots(store, trusted, identities=idents) if c.status is not Status.OK}
    assert bad == {chunk.key: Status.MISSING, pack.key: Status.UNREADABLE}
    store.delete(pack.key + ".idx")
    bad = {c.object: c.status for c in verify_snapshots(store, trusted) if c.status is not Status.OK}
    assert bad == {chunk.key: Status.MISSING, pack.key + ".idx": Status.UNREADABLE}


def test_command_failure_makes_the_snapshot_partial(files_env, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    settings = files_env([src], commands=[{"name": "bad", "argv": ["sh", "-c", "echo oops >&2; exit 3"]}])
    res = take_snapshot(settings, "app")
    assert res.partial and any("exit 3" in p and "oops" in p for p in res.problems)


def test_snapshot_and_restore_on_the_s3_repository(files_env, tmp_path, s3_bucket, s3_server):
    src = _tree(tmp_path / "src")
    settings = files_env([src], repository=f"s3://{s3_bucket}/ops", settings_extra={"s3_endpoint_url": s3_server})
    first = take_snapshot(settings, "app")
    second = take_snapshot(settings, "app")
    assert second.chunks_new == 0
    store, trusted, idents = _ctx(settings)
    target = tmp_path / "restored"
    restore_snapshot(store, trusted, idents, first.snapshot_id, [], target)
    assert _walk(target / str(src).lstrip("/")) == _walk(src)


def test_in_place_restore_keeps_what_it_overwrites(files_env, tmp_path):
    src = _tree(tmp_path / "src")
    settings = files_env([src])
    snap = take_snapshot(settings, "app")
    conf = src / "etc/nginx/nginx.conf"
    conf.write_bytes(b"broken {\n")
    store, trusted, idents = _ctx(settings)
    res = restore_snapshot(store, trusted, idents, snap.snapshot_id, [str(conf)], None, in_place=True)
    assert conf.read_bytes() == NGINX and res.files == 1
    kept = [p for p in conf.parent.iterdir() if ".bvh-replaced-" in p.name]
    assert len(kept) == 1 and kept[0].read_bytes() == b"broken {\n"
    assert not (Path("/_commands")).exists()


def test_a_target_directory_that_holds_the_files_loses_nothing(files_env, tmp_path):
    """Restored twice into the same directory, a file changed there in between is kept beside
    the restored one (it was unlinked), and the CLI names where it went."""
    src = _tree(tmp_path / "src")
    settings = files_env([src])
    snap = take_snapshot(settings, "app")
    store, trusted, idents = _ctx(settings)
    target = tmp_path / "again"
    restore_snapshot(store, trusted, idents, snap.snapshot_id, [], target)
    conf = target / str(src / "etc/nginx/nginx.conf").lstrip("/")
    conf.write_bytes(b"edited by hand\n")
    res = restore_snapshot(store, trusted, idents, snap.snapshot_id, [str(src / "etc/nginx/nginx.conf")], target)
    assert conf.read_bytes() == NGINX
    kept = [p for p in conf.parent.iterdir() if ".bvh-replaced-" in p.name]
    assert len(kept) == 1 and kept[0].read_bytes() == b"edited by hand\n" and res.replaced == [str(kept[0])]


def test_a_chunk_that_fails_its_check_leaves_the_old_file_and_no_partial_one(files_env, tmp_path, monkeypatch):
    """A damaged chunk stops the restore of that file before it replaces anything: what was
    there stays as it was, and no half-written file (or temporary) is left looking complete."""
    from bvh_ops.errors import IntegrityError
    from bvh_ops.files import restore as restore_mod

    src = _tree(tmp_path / "src")
    settings = files_env([src])
    snap = take_snapshot(settings, "app")
    store, trusted, idents = _ctx(settings)
    target = tmp_path / "t"
    path = str(src / "etc/nginx/nginx.conf")
    conf = target / path.lstrip("/")
    conf.parent.mkdir(parents=True)
    conf.write_bytes(b"the live file\n")
    monkeypatch.setattr(restore_mod, "address", lambda key, data: "0" * 64)  # every chunk fails its check
    with pytest.raises(IntegrityError, match="does not match its address"):
        restore_snapshot(store, trusted, idents, snap.snapshot_id, [path], target)
    assert conf.read_bytes() == b"the live file\n"
    assert sorted(p.name for p in conf.parent.iterdir()) == ["nginx.conf"]


def test_kept_copies_of_long_names_and_of_restores_in_the_same_second(files_env, tmp_path, monkeypatch):
    """A 240-byte name plus the kept suffix is past NAME_MAX (it raised ENAMETOOLONG), and a
    second restore within the same second found the kept name taken (exit 8, as if corrupt):
    each replaced file is kept under a name that fits and is free, and reported where it is."""
    import time as time_mod

    src = tmp_path / "src"
    src.mkdir()
    long_name = "L" * 240
    (src / long_name).write_text("v1\n")
    settings = files_env([src])
    snap = take_snapshot(settings, "app")
    store, trusted, idents = _ctx(settings)
    target = tmp_path / "t"
    restore_snapshot(store, trusted, idents, snap.snapshot_id, [], target)
    restored = target / str(src).lstrip("/") / long_name
    monkeypatch.setattr(time_mod, "strftime", lambda fmt, *a: "20261130T120000")  # every restore in one second
    kept = []
    for edit in ("edit 1\n", "edit 2\n"):
        restored.write_text(edit)
        res = restore_snapshot(store, trusted, idents, snap.snapshot_id, [str(src / long_name)], target)
        assert restored.read_text() == "v1\n" and len(res.replaced) == 1
        kept.append(Path(res.replaced[0]))
    assert kept[0] != kept[1] and [k.read_text() for k in kept] == ["edit 1\n", "edit 2\n"]
    assert all(len(k.name.encode()) <= 255 and k.parent == restored.parent for k in kept)
    # a name cut to fit is not cut inside a UTF-8 character (the kept path must be printable)
    accented = src / ("a" + "é" * 120)
    accented.write_text("v1\n")
    snap2 = take_snapshot(settings, "app")
    restore_snapshot(store, trusted, idents, snap2.snapshot_id, [str(accented)], target)
    (target / str(accented).lstrip("/")).write_text("edit\n")
    (kept_accented,) = restore_snapshot(store, trusted, idents, snap2.snapshot_id, [str(accented)], target).replaced
    assert Path(kept_accented).read_text() == "edit\n" and Path(kept_accented).name.encode("utf-8")
