"""Physical full backup streamed from pg_basebackup, restored into a new data directory that
starts by itself with the data of the moment of the backup."""

from __future__ import annotations

import os

import psycopg
import pytest

from bvh_ops.errors import BvhOpsError, DatabaseUnavailable, ToolError
from bvh_ops.keys import load_identities
from bvh_ops.pg.tools import embedded_bin_dir
from bvh_ops.physical.backup import run_physical_full
from bvh_ops.physical.restore import restore_physical, stop_server
from bvh_ops.repository.verify import Status, verify_backup


def _fp(dsn: str) -> tuple:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*), sum(hashtextextended(t::text, 0)) FROM phys t").fetchone()


def test_full_physical_backup_restores_and_starts(pg, repo_dir, make_settings, tmp_path):
    from bvh_ops.pg.catalog import create_database

    create_database(pg.dsn(), "physdb")
    with psycopg.connect(pg.dsn("physdb"), autocommit=True) as conn:
        conn.execute("CREATE TABLE phys AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g")
    before = _fp(pg.dsn("physdb"))
    settings = make_settings(pg.dsn("physdb"), f"file://{repo_dir}")
    result = run_physical_full(settings)
    m = result.manifest
    assert m.kind == "full" and m.extra["start_lsn"] and m.extra["stop_lsn"]
    with psycopg.connect(pg.dsn("physdb"), autocommit=True) as conn:
        conn.execute("INSERT INTO phys VALUES (0, 'after the backup')")
    from bvh_ops.repository.open import open_repository

    repo, _ = open_repository(settings)
    assert all(r.status is Status.OK for r in verify_backup(repo, m.backup_id, identities=load_identities(settings.identity)))

    # No WAL archive here: recovery replays the WAL inside the backup and promotes.
    report = restore_physical(settings, m.backup_id, tmp_path / "restored", start=True)
    try:
        assert report.verified and report.started
        restored = f"postgresql://postgres:{pg.password}@127.0.0.1:{report.port}/physdb"
        assert _fp(restored) == before  # the moment of the backup, not after
    finally:
        stop_server(tmp_path / "restored", embedded_bin_dir())


def test_restore_refuses_a_non_empty_directory(pg, repo_dir, make_settings, tmp_path):
    settings = make_settings(pg.dsn(), f"file://{repo_dir}")
    m = run_physical_full(settings).manifest
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "PG_VERSION").write_text("18")
    with pytest.raises(BvhOpsError, match="not empty"):
        restore_physical(settings, m.backup_id, tmp_path / "busy")


