"""The drill's read-back of a restored database's COPY text (``copy_fingerprints``, what the
``logical_fingerprints`` check costs): every table through a psql child of its own (the path
before the eleventh session, less its extra connection per table) against today's default (a
table under ``INLINE_BELOW`` bytes on the worker's own connection, the largest tables first), on
a database of many small tables plus one large one. Alternated ``--runs`` times, medians; the
two variants' fingerprints must be equal (the bench fails otherwise).

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
from bvh_ops.pg.fingerprint import BLAKE3, INLINE_BELOW, copy_fingerprints, list_tables  # noqa: E402

SMALL = """
CREATE TABLE {name} (id int PRIMARY KEY, code text, amount numeric(12,2), at timestamptz, note text);
INSERT INTO {name} SELECT k, 'code-' || k, k * 1.25, timestamptz '2026-01-01' + k * interval '1 minute',
  CASE WHEN k % 5 = 0 THEN NULL ELSE repeat('x', k % 40) END FROM generate_series(1, {rows}) k;
"""


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
        variants = {"psql_every_table": 0, "default": INLINE_BELOW}
        seconds: dict[str, list[float]] = {v: [] for v in variants}
        cpu: dict[str, list[float]] = {v: [] for v in variants}
        digests: dict[str, dict] = {}
        for _ in range(args.runs):
            for name, below in variants.items():
                with connect(dsn) as conn:
                    tables = list_tables(conn)
                    t0, c0 = time.monotonic(), os.times()
                    stats = copy_fingerprints(conn, dsn, tables, encoding="UTF8", method=BLAKE3, inline_below=below)
                    c1 = os.times()
                    seconds[name].append(round(time.monotonic() - t0, 3))
                    cpu[name].append(round(sum(c1[:4]) - sum(c0[:4]), 3))
                digests[name] = {s.name: s.fingerprint for s in stats}
                print(f"  {name:<18} {seconds[name][-1]:6.2f} s  cpu (ours + psql) {cpu[name][-1]:5.2f} s  "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
        if digests["default"] != digests["psql_every_table"]:
            raise SystemExit("the two read paths disagree: a fingerprint differs")
        med = {v: statistics.median(s) for v, s in seconds.items()}
        save_result("fingerprint_readback" + ("_quick" if args.quick else ""), {
            "machine": machine(), "load_average": os.getloadavg(), "tables": args.tables + 1,
            "small_rows": args.rows, "large_mb": args.large_mb, "database_bytes": db_bytes,
            **{v: {"seconds": med[v], "all": seconds[v], "cpu_seconds": statistics.median(cpu[v]), "cpu_all": cpu[v]}
               for v in variants},
            "ratio_default_over_psql": round(med["default"] / med["psql_every_table"], 3)})
    finally:
        cluster.destroy()
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
