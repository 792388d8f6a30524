"""The incremental-backup flow and the daily flow's physical chain, under the session's
prefect_test_harness, against a real PostgreSQL 18 archiving through bvh-ops."""

from __future__ import annotations

import shutil

import psycopg
import pytest

from bvh_ops.config import load_settings
from bvh_ops.errors import IntegrityError
from bvh_ops.repository.open import open_repository
from tests.integration.archiving import start_archiving
from tests.waiting import wait_until

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def archiving(tmp_path_factory, keypair):
    arch = start_archiving(tmp_path_factory.mktemp("flowarch"), keypair)
    with psycopg.connect(arch.cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10000) g")
    yield arch
    arch.cluster.destroy()


def test_daily_flow_starts_a_chain_and_incrementals_build_on_it(archiving, env_settings):
    from prefect.client.orchestration import get_client

    from flows.daily_backup import daily_backup
    from flows.incremental_backup import incremental_backup

    env_settings(archiving.cluster.dsn(), archiving.url, BVH_OPS_STATE_DIR=str(archiving.repo.parent / "state"))
    daily = daily_backup()
    assert daily["kind"] == "logical" and daily["physical_backup_id"]
    assert all(c["status"] == "passed" for c in daily["physical"]["checks"])
    with psycopg.connect(archiving.cluster.dsn(), autocommit=True) as conn:
        conn.execute("UPDATE t SET id = id + 1 WHERE id < 500")
    archiving.switch_and_wait()
    result = incremental_backup()
    assert result["kind"] == "incremental" and result["parent_id"] == daily["physical_backup_id"]
    names = {c["name"]: c for c in result["checks"]}
    assert names["wal_continuity"]["status"] == "passed" and "continuous" in names["wal_continuity"]["detail"]
    assert names["pg_backup_manifest"]["status"] == "passed" and names["chain_complete"]["status"] == "passed"
    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts(limit=200)}
    assert {"incremental-backup-summary", "physical-backup-checks"} <= keys
    # 'latest' of a logical restore or drill is the newest *dump*, not the newest incremental.
    from bvh_ops.drill.engine import select_backup

    settings = load_settings()
    assert select_backup(settings, "latest").backup_id == daily["backup_id"]
    repo, _ = open_repository(settings)
    assert repo.trusted_manifest("latest", kind="logical").backup_id == daily["backup_id"]
    assert repo.resolve("latest") == result["backup_id"]


def test_an_incremental_over_a_wal_gap_is_rolled_back_and_fails(archiving, env_settings, tmp_path):
    from bvh_ops.physical.backup import run_physical_backup
    from flows.incremental_backup import incremental_backup

    env_settings(archiving.cluster.dsn(), archiving.url, BVH_OPS_STATE_DIR=str(archiving.repo.parent / "state"))
    run_physical_backup(load_settings(), "full")  # the base the incremental builds on, whatever ran before
    archiving.switch_and_wait()
    repo, _ = open_repository(load_settings())
    before = {r.backup_id for r in repo.list_backups() if r.status == "complete"}
    tl_dir = archiving.repo / "wal" / "00000001"
    victim = sorted(p.name for p in tl_dir.iterdir() if len(p.name) == 24)[-2]
    shutil.move(tl_dir / victim, tmp_path / victim)
    try:
        with pytest.raises(IntegrityError, match=f"wal_continuity.*{victim}"):
            incremental_backup()
        assert {r.backup_id for r in repo.list_backups() if r.status == "complete"} == before
    finally:
        shutil.move(tmp_path / victim, tl_dir / victim)


def test_a_failing_archive_command_fails_the_flow_naming_the_archiver(archiving, env_settings):
    """Notifications fire when PostgreSQL cannot archive, not six hours later at a restore."""
    import os

    from flows.incremental_backup import incremental_backup

    env_settings(archiving.cluster.dsn(), archiving.url, BVH_OPS_STATE_DIR=str(archiving.repo.parent / "state"))
    wal_dir = archiving.repo / "wal"
    dirs = [wal_dir, *[p for p in wal_dir.rglob("*") if p.is_dir()]]
    for d in dirs:
        os.chmod(d, 0o555)
    try:
        with psycopg.connect(archiving.cluster.dsn(), autocommit=True) as conn:
            before = conn.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()[0]
            conn.execute("INSERT INTO t SELECT generate_series(1, 100)")
            conn.execute("SELECT pg_switch_wal()")
            wait_until(lambda: conn.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()[0] > before,
                       "archive_command failing", interval=0.2)
        with pytest.raises(IntegrityError, match="wal_archiver.*archive_command is failing"):
            incremental_backup()
    finally:
        for d in dirs:
            os.chmod(d, 0o700)  # the last test of the module: the cluster goes away next


def test_retention_keeps_chains_and_prunes_wal_below_the_oldest_kept_base(archiving, env_settings):
    from datetime import UTC, datetime

    from bvh_ops.expire import apply_plan
    from bvh_ops.pg.lsn import parse_lsn, parse_segment
    from bvh_ops.physical.backup import run_physical_backup
    from bvh_ops.wal.archive import scan_archive, wal_continuity

    env_settings(archiving.cluster.dsn(), archiving.url, BVH_OPS_STATE_DIR=str(archiving.repo.parent / "state"))
    settings = load_settings()
    repo, _ = open_repository(settings)
    old_full = run_physical_backup(settings, "full").manifest
    old_incr = run_physical_backup(settings, "incremental").manifest
    with psycopg.connect(archiving.cluster.dsn(), autocommit=True) as conn:
        conn.execute("INSERT INTO t SELECT generate_series(1, 1000)")
    archiving.switch_and_wait()
    new_full = run_physical_backup(settings, "full").manifest
    incr = run_physical_backup(settings, "incremental").manifest
    archiving.switch_and_wait()
    before = {r.backup_id for r in repo.list_backups() if r.status == "complete"}
    from bvh_ops.repository.gfs import Policy

    result = apply_plan(repo, now=datetime.now(UTC), policy=Policy(keep_daily=0, keep_weekly=0, keep_monthly=0,
                                                                   keep_yearly=0, min_redundancy=1))
    kept = {r.backup_id for r in repo.list_backups() if r.status == "complete"}
    # The newest physical backup is kept with the full it builds on; older chains go.
    assert {new_full.backup_id, incr.backup_id} <= kept and len(kept) < len(before)
    assert not {old_full.backup_id, old_incr.backup_id} & kept
    assert result["wal_kept_from"] == new_full.extra["start_lsn"]
    start = parse_lsn(new_full.extra["start_lsn"]) // (16 << 20)
    segnos = [parse_segment(n)[1] for n in scan_archive(repo.store) if parse_segment(n)]
    assert segnos and min(segnos) >= start and result["wal_pruned"] > 0
    assert not wal_continuity(repo.store, new_full).missing
