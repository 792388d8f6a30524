"""The dashboard's pure parts: svg_line_chart (table-driven), bucket_stats (table-driven), svg_lines_chart, MemoryHistory, uptime, check_bind."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

import pytest

from bvh_ops.errors import ConfigError
from bvh_ops.monitoring.charts import bucket_stats, percentile, svg_line_chart, svg_lines_chart
from bvh_ops.monitoring.cycle import CycleResult
from bvh_ops.monitoring.history import MemoryHistory
from bvh_ops.monitoring.results import Check, Status, overall
from bvh_ops.monitoring.web import check_bind, uptime

# width 100, height 60: the plot is x 44..92, y 18 (top) .. 42 (zero).
W, H = 100, 60


def _polyline(svg: str) -> str | None:
    m = re.search(r'<polyline [^>]*points="([^"]*)"', svg)
    return m.group(1) if m else None


@pytest.mark.parametrize("points, kw, polyline", [
    ([(0, 0), (10, 10)], {}, "44,42 92,20.2"),                        # y axis ends 10 % above the top
    ([(10, 10), (0, 0)], {}, "44,42 92,20.2"),                        # sorted by x
    ([(0, 50), (5, 100), (10, 150)], {"y_max": 100}, "44,30 68,18 92,18"),  # fixed axis, clipped
    ([(0, 0), (1, 0)], {}, "44,42 92,42"),                            # all zero: axis 0..1
    ([(0, math.nan), (0, 1), (1, 1)], {}, "44,20.2 92,20.2"),         # non-finite dropped
    ([(5, 1), (10, 1)], {"x_range": (0, 10)}, "68,20.2 92,20.2"),     # the window, not the points' span
])
def test_line(points, kw, polyline):
    svg = svg_line_chart(points, W, H, **kw)
    assert svg.startswith("<svg ") and svg.endswith("</svg>")
    assert f'width="{W}" height="{H}"' in svg
    assert _polyline(svg) == polyline


@pytest.mark.parametrize("points, kw, expect", [
    ([], {}, "no data"),
    ([(0, math.inf)], {}, "no data"),
    ([(10, 5)], {"x_range": (0, 20)}, '<circle cx="68" cy="20.2"'),   # one point: a dot
    ([(3, 5)], {}, '<circle cx="68" cy="20.2"'),                      # one point, no span: centred
])
def test_no_line(points, kw, expect):
    svg = svg_line_chart(points, W, H, **kw)
    assert _polyline(svg) is None and expect in svg


def test_title_and_unit_are_escaped():
    svg = svg_line_chart([(0, 1), (1, 2)], W, H, title="<b>api</b>", unit="ms")
    assert "<b>" not in svg and "&lt;b&gt;api&lt;/b&gt; (ms)" in svg and "last 2 ms" in svg


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _cycle(i: int, api: Status, cpu: float | None) -> CycleResult:
    checks = [Check("api-health", "api", api, 10.0 + i, "ms"), Check("host.cpu", "host", Status.OK, cpu, "%")]
    return CycleResult(overall(checks), T0 + timedelta(seconds=10 * i), checks, 0.1, 0.01, [])


def test_memory_history_series_window_and_bound():
    h = MemoryHistory(maxlen=3)
    for i, (s, cpu) in enumerate([(Status.OK, 1.0), (Status.CRITICAL, None), (Status.OK, 3.0), (Status.OK, 4.0)]):
        h.add(_cycle(i, s, cpu))
    assert len(h.cycles) == 3  # bounded: the oldest went
    end = T0 + timedelta(hours=1)
    assert [v for _, v in h.series("host.cpu", T0, end)] == [3.0, 4.0]  # None values are no points
    assert [v for _, v in h.series("api-health", T0 + timedelta(seconds=20), end)] == [12.0, 13.0]
    assert h.series("nothing", T0, end) == []


def test_memory_history_uptime():
    h = MemoryHistory(maxlen=10)
    for i, s in enumerate([Status.OK, Status.CRITICAL, Status.UNKNOWN, Status.WARNING]):
        h.add(_cycle(i, s, 1.0))
    end = T0 + timedelta(hours=1)
    assert h.uptime("api", T0, end) == pytest.approx(66.667)  # unknown counts neither way
    assert h.uptime("database", T0, end) is None               # no samples: no figure


def test_uptime_without_history_is_unavailable_and_a_failing_history_is_reported():
    out = uptime(None, ["api"], T0)
    assert out["api"]["available"] is False and out["api"]["24h"] is None and out["api"]["reason"]

    class Down:
        def series(self, *a):
            raise OSError("connection refused")

        def uptime(self, *a):
            raise OSError("connection refused")

    out = uptime(Down(), ["api"], T0)
    assert out["api"]["available"] is False and "connection refused" in out["api"]["reason"]
    h = MemoryHistory(5)
    h.add(_cycle(0, Status.OK, 1.0))
    assert uptime(h, ["api"], T0 + timedelta(minutes=1))["api"]["24h"] == 100.0


@pytest.mark.parametrize("host, token, ok", [
    ("127.0.0.1", None, True), ("::1", None, True), ("localhost", None, True),
    ("0.0.0.0", None, False), ("10.0.0.5", "", False), ("0.0.0.0", "s3cret", True),
])
def test_check_bind(host, token, ok):
    if ok:
        check_bind(host, token)
    else:
        with pytest.raises(ConfigError, match="requires a token"):
            check_bind(host, token)


# -- bucket_stats and several named series ---------------------------------------------------------

@pytest.mark.parametrize("points, bucket, expect", [
    ([], 10, []),
    ([(3, 5.0)], 10, [(0, 5.0, 5.0, 5.0)]),                                   # one value: all three
    ([(0, 1), (9.9, 3), (10, 10)], 10, [(0, 2.0, 2.9, 2.98), (10, 10.0, 10.0, 10.0)]),  # aligned buckets
    ([(25, 4), (21, 2)], 10, [(20, 3.0, 3.9, 3.98)]),                         # unsorted input
    ([(0, math.nan), (1, 2), (math.inf, 1)], 10, [(0, 2.0, 2.0, 2.0)]),       # non-finite dropped
    ([(i, float(i)) for i in range(1, 101)], 1000, [(0, 50.5, 95.05, 99.01)]),  # as percentile_cont
    ([(0, 1), (50, 2), (120, 3)], 60, [(0, 1.5, 1.95, 1.99), (120, 3.0, 3.0, 3.0)]),  # gap: no empty bucket
])
def test_bucket_stats(points, bucket, expect):
    got = bucket_stats(points, bucket)
    assert len(got) == len(expect)
    for row, want in zip(got, expect, strict=True):
        assert row == pytest.approx(want)


def test_bucket_stats_needs_a_positive_bucket():
    with pytest.raises(ValueError):
        bucket_stats([(0, 1)], 0)


def test_percentile_ends():
    assert percentile([3, 1, 2], 0) == 1 and percentile([3, 1, 2], 1) == 3 and percentile([3, 1, 2], 0.5) == 2


def _polylines(svg: str) -> list[tuple[str, str]]:
    return re.findall(r'<polyline [^>]*stroke="([^"]*)"[^>]*points="([^"]*)"', svg)


def test_several_series_share_one_axis():
    svg = svg_lines_chart([("avg", [(0, 0), (10, 5)]), ("p95", [(0, 0), (10, 10)]), ("p99", [])], W, H, unit="ms")
    lines = _polylines(svg)
    assert [pts for _, pts in lines] == ["44,42 92,31.1", "44,42 92,20.2"]  # axis fits the largest series
    assert len({color for color, _ in lines}) == 2
    assert ">avg 5<" in svg and ">p95 10<" in svg and ">p99 –<" in svg and svg.endswith("</svg>")


def test_one_unnamed_series_is_the_single_line_chart():
    pts = [(0, 1), (5, 3), (10, 2)]
    assert svg_lines_chart([("", pts)], W, H, title="t", unit="ms") == svg_line_chart(pts, W, H, title="t", unit="ms")


def test_series_names_are_escaped_and_empty_series_say_no_data():
    svg = svg_lines_chart([("<i>x</i>", [(0, 1), (1, 2)])], W, H)
    assert "<i>" not in svg and "&lt;i&gt;x&lt;/i&gt;" in svg
    assert "no data" in svg_lines_chart([("a", []), ("b", [(0, math.nan)])], W, H)


def test_one_point_series_is_a_dot_in_its_colour():
    svg = svg_lines_chart([("a", [(0, 1), (1, 1)]), ("b", [(0.5, 1)])], W, H)
    assert len(_polylines(svg)) == 1 and '<circle cx="68"' in svg
