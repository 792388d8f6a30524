"""Point-in-time recovery with writes running, on a real PostgreSQL 18 archiving through
bvh-ops: full + incrementals, restores to a restore point, a time and an LSN, to the end of the
archive, and what happens with a damaged or killed piece."""

from __future__ import annotations

import shutil

import psycopg
import pytest

from bvh_ops.demo.sample import Workload, consistent_cut, cut_fingerprints, load_sample
from bvh_ops.pg.catalog import create_database
from bvh_ops.physical.backup import run_physical_backup
from bvh_ops.physical.restore import RecoveryError, restore_physical, stop_server, validate_target
from bvh_ops.physical.target import RecoveryTarget
from bvh_ops.repository.open import open_repository
from tests.integration.archiving import start_archiving
from tests.waiting import more_writes, wait_until


def fingerprints(conn: psycopg.Connection) -> dict[str, tuple]:
    return cut_fingerprints(conn)


@pytest.fixture(scope="module")
def pitr(tmp_path_factory, keypair):
    arch = start_archiving(tmp_path_factory.mktemp("pitr"), keypair)
    yield arch
    arch.cluster.destroy()


@pytest.fixture(scope="module")
def history(pitr, keypair, tmp_path_factory):
    """full → writes + restore point → incremental → writes → time cut → writes → LSN cut →
    incremental → writes → end; the workload runs throughout."""
    from bvh_ops.config import Settings

    dsn = pitr.cluster.dsn("lottery")
    create_database(pitr.cluster.dsn(), "lottery")
    load_sample(dsn, scale=0.3)
    settings = Settings(database_url=dsn, repository=pitr.url, recipients=[keypair[0]], identity=keypair[1],
                        state_dir=tmp_path_factory.mktemp("pitr-state"), segment_size_kib=256)
    full = run_physical_backup(settings, "full").manifest
    work = Workload(dsn, rate=40).start()
    try:  # writes between every two steps (counted, not timed: a loaded machine writes slower)
        more_writes(work, 60)
        by_name = consistent_cut(dsn, "before_incident")
        more_writes(work)
        incr1 = run_physical_backup(settings, "incremental").manifest
        more_writes(work)
        by_time = consistent_cut(dsn, "t")
        pitr.switch_and_wait()
        more_writes(work)
        pitr.switch_and_wait()  # a whole segment between the time cut and the LSN cut
        more_writes(work)
        by_lsn = consistent_cut(dsn, "l")
        more_writes(work)
        incr2 = run_physical_backup(settings, "incremental").manifest
        more_writes(work)
    finally:
        stats = work.stop()
    assert stats.transactions > 100 and stats.errors == 0, stats
    from bvh_ops.pg.fingerprint import fingerprint_database, list_tables

    with psycopg.connect(dsn) as conn:
        end = {t.name: (t.rows, t.fingerprint) for t in fingerprint_database(conn, list_tables(conn))}
    last = pitr.switch_and_wait()
    return {"settings": settings, "full": full, "incr1": incr1, "incr2": incr2, "name": by_name, "time": by_time,
            "lsn": by_lsn, "end": end, "last_segment": last}


def _restored(report, password: str, db: str = "lottery") -> str:
    return f"postgresql://postgres:{password}@127.0.0.1:{report.port}/{db}"


def _restore_and_read(settings, backup_id, target, dest, password) -> tuple[dict, object]:
    report = restore_physical(settings, backup_id, dest, target=target, start=True)
    try:
        with psycopg.connect(_restored(report, password)) as conn:
            return fingerprints(conn), report
    finally:
        from bvh_ops.pg.tools import embedded_bin_dir

        stop_server(dest, embedded_bin_dir())


def test_incrementals_form_a_chain(history):
    full, incr1, incr2 = history["full"], history["incr1"], history["incr2"]
    assert full.kind == "full" and full.parent_id is None
    assert incr1.kind == "incremental" and incr1.parent_id == full.backup_id
    assert incr2.parent_id == incr1.backup_id
    # An incremental carries changed blocks only: far smaller than the full.
    assert incr2.bytes_in < full.bytes_in / 2
    assert incr1.extra["files_checked"] > 100  # every file CRC32C-checked against the server's manifest


