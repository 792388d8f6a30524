"""The physical drill's pg_amcheck check (checks.physical_drill_suite.check_amcheck) on a real
cluster: a sound cluster passes with one job and with two, and a damaged B-tree page fails it
with two jobs (the drill runs restore_jobs of them) as with one."""

from __future__ import annotations

import psycopg
import pytest

from bvh_ops.pg.cluster import EmbeddedCluster
from bvh_ops.results import CheckStatus
from checks.physical_drill_suite import check_amcheck


def _cluster(root) -> EmbeddedCluster:
    c = EmbeddedCluster(root / "cluster")
    c.start()
    with psycopg.connect(c.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO t SELECT k, repeat('v', 50) FROM generate_series(1, 20000) k")
        conn.execute("CREATE TABLE u AS SELECT k FROM generate_series(1, 1000) k")
        conn.execute("CHECKPOINT")
    return c


@pytest.fixture
def cluster(tmp_path):
    c = _cluster(tmp_path)
    yield c
    c.destroy()


@pytest.fixture(scope="module")
def sound(tmp_path_factory):
    """One sound cluster for the checks that only read it (the first also installs amcheck)."""
    c = _cluster(tmp_path_factory.mktemp("amcheck-sound"))
    yield c
    c.destroy()


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """One cluster with a damaged B-tree leaf page, checked with one job and with two."""
    c = _cluster(tmp_path_factory.mktemp("amcheck-damaged"))
    with psycopg.connect(c.dsn()) as conn:
        path = conn.execute("SELECT pg_relation_filepath('t_pkey')").fetchone()[0]
    c.stop()
    with open(c.data / path, "r+b") as fh:  # the middle of block 2: a leaf page's tuples
        fh.seek(2 * 8192 + 4000)
        fh.write(b"\xde\xad\xbe\xef" * 64)
    c.start()
    yield c
    c.destroy()


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_sound_cluster_passes(sound, jobs):
    result = check_amcheck(sound.dsn(), str(sound.bin_dir), jobs=jobs)
    assert result.status is CheckStatus.PASSED, result.detail


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_damaged_index_page_fails(damaged, jobs):
    result = check_amcheck(damaged.dsn(), str(damaged.bin_dir), jobs=jobs)
    assert result.status is CheckStatus.FAILED, result.detail
    assert result.detail.startswith("corruption found") and "t_pkey" in result.detail, result.detail


# What pg_amcheck 18 wrote (and its exit status) when a slot's connection ended with a FATAL after
# another slot had reported a damaged index (pg_terminate_backend of the slot checking a large
# table; a backend crash ends every slot the same way): the report is on stdout, the exit status
# is 1, and stderr is empty (or, when it then tries to reconnect, says the server is unavailable).
STOPPED_REPORT = """btree index "postgres.public.t_pkey":
    ERROR:  invalid page in block 2 of relation "base/5/16390"
heap table "postgres.public.big":
    FATAL:  terminating connection due to administrator command
"""


@pytest.mark.parametrize("stderr", ["", "pg_amcheck: error: connection to server at \"127.0.0.1\", port 5 failed: "
                                        "server closed the connection unexpectedly"])
def test_a_report_then_an_early_stop_fails_naming_the_corruption(tmp_path, stderr):
    fake = tmp_path / "pg_amcheck"
    (tmp_path / "report").write_text(STOPPED_REPORT)
    (tmp_path / "stderr").write_text(stderr)
    fake.write_text(f"#!/bin/sh\ncat '{tmp_path}/report'\ncat '{tmp_path}/stderr' >&2\nexit 1\n")
    fake.chmod(0o755)
    result = check_amcheck("postgresql://u:pw-SECRET@127.0.0.1:5/db", str(tmp_path), jobs=2)
    assert result.status is CheckStatus.FAILED, result.detail
    assert "t_pkey" in result.detail and "invalid page in block 2" in result.detail, result.detail
    assert "pw-SECRET" not in result.detail


def test_more_jobs_than_free_connections_still_checks(sound):
    """restore_jobs goes up to 64 and the restored cluster keeps the source's max_connections
    (here 40): pg_amcheck opened one connection per job (the catalogs alone are more relations
    than that) and a sound cluster failed with 'sorry, too many clients already'."""
    result = check_amcheck(sound.dsn(), str(sound.bin_dir), jobs=64)
    assert result.status is CheckStatus.PASSED, result.detail


def test_a_role_that_may_not_install_amcheck_is_not_verified_not_corruption(cluster):
    """Nothing reported and a tool error (here: the role may not create the amcheck extension) is
    a check that could not run, not corruption found: a failed check raises the drill's critical
    'data corruption detected' alert."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE checker LOGIN PASSWORD 'checker-pw'")
    dsn = f"postgresql://checker:checker-pw@127.0.0.1:{cluster.port}/postgres"
    result = check_amcheck(dsn, str(cluster.bin_dir), jobs=2)
    assert result.status is CheckStatus.NOT_VERIFIED, result.detail
    assert "permission denied" in result.detail and "checker-pw" not in result.detail, result.detail


def test_a_huge_report_is_counted_not_held_in_memory(tmp_path):
    """A badly damaged cluster: pg_amcheck reports a line per bad page. The check fails naming
    the first problems and how many lines there were, and never holds the report in memory."""
    import tracemalloc

    lines = 200_000
    fake = tmp_path / "pg_amcheck"
    fake.write_text(f"#!/bin/sh\nfor i in $(seq 1 {lines}); do echo \"heap table \\\"postgres.public.t\\\", block $i: "
                    "line pointer to page offset out of bounds, padding padding padding padding padding\"; done\n"
                    "exit 2\n")
    fake.chmod(0o755)
    tracemalloc.start()
    try:
        result = check_amcheck("postgresql://u:pw@127.0.0.1:5/db", str(tmp_path), jobs=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.status is CheckStatus.FAILED, result.detail
    assert f"({lines} lines of report)" in result.detail and "block 1:" in result.detail
    assert len(result.detail) < 3000
    assert peak < 4 << 20, f"{peak / 2**20:.1f} MiB held for a {lines}-line report"


def test_a_pg_amcheck_that_never_ends_is_stopped_and_not_verified(tmp_path, monkeypatch):
    import psutil

    from checks import physical_drill_suite

    monkeypatch.setattr(physical_drill_suite, "AMCHECK_TIMEOUT", 1)
    fake = tmp_path / "pg_amcheck"
    fake.write_text("#!/bin/sh\nexec sleep 60\n")
    fake.chmod(0o755)
    result = check_amcheck("postgresql://u:pw@127.0.0.1:5/db", str(tmp_path), jobs=1)
    assert result.status is CheckStatus.NOT_VERIFIED and "could not run" in result.detail, result.detail
    assert not [p for p in psutil.Process().children(recursive=True) if "sleep" in p.name()]
