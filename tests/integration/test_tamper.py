"""Tampering with a stored backup is detected and named; a wrong key is one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bvh_ops.keys import load_identities, write_keypair
from bvh_ops.logical.backup import run_logical_backup
from bvh_ops.repository.open import open_repository
from bvh_ops.repository.verify import Status, verify_backup
from tests.integration.cli import assert_one_line_error, run_cli


@pytest.fixture
def stored(sample_db, repo_dir, make_settings):
    settings = make_settings(sample_db, f"file://{repo_dir}")
    manifest = run_logical_backup(settings).manifest
    bdir = Path(repo_dir) / "backups" / manifest.backup_id
    return settings, manifest, bdir


def statuses(settings, backup_id, deep=False):
    repo, _ = open_repository(settings)
    ids = load_identities(settings.identity) if deep else None
    return {r.object: r for r in verify_backup(repo, backup_id, identities=ids)}


def test_flipped_byte_is_checksum_mismatch_naming_the_object(stored):
    settings, m, bdir = stored
    dump = bdir / "dump.pgcustom"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x40
    dump.write_bytes(bytes(data))
    for deep in (False, True):
        res = statuses(settings, m.backup_id, deep)
        assert res["dump.pgcustom"].status is Status.CHECKSUM_MISMATCH
        assert res["manifest.json"].status is Status.OK


def test_a_drills_kept_dump_is_the_verified_plaintext_and_only_when_it_verified(stored, tmp_path):
    """A deep verify keeps the dump it decrypts for a drill's restore (PreparedCopy) only when the
    object verified: byte for byte the plaintext, its data offsets written into its TOC; a damaged
    object leaves nothing (no copy, no partial file); a copy without room is dropped without
    touching the verify's result."""
    import hashlib

    from bvh_ops.logical.archive import K_OFFSET_POS_SET, read_toc
    from bvh_ops.logical.restore import PreparedCopy, _decrypted, copy_path

    settings, m, bdir = stored
    repo, _ = open_repository(settings)
    ids = load_identities(settings.identity)
    path = copy_path(tmp_path, m.backup_id)
    sink = PreparedCopy(path, m.bytes_in)
    results = verify_backup(repo, m.backup_id, identities=ids, keep={"dump.pgcustom": sink})
    assert all(r.ok for r in results) and sink.dropped is None and path.exists()
    reader, parts = _decrypted(settings, repo, m.backup_id, ids), []
    while chunk := reader.read(1 << 20):
        parts.append(chunk)
    plain, copied = bytearray(b"".join(parts)), bytearray(path.read_bytes())  # a small sample: in memory
    assert len(copied) == len(plain) == m.bytes_in
    facts, entries, _ = read_toc(bytes(copied))
    data = [e for e in entries if e.desc == "TABLE DATA"]
    assert data and all(copied[e.offset_at] == K_OFFSET_POS_SET for e in data)  # pg_restore -j seeks
    for e in data:  # the copy is the plaintext but for those offsets
        for b in (plain, copied):
            b[e.offset_at:e.offset_at + 1 + facts["off_size"]] = bytes(1 + facts["off_size"])
    assert hashlib.sha256(copied).digest() == hashlib.sha256(plain).digest()

    no_room = PreparedCopy(tmp_path / "elsewhere.pgcustom", 1 << 60)
    assert all(r.ok for r in verify_backup(repo, m.backup_id, identities=ids, keep={"dump.pgcustom": no_room}))
    assert no_room.dropped == "no room for the copy" and not list(tmp_path.glob("elsewhere*"))

    path.unlink()
    dump = bdir / "dump.pgcustom"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x40
    dump.write_bytes(bytes(data))
    sink = PreparedCopy(path, m.bytes_in)
    res = {r.object: r for r in verify_backup(repo, m.backup_id, identities=ids, keep={"dump.pgcustom": sink})}
    assert res["dump.pgcustom"].status is Status.CHECKSUM_MISMATCH
    assert sink.dropped and not list(tmp_path.glob("bvh-restore-*"))