@pytest.mark.parametrize("kind", ["name", "time", "lsn"])
def test_pitr_under_writes_restores_exactly_the_rows_before_the_target(history, pitr, tmp_path, kind):
    cut = history[kind]
    target = {"name": RecoveryTarget("name", cut.name), "time": RecoveryTarget("time", cut.time),
              "lsn": RecoveryTarget("lsn", cut.lsn)}[kind]
    # A restore point's position is unknown without replaying WAL: 'latest' starts from the
    # oldest full backup for a name.
    backup = "latest"
    got, report = _restore_and_read(history["settings"], backup, target, tmp_path / "data", pitr.cluster.password)
    assert got == cut.counts
    if kind != "name":
        assert report.chain == [history["full"].backup_id, history["incr1"].backup_id]
    else:
        assert report.chain == [history["full"].backup_id]
    assert report.verified and "successfully verified" in report.verified


def test_full_plus_two_incrementals_recover_to_the_end_of_the_archive(history, pitr, tmp_path):
    from bvh_ops.pg.fingerprint import fingerprint_database, list_tables
    from bvh_ops.pg.tools import embedded_bin_dir

    report = restore_physical(history["settings"], "latest", tmp_path / "data", start=True)
    try:
        assert report.chain == [history[k].backup_id for k in ("full", "incr1", "incr2")]
        with psycopg.connect(_restored(report, pitr.cluster.password)) as conn:
            got = {t.name: (t.rows, t.fingerprint) for t in fingerprint_database(conn, list_tables(conn))}
        # Unlogged tables are not WAL-logged: a physical copy has them empty, by PostgreSQL's design.
        unlogged = {"public.performance_logs"}
        assert got["public.performance_logs"][0] == 0
        assert {k: v for k, v in got.items() if k not in unlogged} == \
            {k: v for k, v in history["end"].items() if k not in unlogged}
        assert not (tmp_path / "data" / "bvh_ops_recovery").exists()  # the identity copy is gone
        conf = (tmp_path / "data" / "postgresql.auto.conf").read_text()
        assert "archive_mode = 'off'" in conf  # never archives into the source's repository
    finally:
        stop_server(tmp_path / "data", embedded_bin_dir())


def test_validate_target(history):
    settings = history["settings"]
    ok = validate_target(settings, "latest", RecoveryTarget("lsn", history["lsn"].lsn))
    assert ok["reachable"] and ok["wal"]["ok"]
    beyond = validate_target(settings, "latest", RecoveryTarget("lsn", "FF/0"))
    assert not beyond["reachable"] and beyond["latest_reachable"]["lsn"]
    early = validate_target(settings, "latest", RecoveryTarget("time", "2001-01-01T00:00:00+00:00"))
    assert not early["reachable"] and "older than every base" in early["reason"]
    # a restore point name is judged only by replaying the WAL: not "reachable" (it said so for any name)
    named = validate_target(settings, "latest", RecoveryTarget("name", "no_such_point"))
    assert named["reachable"] is None and "cannot be judged" in named["reason"]


def test_a_damaged_segment_is_named_and_bounds_recovery(history, pitr, tmp_path):
    from bvh_ops.pg.lsn import parse_lsn, segment_name
    from bvh_ops.wal.archive import wal_continuity
    from bvh_ops.wal.store import wal_key

    settings = history["settings"]
    # Recovery to the time cut reads up to the first commit after it (in the next segment);
    # the segment after that holds the LSN cut.
    victim = segment_name(1, parse_lsn(history["time"].lsn) // (16 << 20) + 2)
    assert victim == segment_name(1, parse_lsn(history["lsn"].lsn) // (16 << 20))
    path = pitr.repo / wal_key(victim)
    original = path.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))
    try:
        repo, _ = open_repository(settings)
        report = wal_continuity(repo.store, history["full"], hashes=True)
        assert [n for n, _ in report.damaged] == [victim] and not report.missing
        # Before the damage: fine.
        got, _ = _restore_and_read(settings, "latest", RecoveryTarget("time", history["time"].time),
                                   tmp_path / "before", pitr.cluster.password)
        assert got == history["time"].counts
        # Beyond it: a clear failure, and no data directory left that looks usable.
        with pytest.raises(RecoveryError, match=victim):
            restore_physical(settings, "latest", tmp_path / "beyond", target=RecoveryTarget("lsn", history["lsn"].lsn),
                             start=True)
        assert not (tmp_path / "beyond").exists()
    finally:
        path.write_bytes(original)


