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


def apply_plan(repo, *, now: datetime, keep_days: int, min_redundancy: int, dry_run: bool = False,
               log=None) -> dict:
    """Apply the plan to a repository: delete OBSOLETE backups, then prune archived WAL older
    than the oldest kept physical base (WAL is kept from that base's start LSN)."""
    from bvh_ops.errors import BvhOpsError
    from bvh_ops.walarchive import prune_wal

    decisions = plan_retention(repo.list_backups(), now=now, keep_days=keep_days, min_redundancy=min_redundancy)
    for d in decisions:
        if d.action is Action.OBSOLETE:
            if log:
                log.warning("retention%s: deleting %s (%s)", " (dry run)" if dry_run else "", d.backup_id, d.reason)
            if not dry_run:
                repo.delete_backup(d.backup_id)
    kept_bases = []
    for d in decisions:
        if d.action is Action.KEEP:
            try:
                m = repo.trusted_manifest(d.backup_id, purpose="retain")
            except BvhOpsError:
                continue
            if m.kind == "full" and m.extra.get("start_lsn"):
                kept_bases.append(m)
    pruned: list[str] = []
    if kept_bases:
        oldest = min(kept_bases, key=lambda m: (int(m.extra.get("timeline") or 1), m.finished_at))
        pruned = prune_wal(repo.store, oldest, dry_run=dry_run)
    return {"decisions": [{"backup_id": d.backup_id, "action": str(d.action), "reason": d.reason} for d in decisions],
            "wal_pruned": len(pruned), "wal_kept_from": oldest.extra["start_lsn"] if kept_bases else None}