class _Lengths:
    """A deep verify's sink that only records the lengths of the pieces it is handed."""

    def __init__(self) -> None:
        self.lengths: list[int] = []

    def write(self, chunk: bytes) -> None:
        self.lengths.append(len(chunk))

    def commit(self) -> None:
        pass

    def abort(self) -> None:
        pass


@pytest.mark.parametrize("where", ["mid-dump", "last piece"])
def test_a_full_disk_under_the_kept_copy_drops_the_copy_not_the_backup(stored, tmp_path, where):
    """The local disk filling up under a drill's kept dump (here a file size limit: the write
    that crosses it is short, its tail left in the file's buffer, the next write fails) is the
    copy's problem alone: the object still verifies OK, the copy is dropped and no partial file
    is left — never "read failed: File too large", a healthy backup reported as unreadable."""
    import resource
    import signal

    from bvh_ops.logical.restore import PreparedCopy, copy_path

    settings, m, _ = stored
    repo, _ = open_repository(settings)
    ids = load_identities(settings.identity)
    pieces = _Lengths()
    assert all(r.ok for r in verify_backup(repo, m.backup_id, identities=ids, keep={"dump.pgcustom": pieces}))
    lengths = pieces.lengths
    assert len(lengths) >= 2 and min(lengths) > 100, lengths
    # The write of the first (mid-dump) or of the last piece stops 100 bytes short, kept in the
    # file's buffer: the next write, or the commit's writing of the data offsets, fails on it.
    limit = (lengths[0] if where == "mid-dump" else sum(lengths)) - 100
    path = copy_path(tmp_path, m.backup_id)
    sink = PreparedCopy(path, m.bytes_in)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    before = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        results = verify_backup(repo, m.backup_id, identities=ids, keep={"dump.pgcustom": sink})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, before)
    assert all(r.ok for r in results), [(r.object, r.status, r.detail) for r in results]
    assert sink.dropped and "too large" in sink.dropped
    assert not list(tmp_path.glob("bvh-restore-*"))


def test_truncated_object_is_size_mismatch(stored):
    settings, m, bdir = stored
    dump = bdir / "dump.pgcustom"
    dump.write_bytes(dump.read_bytes()[:-1000])
    assert statuses(settings, m.backup_id)["dump.pgcustom"].status is Status.SIZE_MISMATCH


def test_missing_object_is_reported_and_verify_goes_on(stored):
    settings, m, bdir = stored
    (bdir / "dump.pgcustom").unlink()
    (bdir / "manifest.json").unlink()
    res = statuses(settings, m.backup_id)
    assert res["manifest.json"].status is Status.MISSING
    assert res["manifest.json.copy"].status is Status.OK  # the copy still proves the object list
    assert res["dump.pgcustom"].status is Status.MISSING


def test_edited_manifest_is_bad_signature(stored):
    settings, m, bdir = stored
    for name in ("manifest.json", "manifest.json.copy"):
        doc = json.loads((bdir / name).read_text())
        doc["manifest"]["tables"][0]["rows"] += 1
        (bdir / name).write_text(json.dumps(doc))
    res = statuses(settings, m.backup_id)
    assert res["manifest.json"].status is Status.BAD_SIGNATURE
    assert res["manifest.json.copy"].status is Status.BAD_SIGNATURE


def test_a_deep_verify_that_never_reaches_the_dump_leaves_no_partial_copy(stored, tmp_path):
    """No trusted manifest (so no object is read) or no such object in it: the drill's sink is
    aborted all the same — no open file, no ``.partial`` left in the scratch directory."""
    from bvh_ops.logical.restore import PreparedCopy, copy_path

    settings, m, bdir = stored
    repo, _ = open_repository(settings)
    ids = load_identities(settings.identity)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    other = PreparedCopy(scratch / "other.pgcustom", 1)
    assert all(r.ok for r in verify_backup(repo, m.backup_id, identities=ids, keep={"no such object": other}))
    assert other.dropped and not list(scratch.iterdir())

    for name in ("manifest.json", "manifest.json.copy"):
        doc = json.loads((bdir / name).read_text())
        doc["manifest"]["tables"][0]["rows"] += 1
        (bdir / name).write_text(json.dumps(doc))
    sink = PreparedCopy(copy_path(scratch, m.backup_id), m.bytes_in)
    res = {r.object: r for r in verify_backup(repo, m.backup_id, identities=ids, keep={"dump.pgcustom": sink})}
    assert res["manifest.json"].status is Status.BAD_SIGNATURE and "dump.pgcustom" not in res
    assert sink.dropped and not list(scratch.iterdir())


