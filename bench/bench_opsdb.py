"""Ops-database growth per day at a 30-second probe interval, the cost of a day's rollup, and the
RSS of the `bvh-ops monitor` process.

One synthetic day — 2,880 cycles × 20 checks (api, database, cache, host, backups), recorded
with store.record_cycle (committed every BATCH cycles) into an embedded PostgreSQL started here —
then: pg_total_relation_size (heap + indexes + TOAST) of the day's partition, `rollup` timed
over that day, the size of samples_hourly / samples_daily after it, and the extrapolation to the
90 days of raw samples kept. Then `bvh-ops monitor --cycles 20 --interval 0.1` against the same
cluster with its peak RSS (psutil, polled every 50 ms). Not a test: run it by hand.
Usage: python bench/bench_opsdb.py [--workdir /tmp/bvh-bench-opsdb]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_daily_backup import PeakRSS, machine  # noqa: E402
from bench.results import save_result  # noqa: E402
from bvh_ops.monitoring.cycle import CycleResult  # noqa: E402
from bvh_ops.monitoring.results import Check, Status  # noqa: E402
from bvh_ops.monitoring.store import KEEP_DAYS, record_cycle, rollup  # noqa: E402
from bvh_ops.opsdb.migrations import migrate  # noqa: E402
from bvh_ops.pg.catalog import create_database  # noqa: E402
from bvh_ops.pg.cluster import EmbeddedCluster  # noqa: E402

CYCLES_PER_DAY = 2880   # one every 30 s
BATCH = 240             # cycles per commit while loading (the monitor itself commits every cycle)
CHECKS = [  # (name, service, unit) — the ~20 checks of a typical configuration
    ("api-health", "api", "ms"), ("api-detailed", "api", "ms"), ("api-metrics", "api", "ms"),
    ("frontend", "frontend", "ms"), ("frontend.certificate", "frontend", "days"),
    ("database.reachable", "database", "ms"), ("database.connections", "database", "%"),
    ("database.longest_transaction", "database", "s"), ("database.idle_in_transaction", "database", "s"),
    ("database.wraparound", "database", "%"), ("database.cache_hit_ratio", "database", "%"),
    ("cache.memory", "cache", "%"), ("cache.hit_rate", "cache", "%"), ("cache.evictions", "cache", ""),
    ("host.cpu", "host", "%"), ("host.memory", "host", "%"), ("host.disk./", "host", "%"),
    ("host.load", "host", ""), ("backups.daily_age", "backups", "h"), ("backups.wal_lag", "backups", "s"),
]


def synthetic_cycle(at: datetime, rng: random.Random) -> CycleResult:
    checks = []
    for name, service, unit in CHECKS:
        roll = rng.random()
        status = Status.CRITICAL if roll < 0.002 else Status.WARNING if roll < 0.01 else Status.OK
        checks.append(Check(name, service, status, round(rng.uniform(0, 100), 3), unit, ""))
    return CycleResult(Status.OK, at, checks, 0.5, 0.03, [])


def size(conn: psycopg.Connection, relation: str) -> int:
    return conn.execute("SELECT pg_total_relation_size(%s::regclass)", (relation,)).fetchone()[0]


def bench_growth(dsn: str) -> dict:
    day = datetime.now(UTC).date() - timedelta(days=1)
    start = datetime.combine(day, dtime(), UTC)
    rng = random.Random(11)
    with psycopg.connect(dsn) as conn:
        t0 = time.monotonic()
        worst_cycle = 0.0
        for i in range(CYCLES_PER_DAY):
            c0 = time.monotonic()
            record_cycle(conn, synthetic_cycle(start + timedelta(seconds=30 * i), rng))
            worst_cycle = max(worst_cycle, time.monotonic() - c0)
            if (i + 1) % BATCH == 0:
                conn.commit()
        conn.commit()
        insert_s = time.monotonic() - t0
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE ops.samples")
        partition = f"ops.samples_{day:%Y%m%d}"
        rows = conn.execute(f"SELECT count(*) FROM {partition}").fetchone()[0]
        part_bytes = size(conn, partition)
        heap_bytes = conn.execute("SELECT pg_relation_size(%s::regclass)", (partition,)).fetchone()[0]
        empty_partition = size(conn, f"ops.samples_{day + timedelta(days=1):%Y%m%d}")
        t0 = time.monotonic()
        hourly, daily = rollup(conn, start + timedelta(days=1, seconds=1))
        rollup_s = time.monotonic() - t0
        conn.execute("VACUUM ANALYZE ops.samples_hourly")
        conn.execute("VACUUM ANALYZE ops.samples_daily")
        hourly_bytes, daily_bytes = size(conn, "ops.samples_hourly"), size(conn, "ops.samples_daily")
    return {
        "cycles": CYCLES_PER_DAY, "checks_per_cycle": len(CHECKS), "rows": rows,
        "insert_seconds": round(insert_s, 2), "insert_ms_per_cycle": round(1000 * insert_s / CYCLES_PER_DAY, 2),
        "insert_ms_worst_cycle": round(1000 * worst_cycle, 2),
        "partition_bytes": part_bytes, "partition_heap_bytes": heap_bytes, "bytes_per_row": round(part_bytes / rows, 1),
        "empty_partition_bytes": empty_partition,
        "raw_mb_per_90_days": round(part_bytes * KEEP_DAYS / 1e6, 1),
        "rollup_seconds": round(rollup_s, 3), "hourly_rows": hourly, "daily_rows": daily,
        "hourly_bytes_per_day": hourly_bytes, "daily_bytes_per_day": daily_bytes,
        "rollup_mb_per_year": round((hourly_bytes + daily_bytes) * 365 / 1e6, 1),
    }


def bench_monitor_rss(cluster: EmbeddedCluster, ops_dsn: str, work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BVH_OPS_")}
    env.update({"BVH_OPS_DATABASE_URL": cluster.dsn(), "BVH_OPS_OPS_DATABASE_URL": ops_dsn,
                "BVH_OPS_STATE_DIR": str(work / "state"), "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "bvh_ops.cli", "monitor", "--cycles", "20", "--interval", "0.1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mon = PeakRSS(proc.pid)
    mon.start()
    stdout, stderr = proc.communicate(timeout=600)
    seconds = time.monotonic() - t0
    peaks = mon.stop()
    if proc.returncode != 0:
        raise SystemExit(f"monitor failed ({proc.returncode}): {stderr.strip()[-500:]}")
    with psycopg.connect(ops_dsn) as conn:
        checks = conn.execute("SELECT count(*) / greatest(count(DISTINCT at), 1) FROM ops.samples "
                              "WHERE at > now() - interval '1 hour'").fetchone()[0]
    return {"cycles": 20, "interval_seconds": 0.1, "wall_seconds": round(seconds, 1), "checks_per_cycle": checks,
            "peak_rss_mib": round(max(peaks.values()) / 2**20, 1), "last_line": stdout.strip().splitlines()[-1]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="/tmp/bvh-bench-opsdb")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    cluster = EmbeddedCluster(work / "pg")
    cluster.start()
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute('DROP DATABASE IF EXISTS "bench_ops" WITH (FORCE)')
        create_database(cluster.dsn(), "bench_ops")
        dsn = cluster.dsn("bench_ops")
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate(conn)
        growth = bench_growth(dsn)
        monitor = bench_monitor_rss(cluster, dsn, work)
    finally:
        cluster.stop()
    save_result("opsdb", {"machine": machine(), "growth": growth, "monitor": monitor})


if __name__ == "__main__":
    main()
