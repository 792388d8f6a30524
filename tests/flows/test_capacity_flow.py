"""collect-capacity and capacity-planning under the session's prefect_test_harness: the daily
collection lands in the ops database; the monthly run publishes the capacity-report artifact
with its charts and keeps its forecasts."""

from __future__ import annotations

import psycopg
import pytest

from bvh_ops.opsdb.migrations import migrate

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_collect_then_plan_publishes_the_report(fresh_db, sample_db, env_settings, repo_dir, tmp_path):
    from prefect.client.orchestration import get_client

    from flows.capacity import capacity_planning, collect_capacity

    ops = fresh_db("_ops")
    with psycopg.connect(ops, autocommit=True) as conn:
        migrate(conn)
    env_settings(sample_db, f"file://{repo_dir}", BVH_OPS_OPS_DATABASE_URL=ops, BVH_OPS_DISK_PATHS=str(tmp_path))
    doc = collect_capacity()
    assert {"db.bytes", "rows:public.tickets"} <= {s["series"] for s in doc["samples"]}
    report = capacity_planning()
    tickets = next(r for r in report["resources"] if r["name"] == "rows:public.tickets")
    assert tickets["history_days"] > 7          # backfilled from the tickets' purchase times
    assert set(tickets) >= {"name", "unit", "current", "limit", "growth_per_month", "days_until", "status", "reason",
                            "model", "backtest_mape"}

    with get_client(sync_client=True) as client:
        art = next(a for a in client.read_artifacts(limit=200) if a.key == "capacity-report")
    assert "| resource |" in art.data and "data:image/png;base64," in art.data


def test_collect_ends_failed_when_a_measure_could_not_run(fresh_db, env_settings, repo_dir, tmp_path):
    """The platform database unreachable: the repository is still measured and stored, but the
    run is Failed, naming the measure — a gap in the history is not a green run."""
    from flows.capacity import IncompleteCollection, collect_capacity

    ops = fresh_db("_ops")
    env_settings("postgresql://nobody@127.0.0.1:1/platform", f"file://{repo_dir}", BVH_OPS_OPS_DATABASE_URL=ops,
                 BVH_OPS_DISK_PATHS=str(tmp_path))
    with pytest.raises(IncompleteCollection, match="database .* not collected"):
        collect_capacity()
    with psycopg.connect(ops) as conn:
        kept = {r[0] for r in conn.execute("SELECT series FROM ops.capacity_samples WHERE source = 'measured'")}
    assert f"disk.used:{tmp_path}" in kept and "db.bytes" not in kept
