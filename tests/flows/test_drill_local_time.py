"""An append-only table whose commit-time column is `timestamp without time zone` (pgbench's
history.mtime) on a server whose TimeZone is not UTC: the logical drill passes with a small RPO,
and the physical drill's checks read the same instants on the source and the restored copy."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from bvh_ops.pg.catalog import create_database

pytestmark = pytest.mark.usefixtures("prefect_harness")

# Five and a half hours east of UTC, no daylight saving: read as UTC, its rows would lie in the
# future of every target.
ZONE = "Asia/Kolkata"
APPEND_ONLY = "public.pgbench_history:mtime"
INVARIANTS = [{"name": "no_negative_delta", "sql": "SELECT * FROM pgbench_history WHERE delta < 0"}]


@pytest.fixture(scope="module")
def local_time_db(pg) -> tuple[str, datetime]:
    """pgbench_history written by sessions in the database's own TimeZone, the newest row by
    now(); returns the DSN and the newest row's instant."""
    create_database(pg.dsn(), "drill_localtime")
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE drill_localtime SET TimeZone = '{ZONE}'")
    with psycopg.connect(pg.dsn("drill_localtime")) as conn:
        assert conn.execute("SHOW TimeZone").fetchone()[0] == ZONE
        conn.execute("CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, "
                     "filler char(22))")
        conn.execute("INSERT INTO pgbench_history SELECT g % 10, 1, g, g % 97, now() - g * interval '1 second' "
                     "FROM generate_series(1, 2000) g")
        conn.execute("INSERT INTO pgbench_history VALUES (1, 1, 0, 5, now())")
        newest = conn.execute("SELECT now()").fetchone()[0]
        conn.commit()
    create_database(pg.dsn(), "drill_localtime_ops")
    return pg.dsn("drill_localtime"), newest.astimezone(UTC)


def test_logical_drill_reads_a_timestamp_column_in_the_servers_time_zone(pg, local_time_db, env_settings,
                                                                        repo_dir):
    dsn, newest = local_time_db
    env_settings(dsn, f"file://{repo_dir}", BVH_OPS_OPS_DATABASE_URL=pg.dsn("drill_localtime_ops"),
                 BVH_OPS_APPEND_ONLY_TABLES=APPEND_ONLY, BVH_OPS_INVARIANTS=json.dumps(INVARIANTS),
                 BVH_OPS_DRILL_EARLY_CHECKS="off")  # every check after the restore (the other path)
    from bvh_ops.config import load_settings
    from bvh_ops.logical.backup import run_logical_backup
    from flows.dr_drill import dr_drill

    manifest = run_logical_backup(load_settings()).manifest
    report = dr_drill(backup=manifest.backup_id, mode="logical")
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert report["passed"], report["checks"]
    assert statuses["pitr_append_only"] == statuses["freshness"] == "passed"
    # RPO = the backup's start − the newest restored row: seconds (minutes on a loaded machine),
    # not 5.5 hours either way.
    expected = (datetime.fromisoformat(manifest.started_at) - newest).total_seconds()
    assert 0 <= expected < 3600
    assert report["rpo_seconds"] == pytest.approx(expected, abs=0.01)


@dataclass
class _Copy:
    """Stands in for a restored physical copy: the source database cloned on the same server."""

    dsn_: str
    bin_dir: str

    def dsn(self, source_dsn: str) -> str:
        return self.dsn_


def test_physical_checks_read_a_timestamp_column_in_the_servers_time_zone(pg, local_time_db, make_settings,
                                                                         repo_dir):
    dsn, newest = local_time_db
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS drill_localtime_copy")
        conn.execute("CREATE DATABASE drill_localtime_copy TEMPLATE drill_localtime")
    from bvh_ops.pg.tools import embedded_bin_dir
    from tasks.drill_tasks import physical_checks

    settings = make_settings(dsn, f"file://{repo_dir}", append_only_tables=[APPEND_ONLY], pitr_margin_seconds=0,
                             invariants=INVARIANTS)
    copy = _Copy(pg.dsn("drill_localtime_copy"), str(embedded_bin_dir()))
    disaster = datetime.now(UTC)

    # End of the archive: RPO = the source's newest commit before the drill − the restored one.
    results, restored_newest, source_newest = physical_checks.fn(settings, copy, None, disaster)
    assert {r.name: r.status.value for r in results} == {
        "pg_amcheck": "passed", "physical_pitr_append_only": "passed", "physical_invariant:no_negative_delta": "passed",
        "physical_freshness": "passed"}
    assert restored_newest == source_newest == newest

    # A time target just after the newest row: it is not "in the future" of the target.
    results, restored_newest, _ = physical_checks.fn(settings, copy, newest + timedelta(seconds=1), disaster)
    assert all(r.status.value == "passed" for r in results), results
    assert restored_newest == newest
