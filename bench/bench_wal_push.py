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
from bvh_ops.demo.sample import load_sample  # noqa: E402
from bvh_ops.keys import write_keypair  # noqa: E402
from bvh_ops.pg.catalog import create_database
from bvh_ops.pg.cluster import EmbeddedCluster  # noqa: E402


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
    bin_dir = Path(sys.executable).parent
    timings = {}
    status = segs_dir / "archive_status"
    status.mkdir()
    for label, cmd in (("cli", [str(bin_dir / "bvh-ops"), "wal-push"]), ("lean", [str(bin_dir / "bvh-ops-wal"), "push"])):
        shutil.rmtree(work / "repo", ignore_errors=True)
        # As PostgreSQL's archiver does: every finished segment has a .ready file; one call per
        # segment, in order; .ready becomes .done after success (the lean push archives other
        # ready segments ahead, in parallel).
        for n in names:
            (status / f"{n}.ready").touch()
            (status / f"{n}.done").unlink(missing_ok=True)
        t0 = time.monotonic()
        for n in names:
            subprocess.run([*cmd, str(segs_dir / n)], env=env, check=True)
            (status / f"{n}.ready").rename(status / f"{n}.done")
        timings[label] = time.monotonic() - t0
    seconds = timings["lean"]
    # Fetch (what recovery does): the lean command, without and with the prefetch spool.
    key = work / "keys" / "identity.key"
    fenv = {**env, "BVH_OPS_IDENTITY": str(key)}
    out_dir = work / "fetched"
    fetch = {}
    for label, spool in (("fetch", False), ("fetch_prefetch", True)):
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir()
        rdir = work / f"recovery-{label}"
        shutil.rmtree(rdir, ignore_errors=True)
        rdir.mkdir()
        cfg = rdir / "bvh-ops.toml"
        cfg.write_text(f'repository = "file://{work / "repo"}"\nidentity = "{key}"\nstate_dir = "{rdir}"\n')
        if spool:
            (rdir / "prefetch").mkdir()
            (rdir / "prefetch" / "prefetch.json").write_text('{"segment_size": 16777216, "depth": 8, "workers": 2}')
        t0 = time.monotonic()
        for n in names:
            subprocess.run([str(bin_dir / "bvh-ops-wal"), "fetch", n, str(out_dir / n)],
                           env={k: v for k, v in fenv.items() if not k.startswith("BVH_OPS_")} | {"BVH_OPS_CONFIG": str(cfg)},
                           check=True)
        fetch[label] = time.monotonic() - t0
    stored = sum(p.stat().st_size for p in (work / "repo").rglob("*") if p.is_file() and not p.name.endswith(".json"))
    t1 = time.monotonic()
    subprocess.run(["bash", "-c", f'for f in "{segs_dir}"/0*; do zstd -3 -q -c "$f" > /dev/null; done'], check=True)
    bare = time.monotonic() - t1
    result = {"segments": len(names), "cli_seconds": round(timings["cli"], 2),
              "cli_segments_per_s": round(len(names) / timings["cli"], 2),
              "fetch_segments_per_s": round(len(names) / fetch["fetch"], 2),
              "fetch_prefetch_segments_per_s": round(len(names) / fetch["fetch_prefetch"], 2),
              "seconds": round(seconds, 2), "segments_per_s": round(len(names) / seconds, 2),
              "wal_mb_per_s": round(len(names) * 16 / seconds, 1), "stored_mb": round(stored / 2**20, 1),
              "plaintext_mb": len(names) * 16, "bare_zstd_seconds": round(bare, 2)}
    save_result("wal_push", result)


if __name__ == "__main__":
    main()
