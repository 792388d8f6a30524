"""Key rotation end to end, on file:// and on moto's S3 server: a repository holding logical
backups (one written in format 2), WAL files (one format 2), a log archive and a file-set
snapshot is rotated from key A to key B with --remove A. The run is interrupted half-way (in the
middle of rewriting a format-2 WAL file), every item still opens with A or with B, a re-run
finishes, and afterwards B alone restores and fetches everything while A opens nothing."""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from bvh_ops.errors import BvhOpsError, ConfigError, CryptoError
from bvh_ops.files.catalog import iter_entries
from bvh_ops.files.content import open_sealed_key
from bvh_ops.files.packs import BlobReader
from bvh_ops.files.snapshot import take_snapshot
from bvh_ops.keys import load_identities, load_recipients, write_keypair
from bvh_ops.logical.backup import run_logical_backup
from bvh_ops.logical.restore import restore_logical
from bvh_ops.logs.archive import archive_key, export_day, verify_archive
from bvh_ops.opsdb.migrations import migrate
from bvh_ops.repository.manifest import sign_manifest
from bvh_ops.repository.open import open_repository
from bvh_ops.repository.repo import MANIFEST, MANIFEST_COPY, backup_prefix
from bvh_ops.repository.verify import verify_backup
from bvh_ops.rotation.run import JOURNAL, rotate
from bvh_ops.stream import EncryptingWriter, seal_data_key
from bvh_ops.wal.store import wal_fetch, wal_key, wal_push, wal_upload

NOW = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
DAY = (NOW - timedelta(days=40)).date()
DAY2 = DAY - timedelta(days=1)


def _segment(segno: int, size: int = 300_000, sysid: int = 7) -> bytes:
    import os
    import struct

    head = struct.pack("<HHIQI4xQII", 0xD118, 0x0002, 1, segno * (16 << 20), 0, sysid, 16 << 20, 8192)
    return head + os.urandom(size - len(head))


def _format_2(monkeypatch, module) -> None:
    """Make ``module`` write format-2 objects, as bvh-ops did before format 3."""
    monkeypatch.setattr(module, "EncryptingWriter", functools.partial(EncryptingWriter, format_version=2))


def _strip_manifest_envelopes(settings, backup_id) -> None:
    """A format-2 backup's manifest has no envelopes (they were in the object header)."""
    repo, host_key = open_repository(settings)
    m = repo.trusted_manifest(backup_id)
    raw = sign_manifest(replace(m, objects=tuple(replace(o, envelopes=()) for o in m.objects)), host_key)
    for name in (MANIFEST_COPY, MANIFEST):
        repo.store.put_bytes(backup_prefix(backup_id) + name, raw)


@pytest.fixture(params=["file", "s3"])
def world(request, fresh_db, make_settings, tmp_path, monkeypatch):
    """A repository with every kind of sealed item, sealed to key A."""
    return _make_world(request, request.param, fresh_db, make_settings, tmp_path, monkeypatch)


@pytest.fixture
def file_world(request, fresh_db, make_settings, tmp_path, monkeypatch):
    return _make_world(request, "file", fresh_db, make_settings, tmp_path, monkeypatch)


