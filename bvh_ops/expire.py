"""Retention carried out (pgBackRest calls it expire): plan, then delete.

The plan is pure (records, manifests and one listing of the WAL archive in, ``now`` passed in):
which backups go under the GFS policy and why (repository.retention), which are HELD by an
object lock, and which archived WAL goes. WAL is kept

- continuously from the oldest physical base of the *recent* backups (those kept by the daily
  rule or minimum redundancy, and their parents): point-in-time recovery over that window;
- for every other kept physical backup (weekly, monthly, yearly, monthly archive), the segments
  from its chain's base start to its own stop: what makes it consistent. Seven years of yearly
  backups do not keep seven years of WAL.

Carrying it out is a short loop: backups first, then WAL, each with its commit point (manifest,
index entry) deleted first; nothing locked is ever asked to be deleted (on a versioned S3 bucket
a plain DELETE of a locked object "succeeds" by adding a delete marker that hides the backup).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from bvh_ops.audit.record import record
from bvh_ops.config import Settings
from bvh_ops.errors import BvhOpsError
from bvh_ops.pg.lsn import parse_segment
from bvh_ops.pg.physinfo import PhysicalInfo, oldest_base
from bvh_ops.repository.gfs import Decision, Policy, Verdict
from bvh_ops.repository.manifest import Manifest
from bvh_ops.repository.repo import BackupRecord, Repository, backup_prefix
from bvh_ops.repository.retention import plan_retention
from bvh_ops.storage.base import lock_enabled, retained_until
from bvh_ops.wal.archive import ArchivedFile, delete_wal, plan_wal_prune, scan_archive

_log = logging.getLogger("bvh_ops.expire")

RECENT = ("daily ", "minimum redundancy")  # reasons that put a backup in the point-in-time window


def policy_of(settings: Settings) -> Policy:
    """The GFS policy configured (keep_daily falls back to the deprecated retention_days)."""
    daily = settings.keep_daily if settings.keep_daily is not None else settings.retention_days
    return Policy(keep_daily=daily, keep_weekly=settings.keep_weekly, keep_monthly=settings.keep_monthly,
                  keep_yearly=settings.keep_yearly, min_redundancy=settings.min_redundancy,
                  keep_archive_months=settings.keep_archive_months)


@dataclass(frozen=True)
class ExpirePlan:
    """What one retention run removes, keeps and cannot remove yet."""

    decisions: tuple[Decision, ...]  # every complete backup: KEEP, DELETE, HELD or UNTRUSTED, with reasons
    kept_bases: tuple[Manifest, ...]  # kept full physical backups of the recent window (WAL kept from them)
    wal_base: Manifest | None  # the base WAL is kept continuously from (oldest_base), None without one
    wal_prune: tuple[str, ...]  # archived WAL files below wal_base and outside every kept backup's range
    wal_ranges: tuple[tuple[str, int, int, int], ...] = ()  # (backup id, timeline, first, last segno) kept

    @property
    def delete(self) -> list[Decision]:
        """The backups to delete, in the order they are deleted."""
        return [d for d in self.decisions if d.verdict is Verdict.DELETE]

    @property
    def held(self) -> list[Decision]:
        return [d for d in self.decisions if d.verdict is Verdict.HELD]

    @property
    def wal_kept_from(self) -> str | None:
        """wal_base's start LSN as recorded in its manifest."""
        return PhysicalInfo.of(self.wal_base).start_lsn_text if self.wal_base else None

    def to_json(self) -> dict:
        return {"decisions": [{"backup_id": d.id, "action": str(d.verdict), "reason": d.reason,
                               "reasons": list(d.reasons), "class": d.klass, "family": d.family,
                               "finished_at": d.time.isoformat(),
                               "held_until": d.held_until.isoformat() if d.held_until else None}
                              for d in self.decisions],
                "wal_pruned": len(self.wal_prune), "wal_kept_from": self.wal_kept_from,
                "wal_ranges": [{"backup_id": b, "timeline": tl, "first": lo, "last": hi}
                               for b, tl, lo, hi in self.wal_ranges]}


def plan_expire(records: list[BackupRecord], manifests: Mapping[str, Manifest], archive_listing: Iterable[str], *,
                now: datetime, policy: Policy, locks: Mapping[str, datetime | None] | None = None) -> ExpirePlan:
    """Pure. ``manifests``: trusted manifests by backup id (at least those of the physical
    backups); ``archive_listing``: the names in the WAL archive (scan_archive's keys); ``locks``:
    backup id → the latest retain-until among its objects."""
    decisions = plan_retention(records, now=now, policy=policy, locks=locks)
    # A HELD backup stays (its lock says so): it keeps its WAL range like a kept one.
    kept = {d.id: d for d in decisions if d.verdict in (Verdict.KEEP, Verdict.HELD)}
    parents = {r.backup_id: r.parent_id for r in records}
    recent: set[str] = set()
    for bid, d in kept.items():
        if any(r.startswith(RECENT) for r in d.reasons):
            while bid and bid not in recent:
                recent.add(bid)
                bid = parents.get(bid)
    ranges, continuous = [], set(recent)
    for b in sorted(kept):
        if b in recent or b not in manifests:
            continue
        r = _wal_range(manifests[b], manifests, parents)
        if r is not None:
            ranges.append(r)
        elif manifests[b].kind != "logical":
            continuous.add(b)  # no stop LSN recorded: keep WAL from it on, as before GFS
    kept_bases = tuple(manifests[b] for b in sorted(continuous) if b in manifests and manifests[b].kind == "full"
                       and PhysicalInfo.of(manifests[b]).start_lsn_text)
    base = oldest_base(kept_bases)
    ranges = tuple(ranges)
    wal_prune: tuple[str, ...] = ()
    if base is not None:
        wal_prune = tuple(n for n in plan_wal_prune(archive_listing, base) if not _in_ranges(n, ranges, base))
    return ExpirePlan(tuple(decisions), kept_bases, base, wal_prune, ranges)


