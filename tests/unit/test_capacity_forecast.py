"""Capacity forecasts on synthetic series with known answers (bvh_ops.capacity.forecast, pure)."""

from __future__ import annotations

import math
import random
from datetime import date, timedelta

import pytest

from bvh_ops.capacity.forecast import breaks, clean, crossing, forecast, mape, score, status

D0 = date(2026, 1, 1)


def series(f, n=60, skip=()):
    return [(D0 + timedelta(days=i), float(f(i))) for i in range(n) if i not in skip]


def last_day(points):
    return points[-1][0]


def test_linear_growth_days_until_is_exact():
    pts = series(lambda i: 100 + 2 * i)  # 218 on the last day, +2/day: 300 in 41 days
    fc = forecast("disk", pts, last_day(pts), limit=300)
    assert fc.predictable and fc.model == "linear"
    assert fc.days_until.expected == pytest.approx(41, abs=0.01)
    assert fc.days_until.low <= fc.days_until.expected <= fc.days_until.high
    assert fc.growth_per_day == pytest.approx(2)
    assert status(fc, 300) == "ok"


def test_days_until_counts_from_today_not_from_the_last_sample():
    pts = series(lambda i: 100 + 2 * i)
    fc = forecast("disk", pts, last_day(pts) + timedelta(days=5), limit=300)
    assert fc.days_until.expected == pytest.approx(36, abs=0.01)


@pytest.mark.parametrize("limit, expected_status", [(230, "critical"), (240, "warning"), (260, "warning"), (400, "ok"), (210, "critical")])
def test_status_by_days_until(limit, expected_status):
    pts = series(lambda i: 100 + 2 * i)
    assert status(forecast("disk", pts, last_day(pts), limit=limit), limit) == expected_status


def test_weekly_seasonality_holt_winters_wins_the_backtest():
    pts = series(lambda i: 1000 + 5 * i + 100 * math.sin(2 * math.pi * i / 7), n=56)
    fc = forecast("tickets", pts, last_day(pts), limit=2000)
    assert fc.predictable
    assert fc.model == "holt-winters-seasonal"
    assert any("linear" in n for n in fc.notes)  # the comparison is shown
    # (2000 - ~1275) / 5 per day, within a week's swing of the season
    assert 125 <= fc.days_until.expected <= 160


def test_noise_without_trend_reaches_no_limit():
    rnd = random.Random(1)
    pts = series(lambda i: 50 + rnd.gauss(0, 3))
    fc = forecast("cpu", pts, last_day(pts), limit=100)
    assert fc.predictable and fc.model == "flat"
    assert fc.days_until is None
    assert "no significant trend" in fc.reason
    assert status(fc, 100) == "ok"


def test_noise_whose_upper_bound_touches_the_limit_is_not_ok():
    rnd = random.Random(2)
    pts = series(lambda i: 90 + rnd.gauss(0, 4))
    fc = forecast("cpu", pts, last_day(pts), limit=95)
    assert fc.days_until.low == 0 and fc.days_until.expected is None
    assert status(fc, 95) == "critical"


def test_step_change_uses_the_segment_after_it():
    pts = series(lambda i: 100 + i + (500 if i >= 30 else 0))
    fc = forecast("db", pts, last_day(pts), limit=1000)
    assert fc.used_from == D0 + timedelta(days=30)
    assert any(n.startswith("step change on 2026-01-31") for n in fc.notes)
    assert fc.days_until.expected == pytest.approx(341, abs=0.01)


def test_step_change_too_recent_is_unpredictable():
    pts = series(lambda i: 100 + i + (500 if i >= 57 else 0))
    fc = forecast("db", pts, last_day(pts), limit=1000)
    assert not fc.predictable and "step change" in fc.reason and "at least 7" in fc.reason
    assert status(fc, 1000) == "unpredictable"


def test_counter_reset_uses_the_segment_after_it_and_says_so():
    pts = series(lambda i: 1000 + 50 * i if i < 40 else 50 * (i - 40) + 10)
    fc = forecast("rows:tickets", pts, last_day(pts), limit=5000)
    assert any(n.startswith("reset on 2026-02-10") for n in fc.notes)
    assert fc.current == 960
    assert fc.days_until.expected == pytest.approx((5000 - 960) / 50, abs=0.01)


def test_gaps_do_not_bend_the_line():
    pts = series(lambda i: 100 + 2 * i, skip=set(range(10, 20)) | {33, 47})
    fc = forecast("disk", pts, last_day(pts), limit=300)
    assert fc.days_until.expected == pytest.approx(41, abs=0.01)
    assert any("12 missing day(s)" in n for n in fc.notes)