def test_restore_refuses_an_edited_manifest(stored, fresh_db):
    from bvh_ops.errors import IntegrityError
    from bvh_ops.logical.restore import restore_logical

    settings, m, bdir = stored
    for name in ("manifest.json", "manifest.json.copy"):
        doc = json.loads((bdir / name).read_text())
        doc["manifest"]["objects"][0]["plaintext_blake3"] = "0" * 64
        (bdir / name).write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match="refusing to restore"):
        restore_logical(settings, m.backup_id, fresh_db())


def cli_env(settings, identity=None) -> dict[str, str]:
    return {
        "BVH_OPS_DATABASE_URL": settings.database_url.get_secret_value(),
        "BVH_OPS_REPOSITORY": settings.repository,
        "BVH_OPS_RECIPIENTS": ",".join(str(p) for p in settings.recipients),
        "BVH_OPS_IDENTITY": str(identity or settings.identity),
        "BVH_OPS_STATE_DIR": str(settings.state_dir),
    }


def test_cli_verify_json_names_every_object_and_exit_codes(stored):
    settings, m, bdir = stored
    ok = run_cli("verify", m.backup_id, "--deep", "--json", env=cli_env(settings))
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["ok"] is True
    assert {r["object"] for r in doc["results"]} == {f"{m.backup_id}/{n}" for n in
                                                     ("manifest.json", "manifest.json.copy", "dump.pgcustom")}
    dump = bdir / "dump.pgcustom"
    data = bytearray(dump.read_bytes())
    data[100] ^= 1
    dump.write_bytes(bytes(data))
    bad = run_cli("verify", m.backup_id, "--json", env=cli_env(settings))
    assert bad.returncode != 0
    statuses_ = {r["object"].split("/")[-1]: r["status"] for r in json.loads(bad.stdout)["results"]}
    assert statuses_["dump.pgcustom"] == "CHECKSUM_MISMATCH"


def test_wrong_identity_is_one_clear_line(stored, tmp_path, fresh_db):
    settings, m, _ = stored
    _, other_key = write_keypair(tmp_path / "other")
    env = cli_env(settings, identity=other_key)
    proc = run_cli("verify", m.backup_id, "--deep", env=env)  # the key, not damage: exit 7, not 8
    assert proc.returncode == 7
    assert_one_line_error(proc, "not one backup", "BVH_OPS_IDENTITY")
    proc = run_cli("restore", m.backup_id, "--into", fresh_db(), env=env)
    assert_one_line_error(proc, "no identity matches", "BVH_OPS_IDENTITY")


def _relations(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                            "WHERE n.nspname = 'public'").fetchone()[0]


@pytest.fixture
def three(sample_db, repo_dir, make_settings):
    """Three logical backups L1 < L2 < L3 of the sample database."""
    settings = make_settings(sample_db, f"file://{repo_dir}")
    ids = [run_logical_backup(settings).manifest.backup_id for _ in range(3)]
    return settings, ids, Path(repo_dir) / "backups"


