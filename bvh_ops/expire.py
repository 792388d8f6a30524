"""Retention carried out (pgBackRest calls it expire): plan over the catalog (pure, in
repository.retention), then delete the OBSOLETE backups, then prune WAL below the oldest kept base."""

from __future__ import annotations

from datetime import datetime

from bvh_ops.repository.retention import Action, plan_retention


def apply_plan(repo, *, now: datetime, keep_days: int, min_redundancy: int, dry_run: bool = False,
               log=None) -> dict:
    """Apply the plan to a repository: delete OBSOLETE backups, then prune archived WAL older
    than the oldest kept physical base (WAL is kept from that base's start LSN)."""
    from bvh_ops.errors import BvhOpsError
    from bvh_ops.wal.archive import prune_wal

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
