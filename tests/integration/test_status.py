"""`bvh-ops status --json` (the runbook's HealthDashboard) and `health-check --prometheus` against
real components: the sample platform over HTTP on its own database, the embedded PostgreSQL probed
directly. The dashboard has every key, numbers where something measured them and null where not,
no invented uptime; the platform's database fault turns the api service and the system critical,
and clearing it makes them healthy again."""

from __future__ import annotations

import json
import signal

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bvh_ops.demo.platform import serve_platform
from bvh_ops.demo.sample import load_sample
from bvh_ops.pg.catalog import create_database
from tests.integration.cli import assert_one_line_error, run_cli
from tests.waiting import wait_until

DB = "status_sample"
WINDOW_S = 3.0
SYSTEM_METRICS = {"responseTime", "memoryUsage", "cpuUsage", "activeUsers", "databaseConnections", "errorRate",
                  "uptime"}
# The shared machine's load must not decide these exit codes (as in test_monitoring's _cli_env).
CALM_HOST = {"BVH_OPS_CPU_WARNING_PERCENT": "100", "BVH_OPS_CPU_CRITICAL_PERCENT": "100",
             "BVH_OPS_MEMORY_WARNING_PERCENT": "100", "BVH_OPS_MEMORY_CRITICAL_PERCENT": "100",
             "BVH_OPS_DISK_WARNING_PERCENT": "100", "BVH_OPS_DISK_CRITICAL_PERCENT": "100",
             "BVH_OPS_LOAD_PER_CORE_WARNING": "1000", "BVH_OPS_LOAD_PER_CORE_CRITICAL": "1000"}


@pytest.fixture(scope="module")
def status_db(pg) -> str:
    create_database(pg.dsn(), DB)
    load_sample(pg.dsn(DB), scale=0.05)
    yield pg.dsn(DB)
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')


@pytest.fixture(scope="module")
def platform(status_db, tmp_path_factory):
    log = tmp_path_factory.mktemp("status-platform") / "platform.jsonl"
    handle = serve_platform(status_db, "127.0.0.1", 0, log, window_s=WINDOW_S)
    yield handle
    assert handle.stop() in (0, -signal.SIGTERM), handle.output_path.read_text()[-2000:]


@pytest.fixture(autouse=True)
def no_faults_after(platform):
    yield
    platform.set_faults()


def env(platform, pg, *, metrics: bool = True) -> dict[str, str]:
    paths = {"api-health": ("/api/health", ["[STATUS] == 200", "[BODY].status == healthy"]),
             "api-status": ("/api/status", ["[STATUS] == 200", "[BODY].systemStatus == healthy"])}
    if metrics:
        paths["api-metrics"] = ("/api/metrics", ["[STATUS] == 200"])
    endpoints = [{"name": name, "service": "api", "url": platform.url + path, "conditions": conds,
                  "timeout_seconds": 5} for name, (path, conds) in paths.items()]
    return {"BVH_OPS_DATABASE_URL": pg.dsn(), "BVH_OPS_ENDPOINTS": json.dumps(endpoints), **CALM_HOST}


