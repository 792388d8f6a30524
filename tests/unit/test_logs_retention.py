"""The log retention planner, table-tested: each category's legal retention, audit never
deleted, archive before drop, legal holds, and partition names."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from bvh_ops.logs.retention import Archived, Hold, day_of, held_back, plan, retain_until

NOW = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
TODAY = NOW.date()


def ago(days: int) -> date:
    return TODAY - timedelta(days=days)


def kinds(actions):
    return [(a.kind, a.category, (TODAY - a.day).days) for a in actions]


@pytest.mark.parametrize("category, age, expected", [
    ("security", 10, []),                                                   # hot
    ("security", 30, []),                                                   # the last hot day
    ("security", 31, [("archive", "security", 31), ("drop_partition", "security", 31)]),
    ("application", 400, [("archive", "application", 400), ("drop_partition", "application", 400)]),
    ("performance", 31, [("archive", "performance", 31), ("drop_partition", "performance", 31)]),
    ("performance", 91, [("drop_unarchived", "performance", 91)]),          # past retention, never archived
    ("debug", 30, []),
    ("debug", 31, [("drop_unarchived", "debug", 31)]),                       # 30-day retention ends in the hot window
    ("audit", 31, [("archive", "audit", 31), ("drop_partition", "audit", 31)]),
    ("audit", 5000, [("archive", "audit", 5000), ("drop_partition", "audit", 5000)]),   # never deleted
])
def test_hot_partitions(category, age, expected):
    assert kinds(plan([(category, ago(age))], [], [], NOW)) == expected


@pytest.mark.parametrize("category, age, expected", [
    ("security", 7 * 365 + 2, []),
    ("security", 7 * 365 + 3, [("delete_archive", "security", 7 * 365 + 3)]),
    ("application", 731, []),
    ("application", 732, [("delete_archive", "application", 732)]),
    ("performance", 91, [("delete_archive", "performance", 91)]),
    ("audit", 100 * 365, []),                                                # audit archives: never
])
def test_archives_past_their_retention(category, age, expected):
    assert kinds(plan([], [Archived(category, ago(age), partition_dropped=True)], [], NOW)) == expected


def test_an_archived_day_whose_partition_survived_is_dropped_not_archived_again():
    assert kinds(plan([("security", ago(40))], [Archived("security", ago(40))], [], NOW)) == [
        ("drop_partition", "security", 40)]


def test_a_legal_hold_blocks_deletion_but_not_the_archive():
    hold = Hold("performance", ago(200), ago(50), "case 2026-17")
    actions = plan([("performance", ago(100))], [Archived("performance", ago(120), partition_dropped=True),
                                                  Archived("performance", ago(300), partition_dropped=True)],
                   [hold], NOW)
    assert kinds(actions) == [("archive", "performance", 100), ("drop_partition", "performance", 100),
                              ("delete_archive", "performance", 300)]      # 300 days: outside the hold
    kept = held_back([("performance", ago(100))], [Archived("performance", ago(120))], [hold], NOW)
    assert [k["day"] for k in kept] == [ago(120).isoformat(), ago(100).isoformat()]
    assert all(k["hold"] == "case 2026-17" for k in kept)


def test_a_hold_on_another_category_does_not_apply():
    hold = Hold("security", ago(200), ago(0), "case")
    assert kinds(plan([("debug", ago(40))], [], [hold], NOW)) == [("drop_unarchived", "debug", 40)]


def test_configured_retention_overrides_but_never_for_audit():
    assert kinds(plan([], [Archived("debug", ago(20), partition_dropped=True)], [], NOW, retention={"debug": 10})) == [
        ("delete_archive", "debug", 20)]
    assert kinds(plan([], [Archived("audit", ago(99), partition_dropped=True)], [], NOW, retention={"audit": 1})) == []


def test_deleted_archives_are_not_deleted_again():
    assert plan([], [Archived("debug", ago(400), deleted=True)], [], NOW) == []


@pytest.mark.parametrize("name, expected", [
    ("log_security_20261128", ("security", date(2026, 11, 28))),
    ("log_audit_20260101", ("audit", date(2026, 1, 1))),
    ("log_security", None), ("log_nope_20261128", None), ("log_debug_20261399", None), ("samples_20261128", None),
])
def test_partition_names(name, expected):
    assert day_of(name) == expected


def test_retain_until_is_the_end_of_retention_and_none_for_audit():
    assert retain_until("performance", date(2026, 1, 1)) == date(2026, 4, 2)
    assert retain_until("audit", date(2026, 1, 1)) is None
