"""The demo's logs and audit step (bvh_ops.demo.logs_step) as `make demo` runs it, in isolation:
the real sample platform on its own database writing its JSON log, the ops database on the
embedded PostgreSQL, a file:// repository and real keys. Collected records, the planted brute
force and structuring found with evidence, a backdated day archived (dropped from the hot store,
found with --archived), and audit verify intact → tampered (naming the entry) → intact."""

from __future__ import annotations

import json

import psycopg
import pytest
from rich.console import Console

from bvh_ops.demo.logs_step import ARCHIVE_CATEGORY, run_logs_step
from bvh_ops.demo.sample import load_sample


@pytest.fixture
def step_env(fresh_db, make_settings, repo_dir, tmp_path):
    dsn = fresh_db("_lottery")
    load_sample(dsn, scale=0.05)
    state = tmp_path / "state"
    state.mkdir()
    return make_settings(dsn, repo_dir.as_uri()), fresh_db("_ops"), state, repo_dir


def test_logs_step_collects_finds_archives_and_verifies_the_audit_trail(step_env):
    settings, ops, state, repo = step_env
    console = Console(record=True, width=220)
    ok, row, result = run_logs_step(settings, ops, state, console)
    out = console.export_text()
    assert ok, out
    assert row.startswith("OK") and "FAILED" not in out

    # 1. collected, per category, with sample lines as `logs search` prints them
    assert result.collected > 0 and result.by_category.get("security", 0) > 0
    assert "bvh-ops logs search --category security" in out

    # 2. the planted brute force and structuring, each with evidence lines
    brute, fraud = result.findings["brute_force"], result.findings["structuring"]
    assert brute["subject"] in ("ip:203.0.113.10", "account:41") and brute["count"] >= 10
    assert all(e["event"] == "auth.login_failed" for e in brute["evidence"])
    assert fraud["subject"] == "account:44" and fraud["count"] == 4
    assert all(e["event"] == "wallet.deposit" and 4500 <= e["amount"] < 5000 for e in fraud["evidence"])
    assert out.count("evidence: ") == 6

    # 3. the archive written to the repository, its day gone from the hot store, found archived
    arch = result.archive
    assert arch["records"] > 0 and arch["found_archived"] == arch["records"]
    stored = repo / arch["key"]
    assert stored.stat().st_size == arch["bytes"]
    assert json.loads((repo / (arch["key"] + ".json")).read_text())["records"] == arch["records"]
    with psycopg.connect(ops) as conn:
        gone = conn.execute("SELECT to_regclass(%s)", (f"ops.log_{ARCHIVE_CATEGORY}_{arch['day']:%Y%m%d}",)
                            ).fetchone()[0]
        dropped = conn.execute("SELECT partition_dropped_at IS NOT NULL FROM ops.log_archives "
                               "WHERE category = %s AND day = %s", (ARCHIVE_CATEGORY, arch["day"])).fetchone()
    assert gone is None and dropped == (True,)
    assert f"finds {arch['records']} records (decrypted from the repository)" in out

    # 4. audit verify: intact → tampered at the edited entry → intact; the trigger is back on
    (s1, n1), (s2, seq), (s3, n3) = result.audit
    assert (s1, s2, s3) == ("intact", "tampered", "intact") and n1 == n3 > 0
    assert f"first bad entry seq {seq}" in out and f"seq {seq}: modified" in out
    with psycopg.connect(ops) as conn:
        assert conn.execute("SELECT tgenabled FROM pg_trigger WHERE tgname = 'audit_chain_append_only'"
                            ).fetchone() == ("O",)
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("UPDATE ops.audit_chain SET actor = 'x' WHERE seq = %s", (seq,))


def test_without_an_ops_database_the_step_fails_and_says_so(step_env):
    settings, _, state, _ = step_env
    console = Console(record=True, width=200)
    ok, row, _ = run_logs_step(settings, None, state, console)
    assert not ok and row.startswith("FAILED") and "FAILED" in console.export_text()
