"""The monthly archive (the runbook's ``0 0 1 * *``): which month an archive is for, which
objects make it up (the backups' objects and the WAL segments the physical full needs to be
consistent) and locking them with S3 Object Lock until the class's retention ends.

Locks are set after the archive has been deep-verified and drilled: a corrupt archive must not
become undeletable for seven years. A lock is read back after it is set; one that did not take
is an error, never reported as locked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bvh_ops.errors import IntegrityError
from bvh_ops.pg.lsn import parse_segment
from bvh_ops.pg.physinfo import PhysicalInfo
from bvh_ops.repository.gfs import archive_expires, utc
from bvh_ops.repository.manifest import Manifest
from bvh_ops.repository.repo import Repository, backup_prefix
from bvh_ops.storage.base import ObjectStore, lock_enabled, retained_until
from bvh_ops.wal.archive import scan_archive
from bvh_ops.wal.store import wal_key

NO_LOCK = "not locked: store has no object lock"


def archive_month(now: datetime) -> str:
    """The month an archive run is for: on the 1st (the schedule) the month that just ended;
    on any other day (a manual run) the month so far."""
    now = utc(now)
    return (now - timedelta(days=1)).strftime("%Y-%m") if now.day == 1 else now.strftime("%Y-%m")


def consistency_wal(listing: dict | list, m: Manifest) -> list[str]:
    """Pure: the archived WAL names (segments, .backup file) from the physical full's start
    segment to its stop segment on its timeline: what makes the base consistent."""
    info = PhysicalInfo.of(m)
    first, last = info.start_segno, (info.required_stop_lsn() - 1) // info.segment_size
    out = []
    for name in listing:
        parsed = parse_segment(name[:24], info.segment_size)
        if parsed and parsed[0] == info.timeline and first <= parsed[1] <= last:
            out.append(name)
    return sorted(out)


@dataclass
class LockReport:
    locked: bool
    mode: str | None
    retain_until: datetime | None
    detail: str
    keys: list[str] = field(default_factory=list)
    wal: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"locked": self.locked, "mode": self.mode, "detail": self.detail, "objects": len(self.keys),
                "retain_until": self.retain_until.isoformat() if self.retain_until else None,
                "wal_segments": self.wal}


def archive_keys(repo: Repository, manifests: list[Manifest]) -> tuple[list[str], list[str]]:
    """Every object of the archive's backups, and the WAL the physical full needs (with their
    index entries): (keys, WAL names)."""
    keys = [o.key for m in manifests for o in repo.store.list(backup_prefix(m.backup_id))]
    wal: list[str] = []
    physical = [m for m in manifests if m.kind == "full"]
    if physical:
        archive = scan_archive(repo.store)
        for m in physical:
            for name in consistency_wal(list(archive), m):
                wal.append(name)
                f = archive[name]
                keys.extend(f.object_keys)
                if f.has_index:
                    keys.append(wal_key(name) + ".json")
    return keys, wal


def lock_archive(repo: Repository, manifests: list[Manifest], *, taken: datetime, months: int,
                 mode: str) -> LockReport:
    """Lock every object of the archive until ``taken`` + ``months`` (the class's retention) in
    ``mode`` (governance | compliance), and read each lock back."""
    from bvh_ops.repository.gfs import Policy

    until = archive_expires(taken, Policy(keep_archive_months=months))
    keys, wal = archive_keys(repo, manifests)
    if not lock_enabled(repo.store):
        return LockReport(False, None, None, f"{NO_LOCK} ({repo.store.url}); kept {months} months by retention only",
                          keys, wal)
    for key in keys:
        repo.store.retain(key, until, mode.upper())  # type: ignore[attr-defined]
    weak = [k for k in keys if (got := retained_until(repo.store, k)) is None or got < until]
    if weak:
        raise IntegrityError(f"object lock did not take on {len(weak)} archive object(s) (first: {weak[0]}): "
                             "check the bucket's Object Lock configuration and s3:PutObjectRetention")
    return LockReport(True, mode.upper(), until, f"{len(keys)} objects locked ({mode.upper()}) until "
                      f"{until:%Y-%m-%d} in {repo.store.url}", keys, wal)


def store_lock_state(store: ObjectStore) -> str:
    return "Object Lock enabled" if lock_enabled(store) else NO_LOCK
