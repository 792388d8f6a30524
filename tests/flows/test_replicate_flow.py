"""The replicate flow under the session prefect_test_harness, and the DR drill from the replica
alone after the primary repository is deleted (#17 part 1)."""

from __future__ import annotations

import json
import shutil

import psycopg
import pytest

from bvh_ops.demo.sample import LOTTERY_INVARIANTS, Workload, load_sample
from bvh_ops.pg.catalog import create_database
from tests.waiting import more_writes

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def source_db(pg):
    create_database(pg.dsn(), "replsrc")
    load_sample(pg.dsn("replsrc"), scale=0.2)
    w = Workload(pg.dsn("replsrc"), rate=50).start()
    more_writes(w, 20)  # the newest rows are live writes: the drill's RPO is measured against them
    assert w.stop().errors == 0
    create_database(pg.dsn(), "bvh_ops_replica_ops")
    return pg.dsn("replsrc")


def _active_findings(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute(
            "SELECT key FROM ops.findings WHERE source = 'replica' AND cleared_at IS NULL")}


def test_replicate_flow_then_drill_from_the_replica_alone(pg, source_db, env_settings, repo_dir, s3_server_b,
                                                         s3_bucket_b, monkeypatch):
    from bvh_ops.config import load_settings
    from bvh_ops.logical.backup import run_logical_backup
    from flows.dr_drill import dr_drill
    from flows.replicate import replicate
    from tests.conftest import free_port

    ops_dsn = pg.dsn("bvh_ops_replica_ops")
    invariants = json.dumps([{"name": n, "sql": q} for n, q in LOTTERY_INVARIANTS])
    env_settings(source_db, f"file://{repo_dir}", BVH_OPS_OPS_DATABASE_URL=ops_dsn, BVH_OPS_INVARIANTS=invariants,
                 BVH_OPS_REPLICA_REPOSITORY=f"s3://{s3_bucket_b}/dr",
                 BVH_OPS_REPLICA_S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")   # the replica is down
    manifest = run_logical_backup(load_settings()).manifest
    with pytest.raises(Exception, match="replica"):
        replicate()
    assert _active_findings(ops_dsn) == {"replica.unreachable"}             # alerting hears of it

    monkeypatch.setenv("BVH_OPS_REPLICA_S3_ENDPOINT_URL", s3_server_b)       # it is back
    doc = replicate()
    assert doc["ok"] and doc["copied"]["objects"] == 3 and doc["lag_after"]["objects"] == 0
    assert _active_findings(ops_dsn) == set()                               # the finding cleared
    with psycopg.connect(ops_dsn) as conn:                                  # and the audit trail of it
        assert conn.execute("SELECT count(*) FROM ops.audit_chain WHERE action = 'replica.replicate'"
                            ).fetchone()[0] == 1
    quiet = replicate(follow_seconds=1, poll_seconds=0.4)                   # in step: nothing to copy
    assert quiet["copied"]["objects"] == 0 and quiet["follow"]["passes"] >= 1

    shutil.rmtree(repo_dir)                                                 # the primary region is gone
    report = dr_drill(backup="latest", mode="logical", source="replica")
    assert report["passed"], [c for c in report["checks"] if c["status"] != "passed"]
    assert report["source"] == "replica" and report["backup_id"] == manifest.backup_id