def test_cli_verify_names_a_missing_segment_and_validate_target(history, pitr, tmp_path):
    import json

    from tests.integration.cli import run_cli
    from tests.integration.test_tamper import cli_env

    env = cli_env(history["settings"])
    tl_dir = pitr.repo / "wal" / "00000001"
    from bvh_ops.pg.lsn import parse_lsn, segment_name

    # After the newest base the LSN target can start from: recovery would need it.
    victim = segment_name(1, parse_lsn(history["time"].lsn) // (16 << 20) + 1)
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    shutil.move(tl_dir / victim, hidden / victim)
    try:
        proc = run_cli("verify", "--all", "--json", env=env)
        assert proc.returncode == 8, proc.stderr
        doc = json.loads(proc.stdout)
        bad = [r for r in doc["results"] if r["status"] != "OK"]
        assert {r["object"] for r in bad} >= {f"wal/{victim}"}
        assert all(r["backup_id"] == "wal" for r in bad)  # every backup object is fine
        proc = run_cli("restore", "latest", "--validate-target", "--to-lsn", history["lsn"].lsn, "--json", env=env)
        assert proc.returncode == 8, proc.stdout
        doc = json.loads(proc.stdout)
        assert doc["reachable"] is False and victim in doc["gaps"]
    finally:
        shutil.move(hidden / victim, tl_dir / victim)
    proc = run_cli("restore", "latest", "--validate-target", "--to-name", "no_such_point", env=env)
    assert proc.returncode == 1 and proc.stdout.startswith("NOT JUDGED: name no_such_point"), proc.stdout
    proc = run_cli("verify", "--all", env=env)
    assert proc.returncode == 0, proc.stdout
    assert "WAL continuous from" in proc.stdout


def test_killed_base_backup_leaves_no_backup_and_the_chain_goes_on(history, pitr):
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from tests.integration.test_tamper import cli_env

    settings = history["settings"]
    repo, _ = open_repository(settings)
    before = {r.backup_id for r in repo.list_backups() if r.status == "complete"}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BVH_OPS_")}, **cli_env(settings),
           "BVH_OPS_COMPRESSION_LEVEL": "19"}  # slow enough to be killed mid-stream
    # Its own process group: the kill takes the CLI's ephemeral Prefect server with it (as a
    # machine losing power would), instead of leaving that server running after the test.
    proc = subprocess.Popen([sys.executable, "-m", "bvh_ops.cli", "backup", "--kind", "full"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        with psycopg.connect(pitr.cluster.dsn(), autocommit=True) as conn:

            def streaming() -> bool:
                """pg_basebackup is sending files and the backup is open in the repository.
                pg_basebackup is stopped (SIGSTOP) as soon as it exists and let run only 10 ms
                between polls: a fast machine finished the small backup between two 50 ms polls
                (a CI run failed so), and now it cannot; it stays stopped until the kill."""
                assert proc.poll() is None, "the base backup ended before it could be killed"
                tools = []
                for child in psutil.Process(proc.pid).children(recursive=True):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        if child.name() == "pg_basebackup":
                            child.suspend()
                            tools.append(child)
                if not tools:
                    return False
                if conn.execute("SELECT count(*) FROM pg_stat_progress_basebackup WHERE phase = "
                                "'streaming database files' AND backup_streamed > 0").fetchone()[0] \
                        and any(r.status == "incomplete" for r in repo.list_backups()):
                    return True
                for tool in tools:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        tool.resume()
                time.sleep(0.01)
                for tool in tools:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        tool.suspend()
                return False

            # The CLI starts its own Prefect server first: minutes on a loaded machine.
            wait_until(streaming, "the base backup streaming into the repository")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    records = repo.list_backups()
    assert {r.backup_id for r in records if r.status == "complete"} == before  # nothing committed
    assert any(r.status == "incomplete" for r in records)
    # The next run removes the leftovers (their writer is dead) and builds on the intact chain.

    res = run_physical_backup(settings, "incremental").manifest
    assert res.parent_id == history["incr2"].backup_id
    removed = repo.collect_incomplete(__import__("datetime").datetime.now(__import__("datetime").UTC), 24)
    assert len(removed) == 1 and not any(r.status == "incomplete" for r in repo.list_backups())


def test_a_tampered_parent_manifest_is_refused(history, pitr, tmp_path, cli_prefect_api):
    from bvh_ops.errors import IntegrityError
    from bvh_ops.physical.backup import physical_chain_tip
    from bvh_ops.repository.repo import backup_prefix

    settings = history["settings"]
    repo, _ = open_repository(settings)
    tip = physical_chain_tip(repo)
    path = pitr.repo / backup_prefix(tip.backup_id) / "backup_manifest"
    original = path.read_bytes()
    path.write_bytes(original.replace(b'"Size": 8192', b'"Size": 8193', 1))
    try:
        with pytest.raises(IntegrityError, match="tampered"):
            run_physical_backup(settings, "incremental")
        assert physical_chain_tip(repo).backup_id == tip.backup_id  # nothing committed
        # Through the CLI (and its flow): one line, no traceback, exit 8.
        from tests.integration.cli import assert_one_line_error, run_cli
        from tests.integration.test_tamper import cli_env

        proc = run_cli("backup", "--kind", "incremental", env=cli_env(settings))
        assert_one_line_error(proc, "tampered")
        assert proc.returncode == 8
    finally:
        path.write_bytes(original)


def test_incremental_without_summarize_wal_says_how_to_enable_it(pg, repo_dir, make_settings):
    from bvh_ops.errors import ConfigError

    settings = make_settings(pg.dsn(), f"file://{repo_dir}")
    run_physical_backup(settings, "full")
    with pytest.raises(ConfigError, match="summarize_wal = on"):
        run_physical_backup(settings, "incremental")


def test_cli_restore_to_a_point_past_the_archive_is_refused_or_warned(history, pitr, tmp_path):
    """It said "restored …, start it with pg_ctl", exit 0, into a directory whose recovery ends
    short of the target, so the server refuses to start. An LSN past the archived WAL is refused
    before anything is written; a time past it (judged only roughly) is warned of."""
    from tests.integration.cli import assert_one_line_error, run_cli
    from tests.integration.test_tamper import cli_env

    data = tmp_path / "past"
    proc = run_cli("restore", "latest", "--target-dir", str(data), "--to-lsn", "FFFFFFFF/FFFFFFFF",
                   env=cli_env(history["settings"]))
    assert proc.returncode == 8
    assert_one_line_error(proc, "not reachable: WAL in the archive reaches", "nothing was written")
    assert not data.exists()
    proc = run_cli("restore", "latest", "--target-dir", str(data), "--to-time", "2099-01-01T00:00:00Z",
                   env=cli_env(history["settings"]))
    assert proc.returncode == 0 and "warning: time 2099-01-01" in proc.stderr and "refuses to start" in proc.stderr
    # the hint names the pg_ctl of the backup's major version and a port of its own, written in
    # the restored config (it kept the source's port and named whatever pg_ctl was on PATH)
    import re

    from bvh_ops.pg.tools import embedded_bin_dir

    hint = re.search(r"with: (\S+) -D (\S+) start \(it listens on 127\.0\.0\.1:(\d+)\)", proc.stdout)
    assert hint and hint[1] == str(embedded_bin_dir() / "pg_ctl") and hint[2] == str(data), proc.stdout
    assert f"port = {hint[3]}" in (data / "postgresql.auto.conf").read_text()


def test_cli_restore_to_an_lsn_with_start_json(history, pitr, tmp_path):
    import json

    from bvh_ops.pg.tools import embedded_bin_dir
    from tests.integration.cli import run_cli
    from tests.integration.test_tamper import cli_env

    data = tmp_path / "cli-restore"
    proc = run_cli("restore", "latest", "--target-dir", str(data), "--to-lsn", history["lsn"].lsn, "--start",
                   "--json", env=cli_env(history["settings"]))
    try:
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["started"] and doc["chain"][0] == history["full"].backup_id
        assert doc["verified"].startswith("pg_verifybackup") and doc["target"].startswith("lsn ")
        with psycopg.connect(f"postgresql://postgres:{pitr.cluster.password}@127.0.0.1:{doc['port']}/lottery") as conn:
            assert cut_fingerprints(conn) == history["lsn"].counts
    finally:
        stop_server(data, embedded_bin_dir())
    busy = run_cli("restore", "latest", "--target-dir", str(data), env=cli_env(history["settings"]))
    assert busy.returncode != 0 and "not empty" in busy.stderr and "Traceback" not in busy.stderr


def test_a_restore_point_older_than_the_backup_fails_saying_so(history, tmp_path):
    with pytest.raises(RecoveryError, match="restore point 'before_incident' is older than this backup"):
        restore_physical(history["settings"], history["incr2"].backup_id, tmp_path / "data",
                         target=RecoveryTarget("name", "before_incident"), start=True)
    assert not (tmp_path / "data").exists()


def test_a_swapped_wal_segment_is_caught_by_deep_verify_restore_and_drill(history, pitr, tmp_path):
    """An attacker with write access copies segment N's object and index entry over N+1's (the
    bytes and hashes of a genuine segment). Deep verify names N+1; a restore to the end of the
    archive fails naming it instead of "recovering" to N and promoting (the physical drill restores
    through the same path)."""
    from bvh_ops.pg.lsn import parse_lsn, segment_name
    from bvh_ops.wal.archive import wal_continuity
    from bvh_ops.wal.store import wal_key

    settings = history["settings"]
    seg = parse_lsn(history["time"].lsn) // (16 << 20)
    donor, victim = segment_name(1, seg), segment_name(1, seg + 1)
    paths = [pitr.repo / wal_key(victim), pitr.repo / (wal_key(victim) + ".json")]
    originals = [p.read_bytes() for p in paths]
    try:
        shutil.copyfile(pitr.repo / wal_key(donor), paths[0])
        entry = (pitr.repo / (wal_key(donor) + ".json")).read_text().replace(donor, victim)
        paths[1].write_text(entry)  # even the name inside the index entry is edited to match
        repo, _ = open_repository(settings)
        from bvh_ops.keys import load_identities

        report = wal_continuity(repo.store, history["full"], hashes=True, identities=load_identities(settings.identity))
        assert [n for n, _ in report.damaged] == [victim], report.damaged
        with pytest.raises(RecoveryError, match=victim):
            restore_physical(settings, history["full"].backup_id, tmp_path / "swapped", start=True)
        assert not (tmp_path / "swapped").exists()
    finally:
        for p, raw in zip(paths, originals, strict=True):
            p.write_bytes(raw)


def test_restored_server_has_no_socket_no_trust_and_no_key_left(history, pitr, tmp_path):
    """Restores started with --start listen on 127.0.0.1 only with the source's passwords, have
    no Unix socket directory in /tmp, and the identity copy is gone after promotion."""
    import glob

    from bvh_ops.pg.tools import embedded_bin_dir

    report = restore_physical(history["settings"], "latest", tmp_path / "data",
                              target=RecoveryTarget("lsn", history["lsn"].lsn), start=True)
    try:
        assert not glob.glob(f"/tmp/bvhpg-r{report.port}")
        assert not (tmp_path / "data" / "bvh_ops_recovery").exists()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(f"postgresql://postgres@127.0.0.1:{report.port}/postgres", connect_timeout=5)
        conf = (tmp_path / "data" / "postgresql.auto.conf").read_text()
        assert "recovery_end_command" in conf and "hot_standby = 'off'" in conf
    finally:
        stop_server(tmp_path / "data", embedded_bin_dir())


def test_restore_as_root_runs_the_server_as_the_archive_owner(history, pitr, tmp_path):
    """WAL archived by another OS user (Debian's `postgres`: 0600 files in 0700 directories):
    run as root, the restored server runs as that user and reads it."""
    import os
    import pwd

    from bvh_ops.pg.cluster import PG_OS_USER
    from bvh_ops.pg.tools import embedded_bin_dir

    if os.geteuid() != 0:
        pytest.skip("choosing the restored server's OS user applies when running as root")
    try:
        other = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no OS user 'postgres' on this machine")
    wal = pitr.repo / "wal"
    owner = wal.stat()
    paths = [wal] + [p for p in wal.rglob("*")]

    def chown_all(uid: int, gid: int) -> None:
        for p in paths:
            os.chown(p, uid, gid)

    chown_all(other.pw_uid, other.pw_gid)
    try:
        for p in wal.rglob("*"):
            os.chmod(p, 0o700 if p.is_dir() else 0o600)
        report = restore_physical(history["settings"], "latest", tmp_path / "data",
                                  target=RecoveryTarget("lsn", history["lsn"].lsn), start=True)
        try:
            assert report.os_user == "postgres" != PG_OS_USER
            assert (tmp_path / "data").stat().st_uid == other.pw_uid
            with psycopg.connect(_restored(report, pitr.cluster.password)) as conn:
                assert fingerprints(conn) == history["lsn"].counts
        finally:
            stop_server(tmp_path / "data", embedded_bin_dir())
    finally:
        chown_all(owner.st_uid, owner.st_gid)
