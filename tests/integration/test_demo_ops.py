"""The demo's operations steps (bvh_ops.demo.ops_steps) as `make demo` runs them, in isolation:
the sample platform's database and the ops database on the embedded PostgreSQL, a file://
repository with a real logical backup in it, real keys. Maintenance vacuums the engineered
bloated table inside the window set to cover now; the security scan finds the cluster's
weaknesses and the audit shows the planted role and grant as drift (cleaned up afterwards);
the capacity report is rendered with its resources and the charts are written."""

from __future__ import annotations

import psycopg
import pytest
from rich.console import Console

from bvh_ops.demo.ops_steps import BLOATED, INTRUDER, run_ops_steps
from bvh_ops.demo.sample import load_sample


@pytest.fixture
def step_env(fresh_db, make_settings, repo_dir, tmp_path):
    from bvh_ops.logical.backup import run_logical_backup

    dsn = fresh_db("_lottery")
    load_sample(dsn, scale=0.05)
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    settings = make_settings(dsn, repo_dir.as_uri(), state_dir=state)
    run_logical_backup(settings)   # the demo's backups: what capacity backfills the repository's history from
    return settings, fresh_db("_ops"), state


def test_ops_steps_maintain_scan_audit_and_report_capacity(step_env):
    settings, ops, state = step_env
    console = Console(record=True, width=240)
    ok, rows, result = run_ops_steps(settings, ops, state, console)
    out = console.export_text()
    assert ok, out
    assert [name for name, _ in rows] == ["maintenance", "security", "capacity"]
    assert all(text.startswith("OK") for _, text in rows) and "FAILED" not in out

    # maintenance: the dry run planned the vacuum and did nothing; the real run did it in the window
    planned = {(a["action"], a["object"]) for a in result.plan["plan"]["actions"]}
    assert ("vacuum", BLOATED) in planned
    # nothing was done in the dry run: the database actions skipped as such, no stage acted
    assert all(a["status"] == "skipped" and a["detail"] == "dry run" for a in result.plan["actions"]
               if a["action"] not in ("verify", "cleanup", "sessions"))
    assert not [a for a in result.plan["actions"] if a["status"] == "done"]
    done = next(a for a in result.maintenance["actions"] if a["object"] == BLOATED)
    assert done["status"] == "done" and done["before"]["dead_tuples"] >= 10_000
    assert done["after"]["dead_tuples"] < done["before"]["dead_tuples"] and done["seconds"] >= 0
    assert result.maintenance["plan"]["in_window"] and result.maintenance["status"] == "done"
    assert "bvh-ops maintain weekly --dry-run: the plan" in out and f"vacuum        {BLOATED}" in out
    with psycopg.connect(settings.require_database_url()) as conn:
        assert conn.execute("SELECT to_regclass(%s)", (BLOATED,)).fetchone() == (None,)   # dropped afterwards
    with psycopg.connect(ops) as conn:
        assert conn.execute("SELECT count(*) FROM ops.maintenance_runs").fetchone()[0] == 1

    # security: the scan's findings with ids, evidence and fixes; drift of the role and its grant
    scan = result.scan
    assert scan["checked"] > 10 and sum(scan["counts"].values()) == len(scan["findings"]) > 0
    ids = {f["id"] for f in scan["findings"]}
    assert "PG-LOG-004" in ids          # no pgAudit on the embedded cluster
    assert "fix: " in out and "bvh-ops security scan:" in out
    drift = {(d["section"], d["object"]): d for d in result.drift}
    assert drift[("roles", INTRUDER)]["change"] == "added" and drift[("roles", INTRUDER)]["after"]["login"]
    grant = drift[("grants", "table public.users")]
    assert grant["change"] == "changed" and not any(INTRUDER in g for g in grant["before"])
    assert f"{INTRUDER}=r/" in " ".join(grant["after"])
    data = {f["object"]: f for f in result.intruder_findings if f["id"] == "PG-DATA-001"}
    assert set(data) == {f"{INTRUDER} on public.users.email", f"{INTRUDER} on public.users.phone"}
    assert data[f"{INTRUDER} on public.users.email"]["severity"] == "high"
    assert "(SELECT on the whole table)" in data[f"{INTRUDER} on public.users.email"]["evidence"]
    assert result.drift_after_cleanup == []
    assert result.accepted["audited"]
    with psycopg.connect(settings.require_database_url()) as conn:
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (INTRUDER,)).fetchone() == (0,)

    # capacity: collected (with backfill), the report's table with its resources, the charts on disk
    assert result.collected["samples"] and result.collected["backfilled"] > 0
    names = {r["name"] for r in result.capacity["resources"]}
    assert "db.bytes" in names and "repo.bytes:dumps" in names and any(n.startswith("rows:") for n in names)
    for r in result.capacity["resources"]:
        assert r["status"] in ("ok", "warning", "critical", "unpredictable") and r["reason"]
    assert any(r["status"] == "unpredictable" for r in result.capacity["resources"])
    assert "bvh-ops report capacity" in out and "days until" in out
    assert result.charts and all(p.exists() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in result.charts)
    assert all(p.parent == state / "capacity-charts" for p in result.charts)


def test_without_an_ops_database_the_steps_fail_and_say_so(step_env):
    settings, _, state = step_env
    console = Console(record=True, width=200)
    ok, rows, _ = run_ops_steps(settings, None, state, console)
    assert not ok and all(text.startswith("FAILED") for _, text in rows) and "FAILED" in console.export_text()
