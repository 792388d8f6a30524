"""A screenshot of the dashboard's Alerts view for the README, taken by Debian's chromium
headless: a real dashboard (``create_app``) over a scratch ops database on the local PostgreSQL
(127.0.0.1:5432, the Debian server) holding alerts the real alerter raised from real probe
cycles against a local endpoint that fails.

Usage: .venv/bin/python deployments/screenshot_alerts.py [--dsn postgresql://postgres@127.0.0.1:5432/postgres]
[--out docs/img/alerts.png]"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import uvicorn  # noqa: E402

from bvh_ops.alerting.engine import Alerter  # noqa: E402
from bvh_ops.alerting.store import write  # noqa: E402
from bvh_ops.alerting.view import OpsAlertsView  # noqa: E402
from bvh_ops.config import Settings  # noqa: E402
from bvh_ops.monitoring.cycle import run_cycle  # noqa: E402
from bvh_ops.monitoring.results import Check, Status  # noqa: E402
from bvh_ops.monitoring.web import create_app  # noqa: E402
from bvh_ops.opsdb.migrations import migrate  # noqa: E402
from deployments.screenshots import shot  # noqa: E402


class Failing(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        ok = self.path == "/ok"
        body = json.dumps({"status": "healthy" if ok else "unhealthy"}).encode()
        self.send_response(200 if ok else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--out", default=str(ROOT / "docs/img/alerts.png"))
    args = ap.parse_args()
    target = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{target.server_address[1]}"
    settings = Settings(endpoints=[
        {"name": "api-health", "service": "api", "url": f"{base}/api/health", "conditions": ["[STATUS] == 200"]},
        {"name": "frontend", "service": "frontend", "url": f"{base}/ok", "conditions": ["[STATUS] == 200"]}],
        cpu_warning_percent=100, cpu_critical_percent=100, memory_warning_percent=100,
        memory_critical_percent=100, disk_warning_percent=100, disk_critical_percent=100)
    name = f"bvh_ops_shot_{int(time.time())}"
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    ops = args.dsn.rsplit("/", 1)[0] + f"/{name}"
    try:
        alerter = Alerter(["email", "webhook"])
        t0 = datetime.now(UTC) - timedelta(minutes=4)
        for i in range(4):
            at = t0 + timedelta(seconds=30 * i)
            checks = run_cycle(settings, at).checks
            checks.append(Check("host.cpu", "host", Status.WARNING, 91.0, "%", "cpu 91 % > 80 %"))
            checks.append(Check("finding:security:hba.trust", "security", Status.CRITICAL, None, "",
                                "pg_hba allows trust from any address\nline 3: host all all 0.0.0.0/0 trust"))
            alerter.observe(checks, at)
        with psycopg.connect(ops, autocommit=True) as conn:
            migrate(conn)
            write(conn, alerter.take_unsaved(), datetime.now(UTC))
        view = OpsAlertsView(lambda: ops, who="oncall")
        fp = next(a["fingerprint"] for a in view.active() if a["name"].startswith("pg_hba"))
        view.acknowledge(fp)
        app = create_app(settings.model_copy(update={"monitor_interval_seconds": 2.0}), alerts=view)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.1)
        port = server.servers[0].sockets[0].getsockname()[1]
        time.sleep(4)  # the dashboard's first probe cycles
        # a short virtual-time budget: the page refreshes itself every few seconds
        shot(f"http://127.0.0.1:{port}/", Path(args.out), size="1440,760", budget_ms=2000)
        server.should_exit = True
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        target.shutdown()


if __name__ == "__main__":
    main()
