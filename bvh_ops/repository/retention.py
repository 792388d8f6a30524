"""Retention of backups: the repository's records as items of the GFS planner
(bvh_ops.repository.gfs), pure, ``now`` passed in.

Families: logical dumps, and physical chains (full, incremental, WAL-only increments): they
are different recovery paths and neither may crowd the other out. A backup's class (a monthly
archive or a regular backup) comes from its manifest's ``extra["class"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from bvh_ops.repository.gfs import Decision, Item, Policy, hold, plan_gfs
from bvh_ops.repository.repo import BackupRecord


def family_of(kind: str) -> str:
    return "logical" if kind == "logical" else "physical"


def backup_items(records: list[BackupRecord]) -> list[Item]:
    """Complete backups with a finish time; incomplete and damaged ones are garbage collection's."""
    return [Item(r.backup_id, r.finished_at, family_of(r.kind), r.parent_id, r.klass, bool(r.signature_ok))
            for r in records if r.status == "complete" and r.finished_at is not None]


def plan_retention(records: list[BackupRecord], *, now: datetime, policy: Policy,
                   locks: Mapping[str, datetime | None] | None = None) -> list[Decision]:
    """Every complete backup KEEP (all reasons), DELETE, HELD (locked) or UNTRUSTED."""
    return hold(plan_gfs(backup_items(records), policy, now=now), locks or {}, now=now)
