"""GFS retention planner (bvh_ops.repository.gfs): table tests of restic's forget semantics in
UTC buckets, gaps, several per day, ISO week 53, min_redundancy, parents, the archive class and
locks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from bvh_ops.repository.gfs import (
    ARCHIVE_CLASS,
    Item,
    Policy,
    Verdict,
    add_months,
    bucket,
    hold,
    plan_gfs,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
NONE = Policy(keep_daily=0, keep_weekly=0, keep_monthly=0, keep_yearly=0, min_redundancy=0, keep_archive_months=0)


def t(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC) if "+" not in s else datetime.fromisoformat(s)


def items(*times: str, family: str = "logical") -> list[Item]:
    return [Item(f"b{n}", t(ts), family) for n, ts in enumerate(times)]


def kept(decisions) -> set[str]:
    return {d.id for d in decisions if d.verdict is Verdict.KEEP}


def policy(**kw) -> Policy:
    return Policy(**{**NONE.__dict__, **kw})


@pytest.mark.parametrize(("when", "period", "expected"), [
    ("2026-11-27T23:59:59", "daily", "2026-11-27"),
    ("2026-11-28T00:00:00", "daily", "2026-11-28"),
    ("2026-11-27T10:00:00", "weekly", "2026-W48"),
    ("2026-12-31T12:00:00", "weekly", "2026-W53"),  # 2026 has an ISO week 53
    ("2027-01-03T23:00:00", "weekly", "2026-W53"),  # ... which runs into January 2027
    ("2027-01-04T00:00:00", "weekly", "2027-W01"),
    ("2024-12-30T00:00:00", "weekly", "2025-W01"),  # and December days can be ISO week 1
    ("2026-02-28T23:00:00", "monthly", "2026-02"),
    ("2026-12-31T23:59:00", "yearly", "2026"),
    # Buckets are UTC: 01:30 in Jerusalem on the 28th is still the 27th in UTC.
    ("2026-11-28T01:30:00+02:00", "daily", "2026-11-27"),
    # DST change in Europe (2026-03-29): a local offset switch does not move the UTC bucket.
    ("2026-03-29T03:30:00+02:00", "daily", "2026-03-29"),
])
def test_buckets_are_utc_calendar_periods(when, period, expected):
    assert bucket(period, t(when)) == expected


def test_newest_in_a_day_represents_it_several_per_day():
    its = items("2026-11-28T02:00", "2026-11-28T08:00", "2026-11-28T14:00", "2026-11-27T02:00", "2026-11-27T20:00")
    d = plan_gfs(its, policy(keep_daily=2), now=NOW)
    assert kept(d) == {"b2", "b4"}
    assert {x.id for x in d if x.verdict is Verdict.DELETE} == {"b0", "b1", "b3"}


@pytest.mark.parametrize(("times", "pol", "expected"), [
    # Gaps: only buckets that contain a backup count (restic). 3 daily over a 10-day gap keeps
    # the three newest days that have backups, however far apart.
    (("2026-11-28T02:00", "2026-11-18T02:00", "2026-11-17T02:00", "2026-11-16T02:00"),
     dict(keep_daily=3), {"b0", "b1", "b2"}),
    # Weekly: newest of each ISO week; a week with no backup is skipped.
    (("2026-11-27T02:00", "2026-11-24T02:00", "2026-11-13T02:00", "2026-11-10T02:00", "2026-11-01T02:00"),
     dict(keep_weekly=2), {"b0", "b2"}),
    # Year boundary: 2026-12-31 and 2027-01-02 share ISO week 2026-W53, so one of them (the newer) is kept.
    (("2027-01-05T02:00", "2027-01-02T02:00", "2026-12-31T02:00", "2026-12-27T02:00"),
     dict(keep_weekly=3), {"b0", "b1", "b3"}),
    # ...but they are in different months and years.
    (("2027-01-02T02:00", "2026-12-31T02:00", "2026-12-01T02:00"), dict(keep_monthly=2), {"b0", "b1"}),
    (("2027-01-02T02:00", "2026-12-31T02:00", "2025-06-01T02:00"), dict(keep_yearly=3), {"b0", "b1", "b2"}),
    # Periods overlap: the newest backup is daily, weekly, monthly and yearly at once; the
    # counts are separate, so older months are reached by the monthly rule.
    (("2026-11-28T02:00", "2026-11-27T02:00", "2026-10-15T02:00", "2026-10-31T02:00", "2026-09-02T02:00"),
     dict(keep_daily=1, keep_monthly=3), {"b0", "b3", "b4"}),
    # Zero everywhere and no redundancy: nothing kept.
    (("2026-11-28T02:00", "2026-11-27T02:00"), {}, set()),
    # Minimum redundancy alone keeps the newest N, whatever their age.
    (("2020-01-01T00:00", "2019-01-01T00:00", "2018-01-01T00:00"), dict(min_redundancy=2), {"b0", "b1"}),
    # One backup, default policy: kept.
    (("2026-11-28T02:00",), Policy().__dict__, {"b0"}),
])
def test_gfs_table(times, pol, expected):
    assert kept(plan_gfs(items(*times), policy(**pol), now=NOW)) == expected


def test_default_policy_over_three_years_of_dailies():
    start = NOW - timedelta(days=3 * 365)
    its = [Item(f"d{n:04d}", start + timedelta(days=n), "logical") for n in range(3 * 365 + 1)]
    d = plan_gfs(its, Policy(), now=NOW)
    keep = [x for x in d if x.verdict is Verdict.KEEP]
    days = {bucket("daily", x.time) for x in keep}
    # 30 daily + up to 8 weekly + up to 12 monthly + yearly representatives (overlapping).
    assert sum("daily" in " ".join(x.reasons) for x in keep) == 30
    assert sum(any(r.startswith("weekly") for r in x.reasons) for x in keep) == 8
    assert sum(any(r.startswith("monthly ") for r in x.reasons) for x in keep) == 12
    assert sum(any(r.startswith("yearly") for r in x.reasons) for x in keep) == 4  # 2023..2026
    assert len(days) == len(keep) < 30 + 8 + 12 + 4
    # The yearly representative of 2025 is its last day.
    assert any(x.time.date().isoformat() == "2025-12-31" and "yearly 2025" in x.reasons for x in keep)


def test_families_are_counted_separately():
    its = items("2026-11-28T02:00", "2026-11-27T02:00") + [
        Item("p0", t("2026-11-28T03:00"), "physical"), Item("p1", t("2026-11-20T03:00"), "physical")]
    assert kept(plan_gfs(its, policy(keep_daily=1), now=NOW)) == {"b0", "p0"}


def test_every_reason_is_listed():
    its = items("2026-11-27T02:00", "2026-11-20T02:00")
    d = {x.id: x for x in plan_gfs(its, Policy(), now=NOW)}
    assert d["b0"].reasons[:4] == ("daily 2026-11-27", "weekly 2026-W48", "monthly 2026-11", "yearly 2026")
    assert "minimum redundancy (1 of the 2 newest logical)" in d["b0"].reasons
    assert d["b1"].reasons[:2] == ("daily 2026-11-20", "weekly 2026-W47")


def test_parents_of_kept_backups_are_kept_with_the_chain_named():
    its = [Item("full", t("2026-11-01T02:00"), "physical"),
           Item("inc1", t("2026-11-01T08:00"), "physical", parent_id="full"),
           Item("inc2", t("2026-11-01T14:00"), "physical", parent_id="inc1"),
           Item("old", t("2026-10-01T02:00"), "physical")]
    d = {x.id: x for x in plan_gfs(its, policy(keep_daily=1), now=NOW)}
    assert d["inc2"].reasons == ("daily 2026-11-01",)
    assert d["inc1"].verdict is Verdict.KEEP and d["inc1"].reasons == ("parent of inc2",)
    assert d["full"].reasons == ("parent of inc1 (chain of inc2)",)
    assert d["old"].verdict is Verdict.DELETE


def test_a_missing_parent_does_not_break_the_plan():
    its = [Item("inc", t("2026-11-27T08:00"), "physical", parent_id="gone")]
    assert kept(plan_gfs(its, policy(keep_daily=1), now=NOW)) == {"inc"}


@pytest.mark.parametrize(("taken", "months", "kept_by_class"), [
    ("2019-12-01T00:00", 84, True),    # 2019-12 + 84 months = 2026-12-01 > now
    ("2019-11-01T00:00", 84, False),   # expired 2026-11-01
    ("2026-11-01T00:00", 0, False),    # class retention switched off
])
def test_monthly_archives_are_kept_by_their_class(taken, months, kept_by_class):
    its = [Item("arc", t(taken), "logical", klass=ARCHIVE_CLASS), Item("new", t("2026-11-27T02:00"), "logical")]
    d = {x.id: x for x in plan_gfs(its, policy(keep_daily=1, keep_archive_months=months), now=NOW)}
    assert (d["arc"].verdict is Verdict.KEEP) is kept_by_class
    if kept_by_class:
        assert d["arc"].reasons == (f"monthly archive until {add_months(t(taken), months):%Y-%m-%d}",)


def test_archive_class_also_counts_in_gfs_buckets():
    its = [Item("arc", t("2026-11-01T00:00"), "logical", klass=ARCHIVE_CLASS),
           Item("d", t("2026-10-31T02:00"), "logical")]
    d = {x.id: x for x in plan_gfs(its, policy(keep_daily=1, keep_archive_months=84), now=NOW)}
    assert d["arc"].reasons == ("daily 2026-11-01", "monthly archive until 2033-11-01")
    assert d["d"].verdict is Verdict.DELETE


def test_untrusted_items_are_neither_counted_nor_deleted():
    its = [Item("forged", t("2099-01-01T00:00"), "logical", trusted=False)] + items("2026-11-28T02:00",
                                                                                    "2026-11-27T02:00")
    d = {x.id: x for x in plan_gfs(its, policy(keep_daily=1), now=NOW)}
    assert d["forged"].verdict is Verdict.UNTRUSTED
    assert d["b0"].verdict is Verdict.KEEP and d["b1"].verdict is Verdict.DELETE


@pytest.mark.parametrize(("lock", "verdict"), [
    (None, Verdict.DELETE),
    (NOW - timedelta(seconds=1), Verdict.DELETE),  # lock expired: deleted
    (NOW + timedelta(days=3), Verdict.HELD),
])
def test_locked_deletions_are_held(lock, verdict):
    d = plan_gfs(items("2026-11-28T02:00", "2026-11-01T02:00"), policy(keep_daily=1), now=NOW)
    out = {x.id: x for x in hold(d, {"b1": lock}, now=NOW)}
    assert out["b1"].verdict is verdict
    if verdict is Verdict.HELD:
        assert out["b1"].held_until == lock and "HELD until 2026-12-01 12:00 UTC" in out["b1"].reason
    assert out["b0"].verdict is Verdict.KEEP


def test_a_lock_never_turns_a_kept_item_into_held():
    d = plan_gfs(items("2026-11-28T02:00"), policy(keep_daily=1), now=NOW)
    assert hold(d, {"b0": NOW + timedelta(days=9)}, now=NOW)[0].verdict is Verdict.KEEP


@pytest.mark.parametrize(("start", "months", "expected"), [
    ("2026-01-31T00:00", 1, "2026-02-28T00:00"),
    ("2024-01-31T00:00", 1, "2024-02-29T00:00"),
    ("2026-11-01T00:00", 84, "2033-11-01T00:00"),
    ("2026-12-15T00:00", 1, "2027-01-15T00:00"),
])
def test_add_months_clamps_the_day(start, months, expected):
    assert add_months(t(start), months) == t(expected)


def test_naive_and_offset_times_are_compared_in_utc():
    its = [Item("a", datetime(2026, 11, 28, 1, 0), "logical"),
           Item("b", datetime(2026, 11, 28, 2, 30, tzinfo=timezone(timedelta(hours=2))), "logical")]
    # b is 00:30 UTC, a is 01:00 UTC: a is the newest of the day.
    assert kept(plan_gfs(its, policy(keep_daily=1), now=NOW)) == {"a"}
