"""The maintenance flows under the Prefect test harness: the weekly flow vacuums a bloated table
and publishes its artifacts; the daily flow with a backup holding the target waits briefly, then
only assesses; the monthly flow notes that the other monthly procedures are their own deployments."""

from __future__ import annotations

import json

import psycopg
import pytest

from bvh_ops.pg.lock import TargetLock
from tests.integration.test_maintenance import bloat, db, stat
from tests.waiting import wait_until

pytestmark = pytest.mark.usefixtures("prefect_harness")
ALL_DAY = json.dumps({"window_start": "12:00:00", "window_end": "11:59:59"})


@pytest.fixture
def world(fresh_db, env_settings, repo_dir, monkeypatch):
    dsn = fresh_db()
    ops = fresh_db("_ops")
    env_settings(dsn, f"file://{repo_dir}", BVH_OPS_OPS_DATABASE_URL=ops, BVH_OPS_MAINTENANCE=ALL_DAY)
    with psycopg.connect(dsn, autocommit=True) as conn:
        bloat(conn, "bloated")
    wait_until(lambda: stat(dsn, "bloated", "n_dead_tup") >= 10_000, "dead tuples counted")
    return dsn, ops


def test_weekly_flow_vacuums_and_publishes(world):
    from prefect.client.orchestration import get_client

    from flows.maintenance import maintenance_weekly

    dsn, ops = world
    report = maintenance_weekly(wait_for_backup_seconds=0)
    assert [(a["action"], a["object"], a["status"]) for a in db(report)] == [
        ("vacuum", "public.bloated", "done")]
    assert stat(dsn, "bloated", "n_dead_tup") == 0

    async def artifact(key):
        async with get_client() as client:
            from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

            found = await client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key])))
            return found[0].data if found else ""

    import asyncio

    md = asyncio.run(artifact("maintenance-weekly"))
    assert "# Maintenance weekly: done" in md and "## Skipped" in md and "public.bloated" in md
    assert "## Disk" in md and any(a["action"] == "verify" for a in report["actions"])
    perf = asyncio.run(artifact("performance-report"))          # the weekly report, a stage of the flow
    assert perf.startswith("# Performance report: ") and "## Recommendations" in perf
    # index use and bloat from the maintenance facts; the bloat chart from the snapshot just taken
    assert "## Index usage since the statistics were reset" in perf and "## Table bloat (estimated)" in perf
    assert "### Estimated table bloat per snapshot (MiB)" in perf and "data:image/png;base64,iVBORw0KGgo" in perf
    assert {"recommendations", "unused_indexes", "growing_bloat", "endpoints"} <= set(report["performance"])


def test_daily_flow_waits_for_the_backup_then_only_assesses(world):
    from flows.maintenance import maintenance_daily, maintenance_monthly

    dsn, _ = world
    with TargetLock(dsn, "daily-backup"):
        report = maintenance_daily(wait_for_backup_seconds=1)
    assert report["status"] == "skipped"
    assert all(a["status"] == "skipped" and "daily-backup" in a["detail"] for a in report["actions"])
    monthly = maintenance_monthly(wait_for_backup_seconds=0, dry_run=True)
    assert any("archive-logs, capacity planning and the security audit" in n for n in monthly["notes"])
    assert stat(dsn, "bloated", "n_dead_tup") >= 10_000
