"""An hour of probe cycles summarised (pure): worst status, share of cycles up, critical streaks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bvh_ops.monitoring.cycle import CycleResult
from bvh_ops.monitoring.hour import HourSummary
from bvh_ops.monitoring.results import Check, Status

O, W, U, C = Status.OK, Status.WARNING, Status.UNKNOWN, Status.CRITICAL  # noqa: E741 - table shorthand


def cycle(*api: Status) -> CycleResult:
    checks = [Check(f"api-{i}", "api", s, None, "", "") for i, s in enumerate(api)]
    checks.append(Check("db", "database", O, 1.0, "ms", ""))
    return CycleResult(status=max(api, key=lambda s: s.rank), checked_at=datetime.now(UTC), checks=checks,
                       wall_seconds=0.1, cpu_seconds=0.01, not_monitored=[])


@pytest.mark.parametrize("cycles, worst, up, streak, outage", [
    ([(O,), (O,), (O,)], O, 100.0, 0, False),
    ([(O,), (C,), (O,), (C,), (O,)], C, 60.0, 1, False),           # blips, no sustained outage
    ([(O,), (C,), (C,), (C,), (O,)], C, 40.0, 3, True),            # three in a row: an outage
    ([(O, C), (O, C), (W, C)], C, 0.0, 3, True),                   # one failing endpoint is the service
    ([(U,), (U,), (O,)], U, 100.0, 0, False),                      # unknown counts neither way
    ([(W,), (O,)], W, 100.0, 0, False),                            # warning is up
])
def test_hour_summary(cycles, worst, up, streak, outage):
    summary = HourSummary()
    for statuses in cycles:
        summary.add(cycle(*statuses), None)
    api = summary.services["api"]
    assert (api.worst, api.up_percent, api.longest_streak) == (worst, up, streak)
    assert (summary.outages() == ["api"]) is outage
    assert summary.services["database"].up_percent == 100.0


def test_history_problems_are_counted_and_the_last_kept():
    summary = HourSummary()
    summary.add(cycle(O), "ops database not running")
    summary.add(cycle(O), None)
    doc = summary.to_json()
    assert doc["cycles"] == 2 and doc["history_unavailable_cycles"] == 1
    assert doc["last_history_problem"] == "ops database not running"
