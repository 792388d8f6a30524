"""Retention carried out (pgBackRest calls it expire): plan, then delete.

The plan is pure (records, manifests and one listing of the WAL archive in, ``now`` passed in):
which backups are OBSOLETE and why (repository.retention), which full backups stay as WAL
bases, the one WAL is kept from, and the WAL files below it. Carrying it out is a short loop:
backups first, then WAL, each with its commit point (manifest, index entry) deleted first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from bvh_ops.audit.record import record
from bvh_ops.config import Settings
from bvh_ops.errors import BvhOpsError
from bvh_ops.pg.physinfo import PhysicalInfo, oldest_base
from bvh_ops.repository.manifest import Manifest
from bvh_ops.repository.repo import BackupRecord, Repository
from bvh_ops.repository.retention import Action, Decision, plan_retention
from bvh_ops.wal.archive import ArchivedFile, delete_wal, plan_wal_prune, scan_archive

_log = logging.getLogger("bvh_ops.expire")


@dataclass(frozen=True)
class ExpirePlan:
    """What one retention run removes and keeps."""

    decisions: tuple[Decision, ...]  # every complete backup: KEEP, OBSOLETE or UNTRUSTED, with the reason
    kept_bases: tuple[Manifest, ...]  # kept full physical backups with a start LSN: the WAL archive serves them
    wal_base: Manifest | None  # the kept base WAL is kept from (oldest_base), None without one
    wal_prune: tuple[str, ...]  # archived WAL files below wal_base's start segment

    @property
    def delete(self) -> list[Decision]:
        """The OBSOLETE backups, in the order they are deleted."""
        return [d for d in self.decisions if d.action is Action.OBSOLETE]

    @property
    def wal_kept_from(self) -> str | None:
        """wal_base's start LSN as recorded in its manifest."""
        return PhysicalInfo.of(self.wal_base).start_lsn_text if self.wal_base else None

    def to_json(self) -> dict:
        return {"decisions": [{"backup_id": d.backup_id, "action": str(d.action), "reason": d.reason}
                              for d in self.decisions],
                "wal_pruned": len(self.wal_prune), "wal_kept_from": self.wal_kept_from}


def plan_expire(records: list[BackupRecord], manifests: Mapping[str, Manifest], archive_listing: Iterable[str], *,
                now: datetime, keep_days: int, min_redundancy: int) -> ExpirePlan:
    """Pure. ``manifests``: trusted manifests by backup id (at least those of the full physical
    backups); ``archive_listing``: the names in the WAL archive (scan_archive's keys)."""
    decisions = plan_retention(records, now=now, keep_days=keep_days, min_redundancy=min_redundancy)
    kept = [manifests[d.backup_id] for d in decisions if d.action is Action.KEEP and d.backup_id in manifests]
    kept_bases = tuple(m for m in kept if m.kind == "full" and PhysicalInfo.of(m).start_lsn_text)
    base = oldest_base(kept_bases)
    wal_prune = tuple(plan_wal_prune(archive_listing, base)) if base is not None else ()
    return ExpirePlan(tuple(decisions), kept_bases, base, wal_prune)


def apply_plan(repo: Repository, *, now: datetime, keep_days: int, min_redundancy: int, dry_run: bool = False,
               log=None, settings: Settings | None = None) -> dict:
    """Retention over a repository: plan, then delete the OBSOLETE backups, then the archived WAL
    older than the oldest kept physical base (WAL is kept from that base's start LSN). With
    ``settings``, each backup deleted is recorded in the audit trail (retention.delete)."""
    # Read: the catalog, the full backups' signed manifests, one listing of the WAL archive
    # (none needed when there is no physical base to keep WAL for).
    records = repo.list_backups()
    fulls = _trusted_fulls(repo, records)
    archive = scan_archive(repo.store) if fulls else {}
    # Plan (pure).
    plan = plan_expire(records, fulls, archive, now=now, keep_days=keep_days, min_redundancy=min_redundancy)
    # Carry it out.
    _carry_out(repo, plan, archive, dry_run=dry_run, log=log, settings=settings)
    return plan.to_json()


def _trusted_fulls(repo: Repository, records: list[BackupRecord]) -> dict[str, Manifest]:
    """Signed manifests of the complete full backups (one that no longer loads is left out:
    it cannot anchor WAL)."""
    out = {}
    for rec in records:
        if rec.status == "complete" and rec.signature_ok and rec.kind == "full":
            try:
                out[rec.backup_id] = repo.trusted_manifest(rec.backup_id, purpose="retain")
            except BvhOpsError:
                continue
    return out


def _carry_out(repo: Repository, plan: ExpirePlan, archive: dict[str, ArchivedFile], *, dry_run: bool,
               log=None, settings: Settings | None = None) -> None:
    """Backups first (manifest first: a backup stops existing at once), then WAL (index entry
    first: a half-deleted segment reads as absent)."""
    for d in plan.delete:
        if log:
            log.warning("retention%s: deleting %s (%s)", " (dry run)" if dry_run else "", d.backup_id, d.reason)
        if not dry_run:
            repo.delete_backup(d.backup_id)
            if settings is not None:
                record(settings, None, "retention.delete", d.backup_id, {"reason": d.reason})
    if plan.wal_prune and not dry_run:
        delete_wal(repo.store, archive, list(plan.wal_prune))
        _log.info("pruned %d WAL files older than base %s", len(plan.wal_prune), plan.wal_base.backup_id)
