"""Log archive size and speed per million records: one day partition of ``ops.log_records``
holding N platform-like records exported by ``bvh_ops.logs.archive.export_day`` (JSON Lines,
zstd level ``compression_level``, AES-GCM, read back and verified) into a file:// repository,
side by side with the bare tools on the same rows: ``psql -c "COPY (SELECT row_to_json…) TO
STDOUT" | zstd -3`` (no encryption, no verification). Peak RSS of this process (the exporter)
is sampled. Not a test: ``python bench/bench_logs_archive.py [--records 1000000]``."""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402

from bench.bench_daily_backup import machine  # noqa: E402
from bench.results import save_result  # noqa: E402
from bvh_ops.config import Settings  # noqa: E402
from bvh_ops.keys import write_keypair  # noqa: E402
from bvh_ops.logs.archive import archive_key, export_day  # noqa: E402
from bvh_ops.opsdb.migrations import migrate  # noqa: E402
from bvh_ops.pg.catalog import create_database  # noqa: E402
from bvh_ops.pg.cluster import EmbeddedCluster  # noqa: E402
from bvh_ops.pg.tools import embedded_bin_dir  # noqa: E402
from bvh_ops.storage import open_store  # noqa: E402

DAY = date(2026, 10, 1)
EVENTS = ["auth.login", "auth.login_failed", "wallet.deposit", "ticket.purchase", "request.completed"]


def fill(dsn: str, n: int) -> float:
    t = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT ops.ensure_log_partition('security', %s)", (DAY,))
        conn.execute(
            """INSERT INTO ops.log_records (at, category, source, level, event, fields, file_id, file_offset)
               SELECT %s::timestamptz + (i * interval '80 ms'), 'security', 'platform',
                      CASE WHEN i %% 10 = 0 THEN 'warning' ELSE 'info' END, (%s::text[])[1 + i %% 5],
                      jsonb_build_object('email', 'user' || (i %% 5000) || '@example.org',
                                         'ip', '10.' || (i %% 200) || '.' || (i %% 97) || '.' || (i %% 13),
                                         'userId', i %% 5000, 'amount', (i %% 250) + 0.5,
                                         'path', '/api/tickets', 'durationMs', (i %% 900) / 3.0),
                      '2049:123456', i * 180
               FROM generate_series(1, %s) i""", (datetime.combine(DAY, datetime.min.time(), UTC), EVENTS, n))
        conn.execute("VACUUM ANALYZE ops.log_records")
    return time.monotonic() - t


def bare(dsn: str, out: Path) -> tuple[float, int]:
    sql = (f"COPY (SELECT row_to_json(r)::text FROM ops.log_security_{DAY:%Y%m%d} r ORDER BY at) TO STDOUT")
    t = time.monotonic()
    with open(out, "wb") as fh:
        psql = subprocess.Popen([str(embedded_bin_dir() / "psql"), dsn, "-X", "-q", "-c", sql],
                                stdout=subprocess.PIPE)
        zstd = subprocess.Popen(["zstd", "-3", "-q", "-c"], stdin=psql.stdout, stdout=fh)
        psql.stdout.close()
        zstd.wait()
        psql.wait()
    return time.monotonic() - t, out.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--workdir", default="/tmp/bvh-bench-logs-archive")
    args = ap.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pub, key = write_keypair(work / "keys")
    cluster = EmbeddedCluster(work / "pg")
    cluster.start()
    try:
        create_database(cluster.dsn(), "bench_logs")
        dsn = cluster.dsn("bench_logs")
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate(conn)
        fill_s = fill(dsn, args.records)
        with psycopg.connect(dsn, autocommit=True) as conn:
            table_bytes = conn.execute(f"SELECT pg_total_relation_size('ops.log_security_{DAY:%Y%m%d}')").fetchone()[0]
        results = {}
        for identity in (None, key):
            repo = work / ("repo-deep" if identity else "repo")
            repo.mkdir()
            settings = Settings(repository=f"file://{repo}", recipients=[pub], identity=identity,
                                state_dir=work / "state")
            with psycopg.connect(dsn, autocommit=True) as conn:
                t = time.monotonic()
                res = export_day(conn, settings, open_store(settings), "security", DAY, datetime.now(UTC))
                secs = time.monotonic() - t
            assert (repo / archive_key("security", DAY)).stat().st_size == res.stored_size
            results["deep" if identity else "shallow"] = {
                "seconds": round(secs, 2), "records_per_s": round(res.records / secs),
                "stored_bytes": res.stored_size, "bytes_per_record": round(res.stored_size / res.records, 1)}
        bare_s, bare_bytes = bare(dsn, work / "bare.jsonl.zst")
    finally:
        cluster.stop()
    n = args.records
    doc = {"machine": machine(), "records": n, "fill_seconds": round(fill_s, 1), "table_bytes": table_bytes,
           "export_verify_shallow": results["shallow"], "export_verify_deep": results["deep"],
           "bare_copy_zstd": {"seconds": round(bare_s, 2), "bytes": bare_bytes,
                              "bytes_per_record": round(bare_bytes / n, 1)},
           "ratio_time_shallow_vs_bare": round(results["shallow"]["seconds"] / bare_s, 2),
           "ratio_size_vs_bare": round(results["shallow"]["stored_bytes"] / bare_bytes, 3),
           "archive_mib_per_million": round(results["shallow"]["stored_bytes"] / n * 1e6 / 2**20, 1),
           "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    save_result("logs_archive", doc)


if __name__ == "__main__":
    main()
