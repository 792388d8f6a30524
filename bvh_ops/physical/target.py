"""Recovery targets (a time, an LSN, a restore point, or the end of the archive) and the choice of
the base backup a target can start from."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from bvh_ops.errors import BvhOpsError, ConfigError, NotFound
from bvh_ops.pg.lsn import format_lsn, parse_lsn
from bvh_ops.pg.physinfo import PhysicalInfo
from bvh_ops.physical.backup import native_parent
from bvh_ops.repository.manifest import PHYSICAL_KINDS, Manifest
from bvh_ops.repository.repo import Repository


@dataclass(frozen=True)
class RecoveryTarget:
    kind: str | None = None  # time | lsn | name | None (end of the archived WAL)
    value: str | None = None

    @classmethod
    def from_options(cls, to_time: str | None, to_lsn: str | None, to_name: str | None) -> RecoveryTarget:
        # The operator's options: a mistake here is a usage error (ConfigError, exit 2).
        given = [(k, v) for k, v in (("time", to_time), ("lsn", to_lsn), ("name", to_name)) if v]
        if len(given) > 1:
            raise ConfigError("give at most one of --to-time, --to-lsn, --to-name")
        if not given:
            return cls()
        kind, value = given[0]
        try:
            if kind == "time":
                value = parse_time(value).isoformat()
            elif kind == "lsn":
                value = format_lsn(parse_lsn(value))
        except ConfigError:
            raise
        except BvhOpsError as exc:
            raise ConfigError(f"--to-{kind}: {exc}") from None
        if kind == "name" and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,63}", value):
            raise ConfigError(f"--to-name {value!r}: restore point names here are letters, digits and _.:-")
        return cls(kind, value)

    def conf(self) -> dict[str, str]:
        if self.kind is None:
            return {}
        key = {"time": "recovery_target_time", "lsn": "recovery_target_lsn", "name": "recovery_target_name"}[self.kind]
        return {key: f"'{self.value}'"}

    def describe(self) -> str:
        return f"{self.kind} {self.value}" if self.kind else "the end of the archived WAL"


def parse_time(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise BvhOpsError(f"{text!r} is not an ISO 8601 time (e.g. 2026-11-27T02:00:00Z)") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def select_backup(repo: Repository, backup_id: str, target: RecoveryTarget) -> Manifest:
    """The backup to restore: the one named, or the newest physical one the target can start
    from (finished before a time target, stopped before an LSN target)."""
    if backup_id != "latest":
        m = repo.trusted_manifest(backup_id)
        if m.kind not in PHYSICAL_KINDS:
            raise BvhOpsError(f"backup {m.backup_id} is a {m.kind} backup: use `bvh-ops restore {m.backup_id} --into DSN`")
        return m
    records = sorted((r for r in repo.list_backups() if r.status == "complete" and r.kind in PHYSICAL_KINDS),
                     key=lambda r: (r.finished_at, r.backup_id), reverse=True)
    if not records:
        raise NotFound(f"no physical backup in {repo.store.url}: run `bvh-ops backup --kind full` first")
    if target.kind == "name":
        # Where a restore point lies is known only by replaying WAL: start from the oldest
        # full backup so every point since is reachable (give a backup id to start closer).
        records = [r for r in reversed(records) if r.kind == "full"] or records
    for rec in records:
        loaded = repo.load_manifest(rec.backup_id)
        if not loaded.signature_ok:
            continue
        m = native_parent(repo, loaded.manifest)
        if target.kind == "time" and datetime.fromisoformat(m.finished_at) > parse_time(target.value):
            continue
        if target.kind == "lsn" and PhysicalInfo.of(m).required_stop_lsn() > parse_lsn(target.value):
            continue
        return m
    raise NotFound(f"no physical backup finished before {target.describe()}: the target is older than every base "
                   "backup in the repository")
