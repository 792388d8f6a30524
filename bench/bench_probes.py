"""Cost of one monitoring probe cycle (`run_cycle`) with 10, 50 and 200 HTTP endpoints against a
local server, plus the host probe (always on) and the cache probe where Redis answers on
127.0.0.1:6379: wall time, CPU seconds of the monitor's process (all its threads; the HTTP
server runs in its own process, so its CPU is not counted), and the monitor's RSS.

Each endpoint has the three conditions of the issue's example ([STATUS], [RESPONSE_TIME],
[BODY].status). The wall time includes the host probe's 0.5 s CPU sample (a wait, overlapped
with the requests). Not a test: `python bench/bench_probes.py [--runs 5] [--sizes 10,50,200]`."""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402

from bench.results import save_result  # noqa: E402
from bvh_ops.demo.platform.cache import redis_answers  # noqa: E402

# The health endpoint, in its own process: HTTP/1.1 keep-alive, a listen backlog for 200 parallel
# connects (http.server's default of 5 drops SYNs under a burst: 1 s retransmits, not our cost).
SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
BODY = b'{"status": "healthy", "checks": {"database": {"status": "up"}}}'
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
class S(ThreadingHTTPServer):
    request_queue_size = 512
    daemon_threads = True
S(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def _serve() -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the local HTTP server did not start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sizes", default="10,50,200")
    args = ap.parse_args()
    rss_start = psutil.Process().memory_info().rss
    from bvh_ops.config import Settings
    from bvh_ops.monitoring.cycle import run_cycle

    rss_imported = psutil.Process().memory_info().rss
    server, port = _serve()
    cache = "redis://127.0.0.1:6379/0" if redis_answers() else None
    results = {"runs_per_size": args.runs, "cache_probe": bool(cache), "cpus": os.cpu_count(),
               "loadavg_at_start": [round(x, 2) for x in os.getloadavg()], "cycles": {}}
    try:
        for n in [int(x) for x in args.sizes.split(",")]:
            settings = Settings(cache_url=cache, endpoints=[
                {"name": f"ep-{i}", "service": "api", "url": f"http://127.0.0.1:{port}/health",
                 "conditions": ["[STATUS] == 200", "[RESPONSE_TIME] < 1000", "[BODY].status == healthy"]}
                for i in range(n)])
            run_cycle(settings)  # warm-up (first TLS/pool setup, lazy imports)
            walls, cpus = [], []
            for _ in range(args.runs):
                r = run_cycle(settings)
                bad = [c for c in r.checks if c.service == "api" and c.status != "ok"]
                if bad:
                    raise SystemExit(f"{len(bad)} endpoints not ok, e.g. {bad[0]}")
                walls.append(r.wall_seconds)
                cpus.append(r.cpu_seconds)
            results["cycles"][n] = {"checks": len(r.checks),
                                    "wall_seconds_median": round(statistics.median(walls), 3),
                                    "wall_seconds_max": round(max(walls), 3),
                                    "cpu_seconds_median": round(statistics.median(cpus), 3),
                                    "cpu_seconds_max": round(max(cpus), 3),
                                    "cpu_ms_per_endpoint": round(1000 * statistics.median(cpus) / n, 2)}
            print(f"{n:4} endpoints: {results['cycles'][n]}", flush=True)
    finally:
        server.terminate()
        server.wait(10)
    results["rss_mib"] = {
        "python_start": round(rss_start / 2**20, 1),
        "after_imports": round(rss_imported / 2**20, 1),
        "after_cycles": round(psutil.Process().memory_info().rss / 2**20, 1),
        "peak": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    save_result("probes", results)


if __name__ == "__main__":
    main()
