"""What a physical backup's manifest records about PostgreSQL (its ``extra``, docs/FORMAT.md),
read in one place with one default per field: timeline, start and stop LSN, WAL segment size,
mode, archive_mode, and the backups it builds on. The JSON stays as it is; this is a view.

It lives beside pg/lsn (it is LSN and segment arithmetic) and knows manifests only by shape,
so wal/, physical/ and expire can all read it without importing each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from bvh_ops.errors import BvhOpsError
from bvh_ops.pg.lsn import DEFAULT_SEGMENT, parse_lsn, segment_name


class _HasExtra(Protocol):
    backup_id: str
    kind: str
    extra: dict[str, Any]


M = TypeVar("M", bound=_HasExtra)


@dataclass(frozen=True)
class PhysicalInfo:
    """Typed view of one physical manifest's ``extra``; build it with ``PhysicalInfo.of(manifest)``.
    Values are read when asked for, so a field nobody reads is never parsed."""

    backup_id: str  # the manifest's backup id (named in errors)
    extra: Mapping[str, Any] = field(repr=False)  # the manifest's extra, unchanged

    @classmethod
    def of(cls, manifest: _HasExtra) -> PhysicalInfo:
        return cls(manifest.backup_id, manifest.extra)

    @property
    def timeline(self) -> int:
        """Timeline of start_lsn (1 when not recorded)."""
        return int(self.extra.get("timeline") or 1)

    @property
    def segment_size(self) -> int:
        """The server's wal_segment_size in bytes (PostgreSQL's default when not recorded)."""
        return int(self.extra.get("wal_segment_size") or DEFAULT_SEGMENT)

    @property
    def start_lsn_text(self) -> str | None:
        """start_lsn as pg_basebackup printed it (None when its output was not understood)."""
        return self.extra.get("start_lsn") or None

    @property
    def stop_lsn_text(self) -> str | None:
        return self.extra.get("stop_lsn") or None

    @property
    def start_lsn(self) -> int | None:
        return parse_lsn(self.start_lsn_text) if self.start_lsn_text else None

    @property
    def stop_lsn(self) -> int | None:
        return parse_lsn(self.stop_lsn_text) if self.stop_lsn_text else None

    def required_start_lsn(self) -> int:
        """start_lsn, or BvhOpsError naming the backup when the manifest records none."""
        if self.start_lsn is None:
            raise BvhOpsError(f"backup {self.backup_id} records no start LSN: take a new full backup")
        return self.start_lsn

    def required_stop_lsn(self) -> int:
        if self.stop_lsn is None:
            raise BvhOpsError(f"backup {self.backup_id} records no stop LSN: take a new full backup")
        return self.stop_lsn

    @property
    def start_segno(self) -> int:
        """Number of the WAL segment holding start_lsn (where recovery from this base begins)."""
        return self.required_start_lsn() // self.segment_size

    @property
    def start_segment(self) -> str:
        """WAL file name of the start segment, on the backup's timeline."""
        return segment_name(self.timeline, self.start_segno, self.segment_size)

    @property
    def stop_segment(self) -> str:
        """WAL file name of the segment holding the backup's last WAL byte (just before stop_lsn)."""
        return segment_name(self.timeline, (self.required_stop_lsn() - 1) // self.segment_size, self.segment_size)

    @property
    def mode(self) -> str | None:
        """Either native (pg_basebackup) or wal-only (an increment of archived WAL, PostgreSQL < 17)."""
        return self.extra.get("mode")

    @property
    def wal_only(self) -> bool:
        return self.mode == "wal-only"

    @property
    def archive_mode(self) -> str:
        """The server's archive_mode; "on" when not recorded (WAL-only increments need an archive)."""
        return self.extra.get("archive_mode") or "on"

    @property
    def base_id(self) -> str | None:
        """WAL-only increments: the backup whose files the WAL applies to."""
        return self.extra.get("base_id")

    @property
    def promoted_from(self) -> str | None:
        """Set to incremental when an incremental was asked for and a full was taken instead."""
        return self.extra.get("promoted_from")

    @property
    def backup_manifest_sha256(self) -> str | None:
        """sha256 of the stored copy of PostgreSQL's backup_manifest (native backups)."""
        return self.extra.get("backup_manifest_sha256") or None

    @property
    def files_checked(self) -> int:
        """Files whose CRC32C matched PostgreSQL's backup_manifest while streaming."""
        return int(self.extra.get("files_checked") or 0)


def oldest_base(manifests: Iterable[M]) -> M | None:
    """The full backup the WAL archive must serve from: lowest (timeline, start LSN) among the
    full backups that record a start LSN; None when there is none.

    Why this order: pruning removes segments below this base's start segment on its timeline
    and earlier ones. On one timeline every other base starts at or after it, so nothing they
    need goes; a base on a later timeline reads WAL of that later timeline, never pruned here.
    Wall-clock order (finished_at) would be wrong: a full that started earlier (lower start
    LSN) can finish later than another, and its first segments would be pruned."""
    keyed = []
    for m in manifests:
        info = PhysicalInfo.of(m)
        if m.kind == "full" and info.start_lsn_text:
            keyed.append(((info.timeline, info.required_start_lsn()), m))
    return min(keyed, key=lambda k: k[0])[1] if keyed else None