def _make_world(request, where, fresh_db, make_settings, tmp_path, monkeypatch):
    if where == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        repository, extra = f"s3://{bucket}/repo", {"s3_endpoint_url": request.getfixturevalue("s3_server")}
    else:
        (tmp_path / "repo").mkdir()
        repository, extra = f"file://{tmp_path / 'repo'}", {}
    a_pub, a_key = write_keypair(tmp_path / "a")
    b_pub, b_key = write_keypair(tmp_path / "b")
    src = tmp_path / "etc"
    src.mkdir()
    (src / "app.conf").write_text("draw_secret = 42\n")
    dsn = fresh_db("_src")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE tickets (id int PRIMARY KEY, owner text)")
        conn.execute("INSERT INTO tickets SELECT g, 'owner ' || g FROM generate_series(1, 500) g")
    ops_dsn = fresh_db("_ops")
    files = [{"name": "app", "class": "application", "paths": [str(src)]}]
    settings = make_settings(dsn, repository, recipients=[a_pub], identity=a_key, ops_database_url=ops_dsn,
                             file_sets=files, **extra)

    b3 = run_logical_backup(settings).manifest.backup_id
    import bvh_ops.repository.repo as repo_mod
    import bvh_ops.wal.store as wal_mod

    with monkeypatch.context() as m:
        _format_2(m, repo_mod)
        b2 = run_logical_backup(settings).manifest.backup_id
        _strip_manifest_envelopes(settings, b2)
        seg = tmp_path / "000000010000000000000002"
        seg.write_bytes(_segment(2))
        _format_2(m, wal_mod)
        wal_push(settings, str(seg))
    repo, _ = open_repository(settings)
    key2 = wal_key(seg.name) + ".json"
    entry = json.loads(repo.store.get_bytes(key2))
    entry.pop("envelopes")
    repo.store.put_bytes(key2, json.dumps(entry).encode())
    for n in (3, 4):
        s = tmp_path / f"00000001000000000000000{n}"
        s.write_bytes(_segment(n))
        if n == 4:  # the leftover of an upload that never committed: 4's object goes to an alternate key
            wal_upload(settings, str(s))
        wal_push(settings, str(s))
    assert "object" in json.loads(repo.store.get_bytes(wal_key("000000010000000000000004") + ".json"))
    with psycopg.connect(ops_dsn, autocommit=True) as conn:
        migrate(conn)
        conn.execute("SELECT ops.ensure_log_partition('security', %s)", (DAY,))
        conn.execute("INSERT INTO ops.log_records (at, category, source, level, event, fields, file_id, file_offset) "
                     "SELECT %s::timestamptz + g * interval '1 s', 'security', 'platform', 'warning', 'auth.x', "
                     "'{}'::jsonb, '1:2', g FROM generate_series(1, 300) g", (datetime.combine(DAY, datetime.min.time(), UTC),))
        export_day(conn, settings, repo.store, "security", DAY, NOW)
        # and the day before, archived in format 2 (envelopes in the header, none in the index)
        import bvh_ops.logs.archive as logs_mod

        conn.execute("SELECT ops.ensure_log_partition('security', %s)", (DAY2,))
        conn.execute("INSERT INTO ops.log_records (at, category, source, level, event, fields, file_id, file_offset) "
                     "SELECT %s::timestamptz + g * interval '1 s', 'security', 'platform', 'warning', 'auth.y', "
                     "'{}'::jsonb, '1:3', g FROM generate_series(1, 200) g", (datetime.combine(DAY2, datetime.min.time(), UTC),))
        with monkeypatch.context() as m:
            _format_2(m, logs_mod)
            export_day(conn, settings, repo.store, "security", DAY2, NOW)
        key = archive_key("security", DAY2) + ".json"
        index = json.loads(repo.store.get_bytes(key))
        index.pop("envelopes")
        repo.store.put_bytes(key, json.dumps(index).encode())
    # The file sets' content key sealed into the repository by an older bvh-ops (format 2).
    import os

    import bvh_ops.files.content as content_mod
    from bvh_ops.files.content import load_content_key

    with monkeypatch.context() as m:
        _format_2(m, content_mod)
        dk = os.urandom(32)
        load_content_key(settings.state_dir, repo.store, data_key=dk,
                         envelopes=seal_data_key(dk, load_recipients([a_pub])), identities=None)
    snap = take_snapshot(settings, "app").snapshot_id
    return {"settings": settings, "a": (a_pub, a_key), "b": (b_pub, b_key), "backups": [b3, b2], "snapshot": snap,
            "wal": ["000000010000000000000002", "000000010000000000000003", "000000010000000000000004"],
            "logs": [archive_key("security", DAY), archive_key("security", DAY2)], "ops": ops_dsn, "tmp": tmp_path, "fresh_db": fresh_db}


