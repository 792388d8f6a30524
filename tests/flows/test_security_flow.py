"""The security flows under the Prefect test harness and `bvh-ops security` as an operator runs
it: scan (JSON shape, exit 1 on an unwaived critical finding), baseline accept (audited), audit
with drift, a tampered baseline refused in one line; the flows keep their runs in
ops.security_runs, report findings to alerting and publish the findings, drift and trend."""

from __future__ import annotations

import json

import psycopg
import pytest

from bvh_ops.opsdb.migrations import migrate
from tests.integration.cli import assert_one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def world(pg, fresh_db, env_settings, repo_dir):
    ops = fresh_db("_ops")
    with psycopg.connect(ops, autocommit=True) as conn:
        migrate(conn)
    env = env_settings(pg.dsn(), f"file://{repo_dir}", BVH_OPS_OPS_DATABASE_URL=ops)
    return ops, env, repo_dir


def test_cli_scan_accept_audit_drift_and_tamper(pg, world, tmp_path):
    ops, env, repo = world
    scanned = run_cli("security", "scan", "--json", env=env)
    assert scanned.returncode == 0, scanned.stderr
    doc = json.loads(scanned.stdout)
    assert doc["status"] in ("passed", "warning") and doc["checked"] > 20
    assert all({"id", "cis", "severity", "title", "evidence", "remediation"} <= set(f) for f in doc["findings"])

    strict = tmp_path / "strict.toml"
    strict.write_text("[security]\nsuperusers = []\n")
    strict.chmod(0o600)
    failed = run_cli("security", "scan", env={**env, "BVH_OPS_CONFIG": str(strict)})
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "CRIT PG-ROLE-001 (CIS 4.2) superuser not in the allow-list: role postgres is a superuser" in failed.stdout

    accepted = run_cli("security", "baseline", "accept", "--json", env=env)
    assert accepted.returncode == 0, accepted.stderr
    acc = json.loads(accepted.stdout)
    assert acc["key"].startswith("security/baselines/") and acc["audited"] is True
    with psycopg.connect(ops) as conn:
        assert conn.execute("SELECT subject FROM ops.audit_chain WHERE action = 'security.baseline.accept'"
                            ).fetchall() == [(acc["key"],)]

    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE sec_flow_intruder NOLOGIN")
    try:
        audited = run_cli("security", "audit", "--json", env=env)
        assert audited.returncode == 0, audited.stderr
        drift = json.loads(audited.stdout)["drift"]
        assert {"section": "roles", "object": "sec_flow_intruder", "change": "added", "before": None} \
            .items() <= next(d for d in drift if d["object"] == "sec_flow_intruder").items()
    finally:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("DROP ROLE sec_flow_intruder")

    path = repo / acc["key"]
    tampered = json.loads(path.read_text())
    tampered["snapshot"]["roles"]["rogue"] = {"superuser": True, "login": True}  # absorb a rogue superuser
    path.chmod(0o644)
    path.write_text(json.dumps(tampered))
    refused = run_cli("security", "audit", env=env)
    assert refused.returncode == 8
    assert_one_line_error(refused, "signature does not verify")


def test_flows_record_alert_and_publish(pg, world):
    from prefect.client.orchestration import get_client

    from flows.security import security_audit, security_scan

    ops, env, repo = world
    scan_doc = security_scan()
    audit_doc = security_audit()
    assert audit_doc["drift"] is None  # no baseline accepted in this repository yet
    with psycopg.connect(ops) as conn:
        runs = conn.execute("SELECT kind, status, counts FROM ops.security_runs ORDER BY started_at").fetchall()
        alerts = conn.execute("SELECT key, severity FROM ops.findings WHERE source = 'security' "
                              "AND cleared_at IS NULL").fetchall()
    assert [r[0] for r in runs] == ["scan", "audit"] and runs[0][1] == scan_doc["status"]
    assert set(runs[0][2]) == {"critical", "high", "medium", "low", "info"}
    assert {k for k, _ in alerts} == {f"{f['id']}:{f['object']}".replace(" ", "_") for f in scan_doc["findings"]}

    import asyncio

    async def keys():
        async with get_client() as client:
            return {a.key for a in await client.read_artifacts()}

    assert {"security-scan-findings", "security-audit-findings", "security-audit-drift",
            "security-trend"} <= asyncio.run(keys())