def test_cli_full_backup_json_contract(pg, repo_dir, make_settings, cli_prefect_api):
    import json

    from tests.integration.cli import run_cli
    from tests.integration.test_tamper import cli_env

    settings = make_settings(pg.dsn(), f"file://{repo_dir}")
    proc = run_cli("backup", "--kind", "full", "--json", env=cli_env(settings))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    for key in ("backup_id", "kind", "parent_id", "start_lsn", "stop_lsn", "bytes_in", "bytes_stored"):
        assert key in doc
    assert doc["kind"] == "full" and doc["parent_id"] is None and "/" in doc["start_lsn"]


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "removed"])
def test_a_file_damaged_on_disk_after_extraction_is_caught(pg, repo_dir, make_settings, tmp_path, monkeypatch,
                                                          damage):
    """The restore's verification reads the files back from the data directory (its checksum
    pass on two threads, the rest in pg_verifybackup): a file changed after the extraction
    checked the stream fails the restore, named, and nothing is left behind."""
    import bvh_ops.physical.restore as restore_mod
    from bvh_ops.errors import IntegrityError
    from bvh_ops.pg.catalog import create_database

    create_database(pg.dsn(), "damagedb")
    with psycopg.connect(pg.dsn("damagedb"), autocommit=True) as conn:
        conn.execute("CREATE TABLE phys AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g")
    settings = make_settings(pg.dsn("damagedb"), f"file://{repo_dir}")
    m = run_physical_full(settings).manifest
    extract = restore_mod._fetch_and_combine
    damaged = {}

    def extract_then_damage(repo, chain, data, *args, **kwargs):
        extract(repo, chain, data, *args, **kwargs)
        victim = max((p for p in (data / "base").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        damaged["path"] = victim.relative_to(data).as_posix()
        if damage == "flipped byte":
            with open(victim, "r+b") as fh:
                fh.seek(victim.stat().st_size // 2)
                byte = fh.read(1)
                fh.seek(-1, 1)
                fh.write(bytes([byte[0] ^ 0x01]))
        elif damage == "truncated":
            os.truncate(victim, victim.stat().st_size - 8192)
        else:
            victim.unlink()

    monkeypatch.setattr(restore_mod, "_fetch_and_combine", extract_then_damage)
    target = tmp_path / "restored"
    with pytest.raises(IntegrityError) as err:
        restore_physical(settings, m.backup_id, target)
    assert damaged["path"] in str(err.value)
    if damage == "flipped byte":
        assert "CRC32C differs" in str(err.value)
    assert not target.exists()


def test_a_base_backup_cut_off_mid_stream_fails_and_leaves_nothing(pg, repo_dir, make_settings, monkeypatch):
    """The server ends pg_basebackup's connection after the first MiB has arrived: the backup
    fails with pg_basebackup's own error (it does not wait for more of the stream, nor commit
    what arrived), its half-written objects are gone, and a new backup succeeds after it."""
    from bvh_ops.pg.tarscan import TarScanner
    from bvh_ops.repository.open import open_repository

    settings = make_settings(pg.dsn(), f"file://{repo_dir}")
    feed = TarScanner.feed
    cut = []

    def feed_then_cut(self, data):
        if not cut:
            with psycopg.connect(pg.dsn(), autocommit=True) as conn:
                cut.append(conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                        "WHERE backend_type = 'walsender'").fetchall())
        return feed(self, data)

    monkeypatch.setattr(TarScanner, "feed", feed_then_cut)
    # pg_basebackup's own error, whichever of the two it reports first (the second is retried
    # by the task as transient).
    with pytest.raises((ToolError, DatabaseUnavailable),
                       match="pg_basebackup.*(terminating connection|server closed the connection)"):
        run_physical_full(settings)
    assert cut and (True,) in cut[0]  # the backup's walsender, ended by the server
    repo, _ = open_repository(settings)
    assert repo.list_backups() == []
    monkeypatch.setattr(TarScanner, "feed", feed)
    assert run_physical_full(settings).manifest.kind == "full"


def _count_base_reads(monkeypatch) -> tuple[dict[str, int], dict[str, int]]:
    """How many times each base.tar is opened in the repository (the real local store's reads)
    and decrypted (our DecryptingReader), by key; both still do their work."""
    from bvh_ops.storage.local import LocalStore
    from bvh_ops.stream import DecryptingReader

    opened: dict[str, int] = {}
    decrypted: dict[str, int] = {}
    open_reader, init = LocalStore.open_reader, DecryptingReader.__init__

    def counting_open(self, key):
        if key.endswith("/base.tar"):
            opened[key] = opened.get(key, 0) + 1
        return open_reader(self, key)

    def counting_init(self, source, identities, *, bind, **kw):
        if bind.endswith("/base.tar"):
            decrypted[bind] = decrypted.get(bind, 0) + 1
        init(self, source, identities, bind=bind, **kw)

    monkeypatch.setattr(LocalStore, "open_reader", counting_open)
    monkeypatch.setattr(DecryptingReader, "__init__", counting_init)
    return opened, decrypted


def test_the_base_a_deep_verify_extracted_is_restored_without_reading_it_again(pg, repo_dir, make_settings,
                                                                                tmp_path, monkeypatch):
    """A drill's deep verify extracts the base as it decrypts and checks it (PreparedExtract);
    the restore takes that extraction: base.tar read and decrypted once in all, and the server
    starts with the data of the backup."""
    from bvh_ops.pg.catalog import create_database
    from bvh_ops.physical.restore import PreparedExtract, prepared_part
    from bvh_ops.repository.open import open_repository

    create_database(pg.dsn(), "physonce")
    with psycopg.connect(pg.dsn("physonce"), autocommit=True) as conn:
        conn.execute("CREATE TABLE phys AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g")
    before = _fp(pg.dsn("physonce"))
    settings = make_settings(pg.dsn("physonce"), f"file://{repo_dir}")
    m = run_physical_full(settings).manifest
    opened, decrypted = _count_base_reads(monkeypatch)
    scratch = tmp_path / "scratch"
    sink = PreparedExtract(scratch, m.backup_id)
    repo, _ = open_repository(settings)
    results = verify_backup(repo, m.backup_id, identities=load_identities(settings.identity), keep={"base.tar": sink})
    assert [r.status for r in results] == [Status.OK] * 3 and sink.dropped is None
    assert (prepared_part(scratch, m.backup_id) / "PG_VERSION").is_file()
    report = restore_physical(settings, m.backup_id, scratch / "data", start=True, prepared=scratch)
    try:
        assert report.prepared == [m.backup_id] and report.verified and report.started
        assert _fp(f"postgresql://postgres:{pg.password}@127.0.0.1:{report.port}/physonce") == before
    finally:
        stop_server(scratch / "data", embedded_bin_dir())
    key = f"backups/{m.backup_id}/base.tar"
    assert opened == {key: 1} and decrypted == {key: 1}
    assert sorted(p.name for p in scratch.iterdir()) == ["data", "data.recovery.log"]


def test_a_base_damaged_in_the_repository_fails_its_verify_and_nothing_extracted_is_left(pg, repo_dir, make_settings,
                                                                                         tmp_path):
    """A byte of the stored base.tar changed near its end (most of it decrypts and is extracted
    before the damage is reached): the deep verify reports the object, and the extraction is
    gone — no part for a restore to take, no partial directory, no tar still running."""
    import psutil

    from bvh_ops.physical.restore import PreparedExtract, prepared_part
    from bvh_ops.repository.open import open_repository

    settings = make_settings(pg.dsn(), f"file://{repo_dir}")
    m = run_physical_full(settings).manifest
    stored = repo_dir / "backups" / m.backup_id / "base.tar"
    with open(stored, "r+b") as fh:
        fh.seek(-100, os.SEEK_END)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    scratch = tmp_path / "scratch"
    sink = PreparedExtract(scratch, m.backup_id, flush=True)
    repo, _ = open_repository(settings)
    results = {r.object: r for r in verify_backup(repo, m.backup_id, identities=load_identities(settings.identity),
                                                  keep={"base.tar": sink})}
    assert results["base.tar"].status is Status.CHECKSUM_MISMATCH
    assert sink.dropped == "the object did not verify"
    assert not prepared_part(scratch, m.backup_id).exists() and list(scratch.iterdir()) == []
    assert not [p for p in psutil.Process().children(recursive=True) if p.name() == "tar"]


def test_a_link_planted_at_a_prepared_part_is_not_restored_from(pg, repo_dir, make_settings, tmp_path):
    """The restore takes only what the verify's own rename left: a symbolic link found where a
    prepared part goes (here to another backup's extraction: self-consistent, pg_verifybackup
    passes it) neither stops that base's extraction from being kept nor is restored from — the
    server starts with the data of the backup asked for."""
    from bvh_ops.pg.catalog import create_database
    from bvh_ops.physical.restore import PreparedExtract, prepared_part
    from bvh_ops.repository.open import open_repository

    create_database(pg.dsn(), "physlink")
    with psycopg.connect(pg.dsn("physlink"), autocommit=True) as conn:
        conn.execute("CREATE TABLE phys AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000) g")
    settings = make_settings(pg.dsn("physlink"), f"file://{repo_dir}")
    older = run_physical_full(settings).manifest
    with psycopg.connect(pg.dsn("physlink"), autocommit=True) as conn:
        conn.execute("INSERT INTO phys SELECT g, 'later' FROM generate_series(1001, 2000) g")
    wanted = _fp(pg.dsn("physlink"))
    newer = run_physical_full(settings).manifest
    repo, _ = open_repository(settings)
    identities = load_identities(settings.identity)
    elsewhere = tmp_path / "elsewhere"
    assert all(r.ok for r in verify_backup(repo, older.backup_id, identities=identities,
                                           keep={"base.tar": PreparedExtract(elsewhere, older.backup_id)}))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    prepared_part(scratch, newer.backup_id).symlink_to(prepared_part(elsewhere, older.backup_id))
    sink = PreparedExtract(scratch, newer.backup_id)
    assert all(r.ok for r in verify_backup(repo, newer.backup_id, identities=identities, keep={"base.tar": sink}))
    assert sink.dropped is None and not prepared_part(scratch, newer.backup_id).is_symlink()
    prepared_part(scratch, newer.backup_id).rename(scratch / "moved")  # the verify's own part gone again:
    prepared_part(scratch, newer.backup_id).symlink_to(prepared_part(elsewhere, older.backup_id))  # a link instead
    report = restore_physical(settings, newer.backup_id, scratch / "data", start=True, prepared=scratch)
    try:
        assert report.prepared == [] and report.started
        assert _fp(f"postgresql://postgres:{pg.password}@127.0.0.1:{report.port}/physlink") == wanted
    finally:
        stop_server(scratch / "data", embedded_bin_dir())


def test_a_scratch_without_room_for_the_base_is_not_extracted_into_and_the_verify_is_unchanged(
        pg, repo_dir, make_settings, tmp_path):
    """The drill's scratch on a disk that cannot hold the extracted base (a 1 MiB tmpfs): the
    deep verify checks every object as always and says the base will be fetched by the restore
    ("no room"), and extracts nothing there — a disk too small fills once (in the restore), not
    twice."""
    import subprocess

    from bvh_ops.pg.catalog import create_database
    from bvh_ops.physical.target import RecoveryTarget
    from checks.physical_drill_suite import verify_chain_and_wal

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    create_database(pg.dsn(), "physroom")
    with psycopg.connect(pg.dsn("physroom"), autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g")
    settings = make_settings(pg.dsn("physroom"), f"file://{repo_dir}")
    m = run_physical_full(settings).manifest
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        results = verify_chain_and_wal(settings, m, RecoveryTarget(), extract_into=small)
        deep = [r for r in results if r.name == "physical_deep_verify"][0]
        assert deep.passed, deep.detail
        assert "3 objects decrypted and hashed" in deep.detail
        assert f"fetched again by the restore: {m.backup_id}: no room in {small}" in deep.detail
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)])