def _opens(w, identity: Path) -> dict[str, bool]:
    """Which items open (decrypt completely) with ``identity`` alone."""
    s = _with(w["settings"], identity=identity)
    repo, _ = open_repository(s)
    idents = load_identities(identity)
    got = {}
    for b in w["backups"]:
        got[b] = all(r.ok for r in verify_backup(repo, b, identities=idents))
    for name in w["wal"]:
        try:
            wal_fetch(s, name, str(w["tmp"] / f"fetched-{name}"))
            got[name] = True
        except BvhOpsError:
            got[name] = False
    for log_key in w["logs"]:
        try:
            index = json.loads(repo.store.get_bytes(log_key + ".json"))
            verify_archive(s, repo.store, log_key, index)
            got[log_key] = True
        except BvhOpsError:
            got[log_key] = False
    try:
        entries = [e for e in iter_entries(repo.store, w["snapshot"], idents) if e.type == "file"]
        with BlobReader(repo.store, idents) as blobs:   # a chunk of its own or a blob in a pack
            got["files"] = all(blobs.read(c) for e in entries for c in e.chunks)
    except BvhOpsError:
        got["files"] = False
    for sealed in repo.store.list("files/keys/content-"):
        kid = sealed.key.rsplit("content-", 1)[1].removesuffix(".enc")
        try:
            got[sealed.key] = bool(open_sealed_key(repo.store, kid, idents))
        except BvhOpsError:
            got[sealed.key] = False
    return got


def _with(settings, **changes):
    return settings.model_copy(update=changes)


class Crash(Exception):
    pass


def test_rotation_end_to_end_with_an_interrupted_run(world):
    w = world
    a_pub, a_key = w["a"]
    b_pub, b_key = w["b"]
    s = w["settings"]
    a_id = load_recipients([a_pub])[0].key_id
    b_id = load_recipients([b_pub])[0].key_id
    assert all(_opens(w, a_key).values()) and not any(_opens(w, b_key).values())

    # Refusals, one line each, nothing changed.
    with pytest.raises(ConfigError, match="last recipient"):
        rotate(s, add=[], remove=[a_id])
    with pytest.raises(ConfigError, match="still in the configured recipients"):
        rotate(s, add=[b_pub], remove=[a_id])
    with pytest.raises(ConfigError, match="no backup, WAL file"):
        rotate(_with(s, recipients=[b_pub]), add=[], remove=["0123456789abcdef"])
    bad = w["tmp"] / "bad.pub"
    bad.write_text("bvh-ops-recipient-v1 x25519 AAAA\n")
    with pytest.raises(ConfigError, match="malformed"):
        rotate(s, add=[bad], remove=[])

    # The operator puts B into `recipients` (A out) and rotates, removing A.
    s2 = _with(s, recipients=[b_pub])
    dry = rotate(s2, add=[], remove=[str(a_pub)], dry_run=True)
    assert dry.planned["rewrap"] == {"backup": 1, "wal": 2, "log": 1, "files": 1}
    assert dry.planned["rewrite"] == {"backup": 1, "wal": 1, "log": 1, "files": 1}
    assert all(_opens(w, a_key).values())                          # a dry run changes nothing

    # Interrupted: after two items, then in the middle of the format-2 WAL file's rewrite.
    done = []

    def after_two(stage, ref):
        if stage == "item-done":
            done.append(ref)
            if len(done) == 2:
                raise Crash()

    with pytest.raises(Crash):
        rotate(s2, add=[], remove=[a_id], checkpoint=after_two)

    def in_wal_rewrite(stage, ref):
        if stage == "rewrite-recorded":
            raise Crash()

    with pytest.raises(Crash):
        rotate(s2, add=[], remove=[a_id], checkpoint=in_wal_rewrite)
    with_a, with_b = _opens(w, a_key), _opens(w, b_key)
    assert all(with_a[k] or with_b[k] for k in with_a), (with_a, with_b)   # never unreadable
    assert any(with_b.values()) and any(with_a.values())                    # half-way for real

    # The re-run finishes the job and reports what it did.
    report = rotate(s2, add=[], remove=[a_id])
    assert report.ok and not report.failed and not report.left, report.to_json()
    assert report.target == (b_id,)
    assert not any(_opens(w, a_key).values())                      # A opens nothing any more
    assert all(_opens(w, b_key).values())                          # B opens everything

    # B alone restores a backup (the rewritten format-2 one) and fetches WAL.
    repo, _ = open_repository(s2)
    b2 = w["backups"][1]
    m = repo.trusted_manifest(b2)
    assert m.manifest_version >= 2 and m.rotated_at and m.objects[0].stored_name == "dump.pgcustom.f3"
    assert repo.store.stat(backup_prefix(b2) + "dump.pgcustom") is None        # old object removed
    assert repo.store.stat(backup_prefix(w["backups"][0]) + "dump.pgcustom") is not None  # rewrap: untouched
    sb = _with(s2, identity=b_key)
    result = restore_logical(sb, b2, w["fresh_db"]("_target"))
    assert result.ok and [c.actual for c in result.comparisons if c.name == "public.tickets"][0].startswith("500:")
    wal_fetch(sb, "000000010000000000000002", str(w["tmp"] / "seg2"))
    assert (w["tmp"] / "seg2").read_bytes() == (w["tmp"] / "000000010000000000000002").read_bytes()

    # Journal and audit.
    journal = json.loads(repo.store.get_bytes(JOURNAL))
    assert journal["state"] == "done" and journal["target_key_ids"] == [b_id]
    with psycopg.connect(w["ops"]) as conn:
        actions = [r[0] for r in conn.execute("SELECT action FROM ops.audit_chain ORDER BY seq")]
    assert "keys.rotate" in actions

    # Nothing left to do: a third run changes nothing.
    again = rotate(s2, add=[], remove=[])
    assert not again.rewrapped and not again.rewritten and again.ok
    with pytest.raises(CryptoError):
        wal_fetch(_with(s2, identity=a_key), "000000010000000000000003", str(w["tmp"] / "x"))


