"""The drill's read-back of a restored database's COPY text (``copy_fingerprints``, what the
``logical_fingerprints`` check costs): every table through a psql child of its own (the path
before the eleventh session, less its extra connection per table), a table under
``INLINE_BELOW`` bytes on the worker's own connection and larger ones through psql (the default
until the thirteenth session, still the path for a server elsewhere), and the drill's path on its
embedded scratch today (the large tables written by the backend into a FIFO, no psql), on a
database of many small tables plus one large one. Alternated ``--runs`` times, medians of the wall
time, of our CPU with psql's and of the whole machine's busy core-seconds (the server's work
included: the machine is otherwise idle); every variant's fingerprints must be equal (the bench
fails otherwise).

Not a test: ``python bench/bench_fingerprint_readback.py [--tables 200] [--rows 2000]
[--large-mb 200] [--runs 3] [--quick]`` (``--quick``: 40 tables, a 20 MB table)."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_daily_backup import machine  # noqa: E402
from bench.results import save_result  # noqa: E402
from bvh_ops.pg.cluster import EmbeddedCluster  # noqa: E402
from bvh_ops.pg.conn import connect  # noqa: E402
from bvh_ops.pg.fingerprint import BLAKE3, INLINE_BELOW, LocalServer, copy_fingerprints, list_tables  # noqa: E402

SMALL = """
CREATE TABLE {name} (id int PRIMARY KEY, code text, amount numeric(12,2), at timestamptz, note text);
INSERT INTO {name} SELECT k, 'code-' || k, k * 1.25, timestamptz '2026-01-01' + k * interval '1 minute',
  CASE WHEN k % 5 = 0 THEN NULL ELSE repeat('x', k % 40) END FROM generate_series(1, {rows}) k;
"""


def busy_core_seconds() -> float:
    """The machine's busy CPU time so far (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tables", type=int, default=200)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--large-mb", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workdir", default="/tmp/bvh-bench-readback")
    args = ap.parse_args()
    if args.quick:
        args.tables, args.large_mb = 40, 20
    import shutil

    shutil.rmtree(args.workdir, ignore_errors=True)
    cluster = EmbeddedCluster(Path(args.workdir) / "pg")
    cluster.start()
    try:
        dsn = cluster.dsn()
        with connect(dsn, autocommit=True) as conn:
            for i in range(args.tables):
                conn.execute(SMALL.format(name=f"small_{i:04d}", rows=args.rows))
            conn.execute("CREATE TABLE large (id bigint, payload text)")
            rows = args.large_mb * (1 << 20) // 120
            conn.execute("INSERT INTO large SELECT k, md5(k::text) || repeat('y', 60) FROM generate_series(1, %s) k",
                         (rows,))
            conn.execute("VACUUM ANALYZE")
            db_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        local = LocalServer.of_cluster(cluster.root, cluster.data)
        variants = {"psql_every_table": {"inline_below": 0},
                    "inline_small_psql_large": {"inline_below": INLINE_BELOW},
                    "default": {"inline_below": INLINE_BELOW, "server": local}}
        seconds: dict[str, list[float]] = {v: [] for v in variants}
        cpu: dict[str, list[float]] = {v: [] for v in variants}
        machine_cpu: dict[str, list[float]] = {v: [] for v in variants}
        digests: dict[str, dict] = {}
        for _ in range(args.runs):
            for name, how in variants.items():
                with connect(dsn) as conn:
                    tables = list_tables(conn)
                    t0, c0, b0 = time.monotonic(), os.times(), busy_core_seconds()
                    stats = copy_fingerprints(conn, dsn, tables, encoding="UTF8", method=BLAKE3, **how)
                    c1, b1 = os.times(), busy_core_seconds()
                    seconds[name].append(round(time.monotonic() - t0, 3))
                    cpu[name].append(round(sum(c1[:4]) - sum(c0[:4]), 3))
                    machine_cpu[name].append(round(b1 - b0, 2))
                digests[name] = {s.name: s.fingerprint for s in stats}
                print(f"  {name:<24} {seconds[name][-1]:6.2f} s  cpu (ours + psql) {cpu[name][-1]:5.2f} s  "
                      f"machine {machine_cpu[name][-1]:5.2f} core-s  load {os.getloadavg()[0]:.1f}", flush=True)
        if len({repr(sorted(d.items())) for d in digests.values()}) != 1:
            raise SystemExit("the read paths disagree: a fingerprint differs")
        med = {v: statistics.median(s) for v, s in seconds.items()}
        save_result("fingerprint_readback" + ("_quick" if args.quick else ""), {
            "machine": machine(), "load_average": os.getloadavg(), "tables": args.tables + 1,
            "small_rows": args.rows, "large_mb": args.large_mb, "database_bytes": db_bytes,
            **{v: {"seconds": med[v], "all": seconds[v], "cpu_seconds": statistics.median(cpu[v]), "cpu_all": cpu[v],
                   "machine_core_seconds": statistics.median(machine_cpu[v]), "machine_all": machine_cpu[v]}
               for v in variants},
            "ratio_default_over_psql": round(med["default"] / med["psql_every_table"], 3),
            "machine_ratio_default_over_psql_large": round(statistics.median(machine_cpu["default"])
                                                           / statistics.median(machine_cpu["inline_small_psql_large"]), 3)})
    finally:
        cluster.destroy()
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
