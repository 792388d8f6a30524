"""Log ingest throughput: `bvh-ops logs collect` vs a bare COPY of the same JSON lines.

N platform lines (default 200,000) are written with the sample platform's own JsonLog writer
(the runbook's categories in a realistic mix: application and performance most, some security,
audit and e-mail/IP fields to pseudonymise), then, against one embedded PostgreSQL 18 started
here (default settings):
  1. `bvh-ops logs collect --json` (a child process, as an operator runs it): parse, classify,
     pseudonymise, COPY into ops.log_records (partitioned by category and day), offsets;
  2. the bare tool: a child process COPYing the same file, line for line, into a plain table
     ``bare(doc jsonb)`` (psycopg COPY, CSV format with quote/delimiter characters that never
     occur, so each line is one jsonb value) — no parsing in Python, no partitions.
Records/s, MB/s and each child's peak RSS (psutil, polled every 50 ms). Not a test.
Usage: python bench/bench_logs_ingest.py [--lines 200000] [--workdir /tmp/bvh-bench-logs]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_daily_backup import PeakRSS, machine  # noqa: E402
from bench.results import save_result  # noqa: E402
from bvh_ops.demo.platform.logs import JsonLog  # noqa: E402
from bvh_ops.opsdb.migrations import migrate  # noqa: E402
from bvh_ops.pg.catalog import create_database  # noqa: E402
from bvh_ops.pg.cluster import EmbeddedCluster  # noqa: E402

BARE = """
import sys, psycopg
dsn, path = sys.argv[1], sys.argv[2]
with psycopg.connect(dsn) as conn, conn.cursor() as cur:
    cur.execute("CREATE TABLE IF NOT EXISTS bare (doc jsonb)")
    with cur.copy("COPY bare (doc) FROM STDIN WITH (FORMAT csv, QUOTE e'\\\\x01', DELIMITER e'\\\\x02')") as copy, \\
            open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            copy.write(chunk)
"""


def write_lines(path: Path, n: int) -> None:
    rng = random.Random(13)
    log = JsonLog(path)
    for i in range(n):
        roll = rng.random()
        acc = f"acc-{rng.randrange(5000)}"
        ip = f"198.51.{rng.randrange(256)}.{rng.randrange(256)}"
        if roll < 0.45:
            log.write("application", "lottery.ticket_bought", account=acc, draw=f"d-{i // 1000}",
                      amount=rng.choice([5, 10, 20]), ip=ip, email=f"{acc}@example.org")
        elif roll < 0.85:
            log.write("performance", "http.request", endpoint=rng.choice(["/api/draws", "/api/tickets", "/api/wallet"]),
                      method="GET", status=200, ms=round(rng.lognormvariate(3, 0.6), 1), ip=ip)
        elif roll < 0.95:
            log.write("security", "auth.login_failed" if rng.random() < 0.3 else "auth.login", level="warning",
                      account=acc, ip=ip, email=f"{acc}@example.org")
        else:
            log.write("audit", "wallet.deposit", account=acc, amount=rng.randrange(10, 500), by="platform")
    log.close()


def run_child(cmd: list[str], env: dict[str, str]) -> tuple[float, int, subprocess.CompletedProcess]:
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rss = PeakRSS(proc.pid)
    rss.start()
    out, err = proc.communicate()
    seconds = time.monotonic() - t0
    peaks = rss.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed: {err.strip()[-500:]}")
    return seconds, max(peaks.values(), default=0), subprocess.CompletedProcess(cmd, 0, out, err)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--workdir", default="/tmp/bvh-bench-logs")
    args = ap.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    logfile = work / "logs" / "app.log"
    t0 = time.monotonic()
    write_lines(logfile, args.lines)
    size = logfile.stat().st_size
    print(f"wrote {args.lines} lines, {size / 1e6:.1f} MB in {time.monotonic() - t0:.1f} s", flush=True)
    cluster = EmbeddedCluster(work / "pg")
    cluster.start()
    try:
        create_database(cluster.dsn(), "bvh_ops")
        create_database(cluster.dsn(), "bare")
        ops = cluster.dsn("bvh_ops")
        with psycopg.connect(ops, autocommit=True) as conn:
            migrate(conn)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BVH_OPS_")}
        env.update({"BVH_OPS_OPS_DATABASE_URL": ops, "BVH_OPS_STATE_DIR": str(work / "state"),
                    "BVH_OPS_LOG_SOURCES": json.dumps([{"name": "app", "path": f"{logfile}*", "format": "json"}]),
                    "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        ours_s, ours_rss, proc = run_child([sys.executable, "-m", "bvh_ops.cli", "logs", "collect", "--json"], env)
        doc = json.loads(proc.stdout)
        assert doc["records"] == args.lines and doc["quarantined"] == 0, doc
        bare_s, bare_rss, _ = run_child([sys.executable, "-c", BARE, cluster.dsn("bare"), str(logfile)], env)
        with psycopg.connect(cluster.dsn("bare")) as conn:
            assert conn.execute("SELECT count(*) FROM bare").fetchone()[0] == args.lines
        with psycopg.connect(ops) as conn:
            stored = conn.execute("SELECT pg_total_relation_size(c.oid) FROM pg_class c "
                                  "WHERE c.relname LIKE 'log\\_%%\\_2%%'").fetchall()
        result = {
            "machine": machine(), "lines": args.lines, "file_mb": round(size / 1e6, 1),
            "collect": {"seconds_wall": round(ours_s, 2), "seconds_in_collect": doc["seconds"],
                        "records_per_s": round(args.lines / ours_s), "mb_per_s": round(size / 1e6 / ours_s, 1),
                        "records_per_s_in_collect": round(args.lines / doc["seconds"]),
                        "peak_rss_mib": round(ours_rss / 2**20, 1)},
            "bare_copy": {"seconds_wall": round(bare_s, 2), "records_per_s": round(args.lines / bare_s),
                          "mb_per_s": round(size / 1e6 / bare_s, 1), "peak_rss_mib": round(bare_rss / 2**20, 1)},
            "stored_mb": round(sum(r[0] for r in stored) / 1e6, 1),
        }
        save_result("logs_ingest", result)
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