def test_host_key_rotation_keeps_old_manifests_verifiable(make_settings, tmp_path):
    from bvh_ops.repository.manifest import Manifest
    from bvh_ops.repository.repo import Repository
    from bvh_ops.rotation.host import rotate_host_key
    from bvh_ops.storage import open_store

    (tmp_path / "repo").mkdir()
    (tmp_path / "replica").mkdir()
    settings = make_settings("postgresql://unused@localhost/x", f"file://{tmp_path / 'repo'}",
                             replica_repository=f"file://{tmp_path / 'replica'}")
    repo, old_key = open_repository(settings)
    m = Manifest(backup_id="20261128T020000Z-logical-abcdef", kind="logical", tool_version="t", started_at="s",
                 finished_at="2026-11-28T02:00:00+00:00", database="d", server_version="18", server_version_num=180000,
                 system_identifier="1", snapshot_id="", dump_format="custom", compression="zstd-3", kem="x25519",
                 key_ids=(), host="h")
    repo.begin(m.backup_id).commit(m, old_key)
    Repository(open_store(settings.for_replica())).begin(m.backup_id).commit(m, old_key)   # as replicated
    result = rotate_host_key(settings.state_dir, [repo.store, open_store(settings.for_replica())])
    assert result["old_key_id"] == old_key.key_id != result["new_key_id"]
    assert Path(result["retired_key_file"]).exists()                       # kept, renamed, 0600
    assert Path(result["retired_key_file"]).stat().st_mode & 0o777 == 0o600
    repo2, new_key = open_repository(settings)
    assert new_key.key_id == result["new_key_id"]
    assert repo2.load_manifest(m.backup_id).signature_ok                    # through the transition record
    replica, _ = open_repository(settings.for_replica())
    assert replica.load_manifest(m.backup_id).signature_ok                  # the replica has its own copy
    # Without the record the old signature is not trusted any more.
    repo2.store.delete(result["record"])
    repo3, _ = open_repository(settings)
    assert not repo3.load_manifest(m.backup_id).signature_ok


