"""Application recovery (#18 item 4) with the real sample platform as the application: its config
file (a JSON file a real restart command reads to (re)start the platform process) is snapshotted,
broken (a database that does not exist: the platform answers /api/health with 503), and
recover_application rolls it back to the previous snapshot, restarts the platform and sees it
healthy through the monitoring probe cycle; RTO against the 30-minute objective. A failing or
hanging restart command stops the recovery with the replaced file kept and named."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from bvh_ops.demo.sample import load_sample
from bvh_ops.files.recover import recover_application, render_markdown, run_command
from bvh_ops.files.snapshot import take_snapshot
from bvh_ops.pg.catalog import create_database
from bvh_ops.pg.cluster import free_port
from tests.waiting import wait_until

# The application's restart procedure (bvh_ops/demo/platform/restart.py, the demo's too): stop the
# platform named in RUN_DIR/platform.pid, start a new one from the config file, exit 0 once it
# answers (with any status), 1 when it cannot start.
RESTART = ["-m", "bvh_ops.demo.platform.restart"]


@pytest.fixture(scope="module")
def recover_db(pg) -> str:
    create_database(pg.dsn(), "recover_sample")
    load_sample(pg.dsn("recover_sample"), scale=0.05)
    yield pg.dsn("recover_sample")
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute('DROP DATABASE IF EXISTS "recover_sample" WITH (FORCE)')


def _config(dsn: str, port: int) -> bytes:
    return json.dumps({"dsn": dsn, "port": port, "cache": "memory"}, indent=2).encode() + b"\n"


@pytest.fixture
def app_env(make_settings, repo_dir, tmp_path):
    """The application: a config dir (the file set), a run dir (pid file, logs), a port, and
    settings whose restart command is RESTART; the platform is stopped at the end."""
    conf_dir, run_dir = tmp_path / "etc/lottery", tmp_path / "run"
    conf_dir.mkdir(parents=True)
    run_dir.mkdir()
    conf = conf_dir / "platform.json"
    port = free_port()
    restart = [sys.executable, *RESTART, str(conf), str(run_dir)]

    def make(restart_commands=None, **extra):
        fs = {"name": "app", "class": "application", "paths": [str(conf_dir)],
              "restart_commands": [restart] if restart_commands is None else restart_commands,
              "health_service": "api", "health_timeout_seconds": 60, **extra}
        endpoints = [{"name": "platform-health", "service": "api", "url": f"http://127.0.0.1:{port}/api/health"},
                     {"name": "other-service", "service": "frontend", "url": "http://127.0.0.1:9/never"}]
        return make_settings("postgresql://u@127.0.0.1:5432/db", f"file://{repo_dir}", file_sets=[fs],
                             endpoints=endpoints)

    yield conf, port, restart, make
    pidfile = run_dir / "platform.pid"
    if pidfile.exists():
        pid = int(pidfile.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(300):   # gone (or a zombie of whoever adopted it): the port is free again
            try:
                os.kill(pid, 0)
                if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
                    break
            except (ProcessLookupError, FileNotFoundError):
                break
            time.sleep(0.05)


def _health(port: int) -> int:
    return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=10).status_code


def test_recover_application_rolls_back_a_broken_platform_config(app_env, recover_db, pg):
    conf, port, restart, make = app_env
    settings = make()
    good = _config(recover_db, port)
    conf.write_bytes(good)
    ok, detail = run_command(restart, 120)
    assert ok, detail
    assert _health(port) == 200

    good_snap = take_snapshot(settings, "app")
    assert not good_snap.partial, good_snap.problems
    # A bad deploy: the config names a database that does not exist; it is snapshotted that night.
    bad = _config(pg.dsn("no_such_database"), port)
    conf.write_bytes(bad)
    ok, detail = run_command(restart, 120)
    assert ok, detail
    wait_until(lambda: _health(port) == 503, "the platform reports itself unhealthy on the bad config")
    bad_snap = take_snapshot(settings, "app")

    report = recover_application(settings, "app", "previous")
    doc = report.to_json()
    assert doc["status"] == "recovered", doc
    assert report.snapshot_id == good_snap.snapshot_id != bad_snap.snapshot_id
    assert [s["name"] for s in doc["steps"]] == ["select snapshot", "restore in place",
                                                 f"restart 1: {' '.join(restart)[:120]}", "verify health"]
    assert all(s["status"] == "ok" and s["seconds"] >= 0 for s in doc["steps"])
    assert "platform pid" in doc["steps"][2]["detail"]
    # only the api service's endpoint was waited for (the frontend one never answers)
    assert "1 endpoint check(s) ok" in doc["steps"][3]["detail"]
    assert conf.read_bytes() == good
    (kept,) = doc["replaced"]
    assert kept.startswith(str(conf) + ".bvh-replaced-") and Path(kept).read_bytes() == bad
    assert _health(port) == 200
    assert doc["rto"]["result"] == "pass" and doc["rto"]["objective_seconds"] == 1800
    assert 0 < doc["total_seconds"] < 1800
    assert abs(doc["total_seconds"] - sum(s["seconds"] for s in doc["steps"])) < 1.0
    md = render_markdown(doc)
    assert "PASS" in md and "verify health" in md and kept in md


def test_a_failing_restart_command_stops_the_recovery_and_keeps_the_replaced_file(app_env):
    conf, _port, _restart, make = app_env
    fail = [sys.executable, "-c", "import sys; print('restarting lottery-api'); "
            "sys.exit('lottery-api.service: unit not found')"]
    never = [sys.executable, "-c", "open(__import__('sys').argv[1], 'w').write('ran')", str(conf.parent / "ran")]
    settings = make(restart_commands=[fail, never])
    conf.write_bytes(b'{"good": true}\n')
    snap = take_snapshot(settings, "app")
    conf.write_bytes(b'{"broken": \n')

    doc = recover_application(settings, "app", snap.snapshot_id).to_json()
    assert doc["status"] == "failed" and doc["rto"]["result"] == "fail"
    names = [s["name"] for s in doc["steps"]]
    assert names == ["select snapshot", "restore in place", f"restart 1: {' '.join(fail)[:120]}"]  # no 2nd/health
    failed = doc["steps"][-1]
    assert failed["status"] == "failed"
    assert "exit 1" in failed["detail"] and "restarting lottery-api" in failed["detail"]
    assert "unit not found" in failed["detail"]
    assert not (conf.parent / "ran").exists()
    assert conf.read_bytes() == b'{"good": true}\n'
    (kept,) = doc["replaced"]
    assert Path(kept).read_bytes() == b'{"broken": \n'


def test_a_hanging_restart_is_killed_and_previous_needs_two_snapshots(app_env):
    conf, _port, _restart, make = app_env
    settings = make(restart_commands=[["sleep", "60"]], restart_timeout_seconds=1)
    conf.write_bytes(b"{}\n")
    snap = take_snapshot(settings, "app")

    doc = recover_application(settings, "app", "previous").to_json()
    assert [s["status"] for s in doc["steps"]] == ["failed"]
    assert "1 trusted snapshot(s): no previous one" in doc["steps"][0]["detail"]
    assert doc["replaced"] == [] and doc["snapshot_id"] is None

    t0 = time.monotonic()
    doc = recover_application(settings, "app", "latest").to_json()
    assert time.monotonic() - t0 < 30
    assert doc["snapshot_id"] == snap.snapshot_id
    assert doc["steps"][-1]["status"] == "failed" and "killed after 1 s" in doc["steps"][-1]["detail"]


def test_health_without_endpoints_is_a_failure_not_a_pass(app_env):
    conf, _port, _restart, make = app_env
    settings = make(restart_commands=[], health_service="nothing-is-this")
    conf.write_bytes(b"{}\n")
    take_snapshot(settings, "app")
    doc = recover_application(settings, "app", "latest", health_timeout=1).to_json()
    assert doc["status"] == "failed"
    assert doc["steps"][-1]["name"] == "verify health"
    assert "no [[endpoints]] of service 'nothing-is-this'" in doc["steps"][-1]["detail"]


def _env_file_set(env_settings, repo_dir, conf: Path, restart_commands) -> dict[str, str]:
    fs = {"name": "app", "class": "application", "paths": [str(conf.parent)], "restart_commands": restart_commands}
    return env_settings("postgresql://u@127.0.0.1:5432/db", f"file://{repo_dir}",
                        BVH_OPS_FILE_SETS=json.dumps([fs]))


FAIL = [sys.executable, "-c", "import sys; sys.exit('lottery-api.service: unit not found')"]


def test_cli_files_recover_reports_the_failed_step_as_json(env_settings, repo_dir, tmp_path):
    from bvh_ops.config import load_settings
    from tests.integration.cli import run_cli

    conf = tmp_path / "etc/platform.json"
    conf.parent.mkdir()
    env = _env_file_set(env_settings, repo_dir, conf, [FAIL])
    for body in (b"good\n", b"bad\n"):
        conf.write_bytes(body)
        take_snapshot(load_settings(), "app")
    proc = run_cli("files", "recover", "app", "--snapshot", "previous", "--json", env=env)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert [s["status"] for s in doc["steps"]] == ["ok", "ok", "failed"]
    assert "unit not found" in doc["steps"][-1]["detail"] and doc["rto"]["result"] == "fail"
    assert conf.read_bytes() == b"good\n" and Path(doc["replaced"][0]).read_bytes() == b"bad\n"
    proc = run_cli("files", "recover", "app", env=env)
    assert proc.returncode == 1 and "failed:" in proc.stdout and "RTO objective 1800 s: fail" in proc.stdout


def test_the_flow_publishes_the_report_and_fails_its_run(prefect_harness, env_settings, repo_dir, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from bvh_ops.config import load_settings
    from flows.recover_application import RecoveryFailed, recover_application_flow

    conf = tmp_path / "etc/platform.json"
    conf.parent.mkdir()
    _env_file_set(env_settings, repo_dir, conf, [FAIL])
    conf.write_bytes(b"good\n")
    take_snapshot(load_settings(), "app")
    conf.write_bytes(b"bad\n")
    with pytest.raises(RecoveryFailed, match="failed at 'restart 1: .*unit not found.*replaced files kept"):
        recover_application_flow(snapshot="latest")   # the only application-class set
    assert conf.read_bytes() == b"good\n"
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["recover-application"])))
    assert arts and "Application recovery of `app`: failed" in arts[-1].data and "FAIL" in arts[-1].data


def test_cli_files_ls_of_a_path_not_in_the_snapshot_says_so(env_settings, repo_dir, tmp_path):
    """It printed nothing, exit 0 — as if the path were an empty directory."""
    from bvh_ops.config import load_settings
    from tests.integration.cli import assert_one_line_error, run_cli

    conf = tmp_path / "etc/platform.json"
    conf.parent.mkdir()
    env = _env_file_set(env_settings, repo_dir, conf, [])
    conf.write_bytes(b"good\n")
    take_snapshot(load_settings(), "app")
    listed = run_cli("files", "ls", "latest", str(conf), env=env)
    assert listed.returncode == 0 and "platform.json" in listed.stdout, listed.stderr
    proc = run_cli("files", "ls", "latest", "/nonexistent/path", env=env)
    assert proc.returncode == 10
    assert_one_line_error(proc, "/nonexistent/path: not in snapshot")
