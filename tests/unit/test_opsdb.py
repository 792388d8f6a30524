"""The ops database's pure parts: the migration planner, raw-sample retention, the monitor loop's
timing and its indifference to a missing history."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime

import pytest

from bvh_ops.errors import DatabaseError
from bvh_ops.monitoring.cycle import CycleResult
from bvh_ops.monitoring.loop import run_monitor
from bvh_ops.monitoring.results import Check, Status
from bvh_ops.monitoring.store import plan_retention
from bvh_ops.opsdb.migrations import LATEST, MIGRATIONS, Migration, check_order, plan

NOW = datetime(2026, 11, 28, 10, 30, tzinfo=UTC)


def test_migrations_are_numbered_in_order_and_described():
    check_order(MIGRATIONS)
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST + 1))


@pytest.mark.parametrize("applied, todo", [
    ([], [1, 2, 3, 4, 5, 6, 7, 8]),
    ([1], [2, 3, 4, 5, 6, 7, 8]),
    ([1, 3], [2, 4, 5, 6, 7, 8]),
    ([1, 2, 3, 4, 5, 6, 7], [8]),  # a database from before the performance snapshots
    ([1, 2, 3, 4, 5, 6, 7, 8], []),
    ([8, 7, 6, 5, 4, 3, 2, 1], []),
])
def test_plan_applies_only_the_missing_in_order(applied, todo):
    assert [m.version for m in plan(applied)] == todo


def test_planning_twice_after_applying_is_a_no_op():
    first = plan([])
    assert plan([m.version for m in first]) == []


def test_a_database_from_a_newer_bvh_ops_is_refused():
    with pytest.raises(DatabaseError, match="upgrade bvh-ops"):
        plan(list(range(1, LATEST + 2)))


@pytest.mark.parametrize("versions", [[2, 1], [1, 1], [1, 3], [0, 1]])
def test_misnumbered_migrations_are_a_bug(versions):
    with pytest.raises(ValueError):
        check_order([Migration(v, "x", "SELECT 1") for v in versions])


@pytest.mark.parametrize("days_old, dropped", [
    (0, False), (1, False), (89, False),
    (90, False),     # its day ended 89.56 days ago: samples younger than 90 days are still in it
    (91, True),      # ended 90.56 days ago: every sample in it is older than 90 days
    (400, True),
])
def test_retention_drops_only_whole_days_older_than_90_days(days_old, dropped):
    day = date.fromordinal(NOW.date().toordinal() - days_old)
    assert plan_retention([day], NOW) == ([day] if dropped else [])


def test_retention_with_other_keep_days_and_no_partitions():
    days = [date(2026, 11, d) for d in range(20, 29)]
    assert plan_retention(days, NOW, keep_days=3) == [date(2026, 11, d) for d in range(20, 25)]
    assert plan_retention([], NOW) == []


def _cycle() -> CycleResult:
    return CycleResult(Status.OK, NOW, [Check("api", "api", Status.OK, 12.0, "ms")], 0.01, 0.01, [])


class _Clock:
    def __init__(self):
        self.t = 0.0
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.t += seconds
        return False


class _NoHistory:
    maintenance: list[str] = []

    def record(self, cycle, now):
        return "ops database not running"

    def close(self):
        pass


def test_loop_keeps_its_interval_and_reports_a_missing_history_without_crashing():
    clock, reports = _Clock(), []

    def cycle():
        clock.t += 2.0  # a cycle takes 2 s: the wait is the rest of the interval
        return _cycle()

    done = run_monitor(cycle, _NoHistory(), interval=30, cycles=3, stop=threading.Event(),
                       report=lambda r, p: reports.append(p), wait=clock.wait, monotonic=clock.monotonic)
    assert done == 3
    assert clock.waits == [28.0, 28.0]
    assert reports == ["ops database not running"] * 3


def test_an_overrunning_cycle_is_followed_at_once_without_a_burst():
    clock = _Clock()

    def cycle():
        clock.t += 45.0
        return _cycle()

    run_monitor(cycle, _NoHistory(), interval=30, cycles=3, stop=threading.Event(), report=lambda r, p: None,
                wait=clock.wait, monotonic=clock.monotonic)
    assert clock.waits == [0.0, 0.0]


def test_stop_ends_the_loop_after_the_current_cycle():
    stop, clock, ran = threading.Event(), _Clock(), []

    def cycle():
        ran.append(1)
        stop.set()  # SIGTERM arrives during the cycle
        return _cycle()

    done = run_monitor(cycle, _NoHistory(), interval=30, cycles=None, stop=stop, report=lambda r, p: None,
                       wait=lambda s: stop.is_set(), monotonic=clock.monotonic)
    assert done == 1 and ran == [1]
