"""DR drill on the sample database: RTO and seconds per stage, the restore stage against bare
`pg_restore -j2` of an unencrypted dump of the same data, and the checks stage against the
restore stage. Not a test: run `python bench/bench_dr_drill.py [--scale 120]`."""

from __future__ import annotations

import argparse
import json
import os
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

from bench.bench_daily_backup import machine  # noqa: E402
from bench.results import save_result  # noqa: E402
from bvh_ops.demo.sample import LOTTERY_INVARIANTS, Workload, load_sample
from bvh_ops.keys import write_keypair  # noqa: E402
from bvh_ops.pg.catalog import create_database  # noqa: E402
from bvh_ops.pg.cluster import EmbeddedCluster, archiving_conf, local_archive_config  # noqa: E402
from bvh_ops.pg.tools import embedded_bin_dir, pg_env  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=120)
    ap.add_argument("--workdir", default="/tmp/bvh-bench-drill")
    args = ap.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.chmod(work, 0o755)
    keys = write_keypair(work / "keys")
    os.chmod(keys[0], 0o644)
    # The cluster archives through bvh-ops-wal, so the physical drill can recover from WAL.
    cfg = local_archive_config(work)
    cluster = EmbeddedCluster(work / "pg", extra_conf={**archiving_conf(cfg), "shared_buffers": "'512MB'",
                                                       "max_wal_size": "'4GB'"})
    cluster.start()
    db = "drillbench"
    t0 = time.monotonic()
    create_database(cluster.dsn(), db)
    load_sample(cluster.dsn(db), scale=args.scale)
    w = Workload(cluster.dsn(db), rate=50).start()
    time.sleep(2)
    w.stop()
    load_s = time.monotonic() - t0
    import psycopg

    with psycopg.connect(cluster.dsn(db)) as conn:
        db_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    create_database(cluster.dsn(), "bvh_ops")
    os.environ.update({
        "BVH_OPS_DATABASE_URL": cluster.dsn(db), "BVH_OPS_REPOSITORY": f"file://{work / 'repo'}",
        "BVH_OPS_RECIPIENTS": str(keys[0]), "BVH_OPS_IDENTITY": str(keys[1]),
        "BVH_OPS_STATE_DIR": str(work / "state"), "BVH_OPS_OPS_DATABASE_URL": cluster.dsn("bvh_ops"),
        "BVH_OPS_INVARIANTS": json.dumps([{"name": n, "sql": q} for n, q in LOTTERY_INVARIANTS]),
    })
    from bvh_ops.config import load_settings
    from bvh_ops.logical.backup import run_logical_backup

    manifest = run_logical_backup(load_settings()).manifest
    from flows.dr_drill import DrillFailed, dr_drill

    try:
        report = dr_drill(backup=manifest.backup_id)
    except DrillFailed as exc:
        report = exc.report
    stages = {s["name"]: s["seconds"] for s in report["stages"]}

    # Physical: a full, writes, an incremental, writes, everything archived; then a physical
    # drill recovering to the end of the archive.
    from bench.bench_physical import wait_archived
    from bvh_ops.physical.backup import run_physical_backup

    wait_archived(cluster)
    settings = load_settings()
    run_physical_backup(settings, "full")
    w = Workload(cluster.dsn(db), rate=50).start()
    time.sleep(2)
    run_physical_backup(settings, "incremental")
    time.sleep(2)
    w.stop()
    wait_archived(cluster)
    try:
        preport = dr_drill(mode="physical")
    except DrillFailed as exc:
        preport = exc.report
    pstages = {s["name"]: s["seconds"] for s in preport["stages"]}

    # Bare: an unencrypted custom dump of the same database, restored with pg_restore -j2
    # into a fresh database on the same server.
    bin_dir = embedded_bin_dir()
    dump = work / "bare.dump"
    env = pg_env(cluster.dsn(db))
    subprocess.run([str(bin_dir / "pg_dump"), "-Fc", "-Z0", "--no-sync", "-f", str(dump), db], env=env, check=True)
    create_database(cluster.dsn(), "bare_restore")
    t1 = time.monotonic()
    subprocess.run([str(bin_dir / "pg_restore"), "-j2", "--no-owner", "-d", "bare_restore", str(dump)],
                   env=pg_env(cluster.dsn("bare_restore")), check=True)
    bare_restore_s = time.monotonic() - t1
    dump.unlink()
    cluster.stop()
    result = {
        "machine": machine(), "scale": args.scale, "database_bytes": db_bytes, "load_seconds": round(load_s, 1),
        "dump_bytes": manifest.bytes_in, "stored_bytes": manifest.bytes_stored,
        "drill_passed": report["passed"], "rto_seconds": report["rto_seconds"], "rpo_seconds": report["rpo_seconds"],
        "stages": stages, "bare_pg_restore_j2_seconds": round(bare_restore_s, 2),
        "restore_ratio": round(stages.get("restore", 0) / bare_restore_s, 3),
        "checks_over_restore": round(stages.get("checks", 0) / stages["restore"], 3) if stages.get("restore") else None,
        "failed_checks": [c for c in report["checks"] if c["status"] != "passed"],
        "physical": {"passed": preport["passed"], "rto_seconds": preport["rto_seconds"],
                     "rpo_seconds": preport["rpo_seconds"], "stages": pstages,
                     "failed_checks": [c for c in preport["checks"] if c["status"] != "passed"]},
    }
    save_result("dr_drill", result)


if __name__ == "__main__":
    main()
