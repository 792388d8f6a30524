"""End to end, as operators and CI run it: a real `prefect server` on 127.0.0.1 with its own
PREFECT_HOME, the work pool and deployments from prefect.yaml (deployments/deploy.sh), a
process worker, and the on-demand DR drill started through the CLI with parameters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bvh_ops.config import AlertingSettings
from bvh_ops.demo.sample import LOTTERY_INVARIANTS, load_sample
from bvh_ops.monitoring.prefect_runs import probe_schedules
from bvh_ops.pg.catalog import create_database
from tests.conftest import free_port
from tests.waiting import PATIENCE

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    fh = open(log, "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _receiver():
    """A real HTTP server on 127.0.0.1 that records POST bodies (the webhook target)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            received.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return received, f"http://127.0.0.1:{server.server_address[1]}/hook", server


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-2000:]
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"prefect server did not become healthy: {log.read_text()[-2000:]}")


def test_deploy_and_run_the_on_demand_drill_through_a_worker(pg, keypair, tmp_path):
    # The target and one backup to drill.
    create_database(pg.dsn(), "e2esrc")
    load_sample(pg.dsn("e2esrc"), scale=0.3)
    create_database(pg.dsn(), "e2eops")
    pub, key = keypair
    bvh_env = {
        "BVH_OPS_DATABASE_URL": pg.dsn("e2esrc"), "BVH_OPS_REPOSITORY": f"file://{tmp_path / 'repo'}",
        "BVH_OPS_RECIPIENTS": str(pub), "BVH_OPS_IDENTITY": str(key), "BVH_OPS_STATE_DIR": str(tmp_path / "state"),
        "BVH_OPS_OPS_DATABASE_URL": pg.dsn("e2eops"),
        "BVH_OPS_INVARIANTS": json.dumps([{"name": n, "sql": q} for n, q in LOTTERY_INVARIANTS]),
        # the sample's newest rows are old: this e2e run is about orchestration, not RPO
        "BVH_OPS_RPO_OBJECTIVE_SECONDS": str(10 * 365 * 86400),
    }
    from bvh_ops.config import Settings
    from bvh_ops.logical.backup import run_logical_backup

    backup_id = run_logical_backup(Settings(database_url=pg.dsn("e2esrc"), repository=bvh_env["BVH_OPS_REPOSITORY"],
                                            recipients=[pub], state_dir=tmp_path / "state")).manifest.backup_id

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BVH_OPS_"))}
    prefect_env = {**base, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api,
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "2",
                   "PREFECT_LOGGING_LEVEL": "INFO", "BVH_OPS_PROJECT_DIR": str(ROOT)}
    server_env = {k: v for k, v in prefect_env.items() if k != "PREFECT_API_URL"}
    server = _start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                    server_env, tmp_path / "server.log")
    worker = None
    try:
        _wait_healthy(api, server, tmp_path / "server.log")
        deploy = subprocess.run(["bash", "deployments/deploy.sh"], cwd=ROOT, capture_output=True, text=True,
                                env={**prefect_env, "PREFECT": str(BIN / "prefect")}, timeout=300)
        assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
        again = subprocess.run(["bash", "deployments/deploy.sh"], cwd=ROOT, capture_output=True, text=True,
                               env={**prefect_env, "PREFECT": str(BIN / "prefect")}, timeout=300)
        assert again.returncode == 0, "deploying twice must be idempotent: " + again.stderr[-2000:]

        worker = _start([str(BIN / "prefect"), "worker", "start", "--pool", "bvh-ops", "--type", "process"],
                        {**prefect_env, **bvh_env}, tmp_path / "worker.log")
        run = subprocess.run(
            [str(BIN / "prefect"), "deployment", "run", "dr-drill/dr-drill-on-demand",
             "--param", f"backup={backup_id}", "--param", "mode=logical", "--watch", "--watch-timeout", "300"],
            cwd=ROOT, capture_output=True, text=True, env=prefect_env, timeout=360)
        logs = (tmp_path / "worker.log").read_text()[-4000:]
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:] + logs
        assert "Completed" in run.stdout, run.stdout[-3000:]

        from prefect.client.orchestration import PrefectClient

        async def artifacts_and_state():
            async with PrefectClient(api) as client:
                deployment = await client.read_deployment_by_name("dr-drill/dr-drill-on-demand")
                runs = await client.read_flow_runs()
                mine = [r for r in runs if r.deployment_id == deployment.id]
                arts = await client.read_artifacts()
                return deployment, mine, arts

        import asyncio

        deployment, runs, artifacts = asyncio.run(artifacts_and_state())
        assert deployment.enforce_parameter_schema is True
        assert len(runs) == 1 and runs[0].state.type.value == "COMPLETED"
        assert runs[0].parameters["backup"] == backup_id
        keys = {a.key for a in artifacts if a.flow_run_id == runs[0].id}
        assert {"dr-drill-report", "dr-drill-checks"} <= keys

        # Notifications: the monitor's dead-man automations, set up twice (idempotent).
        _received, receiver_url, receiver = _receiver()
        try:
            notify_env = {**prefect_env, **bvh_env, "BVH_OPS_NOTIFY_WEBHOOK_URL": receiver_url}
            for expected in ("created", "updated"):
                setup = subprocess.run([sys.executable, "-m", "bvh_ops.cli", "setup-notifications"], cwd=ROOT,
                                       capture_output=True, text=True, env=notify_env, timeout=120)
                assert setup.returncode == 0 and expected in setup.stdout, setup.stdout + setup.stderr

            async def automations():
                async with PrefectClient(api) as client:
                    return sorted(a.name for a in await client.read_automations() if a.name.startswith("bvh-ops:"))

            assert asyncio.run(automations()) == ["bvh-ops: monitoring run failed, crashed or timed out",
                                                  "bvh-ops: monitoring silent"]
            # A failing drill is an alert of the monitor now: its schedules probe reads the run.
            failing = subprocess.run(
                [str(BIN / "prefect"), "deployment", "run", "dr-drill/dr-drill-on-demand",
                 "--param", "mode=physical", "--watch", "--watch-timeout", "300"],
                cwd=ROOT, capture_output=True, text=True, env=prefect_env, timeout=360)
            assert failing.returncode != 0, failing.stdout[-2000:]
            checks = {c.name: c for c in probe_schedules(api, AlertingSettings(), datetime.now(UTC))}
            assert checks["run:dr-drill-on-demand"].status == "critical", checks["run:dr-drill-on-demand"]
            assert "Failed" in checks["run:dr-drill-on-demand"].detail
            assert "deadman:dr-drill-on-demand" not in checks   # no schedule
            assert checks["deadman:daily-backup"].status == "ok"   # deployed just now: not due yet
            assert "not due yet" in checks["deadman:daily-backup"].detail
        finally:
            receiver.shutdown()
    finally:
        if worker is not None:
            _stop(worker)
        _stop(server)
