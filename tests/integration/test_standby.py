"""A warm standby built from a second (replica) repository on a real PostgreSQL 18 archiving
through bvh-ops: it follows WAL archived after it was created, waits quietly when the source runs
dry (status shows the lag growing), a failover behind the RPO objective is refused naming the
figure and goes through with --force, the promoted server has every row committed before the
last archived segment, archives its new timeline into the repository, and the old primary's
archiving is refused by the fence."""

from __future__ import annotations

import json
import signal
import threading
from datetime import UTC, datetime, timedelta

import psutil
import psycopg
import pytest

from bvh_ops.config import Settings
from bvh_ops.physical.backup import run_physical_backup
from bvh_ops.physical.restore import RECOVERY_DIR, recovery_log
from bvh_ops.standby.failover import FailoverRefused, failover, show_fences
from bvh_ops.standby.standby import create_standby, remove_standby, standby_status
from bvh_ops.wal.store import wal_key
from tests.integration.archiving import start_archiving
from tests.integration.cli import assert_one_line_error, run_cli
from tests.integration.replicas import sync_repository
from tests.waiting import wait_until

# A standby asks for the next (not yet archived) segment every wal_retrieve_retry_interval (5 s by
# default): 1 s here, so each wait on a replay below ends a second after the segment is there. The
# standbys inherit it from the primary's postgresql.conf (copied by the base backup).
RETRY = {"wal_retrieve_retry_interval": "'1s'"}


