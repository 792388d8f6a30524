"""Screenshots of the Prefect UI for docs/OPERATIONS.md, taken by Debian's chromium headless
against a local `prefect server` that runs the real deployments on the demo's database.

Needs: `make demo` run once (for .bvh-ops/), and chromium (`apt-get install chromium`; this
script installs nothing). Usage: .venv/bin/python deployments/screenshots.py [--out docs/img]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"




def shot(url: str, path: Path, size: str = "1440,1000", budget_ms: int = 15000) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--window-size={size}", "--hide-scrollbars",
                        f"--virtual-time-budget={budget_ms}", f"--screenshot={path}", url],
                       check=True, capture_output=True, timeout=120)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"))
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit("chromium not found: apt-get install chromium")
    state = ROOT / ".bvh-ops"
    cfg = state / "bvh-ops.toml"
    if not cfg.exists():
        raise SystemExit("run `make demo` first (it creates .bvh-ops/bvh-ops.toml)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from bvh_ops.pg.cluster import EmbeddedCluster, free_port

    cluster = EmbeddedCluster(state / "pg")
    cluster.start()
    port = free_port()
    ui = f"http://127.0.0.1:{port}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
           "PREFECT_HOME": tempfile.mkdtemp(prefix="bvh-shots-"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": f"{ui}/api", "PREFECT_WORKER_QUERY_SECONDS": "2", "BVH_OPS_CONFIG": str(cfg),
           "BVH_OPS_PROJECT_DIR": str(ROOT)}
    server_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
    # The UI must call this server's API, not the default :4200.
    server_env["PREFECT_UI_API_URL"] = server_env["PREFECT_SERVER_UI_API_URL"] = f"{ui}/api"
    procs = [subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=server_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)]
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{ui}/api/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        subprocess.run(["bash", "deployments/deploy.sh"], cwd=ROOT, env={**env, "PREFECT": str(BIN / "prefect")},
                       check=True, capture_output=True)
        procs.append(subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "bvh-ops"], env=env, cwd=ROOT,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        for dep, params in (("daily-backup/daily-backup", []), ("incremental-backup/incremental-backup", []),
                            ("dr-drill/dr-drill-on-demand", [])):
            subprocess.run([str(BIN / "prefect"), "deployment", "run", dep, *params, "--watch", "--watch-timeout",
                            "600"], cwd=ROOT, env=env, check=True, capture_output=True)
        from prefect.client.orchestration import PrefectClient

        async def ids():
            async with PrefectClient(f"{ui}/api") as client:
                runs = await client.read_flow_runs()
                drill = next(r for r in runs if r.name.startswith("dr-drill"))
                arts = await client.read_artifacts()
                report = next(a for a in arts if a.key == "dr-drill-report" and a.flow_run_id == drill.id)
                incr = next(a for a in arts if a.key == "incremental-backup-summary")
                return drill.id, report.id, incr.id

        run_id, artifact_id, incr_id = asyncio.run(ids())
        shot(f"{ui}/deployments", out / "deployments.png")
        shot(f"{ui}/runs/flow-run/{run_id}", out / "dr-drill-run.png")
        shot(f"{ui}/artifacts/artifact/{artifact_id}", out / "dr-drill-report.png", size="1440,2200")
        shot(f"{ui}/artifacts/artifact/{incr_id}", out / "incremental-backup.png", size="1440,1400")
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        cluster.stop()


if __name__ == "__main__":
    main()
