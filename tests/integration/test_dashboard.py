"""`bvh-ops dashboard`'s server (bvh_ops.monitoring.web) over real HTTP: uvicorn on a free port,
probing a small real HTTP server (one endpoint answering 200, one 500). Every route answers in its
shape, /metrics parses with prometheus_client's parser, the page shows the status, both endpoints
and SVG charts once two cycles ran, only GET is served, a non-loopback bind needs the token, no
secret reaches a page; and the page loaded in headless Chromium shows the status."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from bvh_ops.config import Endpoint, Settings
from bvh_ops.monitoring.web import create_app
from bvh_ops.pg.cluster import free_port
from tests.integration.cli import assert_one_line_error, run_cli
from tests.waiting import wait_until

TOKEN = "tok-9f8e7d6c5b4a"
DB_PASSWORD = "pw-never-shown-4242"
INTERVAL = 2.0  # also the cycle's deadline: long enough for the host probe's 0.5 s CPU sample
CALM_HOST = {"cpu_warning_percent": 100, "cpu_critical_percent": 100, "memory_warning_percent": 100,
             "memory_critical_percent": 100, "disk_warning_percent": 100, "disk_critical_percent": 100,
             "load_per_core_warning": 1000, "load_per_core_critical": 1000}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        ok = self.path in ("/ok", "/api/metrics")
        doc = {"system": {"errorRate": 0.25}} if self.path == "/api/metrics" else {"status": "healthy" if ok else "broken"}
        body = json.dumps(doc).encode()
        self.send_response(200 if ok else 500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def target():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _settings(target: str) -> Settings:
    settings = Settings(endpoints=[
        {"name": "svc-ok", "service": "api", "url": f"{target}/ok",
         "conditions": ["[STATUS] == 200", "[BODY].status == healthy"], "timeout_seconds": 3},
        {"name": "svc-fail", "service": "frontend", "url": f"{target}/fail",
         "conditions": ["[STATUS] == 200"], "timeout_seconds": 3}],
        database_url=f"postgresql://monitor:{DB_PASSWORD}@127.0.0.1:1/nowhere", **CALM_HOST)
    # Below the setting's floor of 5 s, so two cycles take a few seconds here.
    return settings.model_copy(update={"monitor_interval_seconds": INTERVAL})


class Served:
    def __init__(self, app, host: str) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=0, log_level="warning",
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, "uvicorn started", timeout=60)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.state = app.state.dashboard

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "uvicorn did not stop"


@pytest.fixture(scope="module")
def dash(target):
    served = Served(create_app(_settings(target)), "127.0.0.1")
    wait_until(lambda: served.state.cycles_run >= 2, "two probe cycles", timeout=60)
    yield served
    served.stop()


def get(dash, path: str, **kw) -> httpx.Response:
    return httpx.get(dash.url + path, timeout=30, **kw)


def test_api_health(dash):
    body = get(dash, "/api/health").json()
    assert body["status"] == "critical"  # svc-fail answers 500
    assert body["timestamp"].startswith("20")
    assert body["services"]["api"] == "healthy" and body["services"]["frontend"] == "critical"
    assert body["services"]["cache"] == "not monitored"
    assert set(body["metrics"]) == {"responseTime", "uptime", "activeUsers"}


def test_api_health_detailed(dash):
    body = get(dash, "/api/health/detailed").json()
    checks = {c["name"]: c for c in body["checks"]}
    assert checks["svc-ok"]["status"] == "ok" and checks["svc-fail"]["status"] == "critical"
    assert {"name", "service", "status", "value", "unit", "detail"} <= set(checks["svc-ok"])
    assert any(n.startswith("database") for n in checks)
    assert body["status"] == "critical" and body["timestamp"]


def test_api_metrics(dash):
    body = get(dash, "/api/metrics").json()
    assert set(body["system"]) == {"responseTime", "memoryUsage", "cpuUsage", "activeUsers",
                                   "databaseConnections", "errorRate", "uptime"}
    assert isinstance(body["system"]["responseTime"], float)
    assert isinstance(body["system"]["cpuUsage"], float) and body["sources"]["cpuUsage"] == "host.cpu"


def test_api_status(dash):
    board = get(dash, "/api/status").json()
    assert {"systemStatus", "services", "metrics", "alerts", "uptime"} <= set(board)
    assert board["systemStatus"] == "critical" and board["alerts"] == []
    assert {"database", "cache", "api", "frontend", "backups"} <= set(board["services"])
    assert all(u["available"] is False and u["reason"] for u in board["uptime"].values())


def test_prometheus(dash):
    resp = get(dash, "/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(resp.text)}
    statuses = {s.labels["name"]: s.value for s in families["bvh_ops_check_status"].samples}
    assert statuses["svc-ok"] == 0 and statuses["svc-fail"] == 3
    assert families["bvh_ops_system_status"].samples[0].value == 3


def test_page(dash):
    for window in ("15m", "1h", "2h"):
        page = get(dash, f"/?window={window}").text
        assert "id='system-status'" in page and ">critical<" in page
        assert "svc-ok" in page and "svc-fail" in page
        assert "<svg" in page and "<polyline" in page  # two cycles: a line, not just a dot
        assert "http-equiv='refresh'" in page
        assert "Backups and drills" in page and "alerts unavailable: alerting is not connected" in page
        assert not any(tag in page for tag in ("<script", "<link", " src=")), "offline: nothing fetched"
        assert "response time: svc-ok" in page and ">p95 " in page and ">p99 " in page
        assert "error rate: no /api/metrics endpoint configured" in page
        assert "id='drill-trend'" in page and "no drills yet" in page  # no ops database connected


class FakeHistory:
    """History as OpsHistory answers it: a response-time series with a spread, two drills."""

    def __init__(self, now):
        self.now = now

    def series(self, name, since, until):
        if name == "backups.replica_wal":  # the replica fell 40 s behind once, then caught up
            return [(self.now - timedelta(seconds=s), 40.0 if s == 300 else 0.0) for s in range(0, 600, 60)]
        if name != "svc-ok":
            return []
        return [(self.now - timedelta(seconds=s), float(10 + s % 7 * 10)) for s in range(0, 600, 10)]

    def uptime(self, service, since, until):
        return 99.95

    def drills(self, limit=20):
        # OpsHistory's rows: started, RTO, RPO, mode, passed, RTO objective, RPO objective
        return [(self.now - timedelta(days=3), 300.0, 60.0, "logical", True, 900.0, 300.0),
                (self.now - timedelta(days=2), 1200.0, 90.0, "failover", False, 900.0, 300.0),
                (self.now - timedelta(days=1), 240.0, 30.0, "logical", True, 900.0, 300.0)]


def test_page_charts_from_the_history(target):
    now = datetime.now(UTC)
    settings = _settings(target)
    settings = settings.model_copy(update={"endpoints": [*settings.endpoints, Endpoint.model_validate(
        {"name": "platform-metrics", "service": "api", "url": f"{target}/api/metrics"})],
        "replica_repository": "file:///nonexistent/bvh-replica"})
    served = Served(create_app(settings, history=FakeHistory(now)), "127.0.0.1")
    try:
        wait_until(lambda: served.state.cycles_run >= 2, "two probe cycles", timeout=60)
        page = get(served, "/?window=15m").text
    finally:
        served.stop()
    chart = page[page.index("response time: svc-ok"):]
    chart = chart[:chart.index("</svg>")]
    assert chart.count("<polyline") == 3 and ">avg " in chart and ">p95 " in chart and ">p99 " in chart
    rate = page[page.index("error rate (the platform"):]
    rate = rate[:rate.index("</svg>")]
    assert "<polyline" in rate and "last 0.2 %" in rate  # 0.25 %, shown to one decimal
    trend = page[page.index("id='drill-trend'"):]
    assert "the last 3 drill(s)" in trend and "; 1 failed" in trend
    rto = trend[trend.index("DR drills: recovery time"):]
    rto = rto[:rto.index("</svg>")]
    # one line per mode and the objective beside them, each with its last value
    assert rto.count("<polyline") + rto.count("<circle") == 3, rto  # a single drill is a dot
    assert ">RTO failover 1200" in rto and ">RTO logical 240" in rto and ">RTO objective 900" in rto
    rpo = trend[trend.index("DR drills: data loss window"):]
    rpo = rpo[:rpo.index("</svg>")]
    assert ">RPO 30" in rpo and ">RPO objective 300" in rpo
    table = trend[trend.index("id='drill-table'"):]
    table = table[:table.index("</table>")]
    assert table.count("<tr>") == 4 and table.count(">passed<") == 2 and table.count(">FAILED<") == 1
    assert table.index("logical") < table.index("failover"), "newest drill first"
    lag = page[page.index("replica WAL lag"):]
    lag = lag[:lag.index("</svg>")]
    assert "<polyline" in lag and "last 0" in lag
    assert "99.95 %" in page


def test_no_secret_in_any_page(dash):
    for path in ("/", "/api/health", "/api/health/detailed", "/api/metrics", "/api/status", "/metrics"):
        assert DB_PASSWORD not in get(dash, path).text, path


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_read_only(dash, method):
    for path in ("/", "/api/status", "/metrics"):
        assert httpx.request(method, dash.url + path, timeout=30).status_code == 405


def test_non_loopback_bind_requires_the_token(target):
    served = Served(create_app(_settings(target), token=TOKEN), "0.0.0.0")
    try:
        wait_until(lambda: served.state.cycles_run >= 1, "a probe cycle", timeout=60)
        for path in ("/", "/api/health", "/metrics"):
            assert httpx.get(served.url + path, timeout=30).status_code == 401, path
            bad = httpx.get(served.url + path, headers={"Authorization": "Bearer wrong"}, timeout=30)
            assert bad.status_code == 401, path
            good = httpx.get(served.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
            assert good.status_code == 200, path
            assert TOKEN not in good.text, path
        query = httpx.get(served.url + f"/?token={TOKEN}", timeout=30)
        assert query.status_code == 200 and TOKEN not in query.text
        with httpx.Client(base_url=served.url, timeout=30) as client:  # the cookie keeps the page's links working
            assert client.get(f"/?token={TOKEN}").status_code == 200
            assert client.get("/?window=1h").status_code == 200
        assert httpx.post(served.url + "/api/status", headers={"Authorization": f"Bearer {TOKEN}"},
                          timeout=30).status_code == 405
    finally:
        served.stop()


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("no chromium on PATH, and installing it needs root and apt-get")
    try:
        proc = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except subprocess.TimeoutExpired:
        pytest.skip("no chromium on PATH; apt-get install -y chromium did not finish within 120 s")
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        pytest.skip(f"no chromium on PATH; apt-get install -y chromium failed: {tail[0]}")
    return found


def dump_dom(url: str, tmp_path: Path) -> str:
    """The page as a real headless browser renders it."""
    proc = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", url],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_headless_chromium_shows_the_status(dash, tmp_path: Path):
    dom = dump_dom(dash.url + "/?window=15m", tmp_path)
    assert 'id="system-status"' in dom and ">critical<" in dom
    assert "svc-ok" in dom and "<svg" in dom


def test_cli_refuses_a_non_loopback_bind_without_a_token(tmp_path):
    proc = run_cli("dashboard", "--host", "0.0.0.0", "--port", "1", timeout=120)
    assert proc.returncode == 2
    assert_one_line_error(proc, "requires a token", "--token-file")
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    proc = run_cli("dashboard", "--host", "0.0.0.0", "--token-file", str(empty), timeout=120)
    assert_one_line_error(proc, "is empty")
    assert TOKEN not in proc.stderr


def test_cli_serves_in_the_foreground_until_sigterm(target, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BVH_OPS_")}
    env["BVH_OPS_ENDPOINTS"] = json.dumps([{"name": "svc-ok", "service": "api", "url": f"{target}/ok"}])
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "bvh_ops.cli", "dashboard", "--port", str(port),
                             "--token-file", str(token_file)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if line.startswith("dashboard: the ops database is not running"):  # a note first, then the URL
            line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line and TOKEN not in line, line
        url = f"http://127.0.0.1:{port}/api/health"

        def healthy():
            try:
                r = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
            except httpx.TransportError:
                return False
            return r.status_code == 200 and r.json()["services"]["api"] == "healthy"

        wait_until(healthy, "the CLI's dashboard answering", timeout=120)
        assert httpx.get(url, timeout=10).status_code == 401  # a token given: required on loopback too
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert "Traceback" not in err, err
