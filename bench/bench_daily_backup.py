"""Daily backup vs the bare pipeline, in one run, on the same databases (issue #19, goals 1-2).

    bare:  pg_dump -Fc -Z0 | zstd -3 -T2 > file
    ours:  run_logical_backup in a fresh Python process (snapshot, pg_dump -> fingerprints from
           the COPY text + zstd -> AES-GCM -> file://, signed manifest)
    e2e:   `bvh-ops backup --json` through a running `prefect server` (flow, tasks, checks,
           retention, artifacts), against the same bare pipe

Runs alternate (bare, ours, ours without fingerprints, ours with numpy's chunk walker where the C
one is built, ours with each --threads compression
thread count, [bare, e2e]) --runs times; medians are reported with the ratio (of the whole process,
and of run_logical_backup's own seconds without the interpreter's start and imports), MB/s, CPU
seconds of each process tree (steady where the machine is loaded), peak RSS per process and the
server's buffer reads (blks_hit + blks_read of the database) of one bare and one ours run: the
fingerprints must not read the tables a second time. For e2e also where the time went, from the
Prefect server's records of each flow run (before the flow run, its tasks, after it). Last, the
fingerprinter alone over the bare run's dump: ms of one core per MB. Databases: the sample lottery database at --scales and pgbench at
--pgbench scales; --quick: sample scale 3 and pgbench scale 5 (a developer's loop).
Not a test: `make bench-backup` (QUICK=--quick).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import save_result  # noqa: E402
from bvh_ops.demo.sample import load_sample  # noqa: E402
from bvh_ops.keys import write_keypair  # noqa: E402
from bvh_ops.pg.catalog import create_database
from bvh_ops.pg.cluster import EmbeddedCluster  # noqa: E402
from bvh_ops.pg.tools import embedded_bin_dir, pg_env  # noqa: E402


class PeakRSS(threading.Thread):
    """Poll a process tree; keep each process's peak RSS (by name)."""

    def __init__(self, root_pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(root_pid)
        self.peaks: dict[str, int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            for p in procs:
                try:
                    name = p.name()
                    self.peaks[name] = max(self.peaks.get(name, 0), p.memory_info().rss)
                except psutil.NoSuchProcess:
                    pass
            time.sleep(0.05)

    def stop(self) -> dict[str, int]:
        self._halt.set()
        self.join()
        return self.peaks


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, dict[str, int]]:
    seconds, _, peaks = timed_cpu(cmd, env)
    return seconds, peaks


def timed_cpu(cmd: list[str], env: dict[str, str], **popen) -> tuple[float, float, dict[str, int]]:
    """Wall seconds, CPU seconds (user + system of the process and every child it waited for:
    pg_dump, zstd) and peak RSS per process name. CPU seconds are the steady figure on a
    loaded machine, where wall time also counts the waits for a core."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, **popen)
    mon = PeakRSS(proc.pid)
    mon.start()
    rc = proc.wait()
    seconds = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    peaks = mon.stop()
    if rc != 0:
        raise SystemExit(f"{cmd[:3]} failed with {rc}")
    return seconds, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, peaks


def make_database(cluster: EmbeddedCluster, kind: str, scale: float) -> str:
    db = f"bench_{kind}_{str(scale).replace('.', '_')}"
    create_database(cluster.dsn(), db)
    if kind == "sample":
        load_sample(cluster.dsn(db), scale=scale)
        import psycopg

        # As pgbench -i does: no autovacuum pass may run (and read the tables) while we measure.
        with psycopg.connect(cluster.dsn(db), autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE)")
    else:
        subprocess.run([str(embedded_bin_dir() / "pgbench"), "-i", "-q", "-s", str(int(scale)), db],
                       env=pg_env(cluster.dsn(db)), check=True, capture_output=True)
    return db


def buffer_reads(cluster: EmbeddedCluster, db: str) -> int:
    """Shared-buffer reads (hits + misses) of ``db`` so far, as the statistics see them."""
    import psycopg

    with psycopg.connect(cluster.dsn(db), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
    time.sleep(1.2)  # other backends flush their counters at most once a second, and at exit
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return int(conn.execute("SELECT blks_hit + blks_read FROM pg_stat_database WHERE datname = %s",
                                (db,)).fetchone()[0])


def med(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def bench_size(cluster: EmbeddedCluster, kind: str, scale: float, work: Path, keys: tuple[Path, Path],
               runs: int, server: dict | None, threads: list[int] = ()) -> dict:
    t0 = time.monotonic()
    db = make_database(cluster, kind, scale)
    load_s = time.monotonic() - t0
    import psycopg

    with psycopg.connect(cluster.dsn(db)) as conn:
        db_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        conn.execute("CHECKPOINT")

    pg_dump = str(embedded_bin_dir() / "pg_dump")
    bare_file = work / f"{db}.bare.zst"
    env = pg_env(cluster.dsn(db))
    # Warm the cache once so every run reads from the same state.
    subprocess.run([pg_dump, "-Fc", "-Z0", "--no-sync", "-f", "/dev/null", db], env=env, check=True)
    bare_cmd = ["bash", "-c", f'set -o pipefail; "{pg_dump}" -Fc -Z0 "{db}" | zstd -3 -T2 -q > "{bare_file}"']

    from bvh_ops.logical.archive import WALKER

    bare, ours, nofp, numpy_walker, reads = [], [], [], [], {}
    by_threads: dict[int, list[dict]] = {t: [] for t in threads}
    for i in range(runs):
        before = buffer_reads(cluster, db) if i == 0 else 0
        bare.append(timed(bare_cmd, env))
        if i == 0:
            reads["bare"] = buffer_reads(cluster, db) - before
            before = buffer_reads(cluster, db)
        ours.append(_run_ours(cluster, db, work, keys, True))
        if i == 0:
            reads["ours"] = buffer_reads(cluster, db) - before
        nofp.append(_run_ours(cluster, db, work, keys, False))
        if WALKER != "numpy":  # the C chunk walker in use: also numpy's, side by side
            numpy_walker.append(_run_ours(cluster, db, work, keys, True, walker="numpy"))
        for t in threads:
            by_threads[t].append(_run_ours(cluster, db, work, keys, True, compression_threads=t))
    dump_bytes = int(subprocess.run(["bash", "-c", f'zstd -dc "{bare_file}" | wc -c'], capture_output=True,
                                    text=True, check=True).stdout.strip())
    bare_s = med([s for s, _ in bare])
    result = {
        "database": f"{kind} scale {scale:g}", "database_bytes": db_bytes, "load_seconds": round(load_s, 1),
        "dump_bytes": dump_bytes, "runs": runs,
        "bare": {"seconds": bare_s, "all": [round(s, 2) for s, _ in bare],
                 "mb_per_s": round(dump_bytes / 1e6 / bare_s, 1), "stored_bytes": bare_file.stat().st_size,
                 "peak_rss_mb": {k: round(v / 2**20, 1) for k, v in bare[0][1].items() if k != "bash"}},
        "ours": _summary(ours), "ours_no_fingerprints": _summary(nofp),
        "buffer_reads": {**reads, "ratio": round(reads["ours"] / max(1, reads["bare"]), 3)},
    }
    result["ratio"] = round(result["ours"]["seconds"] / bare_s, 3)
    result["inner_ratio"] = round(result["ours"]["inner_seconds"] / bare_s, 3)
    result["inner_ratio_no_fingerprints"] = round(result["ours_no_fingerprints"]["inner_seconds"] / bare_s, 3)
    result["ratio_no_fingerprints"] = round(result["ours_no_fingerprints"]["seconds"] / bare_s, 3)
    result["walker"] = WALKER
    if numpy_walker:
        result["ours_numpy_walker"] = _summary(numpy_walker)
        result["inner_ratio_numpy_walker"] = round(result["ours_numpy_walker"]["inner_seconds"] / bare_s, 3)
    for t, rs in by_threads.items():
        result[f"ours_compression_threads_{t}"] = {**_summary(rs), "ratio": round(med([r["seconds"] for r in rs]) / bare_s, 3),
                                                    "inner_ratio": round(med([r["inner_seconds"] for r in rs]) / bare_s, 3)}
    result["fingerprinter_cpu"] = fingerprinter_cpu(bare_file)
    if server is not None:
        result["e2e"] = _bench_e2e(server, cluster, db, work, keys, runs, bare_cmd, env, result["ours"])
    bare_file.unlink()
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{db}" WITH (FORCE)')
    return result


def _summary(runs: list[dict]) -> dict:
    first = runs[0]
    return {"seconds": med([r["seconds"] for r in runs]), "all": [r["seconds"] for r in runs],
            "cpu_seconds": med([r["cpu_seconds"] for r in runs]), "cpu_all": [r["cpu_seconds"] for r in runs],
            "mb_per_s": round(first["bytes_in"] / 1e6 / med([r["seconds"] for r in runs]), 1),
            "stored_bytes": first["bytes_stored"], "inner_seconds": med([r["inner_seconds"] for r in runs]),
            "peak_rss_mb": first["peak_rss_mb"]}


# -- end to end through a running Prefect server (goal 2) ---------------------------------------

def start_prefect_server(work: Path) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = work / "prefect-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BVH_OPS_"))}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    log = open(work / "prefect-server.log", "wb")  # noqa: SIM115 - open for the server's life
    proc = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host",
                             "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=log,
                            start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2):
                return {"proc": proc, "env": {**env, "PREFECT_API_URL": api}}
        except OSError:
            time.sleep(1)
    proc.kill()
    raise SystemExit("prefect server did not become healthy (see prefect-server.log)")


def _bench_e2e(server: dict, cluster, db, work, keys, runs, bare_cmd, env, pipeline: dict) -> dict:
    repo = work / f"repo-e2e-{db}"
    cli_env = {**server["env"], "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
               "BVH_OPS_DATABASE_URL": cluster.dsn(db), "BVH_OPS_REPOSITORY": f"file://{repo}",
               "BVH_OPS_RECIPIENTS": str(keys[0]), "BVH_OPS_STATE_DIR": str(work / "state-e2e")}
    bare, e2e, phases = [], [], []
    for _ in range(runs):
        bare.append(timed_cpu(bare_cmd, env)[:2])
        shutil.rmtree(repo, ignore_errors=True)
        started = time.time()
        with open(work / "e2e.json", "wb") as out, open(work / "e2e.err", "wb") as err:
            try:
                seconds, cpu, _ = timed_cpu([sys.executable, "-m", "bvh_ops.cli", "backup", "--json"], cli_env,
                                            stdout=out, stderr=err)
            except SystemExit:
                raise SystemExit(f"bvh-ops backup failed: {(work / 'e2e.err').read_text()[-2000:]}") from None
        e2e.append((seconds, cpu))
        phases.append(flow_phases(server["env"]["PREFECT_API_URL"], started, started + seconds))
    shutil.rmtree(repo, ignore_errors=True)
    imports = [timed_cpu([sys.executable, "-c", "import prefect"], cli_env)[:2] for _ in range(runs)]
    e2e_s, e2e_cpu = med([s for s, _ in e2e]), med([c for _, c in e2e])
    return {"bare_seconds": med([s for s, _ in bare]), "bare_cpu_seconds": med([c for _, c in bare]),
            "e2e_seconds": e2e_s, "e2e_all": [round(s, 2) for s, _ in e2e],
            "e2e_cpu_seconds": e2e_cpu, "e2e_cpu_all": [round(c, 2) for _, c in e2e],
            "fixed_over_bare": round(e2e_s - med([s for s, _ in bare]), 2),
            "fixed_over_pipeline": round(e2e_s - pipeline["seconds"], 2),
            "fixed_cpu_over_pipeline": round(e2e_cpu - pipeline["cpu_seconds"], 2),
            "phases": {k: med([p[k] for p in phases]) for k in phases[0]},
            "python_import_prefect_seconds": med([s for s, _ in imports]),
            "python_import_prefect_cpu_seconds": med([c for _, c in imports])}


def flow_phases(api: str, started: float, ended: float) -> dict[str, float]:
    """Where one `bvh-ops backup` went, from the Prefect server's records of its flow run: the
    CLI before the flow run started (Python, imports, settings, flow run creation), the flow run
    (its task runs, the pipeline's apart), and after it (engine teardown, process exit)."""
    def post(path: str, body: dict) -> list[dict]:
        req = urllib.request.Request(f"{api}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def ts(value: str) -> float:
        from datetime import datetime

        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()

    run = post("/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 1})[0]
    tasks = post("/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}, "limit": 200})
    pipeline = sum(t["total_run_time"] for t in tasks if t["name"].startswith("take-"))
    other_tasks = sum(t["total_run_time"] for t in tasks if not t["name"].startswith("take-"))
    flow_s = ts(run["end_time"]) - ts(run["start_time"])
    return {"before_flow": round(ts(run["start_time"]) - started, 2), "flow": round(flow_s, 2),
            "pipeline_task": round(pipeline, 2), "other_tasks": round(other_tasks, 2),
            "flow_outside_tasks": round(flow_s - pipeline - other_tasks, 2),
            "after_flow": round(ended - ts(run["end_time"]), 2)}


def fingerprinter_cpu(dump_zst: Path, reps: int = 3) -> dict:
    """CPU of the fingerprinter alone over the saved dump (the bare run's, decompressed into
    memory first), fed in the backup's read size: ms of one core per MB, best of ``reps``, for the
    chunk walker in use (``walker``) and for each one this install has (``by_walker``)."""
    from bvh_ops.logical.archive import WALKER, DumpFingerprinter
    from bvh_ops.logical.backup import READ_CHUNK

    with subprocess.Popen(["zstd", "-dcq", str(dump_zst)], stdout=subprocess.PIPE) as proc:
        chunks = list(iter(lambda: proc.stdout.read(READ_CHUNK), b""))
    size = sum(len(c) for c in chunks)
    by_walker = {}
    for walker in dict.fromkeys([WALKER, "numpy"]):
        best = None
        for _ in range(reps):
            fp = DumpFingerprinter(walker=walker)
            t0 = time.thread_time()
            for chunk in chunks:
                fp.feed(chunk)
            fp.finish()
            cpu = time.thread_time() - t0
            best = cpu if best is None else min(best, cpu)
        by_walker[walker] = {"cpu_seconds": round(best, 3), "ms_per_mb": round(best / (size / 1e6) * 1e3, 2)}
    return {"dump_bytes": size, "walker": WALKER, **by_walker[WALKER], "by_walker": by_walker}


def _run_ours(cluster, db, work, keys, fingerprints: bool, compression_threads: int | None = None,
              walker: str | None = None) -> dict:
    repo = work / f"repo-{db}"
    shutil.rmtree(repo, ignore_errors=True)
    code = textwrap.dedent("""
        import json, os, sys
        import bvh_ops.logical.archive as archive
        archive.WALKER = os.environ.get("BENCH_CHUNK_WALKER") or archive.WALKER
        from bvh_ops.config import load_settings
        from bvh_ops.logical.backup import run_logical_backup
        r = run_logical_backup(load_settings(), fingerprints=FINGERPRINTS)
        print(json.dumps({"bytes_in": r.manifest.bytes_in, "bytes_stored": r.manifest.bytes_stored,
                          "seconds": r.seconds}))
    """).replace("FINGERPRINTS", str(fingerprints))
    ours_env = {**os.environ, "BVH_OPS_DATABASE_URL": cluster.dsn(db), "BVH_OPS_REPOSITORY": f"file://{repo}",
                "BVH_OPS_RECIPIENTS": str(keys[0]), "BVH_OPS_STATE_DIR": str(work / "state")}
    if compression_threads is not None:
        ours_env["BVH_OPS_COMPRESSION_THREADS"] = str(compression_threads)
    if walker is not None:  # the child's fingerprinter uses this chunk walker instead of the built one
        ours_env["BENCH_CHUNK_WALKER"] = walker
    out_file = work / "ours.json"
    ours_cmd = ["bash", "-c", f'"{sys.executable}" -c \'{code}\' > "{out_file}"']
    ours_s, ours_cpu, ours_peaks = timed_cpu(ours_cmd, ours_env)
    ours = json.loads(out_file.read_text())
    shutil.rmtree(repo, ignore_errors=True)
    return {"seconds": round(ours_s, 2), "cpu_seconds": round(ours_cpu, 2),
            "bytes_in": ours["bytes_in"], "bytes_stored": ours["bytes_stored"],
            "inner_seconds": round(ours["seconds"], 2),
            "peak_rss_mb": {k: round(v / 2**20, 1) for k, v in ours_peaks.items() if k != "bash"}}


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version(),
        "kernel": platform.release(),
        "cpu_model": next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                           if ln.startswith("model name")), "?"),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scales", default="30,85,115", help="sample lottery database scales (85: ~1.1 GB, 115: ~1.5 GB)")
    ap.add_argument("--pgbench", default="50,100", help="pgbench scales ('' for none)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="sample scale 3, pgbench scale 5")
    ap.add_argument("--no-e2e", action="store_true", help="skip `bvh-ops backup` through a Prefect server")
    ap.add_argument("--workdir", default="/tmp/bvh-bench")
    ap.add_argument("--threads", default="", help="also ours with these compression_threads (e.g. 0,1; default 2)")
    ap.add_argument("--chart-from", nargs="+", type=Path, metavar="JSON",
                    help="only draw the chart from saved results (the newest line per database wins)")
    args = ap.parse_args()
    if args.chart_from:
        results = {}
        for path in args.chart_from:
            text = path.read_text()
            for r in json.loads(text[text.index("{"):])["results"]:
                results[r["database"]] = r
        out = Path(__file__).with_name("out")
        out.mkdir(exist_ok=True)
        print(chart(list(results.values()), out / "daily_backup.png"))
        return
    if args.quick:
        args.scales, args.pgbench = "3", "5"
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    cluster = EmbeddedCluster(work / "pg", extra_conf={"shared_buffers": "'512MB'", "max_wal_size": "'4GB'"})
    cluster.start()
    keys_dir = work / "keys"
    keys = (keys_dir / "recipient.pub", keys_dir / "identity.key") if (keys_dir / "identity.key").exists() \
        else write_keypair(keys_dir)
    # Measured as installed: pip compiles the package's bytecode, so the Python processes measured
    # here may use (and write) __pycache__ even where the caller's environment says otherwise.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *(str(root / d) for d in ("bvh_ops", "flows", "tasks",
                                                                                        "checks"))], check=True)
    server = None if args.no_e2e else start_prefect_server(work)
    sizes = [("sample", float(s)) for s in args.scales.split(",") if s] + \
        [("pgbench", float(s)) for s in args.pgbench.split(",") if s]
    try:
        threads = [int(t) for t in args.threads.split(",") if t]
        results = [bench_size(cluster, kind, scale, work, keys, args.runs, server, threads) for kind, scale in sizes]
    finally:
        cluster.stop()
        if server is not None:
            server["proc"].terminate()
            server["proc"].wait(timeout=60)
    report = {"machine": machine(), "load_average": os.getloadavg(), "results": results}
    path = save_result("daily_backup" + ("_quick" if args.quick else ""), report)
    print(chart(results, path.with_suffix(".png")))


