"""The drill's domain invariants: each configured query must return no rows on the restored copy."""

from __future__ import annotations

import os

from bvh_ops.results import CheckStatus


def test_invariants_run_without_parallel_workers_where_the_checks_fill_the_cores(fresh_db):
    """On a host with no more cores than the checks' concurrent scans the invariants' sessions
    take no parallel workers (their overhead only); elsewhere the server's own setting stands.
    The invariant below sees its session's setting: it fails where workers are allowed."""
    from bvh_ops.config import InvariantCheck
    from checks.drill_suite import CHECK_SCANS, check_invariants, parallel_checks

    dsn = fresh_db()
    probe = [InvariantCheck(name="workers", sql="SELECT 1 WHERE current_setting('max_parallel_workers_per_gather') <> '0'")]
    assert [r.status for r in check_invariants(dsn, probe, parallel_workers=False)] == [CheckStatus.PASSED]
    assert [r.status for r in check_invariants(dsn, probe)] == [CheckStatus.FAILED]
    assert parallel_checks() == ((os.cpu_count() or 1) > CHECK_SCANS)
