"""The monthly uptime-report flow under the Prefect test harness: the previous month's figures
from the ops database's samples, published as the `uptime-report` artifact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from bvh_ops.monitoring.cycle import CycleResult
from bvh_ops.monitoring.report import parse_month, previous_month
from bvh_ops.monitoring.results import Check, Status
from bvh_ops.monitoring.store import record_cycle
from bvh_ops.opsdb.migrations import migrate

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_the_flow_publishes_the_previous_months_report(fresh_db, monkeypatch, tmp_path):
    from prefect.client.orchestration import get_client

    from flows.uptime_report import uptime_report_flow

    dsn = fresh_db("_uptime")
    month = previous_month(datetime.now(UTC))
    t0 = parse_month(month)[0] + timedelta(days=5)
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
        for i in range(10):  # 10 cycles, the api critical for 3 of them: 70 %
            status = Status.CRITICAL if 4 <= i < 7 else Status.OK
            record_cycle(conn, CycleResult(status, t0 + i * timedelta(seconds=30),
                                           [Check("api-health", "api", status, 10.0, "ms", "")], 0.1, 0.01, []))
    monkeypatch.delenv("BVH_OPS_CONFIG", raising=False)
    monkeypatch.setenv("BVH_OPS_OPS_DATABASE_URL", dsn)
    monkeypatch.setenv("BVH_OPS_STATE_DIR", str(tmp_path / "state"))
    doc = uptime_report_flow()
    api = doc["services"]["api"]
    assert (api["cycles"], api["down"], api["uptime_percent"], api["meets_sla"]) == (10, 3, 70.0, False)
    with get_client(sync_client=True) as client:
        assert "uptime-report" in {a.key for a in client.read_artifacts(limit=200)}
