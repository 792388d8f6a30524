"""The monitoring flow (one run an hour that loops) under the Prefect test harness: probe cycles
at the interval, samples recorded when the ops database runs, the hour's summary artifact; with
an alert channel, an outage is alerted (and its incident published when it resolves) and the run
completes; without one, a failed run is the alert of last resort."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytestmark = pytest.mark.usefixtures("prefect_harness")

CALM_HOST = {"BVH_OPS_CPU_WARNING_PERCENT": "100", "BVH_OPS_CPU_CRITICAL_PERCENT": "100",
             "BVH_OPS_MEMORY_WARNING_PERCENT": "100", "BVH_OPS_MEMORY_CRITICAL_PERCENT": "100",
             "BVH_OPS_DISK_WARNING_PERCENT": "100", "BVH_OPS_DISK_CRITICAL_PERCENT": "100",
             "BVH_OPS_LOAD_PER_CORE_WARNING": "1000", "BVH_OPS_LOAD_PER_CORE_CRITICAL": "1000"}


FLAKY = {"left": 0}   # /flaky fails this many more requests, then answers ok


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        if self.path == "/flaky":
            FLAKY["left"] -= 1
        code = 200 if self.path == "/ok" or (self.path == "/flaky" and FLAKY["left"] < 0) else 500
        body = json.dumps({"status": "healthy" if code == 200 else "unhealthy"}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def http_base():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _configure(monkeypatch, tmp_path, url: str, ops_dsn: str | None = None) -> None:
    monkeypatch.delenv("BVH_OPS_CONFIG", raising=False)
    env = {"BVH_OPS_STATE_DIR": str(tmp_path / "state"), **CALM_HOST,
           "BVH_OPS_ENDPOINTS": json.dumps([{"name": "api-health", "service": "api", "url": url,
                                              "conditions": ["[STATUS] == 200", "[BODY].status == healthy"],
                                              "timeout_seconds": 2}])}
    if ops_dsn:
        env["BVH_OPS_OPS_DATABASE_URL"] = ops_dsn
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def test_an_hour_of_cycles_is_recorded_and_summarised(http_base, monkeypatch, tmp_path, fresh_db):
    import psycopg
    from prefect.client.orchestration import get_client

    from flows.monitoring import monitoring

    ops = fresh_db("_ops")
    _configure(monkeypatch, tmp_path, http_base + "/ok", ops)
    doc = monitoring(minutes=4 / 60, interval=1.0)  # ~4 cycles, one a second
    assert doc["cycles"] >= 3
    assert doc["services"]["api"] == {"worst": "ok", "up_percent": 100.0, "longest_critical_streak": 0}
    assert doc["history_unavailable_cycles"] == 0
    with psycopg.connect(ops) as conn:
        stored = conn.execute("SELECT count(DISTINCT at) FROM ops.samples WHERE name = 'api-health'").fetchone()[0]
    assert stored == doc["cycles"]
    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts(limit=200)}
    assert "monitoring-hour" in keys


def test_a_sustained_outage_fails_the_run_naming_the_service(http_base, monkeypatch, tmp_path):
    from flows.monitoring import ServiceDown, monitoring

    _configure(monkeypatch, tmp_path, http_base + "/fail")  # no ops database: probes still run
    with pytest.raises(ServiceDown, match="api"):
        monitoring(minutes=4 / 60, interval=1.0)


def test_with_a_channel_an_outage_is_alerted_and_its_incident_published(http_base, monkeypatch, tmp_path,
                                                                        fresh_db):
    import psycopg
    from prefect.client.orchestration import get_client

    from bvh_ops.demo.receivers import HttpReceiver
    from flows.monitoring import monitoring

    ops = fresh_db("_ops")
    FLAKY["left"] = 3                        # three failing cycles: fires after 2, resolves after 2 good
    _configure(monkeypatch, tmp_path, http_base + "/flaky", ops)
    with HttpReceiver() as hook:
        monkeypatch.setenv("BVH_OPS_ALERTING", json.dumps({"webhook_url": hook.url + "/hook", "webhook_format": "json",
                                                           "digest_at": "00:00"}))
        doc = monitoring(minutes=8 / 60, interval=1.0)    # completes: the alert went out
        posts = [json.loads(hook.got.get_nowait().body) for _ in range(hook.got.qsize())]
    kinds = [(p["kind"], p["alerts"][0]["name"]) for p in posts if p["kind"] in ("fired", "resolved")]
    assert kinds == [("fired", "system down"), ("resolved", "system down")]
    assert doc["incidents_resolved"] == 1
    with psycopg.connect(ops) as conn:
        (ended,) = conn.execute("SELECT ended_at IS NOT NULL FROM ops.incidents").fetchone()
    assert ended
    with get_client(sync_client=True) as client:
        incident = [a for a in client.read_artifacts(limit=200) if a.key == "incident"]
    assert incident and "system down" in incident[0].data
