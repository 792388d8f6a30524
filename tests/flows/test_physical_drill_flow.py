"""The physical DR drill under the session prefect_test_harness, on a real PostgreSQL 18
archiving through bvh-ops with writes running: full + incremental recovered to a time, every
check passed; a WAL gap that makes the target unreachable fails the drill naming the check."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from bvh_ops.demo.sample import LOTTERY_INVARIANTS, Workload, consistent_cut
from tests.integration.archiving import start_lottery_source
from tests.waiting import more_writes

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def source(tmp_path_factory, keypair):
    arch = start_lottery_source(tmp_path_factory.mktemp("pdrill"), keypair, scale=0.3)
    yield arch
    arch.cluster.destroy()


@pytest.fixture(scope="module")
def history(source):
    """full → writes → incremental → writes → cut (the target) → writes, archived."""
    from bvh_ops.config import Settings
    from bvh_ops.physical.backup import run_physical_backup

    dsn = source.cluster.dsn("lottery")
    settings = Settings(database_url=dsn, repository=source.url, recipients=[source.repo.parent / "recipient.pub"],
                        state_dir=source.repo.parent / "state")
    full = run_physical_backup(settings, "full").manifest
    work = Workload(dsn, rate=40).start()
    try:  # writes between the steps, counted (a loaded machine writes slower)
        more_writes(work)
        incr = run_physical_backup(settings, "incremental").manifest
        more_writes(work)
        cut = consistent_cut(dsn, "drill_target")
        more_writes(work)
    finally:
        work.stop()
    source.switch_and_wait()
    return {"full": full, "incr": incr, "cut": cut}


@pytest.fixture
def drill_env(source, history, env_settings):
    env_settings(source.cluster.dsn("lottery"), source.url, BVH_OPS_STATE_DIR=str(source.repo.parent / "state"),
                 BVH_OPS_OPS_DATABASE_URL=source.cluster.dsn("bvh_ops"), BVH_OPS_PITR_MARGIN_SECONDS="2",
                 BVH_OPS_INVARIANTS=json.dumps([{"name": n, "sql": q} for n, q in LOTTERY_INVARIANTS]))
    from bvh_ops.config import load_settings

    return load_settings()


def _torn_down(settings, report) -> None:
    root = Path(settings.state_dir).resolve() / "drills" / f"{report['drill_id']}-physical"
    assert not root.exists()
    for proc in psutil.process_iter(["name", "cmdline"]):
        assert not (proc.info["name"] == "postgres" and str(root) in " ".join(proc.info["cmdline"] or []))


def test_physical_drill_recovers_to_a_time_and_passes_every_check(drill_env, history, monkeypatch):
    """… and reads and decrypts each base of the chain once: its deep verify extracts the base
    for the restore as it checks it."""
    from flows.dr_drill import dr_drill
    from tests.integration.test_physical import _count_base_reads

    opened, decrypted = _count_base_reads(monkeypatch)
    cut = history["cut"]
    report = dr_drill(backup="latest", mode="physical", to_time=datetime.fromisoformat(cut.time))
    status = {c["name"]: c["status"] for c in report["checks"]}
    for name in ("physical_deep_verify", "wal_continuity", "pg_verifybackup", "physical_recovery", "pg_amcheck",
                 "physical_pitr_append_only", "physical_freshness", "rto_objective", "rpo_objective"):
        assert status.get(name) == "passed", (name, report["checks"])
    assert any(n.startswith("physical_invariant:") for n in status)
    assert report["passed"] and report["physical_backup_id"] == history["incr"].backup_id
    assert report["rto_seconds"] > 0 and report["rpo_seconds"] is not None and report["rpo_seconds"] < 60
    names = [s["name"] for s in report["stages"]]
    assert names[:3] == ["physical_select", "physical_fetch_verify", "physical_restore"]
    assert "physical_teardown" in names
    bases = {f"backups/{history[k].backup_id}/base.tar": 1 for k in ("full", "incr")}
    assert opened == bases and decrypted == bases
    _torn_down(drill_env, report)


def test_a_base_damaged_in_the_repository_fails_the_deep_verify_and_nothing_is_recovered(drill_env, source, history):
    """A byte of the full's stored base.tar changed near its end (the verify has extracted most
    of it by then): the drill fails physical_deep_verify naming the object and the problem;
    nothing is recovered or started, and no scratch directory is left."""
    from flows.dr_drill import DrillFailed, dr_drill

    full = history["full"].backup_id
    stored = source.repo / "backups" / full / "base.tar"
    with open(stored, "r+b") as fh:
        fh.seek(-100, 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    try:
        with pytest.raises(DrillFailed) as info:
            dr_drill(backup="latest", mode="physical", to_time=datetime.fromisoformat(history["cut"].time))
    finally:
        with open(stored, "r+b") as fh:
            fh.seek(-100, 2)
            fh.write(byte)
    report = info.value.report
    bad = {c["name"]: c for c in report["checks"] if c["status"] != "passed"}
    assert f"{full}/base.tar: CHECKSUM_MISMATCH" in bad["physical_deep_verify"]["detail"]
    names = [s["name"] for s in report["stages"]]
    assert "physical_restore" not in names and "physical_recovery" not in bad and report["rto_seconds"] is None
    _torn_down(drill_env, report)
    assert not list((Path(drill_env.state_dir).resolve() / "drills").glob(f"{report['drill_id']}*"))


def test_a_wal_gap_before_the_target_fails_the_drill_naming_it(drill_env, source, history, tmp_path):
    from bvh_ops.pg.lsn import parse_lsn, segment_name
    from flows.dr_drill import DrillFailed, dr_drill

    incr = history["incr"]
    victim = segment_name(1, parse_lsn(incr.extra["stop_lsn"]) // (16 << 20))
    path = source.repo / "wal" / "00000001" / victim
    shutil.move(path, tmp_path / victim)
    try:
        with pytest.raises(DrillFailed) as info:
            dr_drill(backup="latest", mode="physical", to_time=datetime.fromisoformat(history["cut"].time))
        report = info.value.report
        bad = {c["name"]: c for c in report["checks"] if c["status"] != "passed"}
        assert "wal_continuity" in bad and victim in bad["wal_continuity"]["detail"]
        assert report["rto_seconds"] is None
        _torn_down(drill_env, report)
    finally:
        shutil.move(tmp_path / victim, path)



def test_an_incremental_whose_full_is_gone_is_corruption_not_a_warning(drill_env, source, history, tmp_path):
    """The chain's base deleted from the repository: the incremental cannot be restored. The
    stage failed with NotFound, which counted as "could not run" (a warning) — it is a backup that
    cannot be recovered: failed, and alerting hears data corruption (a review found it)."""
    from flows.dr_drill import DrillFailed, dr_drill
    from tasks.drill_tasks import drill_findings

    full = history["full"].backup_id
    shutil.move(source.repo / "backups" / full, tmp_path / full)
    try:
        with pytest.raises(DrillFailed) as info:
            dr_drill(backup=history["incr"].backup_id, mode="physical",
                     to_time=datetime.fromisoformat(history["cut"].time))
    finally:
        shutil.move(tmp_path / full, source.repo / "backups" / full)
    report = info.value.report
    bad = {c["name"]: c for c in report["checks"] if c["status"] != "passed"}
    assert any(c["status"] == "failed" and full in c["detail"] for c in bad.values()), bad
    assert [f.severity.value for f in drill_findings(report)][0] == "critical"
    _torn_down(drill_env, report)

def test_cli_physical_drill_json_contract(drill_env, history, cli_prefect_api):
    """`bvh-ops drill --mode physical --to-lsn … --json` through the real CLI process."""
    from tests.integration.cli import run_cli

    env = {k: v for k, v in __import__("os").environ.items() if k.startswith("BVH_OPS_")}
    proc = run_cli("drill", "--mode", "physical", "--to-lsn", history["cut"].lsn, "--json", env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    for key in ("passed", "backup_id", "rto_seconds", "rpo_seconds", "objectives", "stages", "checks"):
        assert key in doc
    assert doc["passed"] is True and all(c["status"] == "passed" for c in doc["checks"])
