"""Daily backup vs the bare pipeline, in one run, on the same database.

    bare:  pg_dump -Fc -Z0 | zstd -3 -T2 > file
    ours:  run_logical_backup (snapshot + fingerprints + pg_dump -> zstd -> AES-GCM -> file://)

Reports wall seconds, MB/s (pg_dump bytes per second), peak RSS per process, the ratio, at two
database sizes (to show memory does not grow with size). Not a test: run `make bench`.
Usage: python bench/bench_daily_backup.py [--scales 30,85] [--workdir /tmp/bvh-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap
import threading
import time
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
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env)
    mon = PeakRSS(proc.pid)
    mon.start()
    rc = proc.wait()
    seconds = time.monotonic() - t0
    peaks = mon.stop()
    if rc != 0:
        raise SystemExit(f"{cmd[:3]} failed with {rc}")
    return seconds, peaks


def bench_size(cluster: EmbeddedCluster, scale: float, work: Path, keys: tuple[Path, Path]) -> dict:
    db = f"bench_s{int(scale)}"
    t0 = time.monotonic()
    create_database(cluster.dsn(), db)
    load_sample(cluster.dsn(db), scale=scale)
    load_s = time.monotonic() - t0
    import psycopg

    with psycopg.connect(cluster.dsn(db)) as conn:
        db_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        conn.execute("CHECKPOINT")

    pg_dump = str(embedded_bin_dir() / "pg_dump")
    bare_file = work / f"{db}.bare.zst"
    env = pg_env(cluster.dsn(db))
    # Warm the cache once so both runs read from the same state.
    subprocess.run([pg_dump, "-Fc", "-Z0", "--no-sync", "-f", "/dev/null", db], env=env, check=True)

    bare_cmd = ["bash", "-c", f'set -o pipefail; "{pg_dump}" -Fc -Z0 "{db}" | zstd -3 -T2 -q > "{bare_file}"']
    bare_s, bare_peaks = timed(bare_cmd, env)
    dump_bytes_cmd = subprocess.run(["bash", "-c", f'zstd -dc "{bare_file}" | wc -c'], capture_output=True,
                                    text=True, check=True)
    dump_bytes = int(dump_bytes_cmd.stdout.strip())

    results_ours = {}
    for variant, fp in (("ours", True), ("ours_no_fingerprints", False)):
        results_ours[variant] = _run_ours(cluster, db, work, keys, fp)
    result = {
        "scale": scale, "database_bytes": db_bytes, "load_seconds": round(load_s, 1),
        "dump_bytes": dump_bytes,
        "bare": {"seconds": round(bare_s, 2), "mb_per_s": round(dump_bytes / 1e6 / bare_s, 1),
                 "stored_bytes": bare_file.stat().st_size,
                 "peak_rss_mb": {k: round(v / 2**20, 1) for k, v in bare_peaks.items() if k != "bash"}},
        **results_ours,
    }
    result["ratio"] = round(results_ours["ours"]["seconds"] / bare_s, 3)
    result["ratio_no_fingerprints"] = round(results_ours["ours_no_fingerprints"]["seconds"] / bare_s, 3)
    bare_file.unlink()
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{db}" WITH (FORCE)')
    return result


def _run_ours(cluster, db, work, keys, fingerprints: bool) -> dict:
    repo = work / f"repo-{db}"
    shutil.rmtree(repo, ignore_errors=True)
    code = textwrap.dedent("""
        import json, sys
        from bvh_ops.config import load_settings
        from bvh_ops.logical.backup import run_logical_backup
        r = run_logical_backup(load_settings(), fingerprints=FINGERPRINTS)
        print(json.dumps({"bytes_in": r.manifest.bytes_in, "bytes_stored": r.manifest.bytes_stored,
                          "seconds": r.seconds}))
    """).replace("FINGERPRINTS", str(fingerprints))
    ours_env = {**os.environ, "BVH_OPS_DATABASE_URL": cluster.dsn(db), "BVH_OPS_REPOSITORY": f"file://{repo}",
                "BVH_OPS_RECIPIENTS": str(keys[0]), "BVH_OPS_STATE_DIR": str(work / "state")}
    out_file = work / "ours.json"
    ours_cmd = ["bash", "-c", f'"{sys.executable}" -c \'{code}\' > "{out_file}"']
    ours_s, ours_peaks = timed(ours_cmd, ours_env)
    ours = json.loads(out_file.read_text())
    shutil.rmtree(repo, ignore_errors=True)
    return {"seconds": round(ours_s, 2), "mb_per_s": round(ours["bytes_in"] / 1e6 / ours_s, 1),
            "stored_bytes": ours["bytes_stored"], "inner_seconds": round(ours["seconds"], 2),
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
    ap.add_argument("--scales", default="30,85")
    ap.add_argument("--workdir", default="/tmp/bvh-bench")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    cluster = EmbeddedCluster(work / "pg", extra_conf={"shared_buffers": "'512MB'", "max_wal_size": "'4GB'"})
    cluster.start()
    keys_dir = work / "keys"
    keys = (keys_dir / "recipient.pub", keys_dir / "identity.key") if (keys_dir / "identity.key").exists() \
        else write_keypair(keys_dir)
    try:
        results = [bench_size(cluster, float(s), work, keys) for s in args.scales.split(",")]
    finally:
        cluster.stop()
    report = {"machine": machine(), "results": results}
    save_result("daily_backup", report)


if __name__ == "__main__":
    main()