def _wal_range(m: Manifest, manifests: Mapping[str, Manifest], parents: Mapping[str, str | None]):
    """(id, timeline, first, last segno) a physical backup needs to be consistent: from its
    chain's base start to its own stop. None for a logical backup or one recording no LSNs."""
    info = PhysicalInfo.of(m)
    if m.kind == "logical" or not info.stop_lsn_text or not info.start_lsn_text:
        return None
    first = info.start_segno
    bid = parents.get(m.backup_id)
    while bid and bid in manifests:  # the chain's base starts first
        pinfo = PhysicalInfo.of(manifests[bid])
        if pinfo.start_lsn_text and pinfo.timeline == info.timeline:
            first = min(first, pinfo.start_segno)
        bid = parents.get(bid)
    last = (info.required_stop_lsn() - 1) // info.segment_size
    return (m.backup_id, info.timeline, first, last)


def _in_ranges(name: str, ranges, base: Manifest) -> bool:
    parsed = parse_segment(name[:24], PhysicalInfo.of(base).segment_size)
    return parsed is not None and any(tl == parsed[0] and lo <= parsed[1] <= hi for _b, tl, lo, hi in ranges)


def apply_plan(repo: Repository, *, now: datetime, policy: Policy, dry_run: bool = False,
               log=None, settings: Settings | None = None, archive: dict[str, ArchivedFile] | None = None) -> dict:
    """Retention over a repository: plan, then delete the DELETE backups (never a locked one:
    those are HELD), then the archived WAL the plan names. With ``settings``, each backup
    deleted is recorded in the audit trail (retention.delete). ``archive``: a listing of the WAL
    archive the caller took in this run (safe for pruning: what was archived since is newer
    than every base); else it is listed here."""
    # Read: the catalog, the physical backups' signed manifests, one listing of the WAL archive.
    records = repo.list_backups()
    physical = _trusted_physical(repo, records)
    if not physical:
        archive = {}
    elif archive is None:
        archive = scan_archive(repo.store)
    # Plan (pure), then ask the store for the locks of what is planned to go, and plan again.
    plan = plan_expire(records, physical, archive, now=now, policy=policy)
    if plan.delete and lock_enabled(repo.store):
        locks = {d.id: _backup_lock(repo, d.id) for d in plan.delete}
        plan = plan_expire(records, physical, archive, now=now, policy=policy, locks=locks)
    # Carry it out.
    held_wal = _carry_out(repo, plan, archive, now=now, dry_run=dry_run, log=log, settings=settings)
    doc = plan.to_json()
    doc["wal_held"] = held_wal
    doc["policy"] = policy.describe()
    return doc


def _backup_lock(repo: Repository, backup_id: str) -> datetime | None:
    """The latest retain-until among a backup's objects (None: none locked)."""
    untils = [u for o in repo.store.list(backup_prefix(backup_id)) if (u := retained_until(repo.store, o.key))]
    return max(untils) if untils else None


def _trusted_physical(repo: Repository, records: list[BackupRecord]) -> dict[str, Manifest]:
    """Signed manifests of the complete physical backups (one that no longer loads is left
    out: it cannot anchor WAL)."""
    out = {}
    for rec in records:
        if rec.status == "complete" and rec.signature_ok and rec.kind != "logical":
            try:
                out[rec.backup_id] = repo.trusted_manifest(rec.backup_id, purpose="retain")
            except BvhOpsError:
                continue
    return out


def _carry_out(repo: Repository, plan: ExpirePlan, archive: dict[str, ArchivedFile], *, now: datetime,
               dry_run: bool, log=None, settings: Settings | None = None) -> list[str]:
    """Backups first (manifest first: a backup stops existing at once), then WAL (index entry
    first: a half-deleted segment reads as absent). Returns the WAL files left because locked."""
    what = " (dry run)" if dry_run else ""
    for d in plan.held:
        if log:
            log.warning("retention%s: %s is due for deletion but %s", what, d.id, d.reasons[-1])
    for d in plan.delete:
        if log:
            log.warning("retention%s: deleting %s (%s)", what, d.id, d.reason)
        if not dry_run:
            repo.delete_backup(d.id)
            if settings is not None:
                record(settings, None, "retention.delete", d.id, {"reason": d.reason})
    held_wal: list[str] = []
    names = list(plan.wal_prune)
    if names and lock_enabled(repo.store):
        held_wal = [n for n in names
                    if any((u := retained_until(repo.store, k)) is not None and u > now for k in archive[n].object_keys)]
        names = [n for n in names if n not in set(held_wal)]
    if names and not dry_run:
        delete_wal(repo.store, archive, names)
        _log.info("pruned %d WAL files older than base %s", len(names), plan.wal_base.backup_id)
    return held_wal
