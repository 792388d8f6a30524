"""The demo's application-recovery step (bvh_ops.demo.files_step) as `make demo` runs it, in
isolation: the sample platform over a sample database on the embedded PostgreSQL, its config file
a file set of the demo's config (snapshotted first, as the daily backup does), broken by a bad
deploy, rolled back by recover_application, healthy again, RTO against 30 minutes."""

from __future__ import annotations

import json
import time
import tomllib

import httpx
import pytest
from rich.console import Console

from bvh_ops.demo.files_step import MISSING_DB, SET, platform_files, run_files_step, write_platform_app
from bvh_ops.demo.sample import load_sample
from bvh_ops.files.snapshot import take_snapshot
from bvh_ops.pg.cluster import free_port


@pytest.fixture
def step_env(fresh_db, make_settings, repo_dir, tmp_path):
    dsn = fresh_db("_platform")
    load_sample(dsn, scale=0.05)
    state = tmp_path / "state"
    state.mkdir()
    toml = write_platform_app(state, dsn, free_port())
    file_sets = tomllib.loads(toml)["file_sets"]
    return make_settings(dsn, repo_dir.as_uri(), state_dir=state, file_sets=file_sets), state


def test_files_step_breaks_the_platform_config_and_recovers_it(step_env):
    settings, state = step_env
    files = platform_files(state)
    good = files.conf.read_bytes()
    assert b"password" not in good and "password" not in json.loads(good)["dsn"]   # the passfile has it
    time.sleep(0.2)                       # the daily backup runs well after the config was written
    daily = take_snapshot(settings, SET)  # what the demo's daily-backup flow took

    console = Console(record=True, width=240)
    ok, row, res = run_files_step(settings, state, console)
    out = console.export_text()
    assert ok, out
    assert row.startswith("OK: bad config rolled back to") and "against 1800 s: PASS" in row

    first, nightly = res.snapshots
    assert first["files_unchanged"] == 1 and first["bytes_in"] == 0    # unchanged since the daily one: not read
    assert res.broken_status == 503
    [change] = res.diff["changed"]
    assert change["path"].endswith("platform.json") and MISSING_DB in change["diff"]
    assert '+  "dsn": ' in out and MISSING_DB in out

    doc = res.recovery
    assert doc["status"] == "recovered" and doc["snapshot_id"] == first["snapshot_id"] != nightly["snapshot_id"]
    assert [s["name"].split(":")[0] for s in doc["steps"]] == ["select snapshot", "restore in place", "restart 1",
                                                                "verify health"]
    assert doc["rto"]["objective_seconds"] == 1800 and doc["rto"]["result"] == "pass"
    assert files.conf.read_bytes() == good and res.healthy_after
    (kept,) = doc["replaced"]
    assert MISSING_DB.encode() in open(kept, "rb").read()
    assert "30-minute application objective: PASS" in out
    assert daily.snapshot_id != first["snapshot_id"]
    with pytest.raises(httpx.HTTPError):   # the platform is stopped afterwards
        httpx.get(f"http://127.0.0.1:{json.loads(good)['port']}/api/health", timeout=2)
