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


# -- the second part: index use, bloat trend, endpoint response times (issue #14) ---------------

from bvh_ops.maintenance.charts import BLOAT_TITLE, ENDPOINTS_TITLE, charts  # noqa: E402
from bvh_ops.maintenance.performance import (  # noqa: E402
    EndpointWeek,
    IndexUse,
    Limits,
    TableSize,
    bloat_trend,
    endpoint_times,
    index_usage,
    markdown,
)

MIB = 1 << 20


def ix(name, scans, size=8 * MIB, backs=False, table="public.t", oid=None, valid=True):
    return IndexUse(oid or sum(map(ord, name)), f"public.{name}", table, scans, size, backs, valid)


def test_an_index_no_query_used_this_week_is_a_drop_candidate():
    before = [ix("used", 100), ix("idle", 40), ix("pkey", 0, backs=True), ix("small", 0, size=MIB // 2),
              ix("reset", 500), ix("again", 9, oid=1), ix("broken", 0)]
    now = [ix("used", 180), ix("idle", 40), ix("pkey", 0, backs=True), ix("small", 0, size=MIB // 2),
           ix("reset", 3), ix("fresh", 0), ix("again", 0, oid=2), ix("broken", 0, valid=False)]
    got = index_usage(now, before, MIB)
    # idle: 40 scans long ago, none this week. Not: pkey (backs a constraint), small (under the
    # size), fresh (created during the week), again (dropped and created again under its name:
    # another OID), reset (its counter went down: reset on its own, no evidence), broken (invalid:
    # the maintenance plan rebuilds it)
    assert [r["index"] for r in got["unused"]] == ["public.idle"]
    assert [(r["index"], r["scans"]) for r in got["most_used"]] == [("public.used", 80), ("public.reset", 3)]
    # no snapshot a week back, or the target's statistics reset since it: nothing is judged
    assert index_usage(now, None, MIB)["unused"] == []
    assert index_usage(now, before, MIB, reset=True)["unused"] == []
    assert index_usage(now, None, MIB)["count"] == 8


def tbl(name, bloat, dead=0, size=1024 * MIB, source="statistics"):
    return TableSize(f"public.{name}", size, bloat, 1000, dead, source)


def test_bloat_that_grew_fast_is_flagged_and_the_largest_listed():
    before = [tbl("grows", 100 * MIB), tbl("steady", 900 * MIB), tbl("small_growth", 10 * MIB),
              tbl("was_unknown", None)]
    now = [tbl("grows", 300 * MIB, dead=50_000), tbl("steady", 950 * MIB), tbl("small_growth", 40 * MIB),
           tbl("was_unknown", 200 * MIB), tbl("unknown", None)]
    got = bloat_trend(now, before)
    # steady grew 50 MiB (< 64 MiB); small_growth tripled but by 30 MiB; was_unknown has no change
    assert [r["table"] for r in got["growing"]] == ["public.grows"]
    assert got["growing"][0]["bloat_change_bytes"] == 200 * MIB
    assert [r["table"] for r in got["largest"]] == ["public.steady", "public.grows", "public.was_unknown",
                                                     "public.small_growth"]
    assert bloat_trend(now, None)["growing"] == []
    # an estimate of another kind a week ago (pgstattuple then, statistics now) is no change
    other = bloat_trend(now, [tbl("grows", 100 * MIB, source="pgstattuple_approx")])
    assert other["growing"] == [] and other["largest"][1]["bloat_change_bytes"] is None
    # the bar is the settings': 25 MiB and half of what it was
    assert [r["table"] for r in bloat_trend(now, before, Limits(bloat_growth_bytes=25 * MIB))["growing"]] == [
        "public.grows", "public.small_growth"]


def ep(name, n, failed, p95, p50=10.0, p99=None):
    return EndpointWeek(name, "api", n, failed, 0, p50, p95, p99 if p99 is not None else p95)


def test_endpoint_weeks_compared_and_judged():
    week = [ep("api-health", 2000, 40, 450.0), ep("frontend", 2000, 0, 1500.0), ep("steady", 2000, 0, 100.0)]
    before = [ep("api-health", 2000, 2, 150.0), ep("steady", 2000, 0, 95.0)]
    rows = endpoint_times(week, before)
    assert [r["endpoint"] for r in rows] == ["frontend", "api-health", "steady"]  # slowest p95 first
    api = rows[1]
    assert (api["p95_change_percent"], api["failed_percent"], api["previous_failed_percent"]) == (200.0, 2.0, 0.1)
    assert rows[0]["p95_change_percent"] is None  # no week before to compare with
    recs = recommend(None, [], {"by_mean": []}, endpoints=rows, limits=Limits(response_time_ms=1000, failed_percent=1))
    text = [r["recommendation"] for r in recs]
    assert text == ["endpoint frontend is slow: p95 above 1000 ms over the week",
                    "endpoint api-health got slower: p95 +200% against the week before",
                    "endpoint api-health failed 2 % of its checks (above 1 %): see its incidents"]
    assert "40 of 2000 checks critical (0.1 % the week before)" == recs[2]["evidence"]
    assert "the week before p95 150.0 ms" in recs[1]["evidence"]


def test_an_endpoint_not_checked_this_week_and_one_always_failing_come_first():
    week = [ep("slow", 100, 0, 900.0), EndpointWeek("down", "api", 100, 100, 0, None, None, None)]
    rows = endpoint_times(week, [ep("slow", 100, 0, 100.0), ep("gone", 50, 0, 80.0)])
    assert [(r["endpoint"], r["samples"]) for r in rows] == [("down", 100), ("gone", 0), ("slow", 100)]
    recs = [r["recommendation"] for r in recommend(None, [], {"by_mean": []}, endpoints=rows)]
    assert recs == ["endpoint down failed 100 % of its checks (above 1 %): see its incidents",
                    "endpoint gone was not checked this week: is the monitor running, and the endpoint still "
                    "configured?",
                    "endpoint slow got slower: p95 +800% against the week before"]


def test_a_standby_gets_no_drop_or_autovacuum_advice():
    indexes = index_usage([ix("idle", 40)], [ix("idle", 40)], MIB)
    bloat = bloat_trend([tbl("grows", 300 * MIB)], [tbl("grows", 100 * MIB)])
    assert len(recommend(None, [], {"by_mean": []}, indexes=indexes, bloat=bloat)) == 2
    assert recommend(None, [], {"by_mean": []}, indexes=indexes, bloat=bloat, standby=True) == []


def test_names_from_the_target_cannot_shape_the_markdown_or_break_a_chart():
    from bvh_ops.maintenance.charts import label
    from bvh_ops.maintenance.performance import _md

    assert _md("a|b\nc ![x](http://e) `y` *z*") == "a\\|b c \\!\\[x\\](http://e) \\`y\\` \\*z\\*"
    doc = _doc(series={"p95_by_day": {"api $x": [["2030-03-01", 1.0]]},
                       "bloat_by_snapshot": {"public.t$_$": [["2030-03-03T03:00:00+00:00", MIB]],
                                             "_audit.log": [["2030-03-03T03:00:00+00:00", MIB]]}})
    assert set(charts(doc)) == {ENDPOINTS_TITLE, BLOAT_TITLE}  # a lone $ failed the whole chart
    assert label("_audit.log") != "_audit.log" and label("_audit.log").endswith("_audit.log")
    assert label("t$_$") == "t\\$_\\$"


def test_index_and_bloat_recommendations_carry_their_evidence():
    indexes = index_usage([ix("idle", 40)], [ix("idle", 40)], MIB)
    bloat = bloat_trend([tbl("grows", 300 * MIB, dead=50_000)], [tbl("grows", 100 * MIB)])
    recs = recommend(None, [], {"by_mean": []}, indexes=indexes, bloat=bloat, since="2030-03-03T03:00:00+00:00")
    assert recs[0]["recommendation"] == ("drop candidate: index public.idle on public.t was used by no query since "
                                         "2030-03-03T03:00:00+00:00")
    assert "8 MiB" in recs[0]["evidence"] and "backs no constraint or foreign key" in recs[0]["evidence"]
    assert recs[1]["recommendation"].startswith("autovacuum is falling behind on public.grows")
    assert "100 MiB -> 300 MiB" in recs[1]["evidence"] and "50000 dead tuples" in recs[1]["evidence"]


def _doc(**over):
    doc = {"target": "db", "at": "2030-03-10T03:00:00+00:00", "since": None, "notes": [], "recommendations": [],
           "cache_hit_ratio": 0.999, "top_queries": {"by_total": [], "by_mean": []}, "sequential_scans": [],
           "endpoints": endpoint_times([ep("api|health", 10, 1, 450.0)], []),
           "indexes": {**index_usage([ix("idle", 40)], [ix("idle", 40)], MIB), "since": "2030-03-03T03:00:00+00:00"},
           "bloat": {**bloat_trend([tbl("grows", 300 * MIB)], [tbl("grows", 100 * MIB)]), "since": None},
           "series": {"p95_by_day": {"api-health": [[f"2030-03-0{d}", 100.0 + d] for d in range(1, 8)]},
                      "bloat_by_snapshot": {"public.grows": [["2030-03-03T03:00:00+00:00", 100 * MIB],
                                                             ["2030-03-10T03:00:00+00:00", 300 * MIB]]}}}
    return {**doc, **over}


def test_markdown_has_every_section_and_embeds_the_charts():
    import base64
    import re

    pictures = charts(_doc(), 1000.0)
    assert set(pictures) == {ENDPOINTS_TITLE, BLOAT_TITLE}
    assert all(p.startswith(b"\x89PNG\r\n\x1a\n") and len(p) > 2000 for p in pictures.values())
    text = markdown(_doc(), pictures)
    for heading in ("## Endpoint response times, last 7 days", "## Index usage since 2030-03-03T03:00:00+00:00",
                    "## Table bloat (estimated)", f"### {ENDPOINTS_TITLE}", f"### {BLOAT_TITLE}"):
        assert heading in text
    assert "| api\\|health | api | 10 | 1 (10 %) |" in text  # a pipe in a name does not break the table
    assert "| public.idle | public.t | 8 MiB |" in text and "| public.grows | 1024 MiB | 300 MiB |" in text
    embedded = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)\)", text)
    assert [base64.b64decode(e) for e in embedded] == list(pictures.values())
    # nothing to draw: no chart, and the report still renders
    bare = _doc(series={"p95_by_day": {}, "bloat_by_snapshot": {}}, endpoints=[])
    assert charts(bare) == {} and "## Endpoint response times" not in markdown(bare)
