"""The collect-logs flow under the Prefect test harness: one task per source, the platform's
real JSON log in, records in the ops database; an unreadable file fails the run only after the
other sources were collected."""

from __future__ import annotations

import json

import psycopg
import pytest

from bvh_ops.demo.platform.logs import JsonLog
from bvh_ops.opsdb.migrations import migrate

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_the_flow_collects_each_source_and_fails_on_an_unreadable_file(fresh_db, monkeypatch, tmp_path):
    from flows.collect_logs import CollectionIncomplete, collect_logs

    dsn = fresh_db("_logs")
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
    log = JsonLog(tmp_path / "app" / "app.log")
    for i in range(25):
        log.write("application", "lottery.ticket_bought", seq=i)
    log.write("security", "auth.login_failed", level="warning", ip="203.0.113.9")
    log.close()
    sources = [{"name": "app", "path": f"{tmp_path}/app/app.log*", "format": "json"},
               {"name": "broken", "path": f"{tmp_path}/broken/*.log", "format": "json"}]
    (tmp_path / "broken").mkdir()
    monkeypatch.delenv("BVH_OPS_CONFIG", raising=False)
    monkeypatch.setenv("BVH_OPS_OPS_DATABASE_URL", dsn)
    monkeypatch.setenv("BVH_OPS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("BVH_OPS_TASK_RETRIES", "0")
    monkeypatch.setenv("BVH_OPS_LOG_SOURCES", json.dumps(sources))
    doc = collect_logs()
    assert doc["records"] == 26 and [s["name"] for s in doc["sources"]] == ["app", "broken"]
    assert doc["sources"][1]["files"] == 0
    (tmp_path / "broken" / "gone.log").symlink_to(tmp_path / "nowhere")
    log = JsonLog(tmp_path / "app" / "app.log")
    log.write("application", "lottery.ticket_bought", seq=25)
    log.close()
    with pytest.raises(CollectionIncomplete, match="gone.log"):
        collect_logs()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM ops.log_records").fetchone()[0] == 27
