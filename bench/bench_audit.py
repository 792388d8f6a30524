"""Audit trail (issue #13): `bvh-ops audit verify` time and memory per million entries.

A million entries shaped like the platform's audit records (GDPR access, wallet adjustments,
consent changes, AML findings: a few small fields each) are appended with ``append_many`` (one
COPY), the head is signed (``checkpoint``), then the real CLI ``bvh-ops audit verify --json``
runs in a child process: wall time and its peak RSS (ru_maxrss of the child). The same check
in-process (``verify_trail``) gives the CPU split. A 1/10 run shows memory does not grow with
the chain. The ops database: an embedded PostgreSQL 18 under ``--workdir``.
Not a test: ``python bench/bench_audit.py [--entries 1000000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_daily_backup import machine  # noqa: E402
from bench.results import save_result  # noqa: E402
from bvh_ops.audit.digest import checkpoint, verify_trail  # noqa: E402
from bvh_ops.audit.store import append_many  # noqa: E402
from bvh_ops.config import Settings  # noqa: E402
from bvh_ops.opsdb.migrations import migrate  # noqa: E402
from bvh_ops.pg.catalog import create_database  # noqa: E402
from bvh_ops.pg.cluster import EmbeddedCluster  # noqa: E402

ACTIONS = ("gdpr.access", "wallet.adjust", "consent.change", "aml.finding", "auth.admin_login")


def records(n: int, start: datetime):
    for i in range(n):
        yield (start + timedelta(seconds=i * 2.5), "platform", ACTIONS[i % 5], f"user-{i % 50_000}",
               {"ip": f"10.{i % 250}.{i % 199}.{i % 97}", "amount": round((i % 1000) * 1.25, 2), "request": f"r{i}",
                "reason": "customer request" if i % 5 == 0 else "", "ok": i % 7 != 0})


def one(dsn: str, settings: Settings, n: int, env: dict[str, str]) -> dict:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS ops CASCADE")
        migrate(conn)
        t = time.perf_counter()
        append_many(conn, records(n, datetime(2026, 10, 1, tzinfo=UTC)))
        append_s = time.perf_counter() - t
        t = time.perf_counter()
        checkpoint(settings, conn, datetime.now(UTC))
        checkpoint_s = time.perf_counter() - t
        table_mb = conn.execute("SELECT pg_total_relation_size('ops.audit_chain')").fetchone()[0] / 1e6
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bvh_ops.cli", "audit", "verify", "--json"], env=env,
                          capture_output=True, text=True)
    cli_s = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["entries"] == n, proc.stdout[:500] + proc.stderr
    with psycopg.connect(dsn) as conn:
        c0, t = time.process_time(), time.perf_counter()
        verify_trail(settings, conn)
        inproc_s, inproc_cpu = time.perf_counter() - t, time.process_time() - c0
    return {"entries": n, "append_many_s": round(append_s, 2), "append_per_s": round(n / append_s),
            "checkpoint_s": round(checkpoint_s, 2), "table_mb": round(table_mb, 1),
            "cli_verify_s": round(cli_s, 2), "cli_verify_per_million_s": round(cli_s * 1e6 / n, 1),
            "cli_peak_rss_mb": round(after.ru_maxrss / 1024, 1), "cli_cpu_s": round(
                after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2),
            "inprocess_verify_s": round(inproc_s, 2), "inprocess_verify_cpu_s": round(inproc_cpu, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--workdir", default="/tmp/bvh-bench-audit")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    cluster = EmbeddedCluster(work / "pg")
    cluster.start()
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute('DROP DATABASE IF EXISTS "bench_audit" WITH (FORCE)')
        create_database(cluster.dsn(), "bench_audit")
        dsn = cluster.dsn("bench_audit")
        repo = work / "repo"
        repo.mkdir(exist_ok=True)
        for old in repo.rglob("*.json"):
            old.unlink()
        settings = Settings(repository=f"file://{repo}", state_dir=work / "state", ops_database_url=dsn)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BVH_OPS_")}
        env.update(BVH_OPS_OPS_DATABASE_URL=dsn, BVH_OPS_REPOSITORY=f"file://{repo}",
                   BVH_OPS_STATE_DIR=str(work / "state"), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        runs = []
        for n in (args.entries // 10, args.entries):
            for old in repo.rglob("*.json"):
                old.unlink()
            runs.append(one(dsn, settings, n, env))
            print(json.dumps(runs[-1]), flush=True)
        save_result("audit", {"machine": machine(), "at": datetime.now(UTC).isoformat(), "runs": runs})
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
