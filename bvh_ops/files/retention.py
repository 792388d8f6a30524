"""GFS retention of file-set snapshots: the same planner as the backups
(bvh_ops.repository.gfs), one family per set, a snapshot dated by its start (when its content
was read). Plan (pure), then a short loop that forgets what the plan marks DELETE; their content
goes at the next `files gc`. A partial snapshot (a file or command failed) is never counted
as a day's representative and never deleted here: forget it by hand once looked at.
"""

from __future__ import annotations

from datetime import datetime

from bvh_ops.files.catalog import Listed, delete_snapshot, list_snapshots
from bvh_ops.repository.gfs import Decision, Item, Policy, Verdict, hold, plan_gfs
from bvh_ops.storage.base import ObjectStore, retained_until


def plan_forget(listed: list[Listed], policy: Policy, *, now: datetime) -> list[Decision]:
    """Pure: every indexed snapshot KEEP / DELETE / UNTRUSTED with reasons, per set."""
    done = [s for s in listed if s.index is not None]
    items = [Item(s.snapshot_id, datetime.fromisoformat(s.index.started_at), f"set {s.index.set}",
                  trusted=s.signature_ok) for s in done if not s.index.partial]
    partial = [Decision(s.snapshot_id, f"set {s.index.set}", datetime.fromisoformat(s.index.started_at), Verdict.KEEP,
                        ("partial snapshot: not counted, not deleted (forget it by hand once looked at)",))
               for s in done if s.index.partial]
    return plan_gfs(items, policy, now=now) + partial


def forget_by_policy(store: ObjectStore, trusted: dict[str, str], policy: Policy, *, now: datetime,
                     set_name: str | None = None, dry_run: bool = True, settings=None) -> list[Decision]:
    """Plan over the repository's snapshots (of ``set_name`` or every set), then forget the
    DELETE ones (HELD where an object is locked); each forget is audited with ``settings``."""
    from bvh_ops.files.layout import snapshot_prefix

    decisions = plan_forget(list_snapshots(store, trusted, set_name), policy, now=now)
    locks = {}
    for d in decisions:
        if d.verdict is Verdict.DELETE:
            untils = [u for o in store.list(snapshot_prefix(d.id)) if (u := retained_until(store, o.key))]
            locks[d.id] = max(untils) if untils else None
    decisions = hold(decisions, locks, now=now)
    if not dry_run:
        for d in decisions:
            if d.verdict is Verdict.DELETE:
                delete_snapshot(store, d.id)
                if settings is not None:
                    from bvh_ops.audit.record import record

                    record(settings, None, "files.forget", d.id, {"reason": d.reason})
    return decisions