def status(platform, pg, **kw) -> tuple[int, dict]:
    proc = run_cli("status", "--json", env=env(platform, pg, **kw), timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_status_json_is_the_runbooks_dashboard(platform, pg):
    code, board = status(platform, pg)
    assert code == 0, board
    assert {"systemStatus", "services", "metrics", "alerts", "uptime"} <= set(board)
    assert board["systemStatus"] == "healthy"
    services = board["services"]
    assert {"database", "cache", "api", "frontend", "backups"} <= set(services)
    assert services["api"]["status"] == "ok" and services["api"]["monitored"]
    assert set(services["api"]["checks"]) == {"api-health", "api-status", "api-metrics"}
    assert services["database"]["status"] == "ok" and "database.connections" in services["database"]["checks"]
    for name in ("frontend", "cache", "backups"):  # nothing configured for them: not monitored, never ok
        assert (services[name]["status"], services[name]["monitored"]) == ("unknown", False), name
        assert services[name]["detail"].startswith("not monitored")
    metrics = board["metrics"]
    assert set(metrics) == SYSTEM_METRICS
    for name in SYSTEM_METRICS:  # with the platform's /api/metrics configured, all are measured
        assert isinstance(metrics[name], int | float), (name, metrics[name])
    assert metrics["databaseConnections"] >= 1  # at least the platform's pool
    assert board["metricSources"]["activeUsers"] == "platform /api/metrics"
    assert board["alerts"] == []
    for name, up in board["uptime"].items():
        assert up["available"] is False and up["reason"], name
        assert (up["24h"], up["7d"], up["30d"]) == (None, None, None)


def test_without_the_platforms_metrics_its_numbers_are_null(platform, pg):
    code, board = status(platform, pg, metrics=False)
    assert code == 0, board
    metrics = board["metrics"]
    assert (metrics["activeUsers"], metrics["errorRate"], metrics["uptime"]) == (None, None, None)
    assert isinstance(metrics["responseTime"], float)  # from the api endpoint checks
    assert board["metricSources"]["responseTime"] == "mean of 2 api endpoint check(s)"
    assert isinstance(metrics["memoryUsage"], float) and isinstance(metrics["cpuUsage"], float)


def test_database_fault_makes_api_and_system_critical_and_recovery_clears_it(platform, pg):
    platform.set_faults(db_down=True)
    code, board = wait_until(lambda: (r := status(platform, pg))[1]["systemStatus"] == "critical" and r,
                             "status critical while the platform's database is down", timeout=60)
    assert code == 2
    assert board["services"]["api"]["status"] == "critical"
    assert "api-health critical" in board["services"]["api"]["detail"]
    assert board["services"]["database"]["status"] == "ok"  # the monitor still reaches PostgreSQL itself
    assert board["metrics"]["databaseConnections"] is not None

    platform.set_faults()
    code, board = wait_until(lambda: (r := status(platform, pg))[1]["systemStatus"] == "healthy" and r,
                             "status healthy after the fault is cleared", timeout=60)
    assert code == 0 and board["services"]["api"]["status"] == "ok"


def test_health_check_prometheus_carries_every_check(platform, pg):
    proc = run_cli("health-check", "--prometheus", env=env(platform, pg), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    families = {f.name: f for f in text_string_to_metric_families(proc.stdout)}
    names = {s.labels["name"] for s in families["bvh_ops_check_status"].samples}
    assert {"api-health", "api-status", "api-metrics", "database.reachable", "database.connections",
            "host.cpu", "host.memory"} <= names
    assert all(s.value == 0 for s in families["bvh_ops_check_status"].samples)
    assert families["bvh_ops_system_status"].samples[0].value == 0
    assert families["bvh_ops_cycle_seconds"].samples[0].value > 0

    json_run = run_cli("health-check", "--json", env=env(platform, pg), timeout=120)
    assert {c["name"] for c in json.loads(json_run.stdout)["checks"]} == names  # the same checks, every one


def test_json_and_prometheus_together_are_refused_in_one_line():
    assert_one_line_error(run_cli("health-check", "--json", "--prometheus", timeout=120),
                          "choose one of --json and --prometheus")


def test_a_firing_critical_alert_makes_status_critical_and_its_exit_code_2(platform, pg, fresh_db):
    """Every probe healthy now, but a critical alert still firing in the ops database (a finding no
    probe sees, such as data corruption detected, fires the same way): status said "healthy" and
    exit 0 over it; it says critical and exits 2 (the exit code follows what it says)."""
    from datetime import UTC, datetime, timedelta

    from bvh_ops.alerting.engine import Alerter
    from bvh_ops.alerting.store import write
    from bvh_ops.monitoring.results import Check, Status
    from bvh_ops.opsdb.migrations import migrate

    ops = fresh_db("_ops")
    alerter = Alerter(["email"])
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    down = Check("api-health", "api", Status.CRITICAL, detail="GET /api/health: HTTP 503")  # an earlier outage's
    for i in range(3):                                                                          # alert, still firing
        alerter.observe([down], t0 + timedelta(seconds=30 * i))
    with psycopg.connect(ops, autocommit=True) as conn:
        migrate(conn)
        write(conn, alerter.take_unsaved(), t0)
    proc = run_cli("status", "--json", env={**env(platform, pg), "BVH_OPS_OPS_DATABASE_URL": ops}, timeout=120)
    board = json.loads(proc.stdout)
    assert board["systemStatus"] == "critical" and proc.returncode == 2, (board["notes"], proc.stderr)
    assert any("firing alert" in n for n in board["notes"])