@pytest.fixture(scope="module")
def primary(tmp_path_factory, keypair):
    arch = start_archiving(tmp_path_factory.mktemp("standby-primary"), keypair, extra=RETRY)
    with psycopg.connect(arch.cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE app")
    with psycopg.connect(arch.cluster.dsn("app"), autocommit=True) as conn:
        conn.execute("CREATE TABLE probe (id bigserial PRIMARY KEY, batch int NOT NULL, "
                     "at timestamptz NOT NULL DEFAULT now())")
    yield arch
    arch.cluster.destroy()


def insert(arch, batch: int, n: int = 50) -> None:
    with psycopg.connect(arch.cluster.dsn("app"), autocommit=True) as conn:
        conn.execute("INSERT INTO probe (batch) SELECT %s FROM generate_series(1, %s)", (batch, n))


def startup_process(data) -> psutil.Process:
    pid = int((data / "postmaster.pid").read_text().splitlines()[0])
    for child in psutil.Process(pid).children():
        if "startup" in " ".join(child.cmdline()):
            return child
    raise AssertionError("no startup process: the standby is not in recovery")


def test_standby_from_the_replica_follows_the_archive_and_fails_over(primary, keypair, tmp_path):
    replica = tmp_path / "replica"
    settings = Settings(database_url=primary.cluster.dsn("app"), repository=primary.url,
                        replica_repository=f"file://{replica}", recipients=[keypair[0]], identity=keypair[1],
                        state_dir=tmp_path / "state", segment_size_kib=256)
    run_physical_backup(settings, "full")
    sync_repository(primary.repo, replica)
    data = tmp_path / "standby" / "data"
    paused = tmp_path / "paused" / "data"  # a second standby, paused: the one that falls behind
    created = create_standby(settings, data, source="replica", start=True)
    try:
        create_standby(settings, paused, source="replica", start=True, archive=False)  # never archives
        assert created["source"] == "replica" and (data / "standby.signal").exists()
        assert (data / RECOVERY_DIR / "identity.key").exists()  # kept until promotion: it fetches with it

        # Follows WAL archived (and replicated) after it was created.
        insert(primary, 1)
        seg1 = primary.switch_and_wait()
        sync_repository(primary.repo, replica)
        for d in (data, paused):
            doc = wait_until(lambda d=d: (s := standby_status(settings, d, now=datetime.now(UTC)))["replayed_segment"]
                             and s["replayed_segment"] >= seg1 and s["caught_up"] and s, "the standby replays " + seg1)
        assert doc["state"] == "standby" and doc["in_recovery"] and doc["lag_segments"] == 0
        assert doc["within_rpo"] and doc["timeline"] == 1
        # The same through the CLI, as the on-call person runs it.
        proc = run_cli("standby", "status", "--target-dir", str(data), "--json", env=cli_env(settings))
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["state"] == "standby"

        # The source runs dry: it waits for the next segment, quietly; the data grows older.
        waiting = wait_until(lambda: (d := standby_status(settings, data, now=datetime.now(UTC)))["waiting_for"] and d,
                             "the standby asks for the next segment")
        later = standby_status(settings, data, now=datetime.now(UTC) + timedelta(minutes=10))
        assert later["state"] == "standby" and later["caught_up"]
        assert later["data_age_seconds"] >= waiting["data_age_seconds"] + 590
        log = recovery_log(data).read_text()
        assert "wal-fetch" not in log and "error:" not in log  # "not archived yet" is not an error line

        # Behind: the second standby paused while two more segments arrive.
        startup = startup_process(paused)
        startup.send_signal(signal.SIGSTOP)
        try:
            insert(primary, 2)
            primary.switch_and_wait()
            insert(primary, 3)
            last = primary.switch_and_wait()
            sync_repository(primary.repo, replica)
            behind = standby_status(settings, paused, now=datetime.now(UTC))
            assert behind["archive_newest"] == last and behind["lag_segments"] >= 2
            assert behind["lag_bytes"] == behind["lag_segments"] * 16 * 2**20 and behind["behind_seconds"] > 0
            strict = settings.model_copy(update={"rpo_objective_seconds": 0.001})
            with pytest.raises(FailoverRefused) as refused:
                failover(strict, paused, catch_up_timeout=0)
            assert f"{behind['lag_segments']} segments" in str(refused.value)
            assert "rpo_objective_seconds = 0 s" in str(refused.value) and "--force" in str(refused.value)
            assert (paused / "standby.signal").exists()  # refused: nothing changed

            # --force: promoted anyway (the pre-check ran while it was still paused). As a drill:
            # this one must not archive or fence (the other standby is the real failover).
            result: dict = {}
            runner = threading.Thread(target=lambda: result.update(failover(strict, paused, force=True, drill=True,
                                                                            catch_up_timeout=0)))
            runner.start()
            wait_until(lambda: (paused / "promote").exists() or not runner.is_alive(), "pg_ctl promote")
        finally:
            startup.send_signal(signal.SIGCONT)
        runner.join(900)
        forced = {c["name"]: c for c in result["checks"]}
        assert result["forced"] and forced["out_of_recovery"]["status"] == "passed"
        assert forced["standby_lag"]["status"] == "failed" and "forced: the standby is" in forced["standby_lag"]["detail"]
        assert result["before"]["lag_segments"] >= 2
        remove_standby(paused)

        # The real failover: it is given time to replay what is archived, then promoted.
        report = failover(settings, data)
        assert not report["forced"] and report["passed"], report["checks"]
        assert report["old_timeline"] == 1 and report["new_timeline"] == 2
        names = {c["name"] for c in report["checks"]}
        assert {"timeline_history_archived", "test_write_archived", "archive_configured", "old_primary_fenced",
                "old_primary_fenced_in_primary_repository", "recovery_dir_removed"} <= names
        assert not (data / RECOVERY_DIR).exists()

        # Every row committed before the last archived segment is there; it takes writes.
        promoted = report_dsn(primary, report)
        with psycopg.connect(promoted, autocommit=True) as conn:
            assert conn.execute("SELECT batch, count(*) FROM probe GROUP BY 1 ORDER BY 1").fetchall() == \
                [(1, 50), (2, 50), (3, 50)]
            conn.execute("INSERT INTO probe (batch) VALUES (4)")
        # Its new timeline is archived into the replica repository.
        assert (replica / wal_key("00000002.history")).exists()
        assert any((replica / "wal" / "00000002").glob("00000002*.json"))

        # The old primary is fenced: its next segment is refused, the repository never has it.
        insert(primary, 5)
        with psycopg.connect(primary.cluster.dsn(), autocommit=True) as conn:
            conn.execute("SELECT pg_logical_emit_message(false, 'test', 'fence')")
            seg = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
            conn.execute("SELECT pg_switch_wal()")
            wait_until(lambda: conn.execute("SELECT last_failed_wal FROM pg_stat_archiver").fetchone()[0] == seg,
                       "the old primary's archiver failing on " + seg)
        assert not (primary.repo / wal_key(seg)).exists() and not (primary.repo / (wal_key(seg) + ".json")).exists()
        server_log = primary.cluster.log.read_text(errors="replace")
        assert "was fenced at" in server_log and "refusing to archive " + seg in server_log
        fences = show_fences(settings)
        assert [f["timeline"] for f in fences] == [1] and fences[0]["trusted"]
        assert fences[0]["switch_lsn"] == report["switch_lsn"]
    except BaseException:
        print(recovery_log(data).read_text(errors="replace")[-6000:])  # the standby's side, for the failure
        raise
    finally:
        remove_standby(data)
        remove_standby(paused)
    assert not data.exists() and not paused.exists()


def report_dsn(primary, report) -> str:
    return f"postgresql://postgres:{primary.cluster.password}@127.0.0.1:{report['port']}/app"


def cli_env(settings: Settings) -> dict[str, str]:
    return {"BVH_OPS_DATABASE_URL": settings.database_url.get_secret_value(),
            "BVH_OPS_REPOSITORY": settings.repository, "BVH_OPS_REPLICA_REPOSITORY": settings.replica_repository or "",
            "BVH_OPS_RECIPIENTS": ",".join(str(p) for p in settings.recipients),
            "BVH_OPS_IDENTITY": str(settings.identity), "BVH_OPS_STATE_DIR": str(settings.state_dir)}


def test_bad_input_is_one_clear_line(keypair, tmp_path):
    env = {"BVH_OPS_REPOSITORY": f"file://{tmp_path / 'repo'}", "BVH_OPS_RECIPIENTS": str(keypair[0]),
           "BVH_OPS_IDENTITY": str(keypair[1]), "BVH_OPS_STATE_DIR": str(tmp_path / "state")}
    (tmp_path / "repo").mkdir()
    not_standby = tmp_path / "data"
    not_standby.mkdir()
    for args in (("standby", "status", "--target-dir", str(not_standby)),
                 ("failover", "--target-dir", str(not_standby))):
        proc = run_cli(*args, env=env)
        assert_one_line_error(proc, "is not a standby built by `bvh-ops standby create`")
        assert proc.returncode == 10
    proc = run_cli("standby", "create", "--target-dir", str(tmp_path / "new"), "--from", "replica", env=env)
    assert_one_line_error(proc, "replica_repository is not set")
    assert not (tmp_path / "new").exists() and not (tmp_path / "new.bvh-standby").exists()
    proc = run_cli("standby", "create", "--target-dir", str(tmp_path / "new"), "--from", "elsewhere", env=env)
    assert_one_line_error(proc, "--from 'elsewhere': use 'primary' or 'replica'")
    proc = run_cli("standby", "create", "--target-dir", str(tmp_path / "new"), env=env)
    assert_one_line_error(proc)  # an empty repository: no physical backup to build from
    assert not (tmp_path / "new").exists() and not (tmp_path / "new.bvh-standby").exists()


def test_pg15_standby_follows_and_fails_over(tmp_path, keypair):
    """The same on Debian's PostgreSQL 15 (its own binaries: pg_ctl, pg_controldata), from the
    primary repository."""
    from tests.conftest import PG15_BIN

    if not (PG15_BIN / "initdb").exists():
        pytest.skip("Debian PostgreSQL 15 binaries not present")
    arch = start_archiving(tmp_path / "pg15", keypair, binaries=PG15_BIN, extra=RETRY)
    data = tmp_path / "standby15" / "data"
    try:
        settings = Settings(database_url=arch.cluster.dsn(), repository=arch.url, recipients=[keypair[0]],
                            identity=keypair[1], state_dir=tmp_path / "state")
        with psycopg.connect(arch.cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE w (id int)")
        run_physical_backup(settings, "full")
        meta = create_standby(settings, data, start=True)
        assert "15" in meta["bin_dir"]
        with psycopg.connect(arch.cluster.dsn(), autocommit=True) as conn:
            conn.execute("INSERT INTO w SELECT generate_series(1, 500)")
        seg = arch.switch_and_wait()
        wait_until(lambda: (s := standby_status(settings, data, now=datetime.now(UTC)))["caught_up"]
                   and s["replayed_segment"] >= seg, "the PostgreSQL 15 standby replays " + seg)
        report = failover(settings, data)
        assert report["passed"] and report["new_timeline"] == 2, report["checks"]
        dsn = f"postgresql://postgres:{arch.cluster.password}@127.0.0.1:{report['port']}/postgres"
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM w").fetchone()[0] == 500
            assert conn.execute("SHOW server_version_num").fetchone()[0].startswith("15")
    finally:
        remove_standby(data)
        arch.cluster.destroy()