def chart(results: list[dict], out: Path) -> Path:
    """Goal 1 at a glance: per database, run_logical_backup's own seconds over the bare pipe's
    (medians of one run) for ours, ours with numpy's chunk walker (where the C one is built) and
    ours without fingerprints, with the bound (1.10) and the bare pipe (1.00) marked."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    variants = [("inner_ratio", "ours (chunk walker: {walker})", "#4c78a8"),
                ("inner_ratio_numpy_walker", "ours, numpy's chunk walker", "#9ecae9"),
                ("inner_ratio_no_fingerprints", "ours without fingerprints", "#bab0ac")]
    fig, ax = plt.subplots(figsize=(9.5, 1.4 + 1.0 * len(results)))
    height = 0.8 / len(variants)
    for i, r in enumerate(results):
        y = len(results) - 1 - i
        for j, (key, label, color) in enumerate(variants):
            if r.get(key) is None:
                continue
            yy = y + 0.4 - (j + 0.5) * height
            ax.barh(yy, r[key], height=height * 0.9, color=color,
                    label=label.format(walker=r.get("walker", "numpy")) if i == 0 else None)
            ax.text(r[key] + 0.005, yy, f"{r[key]:.3f}", va="center", fontsize=7)
    ax.axvline(1.10, color="#b00000", linestyle="--", linewidth=1, label="the bound, 1.10 x bare")
    ax.axvline(1.0, color="black", linewidth=0.8)
    names = [f"{r['database']}\n{r['dump_bytes'] / 1e6:,.0f} MB dump, bare {r['bare']['seconds']:.2f} s, "
             f"{r['runs']} runs" for r in results]
    ax.set_yticks(range(len(results)), list(reversed(names)), fontsize=8)
    ax.set_xlim(0.7, 1.35)
    ax.set_xlabel("seconds / bare pg_dump -Fc -Z0 | zstd -3 -T2 (medians, run_logical_backup's own)")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Logical backup pipeline vs the bare pipe (issue #19, goal 1)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":
    main()
