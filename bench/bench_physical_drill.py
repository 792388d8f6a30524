"""The physical DR drill's stages timed directly (no Prefect), two code trees alternated.

    setup:  an embedded PostgreSQL 18 archiving through bvh-ops-wal, ``pgbench -i -s SCALE``, a
            physical full (with --incremental: 2 s of pgbench writes, then an incremental), all
            archived; the source is then stopped (the stages timed here do not read it).
    rounds: for each tree in turn (--trees, each a checkout of bvh-ops; the first is "A"), a
            child process with PYTHONPATH = that tree runs the drill's physical stages as the
            flow does — physical_verify (deep verify of the chain + WAL reachability), then
            physical_restore (fetch, combine, pg_verifybackup, recovery through wal-fetch,
            promote), then the teardown — and reports each stage's wall seconds, the process's
            CPU seconds (user + sys, with its reaped children: tar, pg_combinebackup,
            pg_verifybackup, wal-fetch) and how many times the base objects were opened.

    --in-process: instead, in this process and tree, the two designs alternated: the verify
            stage decrypting each base to check it and the restore fetching and decrypting it
            again ("twice"), against the verify extracting it as it checks it and the restore
            taking that extraction ("once"); same stage functions, same data, same process.

Not a test: ``flock /tmp/bench.lock python bench/bench_physical_drill.py --trees OLD,NEW`` (or
``--in-process``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def setup(work: Path, scale: int, incremental: bool) -> dict:
    sys.path.insert(0, str(HERE.parents[1]))
    from bench.bench_physical import wait_archived
    from bench.results import fresh_workdir
    from bvh_ops.pg.catalog import create_database
    from bvh_ops.pg.cluster import EmbeddedCluster, archiving_conf, local_archive_config, prepare_server_user
    from bvh_ops.pg.tools import embedded_bin_dir, pg_env

    work, keys = fresh_workdir(work)
    prepare_server_user(work)
    cfg = local_archive_config(work)
    cluster = EmbeddedCluster(work / "pg", extra_conf={**archiving_conf(cfg), "shared_buffers": "'512MB'",
                                                       "max_wal_size": "'4GB'"})
    cluster.start()
    create_database(cluster.dsn(), "bench")
    bin_dir = embedded_bin_dir()
    env = pg_env(cluster.dsn("bench"))
    subprocess.run([str(bin_dir / "pgbench"), "-i", "-q", "-s", str(scale), "bench"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ.update({"BVH_OPS_DATABASE_URL": cluster.dsn("bench"), "BVH_OPS_REPOSITORY": f"file://{work / 'repo'}",
                       "BVH_OPS_RECIPIENTS": str(keys[0]), "BVH_OPS_IDENTITY": str(keys[1]),
                       "BVH_OPS_STATE_DIR": str(work / "state")})
    from bvh_ops.config import load_settings
    from bvh_ops.physical.backup import run_physical_backup

    wait_archived(cluster)
    settings = load_settings()
    full = run_physical_backup(settings, "full").manifest
    doc = {"full": full.backup_id, "bytes_in": full.bytes_in, "bytes_stored": full.bytes_stored}
    if incremental:
        subprocess.run([str(bin_dir / "pgbench"), "-T", "2", "-c", "2", "bench"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        incr = run_physical_backup(settings, "incremental").manifest
        doc.update(incremental=incr.backup_id, incr_bytes_in=incr.bytes_in)
    wait_archived(cluster)
    with __import__("psycopg").connect(cluster.dsn("bench")) as conn:
        doc["database_bytes"] = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    cluster.stop()
    doc["env"] = {k: v for k, v in os.environ.items() if k.startswith("BVH_OPS_")}
    (work / "setup.json").write_text(json.dumps(doc, indent=2))
    return doc


def child() -> None:
    """Runs in the tree named by PYTHONPATH: the drill's physical stages, one JSON line out."""
    from bvh_ops.config import load_settings
    from bvh_ops.drill import physical
    from bvh_ops.physical.backup import BASE_OBJECT
    from bvh_ops.storage.local import LocalStore
    from bvh_ops.stream import DecryptingReader
    from tasks import drill_tasks as t

    opened: dict[str, int] = {}
    decrypted: dict[str, int] = {}
    real_open, real_init = LocalStore.open_reader, DecryptingReader.__init__

    def counting_open(self, key):
        if key.endswith("/" + BASE_OBJECT):
            opened[key] = opened.get(key, 0) + 1
        return real_open(self, key)

    def counting_init(self, source, identities, *, bind, **kw):
        if bind.endswith("/" + BASE_OBJECT):
            decrypted[bind] = decrypted.get(bind, 0) + 1
        real_init(self, source, identities, bind=bind, **kw)

    LocalStore.open_reader, DecryptingReader.__init__ = counting_open, counting_init
    settings = load_settings()
    drill_id = f"bench-{os.getpid()}"
    out: dict = {"stages": {}, "cpu": {}}

    def timed(name, fn):
        t, w = os.times(), time.monotonic()
        try:
            return fn()
        finally:
            t2 = os.times()
            out["stages"][name] = round(time.monotonic() - w, 3)
            out["cpu"][name] = round(t2.user + t2.system + t2.children_user + t2.children_system
                                     - t.user - t.system - t.children_user - t.children_system, 3)

    target = physical.recovery_target(None, None)
    pm = timed("physical_select", lambda: t.physical_select.fn(settings, "latest", target))
    verify = t.physical_verify.fn
    if "scratch" in inspect.signature(verify).parameters:
        root = str(physical.scratch_root(settings, drill_id))
        pre = timed("physical_fetch_verify", lambda: verify(settings, pm, target, root))
    else:
        pre = timed("physical_fetch_verify", lambda: verify(settings, pm, target))
    out["checks"] = {c.name: (str(c.status), c.detail[:200]) for c in pre}
    scratch, rep = timed("physical_restore_all", lambda: t.physical_restore.fn(settings, drill_id, pm, target))
    out["restore_seconds"] = rep["seconds"]
    out["fetch_stages"] = rep["fetch_stages"]
    timed("physical_teardown", lambda: t.physical_teardown.fn(scratch))
    out["opened"], out["decrypted"] = opened, decrypted
    out["load"] = os.getloadavg()[0]
    print("RESULT " + json.dumps(out))


