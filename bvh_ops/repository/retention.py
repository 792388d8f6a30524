"""Retention planning: a pure function over backup records, ``now`` passed in.

Barman's idea, with records instead of a server object: each complete backup is KEEP or
OBSOLETE; the newest ``min_redundancy`` complete backups are always kept, and a backup that a
kept one depends on (its parent chain) is kept too.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from bvh_ops.repository.repo import BackupRecord


class Action(enum.StrEnum):
    KEEP = "KEEP"
    OBSOLETE = "OBSOLETE"
    UNTRUSTED = "UNTRUSTED"  # signature fails: never counted, never deleted here; reported


@dataclass(frozen=True)
class Decision:
    backup_id: str
    action: Action
    reason: str


def plan_retention(
    records: list[BackupRecord], *, now: datetime, keep_days: int, min_redundancy: int
) -> list[Decision]:
    # Only manifests signed by a trusted key take part: a forged one dated 2099 must not push
    # genuine backups out of the redundancy window, and is left for an operator to look at.
    untrusted = [r for r in records if r.status == "complete" and not r.signature_ok]
    complete = sorted(
        (r for r in records if r.status == "complete" and r.signature_ok and r.finished_at is not None),
        key=lambda r: (r.finished_at, r.backup_id),
        reverse=True,
    )
    cutoff = now - timedelta(days=keep_days)
    keep: dict[str, str] = {}
    seen: dict[str, int] = {}
    for rec in complete:
        # Minimum redundancy per family: logical dumps and physical chains are different
        # recovery paths; neither may crowd the other out.
        family = "logical" if rec.kind == "logical" else "physical"
        rank = seen.get(family, 0)
        seen[family] = rank + 1
        if rec.finished_at >= cutoff:
            keep[rec.backup_id] = f"within {keep_days} days"
        elif rank < min_redundancy:
            keep[rec.backup_id] = f"minimum redundancy ({min_redundancy} newest {family})"
    by_id = {r.backup_id: r for r in complete}
    for bid in list(keep):
        parent = by_id[bid].parent_id
        while parent and parent in by_id and parent not in keep:
            keep[parent] = f"needed by {bid}"
            parent = by_id[parent].parent_id
    return [
        Decision(r.backup_id, Action.KEEP, keep[r.backup_id])
        if r.backup_id in keep
        else Decision(r.backup_id, Action.OBSOLETE, f"older than {keep_days} days")
        for r in complete
    ] + [Decision(r.backup_id, Action.UNTRUSTED, "manifest signature not trusted: not counted, not deleted; "
                  "investigate (`bvh-ops verify`)") for r in untrusted]


