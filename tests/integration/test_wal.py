"""WAL archiving with a real PostgreSQL 18 running `bvh-ops wal-push` as its archive_command
(as the server's own OS user, configured from a file, not from the caller's shell)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import psycopg
import pytest

from bvh_ops.config import Settings
from bvh_ops.errors import IntegrityError, NotFound
from bvh_ops.wal.store import entry_digest, file_digest, wal_fetch, wal_key, wal_push
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def archiving(tmp_path_factory, keypair):
    """PostgreSQL 18 archiving through the full CLI (`bvh-ops wal-push`); the PITR tests use the
    lean `bvh-ops-wal push`."""
    from tests.integration.archiving import start_archiving

    arch = start_archiving(tmp_path_factory.mktemp("walarchive"), keypair, full_cli=True)
    yield arch.cluster, arch.repo, arch.config
    arch.cluster.destroy()


def _archiver(cluster) -> dict:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        row = conn.execute("SELECT archived_count, last_archived_wal, failed_count, last_failed_wal "
                           "FROM pg_stat_archiver").fetchone()
    return {"archived": row[0], "last": row[1], "failed": row[2], "last_failed": row[3]}


def _wait_archived(cluster, segment: str) -> dict:
    """Wait until PostgreSQL has archived ``segment`` (and so every one before it)."""
    def archived() -> dict | None:
        state = _archiver(cluster)
        return state if (state["last"] or "")[:24] >= segment else None

    return wait_until(archived, f"WAL segment {segment} archived", interval=0.2)


def test_postgres_archives_through_wal_push_and_fetch_restores_it(archiving, keypair, tmp_path):
    cluster, repo, cfg = archiving
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS w (id int, v text)")
        conn.execute("INSERT INTO w SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
        segment = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
        conn.execute("SELECT pg_switch_wal()")
    state = _wait_archived(cluster, segment)
    assert state["archived"] >= 1 and state["failed"] == 0, state
    stored = repo / wal_key(segment)
    assert stored.exists() and Path(str(stored) + ".json").exists()
    entry = json.loads(Path(str(stored) + ".json").read_text())
    assert entry["plaintext_size"] == 16 << 20
    assert stored.stat().st_size < entry["plaintext_size"] / 2  # compressed (and encrypted)

    settings = Settings(repository=f"file://{repo}", identity=keypair[1], state_dir=tmp_path)
    dest = tmp_path / segment
    wal_fetch(settings, segment, str(dest))
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == entry["plaintext_sha256"]
    with pytest.raises(NotFound, match="not in the archive"):
        wal_fetch(settings, "0000000100000000000000FF", str(tmp_path / "nope"))
    assert not (tmp_path / "nope").exists()


def _segment(segno: int, size: int = 1 << 20, sysid: int = 7) -> bytes:
    """A WAL file whose first page header says it is segment ``segno`` (16 MiB segments)."""
    import struct

    head = struct.pack("<HHIQI4xQII", 0xD118, 0x0002, 1, segno * (16 << 20), 0, sysid, 16 << 20, 8192)
    return head + os.urandom(size - len(head))


def test_repush_is_idempotent_and_different_content_is_refused(archiving, keypair, tmp_path):
    cluster, repo, cfg = archiving
    settings = Settings(repository=f"file://{repo}", recipients=[keypair[0]], state_dir=tmp_path)
    name = "000000010000000000000099"
    seg = tmp_path / name
    seg.write_bytes(_segment(0x99))
    assert wal_push(settings, str(seg)) == "stored"
    assert wal_push(settings, str(seg)) == "already archived"
    seg.write_bytes(_segment(0x99))
    before = (repo / wal_key(name)).read_bytes()
    with pytest.raises(IntegrityError, match="different content"):
        wal_push(settings, str(seg))
    assert (repo / wal_key(name)).read_bytes() == before


def test_blake3_entries_beside_sha256_ones_are_checked_by_their_own_digest(archiving, keypair, tmp_path):
    """An archive written before and after ``wal_digest = blake3``: fetch and the archive's deep
    check verify each file by the digest its entry records; a wrong BLAKE3 in an entry is caught
    by both (the file is refused, never handed to recovery), as a wrong sha256 is."""
    from bvh_ops.keys import load_identities
    from bvh_ops.storage import open_store
    from bvh_ops.wal.archive import _check_segment

    cluster, repo, cfg = archiving
    names = {"sha256": "0000000100000000000000A1", "blake3": "0000000100000000000000A2"}
    for alg, name in names.items():
        seg = tmp_path / name
        seg.write_bytes(_segment(int(name[-2:], 16)))
        settings = Settings(repository=f"file://{repo}", recipients=[keypair[0]], state_dir=tmp_path, wal_digest=alg)
        assert wal_push(settings, str(seg)) == "stored"
        assert wal_push(settings, str(seg)) == "already archived"  # a re-push compares by the entry's digest
    reader = Settings(repository=f"file://{repo}", identity=keypair[1], state_dir=tmp_path)
    store, identities = open_store(reader), load_identities(keypair[1])
    for alg, name in names.items():
        entry_path = Path(str(repo / wal_key(name)) + ".json")
        entry = json.loads(entry_path.read_text())
        assert entry_digest(entry)[0] == alg
        wal_fetch(reader, name, str(tmp_path / f"ok-{name}"))
        assert (tmp_path / f"ok-{name}").read_bytes() == (tmp_path / name).read_bytes()
        assert _check_segment(store, name, identities) is None
        field = f"plaintext_{alg}"
        entry_path.write_text(json.dumps({**entry, field: hashlib.sha256(b"other").hexdigest()}))
        with pytest.raises(IntegrityError, match=f"plaintext {alg} differs"):
            wal_fetch(reader, name, str(tmp_path / f"bad-{name}"))
        assert not (tmp_path / f"bad-{name}").exists()
        assert _check_segment(store, name, identities) == f"plaintext {alg} differs from its index entry"


def test_a_segment_under_another_name_is_refused_at_push(archiving, keypair, tmp_path):
    """Segment 0x98's bytes handed over as 0x9A (a mis-copied file): refused, nothing stored."""
    cluster, repo, cfg = archiving
    settings = Settings(repository=f"file://{repo}", recipients=[keypair[0]], state_dir=tmp_path)
    seg = tmp_path / "00000001000000000000009A"
    seg.write_bytes(_segment(0x98))
    with pytest.raises(IntegrityError, match="not of its own position"):
        wal_push(settings, str(seg))
    assert not (repo / wal_key(seg.name)).exists() and not (repo / (wal_key(seg.name) + ".json")).exists()


