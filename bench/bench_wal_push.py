"""wal-push throughput as PostgreSQL drives it: one `bvh-ops wal-push` process per 16 MiB
segment, into a file:// repository. Segments are real WAL from an embedded PostgreSQL 18
running the sample workload. Not a test: `python bench/bench_wal_push.py [--segments 20]`."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import save_result  # noqa: E402
from bvh_ops.keys import write_keypair  # noqa: E402
from bvh_ops.pg.cluster import EmbeddedCluster  # noqa: E402
from bvh_ops.pg.sample import create_database, load_sample  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--segments", type=int, default=20)
    ap.add_argument("--workdir", default="/tmp/bvh-bench-wal")
    args = ap.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cluster = EmbeddedCluster(work / "pg", extra_conf={"wal_keep_size": "'4GB'", "max_wal_size": "'4GB'"})
    cluster.start()
    try:
        create_database(cluster.dsn(), "walbench")
        load_sample(cluster.dsn("walbench"), scale=args.segments / 4)  # ~4 segments of WAL per scale unit
        segs_dir = work / "segments"
        segs_dir.mkdir()
        wal = cluster.data / "pg_wal"
        names = sorted(p.name for p in wal.iterdir() if len(p.name) == 24)[: args.segments]
        for n in names:
            shutil.copy(wal / n, segs_dir / n)
    finally:
        cluster.stop()
    pub, _ = write_keypair(work / "keys")
    env = {**os.environ, "BVH_OPS_REPOSITORY": f"file://{work / 'repo'}", "BVH_OPS_RECIPIENTS": str(pub),
           "BVH_OPS_STATE_DIR": str(work / "state")}
    bvh = str(Path(sys.executable).parent / "bvh-ops")
    t0 = time.monotonic()
    for n in names:
        subprocess.run([bvh, "wal-push", str(segs_dir / n)], env=env, check=True)
    seconds = time.monotonic() - t0
    stored = sum(p.stat().st_size for p in (work / "repo").rglob("*") if p.is_file() and not p.name.endswith(".json"))
    t1 = time.monotonic()
    subprocess.run(["bash", "-c", f'for f in "{segs_dir}"/*; do zstd -3 -q -c "$f" > /dev/null; done'], check=True)
    bare = time.monotonic() - t1
    result = {"segments": len(names), "seconds": round(seconds, 2), "segments_per_s": round(len(names) / seconds, 2),
              "wal_mb_per_s": round(len(names) * 16 / seconds, 1), "stored_mb": round(stored / 2**20, 1),
              "plaintext_mb": len(names) * 16, "bare_zstd_seconds": round(bare, 2)}
    save_result("wal_push", result)


if __name__ == "__main__":
    main()
