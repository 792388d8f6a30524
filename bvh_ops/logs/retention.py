"""Log retention (pure, ``now`` passed in): which day partitions to archive, which to drop from
the hot store, and which archives to delete — the runbook's legal retention (section 2).

Per category: records stay in the hot store (the ops database, searchable) for ``hot_days``;
after that a day is **archived first** (exported to the repository, verified) and only then its
partition dropped. A day older than its category's retention is deleted: its archive (or, for a
category whose retention ends inside the hot window, the partition itself). **Audit is kept for
ever**: no retention applies, no archive of it is ever deleted. A legal hold over a category and
a range of days blocks every deletion in it (an archive still happens, and the partition is
dropped only once its archive is verified: the data is kept, just not in the hot store).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from bvh_ops.logs.record import CATEGORIES

# The runbook's legal retention, in days (None: permanent). 7 years counted as 7 * 365 + 2 leap days.
DEFAULT_RETENTION_DAYS: dict[str, int | None] = {
    "security": 7 * 365 + 2, "application": 2 * 365 + 1, "performance": 90, "debug": 30, "audit": None,
}
DEFAULT_HOT_DAYS = 30


@dataclass(frozen=True)
class Hold:
    category: str
    from_day: date
    to_day: date
    reason: str

    def covers(self, category: str, day: date) -> bool:
        return category == self.category and self.from_day <= day <= self.to_day


@dataclass(frozen=True)
class Archived:
    category: str
    day: date
    deleted: bool = False
    partition_dropped: bool = False


@dataclass(frozen=True)
class Action:
    kind: str          # "archive" | "drop_partition" | "delete_archive" | "drop_unarchived"
    category: str
    day: date
    why: str

    def to_json(self) -> dict[str, str]:
        return {"action": self.kind, "category": self.category, "day": self.day.isoformat(), "why": self.why}


def retention_days(category: str, overrides: Mapping[str, int] | None = None) -> int | None:
    """The category's retention; audit is permanent whatever the configuration says."""
    if category == "audit":
        return None
    days = (overrides or {}).get(category, DEFAULT_RETENTION_DAYS[category])
    return days


def plan(partitions: Iterable[tuple[str, date]], archives: Iterable[Archived], holds: Iterable[Hold],
         now: datetime, *, hot_days: int = DEFAULT_HOT_DAYS,
         retention: Mapping[str, int] | None = None) -> list[Action]:
    """The actions due at ``now``, in a safe order: per day, archive before dropping its
    partition; deletions last. A day is judged whole: its age is ``today - day`` (UTC)."""
    today = now.date()
    holds = list(holds)
    done = {(a.category, a.day): a for a in archives}
    out: list[Action] = []

    def held(category: str, day: date) -> Hold | None:
        return next((h for h in holds if h.covers(category, day)), None)

    for category, day in sorted(set(partitions)):
        if category not in CATEGORIES:
            continue
        age = (today - day).days
        keep = retention_days(category, retention)
        arch = done.get((category, day))
        if age <= hot_days and (keep is None or age <= keep):
            continue                                   # still hot
        if keep is not None and age > keep and held(category, day) is None and arch is None:
            # Past its retention before it was ever archived (debug: 30 days): nothing to keep.
            out.append(Action("drop_unarchived", category, day, f"{age} days old > {keep} days retention"))
            continue
        if arch is None or arch.deleted:
            out.append(Action("archive", category, day, f"{age} days old > {hot_days} hot days"))
        out.append(Action("drop_partition", category, day, "archived and verified first"))
    for arch in sorted(done.values(), key=lambda a: (a.category, a.day)):
        keep = retention_days(arch.category, retention)
        if arch.deleted or keep is None:
            continue
        age = (today - arch.day).days
        if age > keep:
            hold = held(arch.category, arch.day)
            if hold is None:
                out.append(Action("delete_archive", arch.category, arch.day, f"{age} days old > {keep} days retention"))
    return out


def held_back(partitions: Iterable[tuple[str, date]], archives: Iterable[Archived], holds: Iterable[Hold],
              now: datetime, *, retention: Mapping[str, int] | None = None) -> list[dict[str, str]]:
    """What a legal hold kept that retention would have deleted (reported, so a hold is seen)."""
    holds = list(holds)
    today = now.date()
    out = []
    days = {(c, d) for c, d in partitions} | {(a.category, a.day) for a in archives if not a.deleted}
    for category, day in sorted(days):
        keep = retention_days(category, retention) if category in CATEGORIES else None
        if keep is None or (today - day).days <= keep:
            continue
        hold = next((h for h in holds if h.covers(category, day)), None)
        if hold is not None:
            out.append({"category": category, "day": day.isoformat(), "hold": hold.reason})
    return out


def day_of(partition_name: str) -> tuple[str, date] | None:
    """``log_security_20261128`` -> ("security", 2026-11-28); None for anything else."""
    parts = partition_name.split("_")
    if len(parts) != 3 or parts[0] != "log" or parts[1] not in CATEGORIES or len(parts[2]) != 8:
        return None
    try:
        return parts[1], datetime.strptime(parts[2], "%Y%m%d").date()
    except ValueError:
        return None


def retain_until(category: str, day: date, retention: Mapping[str, int] | None = None) -> date | None:
    """Object Lock retain-until for an archive of ``day``: the end of its retention; None for
    audit (locked with the longest retention the caller allows, decided where the lock is set)."""
    keep = retention_days(category, retention)
    return None if keep is None else day + timedelta(days=keep + 1)