@pytest.mark.parametrize("n", [0, 1, 3, 6])
def test_too_short_is_unpredictable(n):
    pts = series(lambda i: 10 * i, n=n)
    fc = forecast("x", pts, D0 + timedelta(days=10), limit=100)
    assert not fc.predictable and fc.reason.startswith("too little history")
    assert fc.days_until is None and status(fc, 100) == "unpredictable"


def test_constant_is_unpredictable_without_dividing_by_zero():
    pts = series(lambda i: 5)
    fc = forecast("x", pts, last_day(pts), limit=10)
    assert not fc.predictable and fc.reason.startswith("constant at 5")
    assert fc.growth_per_day == 0 and fc.days_until is None


def test_shrinking_is_unpredictable_never_a_confident_never():
    pts = series(lambda i: 1000 - 3 * i)
    fc = forecast("x", pts, last_day(pts), limit=2000)
    assert not fc.predictable and fc.reason.startswith("shrinking")
    assert "not a promise" in fc.reason and fc.days_until is None
    assert fc.growth_per_month < 0


def test_poor_linear_fit_is_unpredictable():
    rnd = random.Random(1)
    pts = series(lambda i: 30 + i + rnd.gauss(0, 15))
    fc = forecast("x", pts, last_day(pts), limit=500)
    assert not fc.predictable and fc.reason.startswith("poor fit")
    assert fc.r2 < 0.7


def test_at_the_limit_is_critical_whatever_the_history():
    pts = series(lambda i: 5, n=2) + [(D0 + timedelta(days=2), 12.0)]
    fc = forecast("x", pts, D0 + timedelta(days=2), limit=10)
    assert fc.days_until.expected == 0 and status(fc, 10) == "critical"


def test_no_limit_is_a_trend_only():
    pts = series(lambda i: 100 + 2 * i)
    fc = forecast("x", pts, last_day(pts), limit=None)
    assert fc.predictable and fc.days_until is None and "trend only" in fc.reason


def test_limit_beyond_the_horizon_is_not_never():
    pts = series(lambda i: 100 + 2 * i)
    fc = forecast("x", pts, last_day(pts), limit=10_000, horizon_days=365)
    assert fc.days_until is None and "not reached within 365 days" in fc.reason
    assert len(fc.path) == 365


def test_clean_drops_non_finite_and_duplicates():
    pts = [(D0, 1.0), (D0, 2.0), (D0 + timedelta(days=1), float("nan")), (D0 - timedelta(days=1), 0.5)]
    assert clean(pts) == [(D0 - timedelta(days=1), 0.5), (D0, 2.0)]


@pytest.mark.parametrize("values, kinds", [
    ([10, 11, 12, 13, 1, 2, 3], ["reset"]),
    ([10, 11, 12, 13, 100, 101], ["step change"]),
    ([10, 11, 12, 13, 14], []),
    ([50, 48, 53, 47, 52, 49], []),
    ([10, 11, 12, 13, 113, 213, 313, 413], []),  # the growth rate changed: no step
])
def test_breaks(values, kinds):
    pts = [(D0 + timedelta(days=i), float(v)) for i, v in enumerate(values)]
    assert [n.split(" on ")[0] for _, n in breaks(pts)] == kinds


@pytest.mark.parametrize("path, limit, expected", [
    ([0, 1, 2, 3], 2.5, 2.5), ([0, 1, 2], 5, None), ([3, 4], 3, 0.0), ([0, 10], 5, 0.5),
])
def test_crossing(path, limit, expected):
    assert crossing(path, limit) == expected


def test_mape_skips_zero_actuals():
    assert mape([0, 100, 200], [5, 110, 180]) == pytest.approx(10.0)
    assert mape([0], [1]) is None


def test_score_uses_the_run_made_a_month_earlier():
    today = D0 + timedelta(days=61)
    made = [(D0 + timedelta(days=30), D0 + timedelta(days=30 + h), 100.0) for h in range(1, 60)]
    made += [(D0, D0 + timedelta(days=h), 1.0) for h in range(1, 60)]  # made two months ago: not this score
    actual = {D0 + timedelta(days=i): 110.0 for i in range(62)}
    assert score(made, actual, today, 1) == pytest.approx(100 * 10 / 110)
    assert score(made, actual, today, 3) is None
