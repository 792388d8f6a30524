"""RTO/RPO arithmetic of a drill (bvh_ops.drill.objectives): measured times against the runbook's
objectives, a value that could not be measured never reported as passing, and the trend line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bvh_ops.drill.objectives import Objectives, objective_checks, rpo_seconds, rto_seconds, trend_line
from bvh_ops.results import CheckStatus

T0 = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize("started, ready, seconds", [
    (T0, T0 + timedelta(seconds=41.5), 41.5),
    (T0, T0 + timedelta(minutes=15), 900.0),
    (T0, T0, 0.0),
    (T0, T0 - timedelta(seconds=3), 0.0),  # clocks stepped back: never a negative RTO
])
def test_rto_seconds(started, ready, seconds):
    assert rto_seconds(started, ready) == seconds


@pytest.mark.parametrize("target, newest_commit, seconds", [
    (T0, T0 - timedelta(seconds=12.25), 12.25),
    (T0, T0, 0.0),
    (T0, T0 + timedelta(seconds=2), 0.0),  # a commit "after" the target (clock skew): no loss, not negative
    (T0, None, None),  # nothing restored to compare: cannot be measured
])
def test_rpo_seconds(target, newest_commit, seconds):
    assert rpo_seconds(target, newest_commit) == seconds


PASSED, FAILED, NOT_VERIFIED = CheckStatus.PASSED, CheckStatus.FAILED, CheckStatus.NOT_VERIFIED


@pytest.mark.parametrize("rto, rpo, objectives, expected", [
    (41.0, 12.0, Objectives(), [(PASSED, "41.0 s ≤ 900 s"), (PASSED, "12.0 s ≤ 300 s")]),
    (900.0, 300.0, Objectives(), [(PASSED, "900.0 s ≤ 900 s"), (PASSED, "300.0 s ≤ 300 s")]),  # at the limit
    (900.04, 300.5, Objectives(), [(FAILED, "900.0 s > objective 900 s"), (FAILED, "300.5 s > objective 300 s")]),
    (None, 12.0, Objectives(), [(NOT_VERIFIED, "could not be measured"), (PASSED, "12.0 s ≤ 300 s")]),
    (41.0, None, Objectives(), [(PASSED, "41.0 s ≤ 900 s"), (NOT_VERIFIED, "could not be measured")]),
    (0.0, 0.0, Objectives(), [(PASSED, "0.0 s ≤ 900 s"), (PASSED, "0.0 s ≤ 300 s")]),
    (61.0, 5.0, Objectives(rto_seconds=60, rpo_seconds=1), [(FAILED, "61.0 s > objective 60 s"),
                                                            (FAILED, "5.0 s > objective 1 s")]),
])
def test_objective_checks(rto, rpo, objectives, expected):
    checks = objective_checks(rto, rpo, objectives)
    assert [c.name for c in checks] == ["rto_objective", "rpo_objective"]
    assert [(c.status, c.detail) for c in checks] == expected
    assert [c.passed for c in checks] == [s is PASSED for s, _ in expected]


def test_the_runbook_objectives_are_the_defaults():
    assert Objectives() == Objectives(rto_seconds=900.0, rpo_seconds=300.0)


@pytest.mark.parametrize("previous, line", [
    ([], "no earlier drills"),
    ([(41.0, 12.0)], "RTO 41.0 s; RPO 12.0 s"),
    ([(41.0, 12.0), (39.25, None), (None, 3.0)], "RTO 41.0 → 39.2 → – s; RPO 12.0 → – → 3.0 s"),
])
def test_trend_line(previous, line):
    assert trend_line(previous) == line
