"""The monthly uptime/SLA report against the embedded PostgreSQL: synthetic probe cycles recorded
with store.record_cycle for a month with a known outage and a maintenance window give the exact
figures, through per_cycle_rows and through `bvh-ops report uptime` run as an operator runs it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from bvh_ops.config import MaintenanceWindow
from bvh_ops.errors import NotFound
from bvh_ops.monitoring.cycle import CycleResult
from bvh_ops.monitoring.report import parse_month, per_cycle_rows, previous_month, uptime_report
from bvh_ops.monitoring.results import Check, Status
from bvh_ops.monitoring.store import record_cycle
from bvh_ops.opsdb.migrations import migrate
from tests.integration.cli import assert_one_line_error, run_cli

NOW = datetime.now(UTC)
MONTH = previous_month(NOW)
T0 = parse_month(MONTH)[0] + timedelta(days=2, hours=10)   # the 3rd, 10:00 UTC
STEP = timedelta(seconds=30)
CYCLES = 120
WINDOW = {"start": (T0 + 60 * STEP).isoformat(), "end": (T0 + 64 * STEP).isoformat(),
          "description": "database minor upgrade"}

EXPECTED = {
    # a window is platform-wide: cycles 60..63 are excluded for every service
    # api: critical for cycles 20..29, up again at 30: 10 cycles, 5 minutes
    "api": {"cycles": 116, "up": 106, "down": 10, "unknown": 0, "excluded": 4, "uptime_percent": 91.379,
            "meets_sla": False, "longest_outage": {"cycles": 10, "minutes": 5.0,
                                                   "start": (T0 + 20 * STEP).isoformat().replace("+00:00", "Z")}},
    # database: critical 60..63 inside the window (excluded), unknown at 80, critical once at 100
    "database": {"cycles": 116, "up": 114, "down": 1, "unknown": 1, "excluded": 4, "uptime_percent": 99.13,
                 "meets_sla": False, "longest_outage": {"cycles": 1, "minutes": 0.5,
                                                        "start": (T0 + 100 * STEP).isoformat().replace("+00:00",
                                                                                                      "Z")}},
    "frontend": {"cycles": 116, "up": 116, "down": 0, "unknown": 0, "excluded": 4, "uptime_percent": 100.0,
                 "meets_sla": True, "longest_outage": None},
}


def _status(i: int) -> tuple[Status, Status, Status]:
    api = Status.CRITICAL if 20 <= i < 30 else Status.OK
    conns = (Status.CRITICAL if 60 <= i < 64 or i == 100 else Status.WARNING if i == 70
             else Status.UNKNOWN if i == 80 else Status.OK)
    return api, conns, Status.OK


@pytest.fixture(scope="module")
def ops_month(pg):
    """A migrated ops database holding an hour of 30-second cycles in the previous month, plus
    samples just outside it (the months around it must not count)."""
    dsn = pg.dsn()
    name = "uptime_report_ops"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = pg.dsn(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
        for i in range(CYCLES):
            api, conns, web = _status(i)
            record_cycle(conn, CycleResult(Status.OK, T0 + i * STEP, [
                Check("api-health", "api", api, 12.0, "ms", ""),
                Check("db.reachable", "database", Status.OK, 1.0, "", ""),
                Check("db.connections", "database", conns, 40.0, "%", ""),
                Check("web", "frontend", web, 30.0, "ms", "")], 0.1, 0.05, []))
        end = parse_month(MONTH)[1]
        for at in (parse_month(MONTH)[0] - STEP, end):  # just before and at the end: other months
            record_cycle(conn, CycleResult(Status.CRITICAL, at, [Check("api-health", "api", Status.CRITICAL,
                                                                       None, "ms", "")], 0.1, 0.05, []))
    yield dsn
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_month_with_an_outage_and_a_maintenance_window_gives_the_exact_figures(ops_month):
    with psycopg.connect(ops_month, autocommit=True) as conn:
        rows = per_cycle_rows(conn, MONTH, NOW)
    assert len(rows) == 3 * CYCLES
    doc = uptime_report(rows, MONTH, [MaintenanceWindow(**WINDOW)])
    assert doc["services"] == EXPECTED
    assert doc["sla_met"] is False
    assert doc["maintenance_windows"][0]["description"] == "database minor upgrade"


def test_a_month_older_than_the_raw_samples_is_refused(ops_month):
    old = previous_month(NOW - timedelta(days=120))
    with psycopg.connect(ops_month, autocommit=True) as conn, pytest.raises(NotFound, match="are gone"):
        per_cycle_rows(conn, old, NOW)


def _env(dsn: str, tmp_path) -> dict[str, str]:
    return {"BVH_OPS_OPS_DATABASE_URL": dsn, "BVH_OPS_STATE_DIR": str(tmp_path / "state"),
            "BVH_OPS_MAINTENANCE_WINDOWS": json.dumps([WINDOW])}


def test_cli_json_and_exit_codes(ops_month, tmp_path):
    env = _env(ops_month, tmp_path)
    proc = run_cli("report", "uptime", "--json", env=env, timeout=120)   # default: the previous month
    assert proc.returncode == 1, proc.stdout + proc.stderr               # api and database missed 99.9
    doc = json.loads(proc.stdout)
    assert doc["month"] == MONTH and doc["services"] == EXPECTED

    proc = run_cli("report", "uptime", "--month", MONTH, "--sla", "90", env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| api | 91.379 % | met | 116 | 106 | 10 | 0 | 4 | 5.0 min from" in proc.stdout
    assert "database minor upgrade" in proc.stdout


def test_cli_refuses_old_months_and_bad_input_in_one_line(ops_month, tmp_path):
    env = _env(ops_month, tmp_path)
    old = previous_month(NOW - timedelta(days=120))
    assert_one_line_error(run_cli("report", "uptime", "--month", old, env=env, timeout=120), "are gone", old)
    assert_one_line_error(run_cli("report", "uptime", "--month", "2026-13", env=env, timeout=120), "YYYY-MM")
    bad = {**env, "BVH_OPS_MAINTENANCE_WINDOWS": json.dumps([{**WINDOW, "end": WINDOW["start"]}])}
    assert_one_line_error(run_cli("report", "uptime", env=bad, timeout=120), "maintenance_windows.0.end")
