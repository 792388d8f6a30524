"""The dashboard's alert view against a real ops database: firing alerts listed (and in the
runbook's HealthDashboard ``alerts``), acknowledged from the page's form (CSRF-protected),
seen by a real headless browser."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from bvh_ops.alerting.engine import Alerter
from bvh_ops.alerting.store import write
from bvh_ops.alerting.view import OpsAlertsView
from bvh_ops.monitoring.results import Check, Status
from bvh_ops.monitoring.web import create_app
from bvh_ops.opsdb.migrations import migrate
from tests.integration.test_dashboard import Served, _settings, dump_dom, target  # noqa: F401 - fixture
from tests.waiting import wait_until


@pytest.fixture
def ops_with_alerts(fresh_db):
    ops = fresh_db("_ops")
    alerter = Alerter(["email"])
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    down = Check("api-health", "api", Status.CRITICAL, detail="GET /api/health: HTTP 503")
    slow = Check("host.cpu", "host", Status.WARNING, 93, "%", "cpu 93 %")
    for i in range(3):
        alerter.observe([down, slow], t0 + timedelta(seconds=30 * i))
    with psycopg.connect(ops, autocommit=True) as conn:
        migrate(conn)
        write(conn, alerter.take_unsaved(), t0)
    return ops


@pytest.fixture
def served(target, ops_with_alerts):  # noqa: F811 - the fixture
    s = Served(create_app(_settings(target), alerts=OpsAlertsView(lambda: ops_with_alerts)), "127.0.0.1")
    wait_until(lambda: s.state.cycles_run >= 1, "a probe cycle", timeout=60)
    yield s
    s.stop()


def test_firing_alerts_are_listed_and_acknowledged_from_the_page(served):
    alerts = httpx.get(served.url + "/api/alerts", timeout=30).json()
    by_name = {a["name"]: a for a in alerts}
    assert by_name["system down"]["state"] == "firing" and by_name["system down"]["severity"] == "critical"
    assert by_name["high CPU"]["state"] == "firing" and not by_name["high CPU"]["acknowledged"]
    status = httpx.get(served.url + "/api/status", timeout=30).json()
    assert {a["name"] for a in status["alerts"]} == {"system down", "high CPU"}
    assert not any(n.startswith("alerts:") for n in status["notes"])
    # a firing critical alert sets the floor of the dashboard's status; /api/health stays the last
    # probe cycle's own answer (a liveness answer never waits on the ops database)
    assert status["systemStatus"] == "critical"

    page = httpx.get(served.url + "/", timeout=30).text
    assert "system down" in page and "HTTP 503" in page
    fp = by_name["system down"]["fingerprint"]
    assert httpx.post(served.url + f"/alerts/{fp}/ack", data={"csrf": "forged"}, timeout=30).status_code == 403
    assert httpx.post(served.url + f"/alerts/{fp}/ack", timeout=30).status_code == 403
    assert not {a["name"]: a for a in httpx.get(served.url + "/api/alerts", timeout=30).json()}[
        "system down"]["acknowledged"]
    csrf = re.search(r"name='csrf' value='([^']+)'", page).group(1)
    done = httpx.post(served.url + f"/alerts/{fp}/ack", data={"csrf": csrf}, timeout=30)
    assert done.status_code == 303
    after = {a["name"]: a for a in httpx.get(served.url + "/api/alerts", timeout=30).json()}
    assert after["system down"]["acknowledged"] and not after["high CPU"]["acknowledged"]
    assert httpx.post(served.url + "/alerts/0000000000000000/ack", data={"csrf": csrf},
                      timeout=30).status_code == 404


def test_headless_chromium_shows_the_firing_alerts(served, tmp_path: Path):
    dom = dump_dom(served.url + "/", tmp_path)
    rows = re.findall(r'<tr class="alert"[^>]*>(.*?)</tr>', dom, flags=re.S)
    assert len(rows) == 2 and "system down" in rows[0] and "acknowledge" in rows[0]


def test_without_the_ops_database_the_page_says_why(target):  # noqa: F811
    s = Served(create_app(_settings(target), alerts=OpsAlertsView(lambda: None)), "127.0.0.1")
    try:
        wait_until(lambda: s.state.cycles_run >= 1, "a probe cycle", timeout=60)
        assert "alerts unavailable: DatabaseError: the ops database is not running" in httpx.get(
            s.url + "/", timeout=30).text
        assert httpx.get(s.url + "/api/alerts", timeout=30).status_code == 503
    finally:
        s.stop()