@pytest.fixture
def summarizing(tmp_path):
    """A cluster of its own with summarize_wal on (native incrementals), not the shared one."""
    from bvh_ops.pg.cluster import EmbeddedCluster

    cluster = EmbeddedCluster(tmp_path / "pg", extra_conf={"summarize_wal": "on"})
    cluster.start()
    yield cluster
    cluster.stop()


def test_physical_full_and_incremental_are_rotated_and_restore_with_the_new_key(summarizing, make_settings, tmp_path):
    """A physical chain sealed to A (the full written in format 2): after `--remove A` the new
    key alone deep-verifies the chain and restores the full into a server that starts."""
    import bvh_ops.repository.repo as repo_mod
    from bvh_ops.pg.catalog import create_database
    from bvh_ops.pg.tools import embedded_bin_dir
    from bvh_ops.physical.backup import run_physical_backup
    from bvh_ops.physical.restore import restore_physical, stop_server

    (tmp_path / "repo").mkdir()
    a_pub, a_key = write_keypair(tmp_path / "a")
    b_pub, b_key = write_keypair(tmp_path / "b")
    pg = summarizing
    create_database(pg.dsn(), "rotphys")
    with psycopg.connect(pg.dsn("rotphys"), autocommit=True) as conn:
        conn.execute("CREATE TABLE phys AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g")
    settings = make_settings(pg.dsn("rotphys"), f"file://{tmp_path / 'repo'}", recipients=[a_pub], identity=a_key)
    mp = pytest.MonkeyPatch()
    try:
        _format_2(mp, repo_mod)
        full = run_physical_backup(settings, "full").manifest.backup_id
    finally:
        mp.undo()
    _strip_manifest_envelopes(settings, full)
    with psycopg.connect(pg.dsn("rotphys"), autocommit=True) as conn:
        conn.execute("INSERT INTO phys VALUES (0, 'after the full')")
    incr = run_physical_backup(settings, "incremental").manifest
    assert incr.kind == "incremental" and incr.objects and incr.parent_id == full
    a_id = load_recipients([a_pub])[0].key_id
    report = rotate(_with(settings, recipients=[b_pub]), add=[], remove=[a_id])
    assert report.ok and report.rewritten.get("backup") == 1, report.to_json()
    assert report.rewrapped.get("backup") == 1

    sb = _with(settings, recipients=[b_pub], identity=b_key)
    repo, _ = open_repository(sb)
    for bid in (full, incr.backup_id):
        assert all(r.ok for r in verify_backup(repo, bid, identities=load_identities(b_key))), bid
        assert not any(r.ok for r in verify_backup(repo, bid, identities=load_identities(a_key))
                       if r.object != "manifest.json" and r.object != "manifest.json.copy")
    out = restore_physical(sb, full, tmp_path / "restored", start=True)
    try:
        assert out.verified and out.started
        with psycopg.connect(f"postgresql://postgres:{pg.password}@127.0.0.1:{out.port}/rotphys") as conn:
            assert conn.execute("SELECT count(*) FROM phys").fetchone()[0] == 20000   # the moment of the full
    finally:
        stop_server(tmp_path / "restored", embedded_bin_dir())


