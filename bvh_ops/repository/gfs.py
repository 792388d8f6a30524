"""Grandfather-father-son retention: a pure planner over plain items, ``now`` passed in.

restic's ``forget --keep-daily/--keep-weekly/--keep-monthly/--keep-yearly`` semantics, per
family (logical dumps and physical chains are separate recovery paths; file sets one family per
set):

- Buckets are calendar periods in UTC (no DST): the day, the ISO 8601 week (``2026-W53`` runs
  into January), the month, the year.
- The newest item in a bucket represents it.
- ``keep_daily = N`` keeps the representatives of the N most recent buckets *that contain an
  item*: a gap (no backup for three days) does not use up any of the N, so after an outage
  older backups are kept longer, never fewer (restic does the same).
- The newest ``min_redundancy`` items of each family are kept whatever their age.
- Items of the monthly-archive class are kept for ``keep_archive_months`` calendar months after
  they were taken, independently of the daily/weekly/monthly/yearly rules (which they also take
  part in like any other backup).
- A kept item's parent chain is kept ("parent of X").
- A planned deletion of an item whose objects are locked (S3 Object Lock, retain-until in the
  future) becomes HELD: reported, not deleted, not an error (``hold``).
- Items whose signature fails are UNTRUSTED: never counted, never deleted.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

ARCHIVE_CLASS = "monthly-archive"


class Verdict(enum.StrEnum):
    KEEP = "KEEP"
    DELETE = "DELETE"
    HELD = "HELD"  # planned for deletion but locked until a later time: left in place, reported
    UNTRUSTED = "UNTRUSTED"  # signature fails: never counted, never deleted here


@dataclass(frozen=True)
class Item:
    """One backup or snapshot as the planner sees it."""

    id: str
    time: datetime  # when it was taken (finished); naive values are read as UTC
    family: str  # items compete for buckets only within their family
    parent_id: str | None = None  # an item this one needs to be restored
    klass: str = "regular"  # regular | monthly-archive
    trusted: bool = True  # False: signature fails (UNTRUSTED)


@dataclass(frozen=True)
class Policy:
    """How many buckets of each period to keep (0 = none of that period)."""

    keep_daily: int = 30
    keep_weekly: int = 8
    keep_monthly: int = 12
    keep_yearly: int = 7
    min_redundancy: int = 2
    keep_archive_months: int = 84

    def describe(self) -> str:
        return (f"daily {self.keep_daily}, weekly {self.keep_weekly}, monthly {self.keep_monthly}, "
                f"yearly {self.keep_yearly}, minimum redundancy {self.min_redundancy}, "
                f"monthly archives {self.keep_archive_months} months")


@dataclass(frozen=True)
class Decision:
    id: str
    family: str
    time: datetime
    verdict: Verdict
    reasons: tuple[str, ...]  # every reason it is kept; for DELETE/HELD why it goes
    held_until: datetime | None = None
    klass: str = "regular"

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def to_json(self) -> dict:
        return {"id": self.id, "family": self.family, "time": self.time.isoformat(), "verdict": str(self.verdict),
                "class": self.klass, "reasons": list(self.reasons),
                "held_until": self.held_until.isoformat() if self.held_until else None}


def utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def bucket(period: str, t: datetime) -> str:
    """The UTC calendar bucket of ``t``: 2026-11-27, 2026-W48, 2026-11, 2026."""
    t = utc(t)
    if period == "daily":
        return t.strftime("%Y-%m-%d")
    if period == "weekly":
        year, week, _ = t.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "monthly":
        return t.strftime("%Y-%m")
    if period == "yearly":
        return f"{t.year:04d}"
    raise ValueError(f"unknown period {period!r}")


def add_months(t: datetime, months: int) -> datetime:
    """``t`` plus calendar months, the day clamped to the month's length (Jan 31 + 1 = Feb 28/29)."""
    import calendar

    y, m = divmod(t.month - 1 + months, 12)
    year, month = t.year + y, m + 1
    return t.replace(year=year, month=month, day=min(t.day, calendar.monthrange(year, month)[1]))


def archive_expires(taken: datetime, policy: Policy) -> datetime:
    """When a monthly archive taken at ``taken`` stops being kept by its class (and its lock ends)."""
    return add_months(utc(taken), policy.keep_archive_months)


PERIODS = ("daily", "weekly", "monthly", "yearly")


def plan_gfs(items: Iterable[Item], policy: Policy, *, now: datetime) -> list[Decision]:
    """Every item KEEP (with all its reasons), DELETE or UNTRUSTED; newest first per family."""
    now = utc(now)
    items = list(items)
    trusted = [i for i in items if i.trusted]
    reasons: dict[str, list[str]] = {i.id: [] for i in trusted}
    families: dict[str, list[Item]] = {}
    for it in sorted(trusted, key=lambda i: (utc(i.time), i.id), reverse=True):
        families.setdefault(it.family, []).append(it)
    counts = {"daily": policy.keep_daily, "weekly": policy.keep_weekly, "monthly": policy.keep_monthly,
              "yearly": policy.keep_yearly}
    for members in families.values():
        for period in PERIODS:
            seen: list[str] = []
            for it in members:  # newest first: the first item met in a bucket represents it
                b = bucket(period, it.time)
                if seen and seen[-1] == b:
                    continue
                if len(seen) >= counts[period]:
                    break
                seen.append(b)
                reasons[it.id].append(f"{period} {b}")
        for rank, it in enumerate(members[: policy.min_redundancy]):
            reasons[it.id].append(f"minimum redundancy ({rank + 1} of the {policy.min_redundancy} newest "
                                  f"{it.family})")
        for it in members:
            if it.klass == ARCHIVE_CLASS:
                until = archive_expires(it.time, policy)
                if until > now:
                    reasons[it.id].append(f"monthly archive until {until:%Y-%m-%d}")
    # Parents: a kept item is only restorable with its whole chain.
    by_id = {i.id: i for i in trusted}
    for it in [i for i in trusted if reasons[i.id]]:  # kept on their own account
        parent, child = it.parent_id, it.id
        while parent and parent in by_id:
            note = f"parent of {child}" if child == it.id else f"parent of {child} (chain of {it.id})"
            if note not in reasons[parent]:
                reasons[parent].append(note)
            parent, child = by_id[parent].parent_id, parent
    out = []
    for members in families.values():
        for it in members:
            why = tuple(reasons[it.id])
            if why:
                out.append(Decision(it.id, it.family, utc(it.time), Verdict.KEEP, why, klass=it.klass))
            else:
                out.append(Decision(it.id, it.family, utc(it.time), Verdict.DELETE,
                                    ("in no kept bucket (" + policy.describe() + ")",), klass=it.klass))
    out += [Decision(i.id, i.family, utc(i.time), Verdict.UNTRUSTED,
                     ("signature not trusted: not counted, not deleted; investigate (`bvh-ops verify`)",),
                     klass=i.klass) for i in items if not i.trusted]
    return out


def hold(decisions: Iterable[Decision], locks: Mapping[str, datetime | None], *, now: datetime) -> list[Decision]:
    """DELETE → HELD where an object of the item is locked past ``now`` (``locks``: id → the
    latest retain-until among its objects, None = not locked)."""
    now = utc(now)
    out = []
    for d in decisions:
        until = locks.get(d.id)
        if d.verdict is Verdict.DELETE and until is not None and utc(until) > now:
            d = replace(d, verdict=Verdict.HELD, held_until=utc(until),
                        reasons=d.reasons + (f"HELD until {utc(until):%Y-%m-%d %H:%M} UTC (object lock)",))
        out.append(d)
    return out
