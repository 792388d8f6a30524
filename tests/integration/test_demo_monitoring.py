"""The demo's monitoring step (bvh_ops.demo.run._monitoring) as `make demo` runs it: the sample
platform under load on its own database, real probes in real time, the alerting runtime with a
real SMTP sink and webhook receiver, the ops database on the embedded PostgreSQL. The critical and
resolved notices must arrive at the real servers and be in the notification log as sent."""

from __future__ import annotations

import psycopg
import pytest
from rich.console import Console

from bvh_ops.demo.run import FIRED, RESOLVED, _monitoring
from bvh_ops.demo.sample import load_sample
from tests.integration.test_alerting_runtime import CALM_HOST


@pytest.fixture
def demo_env(fresh_db, monkeypatch, tmp_path):
    dsn = fresh_db("_lottery")
    load_sample(dsn, scale=0.05)
    monkeypatch.delenv("BVH_OPS_CONFIG", raising=False)
    for k, v in {"BVH_OPS_STATE_DIR": str(tmp_path / "state"), "BVH_OPS_DATABASE_URL": dsn, **CALM_HOST}.items():
        monkeypatch.setenv(k, v)
    (tmp_path / "state").mkdir()
    return dsn, fresh_db("_ops"), tmp_path / "state"


def test_monitoring_step_delivers_critical_and_resolved_to_the_real_receivers(demo_env):
    dsn, ops, state = demo_env
    console = Console(record=True, width=200)
    ok, row = _monitoring(dsn, ops, state, console)
    out = console.export_text()
    assert ok, out
    assert row.startswith("OK") and "FAILED" not in out
    # printed from what the SMTP sink and the webhook receiver got
    assert f"Subject: {FIRED}" in out and f"Subject: {RESOLVED}" in out
    assert '"text": "' + FIRED in out and '"text": "' + RESOLVED in out
    assert "POST /services/demo-hook" in out
    # the slowdown's warning in the hour's batch; the digest rendered with its sections
    batch = out.split("rendered for this hour")[1].split("rendered for this day")[0]
    assert "slow responses: api" in batch
    digest = out.split("rendered for this day")[1]
    assert "[INFO] daily summary" in digest and "system down" in digest
    with psycopg.connect(ops) as conn:
        sent = conn.execute("SELECT channel, kind FROM ops.notifications WHERE status = 'sent' "
                            "AND subject LIKE '%system down: api (api-health)%'").fetchall()
    assert sorted(sent) == [("email", "fired"), ("email", "resolved"), ("webhook", "fired"),
                            ("webhook", "resolved")]


def test_without_an_ops_database_the_step_says_state_is_in_memory(demo_env):
    dsn, _, state = demo_env
    console = Console(record=True, width=200)
    ok, _ = _monitoring(dsn, None, state, console)
    out = console.export_text()
    assert ok, out
    assert "alert state in memory only" in out and f"Subject: {RESOLVED}" in out
