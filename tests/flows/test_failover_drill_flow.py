"""The failover drill under the session prefect_test_harness, on a real PostgreSQL 18 archiving
through bvh-ops: a standby built from a second (replica) repository catches up, is promoted and
passes the DR drill's checks; RTO and RPO are measured (commits the replica never received are
the data loss); the drill writes nothing into the repository and leaves nothing behind. The
weekly DR drill runs it when asked."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import psycopg
import pytest

from bvh_ops.demo.sample import LOTTERY_INVARIANTS, Workload
from tests.integration.archiving import start_lottery_source
from tests.integration.replicas import sync_repository
from tests.waiting import more_writes

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def source(tmp_path_factory, keypair):
    arch = start_lottery_source(tmp_path_factory.mktemp("fdrill"), keypair, scale=0.2)
    yield arch
    arch.cluster.destroy()


@pytest.fixture(scope="module")
def replicated(source, tmp_path_factory):
    """A full backup and the WAL after it, copied to a second repository; then writes the copy
    never receives (archived on the primary, not replicated: lost in a regional failover)."""
    from bvh_ops.config import Settings
    from bvh_ops.physical.backup import run_physical_backup

    dsn = source.cluster.dsn("lottery")
    settings = Settings(database_url=dsn, repository=source.url, recipients=[source.repo.parent / "recipient.pub"],
                        state_dir=source.repo.parent / "state")
    run_physical_backup(settings, "full")
    work = Workload(dsn, rate=40).start()
    try:
        more_writes(work, 20)
        source.switch_and_wait()
        replica = tmp_path_factory.mktemp("fdrill-replica") / "repo"
        replica.parent.chmod(0o755)  # the standby's OS user reads it through wal-fetch
        sync_repository(source.repo, replica)
        more_writes(work, 20)  # committed after the last replicated segment
    finally:
        work.stop()
    source.switch_and_wait()
    return replica


@pytest.fixture(scope="module")
def weekly(source, replicated, keypair, tmp_path_factory):
    """One weekly DR drill (physical, with the failover drill from the replica repository): both
    tests assert on it (the failover drill's own report as it recorded it in ops.drills). Returns
    (settings, the replica repository's listing before the drill, the weekly report)."""
    from bvh_ops.config import load_settings
    from flows.dr_drill import dr_drill

    env = {"BVH_OPS_DATABASE_URL": source.cluster.dsn("lottery"), "BVH_OPS_REPOSITORY": source.url,
           "BVH_OPS_RECIPIENTS": str(keypair[0]), "BVH_OPS_IDENTITY": str(keypair[1]),
           "BVH_OPS_STATE_DIR": str(source.repo.parent / "state"), "BVH_OPS_TASK_RETRIES": "1",
           "BVH_OPS_RETRY_DELAY_SECONDS": "0.2", "BVH_OPS_SEGMENT_SIZE_KIB": "64",
           "BVH_OPS_REPLICA_REPOSITORY": f"file://{replicated}",
           "BVH_OPS_OPS_DATABASE_URL": source.cluster.dsn("bvh_ops"), "BVH_OPS_PITR_MARGIN_SECONDS": "2",
           "BVH_OPS_INVARIANTS": json.dumps([{"name": n, "sql": q} for n, q in LOTTERY_INVARIANTS])}
    before = sorted(p.relative_to(replicated) for p in replicated.rglob("*"))
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("BVH_OPS_CONFIG", raising=False)
        for k, v in env.items():
            mp.setenv(k, v)
        settings = load_settings()
        report = dr_drill(backup="latest", mode="physical", failover=True)
    return settings, before, report


def _torn_down(settings, drill_id: str) -> None:
    root = Path(settings.state_dir).resolve() / "drills" / drill_id
    assert not root.exists() and not (root / "data.bvh-standby").exists()
    for proc in psutil.process_iter(["name", "cmdline"]):
        assert not (proc.info["name"] == "postgres" and str(root) in " ".join(proc.info["cmdline"] or []))


def test_failover_drill_from_the_replica_measures_rto_and_rpo(weekly, source, replicated):
    settings, before, weekly_report = weekly
    with psycopg.connect(source.cluster.dsn("bvh_ops")) as conn:
        row = conn.execute("SELECT mode, passed, rpo_seconds, report FROM ops.drills WHERE drill_id = %s",
                           (weekly_report["failover_drill"]["drill_id"],)).fetchone()
    report = row[3]  # the failover drill flow's report, as it recorded it
    status = {c["name"]: c["status"] for c in report["checks"]}
    for name in ("standby_caught_up", "standby_in_recovery", "standby_lag", "out_of_recovery", "new_timeline",
                 "recovery_dir_removed", "accepts_writes", "pg_amcheck", "physical_pitr_append_only",
                 "physical_freshness", "rto_objective", "rpo_objective", "full_system_rto_objective"):
        assert status.get(name) == "passed", (name, report["checks"])
    assert any(n.startswith("physical_invariant:") for n in status)
    assert report["passed"] and report["mode"] == "failover" and report["source"] == "replica"
    # The writes the replica never received are the data loss: measured, above zero, within 5 min.
    assert 0 < report["rpo_seconds"] < 300 and 0 < report["rto_seconds"] < 900
    assert [s["name"] for s in report["stages"]][:4] == ["standby", "catch_up", "promote", "checks"]
    # A drill writes no timeline and no fence into the repository it drilled from.
    assert sorted(p.relative_to(replicated) for p in replicated.rglob("*")) == before
    _torn_down(settings, report["drill_id"])
    assert row[:3] == ("failover", True, pytest.approx(report["rpo_seconds"]))
    assert weekly_report["failover_drill"]["rpo_seconds"] == report["rpo_seconds"]  # the run the weekly drill got


def test_weekly_drill_runs_the_failover_drill_when_asked(weekly):
    settings, _, report = weekly
    assert report["passed"] and report["failover_drill"]["passed"], report.get("failover_drill")
    assert report["failover_drill"]["drill_id"].startswith("failover-drill-")
    assert report["failover_drill"]["rto_seconds"] > 0
    _torn_down(settings, report["failover_drill"]["drill_id"])


def test_demo_region_step_replicates_with_the_flow_then_fails_over_from_the_copy(source, replicated, env_settings,
                                                                                  tmp_path_factory):
    """`make demo`'s second-region step: the real replicate flow (root writing the copies) into a
    file:// replica whose wal/ the server's OS user owns, then the failover drill from it — the
    standby's wal-fetch (that user) must read what root copied. (``replicated``: a full backup.)"""
    import io

    from rich.console import Console

    from bvh_ops.config import load_settings
    from bvh_ops.demo.region_step import run_region_step
    from bvh_ops.pg.cluster import server_wal_dir

    replica = tmp_path_factory.mktemp("demo-region") / "replica"
    server_wal_dir(replica)
    env_settings(source.cluster.dsn("lottery"), source.url, BVH_OPS_STATE_DIR=str(source.repo.parent / "state"),
                 BVH_OPS_REPLICA_REPOSITORY=f"file://{replica}",
                 BVH_OPS_OPS_DATABASE_URL=source.cluster.dsn("bvh_ops"), BVH_OPS_PITR_MARGIN_SECONDS="2",
                 BVH_OPS_INVARIANTS=json.dumps([{"name": n, "sql": q} for n, q in LOTTERY_INVARIANTS]))
    out = io.StringIO()
    ok, row, res = run_region_step(load_settings(), Console(file=out, width=200))
    assert ok, (res.failures, out.getvalue())
    assert res.replication["copied"]["objects"] > 0 and res.replication["lag_after"]["objects"] == 0
    assert res.drill["passed"] and res.drill["source"] == "replica"
    assert row.startswith(f"{res.replication['copied']['objects']} object(s) replicated; failover drill PASSED")
    assert "RTO " in row and "(objective 900 s)" in row and "(objective 300 s)" in row
    # every WAL object root copied there is the server's, as archive_command's own are
    owner = replica.joinpath("wal").stat().st_uid
    others = [(str(p.relative_to(replica)), p.stat().st_uid) for p in replica.joinpath("wal").rglob("*")
              if p.stat().st_uid != owner]
    assert not others, others
    _torn_down(load_settings(), res.drill["drill_id"])
