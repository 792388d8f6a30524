"""The performance report's pure parts: a week's figures from cumulative pg_stat_statements
snapshots (resets handled), and recommendations carrying their evidence."""

from __future__ import annotations

import pytest

from bvh_ops.maintenance.performance import Statement, compare, recommend


def st(qid, calls, total, query="SELECT 1"):
    return Statement(qid, query, calls, total, calls)


@pytest.mark.parametrize("current, previous, expected", [
    # no earlier snapshot: the cumulative figures
    ([st(1, 10, 100.0)], None, [(1, 10, 100.0, 10.0, None)]),
    # a week's work is the difference; the mean's change against the mean before
    ([st(1, 30, 500.0)], [st(1, 10, 100.0)], [(1, 20, 400.0, 20.0, 100.0)]),
    # counters went down: the statistics were reset, the current values are the period's
    ([st(1, 5, 50.0)], [st(1, 10, 100.0)], [(1, 5, 50.0, 10.0, 0.0)]),
    # not called since: left out
    ([st(1, 10, 100.0)], [st(1, 10, 100.0)], []),
])
def test_compare(current, previous, expected):
    got = compare(current, previous)["by_total"]
    assert [(r["queryid"], r["calls"], r["total_ms"], r["mean_ms"], r["mean_change_percent"]) for r in got] == expected


def test_top_by_total_and_by_mean_differ():
    top = compare([st(1, 1000, 1000.0), st(2, 2, 500.0)], None)
    assert [r["queryid"] for r in top["by_total"]] == [1, 2]
    assert [r["queryid"] for r in top["by_mean"]] == [2, 1]


def test_recommendations_carry_their_evidence():
    top = {"by_mean": [{"queryid": 7, "mean_ms": 30.0, "mean_change_percent": 80.0}], "by_total": []}
    recs = recommend(0.95, [{"table": "public.tickets", "seq_scan": 40, "seq_tup_read": 9_000_000, "idx_scan": 0,
                             "bytes": 50 << 20}], top)
    assert [r["recommendation"].split(":")[0] for r in recs] == [
        "review shared_buffers / the working set", "index candidate", "query 7 got slower"]
    assert "0.9500" in recs[0]["evidence"] and "40 sequential scans" in recs[1]["evidence"]
    assert recommend(0.999, [], {"by_mean": []}) == []