def test_a_backup_copied_over_another_is_refused_and_never_latest(three, fresh_db):
    """L1's directory contents copied into L3's: verify fails, restore L3 refuses, and
    `latest` is L2 (the newest backup whose manifest belongs where it sits)."""
    import shutil

    from bvh_ops.errors import IntegrityError
    from bvh_ops.logical.restore import restore_logical

    settings, (l1, l2, l3), backups = three
    for f in (backups / l3).iterdir():
        f.unlink()
    for f in (backups / l1).iterdir():
        shutil.copy(f, backups / l3 / f.name)
    res = statuses(settings, l3, deep=True)
    assert all(not r.ok for r in res.values()), res
    assert "that of backup " + l1 in res["manifest.json"].detail
    with pytest.raises(IntegrityError, match="copied or moved"):
        restore_logical(settings, l3, fresh_db())
    repo, _ = open_repository(settings)
    assert repo.latest("logical").backup_id == l2
    assert {r.backup_id: r.status for r in repo.list_backups()}[l3] == "damaged"


@pytest.mark.parametrize("hashed_first", [True, False], ids=["small-object-hashed-first", "same-size-large-object"])
def test_a_swapped_dump_object_writes_nothing_into_the_target(three, fresh_db, monkeypatch, hashed_first):
    """L1's dump object (bytes of a genuine backup) put in place of L2's: the restore fails
    before a single table reaches the target, and says nothing was written — caught by the
    stored sha256 up front for small objects, by the object's binding for ones too large to hash
    twice."""
    import shutil

    from bvh_ops.errors import BvhOpsError
    from bvh_ops.logical.restore import restore_logical
    from bvh_ops.repository import verify

    settings, (l1, l2, _), backups = three
    shutil.copy(backups / l1 / "dump.pgcustom", backups / l2 / "dump.pgcustom")
    if not hashed_first:
        # Too large to hash twice, and cut or padded to the size the manifest expects: only
        # the object's binding, read first, can tell.
        monkeypatch.setattr(verify, "PREFLIGHT_HASH_BYTES", 0)
        repo, _ = open_repository(settings)
        size = next(o.stored_size for o in repo.trusted_manifest(l2).objects if o.name == "dump.pgcustom")
        data = (backups / l2 / "dump.pgcustom").read_bytes()
        (backups / l2 / "dump.pgcustom").write_bytes(data[:size] + b"\0" * max(0, size - len(data)))
    target = fresh_db()
    # The two dumps may differ in size (the dump's own timestamps): then the size check, read
    # first, names it; equal sizes leave it to the stored sha256. Either way nothing is restored.
    expected = "(sha256 differs from its manifest|bytes, its manifest says).*nothing was restored" if hashed_first \
        else \
        f"restore of backup {l2}.*written as backups/{l1}/dump.pgcustom.*nothing was written"
    with pytest.raises(BvhOpsError, match=expected):
        restore_logical(settings, l2, target)
    assert _relations(target) == 0


def test_forged_manifests_do_not_drive_latest_or_retention(three, tmp_path, fresh_db):
    """Two manifests dated 2099, signed by a key nobody trusts: `latest` and retention ignore
    them (reported UNTRUSTED, not deleted), genuine backups keep their redundancy."""
    import dataclasses

    from bvh_ops.expire import apply_plan
    from bvh_ops.keys import load_or_create_host_key
    from bvh_ops.logical.restore import restore_logical
    from bvh_ops.repository.manifest import sign_manifest

    settings, (l1, l2, l3), backups = three
    repo, _ = open_repository(settings)
    genuine = repo.trusted_manifest(l3)
    rogue = load_or_create_host_key(tmp_path / "rogue")
    forged = []
    for i in range(2):
        fid = f"20990101T00000{i}Z-logical-f0f0f{i}"
        m = dataclasses.replace(genuine, backup_id=fid, started_at=f"2099-01-01T00:00:0{i}+00:00",
                                finished_at=f"2099-01-01T00:00:0{i}+00:00")
        (backups / fid).mkdir()
        for name in ("manifest.json", "manifest.json.copy"):
            (backups / fid / name).write_bytes(sign_manifest(m, rogue))
        forged.append(fid)
    assert repo.latest("logical").backup_id == l3
    from datetime import UTC, datetime, timedelta

    from bvh_ops.repository.gfs import Policy

    plan = apply_plan(repo, now=datetime.now(UTC) + timedelta(days=400),
                      policy=Policy(keep_daily=0, keep_weekly=0, keep_monthly=0, keep_yearly=0, min_redundancy=2))
    actions = {d["backup_id"]: d["action"] for d in plan["decisions"]}
    assert actions == {l3: "KEEP", l2: "KEEP", l1: "DELETE", forged[0]: "UNTRUSTED", forged[1]: "UNTRUSTED"}
    assert all((backups / f / "manifest.json").exists() for f in forged)
    result = restore_logical(settings, "latest", fresh_db())
    assert result.backup_id == l3 and result.ok