def in_process(doc: dict, rounds: int) -> dict:
    """The physical drill's verify and restore stages, the two designs alternated in this process."""
    os.environ.update(doc["env"])
    sys.path.insert(0, str(HERE.parents[1]))
    from bvh_ops.config import load_settings
    from bvh_ops.drill import physical
    from bvh_ops.pg.tools import embedded_bin_dir
    from bvh_ops.physical.restore import restore_physical, stop_server
    from checks.physical_drill_suite import verify_chain_and_wal

    settings = load_settings()
    target = physical.recovery_target(None, None)
    pm = physical.select(settings, "latest", target)
    runs: dict[str, list[dict]] = {"twice": [], "once": []}
    for i in range(rounds):
        for design in ("twice", "once") if i % 2 == 0 else ("once", "twice"):
            root = physical.scratch_root(settings, f"bench-{design}-{i}")
            root.mkdir(parents=True)
            t, w = os.times(), time.monotonic()
            checks = verify_chain_and_wal(settings, pm, target, extract_into=root if design == "once" else None)
            w1 = time.monotonic()
            try:
                report = restore_physical(settings, pm.backup_id, root / "data", target=target, start=True,
                                          prepared=root if design == "once" else None)
                t2, w2 = os.times(), time.monotonic()
            finally:
                stop_server(root / "data", embedded_bin_dir())
                shutil.rmtree(root, ignore_errors=True)

            def cpu(a, b):
                return round(b.user + b.system + b.children_user + b.children_system
                             - a.user - a.system - a.children_user - a.children_system, 3)

            assert all(c.passed for c in checks), checks
            r = {"verify": round(w1 - w, 3), "restore": round(w2 - w1, 3), "wall": round(w2 - w, 3),
                 "cpu": cpu(t, t2), "load": round(os.getloadavg()[0], 2), "prepared": report.prepared}
            runs[design].append(r)
            print(f"round {i} {design}: {json.dumps(r)}", flush=True)
    return {design: {k: round(statistics.median(r[k] for r in rs), 3) for k in ("verify", "restore", "wall", "cpu")}
            | {"loads": [r["load"] for r in rs]} for design, rs in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=100)
    ap.add_argument("--workdir", default="/tmp/bvh-bench-pdrill")
    ap.add_argument("--incremental", action="store_true", help="a chain of a full and an incremental")
    ap.add_argument("--reuse", action="store_true", help="keep the work directory's cluster and backups")
    ap.add_argument("--trees", help="comma-separated checkouts to alternate (A,B…)")
    ap.add_argument("--in-process", action="store_true", help="the two designs alternated in this process")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="pgbench scale 5, 2 rounds, in process")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child()
        return
    if args.quick:
        args.scale, args.rounds, args.in_process = 5, 2, True
    elif not args.trees:
        args.in_process = True  # `make bench`: the two designs alternated in this process
    work = Path(args.workdir)
    if args.reuse and (work / "setup.json").exists():
        doc = json.loads((work / "setup.json").read_text())
    else:
        doc = setup(work, args.scale, args.incremental)
    if args.in_process:
        print(json.dumps({"setup": {k: v for k, v in doc.items() if k != "env"}, "rounds": args.rounds,
                          "designs": in_process(doc, args.rounds)}, indent=2))
        return
    if not args.trees:
        raise SystemExit("--trees or --in-process")
    trees = args.trees.split(",")
    runs: dict[str, list[dict]] = {tree: [] for tree in trees}
    prefect_home = tempfile.mkdtemp(prefix="bvh-bench-prefect-")
    for i in range(args.rounds):
        for tree in trees if i % 2 == 0 else list(reversed(trees)):
            env = {**os.environ, **doc["env"], "PYTHONPATH": tree, "PREFECT_HOME": prefect_home,
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "ERROR"}
            proc = subprocess.run([sys.executable, str(HERE), "--child", "--trees", tree], env=env, cwd=tree,
                                  capture_output=True, text=True)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                raise SystemExit(f"round {i} of {tree} failed")
            r = json.loads(line[len("RESULT "):])
            runs[tree].append(r)
            print(f"round {i} {tree}: {json.dumps({k: r[k] for k in ('stages', 'cpu', 'load')})}", flush=True)
    summary = {"setup": {k: v for k, v in doc.items() if k != "env"}, "rounds": args.rounds, "trees": {}}
    for tree, rs in runs.items():
        names = list(rs[0]["stages"])
        summary["trees"][tree] = {
            "wall_median": {n: round(statistics.median(r["stages"][n] for r in rs), 3) for n in names},
            "cpu_median": {n: round(statistics.median(r["cpu"][n] for r in rs), 3) for n in names},
            "verify_plus_restore_wall": [round(r["stages"]["physical_fetch_verify"] + r["stages"]["physical_restore_all"], 3)
                                         for r in rs],
            "verify_plus_restore_cpu": [round(r["cpu"]["physical_fetch_verify"] + r["cpu"]["physical_restore_all"], 3)
                                        for r in rs],
            "restore_seconds": rs[-1]["restore_seconds"], "fetch_stages": rs[-1]["fetch_stages"],
            "opened": rs[-1]["opened"], "decrypted": rs[-1]["decrypted"], "checks": rs[-1]["checks"],
            "load": [r["load"] for r in rs],
        }
    print(json.dumps(summary, indent=2))
    shutil.rmtree(prefect_home, ignore_errors=True)


if __name__ == "__main__":
    main()
