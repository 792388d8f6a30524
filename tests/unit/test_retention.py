"""Retention of repository records (the GFS planner over BackupRecords): table-driven, `now`
passed in. The GFS rules themselves are tabled in test_gfs.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bvh_ops.repository.gfs import Policy, Verdict
from bvh_ops.repository.repo import BackupRecord
from bvh_ops.repository.retention import plan_retention

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


def daily(n: int, min_redundancy: int) -> Policy:
    return Policy(keep_daily=n, keep_weekly=0, keep_monthly=0, keep_yearly=0, min_redundancy=min_redundancy)


def make_backup_record(backup_id: str, age_days: float, *, status: str = "complete", parent: str | None = None,
                       signature_ok: bool | None = True, kind: str = "logical", klass: str = "regular"):
    finished = NOW - timedelta(days=age_days)
    return BackupRecord(backup_id, kind, status, finished if status == "complete" else None, finished, parent,
                        signature_ok=signature_ok if status == "complete" else None, klass=klass)


@pytest.mark.parametrize(
    "ages, keep_daily, min_redundancy, obsolete",
    [
        ([1, 2, 3], 30, 2, set()),                       # all within 30 days that have a backup
        ([1, 29.9, 30.1, 45], 2, 1, {"b2", "b3"}),       # the two newest days stay
        ([40, 50, 60], 0, 2, {"b2"}),                    # redundancy keeps the two newest
        ([40, 50, 60], 0, 1, {"b1", "b2"}),
        ([], 30, 2, set()),
        ([31], 0, 1, set()),                             # never delete the only backup
        ([0.1, 0.2, 0.3], 1, 1, {"b1", "b2"}),           # several a day: the newest represents it
    ],
)
def test_plan(ages, keep_daily, min_redundancy, obsolete):
    records = [make_backup_record(f"b{i}", a) for i, a in enumerate(ages)]
    plan = plan_retention(records, now=NOW, policy=daily(keep_daily, min_redundancy))
    assert {d.id for d in plan if d.verdict is Verdict.DELETE} == obsolete
    assert len(plan) == len(records)


def test_incomplete_backups_are_not_planned():
    records = [make_backup_record("b0", 1), make_backup_record("b1", 90, status="incomplete")]
    plan = plan_retention(records, now=NOW, policy=daily(30, 1))
    assert [d.id for d in plan] == ["b0"]


def test_parent_of_a_kept_backup_is_kept():
    records = [make_backup_record("full", 40, kind="full"), make_backup_record("incr", 5, parent="full",
                                                                                kind="incremental"),
               make_backup_record("old", 50, kind="full")]
    plan = {d.id: d for d in plan_retention(records, now=NOW, policy=daily(1, 1))}
    assert plan["full"].verdict is Verdict.KEEP and "parent of incr" in plan["full"].reason
    assert plan["old"].verdict is Verdict.DELETE


def test_minimum_redundancy_holds_per_family():
    """Six-hourly incrementals must not crowd the last dumps out (and vice versa)."""
    def rec(bid, kind, age, parent=None):
        finished = NOW - timedelta(days=age)
        return BackupRecord(bid, kind, "complete", finished, finished, parent, signature_ok=True)

    records = [rec("dump1", "logical", 40), rec("dump2", "logical", 41), rec("dump3", "logical", 42),
               rec("full", "full", 45), rec("i1", "incremental", 39, "full"), rec("i2", "incremental", 38, "i1")]
    plan = {d.id: d.verdict for d in plan_retention(records, now=NOW, policy=daily(0, 2))}
    assert plan == {"dump1": Verdict.KEEP, "dump2": Verdict.KEEP, "dump3": Verdict.DELETE,
                    "i2": Verdict.KEEP, "i1": Verdict.KEEP, "full": Verdict.KEEP}


def test_forged_manifests_neither_count_nor_crowd_out_genuine_backups():
    """Two manifests dated 2099 with a failing signature: the genuine backups keep their
    redundancy, the forged ones are reported UNTRUSTED and are not deleted by retention."""
    genuine = [make_backup_record("g1", 40), make_backup_record("g2", 41), make_backup_record("g3", 42)]
    forged = [make_backup_record("f1", -26_000, signature_ok=False), make_backup_record("f2", -26_001, signature_ok=False)]
    plan = {d.id: d.verdict for d in plan_retention(genuine + forged, now=NOW, policy=daily(0, 2))}
    assert plan == {"g1": Verdict.KEEP, "g2": Verdict.KEEP, "g3": Verdict.DELETE,
                    "f1": Verdict.UNTRUSTED, "f2": Verdict.UNTRUSTED}


def test_the_archive_class_comes_from_the_record():
    records = [make_backup_record("arc", 400, klass="monthly-archive"), make_backup_record("new", 1)]
    plan = {d.id: d for d in plan_retention(records, now=NOW, policy=daily(1, 1))}
    assert plan["arc"].verdict is Verdict.KEEP and plan["arc"].reasons[0].startswith("monthly archive until")


@pytest.mark.parametrize(("env", "expected"), [
    ({}, 30),
    ({"retention_days": 10}, 10),            # the deprecated name still works
    ({"keep_daily": 7}, 7),
    ({"keep_daily": 7, "retention_days": 7}, 7),
])
def test_keep_daily_and_its_old_name(env, expected):
    from bvh_ops.config import Settings
    from bvh_ops.expire import policy_of

    assert policy_of(Settings(**env)).keep_daily == expected


def test_both_names_disagreeing_is_one_clear_error():
    from pydantic import ValidationError

    from bvh_ops.config import Settings

    with pytest.raises(ValidationError, match="retention_days .10. is the old name of keep_daily .7.: set only keep_daily"):
        Settings(keep_daily=7, retention_days=10)
