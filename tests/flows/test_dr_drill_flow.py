"""The DR drill flow under the session prefect_test_harness: a good backup passes every check
with RTO/RPO measured; each check can fail on its own; teardown leaves nothing behind."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from bvh_ops.demo.sample import LOTTERY_INVARIANTS, Workload, load_sample
from bvh_ops.pg.catalog import create_database
from tests.waiting import more_writes

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def drill_source(pg):
    create_database(pg.dsn(), "drillsrc")
    load_sample(pg.dsn("drillsrc"), scale=0.5)
    w = Workload(pg.dsn("drillsrc"), rate=50).start()
    more_writes(w, 20)  # the newest rows are live writes
    assert w.stop().errors == 0
    create_database(pg.dsn(), "bvh_ops_drills")
    return pg.dsn("drillsrc")


@pytest.fixture
def drill_env(pg, drill_source, env_settings, repo_dir, tmp_path):
    invariants = json.dumps([{"name": n, "sql": q} for n, q in LOTTERY_INVARIANTS])
    # Early reads on (the default; test_drill_local_time runs the other path, every check after
    # the restore).
    env_settings(drill_source, f"file://{repo_dir}", BVH_OPS_OPS_DATABASE_URL=pg.dsn("bvh_ops_drills"),
                 BVH_OPS_INVARIANTS=invariants, BVH_OPS_DRILL_EARLY_CHECKS="on")
    from bvh_ops.config import load_settings
    from bvh_ops.logical.backup import run_logical_backup

    settings = load_settings()
    manifest = run_logical_backup(settings).manifest
    return settings, manifest


def assert_torn_down(settings, report):
    root = Path(settings.state_dir).resolve() / "drills" / report["drill_id"]
    assert not root.exists()
    for proc in psutil.process_iter(["name", "cmdline"]):
        assert not (proc.info["name"] == "postgres" and str(root) in " ".join(proc.info["cmdline"] or []))


def run_failing_drill(**params):
    from flows.dr_drill import DrillFailed, dr_drill

    with pytest.raises(DrillFailed) as info:
        dr_drill(**params)
    return info.value.report


def status_of(report):
    return {c["name"]: c["status"] for c in report["checks"]}


def test_good_backup_drill_passes_with_rto_and_rpo(drill_env, pg):
    settings, manifest = drill_env
    from flows.dr_drill import dr_drill

    report = dr_drill(backup=manifest.backup_id, mode="logical")
    statuses = status_of(report)
    assert report["passed"] and set(statuses.values()) == {"passed"}, statuses
    for name in ("deep_verify", "logical_fingerprints", "row_counts_gx", "schema", "pitr_append_only",
                 "invariant:wallet_balance_equals_transactions", "invariant:no_negative_balances",
                 "invariant:tickets_reference_draw_and_user", "invariant:closed_draw_results_unchanged",
                 "freshness", "rto_objective", "rpo_objective"):
        assert statuses.get(name) == "passed", name
    assert 0 < report["rto_seconds"] < 900
    assert report["rpo_seconds"] is not None and report["rpo_seconds"] < 300
    verified = next(c["detail"] for c in report["checks"] if c["name"] == "deep_verify")
    assert verified.endswith("the verified dump kept for the restore"), verified
    # The restored side of the PITR comparison came from the dump as it was verified (no scan of
    # the restored tables after the restore), and still compared rows with the live source.
    pitr = next(c["detail"] for c in report["checks"] if c["name"] == "pitr_append_only")
    assert "the restored side of 3 summed from the verified dump's rows" in pitr, pitr
    assert "nothing compared" not in pitr, pitr
    assert [s["name"] for s in report["stages"]] == [
        "select", "fetch_verify", "start", "restore", "checks", "report", "teardown"]
    assert_torn_down(settings, report)
    with psycopg.connect(pg.dsn("bvh_ops_drills")) as conn:
        row = conn.execute("SELECT passed, rto_seconds FROM ops.drills WHERE drill_id = %s",
                           (report["drill_id"],)).fetchone()
        n_checks = conn.execute("SELECT count(*) FROM ops.drill_checks WHERE drill_id = %s",
                                (report["drill_id"],)).fetchone()[0]
    assert row[0] is True and row[1] == pytest.approx(report["rto_seconds"])
    assert n_checks == len(report["checks"])
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts(limit=200) if report["drill_id"] in (a.description or "")}
    assert {"dr-drill-report", "dr-drill-checks"} <= keys


def test_corrupted_object_fails_deep_verify(drill_env):
    settings, manifest = drill_env
    dump = Path(settings.repository.removeprefix("file://")) / "backups" / manifest.backup_id / "dump.pgcustom"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x10
    dump.write_bytes(bytes(data))
    report = run_failing_drill(backup=manifest.backup_id)
    assert status_of(report)["deep_verify"] == "failed"
    assert "dump.pgcustom" in next(c["detail"] for c in report["checks"] if c["name"] == "deep_verify")
    assert report["rto_seconds"] is None
    assert_torn_down(settings, report)  # nothing of what the deep verify decrypted is left



def test_a_scratch_server_that_does_not_answer_is_not_corruption(drill_env, monkeypatch):
    """The configured scratch server down: the drill fails its start stage as not verified, and
    alerting hears that recoverability was not proven (a warning), not "data corruption detected"."""
    from tasks.drill_tasks import drill_findings

    monkeypatch.setenv("BVH_OPS_DRILL_SCRATCH_DSN", "postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2")
    settings, manifest = drill_env
    report = run_failing_drill(backup=manifest.backup_id, scratch="configured")
    assert status_of(report)["deep_verify"] == "passed" and status_of(report)["start"] == "not_verified"
    assert [f.severity.value for f in drill_findings(report)] == ["warning"]
    assert_torn_down(settings, report)


def test_a_drill_with_no_backup_to_select_is_not_corruption(drill_source, env_settings, tmp_path):
    """A new install (no backup yet) or a logical-only one running mode=both: the select finds
    nothing — the drill could not run, a warning; a missing backup part after a select is the
    corruption case (test_physical_drill_flow)."""
    from tasks.drill_tasks import drill_findings

    empty = tmp_path / "empty-repo"
    empty.mkdir()
    env_settings(drill_source, f"file://{empty}")
    report = run_failing_drill(backup="latest")
    assert status_of(report)["select"] == "not_verified"
    assert [f.severity.value for f in drill_findings(report)] == ["warning"]

def test_a_drill_that_fails_its_verify_leaves_no_scan_on_the_live_source(drill_env, drill_source):
    """The live source's PITR side is read from the drill's start; a drill that will not compare
    (its deep verify failed) stops it: no scan of a production table left running (here one
    waits behind a lock) once the drill has returned."""
    settings, manifest = drill_env
    dump = Path(settings.repository.removeprefix("file://")) / "backups" / manifest.backup_id / "dump.pgcustom"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x10
    dump.write_bytes(bytes(data))

    def waiting() -> int:
        with psycopg.connect(drill_source, autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                "AND wait_event_type = 'Lock'").fetchone()[0]

    with psycopg.connect(drill_source) as holder:
        holder.execute("LOCK TABLE audit_log, transactions, security_events IN ACCESS EXCLUSIVE MODE")
        report = run_failing_drill(backup=manifest.backup_id)
        assert status_of(report)["deep_verify"] == "failed"
        deadline = time.monotonic() + 5
        while waiting() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert waiting() == 0
        holder.rollback()


def test_the_restore_uses_the_dump_the_deep_verify_decrypted(drill_env, monkeypatch):
    """One decryption per drill: the deep verify keeps the dump it checked in the scratch
    directory and the restore runs from it — here the repository's object is gone by then, and
    the drill still restores and passes every check. The kept copy is handed to the disk as it
    is written (every few KiB here): still whole."""
    import tasks.drill_tasks as dt
    from bvh_ops.logical import restore as restore_module

    monkeypatch.setattr(restore_module, "WRITEBACK_EVERY", 4096)
    settings, manifest = drill_env
    dump = Path(settings.repository.removeprefix("file://")) / "backups" / manifest.backup_id / "dump.pgcustom"
    real = dt.start_scratch

    def start_without_the_object(*args, **kw):
        dump.unlink()  # after the deep verify, before the restore
        return real(*args, **kw)

    monkeypatch.setattr(dt, "start_scratch", start_without_the_object)
    from flows.dr_drill import dr_drill

    report = dr_drill(backup=manifest.backup_id, mode="logical")
    assert report["passed"] and not dump.exists()
    assert status_of(report)["logical_fingerprints"] == "passed"
    assert_torn_down(settings, report)


def test_a_single_job_restore_keeps_no_copy_it_would_not_use(drill_env, monkeypatch):
    """restore_jobs = 1 streams the dump into pg_restore (the local copy is for --jobs): the deep
    verify then writes no decrypted copy into the scratch directory and does not claim one."""
    import tasks.drill_tasks as dt

    settings, manifest = drill_env
    monkeypatch.setenv("BVH_OPS_RESTORE_JOBS", "1")
    copies: list[str] = []
    real = dt.start_scratch

    def start_and_look(s, drill_id, *args, **kw):
        root = Path(s.state_dir).resolve() / "drills" / drill_id
        copies.extend(p.name for p in root.glob("bvh-restore-*"))  # after the deep verify
        return real(s, drill_id, *args, **kw)

    monkeypatch.setattr(dt, "start_scratch", start_and_look)
    from flows.dr_drill import dr_drill

    report = dr_drill(backup=manifest.backup_id, mode="logical")
    assert report["passed"] and copies == []
    verified = next(c["detail"] for c in report["checks"] if c["name"] == "deep_verify")
    assert "kept" not in verified, verified
    assert_torn_down(settings, report)


def _tamper_after_restore(monkeypatch, statement: str):
    import tasks.drill_tasks as dt

    real = dt.restore_logical

    def restore_then_tamper(settings, backup_id, dsn, **kw):
        result = real(settings, backup_id, dsn, **kw)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(statement)
        return result

    monkeypatch.setattr(dt, "restore_logical", restore_then_tamper)


def test_changed_row_fails_logical_fingerprints(drill_env, monkeypatch):
    settings, manifest = drill_env
    _tamper_after_restore(monkeypatch, "UPDATE users SET display_name = 'tampered' WHERE id = 7")
    report = run_failing_drill(backup=manifest.backup_id)
    s = status_of(report)
    assert s["logical_fingerprints"] == "failed" and "public.users" in str(report["checks"])
    assert s["row_counts_gx"] == "passed"  # same row count: only the fingerprint can see it
    assert_torn_down(settings, report)


def test_dropped_table_fails_schema(drill_env, monkeypatch):
    settings, manifest = drill_env
    _tamper_after_restore(monkeypatch, "DROP TABLE admin_actions")
    report = run_failing_drill(backup=manifest.backup_id)
    s = status_of(report)
    assert s["schema"] == "failed" and s["logical_fingerprints"] == "failed"
    assert "admin_actions" in next(c["detail"] for c in report["checks"] if c["name"] == "schema")


def test_broken_invariant_fails_that_invariant(drill_env, monkeypatch):
    settings, manifest = drill_env
    _tamper_after_restore(monkeypatch, "UPDATE wallets SET balance = -5 WHERE id = 3")
    report = run_failing_drill(backup=manifest.backup_id)
    s = status_of(report)
    assert s["invariant:no_negative_balances"] == "failed"
    assert s["invariant:wallet_balance_equals_transactions"] == "failed"
    assert s["invariant:tickets_reference_draw_and_user"] == "passed"


def test_missing_rows_since_target_fail_pitr(drill_env, monkeypatch):
    settings, manifest = drill_env
    _tamper_after_restore(monkeypatch, "DELETE FROM audit_log WHERE id IN (SELECT min(id) FROM audit_log)")
    report = run_failing_drill(backup=manifest.backup_id)
    # The restored side summed from the dump counts only while logical_fingerprints proves the
    # restored tables hold the dump's rows: here it does not, so the restored copy is read.
    assert status_of(report)["logical_fingerprints"] == "failed"
    assert status_of(report)["pitr_append_only"] == "failed"
    assert "public.audit_log" in next(c["detail"] for c in report["checks"] if c["name"] == "pitr_append_only")