def test_a_failed_verify_is_reported_as_data_corruption_and_cleared_when_it_passes(stored, fresh_db):
    import psycopg

    from bvh_ops.opsdb.migrations import migrate

    settings, m, bdir = stored
    ops = fresh_db("_ops")
    with psycopg.connect(ops, autocommit=True) as conn:
        migrate(conn)
    env = {**cli_env(settings), "BVH_OPS_OPS_DATABASE_URL": ops}
    dump = bdir / "dump.pgcustom"
    good = dump.read_bytes()
    data = bytearray(good)
    data[100] ^= 1
    dump.write_bytes(bytes(data))
    assert run_cli("verify", m.backup_id, "--no-wal", env=env).returncode == 8

    def active():
        with psycopg.connect(ops) as conn:
            return conn.execute("SELECT severity, title, detail FROM ops.findings WHERE source = 'verify' "
                                "AND cleared_at IS NULL").fetchall()

    ((severity, title, detail),) = active()
    assert severity == "critical" and title == f"data corruption detected: backup {m.backup_id} failed verify"
    assert "dump.pgcustom: CHECKSUM_MISMATCH" in detail
    dump.write_bytes(good)
    assert run_cli("verify", m.backup_id, "--no-wal", env=env).returncode == 0
    assert active() == []


def test_the_plaintext_digest_is_checked_as_the_manifest_records_it(stored, fresh_db):
    """A new backup's dump carries BLAKE3 of its plaintext; a (validly signed) manifest whose
    digest is wrong fails deep verify and the restore, naming the hash. An older backup's entry,
    sha256 only, still verifies deep against the same bytes."""
    import hashlib
    from dataclasses import replace

    from bvh_ops.errors import IntegrityError
    from bvh_ops.keys import load_or_create_host_key
    from bvh_ops.logical.restore import restore_logical
    from bvh_ops.repository.manifest import sign_manifest
    from bvh_ops.repository.repo import object_key
    from bvh_ops.stream import DecryptingReader, envelopes_from_json

    settings, _, bdir = stored
    repo, _ = open_repository(settings)
    m = repo.load_manifest(stored[1].backup_id).manifest  # as committed: with its envelopes
    (obj,) = m.objects
    assert obj.plaintext_sha256 == "" and len(obj.plaintext_blake3) == 64
    key = object_key(m.backup_id, obj)
    with repo.store.open_reader(key) as body:
        plain = DecryptingReader(body, load_identities(settings.identity), bind=key,
                                 envelopes=envelopes_from_json(obj.envelopes)).read()
    host_key = load_or_create_host_key(settings.state_dir)

    def resign(entry) -> None:
        raw = sign_manifest(replace(m, objects=(entry,)), host_key)
        for name in ("manifest.json", "manifest.json.copy"):
            (bdir / name).write_bytes(raw)

    resign(replace(obj, plaintext_blake3="", plaintext_sha256=hashlib.sha256(plain).hexdigest()))
    res = statuses(settings, m.backup_id, deep=True)
    assert res["dump.pgcustom"].status is Status.OK and "plaintext sha256 matches" in res["dump.pgcustom"].detail

    resign(replace(obj, plaintext_blake3="0" * 64))
    res = statuses(settings, m.backup_id, deep=True)
    assert res["manifest.json"].status is Status.OK
    assert res["dump.pgcustom"].status is Status.CHECKSUM_MISMATCH and "plaintext blake3 differs" in res["dump.pgcustom"].detail
    with pytest.raises(IntegrityError, match="blake3 differs from the manifest"):
        restore_logical(settings, m.backup_id, fresh_db())