def test_archive_command_failure_keeps_wal_and_recovers(archiving):
    """Repository unwritable → archive_command fails, PostgreSQL keeps the segment and retries;
    once writable again, nothing is lost."""
    cluster, repo, cfg = archiving
    os.chmod(repo, 0o555)
    for sub in repo.rglob("*"):
        if sub.is_dir():
            os.chmod(sub, 0o555)
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            before = _archiver(cluster)
            conn.execute("CREATE TABLE IF NOT EXISTS w (id int, v text)")  # whatever ran before
            conn.execute("INSERT INTO w SELECT g, 'x' FROM generate_series(1, 1000) g")
            segment = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
            conn.execute("SELECT pg_switch_wal()")
            wait_until(lambda: _archiver(cluster)["failed"] > before["failed"], "archive_command failing",
                       interval=0.2)
            ready = Path(cluster.data) / "pg_wal" / "archive_status" / f"{segment}.ready"
            assert ready.exists()  # PostgreSQL kept it for a retry
    finally:
        os.chmod(repo, 0o777)
        for sub in repo.rglob("*"):
            if sub.is_dir():
                os.chmod(sub, 0o777)
    # After repeated failures the archiver retries within a minute by itself; the next
    # finished segment wakes it at once.
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        nxt = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
        conn.execute("SELECT pg_logical_emit_message(false, 'test', 'wake the archiver')")
        conn.execute("SELECT pg_switch_wal()")
    _wait_archived(cluster, nxt)
    assert (repo / wal_key(segment)).exists()


