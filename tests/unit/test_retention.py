"""Retention planning is pure: table-driven cases with `now` passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bvh_ops.repository.repo import BackupRecord
from bvh_ops.repository.retention import Action, plan_retention

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


def make_backup_record(backup_id: str, age_days: float, *, status: str = "complete", parent: str | None = None,
                       signature_ok: bool | None = True):
    finished = NOW - timedelta(days=age_days)
    return BackupRecord(backup_id, "logical", status, finished if status == "complete" else None, finished, parent,
                        signature_ok=signature_ok if status == "complete" else None)


@pytest.mark.parametrize(
    "ages, keep_days, min_redundancy, obsolete",
    [
        ([1, 2, 3], 30, 2, set()),                       # all young
        ([1, 29.9, 30.1, 45], 30, 2, {"b2", "b3"}),      # older than 30 days go
        ([40, 50, 60], 30, 2, {"b2"}),                   # redundancy keeps the two newest
        ([40, 50, 60], 30, 1, {"b1", "b2"}),
        ([], 30, 2, set()),
        ([31], 30, 1, set()),                            # never delete the only backup
    ],
)
def test_plan(ages, keep_days, min_redundancy, obsolete):
    records = [make_backup_record(f"b{i}", a) for i, a in enumerate(ages)]
    plan = plan_retention(records, now=NOW, keep_days=keep_days, min_redundancy=min_redundancy)
    assert {d.backup_id for d in plan if d.action is Action.OBSOLETE} == obsolete
    assert len(plan) == len(records)


def test_incomplete_backups_are_not_planned():
    records = [make_backup_record("b0", 1), make_backup_record("b1", 90, status="incomplete")]
    plan = plan_retention(records, now=NOW, keep_days=30, min_redundancy=1)
    assert [d.backup_id for d in plan] == ["b0"]


def test_parent_of_a_kept_backup_is_kept():
    records = [make_backup_record("full", 40), make_backup_record("incr", 5, parent="full"),
               make_backup_record("old", 50)]
    plan = {d.backup_id: d for d in plan_retention(records, now=NOW, keep_days=30, min_redundancy=1)}
    assert plan["full"].action is Action.KEEP and "needed by incr" in plan["full"].reason
    assert plan["old"].action is Action.OBSOLETE


def test_minimum_redundancy_holds_per_family():
    """Six-hourly incrementals must not crowd the last dumps out (and vice versa)."""
    def rec(bid, kind, age, parent=None):
        finished = NOW - timedelta(days=age)
        return BackupRecord(bid, kind, "complete", finished, finished, parent, signature_ok=True)

    records = [rec("dump1", "logical", 40), rec("dump2", "logical", 41), rec("dump3", "logical", 42),
               rec("full", "full", 45), rec("i1", "incremental", 39, "full"), rec("i2", "incremental", 38, "i1")]
    plan = {d.backup_id: d.action for d in plan_retention(records, now=NOW, keep_days=30, min_redundancy=2)}
    assert plan == {"dump1": Action.KEEP, "dump2": Action.KEEP, "dump3": Action.OBSOLETE,
                    "i2": Action.KEEP, "i1": Action.KEEP, "full": Action.KEEP}


def test_forged_manifests_neither_count_nor_crowd_out_genuine_backups():
    """Two manifests dated 2099 with a failing signature: the genuine backups keep their
    redundancy, the forged ones are reported UNTRUSTED and are not deleted by retention."""
    genuine = [make_backup_record("g1", 40), make_backup_record("g2", 41), make_backup_record("g3", 42)]
    forged = [make_backup_record("f1", -26_000, signature_ok=False), make_backup_record("f2", -26_001, signature_ok=False)]
    plan = {d.backup_id: d.action for d in plan_retention(genuine + forged, now=NOW, keep_days=30, min_redundancy=2)}
    assert plan == {"g1": Action.KEEP, "g2": Action.KEEP, "g3": Action.OBSOLETE,
                    "f1": Action.UNTRUSTED, "f2": Action.UNTRUSTED}