def test_the_room_check_counts_what_an_incremental_extracts_to_not_its_tar(pg, repo_dir, make_settings, tmp_path):
    """An incremental of a database with many small relations is thousands of INCREMENTAL.*
    files of a few hundred bytes: ~1 KiB each in the tar, a whole block (4 KiB) each on disk
    (measured: 3000 tables, 25.5 MB of tar extract to 37.5 MB). A scratch that holds the chain's
    tars with the 10 % margin but not what they extract to must not be filled by the verify's
    extraction: the base that does not fit is left to the restore ('no room'), the disk never
    runs full ('No space left')."""
    import subprocess

    from bvh_ops.pg.catalog import create_database
    from bvh_ops.physical.backup import BASE_OBJECT, run_physical_backup
    from bvh_ops.physical.target import RecoveryTarget
    from checks.physical_drill_suite import ROOM_MARGIN, verify_chain_and_wal

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET summarize_wal = on")
        conn.execute("SELECT pg_reload_conf()")
    create_database(pg.dsn(), "physsmall")
    with psycopg.connect(pg.dsn("physsmall"), autocommit=True) as conn:
        for first in range(1, 6001, 1000):  # 1000 a transaction: max_locks_per_transaction
            conn.execute(f"DO $$BEGIN FOR i IN {first}..{first + 999} LOOP "
                         "EXECUTE format('CREATE TABLE t%s AS SELECT 1 AS i', i); END LOOP; END$$")
    settings = make_settings(pg.dsn("physsmall"), f"file://{repo_dir}")
    chain = [run_physical_backup(settings, "full").manifest]
    for n in (2, 3, 4):  # the incrementals outweigh the full (whatever else the cluster holds)
        with psycopg.connect(pg.dsn("physsmall"), autocommit=True) as conn:
            conn.execute(f"UPDATE t1 SET i = {n}")
        chain.append(run_physical_backup(settings, "incremental").manifest)
    tars = sum(o.plaintext_size for m in chain for o in m.objects if o.name == BASE_OBJECT)
    small = tmp_path / "small"
    small.mkdir()
    size = int(tars * ROOM_MARGIN) + (2 << 20)  # the tars and their margin fit; their extraction does not
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(small)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        results = verify_chain_and_wal(settings, chain[-1], RecoveryTarget(), extract_into=small)
        deep = [r for r in results if r.name == "physical_deep_verify"][0]
        assert deep.passed, deep.detail
        assert "No space left" not in deep.detail, deep.detail
        assert f"{chain[-1].backup_id}: no room in {small}" in deep.detail, deep.detail
        assert not [p for p in small.iterdir() if p.name.endswith(".partial")]
    finally:
        subprocess.run(["umount", str(small)])
