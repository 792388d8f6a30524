"""Failover drill on the sample database: RTO and RPO from a standby built from a second
(replica) repository, seconds per stage, against the bare tools standing up a standby straight
from the primary (no repository, no encryption).

    ours  failover_drill(source=replica): standby from the replica repository (fetch, decrypt,
          extract, pg_verifybackup, start in standby mode), catch up through wal-fetch, promote
          with the failover's checks, the physical drill's checks, RTO/RPO
    bare  pg_basebackup -D DIR -Fp -X stream from the running primary, standby.signal, start,
          pg_ctl promote -w (what a standby costs when the primary is alive and reachable)

The replica is a copy of the primary repository taken after a workload; the workload then goes
on for a few seconds without being copied: those commits are the RPO the drill measures.
Wall seconds and peak RSS of this process and its children. Not a test:
`python bench/bench_failover.py [--quick | --scale 120]`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bvh-bench-prefect-"))

import psycopg  # noqa: E402

from bench.bench_daily_backup import machine  # noqa: E402
from bench.bench_physical import wait_archived  # noqa: E402
from bench.results import save_result  # noqa: E402
from bvh_ops.demo.sample import LOTTERY_INVARIANTS, Workload, load_sample  # noqa: E402
from bvh_ops.keys import write_keypair  # noqa: E402
from bvh_ops.pg.catalog import create_database  # noqa: E402
from bvh_ops.pg.cluster import (  # noqa: E402
    EmbeddedCluster,
    archiving_conf,
    chown_to_server,
    chown_tree_to_server,
    free_port,
    local_archive_config,
    server_env,
    server_ids,
)
from bvh_ops.pg.tools import embedded_bin_dir, pg_env  # noqa: E402

BIN = embedded_bin_dir()


def peak_rss_mb() -> dict:
    return {"self": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "children": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}


def bare_standby(cluster: EmbeddedCluster, work: Path) -> dict:
    """pg_basebackup -Fp -X stream → standby.signal → start → promote, timed."""
    data = work / "bare"
    t0 = time.monotonic()
    subprocess.run([str(BIN / "pg_basebackup"), "-D", str(data), "-Fp", "-X", "stream", "--no-sync", "-c", "fast"],
                   env=pg_env(cluster.dsn()), check=True, capture_output=True)
    t_copy = time.monotonic() - t0
    (data / "standby.signal").touch()
    port = free_port()
    with open(data / "postgresql.auto.conf", "a") as fh:
        fh.write(f"\nport = {port}\narchive_mode = 'off'\nlisten_addresses = '127.0.0.1'\n"
                 "unix_socket_directories = ''\n")
    chown_tree_to_server(data)
    log = work / "bare.log"
    log.touch()
    chown_to_server(log)
    run = {"capture_output": True, "cwd": "/", "env": server_env(), **server_ids()}
    subprocess.run([str(BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "start"], check=True, **run)
    subprocess.run([str(BIN / "pg_ctl"), "-D", str(data), "-w", "promote"], check=True, **run)
    total = time.monotonic() - t0
    subprocess.run([str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], **run)
    shutil.rmtree(data, ignore_errors=True)
    return {"basebackup_seconds": round(t_copy, 2), "total_seconds": round(total, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=120)
    ap.add_argument("--quick", action="store_true", help="a small sample (scale 2): minutes, not an hour")
    ap.add_argument("--workdir", default="/tmp/bvh-bench-failover")
    args = ap.parse_args()
    scale = 2 if args.quick else args.scale
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.chmod(work, 0o755)
    keys = write_keypair(work / "keys")
    os.chmod(keys[0], 0o644)
    cfg = local_archive_config(work)
    cluster = EmbeddedCluster(work / "pg", extra_conf={**archiving_conf(cfg, archive_timeout=60),
                                                       "shared_buffers": "'512MB'", "max_wal_size": "'4GB'"})
    cluster.start()
    try:
        db = "failbench"
        create_database(cluster.dsn(), db)
        create_database(cluster.dsn(), "bvh_ops")
        t0 = time.monotonic()
        load_sample(cluster.dsn(db), scale=scale)
        load_s = time.monotonic() - t0
        with psycopg.connect(cluster.dsn(db)) as conn:
            db_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        replica = work / "replica"
        os.environ.update({
            "BVH_OPS_DATABASE_URL": cluster.dsn(db), "BVH_OPS_REPOSITORY": f"file://{work / 'repo'}",
            "BVH_OPS_REPLICA_REPOSITORY": f"file://{replica}",
            "BVH_OPS_RECIPIENTS": str(keys[0]), "BVH_OPS_IDENTITY": str(keys[1]),
            "BVH_OPS_STATE_DIR": str(work / "state"), "BVH_OPS_OPS_DATABASE_URL": cluster.dsn("bvh_ops"),
            "BVH_OPS_INVARIANTS": json.dumps([{"name": n, "sql": q} for n, q in LOTTERY_INVARIANTS]),
        })
        from bvh_ops.config import load_settings
        from bvh_ops.physical.backup import run_physical_backup

        wait_archived(cluster)
        t1 = time.monotonic()
        full = run_physical_backup(load_settings(), "full").manifest
        backup_s = time.monotonic() - t1
        w = Workload(cluster.dsn(db), rate=50).start()
        time.sleep(5)
        wait_archived(cluster)
        # The replica: a copy (owners kept) of what the primary repository holds now.
        subprocess.run(["cp", "-a", str(work / "repo"), str(replica)], check=True)
        time.sleep(5)  # commits the replica never receives: the drill's RPO
        w.stop()
        from flows.dr_drill import DrillFailed
        from flows.failover_drill import failover_drill

        try:
            report = failover_drill(source="replica")
        except DrillFailed as exc:
            report = exc.report
        rss = peak_rss_mb()
        bare = bare_standby(cluster, work)
        stages = {s["name"]: s["seconds"] for s in report["stages"]}
        ours_to_promoted = stages.get("standby", 0) + stages.get("catch_up", 0) + stages.get("promote", 0)
        result = {
            "machine": machine(), "scale": scale, "database_bytes": db_bytes, "load_seconds": round(load_s, 1),
            "full_backup_bytes_in": full.bytes_in, "full_backup_bytes_stored": full.bytes_stored,
            "full_backup_seconds": round(backup_s, 1),
            "drill_passed": report["passed"], "rto_seconds": report["rto_seconds"],
            "rpo_seconds": report["rpo_seconds"], "objectives": report["objectives"], "stages": stages,
            "ours_standby_to_promoted_seconds": round(ours_to_promoted, 2),
            "bare_basebackup_standby_promote": bare,
            "ratio_ours_over_bare": round(ours_to_promoted / bare["total_seconds"], 2) if bare["total_seconds"] else None,
            "peak_rss_mb": rss,
            "failed_checks": [c for c in report["checks"] if c["status"] != "passed"],
        }
        save_result("failover" + ("_quick" if args.quick else ""), result)
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
