"""Maintenance costs (issue #14): (1) the assessment — facts gathered from the catalog and the
plan — on a database with 1,000 tables and 3,000 indexes; (2) what a weekly maintenance run
costs a running workload: pgbench TPS alone, then with ``run_maintenance(weekly)`` going on
(pgbench's own updates leave dead tuples to vacuum), side by side in one run on one embedded
PostgreSQL 18. Not a test: ``python bench/bench_maintenance.py [--tables 1000] [--seconds 20]``."""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402

from bench.bench_daily_backup import machine  # noqa: E402
from bench.results import save_result  # noqa: E402
from bvh_ops.config import Settings  # noqa: E402
from bvh_ops.maintenance.facts import gather  # noqa: E402
from bvh_ops.maintenance.plan import plan  # noqa: E402
from bvh_ops.maintenance.run import run_maintenance  # noqa: E402
from bvh_ops.pg.catalog import create_database  # noqa: E402
from bvh_ops.pg.cluster import EmbeddedCluster  # noqa: E402
from bvh_ops.pg.tools import embedded_bin_dir  # noqa: E402

ALWAYS = {"window_start": "00:00", "window_end": "23:59"}


def build_catalog(dsn: str, tables: int) -> float:
    t = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for first in range(1, tables + 1, 100):   # 100 tables per transaction (lock table size)
            conn.execute(f"""DO $$ BEGIN FOR i IN {first}..{min(first + 99, tables)} LOOP
                EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, a int, b text)', i);
                EXECUTE format('CREATE INDEX t%s_a ON t%s (a)', i, i);
                EXECUTE format('CREATE INDEX t%s_b ON t%s (b)', i, i);
                EXECUTE format('INSERT INTO t%s SELECT g, g %% 7, md5(g::text) FROM generate_series(1, 50) g', i);
                END LOOP; END $$""")
        conn.execute("ANALYZE")
    return time.monotonic() - t


def assess(dsn: str, settings: Settings, runs: int) -> dict:
    times = []
    for _ in range(runs):
        with psycopg.connect(dsn, autocommit=True) as conn:
            t = time.monotonic()
            facts = gather(conn, now=datetime.now(UTC))
            p = plan(facts, "weekly", settings.maintenance, datetime.now(UTC))
            times.append(time.monotonic() - t)
    return {"runs": runs, "seconds_median": round(statistics.median(times), 3), "seconds_max": round(max(times), 3),
            "tables": len(facts.tables), "indexes": len(facts.indexes), "planned_actions": len(p.actions),
            "findings": len(p.findings)}


def pgbench(dsn: str, seconds: int) -> float:
    out = subprocess.run([str(embedded_bin_dir() / "pgbench"), "-n", "-c", "2", "-j", "2", "-T", str(seconds), dsn],
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"tps = ([0-9.]+)", out).group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tables", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--workdir", default="/tmp/bvh-bench-maintenance")
    args = ap.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cluster = EmbeddedCluster(work / "pg")
    cluster.start()
    try:
        create_database(cluster.dsn(), "bench_catalog")
        create_database(cluster.dsn(), "bench_pgbench")
        cat_dsn, pgb_dsn = cluster.dsn("bench_catalog"), cluster.dsn("bench_pgbench")
        build_s = build_catalog(cat_dsn, args.tables)
        settings = Settings(database_url=cat_dsn, state_dir=work / "state", maintenance=ALWAYS)
        assessment = assess(cat_dsn, settings, 3)
        subprocess.run([str(embedded_bin_dir() / "pgbench"), "-i", "-q", "-s", "10", pgb_dsn], check=True,
                       capture_output=True)
        with psycopg.connect(pgb_dsn, autocommit=True) as conn:   # let dead tuples pile up for the run
            conn.execute("ALTER TABLE pgbench_accounts SET (autovacuum_enabled = false)")
            conn.execute("ALTER TABLE pgbench_tellers SET (autovacuum_enabled = false)")
            conn.execute("ALTER TABLE pgbench_branches SET (autovacuum_enabled = false)")
        alone = pgbench(pgb_dsn, args.seconds)
        # A low vacuum threshold so the run vacuums pgbench_accounts (1M rows) while pgbench writes
        # to it: the expensive case, not a run with nothing to do.
        pgb_settings = Settings(database_url=pgb_dsn, state_dir=work / "state",
                                maintenance={**ALWAYS, "vacuum_scale_factor": 0.005, "analyze_scale_factor": 0.005})
        report: dict = {}

        def maintain() -> None:
            time.sleep(args.seconds / 4)       # into the workload
            t = time.monotonic()
            report.update(run_maintenance(pgb_settings, "weekly", record_run=False, stages=False))
            report["seconds"] = time.monotonic() - t

        th = threading.Thread(target=maintain)
        th.start()
        during = pgbench(pgb_dsn, args.seconds)
        th.join()
        after = pgbench(pgb_dsn, args.seconds)
    finally:
        cluster.stop()
    done = [a for a in report.get("actions", []) if a["status"] == "done"]
    doc = {"machine": machine(), "catalog": {"tables": args.tables, "build_seconds": round(build_s, 1),
                                             "assessment": assessment},
           "workload": {"pgbench": "-c 2 -j 2, scale 10", "seconds": args.seconds, "tps_alone": alone,
                        "tps_during_weekly_maintenance": during, "tps_after": after,
                        "ratio_during_vs_alone": round(during / alone, 3),
                        "maintenance_seconds": round(report.get("seconds", 0), 2),
                        "actions_done": [f"{a['action']} {a['object']} {a['seconds']:.2f}s" for a in done],
                        "status": report.get("status")},
           "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    save_result("maintenance", doc)


if __name__ == "__main__":
    main()