def test_cli_rotate_dry_run_json_and_one_line_refusals(keypair, tmp_path):
    """The operator's view: `keys rotate --dry-run --json` on a repository with WAL, then the
    refusals as one line each, exit non-zero, no traceback; `keys rotate-host` prints the new key."""
    from tests.integration.cli import assert_one_line_error, run_cli

    pub, key = keypair
    (tmp_path / "repo").mkdir()
    env = {"BVH_OPS_REPOSITORY": f"file://{tmp_path / 'repo'}", "BVH_OPS_RECIPIENTS": str(pub),
           "BVH_OPS_IDENTITY": str(key), "BVH_OPS_STATE_DIR": str(tmp_path / "state")}
    seg = tmp_path / "000000010000000000000005"
    seg.write_bytes(_segment(5))
    assert run_cli("wal-push", str(seg), env=env).returncode == 0
    new_pub, _ = write_keypair(tmp_path / "new")
    kid = load_recipients([pub])[0].key_id
    proc = run_cli("keys", "rotate", "--add", str(new_pub), "--dry-run", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["dry_run"] and doc["planned"]["rewrap"] == {"wal": 1} and doc["key_ids_in_use"] == [kid]
    assert "is not in `recipients`" in doc["warnings"][0]      # --add alone: new backups not sealed to it
    assert_one_line_error(run_cli("keys", "rotate", "--remove", kid, env=env), "last recipient")
    assert_one_line_error(run_cli("keys", "rotate", "--add", str(new_pub), "--remove", kid, env=env),
                          "still in the configured recipients", "recipients")
    assert_one_line_error(run_cli("keys", "rotate", "--remove", "not-a-key", env=env), "--remove not-a-key")
    proc = run_cli("keys", "rotate", "--add", str(new_pub), env=env)
    assert proc.returncode == 0 and "rewrapped: 1 wal" in proc.stdout, proc.stdout + proc.stderr
    # --replica rotates the replica repository (here: one WAL file pushed there, still sealed to the old key)
    (tmp_path / "replica").mkdir()
    assert run_cli("wal-push", str(seg), env={**env, "BVH_OPS_REPOSITORY": f"file://{tmp_path / 'replica'}"}
                   ).returncode == 0
    env["BVH_OPS_REPLICA_REPOSITORY"] = f"file://{tmp_path / 'replica'}"
    proc = run_cli("keys", "rotate", "--replica", "--add", str(new_pub), "--json", env=env)
    assert proc.returncode == 0 and json.loads(proc.stdout)["rewrapped"] == {"wal": 1}, proc.stderr
    proc = run_cli("keys", "rotate-host", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)["record"]
    assert record.startswith("keys/host/")
    assert (tmp_path / "repo" / record).exists() and (tmp_path / "replica" / record).exists()


@pytest.mark.parametrize("stage", ["object-rewritten", "manifest-copy", "committed", "rewrite-recorded",
                                   "object-swapped", "entry-final"])
def test_a_crash_at_any_step_leaves_everything_readable_and_a_rerun_finishes(file_world, stage):
    """Killed at each step of a rewrite (backup: re-encrypted object written, manifest copy
    written, committed; WAL/log: rewrite recorded, object swapped, entry finalised): every item
    opens with the old key or the new one, and the next run completes."""
    w = file_world
    a_pub, a_key = w["a"]
    b_pub, b_key = w["b"]
    s2 = _with(w["settings"], recipients=[b_pub])
    a_id = load_recipients([a_pub])[0].key_id

    def crash(at, ref):
        if at == stage:
            raise Crash(ref)

    with pytest.raises(Crash):
        rotate(s2, add=[], remove=[a_id], checkpoint=crash)
    with_a, with_b = _opens(w, a_key), _opens(w, b_key)
    assert all(with_a[k] or with_b[k] for k in with_a), (stage, with_a, with_b)
    report = rotate(s2, add=[], remove=[a_id])
    assert report.ok, report.to_json()
    assert all(_opens(w, b_key).values()) and not any(_opens(w, a_key).values())
    repo, _ = open_repository(s2)
    leftovers = [o.key for o in repo.store.list("wal/") if "/.rotate-" in o.key]
    assert not leftovers
    # Nothing of the old key left anywhere: the superseded format-2 dump is gone too.
    b2 = w["backups"][1]
    assert repo.store.stat(backup_prefix(b2) + "dump.pgcustom") is None
    assert repo.store.stat(backup_prefix(b2) + "dump.pgcustom.f3") is not None