def test_wal_key_refuses_other_names():
    assert wal_key("000000010000000000000001") == "wal/00000001/000000010000000000000001"
    assert wal_key("00000002.history") == "wal/00000002/00000002.history"
    assert wal_key("000000010000000000000001.00000028.backup").endswith(".backup")
    for bad in ("../etc/passwd", "000000010000000000000001.gz", "x"):
        with pytest.raises(Exception, match="not a WAL file name"):
            wal_key(bad)




def test_lean_fetch_exit_codes_and_read_ahead(archiving, keypair, tmp_path):
    """`bvh-ops-wal fetch` as restore_command: 0 delivered, 1 not archived (end of recovery),
    126 damaged (abort recovery, never promote early); with a spool it reads ahead."""
    import subprocess

    cluster, repo, cfg = archiving
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS w (id int, v text)")  # also when this test runs alone
        for _ in range(3):
            conn.execute("INSERT INTO w SELECT g, md5(g::text) FROM generate_series(1, 2000) g")
            last = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
            conn.execute("SELECT pg_switch_wal()")
    _wait_archived(cluster, last)
    names = sorted(p.name for p in (repo / "wal" / "00000001").iterdir() if len(p.name) == 24)
    assert len(names) >= 3
    rdir = tmp_path / "recovery"
    (rdir / "prefetch").mkdir(parents=True)
    (rdir / "prefetch" / "prefetch.json").write_text('{"segment_size": 16777216, "depth": 4, "workers": 2}')
    rcfg = rdir / "bvh-ops.toml"
    rcfg.write_text(f'repository = "file://{repo}"\nidentity = "{keypair[1]}"\nstate_dir = "{rdir}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("BVH_OPS_")} | {"BVH_OPS_CONFIG": str(rcfg)}
    lean = [str(Path(sys.executable).parent / "bvh-ops-wal"), "fetch"]

    first = subprocess.run([*lean, names[0], str(tmp_path / "a")], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    # read ahead, verified, ready to rename
    wait_until(lambda: (rdir / "prefetch" / names[1]).exists(), f"{names[1]} read ahead", interval=0.1)
    second = subprocess.run([*lean, names[1], str(tmp_path / "b")], env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    entry = json.loads((repo / wal_key(names[1])).with_name(names[1] + ".json").read_text())
    assert hashlib.sha256((tmp_path / "b").read_bytes()).hexdigest() == entry["plaintext_sha256"]
    # The newest segment delivered stays spooled (PostgreSQL asks for the last one again at the end
    # of recovery), and that second request gets the same bytes.
    assert (rdir / "prefetch" / names[1]).exists()
    again = subprocess.run([*lean, names[1], str(tmp_path / "b2")], env=env, capture_output=True, text=True)
    assert again.returncode == 0 and (tmp_path / "b2").read_bytes() == (tmp_path / "b").read_bytes()
    wait_until(lambda: (rdir / "prefetch" / names[2]).exists(), f"{names[2]} read ahead", interval=0.1)
    third = subprocess.run([*lean, names[2], str(tmp_path / "b3")], env=env, capture_output=True, text=True)
    assert third.returncode == 0 and not (rdir / "prefetch" / names[1]).exists()  # passed: dropped

    missing = subprocess.run([*lean, "0000000100000000000000FE", str(tmp_path / "c")], env=env,
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "not in the archive" in missing.stderr
    victim = repo / wal_key(names[2])
    original = victim.read_bytes()
    victim.write_bytes(original[:-100] + bytes(100))
    try:
        _stop_prefetcher(rdir / "prefetch")  # it may still be reading ahead into the spool
        shutil.rmtree(rdir / "prefetch")  # no spool: fetch straight from the damaged object
        damaged = subprocess.run([*lean, names[2], str(tmp_path / "d")], env=env, capture_output=True, text=True)
        assert damaged.returncode == 126 and "recovery aborted" in damaged.stderr
        assert not (tmp_path / "d").exists()
    finally:
        victim.write_bytes(original)


def _stop_prefetcher(spool: Path) -> None:
    """SIGTERM the spool's prefetcher (detached, as recovery starts it) and wait until it is gone."""
    import signal

    from bvh_ops.walcmd import PIDFILE

    try:
        pid = int((spool / PIDFILE).read_text())
        os.kill(pid, signal.SIGTERM)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(gone, f"prefetcher {pid} stopped", interval=0.05)


def _ready_wal(tmp_path: Path, keypair, segnos: list[int], extra: str = "") -> tuple[Path, Path, dict, list[str]]:
    """A pg_wal with ``segnos`` marked ready (as PostgreSQL marks finished segments), a config
    file for the lean command (``extra``: more of its lines): (pg_wal, repository, env, names)."""
    wal_dir = tmp_path / "pg_wal"
    (wal_dir / "archive_status").mkdir(parents=True)
    names = [f"0000000100000000000000{i:02X}" for i in segnos]
    for n in names:
        (wal_dir / n).write_bytes(_segment(int(n[-2:], 16)))
        (wal_dir / "archive_status" / f"{n}.ready").touch()
    repo = tmp_path / "repo"
    cfg = tmp_path / "archive.toml"
    cfg.write_text(f'repository = "file://{repo}"\nrecipients = ["{keypair[0]}"]\nstate_dir = "{tmp_path / "st"}"\n'
                   + extra)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BVH_OPS_")} | {"BVH_OPS_CONFIG": str(cfg)}
    return wal_dir, repo, env, names


def _lean_push(tmp_path: Path, env: dict, name: str):
    import subprocess

    return subprocess.run([str(Path(sys.executable).parent / "bvh-ops-wal"), "push", f"pg_wal/{name}"], env=env,
                          cwd=tmp_path, capture_output=True, text=True)


def _committed(repo: Path, name: str) -> bool:
    return Path(str(repo / wal_key(name)) + ".json").exists()


def _archived_as_postgres_does(wal_dir: Path, name: str) -> None:
    (wal_dir / "archive_status" / f"{name}.ready").rename(wal_dir / "archive_status" / f"{name}.done")


@pytest.mark.parametrize("digest", ["sha256", "blake3"])
def test_lean_push_archives_ready_files_ahead(keypair, tmp_path, digest):
    """The first archive_command call starts the pusher, which archives the other .ready files
    ahead (in order) and leaves its verdicts in the spool; PostgreSQL's calls for them then only
    check the verdict against the file — one that changed falls back to the full push and its
    refusal. A changed configuration stops the running pusher: the next file goes where the new
    configuration says. Either plaintext digest (``wal_digest``) is recorded, checked by the
    call against the file and by fetch against what it restores."""
    wal_dir, repo, env, names = _ready_wal(tmp_path, keypair, list(range(0x10, 0x15)), f'wal_digest = "{digest}"\n')

    first = _lean_push(tmp_path, env, names[0])
    assert first.returncode == 0, first.stderr
    assert _committed(repo, names[0])
    _archived_as_postgres_does(wal_dir, names[0])
    wait_until(lambda: all(_committed(repo, n) for n in names), "the ready files archived ahead")
    (spool,) = (tmp_path / "st" / "archive-spool").iterdir()  # one pusher's spool for this pg_wal
    # Each verdict is written once its index entry is durable: just after the entry appears.
    wait_until(lambda: {f"{n}.ok" for n in names[1:]} <= {p.name for p in spool.iterdir()},
               "the pusher's verdicts in the spool")
    for n in names:  # each stored as it is on disk (fetch checks the plaintext digest)
        fetched = tmp_path / f"fetched-{n}"
        wal_fetch(Settings(repository=f"file://{repo}", identity=keypair[1]), n, str(fetched))
        assert fetched.read_bytes() == (wal_dir / n).read_bytes()
        entry = json.loads(Path(str(repo / wal_key(n)) + ".json").read_text())
        assert entry_digest(entry) == (digest, file_digest(wal_dir / n, digest))
        assert ("plaintext_blake3" in entry) == (digest == "blake3")
    # The verdicts name their digest (sha256's as every pusher before wal_digest wrote it).
    ok = (spool / f"{names[1]}.ok").read_text().split()[0]
    assert ok == (f"blake3:{file_digest(wal_dir / names[1], 'blake3')}" if digest == "blake3"
                  else hashlib.sha256((wal_dir / names[1]).read_bytes()).hexdigest())

    second = _lean_push(tmp_path, env, names[1])
    assert second.returncode == 0, second.stderr
    _archived_as_postgres_does(wal_dir, names[1])
    (wal_dir / names[2]).write_bytes(_segment(0x12))  # not what was archived
    changed = _lean_push(tmp_path, env, names[2])
    assert changed.returncode != 0 and "different content" in changed.stderr
    _archived_as_postgres_does(wal_dir, names[2])

    # The configuration changes (another repository): the pusher's verdicts no longer count.
    repo2 = tmp_path / "repo2"
    cfg = Path(env["BVH_OPS_CONFIG"])
    cfg.write_text(cfg.read_text().replace(f"file://{repo}", f"file://{repo2}"))
    moved = _lean_push(tmp_path, env, names[3])
    assert moved.returncode == 0, moved.stderr
    assert _committed(repo2, names[3])


def test_lean_push_reports_a_refused_file_and_commits_nothing_after_it(keypair, tmp_path):
    """The pusher refuses a file (here one that holds another segment's WAL): the call for it
    fails with the reason, and no later file is committed while it stays unarchived (no gap);
    once PostgreSQL's file is right, the next call archives it and the rest follow."""
    wal_dir, repo, env, names = _ready_wal(tmp_path, keypair, [0x20, 0x21, 0x22, 0x23])
    good = (wal_dir / names[1]).read_bytes()
    (wal_dir / names[1]).write_bytes(_segment(0x30))  # another segment's bytes under this name

    assert _lean_push(tmp_path, env, names[0]).returncode == 0
    _archived_as_postgres_does(wal_dir, names[0])
    refused = _lean_push(tmp_path, env, names[1])
    assert refused.returncode != 0 and "not of its own position" in refused.stderr, refused.stderr
    assert not any(_committed(repo, n) for n in names[1:])
    assert not (repo / wal_key(names[1])).exists()

    (wal_dir / names[1]).write_bytes(good)
    for n in names[1:]:
        done = _lean_push(tmp_path, env, n)
        assert done.returncode == 0, done.stderr
        _archived_as_postgres_does(wal_dir, n)
    assert all(_committed(repo, n) for n in names)


def test_the_pusher_leaves_once_idle_when_its_server_has_stopped(keypair, tmp_path):
    """A pusher may wait minutes for the next file at a low WAL rate; once the server whose pg_wal
    it archives has stopped (no postmaster.pid) it leaves as soon as it is idle."""
    import time

    from bvh_ops.wal import pusher

    wal_dir, repo, env, names = _ready_wal(tmp_path, keypair, [0x50, 0x51])
    (tmp_path / "postmaster.pid").write_text("4242\n")  # the data directory of a running server
    spool = Path(pusher.spool_dir(str(tmp_path / "st" / "archive-spool"), str(wal_dir)))
    spool.mkdir(parents=True)
    # The previous pusher's last file was 5 minutes ago: this one expects to wait up to 10.
    (spool / pusher.LAST).write_text(f"{time.time() - 300}\n")
    assert _lean_push(tmp_path, env, names[0]).returncode == 0
    _archived_as_postgres_does(wal_dir, names[0])
    assert pusher.running(str(spool), str(wal_dir)) is not None  # it stays for the next file...
    assert _lean_push(tmp_path, env, names[1]).returncode == 0
    _archived_as_postgres_does(wal_dir, names[1])
    (tmp_path / "postmaster.pid").unlink()  # ...until the server stops
    wait_until(lambda: pusher.running(str(spool), str(wal_dir)) is None, "the pusher gone with its server")
